//! Shared helpers for integration tests that run the real daemon binary on
//! port 0 against a temporary `hosts.d` and state directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `provisioning serve --config <config> --listen 127.0.0.1:0`
    /// and waits until it prints its address.
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_provisioning"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the provisioning binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("provisioning: listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not start; stderr:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        Daemon {
            child,
            url,
            stderr_lines: lines,
        }
    }

    pub fn logs(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal the daemon");
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = reqwest::get(format!("{}{}", self.url, path))
            .await
            .expect("GET");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("JSON")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary deployment: `hosts.d/`, `state/` and `provisioning.yaml`.
pub struct Deployment {
    pub dir: tempfile::TempDir,
}

impl Deployment {
    pub fn new(extra_settings: &str) -> Deployment {
        Deployment::with_settings(|_| extra_settings.to_string())
    }

    /// Like [`Deployment::new`], with extra settings that may name files in
    /// the deployment's directory (passed to `extra`).
    pub fn with_settings(extra: impl FnOnce(&Path) -> String) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra_settings = extra(dir.path());
        std::fs::create_dir(dir.path().join("hosts.d")).unwrap();
        std::fs::write(
            dir.path().join("hosts.d/server-types.yaml"),
            "server_types:\n  small:\n    display_name: Small box\n    boot_disk: sda\n    management_nic: eth0\n    gpu: false\n",
        )
        .unwrap();
        let config = format!(
            "paths:\n  hosts_dir: {0}/hosts.d\n  state_dir: {0}/state\n  server_types: {0}/hosts.d/server-types.yaml\n{1}",
            dir.path().display(),
            extra_settings
        );
        std::fs::write(dir.path().join("provisioning.yaml"), config).unwrap();
        Deployment { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("provisioning.yaml")
    }

    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("hosts.d")
    }

    /// Writes a file into hosts.d atomically (temp file + rename), as editors do.
    pub fn write_hosts(&self, file: &str, text: &str) {
        let tmp = self.hosts_dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.hosts_dir().join(file)).unwrap();
    }
}

pub fn host_kdl(name: &str, mac: &str, rebuild: u64) -> String {
    format!(
        "host \"{name}\" {{\n    mac \"{mac}\"\n    server-type \"small\"\n    rebuild {rebuild}\n}}\n"
    )
}

/// Polls `f` every 10 ms until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET {url}/api/hosts` as JSON; `None` on any failure (for `eventually`).
pub async fn hosts_json(url: &str) -> Option<serde_json::Value> {
    reqwest::get(format!("{url}/api/hosts"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

pub fn host<'a>(hosts: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    hosts.as_array()?.iter().find(|h| h["name"] == name)
}
