//! Hostile-client hardening of the scoring plane (issue 9), end to end over real HTTP: slow
//! bodies, admission before the body, `Expect: 100-continue`, content codings, non-finite
//! outputs, signals, the token lifetime flag.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `host:port` of a `http://host:port` URL.
fn authority(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// A server with an endpoint whose traffic all goes to `model` (one instance, one request at a
/// time: admission cap 2), and its primary key.
fn serving(model: &str, extra: &[&str]) -> (Server, String) {
    let s = Server::start_with(extra);
    s.create_endpoint();
    s.deploy("blue", model, json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();
    (s, key)
}

/// Opens a connection and sends a `/score` request head (with `extra` header lines), no body.
fn send_head(s: &Server, key: &str, content_length: usize, extra: &str) -> TcpStream {
    let mut c = TcpStream::connect(authority(&s.scoring)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n{extra}\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    c
}

/// Reads until the end of a response's head and what body came with it (or the read timeout).
fn read_some(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(end) = text.find("\r\n\r\n") {
                    // A 100 Continue is followed by more; a final answer carries its body.
                    if !text.starts_with("HTTP/1.1 100") && text[end..].contains('}') {
                        break;
                    }
                    if text.starts_with("HTTP/1.1 100") {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn a_trickled_body_is_cut_with_408() {
    let (s, key) = serving("model-1", &["--body-timeout-ms", "1500"]);
    let mut c = send_head(&s, &key, 1000, "");
    let started = Instant::now();
    // One byte every 200 ms: the body would take 200 s to arrive.
    let mut trickle = c.try_clone().unwrap();
    std::thread::spawn(move || {
        for _ in 0..1000 {
            if trickle.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let answer = read_some(&mut c);
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "a trickling body must be cut, got {answer:?} after {took:?}");
    assert!(answer.contains("too slowly"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(took < Duration::from_secs(5), "cut after about 1.5 s, took {took:?}");
    // The slot it held is free again.
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
}

#[test]
fn a_full_deployment_answers_429_before_reading_the_body() {
    let (s, key) = serving("model-1", &["--body-timeout-ms", "3000"]);
    // Two requests whose bodies never come hold the deployment's 2 admission slots.
    let holders: Vec<TcpStream> = (0..2).map(|_| send_head(&s, &key, 100, "")).collect();
    s.wait_inflight("blue", 2);
    // A third is refused at once: its body is not waited for (nor read).
    let started = Instant::now();
    let mut third = send_head(&s, &key, 100, "");
    let answer = read_some(&mut third);
    assert!(answer.starts_with("HTTP/1.1 429"), "got {answer:?}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered without the body: {:?}", started.elapsed());
    // When the holders' bodies time out (408), their slots are released.
    for mut h in holders {
        assert!(read_some(&mut h).starts_with("HTTP/1.1 408"));
    }
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
}

#[test]
fn expect_continue_over_the_limit_gets_413_at_once() {
    let (s, key) = serving("model-1", &["--max-body-bytes", "1000"]);
    let mut c = send_head(&s, &key, 1001, "Expect: 100-continue\r\n");
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 413"), "no 100 Continue before the 413: {answer:?}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.contains("larger than this server accepts"), "{answer}");
    assert!(answer.contains("{\"message\":"), "Azure's error style on /score: {answer}");
    // On a v2 route, the same refusal in the v2 protocol's style (what tritonclient reads).
    let mut c = TcpStream::connect(authority(&s.scoring)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v2/models/model-1/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("{\"error\":"), "{answer}");
    // Within the limit, the client is told to continue and gets its answer.
    let body = sample_request();
    let mut c = send_head(&s, &key, body.len(), "Expect: 100-continue\r\n");
    assert!(read_some(&mut c).starts_with("HTTP/1.1 100 Continue"));
    c.write_all(&body).unwrap();
    let answer = read_some(&mut c);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn gzip_bodies_are_decoded_within_the_limit() {
    let (s, key) = serving("model-1", &["--max-body-bytes", "100000"]);
    let auth = format!("Bearer {key}");
    let gz = [("Authorization", auth.as_str()), ("Content-Encoding", "gzip")];
    let r = s.score(&gzip(&sample_request()), &gz);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_model_1(&r.body);

    // A bomb: 10 MB of whitespace in a body of a few kB on the wire stops at the decoded limit.
    let mut bomb = sample_request();
    bomb.extend(std::iter::repeat_n(b' ', 10_000_000));
    let packed = gzip(&bomb);
    assert!(packed.len() < 100_000);
    let r = s.score(&packed, &gz);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.message().contains("after decoding"), "{}", r.body);

    let r = s.score(b"not gzip at all", &gz);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("not valid gzip"), "{}", r.body);

    let r = s.score(&sample_request(), &[("Authorization", auth.as_str()), ("Content-Encoding", "br")]);
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(r.message().contains("\"br\"") && r.message().contains("gzip"), "{}", r.body);
    assert_eq!(r.header("accept-encoding"), Some("gzip"));
}

#[test]
fn a_non_finite_output_is_a_model_error_not_null() {
    let (s, key) = serving("model-1", &[]);
    let body = json!({"data": [[1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308]]});
    let r = s.score_authed(&key, body.to_string().as_bytes(), None);
    assert_eq!(r.status, 424, "never a number answered as null: {}", r.body);
    assert!(r.message().contains("non-finite"), "{}", r.body);
    assert!(r.header("ms-azureml-model-error-reason").is_some_and(|h| h.contains("non-finite")));
}

#[test]
fn an_out_of_range_token_lifetime_is_refused_at_start() {
    let mut child = Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--token-lifetime-secs", "1000000000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with a token lifetime of 1e12 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("1 to 31536000"), "{err}");

    // The longest allowed lifetime issues tokens.
    let s = Server::start_with(&["--token-lifetime-secs", "31536000"]);
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "my-endpoint", "auth_mode": "aml_token"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.admin("GET", "/v1/endpoint/keys", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["accessToken"].is_string());
}

#[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
fn signal(s: &Server, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test started and a valid signal number.
    unsafe { libc::kill(s.pid() as libc::pid_t, sig) };
}

/// Waits for the server process to exit (it is our child) and returns its exit code.
#[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
fn wait_exit(s: &Server, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let pid = unsafe { libc::waitpid(s.pid() as libc::pid_t, &mut status, libc::WNOHANG) };
        if pid > 0 {
            assert!(libc::WIFEXITED(status), "killed by a signal: status {status}");
            return libc::WEXITSTATUS(status);
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `serve` with stdout and stderr piped (as a container runtime or a log collector runs
/// it), waits for the address lines, sends SIGTERM at once and returns how it ended and its
/// stderr.
#[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
fn start_and_stop_at_once() -> (std::process::ExitStatus, String) {
    let mut child = Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--shutdown-grace-secs", "2"])
        .env_remove("RUST_LOG")
        .env_remove("SWITCHYARD_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address lines on stdout say the server is up: a supervisor may stop it from then on.
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // SAFETY: kill(2) with the pid of the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_sigterm_right_after_the_address_lines_stops_gracefully() {
    // The handler used to be installed only once the shutdown task first ran, after the
    // address lines: a SIGTERM in between met the default action and killed the process.
    for round in 0..10 {
        let (status, err) = start_and_stop_at_once();
        assert!(status.success(), "round {round}: {status:?} (killed, not drained): {err}");
        assert!(err.contains("switchyard stopped"), "round {round}: {err}");
    }
}

#[test]
fn the_process_log_on_a_pipe_has_no_colour_codes() {
    let (status, err) = start_and_stop_at_once();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("switchyard serving"), "the process log has its start line: {err:?}");
    assert!(!err.contains('\u{1b}'), "no terminal escape codes in a piped log: {err:?}");
}

#[test]
fn sighup_is_ignored() {
    let s = Server::start();
    signal(&s, libc::SIGHUP);
    // No wait needed: pending signals are delivered lowest number first, so a SIGHUP that
    // was not ignored would end the process before this request, or before the SIGTERM
    // below could give the clean exit the end asserts.
    assert_eq!(s.get("/health/live").status, 200, "still serving after SIGHUP");
    signal(&s, libc::SIGTERM);
    assert_eq!(wait_exit(&s, Duration::from_secs(20)), 0);
}

#[test]
fn sigterm_answers_503_while_in_flight_requests_finish() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("slow", "test/slow", json!({"request_settings": {"request_timeout_ms": 30000}}));
    assert_eq!(s.set_traffic(json!({"slow": 100})).status, 200);
    let key = s.primary_key();
    let url = s.scoring.clone();
    let auth = format!("Bearer {key}");
    let slow = std::thread::spawn(move || {
        let r = http(
            &agent(),
            "POST",
            &format!("{url}/score"),
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            Some(json!({"data": [[600, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}).to_string().as_bytes()),
        );
        (r.status, r.body)
    });
    s.wait_inflight("slow", 1);
    let signalled = Instant::now();
    signal(&s, libc::SIGTERM);
    s.wait_readiness(503, Duration::from_secs(10)); // shutting down

    // The listener is still open: new requests are told to go elsewhere, and to close.
    let r = s.score_authed(&key, &body_with_x00(1.0), None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.message().contains("shutting down"), "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    let r = s.get("/health/ready");
    assert_eq!(r.status, 503, "not ready while shutting down: {}", r.body);

    let (status, body) = slow.join().unwrap();
    eprintln!("the slow request answered {:?} after SIGTERM", signalled.elapsed());
    assert_eq!(status, 200, "the request in flight completes: {body}");
    assert_eq!(wait_exit(&s, Duration::from_secs(20)), 0);
    assert!(signalled.elapsed() < Duration::from_secs(10), "exits once drained: {:?}", signalled.elapsed());
}

#[test]
fn connections_are_capped_and_the_admin_plane_stays_reachable() {
    let s = Server::start_with(&["--workers", "1", "--max-connections", "4"]);
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .map(|fds| {
                fds.filter_map(Result::ok)
                    .filter(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let before = sockets();
    // Four connections that never finish their headers fill the scoring plane.
    let mut hogs = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(authority(&s.scoring)).unwrap();
        c.write_all(b"GET /health/live HTTP/1.1\r\n").unwrap();
        hogs.push(c);
    }
    // Accepted by the server (four more sockets of its own), not only queued by the kernel:
    // waited for, not slept on.
    eventually("the four hogs are accepted", Duration::from_secs(10), || {
        let now = sockets();
        if now >= before + 4 {
            Ok(())
        } else {
            Err(format!("{now} sockets, {before} before"))
        }
    });
    // The admin plane answers while the scoring plane is full; a fifth scoring connection
    // waits in the backlog until actix cuts a hog's headers (5 s), then is served.
    assert_eq!(s.admin("GET", "/metrics", None).status, 200);
    let t = Instant::now();
    assert_eq!(s.get("/health/live").status, 200);
    assert!(t.elapsed() > Duration::from_secs(2), "the fifth connection was served at once: not capped");
    drop(hogs);
}

#[test]
fn the_descriptor_limit_is_raised_to_the_hard_limit() {
    // Started under a soft limit of 512 (the hard limit stays as it is).
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 512 && exec \"$0\" serve --port 0 --admin-port 0", bin()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    let (soft, hard) = (open_files[3], open_files[4]);
    if hard != "512" {
        assert_eq!(soft, hard, "the soft descriptor limit is raised to the hard one: {limits}");
    }
}
