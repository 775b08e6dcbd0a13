//! Crash safety: the server is killed with SIGKILL at random moments during a scripted series
//! of changes; after each restart from the same --state-dir, the state equals the last
//! acknowledged change (or the one in flight, if it became durable just before the kill).
//! SWITCHYARD_CRASH_KILLS sets the number of kills (default 50).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// What a restart must bring back.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    traffic: Value,
    mirror: Value,
    description: Value,
    tags: Value,
    deployments: BTreeMap<String, u64>,
    primary: String,
    secondary: String,
}

fn observe(s: &Server) -> Observed {
    let ep = s.admin("GET", "/v1/endpoint", None).json();
    let keys = s.admin("GET", "/v1/endpoint/keys", None).json();
    let deployments = s.admin("GET", "/v1/deployments", None).json();
    Observed {
        traffic: ep["traffic"].clone(),
        mirror: ep["mirror_traffic"].clone(),
        description: ep.get("description").cloned().unwrap_or(Value::Null),
        tags: ep["tags"].clone(),
        deployments: deployments
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["name"].as_str().unwrap().to_string(), d["instance_count"].as_u64().unwrap()))
            .collect(),
        primary: keys["primaryKey"].as_str().unwrap().to_string(),
        secondary: keys["secondaryKey"].as_str().unwrap().to_string(),
    }
}

/// One scripted change: the admin call and its effect on the observed state.
struct Change {
    method: &'static str,
    path: String,
    body: Option<Value>,
    apply: Box<dyn Fn(&mut Observed)>,
}

fn change(i: usize, state: &Observed) -> Change {
    match i % 6 {
        0 => {
            let x = [0, 10, 50, 90, 100][(i / 6) % 5];
            let traffic = json!({"blue": x, "green": 100 - x});
            Change {
                method: "PATCH",
                path: "/v1/endpoint".into(),
                body: Some(json!({ "traffic": traffic })),
                apply: Box::new(move |o: &mut Observed| {
                    o.traffic["blue"] = json!(x);
                    o.traffic["green"] = json!(100 - x);
                }),
            }
        }
        1 => Change {
            method: "PATCH",
            path: "/v1/endpoint".into(),
            body: Some(json!({"description": format!("step {i}")})),
            apply: Box::new(move |o| o.description = json!(format!("step {i}"))),
        },
        2 => {
            let n = 1 + (i / 6) % 3;
            Change {
                method: "PATCH",
                path: "/v1/deployments/blue".into(),
                body: Some(json!({ "instance_count": n })),
                apply: Box::new(move |o| {
                    o.deployments.insert("blue".into(), n as u64);
                }),
            }
        }
        3 => Change {
            method: "POST",
            path: "/v1/endpoint/keys/regenerate".into(),
            body: Some(json!({"keyType": "secondary"})),
            // The new key is unknown: marked, then checked as "different from before".
            apply: Box::new(|o| o.secondary = "<regenerated>".into()),
        },
        4 if state.deployments.contains_key("temp") => Change {
            method: "DELETE",
            path: "/v1/deployments/temp".into(),
            body: None,
            apply: Box::new(|o| {
                o.deployments.remove("temp");
                if let Value::Object(t) = &mut o.traffic {
                    t.remove("temp");
                }
            }),
        },
        4 => Change {
            method: "PUT",
            path: "/v1/deployments/temp".into(),
            body: Some(json!({"model": {"path": repo().join("models/model-1")}})),
            apply: Box::new(|o| {
                o.deployments.insert("temp".into(), 1);
                o.traffic["temp"] = json!(0);
            }),
        },
        _ => Change {
            method: "PATCH",
            path: "/v1/endpoint".into(),
            body: Some(json!({"tags": {"step": i}})),
            apply: Box::new(move |o| o.tags = json!({"step": i})),
        },
    }
}

/// Whether `got` is `want`, reading "<regenerated>" as "any key other than `before`'s".
fn matches(got: &Observed, want: &Observed, before: &Observed) -> bool {
    let mut want = want.clone();
    if want.secondary == "<regenerated>" {
        if got.secondary == before.secondary {
            return false;
        }
        want.secondary = got.secondary.clone();
    }
    *got == want
}

fn start(dir: &std::path::Path) -> Server {
    let s = Server::start_with(&["--state-dir", dir.to_str().unwrap()]);
    s.wait_ready();
    // Wait for any load a restored change started (a scale, a new deployment).
    for name in observe(&s).deployments.keys() {
        s.wait_state(name, "Succeeded");
    }
    s
}

#[test]
#[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
fn state_survives_sigkill_at_random_moments() {
    let kills: usize = std::env::var("SWITCHYARD_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(&["--state-dir", dir.path().to_str().unwrap()]);
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-2", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let mut known = observe(&s);
    let (mut acked, mut unacked, mut in_flight_kept) = (0, 0, 0);
    for i in 0..kills {
        let c = change(i, &known);
        let mut after = known.clone();
        (c.apply)(&mut after);
        let pid = s.pid() as libc::pid_t;
        let delay = Duration::from_micros(fastrand::u64(0..8000));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill(2) on the server process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let body = c.body.as_ref().map(|b| b.to_string().into_bytes());
        let reply = try_http(
            &agent(),
            c.method,
            &format!("{}{}", s.admin, c.path),
            &[("Content-Type", "application/json")],
            body.as_deref(),
        );
        let was_acked = matches!(&reply, Ok(r) if (200..300).contains(&r.status));
        if let Ok(r) = &reply {
            assert!(r.status < 300, "step {i} {} {}: refused {} {}", c.method, c.path, r.status, r.body);
        }
        killer.join().unwrap();
        s.kill9();

        s = start(dir.path());
        let got = observe(&s);
        if was_acked {
            acked += 1;
            assert!(matches(&got, &after, &known), "step {i}: acknowledged change lost\n got {got:?}\nwant {after:?}");
        } else {
            unacked += 1;
            let kept = matches(&got, &after, &known);
            in_flight_kept += kept as usize;
            assert!(
                kept || got == known,
                "step {i}: state is neither before nor after the change\n got {got:?}\n was {known:?}\n or {after:?}"
            );
        }
        known = got;
    }
    eprintln!("{kills} SIGKILLs: {acked} after an acknowledged change, {unacked} during one ({in_flight_kept} of those had become durable)");
    // The restored server still serves.
    let key = s.primary_key();
    assert_eq!(s.score_authed(&key, &sample_request(), Some("blue")).status, 200);
}
