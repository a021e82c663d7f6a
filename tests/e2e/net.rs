//! The run's network: a server namespace (bridge, taps, daemon, dnsmasq, QEMU, mock
//! services) and a router namespace (the LAN's DHCP server), via vm-tests/lib/netns.sh.
//! Dropping a [`Net`] kills every process in both namespaces and deletes them.
//! Talking to the daemon goes through `ip netns exec <ns> curl`: the test process
//! itself stays in the host namespace and has no route into the test network.

use super::prep::{artefacts, repo};
use super::{register, run, unregister};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Net {
    pub id: String,
    pub ns: String,
    pub router_ns: String,
    pub server_addr: String,
    pub bridge: String,
    pub subnet: String,
    pub leases: PathBuf,
    pub dir: PathBuf,
    taps: u32,
}

fn netns_sh() -> PathBuf {
    repo().join("vm-tests/lib/netns.sh")
}

pub fn down(id: &str) {
    let _ = Command::new("bash")
        .arg(netns_sh())
        .args(["down", id])
        .status();
}

/// Removes namespaces left behind by runs whose process died without cleaning up
/// (SIGKILL of the test process): ids are `e<pid>n<k>`.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(id) = name
            .strip_prefix("pvs-")
            .or_else(|| name.strip_prefix("pvr-"))
        else {
            continue;
        };
        let Some(pid) = id
            .strip_prefix('e')
            .and_then(|r| r.split_once('n'))
            .map(|(p, _)| p)
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            eprintln!("e2e: removing namespaces of a dead run {id}");
            down(id);
        }
    }
}

impl Net {
    pub fn up(label: &str) -> Net {
        static N: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        super::cleanup_on_signal();
        let id = format!(
            "e{}n{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let runs = artefacts().work.join("runs");
        if N.load(Ordering::SeqCst) == 0 {
            prune_dead_runs(&runs);
        }
        let dir = runs.join(format!("{label}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("run dir");
        register(&id);
        let out = Command::new("bash")
            .arg(netns_sh())
            .args(["up", &id])
            .arg(&dir)
            .output()
            .expect("netns.sh");
        if !out.status.success() {
            down(&id);
            unregister(&id);
            panic!(
                "netns.sh up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let get = |k: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("netns.sh printed no {k}"))
                .to_string()
        };
        Net {
            ns: get("NS_SERVER"),
            router_ns: get("NS_ROUTER"),
            server_addr: get("SERVER_ADDR"),
            bridge: get("BRIDGE"),
            subnet: get("SUBNET"),
            leases: PathBuf::from(get("LEASES")),
            id,
            dir,
            taps: 0,
        }
    }

    /// A new tap on the bridge, named tap<k>.
    pub fn add_tap(&mut self) -> String {
        self.taps += 1;
        let name = format!("tap{}", self.taps);
        run(Command::new("bash")
            .arg(netns_sh())
            .args(["tap", &self.id, &name]));
        name
    }

    /// `ip netns exec <server ns> <program>`
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// GET a URL inside the namespace; (status, body).
    pub fn http_get(&self, url: &str) -> Option<(u16, String)> {
        let out = self
            .exec("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    /// The address the router leased to `mac`, if any.
    pub fn lease_ip(&self, mac: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.leases).ok()?;
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && f[1].eq_ignore_ascii_case(mac)).then(|| f[2].to_string())
            })
            .next_back()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        down(&self.id);
        unregister(&self.id);
        // A passing scenario keeps its logs but not its ~140 MB of disks and ISOs; a
        // failing one keeps everything for the post-mortem.
        if !std::thread::panicking() {
            prune_bulk(&self.dir);
        }
    }
}

/// Runs of test processes that are gone (`<label>-e<pid>n<k>`): keep their logs, drop
/// their disks.
fn prune_dead_runs(runs: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let pid = name
            .rsplit_once("-e")
            .and_then(|(_, r)| r.split_once('n'))
            .map(|(p, _)| p.to_string());
        if let Some(pid) = pid
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            prune_bulk(&e.path());
        }
    }
}

/// Deletes the bulky files of a run directory (machine disks, the prepared ISO and
/// the boot files extracted from it), keeping logs, leases and the daemon's database.
pub fn prune_bulk(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "boot") {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                prune_bulk(&p);
            }
        } else if p
            .extension()
            .is_some_and(|x| x == "raw" || x == "iso" || x == "qcow2")
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}
