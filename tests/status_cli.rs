//! `provisioning status` as a process: exit status 2 and a clear message
//! when the daemon cannot be reached; the table and exit status 1 against
//! a live router with a failed host.

mod dashboard_support;
use dashboard_support::*;

fn free_closed_port() -> u16 {
    // Bind and drop: nothing listens there afterwards.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn unreachable_daemon_exits_2() {
    let port = free_closed_port();
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_provisioning"))
        .args(["status", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the provisioning daemon at http://127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn failed_host_exits_1_and_unknown_host_3() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = fleet();
    let router = f.router();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    });
    let url = format!("http://{addr}");
    let run = |args: &[&str]| {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_provisioning"))
            .arg("status")
            .args(args)
            .env("PROVISIONING_URL", &url)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "pve-03 is failed");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("pve-03   failed"), "{table}");

    let out = run(&["pve-01"]);
    assert_eq!(out.status.code(), Some(0));
    let detail = String::from_utf8_lossy(&out.stdout);
    assert!(detail.contains("History:"), "{detail}");
    assert!(detail.contains("joining → ready"), "{detail}");

    let out = run(&["--json", "pve-01"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "pve-01");

    let out = run(&["pve-99"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host \"pve-99\" is not declared"));
}

#[test]
fn watch_prints_transitions_as_they_happen() {
    use std::io::{BufRead, BufReader};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = fleet();
    let router = f.router();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_provisioning"))
        .args([
            "status",
            "--watch",
            "--url",
            &format!("http://{addr}"),
            "pve-04",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The detail comes first; then the stream is followed.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("History:")) {
        seen.push(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap());
    }
    // Transitions may race the subscription: keep starting until one shows.
    let mut generation = 1;
    let line = loop {
        f.start("pve-04", generation);
        generation += 1;
        match rx.recv_timeout(std::time::Duration::from_millis(500)) {
            Ok(l) if l.contains("start_rebuild") => break l,
            Ok(_) | Err(_) => assert!(generation < 20, "no watch line: {seen:?}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("  pve-04  "), "{line}");
    assert!(
        line.contains("→ pxe_ready  (start_rebuild)  rebuild"),
        "{line}"
    );
}
