//! `/metrics` over the real router and store: the collector, subscribed to
//! the store, moves the counters as a rebuild runs.

mod dashboard_support;
use dashboard_support::*;
use std::time::Duration;

async fn scrape(f: &Fixture) -> String {
    let (status, headers, text) = get(&f.router(), "/metrics").await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    text
}

#[tokio::test]
async fn counters_follow_the_store() {
    let f = Fixture::new(snapshot(
        vec![host(
            "pve-01",
            "52:54:00:00:00:01",
            "ms-01",
            1,
            "hosts.d/a.kdl",
            1,
        )],
        vec![],
    ));
    let collector = provisioning::metrics::start_collector(f.metrics.clone(), f.store.clone());
    let before = scrape(&f).await;
    assert!(
        before.contains("provisioning_hosts{state=\"registered\"} 1"),
        "{before}"
    );
    f.full_rebuild("pve-01", 1, T0 + MIN);
    // The collector runs on its own task: wait for it to catch up.
    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&f).await;
        if after.contains("provisioning_rebuild_duration_seconds_count 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        after.contains("provisioning_hosts{state=\"ready\"} 1"),
        "{after}"
    );
    assert!(after.contains("provisioning_hosts{state=\"registered\"} 0"));
    assert!(after.contains(
        "provisioning_transitions_total{from=\"joining\",to=\"ready\",event=\"completed\"} 1"
    ));
    assert!(after.contains("provisioning_rebuilds_total{outcome=\"ready\",reason=\"none\"} 1"));
    assert!(
        after.contains("provisioning_rebuild_duration_seconds_sum 1200"),
        "{after}"
    );
    assert!(after.contains("provisioning_phase_duration_seconds_sum{state=\"installing\"} 720"));
    collector.abort();
}
