//! A Kubernetes cluster simulated on one machine: three `switchyard serve` processes on loopback
//! given the same `--config-dir` (the ConfigMap) and `--secrets-dir` (the Secret), both laid out
//! as the kubelet lays out volumes, and a client that spreads requests over them as a Service
//! does (round robin). The aggregate traffic split follows the rule; a ConfigMap swap and a
//! Secret rotation reach every replica (the time it takes is printed: run with
//! `--nocapture`); a replica stopped with SIGTERM under load costs no request when the client
//! retries elsewhere.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const P1: &str = "primary-key-one-0123456789abcdef0123456789";
const S1: &str = "secondary-key-one-0123456789abcdef01234567";
const S2: &str = "secondary-key-two-0123456789abcdef01234567";
const T1: &str = "token-signing-key-one-0123456789abcdef0123";

/// A folder laid out as the kubelet lays out a ConfigMap or Secret volume: each file is a link
/// into `..data`, itself a link to a timestamped folder. An update writes a new folder, renames
/// a new `..data` link over the old one (the one atomic step), then adds the links of new files
/// and removes those of files that are gone.
struct Volume {
    dir: tempfile::TempDir,
    version: u32,
    names: Vec<String>,
}

impl Volume {
    fn new(files: &[(&str, String)]) -> Self {
        let mut v = Volume { dir: tempfile::tempdir().unwrap(), version: 0, names: Vec::new() };
        v.update(files);
        v
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn update(&mut self, files: &[(&str, String)]) {
        let d = self.dir.path();
        self.version += 1;
        let folder = format!("..2026_11_28_v{}", self.version);
        std::fs::create_dir(d.join(&folder)).unwrap();
        for (name, text) in files {
            std::fs::write(d.join(&folder).join(name), text).unwrap();
        }
        std::os::unix::fs::symlink(&folder, d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
        for name in names.iter().filter(|n| !self.names.contains(n)) {
            std::os::unix::fs::symlink(format!("..data/{name}"), d.join(name)).unwrap();
        }
        for name in self.names.iter().filter(|n| !names.contains(n)) {
            std::fs::remove_file(d.join(name)).unwrap();
        }
        if self.version > 1 {
            std::fs::remove_dir_all(d.join(format!("..2026_11_28_v{}", self.version - 1))).unwrap();
        }
        self.names = names;
    }
}

fn deployment(name: &str, model: &str) -> String {
    deployment_of(name, model, 1)
}

fn deployment_of(name: &str, model: &str, instances: u32) -> String {
    format!(
        "name: {name}\nendpoint_name: my-endpoint\nmodel:\n  path: {}\ninstance_count: {instances}\n",
        repo().join("models").join(model).display()
    )
}

fn endpoint(auth_mode: &str, traffic: &str) -> String {
    format!("name: my-endpoint\nauth_mode: {auth_mode}\ntraffic: {traffic}\n")
}

fn secrets(primary: &str, secondary: &str) -> Vec<(&'static str, String)> {
    vec![("primary-key", primary.into()), ("secondary-key", secondary.into()), ("token-signing-key", T1.into())]
}

/// Three replicas of one endpoint, and a Service-like client over them.
struct Cluster {
    replicas: Vec<Server>,
    config: Volume,
    secrets: Volume,
}

impl Cluster {
    fn start(config: &[(&str, String)], extra: &[&str]) -> Self {
        let config = Volume::new(config);
        let secrets = Volume::new(&secrets(P1, S1));
        let mut args = vec!["--config-dir", config.path(), "--secrets-dir", secrets.path(), "--workers", "2"];
        args.extend_from_slice(extra);
        let replicas: Vec<Server> = (0..3).map(|_| Server::start_with(&args)).collect();
        for r in &replicas {
            r.wait_ready();
        }
        Cluster { replicas, config, secrets }
    }

    fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.scoring.clone()).collect()
    }
}

/// POST /score on one replica with `Authorization: Bearer <key>`.
fn score(agent: &ureq::Agent, url: &str, key: &str) -> Result<Reply, String> {
    let auth = format!("Bearer {key}");
    try_http(
        agent,
        "POST",
        &format!("{url}/score"),
        &[("Content-Type", "application/json"), ("Authorization", &auth)],
        Some(&sample_request()),
    )
}

/// Waits until `holds(replica)` is true on every replica; returns how long each took from
/// `since` (the moment of the edit).
fn propagation(cluster: &Cluster, since: Instant, what: &str, holds: impl Fn(&Server) -> bool) -> Vec<Duration> {
    let mut reached: Vec<Option<Duration>> = vec![None; cluster.replicas.len()];
    eventually(what, Duration::from_secs(60), || {
        for (i, r) in cluster.replicas.iter().enumerate() {
            if reached[i].is_none() && holds(r) {
                reached[i] = Some(since.elapsed());
            }
        }
        if reached.iter().all(Option::is_some) {
            Ok(())
        } else {
            Err(format!("{reached:?}"))
        }
    });
    reached.into_iter().map(Option::unwrap).collect()
}

#[test]
fn the_aggregate_split_over_three_replicas_follows_the_rule() {
    let cluster = Cluster::start(
        &[
            ("endpoint.yml", endpoint("key", "{blue: 90, green: 10}")),
            // Two instances: 4 clients never pass a deployment's admission cap (2 x 1 x 2).
            ("blue.yml", deployment_of("blue", "model-1", 2)),
            ("green.yml", deployment_of("green", "model-1", 2)),
        ],
        &[],
    );
    let urls = Arc::new(cluster.urls());
    const N: usize = 3000;
    let next = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(Mutex::new(vec![[0usize; 2]; 3]));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (urls, next, counts) = (urls.clone(), next.clone(), counts.clone());
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= N {
                        return;
                    }
                    let replica = i % urls.len();
                    let r = score(&agent, &urls[replica], P1).unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                    let green = match r.header("azureml-model-deployment") {
                        Some("blue") => 0,
                        Some("green") => 1,
                        other => panic!("served by {other:?}"),
                    };
                    counts.lock().unwrap()[replica][green] += 1;
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    let green: usize = counts.iter().map(|c| c[1]).sum();
    let (n, p) = (N as f64, 0.1);
    let sigma = (n * p * (1.0 - p)).sqrt();
    let bound = 4.5 * sigma;
    println!(
        "aggregate split over 3 replicas: green {green} of {N} (expected {:.0} +- {bound:.1}, 4.5 sigma); per replica [blue, green]: {counts:?}",
        n * p
    );
    assert!((green as f64 - n * p).abs() <= bound, "green served {green} of {N}: outside {:.0} +- {bound:.1}", n * p);
    for c in &counts {
        assert_eq!(c[0] + c[1], N / 3, "round robin gives every replica a third: {counts:?}");
    }
}

#[test]
fn a_configmap_swap_and_a_secret_rotation_reach_every_replica() {
    let blue_only = [("endpoint.yml", endpoint("key", "{blue: 100}")), ("blue.yml", deployment("blue", "model-1"))];
    let mut cluster = Cluster::start(&blue_only, &[]);
    let agent = agent();
    for r in &cluster.replicas {
        // Every replica shows and accepts the Secret's keys.
        assert_eq!(
            r.admin("GET", "/v1/endpoint/keys", None).json(),
            serde_json::json!({"primaryKey": P1, "secondaryKey": S1})
        );
        assert_eq!(score(&agent, &r.scoring, S1).unwrap().status, 200);
        assert_eq!(score(&agent, &r.scoring, "not-a-key").unwrap().status, 401);
    }
    // regenerate-keys would split the replicas: refused, naming the Secret's folder.
    let r = cluster.replicas[0].admin(
        "POST",
        "/v1/endpoint/keys/regenerate",
        Some(&serde_json::json!({"keyType": "secondary"})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.message().contains(cluster.secrets.path()) && r.message().contains("secondary-key"), "{}", r.body);
    let err = cluster.replicas[1].cli_err(&[
        "online-endpoint",
        "regenerate-keys",
        "-n",
        "my-endpoint",
        "--key-type",
        "primary",
    ]);
    assert!(err.contains(cluster.secrets.path()), "{err}");

    // ConfigMap: green at 0 first (loaded everywhere), then all traffic to green.
    let with_green = |traffic: &str| {
        vec![
            ("endpoint.yml", endpoint("key", traffic)),
            ("blue.yml", deployment("blue", "model-1")),
            ("green.yml", deployment("green", "model-2")),
        ]
    };
    cluster.config.update(&with_green("{blue: 100, green: 0}"));
    for r in &cluster.replicas {
        eventually("green exists", Duration::from_secs(30), || {
            match r.admin("GET", "/v1/deployments/green", None).status {
                200 => Ok(()),
                s => Err(s.to_string()),
            }
        });
        r.wait_state("green", "Succeeded");
    }
    let since = Instant::now();
    cluster.config.update(&with_green("{blue: 0, green: 100}"));
    let config_latency = propagation(&cluster, since, "every replica routes to green", |r| {
        let reply = score(&agent, &r.scoring, P1).unwrap();
        reply.status == 200 && reply.header("azureml-model-deployment") == Some("green")
    });
    println!("ConfigMap swap (traffic 100/0 -> 0/100) reached the 3 replicas after {config_latency:?}");

    // Secret: the secondary key rotates (Azure's two-key rotation: clients are on the primary).
    let fingerprint = |r: &Server| r.admin("GET", "/v1/endpoint", None).json()["secrets_dir"]["fingerprint"].clone();
    let before = fingerprint(&cluster.replicas[0]);
    let since = Instant::now();
    cluster.secrets.update(&secrets(P1, S2));
    let secret_latency = propagation(&cluster, since, "every replica accepts the new secondary key", |r| {
        score(&agent, &r.scoring, S2).unwrap().status == 200
    });
    println!("Secret rotation (new secondary-key) reached the 3 replicas after {secret_latency:?}");
    for r in &cluster.replicas {
        assert_eq!(score(&agent, &r.scoring, P1).unwrap().status, 200, "the primary key never stopped working");
        assert_eq!(score(&agent, &r.scoring, S1).unwrap().status, 200, "the old secondary stays in its grace period");
        assert_eq!(r.admin("GET", "/v1/endpoint/keys", None).json()["secondaryKey"], S2);
        let f = fingerprint(r);
        assert_ne!(f, before);
        assert_eq!(f, fingerprint(&cluster.replicas[0]), "every replica holds the same secrets");
    }

    // A bad edit (a key too short) is refused on every replica; the keys in use stay.
    cluster.secrets.update(&secrets("short", S2));
    for r in &cluster.replicas {
        let e = eventually("the bad edit is reported", Duration::from_secs(30), || {
            let e = r.admin("GET", "/v1/endpoint", None).json();
            match e["secrets_dir"]["last_error"].as_str() {
                Some(m) if m.contains("primary-key") && m.contains("at least 32") => Ok(e),
                _ => Err(e.to_string()),
            }
        });
        assert!(!e.to_string().contains(P1) && !e.to_string().contains(S2), "no key in show: {e}");
        assert_eq!(score(&agent, &r.scoring, P1).unwrap().status, 200);
    }
    cluster.secrets.update(&secrets(P1, S2));

    // aml_token: a token one replica signs is accepted by the others.
    cluster
        .config
        .update(&[("endpoint.yml", endpoint("aml_token", "{blue: 100}")), ("blue.yml", deployment("blue", "model-1"))]);
    for r in &cluster.replicas {
        eventually("aml_token mode", Duration::from_secs(30), || {
            let e = r.admin("GET", "/v1/endpoint", None).json();
            if e["auth_mode"] == "aml_token" && e["secrets_dir"]["last_error"].is_null() {
                Ok(())
            } else {
                Err(e.to_string())
            }
        });
    }
    let token =
        cluster.replicas[0].admin("GET", "/v1/endpoint/keys", None).json()["accessToken"].as_str().unwrap().to_string();
    for r in &cluster.replicas {
        assert_eq!(score(&agent, &r.scoring, &token).unwrap().status, 200, "a token signed by replica 0");
        assert_eq!(score(&agent, &r.scoring, P1).unwrap().status, 401, "keys do not work in aml_token mode");
    }
    let worst = config_latency.iter().chain(&secret_latency).max().unwrap();
    assert!(*worst < Duration::from_secs(20), "propagation took {worst:?}");
}

#[test]
fn a_replica_stopped_under_load_costs_no_request() {
    // Two instances per replica: 4 clients never pass one replica's admission cap (2 x 1 x 2),
    // so every refusal seen comes from the stop.
    let cluster = Cluster::start(
        &[("endpoint.yml", endpoint("key", "{blue: 100}")), ("blue.yml", deployment_of("blue", "model-1", 2))],
        &["--shutdown-grace-secs", "10"],
    );
    let mut replicas = cluster.replicas;
    let urls = Arc::new(replicas.iter().map(|r| r.scoring.clone()).collect::<Vec<_>>());
    let (stop, next) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (answered, retried) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (urls, stop, next) = (urls.clone(), stop.clone(), next.clone());
            let (answered, retried, failures) = (answered.clone(), retried.clone(), failures.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while !stop.load(Ordering::Relaxed) {
                    // A Service's client: the next replica in turn; on a refused connection or a
                    // 503 (a replica shutting down), the request goes to the next one.
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    let mut outcome = Err("no attempt".to_string());
                    for attempt in 0..6 {
                        let url = &urls[(first + attempt) % urls.len()];
                        match score(&agent, url, P1) {
                            Ok(r) if r.status == 200 => {
                                outcome = Ok(());
                                break;
                            }
                            Ok(r) if r.status == 503 => outcome = Err(format!("503 {}", r.body)),
                            Ok(r) => {
                                outcome = Err(format!("{} {}", r.status, r.body));
                                break;
                            }
                            Err(e) => outcome = Err(e),
                        }
                        retried.fetch_add(1, Ordering::Relaxed);
                    }
                    match outcome {
                        Ok(()) => answered.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let wait_for = |n: usize| {
        let target = answered.load(Ordering::Relaxed) + n;
        eventually("requests flow", Duration::from_secs(60), || {
            let a = answered.load(Ordering::Relaxed);
            if a >= target || !failures.lock().unwrap().is_empty() {
                Ok(())
            } else {
                Err(a.to_string())
            }
        });
    };
    wait_for(300);
    let status = replicas[1].terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    wait_for(300);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let (answered, retried) = (answered.load(Ordering::Relaxed), retried.load(Ordering::Relaxed));
    println!(
        "one replica of 3 stopped under load: {answered} answered, {retried} attempts retried elsewhere, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(retried > 0, "the stopped replica's refusals were retried elsewhere");
}
