//! The store: observed state of every host, rebuild operations, the
//! transition history and per-rebuild secrets, in SQLite (WAL mode).
//!
//! Every change of a host's state goes through [`Store::apply`] (or the
//! helpers built on it), which consults [`crate::state::next`] inside one
//! transaction and, after commit, publishes a [`StoreEvent`] to subscribers
//! (SSE, metrics). Nothing else writes the `hosts.state` column.
//!
//! Host rows are read from an in-memory copy of the `hosts` table
//! ([`cache`]) that SQLite's update hook keeps equal to the table after
//! every write, so the boot path and the reconciler do not wait for the
//! connection. The cache is never changed by hand, and the table is written
//! only through this store's connection.
//!
//! Secrets: the private key and the token hash are readable through
//! dedicated methods only; no record type that is serialized for the API
//! carries them. Ending an operation, whichever way, deletes its private key
//! in the same transaction, and an ended operation's token hash is no longer
//! handed out. The store never decides *whether* something should happen
//! (that is the reconciler's and the handlers' job); it refuses only what
//! the state machine or the current operation rule forbids.
//!
//! Time: methods without a timestamp use the store's clock (the system
//! clock unless [`Store::with_clock`] injected another); the `*_at` variants
//! take the time explicitly so a caller holding one `now` for a whole pass
//! (the reconciler) stays consistent.

mod cache;
mod schema;
#[cfg(test)]
mod tests;

use crate::state::{EventKind, HostState};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// File name of the database inside the state directory.
pub const DB_FILE_NAME: &str = "provisioning.sqlite3";

/// How many events a slow subscriber may lag behind before it misses some
/// (it then sees `RecvError::Lagged` and should re-read the store).
pub const EVENT_CAPACITY: usize = 4096;

/// How many undeclared MACs are remembered; the least recently seen are
/// forgotten first, so a noisy LAN cannot grow the database without bound.
pub const UNKNOWN_MACHINES_CAP: i64 = 4096;

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migration(String),
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("host {host:?}: {event} is not allowed in state {state}")]
    NotAllowed {
        host: String,
        state: HostState,
        event: &'static str,
    },
    #[error("host {host:?}: operation {operation} is not the current one")]
    StaleOperation { host: String, operation: i64 },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("unknown operation {0}")]
    UnknownOperation(i64),
    #[error(
        "host {host:?}: rebuild {generation} is not newer than the last one acted on ({observed})"
    )]
    StaleGeneration {
        host: String,
        generation: u64,
        observed: u64,
    },
    #[error("{what} {value} is too large to store")]
    TooLarge { what: &'static str, value: u64 },
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Errors that mean "someone else changed the host first": the caller's
    /// view was out of date, nothing was changed, and re-reading the store
    /// is the right reaction (not a retry of the same call).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::NotAllowed { .. }
                | StoreError::StaleOperation { .. }
                | StoreError::StaleGeneration { .. }
        )
    }
}

/// Observed state of one declared host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostRecord {
    pub name: String,
    pub mac: String,
    pub state: HostState,
    /// The last `rebuild` number acted on (0: none).
    pub observed_generation: u64,
    /// When the current state was entered (ms since the Unix epoch).
    pub since_ms: i64,
    /// The open operation, if a rebuild is active.
    pub operation: Option<i64>,
    pub last_error: Option<String>,
    pub retired: bool,
}

/// One rebuild of one host. No secrets in here.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperationRecord {
    pub id: i64,
    pub host: String,
    pub generation: u64,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// `ready`, `failed`, `superseded` or `cancelled` once ended.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// The ephemeral public key (OpenSSH `authorized_keys` line).
    pub public_key: String,
    pub dmi_uuid: Option<String>,
    pub answer_served_ms: Option<i64>,
    pub machine_id: Option<String>,
    pub mgmt_address: Option<String>,
    /// Pinned SSH host keys from the install webhook (`{"ed25519": "ssh-ed25519 AAAA…", …}`).
    pub ssh_host_keys: Option<serde_json::Value>,
    pub phone_home_ip: Option<String>,
    pub hardware_id: Option<String>,
    pub has_private_key: bool,
}

/// One recorded transition (the history; the SSE stream carries these).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransitionRecord {
    pub id: i64,
    pub host: String,
    pub operation: Option<i64>,
    pub at_ms: i64,
    pub from: HostState,
    pub to: HostState,
    pub event: EventKind,
    pub cause: String,
}

/// A history entry that is not a transition: a Wake-on-LAN packet sent, an
/// Infrastructure attempt, the (redacted) output of the join command.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NoteRecord {
    pub id: i64,
    pub host: String,
    pub operation: Option<i64>,
    pub at_ms: i64,
    pub kind: String,
    pub message: String,
}

/// A machine that PXE-booted without being declared (discovery).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnknownMachine {
    pub mac: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: u64,
}

/// A rebuild in progress, with what a deadline check needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenOperation {
    pub host: String,
    pub operation: i64,
    pub generation: u64,
    pub state: HostState,
    /// When the host entered `state` (ms since the Unix epoch).
    pub since_ms: i64,
}

/// What the store tells its subscribers after each commit.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StoreEvent {
    Transition(TransitionRecord),
    Note(NoteRecord),
}

/// Secrets of a new rebuild, generated by the caller.
pub struct NewRebuild {
    /// SHA-256 of the per-rebuild token (the token itself is never stored).
    pub token_hash: [u8; 32],
    pub public_key: String,
    /// OpenSSH PEM private key.
    pub private_key: String,
}

impl fmt::Debug for NewRebuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRebuild")
            .field("token_hash", &"<redacted>")
            .field("public_key", &self.public_key)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Facts learned during a rebuild; `None` fields are left unchanged.
#[derive(Clone, Debug, Default)]
pub struct OperationUpdate {
    pub dmi_uuid: Option<String>,
    pub machine_id: Option<String>,
    pub mgmt_address: Option<String>,
    pub ssh_host_keys: Option<serde_json::Value>,
    pub phone_home_ip: Option<String>,
    pub hardware_id: Option<String>,
    /// SHA-256 of the callback token, set when the answer is served (the
    /// token itself only ever exists in the answer sent to the installer).
    pub token_hash: Option<[u8; 32]>,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Milliseconds since the Unix epoch; injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in ms since the Unix epoch (0 if the clock is before 1970).
pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Every `hosts` row, kept equal to the table by [`Store::write`].
    hosts: cache::HostCache,
    events: broadcast::Sender<StoreEvent>,
    clock: Clock,
    path: Option<PathBuf>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// How an operation ended (the `outcome` column).
#[derive(Clone, Copy)]
enum Outcome {
    Ready,
    Failed,
    Superseded,
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ready => "ready",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
            Outcome::Cancelled => "cancelled",
        }
    }
}

const ALL_EVENTS: [EventKind; 8] = [
    EventKind::StartRebuild,
    EventKind::IpxeServed,
    EventKind::AnswerServed,
    EventKind::InstallReported,
    EventKind::PhoneHome,
    EventKind::JoinStarted,
    EventKind::Completed,
    EventKind::Fail,
];

fn parse_event(s: &str) -> Result<EventKind> {
    ALL_EVENTS
        .into_iter()
        .find(|e| e.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown event {s:?}")))
}

/// Counters and generations are `u64` in Rust and `INTEGER` (i64) in SQLite.
fn to_sql_u64(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::TooLarge { what, value })
}

fn from_sql_u64(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

fn parse_state(s: &str) -> Result<HostState> {
    s.parse()
        .map_err(|e: crate::state::UnknownState| StoreError::Corrupt(e.to_string()))
}

const HOST_COLUMNS: &str =
    "name, mac, state, observed_generation, since_ms, operation_id, last_error, retired_at";

/// Rows are read into plain tuples first (rusqlite's closures can only
/// return `rusqlite::Error`), then validated into records.
type HostRow = (
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

fn host_row(r: &Row<'_>) -> rusqlite::Result<HostRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn host_record(row: HostRow) -> Result<HostRecord> {
    let (name, mac, state, observed_generation, since_ms, operation, last_error, retired_at) = row;
    Ok(HostRecord {
        observed_generation: from_sql_u64("observed generation", observed_generation)?,
        name,
        mac,
        state: parse_state(&state)?,
        since_ms,
        operation,
        last_error,
        retired: retired_at.is_some(),
    })
}

const OPERATION_COLUMNS: &str = "id, host, generation, started_ms, ended_ms, outcome, reason, \
     public_key, dmi_uuid, answer_served_ms, machine_id, mgmt_address, ssh_host_keys, \
     phone_home_ip, hardware_id, private_key IS NOT NULL";

/// An operation as read: the record, its raw generation and host keys JSON.
type OperationRow = (OperationRecord, i64, Option<String>);

fn operation_row(r: &Row<'_>) -> rusqlite::Result<OperationRow> {
    Ok((
        OperationRecord {
            id: r.get(0)?,
            host: r.get(1)?,
            generation: 0,
            started_ms: r.get(3)?,
            ended_ms: r.get(4)?,
            outcome: r.get(5)?,
            reason: r.get(6)?,
            public_key: r.get(7)?,
            dmi_uuid: r.get(8)?,
            answer_served_ms: r.get(9)?,
            machine_id: r.get(10)?,
            mgmt_address: r.get(11)?,
            ssh_host_keys: None,
            phone_home_ip: r.get(13)?,
            hardware_id: r.get(14)?,
            has_private_key: r.get(15)?,
        },
        r.get(2)?,
        r.get(12)?,
    ))
}

fn operation_record(row: OperationRow) -> Result<OperationRecord> {
    let (mut rec, generation, keys) = row;
    rec.generation = from_sql_u64("generation", generation)?;
    if let Some(json) = keys {
        rec.ssh_host_keys = Some(serde_json::from_str(&json).map_err(|e| {
            StoreError::Corrupt(format!("operation {}: ssh_host_keys: {e}", rec.id))
        })?);
    }
    Ok(rec)
}

type TransitionRow = (
    i64,
    String,
    Option<i64>,
    i64,
    String,
    String,
    String,
    String,
);

const TRANSITION_COLUMNS: &str =
    "id, host, operation_id, at_ms, from_state, to_state, event, cause";

fn transition_row(r: &Row<'_>) -> rusqlite::Result<TransitionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn transition_record(row: TransitionRow) -> Result<TransitionRecord> {
    let (id, host, operation, at_ms, from, to, event, cause) = row;
    Ok(TransitionRecord {
        id,
        host,
        operation,
        at_ms,
        from: parse_state(&from)?,
        to: parse_state(&to)?,
        event: parse_event(&event)?,
        cause,
    })
}

fn note_row(r: &Row<'_>) -> rusqlite::Result<NoteRecord> {
    Ok(NoteRecord {
        id: r.get(0)?,
        host: r.get(1)?,
        operation: r.get(2)?,
        at_ms: r.get(3)?,
        kind: r.get(4)?,
        message: r.get(5)?,
    })
}

/// `execute` and `query_row` through the connection's statement cache: the
/// same dozen statements run for every state change, and parsing their SQL
/// each time cost about as much as running them (seen in the answer-storm
/// profile).
trait CachedStatements {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl CachedStatements for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Room for every statement the store runs (the default is 16).
const STATEMENT_CACHE: usize = 64;

fn load_host(tx: &Connection, name: &str) -> Result<Option<HostRecord>> {
    // Cached statement: every state change reads its host inside the
    // transaction (the boot path's iPXE transition on every request), and
    // parsing the SQL each time cost more than the query itself.
    let row = tx
        .prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = ?1"))?
        .query_row([name], host_row)
        .optional()?;
    row.map(host_record).transpose()
}

/// Runs `f` in one immediate transaction: committed if `f` succeeds,
/// rolled back (when the transaction is dropped) otherwise.
fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>, &mut Vec<StoreEvent>) -> Result<T>,
    events: &mut Vec<StoreEvent>,
) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx, events)?;
    tx.commit()?;
    Ok(value)
}

/// Whether this event ended a rebuild (and so deleted its private key).
fn ends_a_rebuild(ev: &StoreEvent) -> bool {
    match ev {
        StoreEvent::Transition(t) => {
            matches!(t.to, HostState::Ready | HostState::Failed)
                || (t.event == EventKind::StartRebuild && t.from.is_active())
        }
        StoreEvent::Note(_) => false,
    }
}

/// With WAL, the page that held a deleted private key stays in the WAL file
/// until a checkpoint; truncating it leaves the key in no file (the
/// database's own pages are zeroed by `secure_delete`). Best effort: a
/// failure is logged, never fatal.
fn scrub_wal(conn: &Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "cannot checkpoint the store after deleting a key");
    }
}

/// Closes an open operation; the private key goes in the same statement.
fn end_operation(
    tx: &Transaction<'_>,
    id: i64,
    outcome: Outcome,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    tx.exec(
        "UPDATE operations SET ended_ms = ?2, outcome = ?3, reason = ?4, private_key = NULL
         WHERE id = ?1 AND ended_ms IS NULL",
        params![id, now_ms, outcome.as_str(), reason],
    )?;
    Ok(())
}

/// Moves `host` to `to` and records the transition. The state-entry time
/// only moves when the state changes or a new rebuild starts, so that a
/// repeated event (a machine fetching its iPXE script in a reboot loop)
/// cannot push its deadline out forever.
fn record_transition(
    tx: &Transaction<'_>,
    host: &HostRecord,
    to: HostState,
    event: EventKind,
    operation: Option<i64>,
    cause: &str,
    now_ms: i64,
) -> Result<TransitionRecord> {
    let since = if to != host.state || event == EventKind::StartRebuild {
        now_ms
    } else {
        host.since_ms
    };
    tx.exec(
        "UPDATE hosts SET state = ?2, since_ms = ?3 WHERE name = ?1",
        params![host.name, to.as_str(), since],
    )?;
    tx.exec(
        "INSERT INTO transitions (host, operation_id, at_ms, from_state, to_state, event, cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            host.name,
            operation,
            now_ms,
            host.state.as_str(),
            to.as_str(),
            event.as_str(),
            cause
        ],
    )?;
    Ok(TransitionRecord {
        id: tx.last_insert_rowid(),
        host: host.name.clone(),
        operation,
        at_ms: now_ms,
        from: host.state,
        to,
        event,
        cause: cause.to_string(),
    })
}

fn insert_note(
    tx: &Transaction<'_>,
    host: &str,
    operation: Option<i64>,
    kind: &str,
    message: &str,
    now_ms: i64,
) -> Result<NoteRecord> {
    tx.exec(
        "INSERT INTO notes (host, operation_id, at_ms, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![host, operation, now_ms, kind, message],
    )?;
    Ok(NoteRecord {
        id: tx.last_insert_rowid(),
        host: host.to_string(),
        operation,
        at_ms: now_ms,
        kind: kind.to_string(),
        message: message.to_string(),
    })
}

fn not_allowed(host: &HostRecord, event: EventKind) -> StoreError {
    StoreError::NotAllowed {
        host: host.name.clone(),
        state: host.state,
        event: event.as_str(),
    }
}

/// Opens the state directory's database file with mode 0600, creating the
/// directory (0700) and the file if needed, before SQLite touches it: SQLite
/// gives its `-wal` and `-shm` files the database file's permissions.
fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // A file made earlier by other means (a copy, a restore) is tightened:
    // it holds private keys.
    let mode = file.metadata().map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(io)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `path`, WAL mode, runs migrations.
    pub fn open(path: &Path) -> Result<Store> {
        create_private_file(path)?;
        let conn = Connection::open(path)?;
        // `journal_mode` answers with the mode in force; WAL persists in the file.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "{}: journal mode {mode:?}, wal expected",
                path.display()
            )));
        }
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// Opens `DB_FILE_NAME` inside the state directory (created 0700 if missing).
    pub fn open_in_dir(state_dir: &Path) -> Result<Store> {
        Self::open(&state_dir.join(DB_FILE_NAME))
    }

    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Store> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted private keys must not linger in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::MIGRATIONS
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let hosts = cache::HostCache::new();
        hosts.watch(&conn)?;
        hosts.reload(&conn)?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Store {
            conn: Mutex::new(conn),
            hosts,
            events,
            clock: Arc::new(system_now_ms),
            path,
        })
    }

    /// Replaces the clock used by the methods that take no timestamp.
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// The store's notion of now (ms since the Unix epoch).
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written change:
        // the transaction rolls back when dropped, so the connection is fine.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one write transaction; publishes its events only after
    /// the commit succeeded. Whichever way the transaction ends, the host
    /// cache re-reads the rows it touched before the connection is
    /// released (a rolled-back change reads back as it was).
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Vec<StoreEvent>) -> Result<T>,
    ) -> Result<T> {
        let mut events = Vec::new();
        let value = {
            let mut conn = self.lock();
            let result = in_transaction(&mut conn, f, &mut events);
            self.hosts.sync(&conn);
            let value = result?;
            if events.iter().any(ends_a_rebuild) {
                scrub_wal(&conn);
            }
            value
        };
        for ev in events {
            // No subscriber is not an error.
            let _ = self.events.send(ev);
        }
        Ok(value)
    }

    /// Makes sure a declared host has a row (state `registered` when new);
    /// updates its MAC; un-retires it (keeping its observed generation).
    pub fn ensure_host(&self, name: &str, mac: &str) -> Result<()> {
        self.ensure_host_at(name, mac, self.now_ms())
    }

    /// [`Store::ensure_host`] at an explicit time.
    pub fn ensure_host_at(&self, name: &str, mac: &str, now_ms: i64) -> Result<()> {
        self.write(|tx, _| {
            tx.exec(
                "INSERT INTO hosts (name, mac, state, observed_generation, since_ms)
                 VALUES (?1, ?2, ?3, 0, ?4)
                 ON CONFLICT(name) DO UPDATE SET mac = excluded.mac, retired_at = NULL
                 WHERE hosts.mac IS NOT excluded.mac OR hosts.retired_at IS NOT NULL",
                params![name, mac, HostState::Registered.as_str(), now_ms],
            )?;
            Ok(())
        })
    }

    /// Reads the host cache; a stale cache (a failed refresh) is
    /// reloaded first, under the connection lock.
    fn read_hosts<R>(&self, f: impl Fn(&cache::HostTable) -> Result<R>) -> Result<R> {
        if let Some(t) = self.hosts.read() {
            return f(&t);
        }
        let conn = self.lock();
        if self.hosts.read().is_none() {
            self.hosts.reload(&conn)?;
        }
        // No write can run while the connection is held: not stale now.
        let t = self
            .hosts
            .read()
            .ok_or_else(|| StoreError::Corrupt("the host cache cannot be reloaded".to_string()))?;
        f(&t)
    }

    /// All hosts that are not retired, sorted by name.
    pub fn hosts(&self) -> Result<Vec<HostRecord>> {
        self.read_hosts(|t| {
            t.by_name
                .values()
                .filter(|e| !e.row.retired())
                .map(|e| e.row.record().cloned())
                .collect()
        })
    }

    /// Every host including retired ones, sorted by name (the reconciler
    /// needs to see retired hosts to bring a re-declared one back).
    pub fn all_hosts(&self) -> Result<Vec<HostRecord>> {
        self.read_hosts(|t| {
            t.by_name
                .values()
                .map(|e| e.row.record().cloned())
                .collect()
        })
    }

    /// One host, retired or not (see [`HostRecord::retired`]).
    pub fn host(&self, name: &str) -> Result<Option<HostRecord>> {
        self.read_hosts(|t| {
            t.by_name
                .get(name)
                .map(|e| e.row.record().cloned())
                .transpose()
        })
    }

    /// What the boot path needs of a host, retired or not: its state and
    /// open operation, copied out of the cache without cloning the record.
    pub fn host_boot_state(&self, name: &str) -> Result<Option<(HostState, Option<i64>)>> {
        self.read_hosts(|t| {
            t.by_name
                .get(name)
                .map(|e| e.row.record().map(|r| (r.state, r.operation)))
                .transpose()
        })
    }

    /// Starts rebuild `generation`: closes any open operation as
    /// `superseded`, opens a new one with the secrets, sets the observed
    /// generation and moves the host to `pxe_ready` — one transaction.
    pub fn start_rebuild(
        &self,
        name: &str,
        generation: u64,
        secrets: NewRebuild,
        cause: &str,
    ) -> Result<TransitionRecord> {
        self.start_rebuild_at(name, generation, secrets, cause, self.now_ms())
    }

    /// [`Store::start_rebuild`] at an explicit time. Refuses (changing
    /// nothing) a retired host and a generation that is not newer than the
    /// observed one: a disk is never wiped twice for one `rebuild` number.
    pub fn start_rebuild_at(
        &self,
        name: &str,
        generation: u64,
        secrets: NewRebuild,
        cause: &str,
        now_ms: i64,
    ) -> Result<TransitionRecord> {
        let generation_sql = to_sql_u64("rebuild", generation)?;
        self.write(|tx, events| {
            let host = load_host(tx, name)?
                .filter(|h| !h.retired)
                .ok_or_else(|| StoreError::UnknownHost(name.to_string()))?;
            if generation <= host.observed_generation {
                return Err(StoreError::StaleGeneration {
                    host: name.to_string(),
                    generation,
                    observed: host.observed_generation,
                });
            }
            let event = EventKind::StartRebuild;
            let to = crate::state::next(host.state, event).ok_or_else(|| not_allowed(&host, event))?;
            if let Some(old) = host.operation {
                let reason = format!("superseded by rebuild {generation}");
                end_operation(tx, old, Outcome::Superseded, Some(&reason), now_ms)?;
            }
            tx.exec(
                "INSERT INTO operations (host, generation, started_ms, token_hash, public_key, private_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    name,
                    generation_sql,
                    now_ms,
                    &secrets.token_hash[..],
                    secrets.public_key,
                    secrets.private_key
                ],
            )?;
            let op = tx.last_insert_rowid();
            tx.exec(
                "UPDATE hosts SET operation_id = ?2, observed_generation = ?3, last_error = NULL
                 WHERE name = ?1",
                params![name, op, generation_sql],
            )?;
            let t = record_transition(tx, &host, to, event, Some(op), cause, now_ms)?;
            events.push(StoreEvent::Transition(t.clone()));
            Ok(t)
        })
    }

    /// Applies `event` to the host if `operation` is its current operation
    /// and the transition table allows it. `Completed` closes the operation
    /// as `ready`; `Fail` closes it as `failed` with `cause` as the reason and
    /// sets `last_error`. Both delete the private key.
    pub fn apply(
        &self,
        name: &str,
        operation: i64,
        event: EventKind,
        cause: &str,
    ) -> Result<TransitionRecord> {
        self.apply_at(name, operation, event, cause, self.now_ms())
    }

    /// [`Store::apply`] at an explicit time. `AnswerServed` also marks the
    /// answer as served. `StartRebuild` is refused here (it needs secrets:
    /// use [`Store::start_rebuild`]).
    pub fn apply_at(
        &self,
        name: &str,
        operation: i64,
        event: EventKind,
        cause: &str,
        now_ms: i64,
    ) -> Result<TransitionRecord> {
        self.apply_with_at(name, operation, event, cause, Extra::default(), now_ms)
    }

    /// [`Store::apply`] plus facts learned with the event (the pinned SSH
    /// host keys of the install webhook, the phone-home address), written in
    /// the same transaction: either both happen or neither.
    pub fn apply_with(
        &self,
        name: &str,
        operation: i64,
        event: EventKind,
        cause: &str,
        update: OperationUpdate,
    ) -> Result<TransitionRecord> {
        let extra = Extra {
            update,
            ..Extra::default()
        };
        self.apply_with_at(name, operation, event, cause, extra, self.now_ms())
    }

    /// The answer file is being served: `AnswerServed` (allowed once per
    /// rebuild, from `pxe_ready` or `pxe_booted`) with the answer marked
    /// served, `update` recorded and the token hash replaced by the hash of
    /// the token minted for this answer, in one transaction. The token text
    /// only ever exists in the answer sent to the installer.
    pub fn serve_answer(
        &self,
        name: &str,
        operation: i64,
        token_hash: [u8; 32],
        update: OperationUpdate,
        cause: &str,
    ) -> Result<TransitionRecord> {
        let extra = Extra {
            update,
            token_hash: Some(token_hash),
            ..Extra::default()
        };
        self.apply_with_at(
            name,
            operation,
            EventKind::AnswerServed,
            cause,
            extra,
            self.now_ms(),
        )
    }

    /// Fails the host's rebuild for a missed deadline, but only if it is
    /// still in `state` under `operation`: a host that moved on since the
    /// caller looked is left alone (`Ok(None)`).
    pub fn fail_if_still(
        &self,
        name: &str,
        operation: i64,
        state: HostState,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<TransitionRecord>> {
        let extra = Extra {
            expect_state: Some(state),
            ..Extra::default()
        };
        match self.apply_with_at(name, operation, EventKind::Fail, reason, extra, now_ms) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn apply_with_at(
        &self,
        name: &str,
        operation: i64,
        event: EventKind,
        cause: &str,
        extra: Extra,
        now_ms: i64,
    ) -> Result<TransitionRecord> {
        let Extra {
            expect_state,
            update,
            token_hash,
        } = extra;
        self.write(|tx, events| {
            let host =
                load_host(tx, name)?.ok_or_else(|| StoreError::UnknownHost(name.to_string()))?;
            if host.retired || host.operation != Some(operation) {
                return Err(StoreError::StaleOperation {
                    host: name.to_string(),
                    operation,
                });
            }
            if event == EventKind::StartRebuild || expect_state.is_some_and(|s| s != host.state) {
                return Err(not_allowed(&host, event));
            }
            let to =
                crate::state::next(host.state, event).ok_or_else(|| not_allowed(&host, event))?;
            update_operation_in(tx, operation, &update)?;
            if let Some(hash) = token_hash {
                tx.exec(
                    "UPDATE operations SET token_hash = ?2 WHERE id = ?1",
                    params![operation, &hash[..]],
                )?;
            }
            match event {
                EventKind::Completed => {
                    end_operation(tx, operation, Outcome::Ready, None, now_ms)?;
                    tx.exec(
                        "UPDATE hosts SET operation_id = NULL, last_error = NULL WHERE name = ?1",
                        [name],
                    )?;
                }
                EventKind::Fail => {
                    end_operation(tx, operation, Outcome::Failed, Some(cause), now_ms)?;
                    tx.exec(
                        "UPDATE hosts SET operation_id = NULL, last_error = ?2 WHERE name = ?1",
                        params![name, cause],
                    )?;
                }
                EventKind::AnswerServed => {
                    tx.exec(
                        "UPDATE operations SET answer_served_ms = COALESCE(answer_served_ms, ?2)
                         WHERE id = ?1",
                        params![operation, now_ms],
                    )?;
                }
                _ => {}
            }
            let t = record_transition(tx, &host, to, event, Some(operation), cause, now_ms)?;
            events.push(StoreEvent::Transition(t.clone()));
            Ok(t)
        })
    }

    /// The host's declaration is gone: closes an open operation as
    /// `cancelled` (deleting its private key) and hides the host. History is
    /// kept.
    pub fn retire(&self, name: &str, cause: &str) -> Result<()> {
        self.retire_at(name, cause, self.now_ms()).map(|_| ())
    }

    /// [`Store::retire`] at an explicit time. A host retired mid-rebuild
    /// goes to `failed` through the state machine (so it is disarmed, and if
    /// it is declared again it stays failed until `rebuild` is raised);
    /// that transition is returned. Retiring a retired host does nothing.
    pub fn retire_at(
        &self,
        name: &str,
        cause: &str,
        now_ms: i64,
    ) -> Result<Option<TransitionRecord>> {
        self.write(|tx, events| {
            let host =
                load_host(tx, name)?.ok_or_else(|| StoreError::UnknownHost(name.to_string()))?;
            if host.retired {
                return Ok(None);
            }
            let mut transition = None;
            if let Some(op) = host.operation {
                let to = crate::state::next(host.state, EventKind::Fail)
                    .ok_or_else(|| not_allowed(&host, EventKind::Fail))?;
                end_operation(tx, op, Outcome::Cancelled, Some(cause), now_ms)?;
                tx.exec(
                    "UPDATE hosts SET operation_id = NULL, last_error = ?2 WHERE name = ?1",
                    params![name, cause],
                )?;
                let t = record_transition(tx, &host, to, EventKind::Fail, Some(op), cause, now_ms)?;
                events.push(StoreEvent::Transition(t.clone()));
                transition = Some(t);
            }
            tx.exec(
                "UPDATE hosts SET retired_at = ?2 WHERE name = ?1",
                params![name, now_ms],
            )?;
            Ok(transition)
        })
    }

    pub fn operation(&self, id: i64) -> Result<Option<OperationRecord>> {
        let conn = self.lock();
        let row = conn
            .row(
                &format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = ?1"),
                [id],
                operation_row,
            )
            .optional()?;
        row.map(operation_record).transpose()
    }

    /// Newest first.
    pub fn operations(&self, host: &str) -> Result<Vec<OperationRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE host = ?1 ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map([host], operation_row)?;
        rows.map(|r| operation_record(r?)).collect()
    }

    /// Every open operation of a host that is not retired, sorted by host
    /// name, with the time its host entered its current state (for
    /// deadline checks).
    pub fn open_operations(&self) -> Result<Vec<OpenOperation>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT h.name, o.id, o.generation, h.state, h.since_ms
             FROM hosts h JOIN operations o ON o.id = h.operation_id
             WHERE h.operation_id IS NOT NULL AND h.retired_at IS NULL
             ORDER BY h.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (host, operation, generation, state, since_ms) = r?;
            Ok(OpenOperation {
                host,
                operation,
                generation: from_sql_u64("generation", generation)?,
                state: parse_state(&state)?,
                since_ms,
            })
        })
        .collect()
    }

    /// Number of hosts (not retired) per state; states without hosts are absent.
    pub fn stats(&self) -> Result<BTreeMap<HostState, u64>> {
        self.read_hosts(|t| {
            let mut counts = BTreeMap::new();
            for e in t.by_name.values().filter(|e| !e.row.retired()) {
                *counts.entry(e.row.state()?).or_insert(0) += 1;
            }
            Ok(counts)
        })
    }

    /// Records facts about an open operation. Refuses an ended one
    /// (`StaleOperation`): nothing is learned about a dead rebuild.
    pub fn update_operation(&self, id: i64, update: OperationUpdate) -> Result<()> {
        self.write(|tx, _| update_operation_in(tx, id, &update))
    }

    /// Marks the answer as served (at most once: returns false if it was already).
    /// An ended operation is refused (`StaleOperation`).
    pub fn mark_answer_served(&self, id: i64) -> Result<bool> {
        let now = self.now_ms();
        self.write(|tx, _| {
            check_open(tx, id)?;
            let n = tx.exec(
                "UPDATE operations SET answer_served_ms = ?2 WHERE id = ?1 AND answer_served_ms IS NULL",
                params![id, now],
            )?;
            Ok(n == 1)
        })
    }

    /// Oldest first.
    pub fn history(&self, host: &str) -> Result<Vec<TransitionRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE host = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([host], transition_row)?;
        rows.map(|r| transition_record(r?)).collect()
    }

    pub fn add_note(
        &self,
        host: &str,
        operation: Option<i64>,
        kind: &str,
        message: &str,
    ) -> Result<NoteRecord> {
        let now = self.now_ms();
        self.write(|tx, events| {
            if load_host(tx, host)?.is_none() {
                return Err(StoreError::UnknownHost(host.to_string()));
            }
            let n = insert_note(tx, host, operation, kind, message, now)?;
            events.push(StoreEvent::Note(n.clone()));
            Ok(n)
        })
    }

    /// Oldest first.
    pub fn notes(&self, host: &str) -> Result<Vec<NoteRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, host, operation_id, at_ms, kind, message FROM notes
             WHERE host = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([host], note_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The token hash of an open operation; `None` once it ended (tokens
    /// are dead when their rebuild ends) or if it does not exist.
    pub fn token_hash(&self, operation: i64) -> Result<Option<[u8; 32]>> {
        let conn = self.lock();
        let blob: Option<Vec<u8>> = conn
            .row(
                "SELECT token_hash FROM operations WHERE id = ?1 AND ended_ms IS NULL",
                [operation],
                |r| r.get(0),
            )
            .optional()?;
        blob.map(|b| {
            <[u8; 32]>::try_from(b.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("operation {operation}: token hash")))
        })
        .transpose()
    }

    pub fn private_key(&self, operation: i64) -> Result<Option<String>> {
        let conn = self.lock();
        let key: Option<Option<String>> = conn
            .row(
                "SELECT private_key FROM operations WHERE id = ?1",
                [operation],
                |r| r.get(0),
            )
            .optional()?;
        Ok(key.flatten())
    }

    pub fn delete_private_key(&self, operation: i64) -> Result<()> {
        self.write(|tx, _| {
            tx.exec(
                "UPDATE operations SET private_key = NULL WHERE id = ?1",
                [operation],
            )?;
            Ok(())
        })?;
        scrub_wal(&self.lock());
        Ok(())
    }

    pub fn record_unknown_mac(&self, mac: &str) -> Result<()> {
        let now = self.now_ms();
        self.write(|tx, _| {
            tx.exec(
                "INSERT INTO unknown_machines (mac, first_seen_ms, last_seen_ms, count)
                 VALUES (?1, ?2, ?2, 1)
                 ON CONFLICT(mac) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                                                count = count + 1",
                params![mac, now],
            )?;
            tx.exec(
                "DELETE FROM unknown_machines WHERE mac IN (
                     SELECT mac FROM unknown_machines ORDER BY last_seen_ms, mac
                     LIMIT max(0, (SELECT count(*) FROM unknown_machines) - ?1))",
                [UNKNOWN_MACHINES_CAP],
            )?;
            Ok(())
        })
    }

    /// Most recently seen first.
    pub fn unknown_machines(&self) -> Result<Vec<UnknownMachine>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT mac, first_seen_ms, last_seen_ms, count FROM unknown_machines
             ORDER BY last_seen_ms DESC, mac",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                UnknownMachine {
                    mac: r.get(0)?,
                    first_seen_ms: r.get(1)?,
                    last_seen_ms: r.get(2)?,
                    count: 0,
                },
                r.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|r| {
            let (mut m, count) = r?;
            m.count = from_sql_u64("count", count)?;
            Ok(m)
        })
        .collect()
    }
}

/// What a transition may carry besides the event.
#[derive(Default)]
struct Extra {
    /// Refuse (as not allowed) unless the host is in this state.
    expect_state: Option<HostState>,
    update: OperationUpdate,
    /// Replace the operation's token hash (the answer's freshly minted token).
    token_hash: Option<[u8; 32]>,
}

/// Fails unless operation `id` exists and is open.
fn check_open(tx: &Transaction<'_>, id: i64) -> Result<()> {
    let row: Option<(String, Option<i64>)> = tx
        .row(
            "SELECT host, ended_ms FROM operations WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Err(StoreError::UnknownOperation(id)),
        Some((host, Some(_))) => Err(StoreError::StaleOperation {
            host,
            operation: id,
        }),
        Some((_, None)) => Ok(()),
    }
}

fn update_operation_in(tx: &Transaction<'_>, id: i64, u: &OperationUpdate) -> Result<()> {
    check_open(tx, id)?;
    let keys = u
        .ssh_host_keys
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("ssh host keys: {e}")))?;
    tx.exec(
        "UPDATE operations SET
             dmi_uuid = COALESCE(?2, dmi_uuid),
             machine_id = COALESCE(?3, machine_id),
             mgmt_address = COALESCE(?4, mgmt_address),
             ssh_host_keys = COALESCE(?5, ssh_host_keys),
             phone_home_ip = COALESCE(?6, phone_home_ip),
             hardware_id = COALESCE(?7, hardware_id),
             token_hash = COALESCE(?8, token_hash)
         WHERE id = ?1",
        params![
            id,
            u.dmi_uuid,
            u.machine_id,
            u.mgmt_address,
            keys,
            u.phone_home_ip,
            u.hardware_id,
            u.token_hash.map(|h| h.to_vec())
        ],
    )?;
    Ok(())
}
