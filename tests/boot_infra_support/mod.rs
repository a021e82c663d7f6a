//! Shared helpers for the boot-infrastructure tests: network namespaces the
//! test creates (and removes in `Drop`), so every packet stays inside them.

#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Fails the test with a clear message unless we are root and `ip` exists.
pub fn require_netns_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and must run as root"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        matches!(ip, Ok(ref o) if o.status.success()),
        "this test needs the `ip` command (Debian package iproute2)"
    );
}

/// A short random-ish suffix, unique within this process and across
/// concurrent test processes.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:06x}",
        (std::process::id() ^ nanos.rotate_left(7) ^ (n << 20)) & 0xff_ffff
    )
}

/// Runs a command and panics with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace named `provtest-<suffix>`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        require_netns_prerequisites();
        let name = format!("provtest-{}", unique_suffix());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects `a` and `b` with a veth pair `<ifa>`/`<ifb>`, addresses
/// `addr_a`/`addr_b` (CIDR), both ends up.
pub fn veth_between(a: &Netns, ifa: &str, addr_a: &str, b: &Netns, ifb: &str, addr_b: &str) {
    a.ip(&[
        "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", &b.name,
    ]);
    a.ip(&["addr", "add", addr_a, "dev", ifa]);
    b.ip(&["addr", "add", addr_b, "dev", ifb]);
    a.ip(&["link", "set", ifa, "up"]);
    b.ip(&["link", "set", ifb, "up"]);
}
