//! The sshd test harness shared by the join tests: Debian's `/usr/sbin/sshd`
//! started on a loopback port with its own host key, config and
//! `AuthorizedKeysFile` in a temporary directory (no system file is read for
//! authentication or touched), a stand-in `pvecm`
//! (`tests/fixtures/join/pvecm`) on its PATH, and a tracing capture for the
//! "no secret in any log line" checks.

#![allow(dead_code)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisioning::join::ssh::JoinParams;
use provisioning::secrets::{EphemeralKey, SecretString, ephemeral_key_comment};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const PASSWORD: &str = "correct horse battery staple";
pub const NODE: &str = "pve-existing.lan";
pub const OTHER_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjIsZSMD5YbPHUNC5NXnahGCzd6OHjsXVa6Nd6dSy7W operator@laptop";

pub fn fingerprint() -> String {
    (0..32)
        .map(|i| format!("{:02X}", (i * 7 + 3) % 256))
        .collect::<Vec<_>>()
        .join(":")
}

/// A temporary "installed host": a directory with root's and the cluster's
/// key files, the stand-in pvecm's expectations, and an sshd serving it.
pub struct SshdHost {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub key: EphemeralKey,
    pub host_key_line: String,
    pub sshd: Option<Child>,
}

impl SshdHost {
    /// Prepares everything; sshd is not started yet.
    pub fn prepare() -> SshdHost {
        capture_tracing();
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("root/.ssh")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        // sshd's privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();

        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f"])
            .arg(root.join("ssh_host_ed25519_key"))
            .status()
            .expect("ssh-keygen is missing: install Debian's openssh-client");
        assert!(status.success());
        let host_key_line = fs::read_to_string(root.join("ssh_host_ed25519_key.pub"))
            .unwrap()
            .trim()
            .to_string();

        let key = EphemeralKey::generate(&ephemeral_key_comment("pve-02", 3)).unwrap();
        fs::write(
            root.join("root/.ssh/authorized_keys"),
            format!("{OTHER_KEY}\n{}\n", key.public_openssh()),
        )
        .unwrap();
        fs::set_permissions(
            root.join("root/.ssh/authorized_keys"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();

        let pvecm = root.join("bin/pvecm");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/join/pvecm"),
            &pvecm,
        )
        .unwrap();
        fs::set_permissions(&pvecm, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("expected-node"), NODE).unwrap();
        fs::write(root.join("expected-fingerprint"), fingerprint()).unwrap();
        fs::write(root.join("expected-password"), PASSWORD).unwrap();

        let port = free_port();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {root}/ssh_host_ed25519_key\n\
             PidFile {root}/sshd.pid\n\
             AuthorizedKeysFile {root}/root/.ssh/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             UsePAM no\n\
             PrintMotd no\n\
             SetEnv PVECM_ROOT={root}\n\
             LogLevel VERBOSE\n",
            root = root.display()
        );
        fs::write(root.join("sshd_config"), config).unwrap();
        SshdHost {
            dir,
            port,
            key,
            host_key_line,
            sshd: None,
        }
    }

    pub fn started() -> SshdHost {
        let mut host = SshdHost::prepare();
        host.start_sshd();
        host
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn start_sshd(&mut self) {
        let log = fs::File::create(self.root().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.root().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start sshd");
        self.sshd = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.sshd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("sshd exited with {status}: {}", self.sshd_log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not listen within 10 s: {}",
                self.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sshd_log(&self) -> String {
        fs::read_to_string(self.root().join("sshd.log")).unwrap_or_default()
    }

    pub fn params(&self) -> JoinParams {
        let mut p = JoinParams::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &self.key,
            vec![self.host_key_line.clone()],
            NODE,
            fingerprint(),
            SecretString::new(PASSWORD),
        );
        p.port = self.port;
        p.pvecm_command = self.root().join("bin/pvecm").display().to_string();
        p.member_check_command = format!(
            "test -e '{}'",
            self.root().join("etc/pve/corosync.conf").display()
        );
        p.authorized_keys_paths = vec![
            self.path("root/.ssh/authorized_keys"),
            self.path("etc/pve/priv/authorized_keys"),
        ];
        p.connect_timeout = Duration::from_secs(10);
        p.command_timeout = Duration::from_secs(30);
        p
    }

    pub fn path(&self, rel: &str) -> String {
        self.root().join(rel).display().to_string()
    }

    pub fn pvecm_calls(&self) -> Option<String> {
        fs::read_to_string(self.root().join("pvecm.log")).ok()
    }

    pub fn key_blob(&self) -> String {
        self.key
            .public_openssh()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }
}

impl Drop for SshdHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tracing subscriber that writes every event (all levels) into a buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test in this binary logs into one global buffer: tracing caches
/// per-callsite interest globally, so a thread-local subscriber can miss
/// events that a parallel test without one saw first.
pub fn capture_tracing() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            captured
        })
        .clone()
}

pub fn assert_no_secrets(what: &str, text: &str, host: &SshdHost) {
    assert!(!text.contains(PASSWORD), "{what} contains the password");
    let pem = host.key.private_openssh().expose();
    let body: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!body.is_empty());
    for line in body {
        assert!(!text.contains(line), "{what} contains private key material");
    }
    assert!(
        !text.contains("PRIVATE KEY"),
        "{what} mentions a private key"
    );
}
