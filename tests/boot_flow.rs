//! The machine-facing boot flow against the real daemon on port 0: an armed
//! host goes iPXE → answer → installed webhook → first-boot script →
//! phone-home, every refusal answers with a clear 4xx and changes nothing,
//! and no secret (callback token, root password hash, ephemeral private key)
//! shows up in a log line, an API response or an event.

mod common;

use common::{Daemon, Deployment, eventually, host, host_kdl};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "pve-01";
const MAC: &str = "58:47:ca:71:02:1e";
/// The same MAC the way iPXE's `${net0/mac:hexhyp}` spells it.
const MAC_DASHES: &str = "58-47-CA-71-02-1E";
const PUBLIC_URL: &str = "http://provisioning.test:8080";
/// `openssl passwd -6` of a throwaway password.
const ROOT_HASH: &str = "$6$Zq8v1xTnB3kP0s9W$BjVcQr8JsLFzZBouzg9.AjolnsNyFwmKd956jmJfnpr3K4PNU1kjvFadP1yzhg5wAOf2YxFadULCCtm4JDe5z0";
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIACPzwRAu3AX71E2PotOp0YqcuUaStl1GdHEyw5kSm+0 root@pve-01";
const DMI_UUID: &str = "4c4c4544-0039-3010-8048-b4c04f4e4b32";
const ISO_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Options {
    answer_token: Option<&'static str>,
    discover_unknown: bool,
}

struct Fixture {
    dep: Deployment,
    iso_sha256: String,
    iso: Vec<u8>,
}

fn iso_bytes() -> Vec<u8> {
    (0..ISO_BYTES).map(|i| (i * 7 % 251) as u8).collect()
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A deployment with boot assets (a 1 MiB stand-in ISO, kernel, initrd) and
/// a real `$6$` root password hash file.
fn fixture(opts: Options) -> Fixture {
    let iso = iso_bytes();
    let iso_sha256 = hex::encode(sha2::Sha256::digest(&iso));
    let dep = Deployment::with_settings(|dir| {
        std::fs::write(dir.join("proxmox.iso"), &iso).unwrap();
        std::fs::write(dir.join("vmlinuz"), b"not really a kernel\n").unwrap();
        std::fs::write(dir.join("initrd.img"), b"not really an initrd\n").unwrap();
        write_private(&dir.join("root-password.hash"), &format!("{ROOT_HASH}\n"));
        let d = dir.display();
        let mut s = format!(
            "server:\n  public_url: {PUBLIC_URL}\n\
             proxmox:\n  iso: {d}/proxmox.iso\n  kernel: {d}/vmlinuz\n  initrd: {d}/initrd.img\n"
        );
        if let Some(t) = opts.answer_token {
            write_private(&dir.join("answer-token"), &format!("{t}\n"));
            s.push_str(&format!("  answer_token_file: {d}/answer-token\n"));
        }
        s.push_str(&format!(
            "answer:\n  root_password_hash_file: {d}/root-password.hash\n"
        ));
        if opts.discover_unknown {
            s.push_str(
                "pxe:\n  enable: true\n  interface: lo\n  subnet: 127.0.0.0/8\n  \
                 server_address: 127.0.0.1\n  dnsmasq: \"off\"\n  discover_unknown: true\n",
            );
        }
        s
    });
    Fixture {
        dep,
        iso_sha256,
        iso,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The installer's system information (schema 1.0) for a machine with
/// these NICs.
fn sysinfo(macs: &[&str], uuid: &str) -> Value {
    let nics: Vec<Value> = macs
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"link": format!("enp{}s0", i + 1), "mac": m}))
        .collect();
    json!({
        "$schema": {"version": "1.0"},
        "product": {"fullname": "Proxmox VE", "product": "pve", "enable_btrfs": true},
        "iso": {"release": "9.1", "isorelease": "1"},
        "dmi": {
            "system": {"name": "Standard PC", "serial": "S123", "sku": "SKU1", "uuid": uuid},
            "baseboard": {"name": "BB", "serial": "B123", "asset_tag": "A1"},
            "chassis": {"serial": "C123", "sku": "CS1", "asset_tag": "A2"}
        },
        "network_interfaces": nics
    })
}

/// The post-installation webhook body (schema 1.2).
fn webhook() -> Value {
    json!({
        "$schema": {"version": "1.2"},
        "fqdn": "pve-01.lan",
        "machine-id": "0123456789abcdef0123456789abcdef",
        "debian-version": "13.1",
        "product": {"fullname": "Proxmox VE", "short": "pve", "version": "9.1.1"},
        "iso": {"release": "9.1", "isorelease": "1"},
        "kernel-version": {"machine": "x86_64", "release": "6.17.2-1-pve", "sysname": "Linux", "version": "#1 SMP PREEMPT_DYNAMIC"},
        "boot-info": {"mode": "efi", "secureboot": false},
        "cpu-info": {"cores": 4, "cpus": 4, "flags": "fpu vme de pse", "hvm": true, "model": "QEMU Virtual CPU", "sockets": 1},
        "dmi": {
            "system": {"name": "Standard PC", "serial": "S123", "sku": "SKU1", "uuid": DMI_UUID},
            "baseboard": {"name": "BB", "serial": "B123", "asset-tag": "A1"},
            "chassis": {"serial": "C123", "sku": "CS1", "asset-tag": "A2"}
        },
        "filesystem": "zfs (RAID1)",
        "disks": [{"size": 34359738368u64, "udev-properties": {"DEVNAME": "/dev/sda"}}],
        "network-interfaces": [{
            "name": "enp1s0", "mac": MAC, "address": "10.0.0.21/24",
            "is-management": true, "is-pinned": false, "udev-properties": {"ID_NET_NAME_MAC": "enx5847ca71021e"}
        }],
        "ssh-public-host-keys": {"ed25519": HOST_KEY},
        "reboot-mode": "reboot"
    })
}

/// Everything the daemon says on `/events`, collected in the background.
struct Events(Arc<Mutex<String>>);

impl Events {
    async fn subscribe(url: &str) -> Events {
        let resp = client().get(format!("{url}/events")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let buf = Arc::new(Mutex::new(String::new()));
        let keep = buf.clone();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                keep.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        let ev = Events(buf);
        // The stream says hello with the diagnostics once it is live.
        ev.wait_for("event: diagnostics").await;
        ev
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, needle: &str) {
        let buf = self.0.clone();
        eventually(
            Duration::from_secs(5),
            &format!("{needle:?} on /events"),
            || {
                let found = buf.lock().unwrap().contains(needle);
                async move { found.then_some(()) }
            },
        )
        .await;
    }

    /// Transition events as JSON values.
    fn transitions(&self) -> Vec<Value> {
        let text = self.text();
        let mut out = Vec::new();
        for block in text.split("\n\n") {
            if !block.lines().any(|l| l == "event: transition") {
                continue;
            }
            for l in block.lines() {
                if let Some(data) = l.strip_prefix("data: ")
                    && let Ok(v) = serde_json::from_str::<Value>(data)
                {
                    out.push(v);
                }
            }
        }
        out
    }
}

async fn detail(d: &Daemon) -> Value {
    d.get_json(&format!("/api/hosts/{NAME}")).await
}

async fn wait_state(d: &Daemon, want: &str) -> Value {
    let url = d.url.clone();
    eventually(Duration::from_secs(10), &format!("{NAME} {want}"), || {
        let url = url.clone();
        async move {
            let v: Value = client()
                .get(format!("{url}/api/hosts/{NAME}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["state"] == want).then_some(v)
        }
    })
    .await
}

/// Starts the daemon with `pve-01` declared at rebuild 0, subscribes to
/// events, then raises `rebuild` to 1 and waits for `pxe_ready`.
async fn start_armed(fx: &Fixture) -> (Daemon, Events) {
    fx.dep.write_hosts("a.kdl", &host_kdl(NAME, MAC, 0));
    let d = Daemon::start(&fx.dep.config());
    let ev = Events::subscribe(&d.url).await;
    fx.dep.write_hosts("a.kdl", &host_kdl(NAME, MAC, 1));
    wait_state(&d, "pxe_ready").await;
    (d, ev)
}

async fn get(d: &Daemon, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", d.url))
        .send()
        .await
        .unwrap()
}

async fn post_json(d: &Daemon, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", d.url))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_raw(d: &Daemon, path: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{}{path}", d.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn phone_home(d: &Daemon, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/api/hosts/{NAME}/phone-home", d.url))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// Serves the answer and returns the callback token from its webhook URL.
async fn take_answer(d: &Daemon) -> (toml::Table, String) {
    let r = post_json(d, "/api/boot/answer", &sysinfo(&[MAC], DMI_UUID)).await;
    assert_eq!(
        r.status(),
        200,
        "answer refused: {}",
        r.text().await.unwrap()
    );
    let answer: toml::Table = toml::from_str(&r.text().await.unwrap()).expect("answer is TOML");
    let url = answer["post-installation-webhook"]["url"]
        .as_str()
        .expect("webhook url")
        .to_string();
    let token = url.rsplit('/').next().unwrap().to_string();
    (answer, token)
}

/// The callback token and the ephemeral private key, read from the store.
fn stored_private_key(fx: &Fixture) -> String {
    let db = fx.dep.dir.path().join("state/provisioning.sqlite3");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT private_key FROM operations ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get::<_, String>(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn happy_path_from_ipxe_to_phone_home_and_no_secret_leaks() {
    let fx = fixture(Options::default());
    let (d, ev) = start_armed(&fx).await;

    // iPXE: the installer script, with the ISO's checksum for /pxe-init.
    let r = get(&d, &format!("/ipxe/{MAC_DASHES}?platform=pcbios")).await;
    assert_eq!(r.status(), 200);
    let script = r.text().await.unwrap();
    assert!(script.starts_with("#!ipxe"), "{script}");
    for needle in [
        format!("kernel {PUBLIC_URL}/boot/vmlinuz initrd=initrd.img initrd=overlay.cpio.gz"),
        format!("initrd --name initrd.img {PUBLIC_URL}/boot/initrd.img"),
        format!("initrd --name overlay.cpio.gz {PUBLIC_URL}/boot/overlay.cpio.gz"),
        format!("pxe.iso_url={PUBLIC_URL}/boot/proxmox.iso"),
        format!("pxe.iso_sha256={}", fx.iso_sha256),
        "proxmox-start-auto-installer".to_string(),
    ] {
        assert!(script.contains(&needle), "{needle:?} missing in:\n{script}");
    }
    let v = wait_state(&d, "pxe_booted").await;
    // The machine asks again (a reboot, an iPXE retry): the same installer
    // script, and nothing new in the history.
    for _ in 0..3 {
        let r = get(&d, &format!("/ipxe/{MAC_DASHES}?platform=pcbios")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.text().await.unwrap(),
            script,
            "a re-served script differs"
        );
    }
    let again = detail(&d).await;
    assert_eq!(again["state"], "pxe_booted");
    assert_eq!(
        again["history"], v["history"],
        "serving the installer script again wrote history"
    );
    let public_key = v["operations"][0]["public_key"]
        .as_str()
        .expect("operation public key")
        .to_string();
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");

    // The answer: our TOML, typed and parseable, for exactly this rebuild.
    let (answer, token) = take_answer(&d).await;
    let global = answer["global"].as_table().expect("[global]");
    assert_eq!(global["root-password-hashed"].as_str(), Some(ROOT_HASH));
    assert!(!global.contains_key("root-password"));
    assert_eq!(
        global["root-ssh-keys"].as_array().unwrap(),
        &vec![toml::Value::String(public_key.clone())]
    );
    assert_eq!(global["fqdn"].as_str(), Some("pve-01.lan"), "{answer}");
    assert!(token.len() >= 22, "token {} chars", token.len());
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    );
    assert_eq!(
        answer["post-installation-webhook"]["url"].as_str().unwrap(),
        format!("{PUBLIC_URL}/api/hosts/{NAME}/installed/{token}")
    );
    let first_boot = answer["first-boot"].as_table().expect("[first-boot]");
    assert_eq!(first_boot["source"].as_str(), Some("from-url"));
    assert_eq!(first_boot["ordering"].as_str(), Some("network-online"));
    assert_eq!(
        first_boot["url"].as_str().unwrap(),
        format!("{PUBLIC_URL}/api/hosts/{NAME}/first-boot-script/{token}")
    );
    let v = wait_state(&d, "installing").await;
    assert_eq!(v["operations"][0]["dmi_uuid"], DMI_UUID);
    assert!(v["operations"][0]["answer_served_ms"].is_i64());

    // The first-boot script, fetched during installation.
    let r = get(&d, &format!("/api/hosts/{NAME}/first-boot-script/{token}")).await;
    assert_eq!(r.status(), 200);
    let fb = r.text().await.unwrap();
    assert!(fb.starts_with("#!/bin/sh"), "{fb}");
    assert!(
        fb.contains(&format!("{PUBLIC_URL}/api/hosts/{NAME}/phone-home")),
        "{fb}"
    );

    // The webhook: installed, host keys pinned.
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &webhook(),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v = wait_state(&d, "installed").await;
    let op = &v["operations"][0];
    assert_eq!(op["ssh_host_keys"]["ed25519"], HOST_KEY);
    assert_eq!(op["machine_id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(op["mgmt_address"], "10.0.0.21");
    // A repeated webhook is acknowledged without a second transition.
    let before = detail(&d).await;
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &webhook(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        detail(&d).await,
        before,
        "a repeated webhook changed the host"
    );
    // An installer error report is only expected while installing.
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &json!({"error": "late error"}),
    )
    .await;
    assert_eq!(r.status(), 409, "an error report after installed");
    assert_eq!(
        detail(&d).await,
        before,
        "a late error report changed the host"
    );

    // No install loop: from now on iPXE boots the local disk.
    for platform in ["pcbios", "efi"] {
        let r = get(&d, &format!("/ipxe/{MAC_DASHES}?platform={platform}")).await;
        assert_eq!(r.status(), 200);
        let s = r.text().await.unwrap();
        assert!(!s.contains("kernel "), "{s}");
        assert!(s.contains("exit 1"), "{s}");
        if platform == "pcbios" {
            assert!(s.contains("sanboot --no-describe --drive 0x80"), "{s}");
        }
    }
    assert_eq!(detail(&d).await, before, "local boot changed the host");

    // The private key, before the join (which deletes it) can start.
    let private_key = stored_private_key(&fx);

    // Phone-home: first boot. (The join that follows first_boot may move
    // the host on at once; everything below only looks at what phone-home
    // itself did.)
    let body = json!({"ip": "127.0.0.1", "hardware_id": DMI_UUID});
    let r = phone_home(&d, Some(&token), &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let phoned = |v: &Value| {
        v["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["event"] == "phone_home")
            .count()
    };
    let url = d.url.clone();
    let v = eventually(Duration::from_secs(10), "phone_home in the history", || {
        let url = url.clone();
        async move {
            let v: Value = client()
                .get(format!("{url}/api/hosts/{NAME}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (phoned(&v) == 1).then_some(v)
        }
    })
    .await;
    assert_eq!(v["operations"][0]["phone_home_ip"], "127.0.0.1");
    assert_eq!(v["operations"][0]["hardware_id"], DMI_UUID);
    let r = phone_home(&d, Some(&token), &body).await;
    let after = detail(&d).await;
    if after["state"] == "failed" {
        // The join (not configured here) may already have failed the host
        // and ended the rebuild: its token is dead or its state is wrong.
        assert!(
            [404, 409].contains(&r.status().as_u16()),
            "a phone-home for a failed host: {}",
            r.status()
        );
    } else {
        assert_eq!(r.status(), 200, "a repeated phone-home is acknowledged");
    }
    assert_eq!(phoned(&after), 1, "a repeated phone-home was applied again");

    // History: one entry per step, in order, each with the operation.
    let history = v["history"].as_array().unwrap();
    let steps: Vec<(&str, &str)> = history
        .iter()
        .take(5)
        .map(|h| (h["event"].as_str().unwrap(), h["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("start_rebuild", "pxe_ready"),
            ("ipxe_served", "pxe_booted"),
            ("answer_served", "installing"),
            ("install_reported", "installed"),
            ("phone_home", "first_boot"),
        ]
    );
    let op_id = v["operations"][0]["id"].clone();
    assert!(history.iter().all(|h| h["operation"] == op_id), "{v}");

    // The same transitions on the event stream.
    ev.wait_for("\"to\":\"first_boot\"").await;
    let seen: Vec<(String, String)> = ev
        .transitions()
        .iter()
        .filter(|t| t["host"] == NAME)
        .take(5)
        .map(|t| {
            (
                t["event"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = steps
        .iter()
        .map(|(e, t)| (e.to_string(), t.to_string()))
        .collect();
    assert_eq!(seen, want, "events:\n{}", ev.text());

    // A token-bearing path with a trailing slash must not be logged either.
    let r = client()
        .post(format!("{}/api/hosts/{NAME}/installed/{token}/", d.url))
        .json(&webhook())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Secrets: nowhere in logs, API responses or events.
    assert!(
        private_key.contains("PRIVATE KEY"),
        "private key in the store"
    );
    let mut needles: Vec<(String, &str)> = vec![
        (token.clone(), "callback token"),
        (ROOT_HASH.to_string(), "root password hash"),
        // The hash without its salt prefix, in case something reformats it.
        (
            ROOT_HASH.rsplit('$').next().unwrap().to_string(),
            "root password hash digest",
        ),
        (private_key.clone(), "private key"),
    ];
    for line in private_key.lines().filter(|l| !l.starts_with("-----")) {
        if line.len() >= 16 {
            needles.push((line.to_string(), "a private key line"));
        }
    }
    let mut haystacks = vec![("the event stream".to_string(), ev.text())];
    for path in [
        "/api/hosts".to_string(),
        format!("/api/hosts/{NAME}"),
        "/api/diagnostics".to_string(),
        "/api/unknown-machines".to_string(),
    ] {
        let body = get(&d, &path).await.text().await.unwrap();
        haystacks.push((format!("GET {path}"), body));
    }
    // Give the daemon a moment to flush its last log lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = d.logs();
    assert!(
        logs.contains("answer file served"),
        "debug logs captured:\n{logs}"
    );
    haystacks.push(("the daemon's log".to_string(), logs));
    for (needle, what) in &needles {
        for (name, text) in &haystacks {
            let hit = text.lines().find(|l| l.contains(needle.as_str()));
            assert!(hit.is_none(), "{what} appears in {name}: {hit:?}");
        }
    }
}

/// What `/api/hosts` and `/api/unknown-machines` say, to compare before and
/// after a refused request.
async fn everything(d: &Daemon) -> (Value, Value, Value) {
    (
        d.get_json("/api/hosts").await,
        detail(d).await,
        d.get_json("/api/unknown-machines").await,
    )
}

async fn assert_status(r: reqwest::Response, want: u16, what: &str) -> String {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, want, "{what}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_4xx_and_change_nothing() {
    let fx = fixture(Options::default());
    let (d, _ev) = start_armed(&fx).await;
    let before = everything(&d).await;
    assert_eq!(before.1["state"], "pxe_ready");
    let history_len = before.1["history"].as_array().unwrap().len();

    // An unknown MAC boots its disk and is not recorded (discovery is off).
    let r = get(&d, "/ipxe/58-47-ca-00-00-01?platform=efi").await;
    let s = assert_status(r, 200, "unknown MAC").await;
    assert!(s.contains("exit 1") && !s.contains("kernel "), "{s}");
    // Malformed MACs, including path-traversal attempts.
    for m in [
        "nonsense",
        "58-47-ca-71-02",
        "58:47:ca:71:02:1g",
        "58-47:ca-71-02-1e",
        "58-47-ca-71-02-1e-00",
        "..%2F..%2Fetc%2Fpasswd",
        &"a".repeat(300),
    ] {
        let r = get(&d, &format!("/ipxe/{m}?platform=pcbios")).await;
        assert_status(r, 400, &format!("GET /ipxe/{m}")).await;
    }

    // Answers nobody is armed for.
    for (body, what) in [
        (sysinfo(&["58:47:ca:00:00:01"], DMI_UUID), "unarmed MAC"),
        (sysinfo(&[], DMI_UUID), "no NICs"),
        (sysinfo(&["not-a-mac"], DMI_UUID), "unparseable MAC"),
    ] {
        let r = post_json(&d, "/api/boot/answer", &body).await;
        assert_status(r, 404, what).await;
    }
    // Hostile bodies.
    let mut padded = sysinfo(&[MAC], DMI_UUID);
    padded["padding"] = json!("x".repeat(100 * 1024));
    let mut huge = sysinfo(&[MAC], DMI_UUID);
    huge["padding"] = json!("x".repeat(300 * 1024));
    for (body, want, what) in [
        (b"{not json".to_vec(), 400, "bad JSON"),
        (b"".to_vec(), 400, "empty body"),
        (b"[1, 2]".to_vec(), 400, "a JSON array"),
        (
            br#"{"network_interfaces": "58:47:ca:71:02:1e"}"#.to_vec(),
            400,
            "network_interfaces is a string",
        ),
        (
            br#"{"network_interfaces": [{"link": "enp1s0", "mac": 42}]}"#.to_vec(),
            400,
            "mac is a number",
        ),
        (
            br#"{"dmi": {"system": "uuid"}, "network_interfaces": [{"mac": "58:47:ca:71:02:1e"}]}"#
                .to_vec(),
            400,
            "dmi.system is a string",
        ),
        (serde_json::to_vec(&padded).unwrap(), 400, "100 KiB body"),
        (serde_json::to_vec(&huge).unwrap(), 413, "300 KiB body"),
    ] {
        let r = post_raw(&d, "/api/boot/answer", body).await;
        assert_status(r, want, what).await;
    }

    // Callbacks before any token was handed out.
    let fake = "A".repeat(43);
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{fake}"),
        &webhook(),
    )
    .await;
    assert_status(r, 404, "installed before the answer").await;
    let r = get(&d, &format!("/api/hosts/{NAME}/first-boot-script/{fake}")).await;
    assert_status(r, 404, "first-boot script before the answer").await;
    let body = json!({"ip": "127.0.0.1", "hardware_id": DMI_UUID});
    let r = phone_home(&d, Some(&fake), &body).await;
    assert_status(r, 404, "phone-home before the answer").await;
    let r = phone_home(&d, None, &body).await;
    assert_status(r, 401, "phone-home without a bearer token").await;
    let r = client()
        .post(format!("{}/api/hosts/{NAME}/phone-home", d.url))
        .basic_auth("root", Some("x"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_status(r, 401, "phone-home with basic auth").await;
    // Names that are not host names.
    let long = "a".repeat(64);
    for (name, want) in [
        ("PVE-01", 404), // host names are case-insensitive: the fake token decides
        ("..%2F..%2Fetc", 400),
        ("pve_01", 400),
        (long.as_str(), 400),
        ("pve-99", 404),
    ] {
        let r = post_json(
            &d,
            &format!("/api/hosts/{name}/installed/{fake}"),
            &webhook(),
        )
        .await;
        assert_status(r, want, &format!("installed for {name:?}")).await;
        let r = get(&d, &format!("/api/hosts/{name}/first-boot-script/{fake}")).await;
        assert_status(r, want, &format!("first-boot script for {name:?}")).await;
    }
    let r = get(
        &d,
        &format!("/api/hosts/{NAME}/installed/..%2F..%2Fetc%2Fpasswd"),
    )
    .await;
    assert!(r.status().is_client_error(), "{}", r.status());

    assert_eq!(everything(&d).await, before, "a refusal changed the store");

    // Now the answer; then everything that must not follow it.
    let (_, token) = take_answer(&d).await;
    let before = everything(&d).await;
    assert_eq!(before.1["state"], "installing");
    assert_eq!(
        before.1["history"].as_array().unwrap().len(),
        history_len + 1
    );

    let r = post_json(&d, "/api/boot/answer", &sysinfo(&[MAC], DMI_UUID)).await;
    assert_status(r, 404, "answer replay").await;
    let r = post_json(
        &d,
        "/api/boot/answer",
        &sysinfo(&[MAC], "00000000-1111-2222-3333-444444444444"),
    )
    .await;
    assert_status(r, 404, "answer replay with another DMI UUID").await;

    // Wrong tokens: another token, one character off, far too long.
    let mut off = token.clone().into_bytes();
    off[0] = if off[0] == b'A' { b'B' } else { b'A' };
    let off = String::from_utf8(off).unwrap();
    for wrong in [fake.clone(), off, "A".repeat(1000)] {
        let r = post_json(
            &d,
            &format!("/api/hosts/{NAME}/installed/{wrong}"),
            &webhook(),
        )
        .await;
        assert_status(r, 404, "installed with a wrong token").await;
        let r = get(&d, &format!("/api/hosts/{NAME}/first-boot-script/{wrong}")).await;
        assert_status(r, 404, "first-boot script with a wrong token").await;
        let r = phone_home(&d, Some(&wrong), &body).await;
        assert_status(r, 404, "phone-home with a wrong token").await;
    }
    // The right token under another host's name.
    let r = post_json(
        &d,
        &format!("/api/hosts/pve-99/installed/{token}"),
        &webhook(),
    )
    .await;
    assert_status(r, 404, "the token under another name").await;

    // The right token in the wrong state: phone-home before installed.
    let r = phone_home(&d, Some(&token), &body).await;
    assert_status(r, 409, "phone-home while installing").await;
    // Bad phone-home payloads.
    for bad in [
        json!({"ip": "not-an-ip"}),
        json!({"ip": 127}),
        json!({"hardware_id": "x"}),
        json!({"ip": "127.0.0.1", "extra": true}),
        json!([1]),
    ] {
        let r = phone_home(&d, Some(&token), &bad).await;
        assert_status(r, 400, &format!("phone-home with {bad}")).await;
    }
    // Bad webhook payloads.
    let mut no_keys = webhook();
    no_keys["ssh-public-host-keys"] = json!({});
    let mut wrong_type = webhook();
    wrong_type["fqdn"] = json!(42);
    let mut huge = webhook();
    huge["padding"] = json!("x".repeat(300 * 1024));
    for (body, want, what) in [
        (b"{not json".to_vec(), 400, "bad JSON"),
        (b"[]".to_vec(), 400, "a JSON array"),
        (serde_json::to_vec(&no_keys).unwrap(), 400, "no host keys"),
        (
            serde_json::to_vec(&wrong_type).unwrap(),
            400,
            "fqdn is a number",
        ),
        (serde_json::to_vec(&huge).unwrap(), 413, "300 KiB webhook"),
    ] {
        let r = post_raw(&d, &format!("/api/hosts/{NAME}/installed/{token}"), body).await;
        assert_status(r, want, what).await;
    }
    // iPXE during the installation: local disk, no change.
    let r = get(&d, &format!("/ipxe/{MAC_DASHES}?platform=efi")).await;
    let s = assert_status(r, 200, "iPXE while installing").await;
    assert!(!s.contains("kernel "), "{s}");

    assert_eq!(everything(&d).await, before, "a refusal changed the store");

    // Refusals say why in our log (and never with the token, see the
    // happy path).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = d.logs();
    for why in [
        "answer refused: no armed host among the installer's MACs",
        "callback with a wrong token refused",
        "unknown MAC: local boot",
        "not armed: local boot",
    ] {
        assert!(logs.contains(why), "{why:?} not logged:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn installer_error_fails_the_host_and_a_new_rebuild_recovers() {
    let fx = fixture(Options::default());
    let (d, _ev) = start_armed(&fx).await;
    let (_, token) = take_answer(&d).await;
    wait_state(&d, "installing").await;

    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &json!({"error": "disk too small"}),
    )
    .await;
    assert_status(r, 200, "installer error report").await;
    let v = wait_state(&d, "failed").await;
    let last_error = v["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("disk too small"), "{v}");
    let last = v["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "fail");
    assert!(last["cause"].as_str().unwrap().contains("disk too small"));

    // The dead rebuild's token opens nothing any more.
    let before = everything(&d).await;
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &webhook(),
    )
    .await;
    assert!(
        r.status().is_client_error(),
        "webhook after failure: {}",
        r.status()
    );
    let r = phone_home(&d, Some(&token), &json!({"ip": "127.0.0.1"})).await;
    assert!(
        r.status().is_client_error(),
        "phone-home after failure: {}",
        r.status()
    );
    let r = post_json(&d, "/api/boot/answer", &sysinfo(&[MAC], DMI_UUID)).await;
    assert_status(r, 404, "answer for a failed host").await;
    let r = get(&d, &format!("/ipxe/{MAC_DASHES}?platform=pcbios")).await;
    let s = assert_status(r, 200, "iPXE for a failed host").await;
    assert!(!s.contains("kernel "), "{s}");
    assert_eq!(everything(&d).await, before, "a failed host changed");

    // Raising rebuild arms it again with a fresh key; the old token stays dead.
    fx.dep.write_hosts("a.kdl", &host_kdl(NAME, MAC, 2));
    let v = wait_state(&d, "pxe_ready").await;
    let ops = v["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2, "{v}");
    assert_ne!(ops[0]["public_key"], ops[1]["public_key"]);
    assert_eq!(v["observed_generation"], 2);
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &webhook(),
    )
    .await;
    assert_status(r, 404, "the old token after a new rebuild").await;
    let (answer, new_token) = take_answer(&d).await;
    assert_ne!(new_token, token);
    let key = answer["global"]["root-ssh-keys"][0].as_str().unwrap();
    let v = wait_state(&d, "installing").await;
    let current = v["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == v["operation"])
        .unwrap()
        .clone();
    assert_eq!(current["public_key"], key);
}

#[tokio::test(flavor = "multi_thread")]
async fn answer_requires_the_configured_bearer_token() {
    const ANSWER_TOKEN: &str = "answer-token-7f3a9c2e5b1d";
    let fx = fixture(Options {
        answer_token: Some(ANSWER_TOKEN),
        ..Options::default()
    });
    let (d, ev) = start_armed(&fx).await;
    let before = everything(&d).await;
    let body = sysinfo(&[MAC], DMI_UUID);
    let url = format!("{}/api/boot/answer", d.url);
    let r = client().post(&url).json(&body).send().await.unwrap();
    assert_status(r, 401, "answer without a bearer token").await;
    for wrong in [
        "wrong",
        "answer-token-7f3a9c2e5b1",
        "answer-token-7f3a9c2e5b1dX",
        "",
    ] {
        let r = client()
            .post(&url)
            .bearer_auth(wrong)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_status(r, 401, &format!("answer with bearer {wrong:?}")).await;
    }
    assert_eq!(
        everything(&d).await,
        before,
        "a refused answer changed the host"
    );
    let r = client()
        .post(&url)
        .bearer_auth(ANSWER_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = assert_status(r, 200, "answer with the right bearer token").await;
    toml::from_str::<toml::Table>(&text).expect("TOML answer");
    wait_state(&d, "installing").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, text) in [("the log", d.logs()), ("the events", ev.text())] {
        assert!(
            !text.contains(ANSWER_TOKEN),
            "the answer token appears in {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_assets_support_ranges_and_the_overlay_matches_the_cli() {
    let fx = fixture(Options::default());
    let d = Daemon::start(&fx.dep.config());

    let r = client()
        .get(format!("{}/boot/proxmox.iso", d.url))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-199/{ISO_BYTES}")
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &fx.iso[100..200]);

    let r = client()
        .get(format!("{}/boot/proxmox.iso", d.url))
        .header("range", format!("bytes={}-", ISO_BYTES - 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &fx.iso[ISO_BYTES - 10..]);

    let r = client()
        .get(format!("{}/boot/proxmox.iso", d.url))
        .header(
            "range",
            format!("bytes={}-{}", ISO_BYTES + 10, ISO_BYTES + 20),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416, "a range past the end");

    let r = get(&d, "/boot/proxmox.iso").await;
    assert_eq!(r.status(), 200);
    let all = r.bytes().await.unwrap();
    assert_eq!(all.len(), ISO_BYTES);
    assert!(all.as_ref() == fx.iso.as_slice(), "whole ISO differs");

    for (path, want) in [
        ("/boot/vmlinuz", &b"not really a kernel\n"[..]),
        ("/boot/initrd.img", &b"not really an initrd\n"[..]),
    ] {
        let r = get(&d, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), want, "{path}");
    }

    let out = fx.dep.dir.path().join("overlay.cpio.gz");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_provisioning"))
        .args(["overlay", "build", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "provisioning overlay build: {status}");
    let r = get(&d, "/boot/overlay.cpio.gz").await;
    assert_eq!(r.status(), 200);
    let served = r.bytes().await.unwrap();
    assert!(
        served.as_ref() == std::fs::read(&out).unwrap().as_slice(),
        "served overlay differs from `provisioning overlay build`"
    );
    assert!(served.starts_with(&[0x1f, 0x8b]), "gzip");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_machines_are_recorded_when_discovery_is_on() {
    let fx = fixture(Options {
        discover_unknown: true,
        ..Options::default()
    });
    fx.dep.write_hosts("a.kdl", &host_kdl(NAME, MAC, 0));
    let d = Daemon::start(&fx.dep.config());
    assert_eq!(d.get_json("/api/unknown-machines").await, json!([]));
    let before = detail(&d).await;

    for _ in 0..2 {
        let r = get(&d, "/ipxe/58-47-CA-00-00-01?platform=efi").await;
        let s = assert_status(r, 200, "unknown MAC").await;
        assert!(s.contains("exit 1") && !s.contains("kernel "), "{s}");
    }
    let r = get(&d, "/ipxe/58:47:ca:00:00:02").await;
    assert_status(r, 200, "another unknown MAC").await;
    // Declared (not armed) and malformed MACs are not "unknown machines".
    let r = get(&d, &format!("/ipxe/{MAC_DASHES}")).await;
    assert_status(r, 200, "declared MAC").await;
    let r = get(&d, "/ipxe/58-47-ca-00-00").await;
    assert_status(r, 400, "malformed MAC").await;

    let list = d.get_json("/api/unknown-machines").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let first = list
        .iter()
        .find(|m| m["mac"] == "58:47:ca:00:00:01")
        .unwrap();
    assert_eq!(first["count"], 2);
    assert!(first["first_seen_ms"].as_i64().unwrap() <= first["last_seen_ms"].as_i64().unwrap());
    assert!(
        list.iter()
            .any(|m| m["mac"] == "58:47:ca:00:00:02" && m["count"] == 1)
    );
    assert_eq!(detail(&d).await, before, "the declared host changed");
    assert!(host(&d.get_json("/api/hosts").await, NAME).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_answers_serve_exactly_one() {
    let fx = fixture(Options::default());
    let (d, _ev) = start_armed(&fx).await;
    // UEFI iPXE gets the same installer script; a machine that reboots
    // before its answer gets it again.
    for _ in 0..2 {
        let r = get(&d, &format!("/ipxe/{MAC_DASHES}?platform=efi")).await;
        let s = assert_status(r, 200, "armed UEFI iPXE").await;
        assert!(
            s.contains("initrd=initrd.img initrd=overlay.cpio.gz"),
            "{s}"
        );
    }
    wait_state(&d, "pxe_booted").await;

    let body = sysinfo(&[MAC], DMI_UUID);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{}/api/boot/answer", d.url);
            let body = body.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 404, 404, 404, 404, 404, 404, 404]);
    let v = wait_state(&d, "installing").await;
    let answers = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "answer_served")
        .count();
    assert_eq!(answers, 1, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_survive_a_daemon_restart() {
    let fx = fixture(Options::default());
    let (d, _ev) = start_armed(&fx).await;
    let (_, token) = take_answer(&d).await;
    wait_state(&d, "installing").await;
    let status = d.stop();
    assert!(status.success(), "{status}");

    let d = Daemon::start(&fx.dep.config());
    let v = detail(&d).await;
    assert_eq!(v["state"], "installing");
    // Still exactly one answer for this rebuild.
    let r = post_json(&d, "/api/boot/answer", &sysinfo(&[MAC], DMI_UUID)).await;
    assert_status(r, 404, "answer replay after a restart").await;
    // The token still opens the callbacks of this rebuild.
    let r = get(&d, &format!("/api/hosts/{NAME}/first-boot-script/{token}")).await;
    assert_status(r, 200, "first-boot script after a restart").await;
    let r = post_json(
        &d,
        &format!("/api/hosts/{NAME}/installed/{token}"),
        &webhook(),
    )
    .await;
    assert_status(r, 200, "webhook after a restart").await;
    d.kill9();

    let d = Daemon::start(&fx.dep.config());
    assert_eq!(detail(&d).await["state"], "installed");
    let r = phone_home(&d, Some(&token), &json!({"ip": "127.0.0.1"})).await;
    assert_status(r, 200, "phone-home after SIGKILL and restart").await;
}
