//! Scaling up and down while requests flow: no request fails.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::json;

#[test]
fn scale_up_and_down_under_traffic() {
    let s = Arc::new(Server::start());
    s.create_endpoint();
    // 4 clients against one instance: the admission cap (2 × 4 × 1) leaves room for all.
    s.deploy("blue", "model-1", json!({"request_settings": {"max_concurrent_requests_per_instance": 4}}));
    s.set_traffic(json!({"blue": 100}));
    let key = s.primary_key();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (s, key, stop, ok, failed) = (s.clone(), key.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let body = sample_request();
                let mut first_failure = None;
                while !stop.load(Ordering::Relaxed) {
                    let r = s.score_authed(&key, &body, None);
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.get_or_insert(format!("{} {}", r.status, r.body));
                    }
                }
                first_failure
            })
        })
        .collect();

    for count in [2, 3, 1, 4, 1] {
        let before = ok.load(Ordering::Relaxed);
        let r = s.admin("PATCH", "/v1/deployments/blue", Some(&json!({"instance_count": count})));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = s.wait_state("blue", "Succeeded");
        assert_eq!(v["instances"]["ready"], count, "{v}");
        // Let traffic flow on the new size before the next change.
        eventually("200 more answers", std::time::Duration::from_secs(60), || {
            let n = ok.load(Ordering::Relaxed);
            if n >= before + 200 {
                Ok(())
            } else {
                Err(format!("{} answers", n - before))
            }
        });
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<_> = clients.into_iter().filter_map(|c| c.join().unwrap()).collect();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failures: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) >= 1000);
    let admission = s.admin("GET", "/v1/deployments/blue", None).json();
    assert_eq!(admission["instance_count"], 1);
}
