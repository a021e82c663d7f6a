//! Shared fixtures of the dashboard, status and metrics tests: a synthetic
//! snapshot, an in-memory store with a settable clock, and the app router
//! over both.
#![allow(dead_code)]

use provisioning::decl::{Diagnostic, DiskSpec, Host, HostName, Severity, Snapshot, SourceLoc};
use provisioning::mac::MacAddr;
use provisioning::metrics::Metrics;
use provisioning::server::AppState;
use provisioning::settings::Settings;
use provisioning::state::EventKind;
use provisioning::store::{NewRebuild, OperationUpdate, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{Notify, watch};

/// 2026-11-25T10:00:00Z
pub const T0: i64 = 1_795_600_800_000;
pub const MIN: i64 = 60_000;

/// Strings that must never appear in a page, an API answer or an event.
pub const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQSECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n";
pub const PRIVATE_KEY_MARKER: &str = "SECRETKEYMATERIAL";
pub const TOKEN_HASH: [u8; 32] = [0xab; 32];

/// A real ed25519 public key line (from `ssh-keygen`), used as a pinned
/// host key.
pub const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtWWA8IIvT1cfTLXXs8Hq0Bwpnzv60eVb7QrlP1DL9n root@pve-01";

pub fn host(
    name: &str,
    mac: &str,
    server_type: &str,
    rebuild: u64,
    file: &str,
    line: usize,
) -> Host {
    Host {
        name: HostName::parse(name).unwrap(),
        mac: mac.parse::<MacAddr>().unwrap(),
        server_type: server_type.to_string(),
        rebuild,
        network: None,
        disk: DiskSpec::default(),
        wake_on_lan: name.ends_with('1'),
        source: SourceLoc {
            file: PathBuf::from(file),
            line,
            column: 1,
        },
    }
}

pub fn snapshot(hosts: Vec<Host>, diagnostics: Vec<Diagnostic>) -> Snapshot {
    let mut s = Snapshot::default();
    for h in hosts {
        s.by_mac.insert(h.mac, h.name.clone());
        s.hosts.insert(h.name.clone(), Arc::new(h));
    }
    s.diagnostics = diagnostics;
    s
}

pub fn diagnostic(file: &str, line: usize, column: usize, message: &str) -> Diagnostic {
    Diagnostic {
        file: PathBuf::from(file),
        line,
        column,
        severity: Severity::Error,
        message: message.to_string(),
        snippet: None,
    }
}

pub struct Fixture {
    pub store: Arc<Store>,
    pub clock: Arc<AtomicI64>,
    pub snapshot_tx: watch::Sender<Arc<Snapshot>>,
    pub settings_tx: watch::Sender<Arc<Settings>>,
    pub metrics: Arc<Metrics>,
    pub stopping_tx: watch::Sender<bool>,
    pub state: AppState,
}

impl Fixture {
    /// An in-memory store at `T0` with a row for every declared host.
    pub fn new(snap: Snapshot) -> Fixture {
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let store = Arc::new(
            Store::open_in_memory()
                .unwrap()
                .with_clock(Arc::new(move || c.load(Ordering::SeqCst))),
        );
        for h in snap.hosts.values() {
            store
                .ensure_host(h.name.as_str(), &h.mac.to_string())
                .unwrap();
        }
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(snap));
        let defaults = Settings::embedded_default().unwrap();
        let boot = provisioning::daemon::boot_context(&defaults).unwrap();
        let (settings_tx, settings) = watch::channel(Arc::new(defaults));
        let (stopping_tx, stopping) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let state = AppState {
            store: store.clone(),
            snapshot,
            settings,
            kick: Arc::new(Notify::new()),
            boot: Arc::new(boot),
            stopping,
            dnsmasq: None,
            metrics: metrics.clone(),
        };
        Fixture {
            store,
            clock,
            snapshot_tx,
            settings_tx,
            metrics,
            stopping_tx,
            state,
        }
    }

    pub fn set_time(&self, ms: i64) {
        self.clock.store(ms, Ordering::SeqCst);
    }

    pub fn router(&self) -> axum::Router {
        provisioning::server::app(self.state.clone())
    }

    /// Starts rebuild `generation` with secrets that must never be shown.
    pub fn start(&self, name: &str, generation: u64) -> i64 {
        self.store
            .start_rebuild(
                name,
                generation,
                NewRebuild {
                    token_hash: TOKEN_HASH,
                    public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeralPublicKeyOnlyXXXXXXXXXXXXXXXXXXX provisioning".into(),
                    private_key: PRIVATE_KEY.into(),
                },
                &format!("rebuild {generation} requested"),
            )
            .unwrap()
            .operation
            .unwrap()
    }

    pub fn apply(&self, name: &str, op: i64, event: EventKind, cause: &str) {
        self.store.apply(name, op, event, cause).unwrap();
    }

    /// Walks a host through a whole successful rebuild, one minute apart,
    /// with the pinned host key and a join-output note.
    pub fn full_rebuild(&self, name: &str, generation: u64, start_ms: i64) -> i64 {
        self.set_time(start_ms);
        let op = self.start(name, generation);
        self.set_time(start_ms + MIN);
        self.apply(name, op, EventKind::IpxeServed, "installer script served");
        self.set_time(start_ms + 3 * MIN);
        self.apply(name, op, EventKind::AnswerServed, "answer file served");
        self.set_time(start_ms + 15 * MIN);
        self.store
            .apply_with(
                name,
                op,
                EventKind::InstallReported,
                "post-installation webhook",
                OperationUpdate {
                    ssh_host_keys: Some(serde_json::json!({ "ed25519": HOST_KEY })),
                    ..OperationUpdate::default()
                },
            )
            .unwrap();
        self.set_time(start_ms + 18 * MIN);
        self.apply(
            name,
            op,
            EventKind::PhoneHome,
            "phoned home from 192.0.2.11",
        );
        self.set_time(start_ms + 18 * MIN + 5_000);
        self.apply(name, op, EventKind::JoinStarted, "ssh root@192.0.2.11");
        self.set_time(start_ms + 19 * MIN);
        self.store
            .add_note(
                name,
                Some(op),
                "join-output",
                "Please enter superuser (root) password for 'pve-00': ********\nEstablishing API connection with host '192.0.2.10'\nLogin succeeded.\nRequest addition of this node\nJoin request OK, finishing setup locally\nsuccessfully added node 'pve-01' to cluster.",
            )
            .unwrap();
        self.set_time(start_ms + 20 * MIN);
        self.apply(
            name,
            op,
            EventKind::Completed,
            "joined, key removed, registered",
        );
        op
    }
}

/// GETs `path` from the router; returns status, headers and body.
pub async fn get(
    router: &axum::Router,
    path: &str,
) -> (axum::http::StatusCode, axum::http::HeaderMap, String) {
    use tower::ServiceExt;
    let resp = router
        .clone()
        .oneshot(
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The standard fleet: five hosts in different states, a declaration
/// error, an unknown machine.
pub fn fleet() -> Fixture {
    let snap = snapshot(
        vec![
            host(
                "pve-01",
                "52:54:00:00:00:01",
                "ms-01",
                1,
                "hosts.d/rack1.kdl",
                1,
            ),
            host(
                "pve-02",
                "52:54:00:00:00:02",
                "ms-01",
                2,
                "hosts.d/rack1.kdl",
                7,
            ),
            host(
                "pve-03",
                "52:54:00:00:00:03",
                "r640",
                1,
                "hosts.d/rack2.kdl",
                1,
            ),
            host(
                "pve-04",
                "52:54:00:00:00:04",
                "r640",
                0,
                "hosts.d/rack2.kdl",
                8,
            ),
            host(
                "pve-05",
                "52:54:00:00:00:05",
                "r640",
                3,
                "hosts.d/rack2.kdl",
                14,
            ),
        ],
        vec![diagnostic(
            "hosts.d/rack2.kdl",
            16,
            5,
            "unknown property \"disk-size\" (did you mean \"disk\"?)",
        )],
    );
    let f = Fixture::new(snap);
    // pve-01: a whole rebuild, done.
    f.full_rebuild("pve-01", 1, T0 - 3 * 60 * MIN);
    // pve-02: rebuild 1 failed, rebuild 2 is installing.
    f.set_time(T0 - 2 * 60 * MIN);
    let op = f.start("pve-02", 1);
    f.set_time(T0 - 90 * MIN);
    f.apply(
        "pve-02",
        op,
        EventKind::Fail,
        "deadline missed: no iPXE request within 30m",
    );
    f.set_time(T0 - 20 * MIN);
    let op = f.start("pve-02", 2);
    f.store
        .add_note(
            "pve-02",
            Some(op),
            "wake-on-lan",
            "magic packet sent to 52:54:00:00:00:02",
        )
        .unwrap();
    f.set_time(T0 - 18 * MIN);
    f.apply(
        "pve-02",
        op,
        EventKind::IpxeServed,
        "installer script served",
    );
    f.set_time(T0 - 12 * MIN);
    f.apply("pve-02", op, EventKind::AnswerServed, "answer file served");
    // pve-03: failed in pxe_booted.
    f.set_time(T0 - 50 * MIN);
    let op = f.start("pve-03", 1);
    f.set_time(T0 - 45 * MIN);
    f.apply(
        "pve-03",
        op,
        EventKind::IpxeServed,
        "installer script served",
    );
    f.set_time(T0 - 5 * MIN);
    f.apply(
        "pve-03",
        op,
        EventKind::Fail,
        "deadline missed: no answer-file request within 30m after pxe_booted <script>alert(1)</script>",
    );
    // pve-05: rebuild 2 done, rebuild 3 declared but not yet acted on;
    // pve-04 stays registered.
    f.full_rebuild("pve-05", 2, T0 - 26 * 60 * MIN);
    f.store.record_unknown_mac("52:54:00:12:34:ab").unwrap();
    f.set_time(T0);
    f
}
