//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, spoken as plain JSON over HTTP) against the real daemon
//! binary on a loopback port.
//!
//! Verified: the grid shows the declared hosts; a state change (a raised
//! `rebuild` in hosts.d, then an iPXE request of the boot flow) updates the
//! tile without a reload within one second of the transition; the filter
//! works without a round trip; the host page shows the history; the
//! browser logs no error. Screenshots of the grid (desktop and phone width)
//! are saved to `<target>/dashboard-grid.png` and `dashboard-phone.png`.

mod common;

use base64::Engine as _;
use common::{Daemon, Deployment};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Driver {
    async fn start() -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install the Debian package `{package}` to run the browser test"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--hide-scrollbars",
                        "--window-size=1360,1000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                },
                "goog:loggingPrefs": { "browser": "ALL" }
            }}
        });
        let mut d = Driver {
            child,
            base,
            http,
            session: String::new(),
            _profile: profile,
        };
        let v = d.raw("POST", "/session", Some(caps)).await;
        d.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        d
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().await.expect("talk to chromedriver");
        let v: Value = resp.json().await.expect("chromedriver answers JSON");
        if let Some(err) = v["value"]["error"].as_str() {
            panic!(
                "webdriver {method} {path}: {err}: {}",
                v["value"]["message"]
            );
        }
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn exec(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.exec(script).await;
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Browser console entries since the last call.
    async fn console(&self) -> Vec<Value> {
        self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const HOSTS: &[(&str, &str)] = &[
    ("pve-01", "52:54:00:a1:00:01"),
    ("pve-02", "52:54:00:a1:00:02"),
    ("pve-03", "52:54:00:a1:00:03"),
    ("pve-04", "52:54:00:a1:00:04"),
    ("pve-05", "52:54:00:a1:00:05"),
    ("pve-06", "52:54:00:a1:00:06"),
];

fn hosts_file(rebuilds: &[u64]) -> String {
    HOSTS
        .iter()
        .zip(rebuilds)
        .map(|((name, mac), r)| {
            format!(
                "host \"{name}\" {{\n    mac \"{mac}\"\n    server-type \"small\"\n    rebuild {r}\n}}\n"
            )
        })
        .collect()
}

/// Installs a MutationObserver that records (in page time) when the tile of
/// `host` first shows `state`, and a marker that a reload would erase.
fn watch_tile(host: &str, state: &str) -> String {
    format!(
        r#"window.__noReload = true;
        window.__seen = window.__seen || {{}};
        const tile = document.querySelector('#grid > .tile[data-host="{host}"]');
        const check = () => {{
            if (tile.getAttribute('data-state') === '{state}' && !window.__seen['{state}']) {{
                window.__seen['{state}'] = Date.now();
            }}
        }};
        new MutationObserver(check).observe(tile, {{ attributes: true, subtree: true, childList: true }});
        check();
        return true;"#
    )
}

async fn transition_time(url: &str, host: &str, to: &str) -> i64 {
    let detail: Value = reqwest::get(format!("{url}/api/hosts/{host}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|t| t["to"] == to)
        .and_then(|t| t["at_ms"].as_i64())
        .unwrap_or_else(|| panic!("no transition of {host} to {to}: {detail}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_a_real_browser() {
    let dep = Deployment::new(&format!(
        "proxmox:\n  iso_sha256: \"{}\"\n",
        "ab".repeat(32)
    ));
    // pve-01 is being rebuilt and has fetched its installer already;
    // pve-06 has a broken sibling file (a diagnostics entry).
    dep.write_hosts("rack1.kdl", &hosts_file(&[1, 0, 0, 0, 0, 0]));
    dep.write_hosts(
        "broken.kdl",
        "host \"pve-99\" {\n    mac \"52:54:00:a1:00:99\"\n    server-type \"small\"\n    rebuild one\n}\n",
    );
    let daemon = Daemon::start(&dep.config());
    let url = daemon.url.clone();
    let http = reqwest::Client::new();
    common::eventually(Duration::from_secs(10), "pve-01 armed", || {
        let url = url.clone();
        async move {
            let h: Value = reqwest::get(format!("{url}/api/hosts/pve-01"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (h["state"] == "pxe_ready").then_some(())
        }
    })
    .await;
    let r = http
        .get(format!("{url}/ipxe/52:54:00:a1:00:01"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let driver = Driver::start().await;
    driver.goto(&format!("{url}/")).await;

    // The grid shows every declared host.
    let names = driver
        .exec("return Array.from(document.querySelectorAll('#grid > .tile')).map(t => t.getAttribute('data-host'));")
        .await;
    let expected: Vec<&str> = HOSTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, json!(expected));
    assert_eq!(
        driver.exec("return document.querySelector('#grid > .tile[data-host=\"pve-01\"]').getAttribute('data-state');").await,
        json!("pxe_booted")
    );
    assert!(
        driver
            .exec("return document.getElementById('diagnostics').textContent;")
            .await
            .as_str()
            .unwrap()
            .contains("broken.kdl:"),
        "the broken file is listed with its location"
    );

    // The event stream is connected before anything changes.
    driver
        .wait_for(
            "the live indicator",
            "return document.getElementById('live').getAttribute('data-state') === 'live';",
            Duration::from_secs(10),
        )
        .await;

    // 1. A raised `rebuild` arms pve-02: the tile follows without a reload.
    driver.exec(&watch_tile("pve-02", "pxe_ready")).await;
    dep.write_hosts("rack1.kdl", &hosts_file(&[1, 1, 0, 0, 0, 0]));
    let seen = driver
        .wait_for(
            "pve-02's tile to show pxe_ready",
            "return window.__seen && window.__seen['pxe_ready'] || null;",
            Duration::from_secs(10),
        )
        .await
        .as_i64()
        .unwrap();
    let at = transition_time(&url, "pve-02", "pxe_ready").await;
    println!(
        "rebuild raised: transition -> tile updated in {} ms",
        seen - at
    );
    assert!(
        seen - at < 1000,
        "tile updated {} ms after the transition",
        seen - at
    );

    // 2. The boot flow: pve-02 fetches its iPXE script.
    driver.exec(&watch_tile("pve-02", "pxe_booted")).await;
    let r = http
        .get(format!("{url}/ipxe/52:54:00:a1:00:02"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let seen = driver
        .wait_for(
            "pve-02's tile to show pxe_booted",
            "return window.__seen && window.__seen['pxe_booted'] || null;",
            Duration::from_secs(10),
        )
        .await
        .as_i64()
        .unwrap();
    let at = transition_time(&url, "pve-02", "pxe_booted").await;
    println!(
        "iPXE served: transition -> tile updated in {} ms",
        seen - at
    );
    assert!(
        seen - at < 1000,
        "tile updated {} ms after the transition",
        seen - at
    );
    assert_eq!(
        driver.exec("return window.__noReload === true;").await,
        json!(true),
        "the page was not reloaded"
    );
    // The badge text and the counts follow, too.
    driver
        .wait_for(
            "the badge and counts",
            "const t = document.querySelector('#grid > .tile[data-host=\"pve-02\"]');
             return t.querySelector('[data-role=label]').textContent === 'PXE booted'
                 && document.querySelector('[data-count=pxe_booted]').textContent === '2'
                 && document.querySelector('[data-count=registered]').textContent === '4';",
            Duration::from_secs(2),
        )
        .await;

    // Let the time-in-state tick once, then take the picture.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let grid_png = target_dir().join("dashboard-grid.png");
    driver.screenshot(&grid_png).await;
    println!("screenshot: {}", grid_png.display());

    // The filter works in place (no navigation).
    driver
        .exec("document.querySelector('.count[data-filter=\"pxe_booted\"]').click(); return true;")
        .await;
    let visible = driver
        .exec("return Array.from(document.querySelectorAll('#grid > .tile')).filter(t => !t.hidden).map(t => t.getAttribute('data-host'));")
        .await;
    assert_eq!(visible, json!(["pve-01", "pve-02"]));
    assert_eq!(
        driver.exec("return location.search;").await,
        json!("?state=pxe_booted")
    );
    assert_eq!(
        driver.exec("return window.__noReload === true;").await,
        json!(true)
    );

    // Phone width: one column, nothing cut off.
    driver.goto(&format!("{url}/")).await;
    driver.resize(390, 1200).await;
    let overflow = driver
        .exec("return document.documentElement.scrollWidth > window.innerWidth;")
        .await;
    assert_eq!(
        overflow,
        json!(false),
        "the page scrolls sideways on a phone"
    );
    driver
        .screenshot(&target_dir().join("dashboard-phone.png"))
        .await;
    driver.resize(1360, 1000).await;

    // The host page shows the history, newest first.
    driver.goto(&format!("{url}/hosts/pve-02")).await;
    let rows = driver
        .exec("return Array.from(document.querySelectorAll('#history tbody tr')).map(r => r.textContent.replace(/\\s+/g, ' ').trim());")
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].as_str().unwrap().contains("PXE booted"), "{rows:?}");
    assert!(rows[1].as_str().unwrap().contains("PXE ready"), "{rows:?}");
    driver
        .screenshot(&target_dir().join("dashboard-host.png"))
        .await;

    // The host page follows too: raising `rebuild` again supersedes the
    // rebuild, and the new rows appear without a reload. (A second iPXE fetch
    // would not do: a pxe_booted host asking again is not a state change.)
    driver
        .wait_for(
            "the host page's stream",
            "return document.getElementById('live').getAttribute('data-state') === 'live';",
            Duration::from_secs(10),
        )
        .await;
    dep.write_hosts("rack1.kdl", &hosts_file(&[1, 2, 0, 0, 0, 0]));
    driver
        .wait_for(
            "the host page to show the new history rows",
            "const r = document.querySelectorAll('#history tbody tr'); return r.length >= 3 && r[0].textContent.includes('PXE ready');",
            Duration::from_secs(10),
        )
        .await;

    // No console errors anywhere along the way.
    let logs = driver.console().await;
    let errors: Vec<&Value> = logs.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "browser console errors: {errors:#?}");

    driver.cmd("DELETE", "", None).await;
    drop(driver);
    daemon.stop();
}

/// Starts the daemon on a fixed loopback port (so a restarted daemon is
/// found at the same address) and waits until it listens.
fn start_daemon_on(config: &Path, port: u16) -> Child {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisioning"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the provisioning binary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("provisioning: listening on ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the daemon listens");
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_reconnects_after_a_daemon_restart() {
    let dep = Deployment::new("");
    dep.write_hosts("rack1.kdl", &hosts_file(&[0, 0, 0, 0, 0, 0]));
    let port = free_port();
    let mut daemon = start_daemon_on(&dep.config(), port);
    let url = format!("http://127.0.0.1:{port}");

    let driver = Driver::start().await;
    driver.goto(&format!("{url}/")).await;
    let live = "return document.getElementById('live').getAttribute('data-state');";
    driver
        .wait_for(
            "the stream",
            &format!("return (() => {{ {live} }})() === 'live';"),
            Duration::from_secs(10),
        )
        .await;
    driver.exec("window.__noReload = true; return true;").await;

    // Stop the daemon: the page says so instead of going stale silently.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = daemon.wait();
    driver
        .wait_for(
            "the reconnecting indicator",
            "return document.getElementById('live').getAttribute('data-state') === 'reconnecting';",
            Duration::from_secs(10),
        )
        .await;

    // A change made while the daemon is down (the file is edited), then
    // the daemon comes back: the page reconnects by itself and catches up.
    dep.write_hosts("rack1.kdl", &hosts_file(&[0, 0, 1, 0, 0, 0]));
    let mut daemon = start_daemon_on(&dep.config(), port);
    driver
        .wait_for(
            "pve-03 to show pxe_ready after the restart",
            "return document.querySelector('#grid > .tile[data-host=\"pve-03\"]').getAttribute('data-state') === 'pxe_ready'
                && document.getElementById('live').getAttribute('data-state') === 'live';",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        driver.exec("return window.__noReload === true;").await,
        json!(true),
        "the page was not reloaded"
    );

    // And it follows new transitions again.
    dep.write_hosts("rack1.kdl", &hosts_file(&[0, 0, 1, 1, 0, 0]));
    driver
        .wait_for(
            "pve-04 to show pxe_ready",
            "return document.querySelector('#grid > .tile[data-host=\"pve-04\"]').getAttribute('data-state') === 'pxe_ready';",
            Duration::from_secs(5),
        )
        .await;

    driver.cmd("DELETE", "", None).await;
    drop(driver);
    let _ = daemon.kill();
    let _ = daemon.wait();
}
