//! dnsmasq: golden configurations, the real `dnsmasq --test`, the hostsdir,
//! the supervisor (with fake binaries for restarts and stops) and a real
//! dnsmasq answering proxy-DHCP inside network namespaces the test creates.

mod boot_infra_support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boot_infra_support::{Netns, unique_suffix, veth_between};
use provisioning::boot::dnsmasq::{
    self, DnsmasqError, DnsmasqParams, DnsmasqState, HostsdirChange, SeenMac, SpawnParams,
};
use provisioning::mac::MacAddr;

fn dnsmasq_binary() -> PathBuf {
    let p = PathBuf::from(dnsmasq::DEFAULT_BINARY);
    assert!(
        p.exists(),
        "this test needs {} (Debian package dnsmasq-base)",
        p.display()
    );
    p
}

fn params(discover_unknown: bool) -> DnsmasqParams {
    let mut p = DnsmasqParams::new(
        "br-pxe",
        "192.168.40.0/22".parse().unwrap(),
        "192.168.41.10".parse().unwrap(),
        "http://192.168.41.10:8080",
        "/usr/lib/ipxe",
        "/var/lib/provisioning/dnsmasq-hosts.d",
    );
    if discover_unknown {
        p.discover_unknown = true;
        p.uefi_file = "ipxe.efi".into();
        p.user = Some("dnsmasq".into());
    }
    p
}

#[test]
fn golden_config_declared_macs_only() {
    insta::assert_snapshot!(
        "dnsmasq_declared_only",
        dnsmasq::render_config(&params(false)).unwrap()
    );
}

#[test]
fn golden_config_discovery_on() {
    insta::assert_snapshot!(
        "dnsmasq_discovery",
        dnsmasq::render_config(&params(true)).unwrap()
    );
}

#[test]
fn discovery_switches_the_ignore_rule() {
    let off = dnsmasq::render_config(&params(false)).unwrap();
    let on = dnsmasq::render_config(&params(true)).unwrap();
    assert!(off.lines().any(|l| l == "dhcp-ignore=tag:!known"));
    assert!(!on.lines().any(|l| l.starts_with("dhcp-ignore")));
}

#[tokio::test]
async fn real_dnsmasq_accepts_the_rendered_configs() {
    let bin = dnsmasq_binary();
    let dir = tempfile::tempdir().unwrap();
    for discover in [false, true] {
        let mut p = params(discover);
        // Debian's ipxe package has every file the parameters name.
        p.tftp_root = dnsmasq::DEBIAN_IPXE_DIR.into();
        p.hostsdir = dir.path().join("hosts");
        dnsmasq::prepare_runtime(&p)
            .unwrap_or_else(|e| panic!("{e} (this test needs the Debian package ipxe)"));
        let path = dir.path().join(format!("dnsmasq-{discover}.conf"));
        std::fs::write(&path, dnsmasq::render_config(&p).unwrap()).unwrap();
        dnsmasq::test_config(&bin, &path)
            .await
            .unwrap_or_else(|e| panic!("discover={discover}: {e}"));
    }
    // And it does reject a broken file, with dnsmasq's own message.
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "dhcp-range=nonsense,proxy\nno-such-option=1\n").unwrap();
    match dnsmasq::test_config(&bin, &bad).await {
        Err(DnsmasqError::ConfigRejected { message, .. }) => {
            assert!(message.contains("dnsmasq"), "{message}")
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    // A missing binary is a clear error.
    let err = dnsmasq::test_config(Path::new("/nonexistent/dnsmasq"), &bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dnsmasq-base"), "{err}");
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn dir_listing(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn hostsdir_is_maintained_atomically_and_minimally() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let a = mac("52:54:00:00:00:0a");
    let b = mac("52:54:00:00:00:0b");
    let c = mac("52:54:00:00:00:0c");

    let change = dnsmasq::write_hostsdir(&hosts, &[(a, None), (b, Some("bios"))]).unwrap();
    assert_eq!(
        change,
        HostsdirChange {
            written: 2,
            removed: 0
        }
    );
    assert_eq!(
        dir_listing(&hosts),
        [
            ("52-54-00-00-00-0a".into(), "52:54:00:00:00:0a\n".into()),
            (
                "52-54-00-00-00-0b".into(),
                "52:54:00:00:00:0b,set:bios\n".into()
            ),
        ]
    );
    let mtime_a = std::fs::metadata(hosts.join("52-54-00-00-00-0a"))
        .unwrap()
        .modified()
        .unwrap();

    // Same input: nothing is touched.
    std::thread::sleep(Duration::from_millis(20));
    let change = dnsmasq::write_hostsdir(&hosts, &[(b, Some("bios")), (a, None)]).unwrap();
    assert_eq!(change, HostsdirChange::default());

    // A foreign file is left alone; b's tag changes, a goes, c comes.
    std::fs::write(hosts.join("README"), "mine\n").unwrap();
    let change = dnsmasq::write_hostsdir(&hosts, &[(b, None), (c, Some("efi64"))]).unwrap();
    assert_eq!(
        change,
        HostsdirChange {
            written: 2,
            removed: 1
        }
    );
    assert_eq!(
        dir_listing(&hosts),
        [
            ("52-54-00-00-00-0b".into(), "52:54:00:00:00:0b\n".into()),
            (
                "52-54-00-00-00-0c".into(),
                "52:54:00:00:00:0c,set:efi64\n".into()
            ),
            ("README".into(), "mine\n".into()),
        ]
    );
    assert!(mtime_a.elapsed().is_ok());

    // Bad tags and duplicates are refused before anything is written.
    for tag in ["known", "a,b", "a\nb", "", "sp ace"] {
        let err = dnsmasq::write_hostsdir(&hosts, &[(a, Some(tag))]).unwrap_err();
        assert!(matches!(err, DnsmasqError::Invalid { .. }), "{tag:?}");
    }
    let err = dnsmasq::write_hostsdir(&hosts, &[(a, None), (a, Some("x"))]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    assert_eq!(dir_listing(&hosts).len(), 3);
}

/// A fake dnsmasq: a shell script in a temp dir.
fn fake_binary(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("fake-dnsmasq");
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "#!/bin/sh\n{body}").unwrap();
    drop(f);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn fast(binary: PathBuf, conf: &Path) -> SpawnParams {
    let mut p = SpawnParams::new(binary, conf);
    p.backoff_initial = Duration::from_millis(50);
    p.backoff_max = Duration::from_millis(200);
    p.stop_timeout = Duration::from_millis(500);
    p
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn process_alive(pid: i32) -> bool {
    // Zombies count as gone: read the state from /proc.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn supervisor_restarts_a_dying_child_with_backoff_and_reports_macs() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let bin = fake_binary(
        dir.path(),
        &format!(
            "echo \"$@\" >> '{}'\n\
             echo 'dnsmasq-dhcp[1]: 77 PXE(br0) 52:54:00:12:34:56 proxy' >&2\n\
             echo 'dnsmasq-dhcp[1]: 78 PXE(br0) 52:54:00:99:99:99 proxy-ignored' >&2\n\
             exit 3",
            starts.display()
        ),
    );
    let conf = dir.path().join("dnsmasq.conf");
    let (mut handle, sup) = dnsmasq::supervisor(fast(bin, &conf));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async {
        let _ = stop_rx.await;
    }));

    let first = tokio::time::timeout(Duration::from_secs(10), handle.seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first,
        SeenMac {
            mac: mac("52:54:00:12:34:56"),
            ignored: false
        }
    );
    let second = handle.seen.recv().await.unwrap();
    assert_eq!(
        second,
        SeenMac {
            mac: mac("52:54:00:99:99:99"),
            ignored: true
        }
    );

    let status = handle.status.clone();
    let s = wait_for("three restarts", || {
        let s = status.borrow().clone();
        (s.restarts >= 3).then_some(s)
    })
    .await;
    assert_eq!(s.last_exit.as_deref(), Some("exit status: 3"));
    let lines = std::fs::read_to_string(&starts).unwrap();
    assert!(lines.lines().count() >= 3, "{lines}");
    let first_line = lines.lines().next().unwrap();
    assert_eq!(
        first_line,
        format!("--keep-in-foreground --conf-file={}", conf.display())
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.status.borrow().state, DnsmasqState::Stopped);
}

#[tokio::test]
async fn supervisor_backoff_grows_and_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let bin = fake_binary(
        dir.path(),
        &format!("date +%s.%N >> '{}'\nexit 1", starts.display()),
    );
    let mut p = fast(bin, &dir.path().join("c.conf"));
    p.backoff_initial = Duration::from_millis(100);
    p.backoff_max = Duration::from_millis(400);
    let (handle, sup) = dnsmasq::supervisor(p);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async {
        let _ = stop_rx.await;
    }));
    let status = handle.status.clone();
    wait_for("six starts", || {
        (status.borrow().restarts >= 5).then_some(())
    })
    .await;
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    let times: Vec<f64> = std::fs::read_to_string(&starts)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 100, 200, 400, 400, 400 ms (plus process start-up time).
    let want = [0.1, 0.2, 0.4, 0.4, 0.4];
    for (i, (gap, want)) in gaps.iter().zip(want).enumerate() {
        assert!(
            *gap >= want * 0.9 && *gap < want + 0.5,
            "gap {i} was {gap:.3}s, expected about {want}s: {gaps:?}"
        );
    }
}

#[tokio::test]
async fn supervisor_stops_the_child_on_shutdown_even_if_it_ignores_sigterm() {
    for ignore_term in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let body = if ignore_term {
            format!(
                "echo $$ > '{}'\ntrap '' TERM\nwhile :; do sleep 0.05; done",
                pidfile.display()
            )
        } else {
            format!("echo $$ > '{}'\nexec sleep 1000", pidfile.display())
        };
        let bin = fake_binary(dir.path(), &body);
        let (handle, sup) = dnsmasq::supervisor(fast(bin, &dir.path().join("c.conf")));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sup.run(async {
            let _ = stop_rx.await;
        }));
        let pid: i32 = wait_for("the child's pid file", || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await;
        let status = handle.status.borrow().clone();
        assert_eq!(status.state, DnsmasqState::Running);
        assert_eq!(status.pid, Some(pid as u32));
        assert!(process_alive(pid));

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(!process_alive(pid), "child {pid} still running");
        let status = handle.status.borrow().clone();
        assert_eq!(status.state, DnsmasqState::Stopped);
        assert_eq!(status.pid, None);
        let expected = if ignore_term {
            "signal: 9"
        } else {
            "signal: 15"
        };
        assert!(
            status.last_exit.as_deref().unwrap().contains(expected),
            "{status:?}"
        );
        assert_eq!(status.restarts, 0);
    }
}

#[tokio::test]
async fn supervisor_restarts_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let bin = fake_binary(
        dir.path(),
        &format!("echo $$ > '{}'\nexec sleep 1000", pidfile.display()),
    );
    let (handle, sup) = dnsmasq::supervisor(fast(bin, &dir.path().join("c.conf")));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async {
        let _ = stop_rx.await;
    }));
    let read_pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    let first = wait_for("first child", read_pid).await;
    handle.request_restart();
    let second = wait_for("second child", || read_pid().filter(|p| *p != first)).await;
    assert!(!process_alive(first));
    assert!(process_alive(second));
    let status = handle.status.clone();
    wait_for("running again", || {
        let s = status.borrow().clone();
        (s.state == DnsmasqState::Running && s.pid == Some(second as u32)).then_some(())
    })
    .await;
    assert_eq!(handle.status.borrow().restarts, 1);
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    assert!(!process_alive(second));
}

#[tokio::test]
async fn supervisor_keeps_retrying_a_missing_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, sup) = dnsmasq::supervisor(fast(
        dir.path().join("no-such-dnsmasq"),
        &dir.path().join("c.conf"),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async {
        let _ = stop_rx.await;
    }));
    let status = handle.status.clone();
    let s = wait_for("two retries", || {
        let s = status.borrow().clone();
        (s.restarts >= 2).then_some(s)
    })
    .await;
    assert!(
        s.last_exit.as_deref().unwrap().starts_with("spawn failed"),
        "{s:?}"
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

/// Collects everything logged through `tracing` on this thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Sends a PXE DHCPDISCOVER from `ns` with busybox udhcpc (it gives up
/// quickly: a proxy offer carries no address).
fn pxe_discover(ns_name: &str, iface: &str, ipxe: bool) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns_name, "busybox"]);
    cmd.args([
        "udhcpc",
        "-i",
        iface,
        "-n",
        "-q",
        "-t",
        "1",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ]);
    cmd.args(["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"]);
    cmd.args(["-x", "0x61:00112233445566778899aabbccddeeff00"]);
    if ipxe {
        cmd.args(["-x", "0x4d:69505845"]);
    }
    // udhcpc exits non-zero without a lease; only the exchange matters.
    let _ = cmd.output().unwrap();
}

#[tokio::test]
async fn real_dnsmasq_answers_declared_macs_in_a_namespace() {
    let bin = dnsmasq_binary();
    let busybox_ok = Command::new("busybox")
        .arg("udhcpc")
        .arg("--help")
        .output()
        .is_ok();
    assert!(
        busybox_ok,
        "this test needs busybox (Debian package busybox-static)"
    );
    let server = Netns::new();
    let client = Netns::new();
    let sfx = unique_suffix();
    let (ifs, ifc) = (format!("pd{sfx}s"), format!("pd{sfx}c"));
    veth_between(
        &server,
        &ifs,
        "10.232.5.1/24",
        &client,
        &ifc,
        "10.232.5.77/24",
    );
    let known = mac("52:54:00:12:34:56");
    let unknown = mac("52:54:00:99:99:99");

    let dir = tempfile::tempdir().unwrap();
    let mut p = DnsmasqParams::new(
        ifs.clone(),
        "10.232.5.0/24".parse().unwrap(),
        "10.232.5.1".parse().unwrap(),
        "http://10.232.5.1:8080",
        dnsmasq::DEBIAN_IPXE_DIR,
        dir.path().join("hosts"),
    );
    p.user = Some("root".into());
    dnsmasq::prepare_runtime(&p)
        .unwrap_or_else(|e| panic!("{e} (this test needs the Debian package ipxe)"));
    dnsmasq::write_hostsdir(&p.hostsdir, &[(known, None)]).unwrap();
    let conf = dir.path().join("dnsmasq.conf");
    std::fs::write(&conf, dnsmasq::render_config(&p).unwrap()).unwrap();
    dnsmasq::test_config(&bin, &conf).await.unwrap();

    // The supervisor runs `ip netns exec <ns> dnsmasq …` through a wrapper,
    // which execs, so the child's pid is dnsmasq's.
    let wrapper = fake_binary(
        dir.path(),
        &format!(
            "exec ip netns exec '{}' '{}' \"$@\"",
            server.name,
            bin.display()
        ),
    );
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut sp = SpawnParams::new(wrapper, &conf);
    sp.stop_timeout = Duration::from_secs(3);
    let (mut handle, sup) = dnsmasq::supervisor(sp);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async {
        let _ = stop_rx.await;
    }));
    wait_for("dnsmasq to read its hostsdir", || {
        logs.text()
            .contains(&format!("read {}/52-54-00-12-34-56", p.hostsdir.display()))
            .then_some(())
    })
    .await;
    let text = logs.text();
    assert!(text.contains("started, version"), "{text}");
    assert!(text.contains("DHCP, proxy on subnet 10.232.5.0"), "{text}");
    let pid = handle.status.borrow().pid.unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "dnsmasq");

    // A declared MAC gets a proxy offer; as an iPXE client, our URL.
    client.ip(&["link", "set", &ifc, "address", &known.to_string()]);
    let (ns_name, ifc2) = (client.name.clone(), ifc.clone());
    tokio::task::spawn_blocking(move || {
        pxe_discover(&ns_name, &ifc2, false);
        pxe_discover(&ns_name, &ifc2, true);
    })
    .await
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), handle.seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        SeenMac {
            mac: known,
            ignored: false
        }
    );
    wait_for("the iPXE boot file in the log", || {
        logs.text()
            .contains(
                "bootfile name: http://10.232.5.1:8080/ipxe/${mac:hexhyp}?platform=${platform}",
            )
            .then_some(())
    })
    .await;
    let text = logs.text();
    assert!(text.contains("next server: 10.232.5.1"), "{text}");
    assert!(text.contains("tags: known, ipxe"), "{text}");

    // An undeclared MAC is ignored, and reported as such.
    client.ip(&["link", "set", &ifc, "address", &unknown.to_string()]);
    let (ns_name, ifc3) = (client.name.clone(), ifc.clone());
    tokio::task::spawn_blocking(move || pxe_discover(&ns_name, &ifc3, false))
        .await
        .unwrap();
    let seen = loop {
        let s = tokio::time::timeout(Duration::from_secs(10), handle.seen.recv())
            .await
            .unwrap()
            .unwrap();
        if s.mac == unknown {
            break s;
        }
    };
    assert!(seen.ignored);

    // TFTP serves the iPXE binary byte for byte.
    let fetched = dir.path().join("fetched.kpxe");
    let (ns_name, fetched2) = (client.name.clone(), fetched.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args(["netns", "exec", &ns_name, "busybox", "tftp", "-g", "-r"])
            .arg("undionly.kpxe")
            .arg("-l")
            .arg(&fetched2)
            .arg("10.232.5.1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "tftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(Path::new(dnsmasq::DEBIAN_IPXE_DIR).join("undionly.kpxe")).unwrap()
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(!process_alive(pid as i32), "dnsmasq {pid} still running");
}

#[tokio::test]
async fn supervisor_resets_the_backoff_after_a_stable_run() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    // Each child runs 0.4 s, longer than `stable_after`, then dies.
    let bin = fake_binary(
        dir.path(),
        &format!("date +%s.%N >> '{}'\nsleep 0.4\nexit 1", starts.display()),
    );
    let mut p = fast(bin, &dir.path().join("c.conf"));
    p.backoff_initial = Duration::from_millis(100);
    p.backoff_max = Duration::from_secs(5);
    p.stable_after = Duration::from_millis(300);
    let (handle, sup) = dnsmasq::supervisor(p);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sup.run(async {
        let _ = stop_rx.await;
    }));
    let status = handle.status.clone();
    wait_for("four starts", || {
        (status.borrow().restarts >= 3).then_some(())
    })
    .await;
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    let times: Vec<f64> = std::fs::read_to_string(&starts)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // Without the reset the pauses would be 0.1, 0.2, 0.4 s; with it each
    // start follows the previous one by the 0.4 s run plus 0.1 s.
    for gap in times.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap < 0.75, "backoff was not reset: {times:?}");
    }
}

#[test]
fn prepare_runtime_creates_the_hostsdir_and_checks_the_ipxe_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params(false);
    p.hostsdir = dir.path().join("state/hosts");
    p.tftp_root = dir.path().join("tftp");
    std::fs::create_dir(&p.tftp_root).unwrap();
    std::fs::write(p.tftp_root.join("undionly.kpxe"), b"bios").unwrap();
    let err = dnsmasq::prepare_runtime(&p).unwrap_err().to_string();
    assert!(err.contains("snponly.efi") && err.contains("ipxe"), "{err}");
    assert!(p.hostsdir.is_dir(), "hostsdir created before the check");
    std::fs::write(p.tftp_root.join("snponly.efi"), b"efi").unwrap();
    dnsmasq::prepare_runtime(&p).unwrap();
}
