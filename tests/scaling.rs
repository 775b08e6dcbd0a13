//! Scaling up and down while requests flow: no request fails.

use crate::common;

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
    let load = Load::start(&s, 4, &key, sample_request());

    for count in [2, 3, 1, 4, 1] {
        let r = s.admin("PATCH", "/v1/deployments/blue", Some(&json!({"instance_count": count})));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = s.wait_state("blue", "Succeeded");
        assert_eq!(v["instances"]["ready"], count, "{v}");
        // Let traffic flow on the new size before the next change.
        load.wait_for_more(200);
    }
    let report = load.stop();
    assert_eq!(report.ok, report.total, "failures: {:?}", report.failures);
    assert!(report.ok >= 1000);
    let admission = s.admin("GET", "/v1/deployments/blue", None).json();
    assert_eq!(admission["instance_count"], 1);
}
