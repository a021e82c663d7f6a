//! The end-to-end harness: QEMU machines PXE-boot through a real dnsmasq, real iPXE
//! and the real daemon, inside network namespaces this harness creates.
//!
//! One file per concern: `prep` (build the stand-in installer and friends with
//! vm-tests/prepare.sh), `net` (the namespaces, vm-tests/lib/netns.sh), `machine` (one
//! QEMU machine, vm-tests/lib/qemu.sh), `daemon` (the daemon under test, its settings,
//! host declarations, the mock Infrastructure service), `report` (the timing table).
//! Everything it starts runs inside the run's namespaces and is removed when the owning
//! value is dropped, on failure, and on Ctrl-C/SIGTERM (see [`cleanup`]). It never
//! sends a packet outside those namespaces.

#![allow(dead_code)]

pub mod daemon;
pub mod machine;
pub mod net;
pub mod prep;
pub mod report;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Namespace ids alive in this process, torn down by the signal handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Tear-down on Ctrl-C / SIGTERM: Drop does not run when the test process is killed,
/// so a watcher thread removes every namespace (and with it every process inside).
pub fn cleanup_on_signal() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            let ids: Vec<String> = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
            for id in ids {
                eprintln!("e2e: interrupted, removing namespaces of run {id}");
                net::down(&id);
            }
            std::process::exit(130);
        });
    });
}

pub fn register(id: &str) {
    if let Ok(mut v) = LIVE.lock() {
        v.push(id.to_string());
    }
}

pub fn unregister(id: &str) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|x| x != id);
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` every 250 ms until it returns `Some`, or panics with `what` and `ctx()`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    ctx: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", ctx());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The last `n` lines of a text file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    format!(
        "--- {} (last {n} lines)\n{}",
        path.display(),
        lines[start..].join("\n")
    )
}
