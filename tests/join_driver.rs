//! The join driver end to end: a real SQLite store in a temporary
//! directory driven through a rebuild up to `first_boot`, a real OpenSSH
//! server with the stand-in `pvecm` (the harness in `tests/support/sshd.rs`),
//! and a wiremock Infrastructure service. Every test checks that no secret
//! (join password, private key, bearer token) reached a note, a transition,
//! a failure reason or a log line.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioning::decl::{DiskSpec, Host, HostName, SourceLoc};
use provisioning::join::driver::{JoinContext, JoinDriver, note};
use provisioning::join::infra::InfraClient;
use provisioning::join::retry::Backoff;
use provisioning::secrets::{EphemeralKey, SecretString, fingerprint_sha256};
use provisioning::settings::Settings;
use provisioning::state::{EventKind, HostState};
use provisioning::store::{NewRebuild, NoteRecord, OperationUpdate, Store};
use support::sshd::{NODE, PASSWORD, SshdHost, assert_no_secrets, capture_tracing, fingerprint};
use tokio::sync::Notify;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NAME: &str = "pve-02";
const MAC: &str = "52:54:00:12:34:56";
const HARDWARE_ID: &str = "4c4c4544-0042-3510-8052-b4c04f4d4e31";
const TOKEN: &str = "infra-bearer-token-do-not-leak";
const SERVER_TYPE: &str = "std";

/// One host on its way through a rebuild: the sshd "machine", the store,
/// the settings pointing the join at the sshd's temporary tree.
struct Env {
    sshd: SshdHost,
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    settings: Settings,
    decl: Host,
    op: i64,
}

impl Env {
    /// A store with the host in `first_boot` for rebuild 3, its pinned host
    /// key the sshd's, phone-home address 127.0.0.1. sshd is not started.
    fn first_boot() -> Env {
        let sshd = SshdHost::prepare();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
        store.ensure_host(NAME, MAC).unwrap();
        let t = store
            .start_rebuild(NAME, 3, new_rebuild(&sshd.key), "rebuild 3 declared")
            .unwrap();
        let op = t.operation.unwrap();
        store
            .apply(NAME, op, EventKind::IpxeServed, "ipxe script served")
            .unwrap();
        store
            .apply(NAME, op, EventKind::AnswerServed, "answer served")
            .unwrap();
        store
            .update_operation(
                op,
                OperationUpdate {
                    ssh_host_keys: Some(serde_json::json!({ "ed25519": sshd.host_key_line })),
                    ..OperationUpdate::default()
                },
            )
            .unwrap();
        store
            .apply(NAME, op, EventKind::InstallReported, "installer webhook")
            .unwrap();
        store
            .update_operation(
                op,
                OperationUpdate {
                    phone_home_ip: Some("127.0.0.1".into()),
                    hardware_id: Some(HARDWARE_ID.into()),
                    ..OperationUpdate::default()
                },
            )
            .unwrap();
        store
            .apply(NAME, op, EventKind::PhoneHome, "phoned home")
            .unwrap();

        let mut settings = Settings::parse("", None, dir.path()).unwrap();
        settings.proxmox.existing_node = Some(NODE.into());
        settings.proxmox.join_fingerprint = Some(fingerprint());
        settings.join.ssh_port = sshd.port;
        settings.join.connect_timeout = Duration::from_secs(5);
        settings.join.pvecm = sshd.path("bin/pvecm");
        settings.join.member_check = format!("test -e '{}'", sshd.path("etc/pve/corosync.conf"));
        settings.join.authorized_keys = vec![
            sshd.path("root/.ssh/authorized_keys"),
            sshd.path("etc/pve/priv/authorized_keys"),
        ];
        settings
            .infrastructure
            .server_type_map
            .insert(SERVER_TYPE.into(), "7".into());

        let decl = Host {
            name: HostName::parse(NAME).unwrap(),
            mac: MAC.parse().unwrap(),
            server_type: SERVER_TYPE.into(),
            rebuild: 3,
            network: None,
            disk: DiskSpec::default(),
            wake_on_lan: false,
            source: SourceLoc {
                file: PathBuf::from("hosts.d/pve-02.kdl"),
                line: 1,
                column: 1,
            },
        };
        Env {
            sshd,
            _dir: dir,
            store,
            settings,
            decl,
            op,
        }
    }

    fn driver(&self, infra: Option<InfraClient>, password: &str) -> JoinDriver {
        JoinDriver::new(self.context(infra, password))
    }

    fn context(&self, infra: Option<InfraClient>, password: &str) -> JoinContext {
        let mut ctx = JoinContext::new(
            self.store.clone(),
            Arc::new(self.settings.clone()),
            Some(SecretString::new(password)),
            infra,
            Arc::new(Notify::new()),
        );
        ctx.ssh_backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        };
        ctx
    }

    fn ensure(&self, driver: &JoinDriver) {
        let record = self.store.host(NAME).unwrap().unwrap();
        driver.ensure_running(&self.decl, &record);
    }

    fn state(&self) -> HostState {
        self.store.host(NAME).unwrap().unwrap().state
    }

    fn notes(&self, kind: &str) -> Vec<NoteRecord> {
        self.store
            .notes(NAME)
            .unwrap()
            .into_iter()
            .filter(|n| n.kind == kind)
            .collect()
    }

    fn pvecm_runs(&self) -> usize {
        self.sshd
            .pvecm_calls()
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Everything the store keeps for the dashboard, as text.
    fn recorded_text(&self) -> String {
        let mut text = String::new();
        for n in self.store.notes(NAME).unwrap() {
            text.push_str(&format!("{} {}\n", n.kind, n.message));
        }
        for t in self.store.history(NAME).unwrap() {
            text.push_str(&format!("{} {} {}\n", t.from, t.to, t.cause));
        }
        for o in self.store.operations(NAME).unwrap() {
            text.push_str(&format!("{o:?}\n"));
        }
        text.push_str(&format!("{:?}\n", self.store.host(NAME).unwrap()));
        text
    }

    /// No secret in the store's history, notes, records or the logs.
    fn assert_no_secrets(&self, extra_secrets: &[&str]) {
        let logs = capture_tracing().text();
        for (what, text) in [("the store", self.recorded_text()), ("the logs", logs)] {
            assert_no_secrets(what, &text, &self.sshd);
            assert!(!text.contains(TOKEN), "{what} contains the bearer token");
            for s in extra_secrets {
                assert!(!text.contains(s), "{what} contains a secret");
            }
        }
    }
}

fn new_rebuild(key: &EphemeralKey) -> NewRebuild {
    NewRebuild {
        token_hash: [7; 32],
        public_key: key.public_openssh().to_string(),
        private_key: key.private_openssh().expose().to_string(),
    }
}

async fn infra_server(status: u16, expect: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v1/servers/{NAME}")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(status))
        .expect(expect)
        .mount(&server)
        .await;
    server
}

fn infra_client(server: &MockServer) -> InfraClient {
    InfraClient::new(
        &server.uri(),
        Some(SecretString::new(TOKEN)),
        Duration::from_secs(2),
    )
    .unwrap()
    .with_backoff(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
    })
}

/// Waits until the driver has no task for the host; panics after `limit`.
async fn wait_done(driver: &JoinDriver, env: &Env, limit: Duration) -> Duration {
    let started = Instant::now();
    while driver.is_running(NAME) {
        assert!(
            started.elapsed() < limit,
            "the join task still runs after {limit:?}; state {}, notes {:#?}\nsshd log:\n{}",
            env.state(),
            env.store.notes(NAME).unwrap(),
            env.sshd.sshd_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_to_ready_joins_removes_the_key_and_registers_once() {
    let mut env = Env::first_boot();
    env.sshd.start_sshd();
    let server = infra_server(201, 1).await;
    let driver = env.driver(Some(infra_client(&server)), PASSWORD);

    env.ensure(&driver);
    assert!(driver.is_running(NAME));
    // Idempotent: a second pass while the task runs starts nothing.
    env.ensure(&driver);
    assert_eq!(driver.running_hosts(), vec![NAME.to_string()]);
    let took = wait_done(&driver, &env, Duration::from_secs(60)).await;
    eprintln!("first_boot -> ready took {took:?}");

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(
        record.state,
        HostState::Ready,
        "{:?} notes {:#?}",
        record.last_error,
        env.store.notes(NAME).unwrap()
    );
    let op = env.store.operation(env.op).unwrap().unwrap();
    assert_eq!(op.outcome.as_deref(), Some("ready"));
    assert!(!op.has_private_key);
    assert!(env.store.private_key(env.op).unwrap().is_none());

    // The transitions this driver made.
    let history = env.store.history(NAME).unwrap();
    let mine: Vec<_> = history
        .iter()
        .filter(|t| matches!(t.event, EventKind::JoinStarted | EventKind::Completed))
        .map(|t| (t.from, t.to, t.cause.as_str()))
        .collect();
    assert_eq!(
        mine,
        vec![
            (
                HostState::FirstBoot,
                HostState::Joining,
                "joining the cluster"
            ),
            (
                HostState::Joining,
                HostState::Ready,
                "joined and registered with infrastructure"
            ),
        ]
    );

    // pvecm ran once; the key is gone from the (now linked) key files.
    assert_eq!(env.pvecm_runs(), 1);
    let cluster_keys =
        fs::read_to_string(env.sshd.root().join("etc/pve/priv/authorized_keys")).unwrap();
    assert!(
        !cluster_keys.contains(&env.sshd.key_blob()),
        "{cluster_keys}"
    );
    assert!(
        fs::symlink_metadata(env.sshd.root().join("root/.ssh/authorized_keys"))
            .unwrap()
            .is_symlink()
    );

    // The notes.
    let attempts = env.notes(note::JOIN_ATTEMPT);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert!(
        attempts[0].message.starts_with("attempt 1: succeeded"),
        "{attempts:?}"
    );
    let output = env.notes(note::JOIN_OUTPUT);
    assert_eq!(output.len(), 1);
    assert!(output[0].message.contains("exit status: 0"), "{output:?}");
    assert!(
        output[0].message.contains("successfully added node"),
        "{output:?}"
    );
    assert!(
        output[0].message.contains("received password '<redacted>'"),
        "{output:?}"
    );
    let joined = env.notes(note::JOINED);
    let host_fp = fingerprint_sha256(&env.sshd.host_key_line).unwrap();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].message, format!("joined (host key {host_fp})"));
    assert_eq!(joined[0].operation, Some(env.op));
    assert!(env.notes(note::KEY_REMOVAL)[0].message.contains("removed:"));
    let infra = env.notes(note::INFRA_ATTEMPT);
    assert_eq!(infra.len(), 1);
    assert!(infra[0].message.starts_with("attempt 1: succeeded"));
    let reg = env.notes(note::REGISTRATION);
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].message, "registered with infrastructure (HTTP 201)");

    // Exactly one registration, with the documented fields.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "hostname": NAME,
            "management_ip": "127.0.0.1",
            "mac": MAC,
            "hardware_id": HARDWARE_ID,
            "server_type_id": 7
        })
    );
    server.verify().await;

    // Nothing more to do for a ready host.
    env.ensure(&driver);
    assert!(!driver.is_running(NAME));
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pinned_host_key_fails_at_once_without_running_pvecm() {
    let mut env = Env::first_boot();
    env.sshd.start_sshd();
    let other = EphemeralKey::generate("someone-else").unwrap();
    env.store
        .update_operation(
            env.op,
            OperationUpdate {
                ssh_host_keys: Some(serde_json::json!({ "ed25519": other.public_openssh() })),
                ..OperationUpdate::default()
            },
        )
        .unwrap();
    let server = infra_server(201, 0).await;
    let driver = env.driver(Some(infra_client(&server)), PASSWORD);
    env.ensure(&driver);
    let took = wait_done(&driver, &env, Duration::from_secs(20)).await;
    assert!(
        took < Duration::from_secs(10),
        "no retry expected, took {took:?}"
    );

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(record.state, HostState::Failed);
    let reason = record.last_error.unwrap();
    assert!(reason.starts_with("host key mismatch"), "{reason}");
    let attempts = env.notes(note::JOIN_ATTEMPT);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert!(
        attempts[0].message.contains("not retrying (permanent)"),
        "{attempts:?}"
    );
    assert_eq!(env.pvecm_runs(), 0);
    assert!(env.store.private_key(env.op).unwrap().is_none());
    assert_eq!(
        env.store
            .operation(env.op)
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("failed")
    );
    server.verify().await;
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pvecm_fails_with_the_redacted_output_tail() {
    let mut env = Env::first_boot();
    env.sshd.start_sshd();
    let wrong = "wrong-join-password-do-not-leak";
    let driver = env.driver(None, wrong);
    env.ensure(&driver);
    wait_done(&driver, &env, Duration::from_secs(30)).await;

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(record.state, HostState::Failed);
    let reason = record.last_error.unwrap();
    assert!(
        reason.starts_with("pvecm add failed (exit 255): "),
        "{reason}"
    );
    assert!(reason.contains("Authentication failed"), "{reason}");
    assert!(reason.contains("<redacted>"), "{reason}");
    let output = env.notes(note::JOIN_OUTPUT);
    assert_eq!(output.len(), 1);
    assert!(output[0].message.contains("exit status: 255"), "{output:?}");
    assert!(env.notes(note::JOINED).is_empty());
    assert!(env.store.private_key(env.op).unwrap().is_none());
    env.assert_no_secrets(&[wrong]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_down_until_the_deadline_fails_joined_not_registered() {
    let mut env = Env::first_boot();
    env.settings.deadlines.joining = Duration::from_secs(5);
    env.sshd.start_sshd();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database on fire"))
        .mount(&server)
        .await;
    let driver = env.driver(Some(infra_client(&server)), PASSWORD);
    let started = Instant::now();
    env.ensure(&driver);
    wait_done(&driver, &env, Duration::from_secs(30)).await;
    let took = started.elapsed();
    eprintln!("infrastructure retries ended after {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(record.state, HostState::Failed);
    let reason = record.last_error.unwrap();
    assert!(reason.starts_with("joined, not registered: "), "{reason}");
    assert!(reason.contains("deadline"), "{reason}");
    assert!(reason.contains("500"), "{reason}");
    // The join happened and was not undone.
    assert_eq!(env.pvecm_runs(), 1);
    assert_eq!(env.notes(note::JOINED).len(), 1);
    let attempts = env.notes(note::INFRA_ATTEMPT);
    assert!(attempts.len() >= 2, "{attempts:#?}");
    assert!(attempts[0].message.contains("retrying in"), "{attempts:?}");
    assert!(
        attempts
            .last()
            .unwrap()
            .message
            .contains("giving up (deadline)"),
        "{attempts:?}"
    );
    assert!(server.received_requests().await.unwrap().len() >= 2);
    assert!(env.store.private_key(env.op).unwrap().is_none());
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rebuild_during_the_join_stops_the_task_quietly() {
    // sshd stays down: the join keeps retrying the connection.
    let env = Env::first_boot();
    let driver = env.driver(None, PASSWORD);
    env.ensure(&driver);
    let started = Instant::now();
    while env.notes(note::JOIN_ATTEMPT).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no join attempt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.state(), HostState::Joining);
    assert!(driver.is_running(NAME));

    let key = EphemeralKey::generate("provisioning:pve-02:rebuild-4").unwrap();
    let t = env
        .store
        .start_rebuild(NAME, 4, new_rebuild(&key), "rebuild 4 declared")
        .unwrap();
    let new_op = t.operation.unwrap();
    let stopped = wait_done(&driver, &env, Duration::from_secs(5)).await;
    eprintln!("the superseded task stopped after {stopped:?}");

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(record.state, HostState::PxeReady);
    assert_eq!(record.operation, Some(new_op));
    assert!(record.last_error.is_none());
    assert_eq!(
        env.store
            .operation(env.op)
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("superseded")
    );
    let history = env.store.history(NAME).unwrap();
    assert!(
        history.iter().all(|t| t.event != EventKind::Fail),
        "{history:#?}"
    );
    assert!(
        env.store
            .notes(NAME)
            .unwrap()
            .iter()
            .all(|n| n.operation != Some(new_op))
    );
    // The new rebuild's key is untouched.
    assert!(env.store.private_key(new_op).unwrap().is_some());
    // A pass in pxe_ready starts nothing.
    env.ensure(&driver);
    assert!(!driver.is_running(NAME));
    env.assert_no_secrets(&[key.private_openssh().expose()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_joining_with_the_key_resumes_without_a_second_pvecm_add() {
    let mut env = Env::first_boot();
    env.sshd.start_sshd();
    // A previous daemon run entered joining and pvecm add completed on the
    // host, then the daemon stopped before anything else was recorded.
    env.store
        .apply(NAME, env.op, EventKind::JoinStarted, "joining the cluster")
        .unwrap();
    run_pvecm_locally(&env);
    assert_eq!(env.pvecm_runs(), 1);

    let server = infra_server(409, 1).await;
    let driver = env.driver(Some(infra_client(&server)), PASSWORD);
    env.ensure(&driver);
    wait_done(&driver, &env, Duration::from_secs(60)).await;

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(record.state, HostState::Ready, "{:?}", record.last_error);
    assert_eq!(env.pvecm_runs(), 1, "pvecm add must not run twice");
    let joined = env.notes(note::JOINED);
    assert_eq!(joined.len(), 1);
    assert!(
        joined[0]
            .message
            .starts_with("already joined (host key SHA256:")
    );
    assert!(env.notes(note::JOIN_OUTPUT).is_empty());
    let resumed: Vec<_> = env
        .store
        .history(NAME)
        .unwrap()
        .into_iter()
        .filter(|t| t.event == EventKind::JoinStarted)
        .map(|t| (t.from, t.cause))
        .collect();
    assert_eq!(
        resumed,
        vec![
            (HostState::FirstBoot, "joining the cluster".to_string()),
            (
                HostState::Joining,
                "resuming the join after a restart".to_string()
            ),
        ]
    );
    assert_eq!(
        env.notes(note::REGISTRATION)[0].message,
        "already registered with infrastructure (HTTP 409)"
    );
    let keys = fs::read_to_string(env.sshd.root().join("etc/pve/priv/authorized_keys")).unwrap();
    assert!(!keys.contains(&env.sshd.key_blob()));
    assert!(env.store.private_key(env.op).unwrap().is_none());
    server.verify().await;
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_joining_after_the_key_was_deleted_only_registers() {
    // No sshd at all: nothing may try to log in.
    let env = Env::first_boot();
    env.store
        .apply(NAME, env.op, EventKind::JoinStarted, "joining the cluster")
        .unwrap();
    env.store
        .add_note(
            NAME,
            Some(env.op),
            note::JOINED,
            "joined (host key SHA256:x)",
        )
        .unwrap();
    env.store.delete_private_key(env.op).unwrap();
    let driver = env.driver(None, PASSWORD);
    env.ensure(&driver);
    wait_done(&driver, &env, Duration::from_secs(10)).await;

    let record = env.store.host(NAME).unwrap().unwrap();
    assert_eq!(record.state, HostState::Ready, "{:?}", record.last_error);
    assert!(env.notes(note::JOIN_ATTEMPT).is_empty());
    assert_eq!(
        env.notes(note::REGISTRATION)
            .iter()
            .map(|n| n.message.as_str())
            .collect::<Vec<_>>(),
        vec!["registration skipped: infrastructure.base_url is empty"]
    );
    let causes: BTreeSet<String> = env
        .store
        .history(NAME)
        .unwrap()
        .into_iter()
        .map(|t| t.cause)
        .collect();
    assert!(causes.contains("resuming after a restart: joined already, registering"));
    assert!(causes.contains("joined; registration skipped"));
    env.assert_no_secrets(&[]);
}

/// Runs the stand-in pvecm in the sshd's tree the way a completed earlier
/// join would have (password on stdin).
fn run_pvecm_locally(env: &Env) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env.sshd.root().join("bin/pvecm"))
        .args(["add", NODE, "--fingerprint", &fingerprint()])
        .env("PVECM_ROOT", env.sshd.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
}

/// A settings reload (`JoinDriver::reconfigure`) applies to joins started
/// afterwards: a driver started without Infrastructure, reconfigured with
/// it, registers the host it then joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_started_after_a_reload_use_the_new_settings() {
    let mut env = Env::first_boot();
    env.sshd.start_sshd();
    let server = infra_server(201, 1).await;
    let driver = env.driver(None, "not-the-password");
    driver.reconfigure(env.context(Some(infra_client(&server)), PASSWORD));

    env.ensure(&driver);
    wait_done(&driver, &env, Duration::from_secs(60)).await;
    assert_eq!(
        env.state(),
        HostState::Ready,
        "{:#?}",
        env.store.notes(NAME).unwrap()
    );
    assert_eq!(env.pvecm_runs(), 1);
    // infra_server(201, 1) verifies exactly one registration when dropped.
    drop(server);
}
