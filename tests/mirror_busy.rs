//! The mirror share on a busy host: with other work keeping every core busy, a 10% mirror to a
//! cheap shadow still copies about 10% of the requests (the shadow gets its CPU budget at
//! normal priority, not only idle CPU), and `online-deployment show` and `compare` report the
//! same wanted / copied / dropped numbers.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Threads that keep the cores busy until dropped (or for `limit` at most, so that a test
/// that hangs elsewhere never leaves them burning).
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Burners {
    fn start(n: usize, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let until = Instant::now() + limit;
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                    x
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The shadow's `mirror` object from `online-deployment show` (through the CLI).
fn shown(s: &Server, name: &str) -> Value {
    let d = s.cli_json(&["online-deployment", "show", "-n", name, "-e", "my-endpoint", "-o", "json"]);
    assert!(d["mirror"].is_object(), "show has a mirror object for the shadow: {d}");
    d["mirror"].clone()
}

/// Polls `show` until no copy is in flight and the numbers stop moving.
fn settled(s: &Server, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        let m = shown(s, name);
        if m["in_flight"] == 0 && m == last {
            return m;
        }
        assert!(Instant::now() < deadline, "copies never settled: {m}");
        last = m;
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_busy_host_still_gets_the_mirror_share_and_show_and_compare_agree() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({"request_settings": {"max_concurrent_requests_per_instance": 4}}));
    s.deploy("twin", "model-1", json!({"request_settings": {"max_concurrent_requests_per_instance": 4}}));
    s.set_traffic(json!({"blue": 100}));
    s.cli_ok(&["online-endpoint", "update", "-n", "my-endpoint", "--mirror-traffic", "twin=10"]);
    let key = s.primary_key();
    let body = sample_request();

    // Every core busy, plus one: the shadow never finds an idle core.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let burners = Burners::start(cores + 1, Duration::from_secs(150));
    let (clients, n) = (4, 3000u64);
    let sent = AtomicU64::new(0);
    let stop_at = Instant::now() + Duration::from_secs(90);
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                while Instant::now() < stop_at && sent.fetch_add(1, Ordering::Relaxed) < n {
                    let r = s.score_authed(&key, &body, None);
                    assert_eq!(r.status, 200, "{}", r.body);
                    assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
                }
            });
        }
    });
    // Copies that ran while the host was busy (all but the few still queued now): read from
    // the metrics, which count them the same way before and after this change.
    let copied_under_load = mirror_metric(&s, "switchyard_requests_total{");
    let dropped_under_load = mirror_metric(&s, "switchyard_mirror_dropped_total{");
    drop(burners);
    let sent = sent.load(Ordering::Relaxed).min(n) as f64;
    assert!(sent >= 1000.0, "only {sent} requests in 90 s");

    // The point: under SCHED_IDLE a handful of copies ran.
    assert!(
        copied_under_load >= 0.05 * sent,
        "a 10% mirror copied {copied_under_load} of {sent} requests on a busy host ({dropped_under_load} dropped)\n{}",
        s.admin("GET", "/v1/deployments/twin/logs?lines=10000", None)
            .body
            .lines()
            .filter(|l| l.contains("dropped") || l.contains("WARNING"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let m = settled(&s, "twin");
    let (wanted, copied, dropped) =
        (m["wanted"].as_f64().unwrap(), m["copied"].as_f64().unwrap(), m["dropped"].as_f64().unwrap());
    let reasons: f64 = m["dropped_by_reason"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    eprintln!("sent {sent}, under load copied {copied_under_load}, dropped {dropped_under_load}; settled: {m}");
    // The front door's coin: Binomial(sent, 0.1), ±5 sd.
    let sd = (sent * 0.1 * 0.9).sqrt();
    assert!((wanted - sent * 0.1).abs() <= 5.0 * sd, "wanted {wanted} copies of {sent} requests at 10%: {m}");
    assert_eq!(wanted, copied + dropped, "once quiet, every wanted copy is copied or dropped: {m}");
    assert_eq!(dropped, reasons, "every drop has a reason: {m}");
    assert_eq!(m["percent"], 10);
    let effective = m["effective_percent"].as_f64().unwrap();
    assert!((effective - 10.0 * copied / wanted).abs() < 1e-9, "{m}");

    // compare reports the same share, and its pairs are the copies that ran.
    // (A pair is recorded just after its copy is counted, on a shadow thread: poll briefly.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        let c = s.cli_json(&["online-deployment", "compare", "--name", "twin", "-o", "json"]);
        if c["pairs"].as_f64().unwrap() + c["unpaired"].as_f64().unwrap() >= copied || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(c["mirror"], m, "show and compare agree");
    assert_eq!(c["dropped"].as_f64().unwrap(), dropped);
    assert_eq!(c["pairs"].as_f64().unwrap() + c["unpaired"].as_f64().unwrap(), copied, "{c}");
    assert_eq!(c["agreement_ratio"], 1.0, "model-1 agrees with itself: {c}");
    // And the metrics count the same copies.
    assert_eq!(mirror_metric(&s, "switchyard_requests_total{"), copied, "metrics: copies scored");
    assert_eq!(mirror_metric(&s, "switchyard_mirror_dropped_total{"), dropped, "metrics: copies dropped");
}

/// The sum of a metric's samples for the shadow `twin` (mirror role only, where it has roles).
fn mirror_metric(s: &Server, prefix: &str) -> f64 {
    s.admin("GET", "/metrics", None)
        .body
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains("deployment=\"twin\""))
        .filter(|l| !l.contains("role=") || l.contains("role=\"mirror\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
