//! The daemon under test (`provisioning serve`, the crate's own binary) in the run's
//! server namespace, supervising its own proxy-DHCP dnsmasq (`pxe.dnsmasq: spawn`); its settings, secrets and
//! `hosts.d`; the prepared stand-in ISO and the kernel/initrd extracted from it (both
//! with the crate's own `iso` code path); and the mock Infrastructure service.
//! Killing (SIGKILL) and restarting it keeps its state directory. Drop kills it.

use super::net::Net;
use super::prep::artefacts;
use super::{run, tail, wait_for};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const PORT: u16 = 8080;
pub const INFRA_PORT: u16 = 9090;
pub const SERVER_TYPE: &str = "qemu-e2e";

pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub hosts_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub infra_log: PathBuf,
    pub api: String,
    pub hostsdir: PathBuf,
    ns: String,
    child: Option<Child>,
    infra: Option<Child>,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_provisioning"))
}

/// Bakes the answer URL into a copy of the stand-in ISO and extracts the installer
/// kernel + gzip initrd from it, with the crate's CLI (`provisioning iso prepare`,
/// `provisioning iso extract`), as an operator does.
fn prepare_iso(dir: &Path, answer_url: &str) -> (PathBuf, PathBuf, PathBuf) {
    let a = artefacts();
    let iso = dir.join("proxmox-ve-prepared.iso");
    let boot = dir.join("boot");
    run(Command::new(bin())
        .args(["iso", "prepare", "--iso"])
        .arg(&a.iso)
        .arg("--out")
        .arg(&iso)
        .args(["--url", answer_url]));
    run(Command::new(bin())
        .args(["iso", "extract", "--iso"])
        .arg(&iso)
        .arg("--out-dir")
        .arg(&boot));
    (iso, boot.join("vmlinuz"), boot.join("initrd.img"))
}

/// Notes about workarounds the harness had to apply, printed with the report.
pub static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn note(s: String) {
    eprintln!("e2e: NOTE: {s}");
    if let Ok(mut n) = NOTES.lock()
        && !n.contains(&s)
    {
        n.push(s);
    }
}

impl Daemon {
    /// Writes settings, secrets, the server type; starts the mock Infrastructure
    /// service and the daemon; waits for /healthz.
    pub fn start(net: &Net) -> Daemon {
        let a = artefacts();
        let dir = net.dir.join("daemon");
        let hosts_dir = dir.join("hosts.d");
        let state_dir = dir.join("state");
        let secrets = dir.join("secrets");
        for d in [&hosts_dir, &state_dir, &secrets] {
            fs::create_dir_all(d).expect("daemon dirs");
        }
        let server = &net.server_addr;
        let api = format!("http://{server}:{PORT}");
        let (iso, kernel, initrd) = prepare_iso(&dir, &format!("{api}/api/boot/answer"));

        let pw = &a.join["EXPECTED_PASSWORD"];
        fs::write(secrets.join("join-password"), format!("{pw}\n")).expect("secret");
        let hash =
            run(Command::new("busybox").args(["mkpasswd", "-m", "sha512", "e2e-root-password"]));
        fs::write(secrets.join("root-password-hash"), &hash.stdout).expect("secret");
        fs::write(secrets.join("infra-token"), "e2e-infra-token\n").expect("secret");
        fs::write(
            hosts_dir.join("00-server-types.kdl"),
            format!(
                "server-type \"{SERVER_TYPE}\" {{\n    display-name \"QEMU end-to-end machine\"\n    boot-disk \"vda\"\n    disk {{\n        filesystem \"ext4\"\n    }}\n}}\n"
            ),
        )
        .expect("server types");
        let config = dir.join("provisioning.yaml");
        fs::write(
            &config,
            format!(
                r#"server:
  listen: {server}:{PORT}
  public_url: {api}
paths:
  hosts_dir: {hosts}
  state_dir: {state}
pxe:
  enable: true
  interface: {bridge}
  subnet: {subnet}
  server_address: {server}
  dnsmasq: spawn
  ipxe_dir: /usr/lib/ipxe
  hostsdir: {hostsdir}
  kernel_args: "console=ttyS0 no_timer_check pxe.on_failure=poweroff"
proxmox:
  iso: {iso}
  kernel: {kernel}
  initrd: {initrd}
  existing_node: {node}
  join_fingerprint: "{fp}"
  join_password_file: {secrets}/join-password
answer:
  keyboard: en-us
  country: us
  timezone: UTC
  mailto: root@localhost
  domain: e2e.lab
  root_password_hash_file: {secrets}/root-password-hash
infrastructure:
  base_url: http://{server}:{INFRA_PORT}
  token_file: {secrets}/infra-token
deadlines:
  pxe_booted: 10m
  installing: 10m
  installed: 10m
  first_boot: 10m
  joining: 10m
"#,
                hosts = hosts_dir.display(),
                state = state_dir.display(),
                bridge = net.bridge,
                subnet = net.subnet,
                iso = iso.display(),
                kernel = kernel.display(),
                initrd = initrd.display(),
                node = a.join["EXPECTED_NODE"],
                fp = a.join["EXPECTED_FINGERPRINT"],
                secrets = secrets.display(),
                hostsdir = dir.join("dnsmasq-hosts").display(),
            ),
        )
        .expect("settings");
        let infra_log = dir.join("infra.log");
        let infra = net
            .exec(&a.mock_infra)
            .arg(format!("{server}:{INFRA_PORT}"))
            .arg(&infra_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock-infra");
        let hostsdir = dir.join("dnsmasq-hosts");
        let mut d = Daemon {
            hostsdir,
            log: dir.join("daemon.log"),
            dir,
            config,
            hosts_dir,
            state_dir,
            infra_log,
            api,
            ns: net.ns.clone(),
            child: None,
            infra: Some(infra),
        };
        d.spawn(net);
        d
    }

    fn spawn(&mut self, net: &Net) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let child = net
            .exec(bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,provisioning=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("provisioning serve");
        self.child = Some(child);
        let url = format!("{}/healthz", self.api);
        wait_for(
            "the daemon's /healthz",
            Duration::from_secs(60),
            || {
                if let Some(c) = &mut self.child
                    && let Ok(Some(st)) = c.try_wait()
                {
                    panic!("the daemon exited ({st})\n{}", tail(&self.log, 60));
                }
                net.http_get(&url).filter(|(c, _)| *c == 200)
            },
            || tail(&self.log, 60),
        );
    }

    /// SIGKILL of the daemon and everything it spawned (its dnsmasq), the way systemd
    /// kills a service's control group when the main process is killed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let mut tree = vec![c.id()];
            let mut i = 0;
            while i < tree.len() {
                tree.extend(children_of(tree[i]));
                i += 1;
            }
            for pid in tree.iter().skip(1) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, net: &Net) {
        self.kill9();
        self.spawn(net);
    }

    pub fn declare(&self, name: &str, mac: &str, rebuild: u64) {
        let text = format!(
            "host \"{name}\" {{\n    mac \"{mac}\"\n    server-type \"{SERVER_TYPE}\"\n    rebuild {rebuild}\n}}\n"
        );
        let tmp = self.hosts_dir.join(format!(".{name}.kdl.tmp"));
        fs::write(&tmp, text).expect("host file");
        fs::rename(&tmp, self.hosts_dir.join(format!("{name}.kdl"))).expect("host file");
    }

    /// A declared MAC must be in the daemon's dnsmasq hostsdir (only declared MACs
    /// get PXE answers).
    pub fn assert_in_dnsmasq_hostsdir(&self, mac: &str) {
        let file = self.hostsdir.join(mac.replace(':', "-"));
        wait_for(
            &format!("the daemon's dhcp-hostsdir entry {}", file.display()),
            Duration::from_secs(10),
            || file.exists().then_some(()),
            || tail(&self.log, 30),
        );
    }

    pub fn hosts(&self, net: &Net) -> Vec<Value> {
        let (code, body) = net
            .http_get(&format!("{}/api/hosts", self.api))
            .unwrap_or_else(|| panic!("GET /api/hosts failed\n{}", tail(&self.log, 40)));
        assert_eq!(code, 200, "GET /api/hosts: {body}");
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(v)) => v,
            Ok(Value::Object(o)) => o
                .get("hosts")
                .and_then(|h| h.as_array().cloned())
                .unwrap_or_else(|| panic!("GET /api/hosts: no host list in {body}")),
            other => panic!("GET /api/hosts: unexpected body {body} ({other:?})"),
        }
    }

    pub fn host(&self, net: &Net, name: &str) -> Option<Value> {
        let (code, body) = net.http_get(&format!("{}/api/hosts/{name}", self.api))?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    pub fn state_of(&self, net: &Net, name: &str) -> Option<String> {
        self.hosts(net)
            .into_iter()
            .find(|h| h["name"] == name)
            .and_then(|h| h["state"].as_str().map(str::to_string))
    }

    /// Waits until host `name` is in `state`; panics early if it lands in `failed`
    /// (unless that is what we wait for).
    pub fn wait_state(
        &self,
        net: &Net,
        name: &str,
        state: &str,
        timeout: Duration,
        ctx: impl Fn() -> String,
    ) {
        let start = std::time::Instant::now();
        let start_ms = super::now_ms();
        wait_for(
            &format!("host {name} to reach {state}"),
            timeout,
            || {
                let s = self.state_of(net, name)?;
                if s == "failed" && state != "failed" {
                    let h = self.host(net, name).unwrap_or_default();
                    // an old failure (before this wait) is what a rebuild recovers from
                    if h["since_ms"].as_i64().unwrap_or(0) < start_ms {
                        return None;
                    }
                    panic!(
                        "host {name} failed: {}\n{}\n{}",
                        h["last_error"],
                        tail(&self.log, 40),
                        ctx()
                    );
                }
                (s == state).then_some(())
            },
            || format!("{}\n{}", tail(&self.log, 40), ctx()),
        );
        eprintln!(
            "e2e: {name} is {state} (waited {:.1} s)",
            start.elapsed().as_secs_f64()
        );
    }

    /// The mock Infrastructure service's request log, one JSON object per request.
    pub fn infra_requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.infra_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every file of the state directory that contains `needle` (raw bytes: the
    /// database, its WAL and journal included).
    pub fn state_files_containing(&self, needle: &[u8]) -> Vec<PathBuf> {
        let mut hits = Vec::new();
        let mut stack = vec![self.state_dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = fs::read(&p)
                    && bytes.windows(needle.len()).any(|w| w == needle)
                {
                    hits.push(p);
                }
            }
        }
        hits
    }
}

/// Direct children of `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after ')'
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if let Some(mut c) = self.infra.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
