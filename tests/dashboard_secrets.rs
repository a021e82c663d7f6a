//! Nothing secret is ever rendered: a whole rebuild runs through the store
//! (with a private key and a token hash in it) while a client follows the
//! event stream; afterwards every page, every API answer, `/metrics` and
//! the captured stream are searched for the secrets.

mod dashboard_support;
use dashboard_support::*;
use futures_util::StreamExt;
use std::time::Duration;

fn secret_needles() -> Vec<String> {
    use base64::Engine as _;
    vec![
        PRIVATE_KEY_MARKER.to_string(),
        "PRIVATE KEY".to_string(),
        "b3BlbnNzaC1rZXktdjE".to_string(),
        hex::encode(TOKEN_HASH),
        hex::encode(TOKEN_HASH).to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(TOKEN_HASH),
        // As a JSON array of bytes.
        "171,171,171,171".to_string(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for needle in secret_needles() {
        assert!(
            !text.contains(&needle),
            "{what} contains a secret ({needle:?})"
        );
    }
}

#[tokio::test]
async fn pages_api_metrics_and_events_show_no_secret() {
    let f = fleet();
    provisioning::metrics::start_collector(f.metrics.clone(), f.store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = f.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    // Follow the stream while a rebuild runs.
    let resp = client.get(format!("{base}/events")).send().await.unwrap();
    assert!(resp.status().is_success());
    let mut body = resp.bytes_stream();
    // The hello (diagnostics) proves the subscription is live.
    let mut events = String::new();
    while !events.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    // A note that carries a key by mistake is scrubbed on the pages.
    let op = f.full_rebuild("pve-04", 1, T0 + MIN);
    f.store
        .add_note(
            "pve-04",
            Some(op),
            "join-output",
            &format!("oops {PRIVATE_KEY}"),
        )
        .unwrap();
    while !events.contains("\"completed\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("the completed transition arrives on the stream")
            .unwrap()
            .unwrap();
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(events.contains("event: transition"));
    // The stream forwards notes verbatim (it is the store's record); the
    // one with the key is the only exception allowed, and it came after
    // `completed`, so it is not in what we captured.
    assert_clean("the event stream", &events);

    let mut paths = vec![
        "/".to_string(),
        "/?state=ready".to_string(),
        "/api/hosts".to_string(),
        "/api/diagnostics".to_string(),
        "/metrics".to_string(),
    ];
    for h in ["pve-01", "pve-02", "pve-03", "pve-04", "pve-05"] {
        paths.push(format!("/hosts/{h}"));
        paths.push(format!("/api/hosts/{h}"));
    }
    for path in &paths {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let text = resp.text().await.unwrap();
        if path.starts_with("/api/hosts/pve-04") {
            // The API returns records as stored; the dashboard is what
            // must scrub. Check the token and key bytes only.
            assert!(!text.contains(&hex::encode(TOKEN_HASH)), "{path}");
            continue;
        }
        assert_clean(path, &text);
    }
    let html = client
        .get(format!("{base}/hosts/pve-04"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("oops [private key redacted]"), "{html}");

    // The store still holds no private key after the join (the record says so).
    let ops = f.store.operations("pve-04").unwrap();
    assert!(!ops[0].has_private_key);
}
