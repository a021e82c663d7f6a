//! The real daemon on port 0 against a temporary hosts.d: edits show up in
//! the API and the event stream, restarts (clean and SIGKILL) lose nothing,
//! a broken file keeps the others running and is reported with file:line:col.

mod common;

use common::{Daemon, Deployment, eventually, host, host_kdl, hosts_json};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn edit_shows_in_api_and_events_and_survives_restarts() {
    let dep = Deployment::new("");
    dep.write_hosts("a.kdl", &host_kdl("pve-01", "58:47:CA:71:02:1E", 0));
    let d = Daemon::start(&dep.config());

    let hosts = d.get_json("/api/hosts").await;
    let h = host(&hosts, "pve-01").expect("pve-01 listed");
    assert_eq!(h["mac"], "58:47:ca:71:02:1e", "MAC is stored canonical");
    assert_eq!(h["state"], "registered");
    assert_eq!(h["rebuild"], 0);

    // Subscribe to the event stream before the edit.
    let resp = reqwest::get(format!("{}/events", d.url)).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = resp.bytes_stream();

    let t0 = Instant::now();
    dep.write_hosts("a.kdl", &host_kdl("pve-01", "58:47:CA:71:02:1E", 1));
    let url = d.url.clone();
    eventually(Duration::from_secs(5), "pve-01 armed", || {
        let url = url.clone();
        async move {
            let hosts = hosts_json(&url).await?;
            let h = host(&hosts, "pve-01")?;
            (h["state"] == "pxe_ready" && h["observed_generation"] == 1).then_some(())
        }
    })
    .await;
    println!("edit -> visible in /api/hosts: {:?}", t0.elapsed());

    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("event: transition") && seen.contains("\"to\":\"pxe_ready\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        got,
        Ok(true),
        "transition event not seen; stream so far:\n{seen}"
    );

    // The host detail has the history.
    let detail = d.get_json("/api/hosts/pve-01").await;
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["to"], "pxe_ready");
    assert_eq!(history.last().unwrap()["event"], "start_rebuild");

    // Clean restart: same state, no second rebuild started.
    let status = d.stop();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let d = Daemon::start(&dep.config());
    let detail = d.get_json("/api/hosts/pve-01").await;
    assert_eq!(detail["state"], "pxe_ready");
    assert_eq!(detail["observed_generation"], 1);
    assert_eq!(detail["history"].as_array().unwrap().len(), history.len());

    // SIGKILL: nothing lost either.
    d.kill9();
    let d = Daemon::start(&dep.config());
    let detail = d.get_json("/api/hosts/pve-01").await;
    assert_eq!(detail["state"], "pxe_ready");
    assert_eq!(detail["history"].as_array().unwrap().len(), history.len());
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_file_keeps_others_and_is_reported() {
    let dep = Deployment::new("");
    dep.write_hosts("a.kdl", &host_kdl("pve-01", "58:47:ca:71:02:1e", 0));
    dep.write_hosts("b.kdl", &host_kdl("pve-02", "58:47:ca:71:02:1f", 0));
    let d = Daemon::start(&dep.config());
    assert!(host(&d.get_json("/api/hosts").await, "pve-02").is_some());

    dep.write_hosts("b.kdl", "host \"pve-02\" {\n    mac \"nonsense\"\n");
    let url = d.url.clone();
    let diags = eventually(Duration::from_secs(5), "a diagnostic for b.kdl", || {
        let url = url.clone();
        async move {
            let v: serde_json::Value = reqwest::get(format!("{url}/api/diagnostics"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (!v.as_array()?.is_empty()).then_some(v)
        }
    })
    .await;
    let d0 = diags
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "error")
        .expect("an error diagnostic");
    assert!(d0["file"].as_str().unwrap().ends_with("b.kdl"), "{diags}");
    assert!(d0["line"].as_u64().unwrap() >= 1, "{diags}");
    assert!(d0["column"].as_u64().unwrap() >= 1);

    // Both hosts are still there: b.kdl's last valid version stays in force.
    let hosts = d.get_json("/api/hosts").await;
    assert!(host(&hosts, "pve-01").is_some());
    assert!(host(&hosts, "pve-02").is_some(), "{hosts}");

    // Deleting a file retires its hosts.
    std::fs::remove_file(dep.hosts_dir().join("a.kdl")).unwrap();
    let url = d.url.clone();
    eventually(Duration::from_secs(5), "pve-01 retired", || {
        let url = url.clone();
        async move {
            let hosts: serde_json::Value = reqwest::get(format!("{url}/api/hosts"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            host(&hosts, "pve-01").is_none().then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_4xx() {
    let dep = Deployment::new("");
    let d = Daemon::start(&dep.config());
    let c = reqwest::Client::new();
    for (path, want) in [
        ("/api/hosts/Not_A_Label", 400),
        ("/api/hosts/unknown-host", 404),
        ("/api/hosts/..%2F..%2Fetc%2Fpasswd", 400),
        ("/nope", 404),
    ] {
        let r = c.get(format!("{}{}", d.url, path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{path}");
    }
    assert_eq!(
        reqwest::get(format!("{}/healthz", d.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
}

/// `systemctl reload` with a new `paths.hosts_dir`: the hosts there are
/// loaded, and later edits in the new directory are picked up without
/// another reload (the watch moved with the setting).
#[tokio::test(flavor = "multi_thread")]
async fn reload_with_a_new_hosts_dir_watches_the_new_dir() {
    let dep = Deployment::new("");
    dep.write_hosts("a.kdl", &host_kdl("pve-01", "58:47:CA:71:02:1E", 0));
    let d = Daemon::start(&dep.config());
    assert!(host(&d.get_json("/api/hosts").await, "pve-01").is_some());

    let root = dep.dir.path();
    let moved = root.join("hosts-moved.d");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(
        root.join("hosts.d/server-types.yaml"),
        moved.join("server-types.yaml"),
    )
    .unwrap();
    std::fs::write(
        moved.join("b.kdl"),
        host_kdl("pve-02", "58:47:CA:71:02:2E", 0),
    )
    .unwrap();
    std::fs::write(
        dep.config(),
        format!(
            "paths:\n  hosts_dir: {0}\n  state_dir: {1}/state\n  server_types: {0}/server-types.yaml\n",
            moved.display(),
            root.display()
        ),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);

    let url = d.url.clone();
    let names = |url: String| async move {
        let hosts = hosts_json(&url).await?;
        Some(
            hosts
                .as_array()?
                .iter()
                .filter_map(|h| h["name"].as_str().map(String::from))
                .collect::<Vec<_>>(),
        )
    };
    eventually(
        Duration::from_secs(10),
        "pve-02 from the new dir, pve-01 retired",
        || {
            let url = url.clone();
            async move { (names(url).await? == ["pve-02"]).then_some(()) }
        },
    )
    .await;

    // An edit in the new directory, with no reload: picked up.
    let tmp = moved.join(".c.kdl.tmp");
    std::fs::write(&tmp, host_kdl("pve-03", "58:47:CA:71:02:3E", 0)).unwrap();
    std::fs::rename(&tmp, moved.join("c.kdl")).unwrap();
    eventually(
        Duration::from_secs(10),
        "pve-03 from an edit in the new dir",
        || {
            let url = url.clone();
            async move { (names(url).await? == ["pve-02", "pve-03"]).then_some(()) }
        },
    )
    .await;

    // And the old directory is no longer watched: an edit there changes nothing.
    dep.write_hosts("a.kdl", &host_kdl("pve-09", "58:47:CA:71:02:9E", 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(url.clone()).await.unwrap(), ["pve-02", "pve-03"]);
    assert!(
        d.logs().contains("now watching the reloaded directories"),
        "{}",
        d.logs()
    );
    // stderr is a pipe here, not a terminal: plain text, no colour codes.
    assert!(
        !d.logs().contains('\x1b'),
        "escape sequences in a piped log"
    );
    drop(d);
}

/// `paths.templates_dir` overrides the dashboard's pages too; a broken
/// override stops the start with a message naming the file, before anything
/// listens.
#[tokio::test(flavor = "multi_thread")]
async fn templates_dir_overrides_dashboard_pages_and_a_broken_one_refuses_to_start() {
    let dep = Deployment::with_settings(|root| {
        let dir = root.join("templates");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("fleet.html"),
            "{% extends \"layout.html\" %}{% block main %}<p id=\"ours\">our fleet page: {{ total }} hosts</p>{% endblock %}",
        )
        .unwrap();
        format!("  templates_dir: {}/templates\n", root.display())
    });
    // (The extra line lands inside the generated config's `paths:` block.)
    dep.write_hosts("a.kdl", &host_kdl("pve-01", "58:47:CA:71:02:1E", 0));
    let d = Daemon::start(&dep.config());
    let page = reqwest::get(format!("{}/", d.url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("our fleet page: 1 hosts"), "{body}");
    // The host page is still the embedded one.
    let host = reqwest::get(format!("{}/hosts/pve-01", d.url))
        .await
        .unwrap();
    assert_eq!(host.status(), 200);
    assert!(!host.text().await.unwrap().contains("our fleet page"));
    drop(d);

    std::fs::write(dep.dir.path().join("templates/fleet.html"), "{% if %}").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_provisioning"))
        .args(["serve", "--config"])
        .arg(dep.config())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dashboard templates") && err.contains("fleet.html"),
        "{err}"
    );
}
