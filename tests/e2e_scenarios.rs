//! End-to-end scenarios (issue 5): QEMU machines PXE-boot through a real dnsmasq, real
//! iPXE and the real daemon into the stand-in Proxmox installer, reboot into the
//! stand-in installed system and end `ready`. Each scenario asserts the final state
//! through `GET /api/hosts`, the host's history, and what is on the machine.
//!
//! Needs root and the Debian packages vm-tests/build/packages.sh installs (it installs
//! them itself when missing). It takes minutes, so it is `#[ignore]`d for plain
//! `cargo test`; `tools/test-all` runs it with `--include-ignored`. It never skips a
//! scenario: a missing prerequisite fails the run and names what is missing.
//! `E2E_SCENARIOS=1,4` runs a subset (for development); the default is all.

mod e2e;

use e2e::daemon::Daemon;
use e2e::machine::{Firmware, Machine};
use e2e::net::Net;
use e2e::prep::artefacts;
use e2e::report::Report;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(15 * 60);
const ARMED: Duration = Duration::from_secs(60);

/// The states one rebuild walks through, in order.
const FLOW: [&str; 7] = [
    "pxe_ready",
    "pxe_booted",
    "installing",
    "installed",
    "first_boot",
    "joining",
    "ready",
];

fn ctx(ms: &[&Machine]) -> impl Fn() -> String {
    let parts: Vec<String> = ms.iter().map(|m| m.context()).collect();
    move || parts.join("\n")
}

/// The transitions of `host` at or after `since_ms`, as "to" states in order.
fn states_since(d: &Daemon, net: &Net, host: &str, since_ms: i64) -> Vec<String> {
    let detail = d.host(net, host).expect("GET /api/hosts/{name}");
    let mut h: Vec<(i64, String)> = detail["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| Some((t["at_ms"].as_i64()?, t["to"].as_str()?.to_string())))
        .filter(|(at, _)| *at >= since_ms)
        .collect();
    h.sort_by_key(|(at, _)| *at);
    h.into_iter().map(|(_, s)| s).collect()
}

fn assert_flow(d: &Daemon, net: &Net, host: &str, since_ms: i64) {
    let seen = states_since(d, net, host, since_ms);
    let mut it = seen.iter();
    for want in FLOW {
        assert!(
            it.any(|s| s == want),
            "host {host}: history since the rebuild lacks {want} in order: {seen:?}"
        );
    }
}

/// Keys the installer was given (`root-ssh-keys` of the answer it saved on the disk).
fn answered_keys(m: &Machine, net: &Net) -> Vec<String> {
    let text = m.observe_ok(net, "cat /boot/standin/answer.toml");
    let v: toml::Value = toml::from_str(&text).expect("answer.toml on the disk");
    v["global"]["root-ssh-keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn key_blob(line: &str) -> String {
    line.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// After `ready`: joined (pvecm stand-in), first-boot ran once, the ephemeral key is
/// gone from the machine and its private key from the store. Returns that key.
fn assert_joined_and_clean(d: &Daemon, net: &Net, m: &Machine) -> String {
    let keys = answered_keys(m, net);
    assert_eq!(
        keys.len(),
        1,
        "{}: expected exactly one root-ssh-key in the answer: {keys:?}",
        m.name
    );
    let eph = keys[0].clone();
    let out = m.observe_ok(
        net,
        "test -L /root/.ssh/authorized_keys && test -f /etc/pve/corosync.conf && \
         cat /var/log/standin-pvecm.log && echo ==== && \
         cat /root/.ssh/authorized_keys /etc/pve/priv/authorized_keys && echo ==== && \
         cat /boot/standin/first-boot.done",
    );
    let parts: Vec<&str> = out.split("====\n").collect();
    assert_eq!(
        parts.len(),
        3,
        "{}: unexpected observer output: {out}",
        m.name
    );
    assert_eq!(
        parts[0].matches("-> joined").count(),
        1,
        "{}: expected exactly one successful pvecm add: {}",
        m.name,
        parts[0]
    );
    assert!(
        !parts[1].contains(&key_blob(&eph)),
        "{}: the ephemeral key is still authorized on the machine:\n{}",
        m.name,
        parts[1]
    );
    assert_eq!(
        parts[2].trim(),
        "0",
        "{}: first-boot hook exit status",
        m.name
    );
    // Checked byte-wise in every file of the state directory (database, WAL,
    // journal): a deleted row can live on in SQLite's WAL or free pages. Recorded
    // and failed at the end of the run, so the other assertions still run.
    let hits = d.state_files_containing(b"PRIVATE KEY");
    if !hits.is_empty() {
        finding(format!(
            "{}: the ephemeral private key is still in the store's files after ready: {hits:?}",
            m.name
        ));
    }
    eph
}

/// Failures found after a scenario's other assertions passed; they fail the run.
static FINDINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn finding(s: String) {
    eprintln!("e2e: FINDING: {s}");
    if let Ok(mut f) = FINDINGS.lock() {
        f.push(s);
    }
}

fn infra_writes(d: &Daemon) -> usize {
    d.infra_requests()
        .iter()
        .filter(|r| matches!(r["method"].as_str(), Some("PUT" | "POST" | "PATCH")))
        .count()
}

/// Scenarios 1 (BIOS machine to ready; a second power-on boots the disk) and 7
/// (rebuild of the ready host).
fn s1_bios_then_s7_rebuild(rep: &mut Report, run7: bool) {
    let mut net = Net::up("s1");
    let d = Daemon::start(&net);
    let mut m = Machine::new(&mut net, "bios", Firmware::Bios, 1);
    let host = "e2e-bios";
    let t0 = e2e::now_ms();
    d.declare(host, &m.mac, 1);
    d.wait_state(&net, host, "pxe_ready", ARMED, ctx(&[]));
    d.assert_in_dnsmasq_hostsdir(&m.mac);
    m.power_on();
    d.wait_state(&net, host, "ready", READY, || m.context());
    rep.add(
        "1 BIOS",
        &m.name,
        m.powered_on_ms,
        &d.host(&net, host).expect("host"),
    );
    assert_flow(&d, &net, host, t0);
    let old_key = assert_joined_and_clean(&d, &net, &m);
    assert_eq!(
        infra_writes(&d),
        1,
        "Infrastructure registrations: {:?}",
        d.infra_requests()
    );
    assert!(d.host(&net, host).expect("host")["last_error"].is_null());

    // a second power-on boots the disk, not the installer
    m.power_off();
    m.power_on();
    m.wait_serial("standin-installed: ssh ready", Duration::from_secs(300));
    assert!(
        !m.serial().contains("standin-installer"),
        "second power-on ran the installer\n{}",
        m.context()
    );
    assert_eq!(d.state_of(&net, host).as_deref(), Some("ready"));
    assert_eq!(infra_writes(&d), 1);

    if !run7 {
        return;
    }
    // 7. raise rebuild on a ready host: reinstalled, new key, old key gone
    rep.results
        .push(("1 BIOS to ready".into(), Ok(()), Duration::ZERO));
    let t1 = e2e::now_ms();
    d.declare(host, &m.mac, 2);
    d.wait_state(&net, host, "pxe_ready", ARMED, || m.context());
    d.assert_in_dnsmasq_hostsdir(&m.mac);
    m.power_off();
    m.power_on();
    d.wait_state(&net, host, "ready", READY, || m.context());
    rep.add(
        "7 rebuild of ready host",
        &m.name,
        m.powered_on_ms,
        &d.host(&net, host).expect("host"),
    );
    assert_flow(&d, &net, host, t1);
    let new_key = assert_joined_and_clean(&d, &net, &m);
    assert_ne!(
        key_blob(&new_key),
        key_blob(&old_key),
        "the rebuild reused the ephemeral key"
    );
    let auth = m.observe_ok(&net, "cat /root/.ssh/authorized_keys");
    assert!(
        !auth.contains(&key_blob(&old_key)),
        "old ephemeral key still authorized"
    );
    assert_eq!(
        infra_writes(&d),
        2,
        "one registration per rebuild: {:?}",
        d.infra_requests()
    );
}

/// Scenario 2, UEFI machine to ready.
fn s2_uefi(rep: &mut Report) {
    let mut net = Net::up("s2");
    let d = Daemon::start(&net);
    let mut m = Machine::new(&mut net, "uefi", Firmware::Efi, 2);
    let host = "e2e-uefi";
    let t0 = e2e::now_ms();
    d.declare(host, &m.mac, 1);
    d.wait_state(&net, host, "pxe_ready", ARMED, ctx(&[]));
    d.assert_in_dnsmasq_hostsdir(&m.mac);
    m.power_on();
    d.wait_state(&net, host, "ready", READY, || m.context());
    rep.add(
        "2 UEFI",
        &m.name,
        m.powered_on_ms,
        &d.host(&net, host).expect("host"),
    );
    assert_flow(&d, &net, host, t0);
    assert_joined_and_clean(&d, &net, &m);
    assert_eq!(infra_writes(&d), 1);
}

/// Scenario 3, three machines at once.
fn s3_three(rep: &mut Report) {
    let mut net = Net::up("s3");
    let d = Daemon::start(&net);
    let fws = [Firmware::Bios, Firmware::Efi, Firmware::Bios];
    let mut ms: Vec<Machine> = fws
        .iter()
        .enumerate()
        .map(|(i, fw)| Machine::new(&mut net, &format!("m{}", i + 1), *fw, 0x31 + i as u8))
        .collect();
    let t0 = e2e::now_ms();
    for (i, m) in ms.iter().enumerate() {
        d.declare(&format!("e2e-three-{}", i + 1), &m.mac, 1);
    }
    for (i, m) in ms.iter().enumerate() {
        d.wait_state(
            &net,
            &format!("e2e-three-{}", i + 1),
            "pxe_ready",
            ARMED,
            ctx(&[]),
        );
        d.assert_in_dnsmasq_hostsdir(&m.mac);
    }
    for m in ms.iter_mut() {
        m.power_on();
    }
    for (i, m) in ms.iter().enumerate() {
        let host = format!("e2e-three-{}", i + 1);
        d.wait_state(&net, &host, "ready", READY, || m.context());
    }
    for (i, m) in ms.iter().enumerate() {
        let host = format!("e2e-three-{}", i + 1);
        rep.add(
            "3 three at once",
            &m.name,
            m.powered_on_ms,
            &d.host(&net, &host).expect("host"),
        );
        assert_flow(&d, &net, &host, t0);
        assert_joined_and_clean(&d, &net, m);
    }
    assert_eq!(infra_writes(&d), 3);
}

/// Scenario 4, unknown MAC: boots its (already installed) disk, gets no answer, and
/// its disk is byte-identical afterwards.
fn s4_unknown(rep: &mut Report) {
    let a = artefacts();
    let mut net = Net::up("s4");
    let d = Daemon::start(&net);
    d.declare("e2e-known", "52:54:00:e2:00:99", 1);
    let mut m = Machine::new(&mut net, "stranger", Firmware::Bios, 4);
    // an installed disk that is not ours: the stand-in system with its own identity
    let seed = net.dir.join("stranger-seed");
    std::fs::create_dir_all(&seed).expect("seed dir");
    e2e::run(std::process::Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {img} > {disk} && echo stranger.elsewhere.lan > {s}/fqdn && : > {s}/authorized_keys && \
         dropbearkey -t ed25519 -f {s}/dropbear_ed25519_host_key >/dev/null && \
         MTOOLS_SKIP_CHECK=1 mcopy -o -i {disk}@@1M {s}/fqdn {s}/authorized_keys {s}/dropbear_ed25519_host_key ::standin/",
        img = a.work.join("installed/disk-bios.img.gz").display(),
        disk = m.disk.display(),
        s = seed.display()
    )));
    let before = m.disk_digest().expect("disk digest");
    m.power_on();
    m.wait_serial("standin-installed: ssh ready", Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(5));
    m.power_off();
    let serial = m.all_serial();
    assert!(
        !serial.contains("standin-installer"),
        "the unknown machine ran the installer\n{serial}"
    );
    assert!(
        !serial.contains("pxe-init"),
        "the unknown machine got the installer kernel\n{serial}"
    );
    assert_eq!(
        m.disk_digest().as_deref(),
        Some(before.as_str()),
        "the unknown machine's disk changed"
    );
    let hosts = d.hosts(&net);
    for h in &hosts {
        let mac = h["mac"].as_str().unwrap_or("").to_ascii_lowercase();
        assert!(
            mac != m.mac || h["state"] == "registered",
            "the unknown MAC appears as an active host: {h}"
        );
    }
    assert_eq!(infra_writes(&d), 0);
    rep.rows.push(e2e::report::Row {
        scenario: "4 unknown MAC".into(),
        machine: m.name.clone(),
        phases: [
            None,
            None,
            None,
            None,
            m.powered_on.map(|t| t.elapsed().as_secs_f64()),
        ],
    });
}

/// Scenario 5, the installer reports an error: failed with the reason; raising
/// rebuild recovers it.
fn s5_installer_fails(rep: &mut Report) {
    let mut net = Net::up("s5");
    let d = Daemon::start(&net);
    let mut m = Machine::new(&mut net, "failing", Firmware::Bios, 5);
    let host = "e2e-fail";
    m.fw_cfg.push(("fail".into(), "disk".into()));
    d.declare(host, &m.mac, 1);
    d.wait_state(&net, host, "pxe_ready", ARMED, ctx(&[]));
    d.assert_in_dnsmasq_hostsdir(&m.mac);
    m.power_on();
    d.wait_state(&net, host, "failed", READY, || m.context());
    let h = d.host(&net, host).expect("host");
    let reason = h["last_error"].as_str().unwrap_or("").to_string();
    assert!(
        reason.contains("unable to partition"),
        "failed, but the reason does not carry the installer's error: {h}"
    );
    rep.add("5 installer fails", &m.name, m.powered_on_ms, &h);
    m.power_off();
    m.fw_cfg.clear();
    let t1 = e2e::now_ms();
    d.declare(host, &m.mac, 2);
    d.wait_state(&net, host, "pxe_ready", ARMED, || m.context());
    d.assert_in_dnsmasq_hostsdir(&m.mac);
    m.power_on();
    d.wait_state(&net, host, "ready", READY, || m.context());
    rep.add(
        "5 recovered by rebuild",
        &m.name,
        m.powered_on_ms,
        &d.host(&net, host).expect("host"),
    );
    assert_flow(&d, &net, host, t1);
    assert_joined_and_clean(&d, &net, &m);
}

/// Scenario 6, SIGKILL of the daemon while a machine is installing; restart →
/// ready, one install.
fn s6_daemon_killed(rep: &mut Report) {
    let mut net = Net::up("s6");
    let mut d = Daemon::start(&net);
    let mut m = Machine::new(&mut net, "survivor", Firmware::Bios, 6);
    let host = "e2e-crash";
    m.fw_cfg.push(("delay".into(), "25".into()));
    let t0 = e2e::now_ms();
    d.declare(host, &m.mac, 1);
    d.wait_state(&net, host, "pxe_ready", ARMED, ctx(&[]));
    d.assert_in_dnsmasq_hostsdir(&m.mac);
    m.power_on();
    d.wait_state(&net, host, "installing", READY, || m.context());
    d.kill9();
    std::thread::sleep(Duration::from_secs(2));
    d.restart(&net);
    d.wait_state(&net, host, "ready", READY, || m.context());
    rep.add(
        "6 daemon SIGKILLed",
        &m.name,
        m.powered_on_ms,
        &d.host(&net, host).expect("host"),
    );
    let seen = states_since(&d, &net, host, t0);
    assert_eq!(
        seen.iter().filter(|s| *s == "installing").count(),
        1,
        "more than one install: {seen:?}"
    );
    assert_eq!(
        m.all_serial().matches("standin-installer: start").count(),
        1,
        "the installer ran twice"
    );
    assert_joined_and_clean(&d, &net, &m);
}

#[test]
#[ignore = "end-to-end QEMU scenarios (root, ~15 min): tools/test-all runs them with --include-ignored"]
fn e2e_scenarios() {
    let _ = artefacts();
    let only: Option<Vec<String>> = std::env::var("E2E_SCENARIOS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let want = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let mut rep = Report::default();
    type Scenario = Box<dyn Fn(&mut Report)>;
    let mut scenarios: Vec<(&str, Scenario)> = Vec::new();
    if want("1") || want("7") {
        let run7 = want("7");
        let name = if run7 {
            "1+7 BIOS, then rebuild"
        } else {
            "1 BIOS"
        };
        scenarios.push((name, Box::new(move |r| s1_bios_then_s7_rebuild(r, run7))));
    }
    if want("2") {
        scenarios.push(("2 UEFI", Box::new(s2_uefi)));
    }
    if want("3") {
        scenarios.push(("3 three at once", Box::new(s3_three)));
    }
    if want("4") {
        scenarios.push(("4 unknown MAC", Box::new(s4_unknown)));
    }
    if want("5") {
        scenarios.push(("5 installer fails", Box::new(s5_installer_fails)));
    }
    if want("6") {
        scenarios.push(("6 daemon SIGKILLed", Box::new(s6_daemon_killed)));
    }
    assert!(!scenarios.is_empty(), "E2E_SCENARIOS selects no scenario");
    for (name, f) in scenarios {
        let start = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(|| f(&mut rep))).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        });
        rep.results.push((name.to_string(), res, start.elapsed()));
    }
    if let Ok(notes) = e2e::daemon::NOTES.lock() {
        for n in notes.iter() {
            rep.notes.push(format!("NOTE (harness workaround): {n}"));
        }
    }
    if let Ok(f) = FINDINGS.lock() {
        rep.notes
            .extend(f.iter().map(|x| format!("FINDING (fails the run): {x}")));
    }
    rep.print(&artefacts().work.join("timings.txt"));
    let findings: Vec<String> = FINDINGS.lock().map(|f| f.clone()).unwrap_or_default();
    let failed: Vec<String> = rep
        .results
        .iter()
        .filter_map(|(n, r, _)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failed.is_empty() && findings.is_empty(),
        "{} scenario(s) failed:\n{}\nfindings:\n{}",
        failed.len(),
        failed.join("\n\n"),
        findings.join("\n")
    );
}
