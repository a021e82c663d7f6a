//! The SSH join against a real OpenSSH server: the test starts Debian's
//! `/usr/sbin/sshd` on a loopback port with its own host key, config and
//! `AuthorizedKeysFile` in a temporary directory (no system file is read for
//! authentication or touched), and a stand-in `pvecm`
//! (`tests/fixtures/join/pvecm`) that checks its arguments and the password
//! on stdin and rewires `authorized_keys` the way the real join does.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisioning::join::retry::{AttemptOutcome, Backoff};
use provisioning::join::ssh::{JoinError, JoinParams, join, join_with_retry};
use provisioning::secrets::{EphemeralKey, SecretString, ephemeral_key_comment};

const SSHD: &str = "/usr/sbin/sshd";
const PASSWORD: &str = "correct horse battery staple";
const NODE: &str = "pve-existing.lan";
const OTHER_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjIsZSMD5YbPHUNC5NXnahGCzd6OHjsXVa6Nd6dSy7W operator@laptop";

fn fingerprint() -> String {
    (0..32)
        .map(|i| format!("{:02X}", (i * 7 + 3) % 256))
        .collect::<Vec<_>>()
        .join(":")
}

/// A temporary "installed host": a directory with root's and the cluster's
/// key files, the stand-in pvecm's expectations, and an sshd serving it.
struct Host {
    dir: tempfile::TempDir,
    port: u16,
    key: EphemeralKey,
    host_key_line: String,
    sshd: Option<Child>,
}

impl Host {
    /// Prepares everything; sshd is not started yet.
    fn prepare() -> Host {
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
        Host {
            dir,
            port,
            key,
            host_key_line,
            sshd: None,
        }
    }

    fn started() -> Host {
        let mut host = Host::prepare();
        host.start_sshd();
        host
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn start_sshd(&mut self) {
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

    fn sshd_log(&self) -> String {
        fs::read_to_string(self.root().join("sshd.log")).unwrap_or_default()
    }

    fn params(&self) -> JoinParams {
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

    fn path(&self, rel: &str) -> String {
        self.root().join(rel).display().to_string()
    }

    fn pvecm_calls(&self) -> Option<String> {
        fs::read_to_string(self.root().join("pvecm.log")).ok()
    }

    fn key_blob(&self) -> String {
        self.key
            .public_openssh()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tracing subscriber that writes every event (all levels) into a buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
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
fn capture_tracing() -> Captured {
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

fn assert_no_secrets(what: &str, text: &str, host: &Host) {
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

#[tokio::test(flavor = "current_thread")]
async fn join_succeeds_removes_the_key_everywhere_and_redacts_output() {
    let host = Host::started();
    let captured = capture_tracing();
    let report = join(&host.params())
        .await
        .unwrap_or_else(|e| panic!("join failed: {e}\nsshd log:\n{}", host.sshd_log()));

    assert!(!report.already_member);
    assert_eq!(report.summary(), "joined");
    assert_eq!(
        report.host_key_fingerprint,
        provisioning::secrets::fingerprint_sha256(&host.host_key_line).unwrap()
    );
    // pvecm ran exactly once, with exactly these arguments.
    assert_eq!(
        host.pvecm_calls().as_deref(),
        Some(format!("add {NODE} --fingerprint {}\n", fingerprint()).as_str())
    );
    let out = report.join_output.as_ref().unwrap();
    assert_eq!(out.exit_status, Some(0));
    assert!(out.stdout.contains("successfully added node"), "{out:?}");
    // The stand-in echoes the password it got: the report must not.
    assert!(
        out.stderr.contains("received password '<redacted>'"),
        "{out:?}"
    );
    assert!(!out.command.contains(PASSWORD));

    // The join made root's file a link to the cluster-wide file, and the key
    // is gone from both while every other key stayed.
    let node_keys = host.root().join("root/.ssh/authorized_keys");
    let cluster_keys = host.root().join("etc/pve/priv/authorized_keys");
    assert!(fs::symlink_metadata(&node_keys).unwrap().is_symlink());
    let contents = fs::read_to_string(&cluster_keys).unwrap();
    assert!(!contents.contains(&host.key_blob()), "{contents}");
    assert!(contents.contains(OTHER_KEY), "{contents}");
    assert!(contents.contains("root@existing-node"), "{contents}");
    assert_eq!(
        fs::metadata(&cluster_keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        report.key_removal_output.stdout.contains("removed:"),
        "{:?}",
        report.key_removal_output
    );

    // A fresh login with the key fails now (join verified it; check again).
    let again = join(&host.params()).await.unwrap_err();
    assert!(matches!(again, JoinError::AuthRejected { .. }), "{again}");
    assert!(!again.is_retryable());

    let logs = captured.text();
    assert!(logs.contains("pvecm add succeeded"), "{logs}");
    assert_no_secrets("the tracing output", &logs, &host);
    assert_no_secrets("the report", &format!("{report:?}"), &host);
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_pinned_host_key_is_a_permanent_mismatch_and_runs_nothing() {
    let host = Host::started();
    let mut params = host.params();
    let other = EphemeralKey::generate("someone-else").unwrap();
    params.pinned_host_keys = vec![other.public_openssh().to_string()];
    let err = join(&params).await.unwrap_err();
    assert!(matches!(err, JoinError::HostKeyMismatch { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("host key mismatch"), "{err}");
    assert!(host.pvecm_calls().is_none(), "pvecm must not run");
    // Nothing was removed either.
    let keys = fs::read_to_string(host.root().join("root/.ssh/authorized_keys")).unwrap();
    assert!(keys.contains(&host.key_blob()));

    // join_with_retry gives up at once instead of retrying until the deadline.
    let started = Instant::now();
    let mut attempts = Vec::new();
    let err = join_with_retry(&params, Instant::now() + Duration::from_secs(30), |a| {
        attempts.push(a.clone())
    })
    .await
    .unwrap_err();
    assert!(matches!(err, JoinError::HostKeyMismatch { .. }));
    assert_eq!(attempts.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "current_thread")]
async fn sshd_down_then_up_is_retried_until_it_answers() {
    let mut host = Host::prepare();
    let mut params = host.params();
    params.backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
    };
    params.connect_timeout = Duration::from_secs(2);
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        host.start_sshd();
        host
    });
    let mut attempts = Vec::new();
    let result = join_with_retry(&params, Instant::now() + Duration::from_secs(60), |a| {
        attempts.push(a.clone())
    })
    .await;
    let host = starter.join().unwrap();
    let report = result.unwrap_or_else(|e| panic!("join failed: {e}\n{}", host.sshd_log()));
    assert!(!report.already_member);
    assert!(attempts.len() >= 2, "{attempts:?}");
    match &attempts[0].outcome {
        AttemptOutcome::WillRetry { error, .. } => {
            assert!(error.contains("cannot connect"), "{error}")
        }
        other => panic!("first attempt should be retried: {other:?}"),
    }
    assert_eq!(attempts.last().unwrap().outcome, AttemptOutcome::Succeeded);
    assert!(host.pvecm_calls().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn failing_pvecm_is_permanent_and_its_output_is_redacted() {
    let host = Host::started();
    let wrong = "wrong-password-do-not-leak";
    let mut params = host.params();
    params.join_password = SecretString::new(wrong);
    let captured = capture_tracing();
    let err = join(&params).await.unwrap_err();
    let JoinError::CommandFailed {
        status,
        ref output,
        ref details,
    } = err
    else {
        panic!("expected CommandFailed, got {err}");
    };
    assert_eq!(status, Some(255));
    assert!(output.contains("Authentication failed"), "{output}");
    assert!(output.contains("<redacted>"), "{output}");
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{details:?}"),
        captured.text(),
    ] {
        assert!(!text.contains(wrong), "password leaked: {text}");
        assert!(!text.contains(PASSWORD));
    }
    assert!(!err.is_retryable());
    // The key was not removed: the join did not happen, nothing to clean
    // up that a new rebuild would not replace.
    assert!(host.pvecm_calls().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn an_existing_member_is_not_joined_again_but_the_key_is_removed() {
    let host = Host::started();
    fs::create_dir_all(host.root().join("etc/pve/priv")).unwrap();
    fs::write(host.root().join("etc/pve/corosync.conf"), "").unwrap();
    let report = join(&host.params()).await.unwrap();
    assert!(report.already_member);
    assert_eq!(report.summary(), "already joined");
    assert!(report.join_output.is_none());
    assert!(host.pvecm_calls().is_none(), "pvecm must not run");
    let keys = fs::read_to_string(host.root().join("root/.ssh/authorized_keys")).unwrap();
    assert!(!keys.contains(&host.key_blob()), "{keys}");
    assert!(keys.contains(OTHER_KEY));
    let out = &report.key_removal_output;
    assert!(out.stdout.contains("absent:"), "{out:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn key_removal_failure_is_reported() {
    let host = Host::started();
    let mut params = host.params();
    // A directory where a file is expected: grep cannot read it.
    let bogus = host.root().join("bogus-authorized-keys");
    fs::create_dir_all(&bogus).unwrap();
    params.authorized_keys_paths = vec![
        params.authorized_keys_paths[0].clone(),
        bogus.display().to_string(),
    ];
    let err = join(&params).await.unwrap_err();
    assert!(matches!(err, JoinError::KeyRemovalFailed { .. }), "{err}");
    assert!(!err.is_retryable());
    let out = err.to_string();
    assert!(out.contains("cannot read"), "{out}");
}
