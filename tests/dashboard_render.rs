//! Golden HTML of the dashboard pages over an in-memory store with a fixed
//! clock, plus the properties a snapshot review could miss: filtering,
//! escaping, asset caching, and that nothing changes state.

mod dashboard_support;
use axum::http::StatusCode;
use dashboard_support::*;

#[tokio::test]
async fn fleet_page() {
    let f = fleet();
    let (status, headers, html) = get(&f.router(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    insta::assert_snapshot!(html);
}

#[tokio::test]
async fn fleet_page_filtered_without_javascript() {
    let f = fleet();
    let (status, _, html) = get(&f.router(), "/?state=failed").await;
    assert_eq!(status, StatusCode::OK);
    // Every tile is rendered (the script can switch filters), but only the
    // failed one is visible.
    let visible: Vec<&str> = html
        .split("<li class=\"tile ")
        .skip(1)
        .filter(|t| !t.split('>').next().unwrap().contains(" hidden"))
        .collect();
    assert_eq!(visible.len(), 1, "{html}");
    assert!(visible[0].starts_with("st-failed\" data-host=\"pve-03\""));
    assert!(html.contains("href=\"/?state=failed\" data-filter=\"failed\" aria-current=\"true\""));

    let (status, _, _) = get(&f.router(), "/?state=cooking").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn host_pages() {
    let f = fleet();
    for host in ["pve-01", "pve-02", "pve-04"] {
        let (status, _, html) = get(&f.router(), &format!("/hosts/{host}")).await;
        assert_eq!(status, StatusCode::OK);
        insta::assert_snapshot!(format!("host_{host}"), html);
    }
    let (status, _, html) = get(&f.router(), "/hosts/pve-01").await;
    assert_eq!(status, StatusCode::OK);
    // The pinned key's fingerprint, as `ssh-keygen -l` prints it, and not the key.
    assert!(html.contains("SHA256:"), "{html}");
    assert!(!html.contains("AAAAC3NzaC1lZDI1NTE5AAAAIBtWWA8"));
    assert!(html.contains("successfully added node"));

    let (status, _, _) = get(&f.router(), "/hosts/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&f.router(), "/hosts/-bad-").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn text_from_machines_is_escaped() {
    let f = fleet();
    let (_, _, html) = get(&f.router(), "/").await;
    assert!(!html.contains("<script>alert(1)"), "unescaped cause");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    let (_, _, html) = get(&f.router(), "/hosts/pve-03").await;
    assert!(!html.contains("<script>alert(1)"));
}

#[tokio::test]
async fn pages_offer_no_way_to_change_anything() {
    let f = fleet();
    for path in ["/", "/hosts/pve-01", "/hosts/pve-02"] {
        let (_, _, html) = get(&f.router(), path).await;
        for needle in ["<form", "<button", "<input", "method=\"post\""] {
            assert!(!html.to_lowercase().contains(needle), "{path} has {needle}");
        }
    }
    let js = provisioning::dashboard::asset_url("dashboard.js");
    let (_, _, js) = get(&f.router(), &js).await;
    for needle in ["POST", "PUT", "DELETE", "method:"] {
        assert!(!js.contains(needle), "script uses {needle}");
    }
}

#[tokio::test]
async fn assets_are_cached_by_content_hash() {
    let f = fleet();
    let url = provisioning::dashboard::asset_url("dashboard.css");
    let (_, _, html) = get(&f.router(), "/").await;
    assert!(html.contains(&url), "the page links {url}");
    let (status, headers, css) = get(&f.router(), &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(css.contains(".tile"));
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = headers["etag"].to_str().unwrap().to_string();

    let (status, headers, _) = get(&f.router(), "/assets/dashboard.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-cache");

    use tower::ServiceExt;
    let resp = f
        .router()
        .oneshot(
            axum::http::Request::get("/assets/dashboard.css")
                .header("if-none-match", &etag)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let (status, _, _) = get(&f.router(), "/assets/../Cargo.toml").await;
    assert_ne!(status, StatusCode::OK);
}
