//! The join driver: one tokio task per host that takes it from `first_boot`
//! to `ready` (or `failed`) through the store — log in with the rebuild's
//! ephemeral key and join the cluster ([`crate::join::ssh`]), delete the
//! private key, register with Infrastructure ([`crate::join::infra`]), and
//! record every attempt and the redacted command output as notes in the
//! host's history.
//!
//! It owns the order of those steps and how each outcome becomes a state
//! change. It never holds the store's lock across an await (every store call
//! is a short synchronous call), never panics, never lets a secret (the join
//! password, the private key, the bearer token) reach a note, a log line or
//! a failure reason, and never undoes a join: a registration that fails
//! after a successful join fails the rebuild as "joined, not registered".
//!
//! Every state change is guarded by the operation id: when a raised
//! `rebuild` supersedes the operation (or anything else moves the host out
//! of the join, such as the reconciler's deadline), the store answers
//! `StaleOperation`/`NotAllowed` and the task stops quietly. A watcher also
//! polls the store while SSH or HTTP work is in flight and drops that work
//! as soon as the host left this operation's join (a superseded machine is
//! reinstalled anyway).
//!
//! Restarts: [`JoinDriver::ensure_running`] resumes a host found in
//! `joining`. A `joined` note recorded for the operation, or a private key
//! already gone, means the SSH part is done, so the task goes straight to
//! registration (running the join again could not even log in: the key was
//! removed from the host). Otherwise the join runs again; the member check
//! on the host keeps `pvecm add` from running twice.
//!
//! Registration fields: `hostname` is the declared host name as it is (a
//! DNS label, not an FQDN), `management_ip` the address the host reported at
//! phone-home, `mac` the declared MAC, `hardware_id` the hardware id from
//! phone-home (falling back to the DMI UUID from the installer), and
//! `server_type_id` the `infrastructure.server_type_map` entry for the
//! host's server type — sent as a JSON number when it is all digits, as a
//! string otherwise; a server type without an entry sends its key (noted).
//!
//! Deadline: the time the host entered `joining` plus `deadlines.joining`
//! (the store keeps the entry time when a restart re-applies `JoinStarted`),
//! shared by the SSH join and the registration.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::decl::Host;
use crate::join::infra::{InfraClient, Registered, Registration, ServerTypeId};
use crate::join::retry::{Attempt, AttemptOutcome, Backoff, GiveUpReason};
use crate::join::ssh::{CommandOutput, JoinError, JoinParams, JoinReport, join_with_retry, redact};
use crate::secrets::{EphemeralKey, SecretString};
use crate::settings::Settings;
use crate::state::{EventKind, HostState};
use crate::store::{HostRecord, OperationRecord, Store, StoreError};

/// Note kinds this module writes.
pub mod note {
    /// One SSH join attempt (outcome, duration, redacted error).
    pub const JOIN_ATTEMPT: &str = "join-attempt";
    /// `pvecm add`'s redacted command line, exit status and output.
    pub const JOIN_OUTPUT: &str = "join-output";
    /// "joined" or "already joined", with the host key fingerprint. Its
    /// presence for an operation means the SSH part is done.
    pub const JOINED: &str = "joined";
    /// The key removal script's output.
    pub const KEY_REMOVAL: &str = "key-removal";
    /// One Infrastructure registration attempt.
    pub const INFRA_ATTEMPT: &str = "infra-attempt";
    /// Registration outcome, a skipped registration, a missing mapping.
    pub const REGISTRATION: &str = "registration";
}

/// How often in-flight work checks whether the host is still in this
/// operation's join.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// How much of each output stream a `join-output` note keeps (the tail).
const NOTE_OUTPUT_CHARS: usize = 16 * 1024;

/// Everything the driver needs from the daemon.
pub struct JoinContext {
    pub store: Arc<Store>,
    pub settings: Arc<Settings>,
    /// The existing node's root password (`proxmox.join_password_file`).
    pub join_password: Option<SecretString>,
    /// `None` when `infrastructure.base_url` is empty: registration is
    /// skipped (logged once, noted per rebuild).
    pub infra: Option<InfraClient>,
    /// `infrastructure.server_type_map`.
    pub server_type_map: BTreeMap<String, String>,
    /// Notified whenever a join task ends, so the reconciler looks again.
    pub kick: Arc<Notify>,
    /// Backoff between SSH join attempts.
    pub ssh_backoff: Backoff,
}

impl JoinContext {
    /// A context with the server-type map taken from the settings and the
    /// default SSH backoff (1 s doubling up to 30 s).
    pub fn new(
        store: Arc<Store>,
        settings: Arc<Settings>,
        join_password: Option<SecretString>,
        infra: Option<InfraClient>,
        kick: Arc<Notify>,
    ) -> Self {
        let server_type_map = settings.infrastructure.server_type_map.clone();
        Self {
            store,
            settings,
            join_password,
            infra,
            server_type_map,
            kick,
            ssh_backoff: Backoff::default(),
        }
    }
}

/// Runs at most one join task per host.
pub struct JoinDriver {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced by [`JoinDriver::reconfigure`] (a settings reload); a task
    /// keeps the context it started with.
    ctx: std::sync::RwLock<Arc<JoinContext>>,
    /// Hosts with a task in flight.
    running: Mutex<HashSet<String>>,
    /// Whether "registration skipped" was logged already.
    skip_logged: AtomicBool,
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ctx(&self) -> Arc<JoinContext> {
        self.ctx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Removes the host from the running set when the task ends, however it ends.
struct RunningGuard {
    inner: Arc<Inner>,
    host: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.inner.running().remove(&self.host);
        self.inner.ctx().kick.notify_one();
    }
}

impl JoinDriver {
    pub fn new(ctx: JoinContext) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx: std::sync::RwLock::new(Arc::new(ctx)),
                running: Mutex::new(HashSet::new()),
                skip_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Spawns the join task for `host` if its record says `first_boot` or
    /// `joining` with an open operation and no task runs for it yet.
    /// Idempotent: call it on every reconciler pass. Must be called inside
    /// a tokio runtime (outside one it logs an error and does nothing).
    pub fn ensure_running(&self, host: &Host, record: &HostRecord) {
        if !matches!(record.state, HostState::FirstBoot | HostState::Joining) || record.retired {
            return;
        }
        let Some(operation) = record.operation else {
            return;
        };
        let name = host.name.as_str().to_string();
        if record.name != name {
            tracing::error!(host = %name, record = %record.name, "join: declaration and record disagree; not starting");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(host = %name, "join: ensure_running called outside a tokio runtime");
            return;
        };
        if !self.inner.running().insert(name.clone()) {
            return;
        }
        let guard = RunningGuard {
            inner: self.inner.clone(),
            host: name.clone(),
        };
        let task = Task {
            inner: self.inner.clone(),
            ctx: self.inner.ctx(),
            host: host.clone(),
            name,
            operation,
            secrets: Vec::new(),
        };
        tracing::info!(host = %task.name, operation, state = %record.state, "join: task started");
        runtime.spawn(async move {
            let _guard = guard;
            task.run().await;
        });
    }

    /// Takes new settings, secrets and Infrastructure client (a reload) for
    /// the tasks started from now on; tasks in flight finish with theirs.
    /// The set of running hosts is kept, so a host never gets a second task.
    pub fn reconfigure(&self, ctx: JoinContext) {
        *self.inner.ctx.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ctx);
    }

    /// Whether a join task for `host` is in flight.
    pub fn is_running(&self, host: &str) -> bool {
        self.inner.running().contains(host)
    }

    /// The hosts with a join task in flight, sorted.
    pub fn running_hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.running().iter().cloned().collect();
        v.sort();
        v
    }
}

/// Why a task stopped early.
enum Stop {
    /// The host left this operation's join (superseded, failed, retired).
    Left(String),
    /// The task recorded a failure (already applied).
    Failed,
    /// The store failed; the next `ensure_running` retries.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

struct Task {
    inner: Arc<Inner>,
    /// The context this task started with.
    ctx: Arc<JoinContext>,
    host: Host,
    name: String,
    operation: i64,
    /// Secrets to redact from everything recorded.
    secrets: Vec<SecretString>,
}

impl Task {
    fn ctx(&self) -> &JoinContext {
        &self.ctx
    }

    fn store(&self) -> &Store {
        &self.ctx.store
    }

    async fn run(mut self) {
        match self.steps().await {
            Ok(()) => {
                tracing::info!(host = %self.name, operation = self.operation, "join: host is ready")
            }
            Err(Stop::Left(why)) => {
                tracing::info!(host = %self.name, operation = self.operation, reason = %why, "join: stopped, the host left this join")
            }
            Err(Stop::Failed) => {
                tracing::warn!(host = %self.name, operation = self.operation, "join: rebuild failed")
            }
            Err(Stop::Store(e)) => {
                let e = self.redact(&e.to_string());
                tracing::error!(host = %self.name, operation = self.operation, error = %e, "join: store error, will retry on the next pass")
            }
        }
    }

    async fn steps(&mut self) -> Result<(), Stop> {
        let record = self.current()?;
        let op = self
            .store()
            .operation(self.operation)?
            .ok_or_else(|| Stop::Left("operation not found".into()))?;
        let private = self
            .store()
            .private_key(self.operation)?
            .map(SecretString::new);
        if let Some(p) = &self.ctx().join_password {
            self.secrets.push(p.clone());
        }
        if let Some(p) = &private {
            self.secrets.push(p.clone());
        }
        let joined_before = self
            .store()
            .notes(&self.name)?
            .iter()
            .any(|n| n.operation == Some(self.operation) && n.kind == note::JOINED);

        let resuming = record.state == HostState::Joining;
        let ssh_done = resuming && (joined_before || private.is_none());
        let cause = if ssh_done {
            "resuming after a restart: joined already, registering"
        } else if resuming {
            "resuming the join after a restart"
        } else {
            "joining the cluster"
        };
        self.apply(EventKind::JoinStarted, cause)?;
        let deadline = self.deadline()?;

        if ssh_done {
            if private.is_some() {
                // Joined, but the daemon stopped before deleting the key.
                self.store().delete_private_key(self.operation)?;
            }
        } else {
            match private {
                Some(pem) => self.join(&op, pem, deadline).await?,
                None => {
                    return Err(self.fail(
                        "the ephemeral private key is gone before the join; raise rebuild to retry",
                    ));
                }
            }
        }

        let completed = self.register(&op, deadline).await?;
        self.apply(EventKind::Completed, completed)?;
        Ok(())
    }

    /// The SSH join: attempts and output noted, failures applied, the
    /// private key deleted from the store on success.
    async fn join(
        &self,
        op: &OperationRecord,
        pem: SecretString,
        deadline: Instant,
    ) -> Result<(), Stop> {
        let params = match self.join_params(op, pem) {
            Ok(p) => p,
            Err(reason) => return Err(self.fail(&reason)),
        };
        let mut gave_up = None;
        let result = {
            let on_attempt = |a: &Attempt| {
                if let AttemptOutcome::GaveUp { reason, .. } = &a.outcome {
                    gave_up = Some(*reason);
                }
                self.note(note::JOIN_ATTEMPT, &attempt_message(a));
            };
            let work = join_with_retry(&params, deadline, on_attempt);
            self.while_current(work).await?
        };
        match result {
            Ok(report) => {
                self.record_report(&report);
                self.store().delete_private_key(self.operation)?;
                tracing::info!(host = %self.name, operation = self.operation, "join: private key deleted from the store");
                Ok(())
            }
            Err(e) => {
                if let JoinError::CommandFailed { details, .. } = &e {
                    self.note(note::JOIN_OUTPUT, &output_message(details));
                }
                let mut reason = join_failure_reason(&e);
                if gave_up == Some(GiveUpReason::Deadline) {
                    reason = format!(
                        "joining deadline ({}) passed: {reason}",
                        human(self.ctx().settings.deadlines.joining)
                    );
                }
                Err(self.fail(&reason))
            }
        }
    }

    fn record_report(&self, report: &JoinReport) {
        if let Some(out) = &report.join_output {
            self.note(note::JOIN_OUTPUT, &output_message(out));
        }
        self.note(
            note::KEY_REMOVAL,
            &format!(
                "ephemeral key removed and verified rejected\n{}",
                report.key_removal_output.tail(NOTE_OUTPUT_CHARS)
            ),
        );
        self.note(
            note::JOINED,
            &format!(
                "{} (host key {})",
                report.summary(),
                report.host_key_fingerprint
            ),
        );
        tracing::info!(host = %self.name, operation = self.operation, result = report.summary(), host_key = %report.host_key_fingerprint, "join: done");
    }

    fn join_params(&self, op: &OperationRecord, pem: SecretString) -> Result<JoinParams, String> {
        let settings = &self.ctx().settings;
        let address = op
            .phone_home_ip
            .as_deref()
            .ok_or("no phone-home address recorded for this rebuild")?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("phone-home address {address:?} is not an ip address"))?;
        let pinned = pinned_host_keys(op.ssh_host_keys.as_ref());
        if pinned.is_empty() {
            return Err("no ssh host keys were pinned from the install webhook".into());
        }
        let existing_node = settings
            .proxmox
            .existing_node
            .clone()
            .ok_or("proxmox.existing_node is not set")?;
        let fingerprint = settings
            .proxmox
            .join_fingerprint
            .clone()
            .ok_or("proxmox.join_fingerprint is not set")?;
        let password = self
            .ctx()
            .join_password
            .clone()
            .ok_or("proxmox.join_password_file is not set")?;
        let key = EphemeralKey::from_private_openssh(pem.expose())
            .map_err(|e| format!("the stored ephemeral key is unusable: {e}"))?;
        let mut params =
            JoinParams::new(address, &key, pinned, existing_node, fingerprint, password);
        params.public_key_line = op.public_key.clone();
        params.port = settings.join.ssh_port;
        params.connect_timeout = settings.join.connect_timeout;
        params.pvecm_command = settings.join.pvecm.clone();
        params.member_check_command = settings.join.member_check.clone();
        params.authorized_keys_paths = settings.join.authorized_keys.clone();
        params.backoff = self.ctx().ssh_backoff;
        Ok(params)
    }

    /// Registration with Infrastructure; returns the cause for `Completed`.
    async fn register(
        &self,
        op: &OperationRecord,
        deadline: Instant,
    ) -> Result<&'static str, Stop> {
        let Some(client) = &self.ctx().infra else {
            if !self.inner.skip_logged.swap(true, Ordering::Relaxed) {
                tracing::info!("registration skipped: infrastructure.base_url is empty");
            }
            self.note(
                note::REGISTRATION,
                "registration skipped: infrastructure.base_url is empty",
            );
            return Ok("joined; registration skipped");
        };
        let registration = match self.registration(op) {
            Ok(r) => r,
            Err(reason) => return Err(self.fail(&format!("joined, not registered: {reason}"))),
        };
        let mut gave_up = None;
        let result = {
            let on_attempt = |a: &Attempt| {
                if let AttemptOutcome::GaveUp { reason, .. } = &a.outcome {
                    gave_up = Some(*reason);
                }
                self.note(note::INFRA_ATTEMPT, &attempt_message(a));
            };
            let work = client.register_with_retry(&registration, deadline, on_attempt);
            self.while_current(work).await?
        };
        match result {
            Ok(outcome) => {
                let message = match outcome {
                    Registered::Created { status } => {
                        format!("registered with infrastructure (HTTP {status})")
                    }
                    Registered::AlreadyRegistered { status } => {
                        format!("already registered with infrastructure (HTTP {status})")
                    }
                };
                self.note(note::REGISTRATION, &message);
                Ok("joined and registered with infrastructure")
            }
            Err(e) => {
                let mut reason = self.redact(&e.to_string());
                if gave_up == Some(GiveUpReason::Deadline) {
                    reason = format!(
                        "joining deadline ({}) passed: {reason}",
                        human(self.ctx().settings.deadlines.joining)
                    );
                }
                Err(self.fail(&format!("joined, not registered: {reason}")))
            }
        }
    }

    fn registration(&self, op: &OperationRecord) -> Result<Registration, String> {
        let ip = op
            .phone_home_ip
            .as_deref()
            .ok_or("no phone-home address recorded")?;
        let management_ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("phone-home address {ip:?} is not an ip address"))?;
        let hardware_id = op
            .hardware_id
            .clone()
            .or_else(|| op.dmi_uuid.clone())
            .ok_or("no hardware id recorded")?;
        let key = &self.host.server_type;
        let server_type_id = match self.ctx().server_type_map.get(key) {
            Some(id) => server_type_id(id),
            None => {
                self.note(
                    note::REGISTRATION,
                    &format!(
                        "infrastructure.server_type_map has no entry for server type {key:?}: sending the key itself"
                    ),
                );
                ServerTypeId::Text(key.clone())
            }
        };
        Ok(Registration {
            hostname: self.name.clone(),
            management_ip,
            mac: self.host.mac.to_string(),
            hardware_id,
            server_type_id,
        })
    }

    /// Runs `work` unless the host leaves this operation's join first.
    async fn while_current<T>(&self, work: impl Future<Output = T>) -> Result<T, Stop> {
        tokio::select! {
            out = work => Ok(out),
            why = self.left() => Err(Stop::Left(why)),
        }
    }

    /// Resolves once the host is no longer in this operation's join.
    async fn left(&self) -> String {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            match self.current() {
                Ok(_) => {}
                Err(Stop::Left(why)) => return why,
                Err(_) => {}
            }
        }
    }

    /// The host's record, if it is still in this operation's join.
    fn current(&self) -> Result<HostRecord, Stop> {
        let record = self
            .store()
            .host(&self.name)?
            .ok_or_else(|| Stop::Left("host not in the store".into()))?;
        if record.retired {
            return Err(Stop::Left("host retired".into()));
        }
        if record.operation != Some(self.operation) {
            return Err(Stop::Left("superseded by a new rebuild".into()));
        }
        if !matches!(record.state, HostState::FirstBoot | HostState::Joining) {
            return Err(Stop::Left(format!("host is {}", record.state)));
        }
        Ok(record)
    }

    /// Entry into `joining` + `deadlines.joining`, as an `Instant`.
    fn deadline(&self) -> Result<Instant, Stop> {
        let record = self.current()?;
        let limit = self.ctx().settings.deadlines.joining;
        let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
        let remaining_ms = record
            .since_ms
            .saturating_add(limit_ms)
            .saturating_sub(self.store().now_ms());
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        let now = Instant::now();
        Ok(now
            .checked_add(remaining)
            .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
            .unwrap_or(now))
    }

    fn apply(&self, event: EventKind, cause: &str) -> Result<(), Stop> {
        match self.store().apply(&self.name, self.operation, event, cause) {
            Ok(t) => {
                tracing::info!(host = %self.name, operation = self.operation, from = %t.from, to = %t.to, cause = %cause, "join: transition");
                Ok(())
            }
            Err(StoreError::StaleOperation { .. }) => {
                Err(Stop::Left("superseded by a new rebuild".into()))
            }
            Err(StoreError::NotAllowed { state, .. }) => {
                Err(Stop::Left(format!("host is {state}")))
            }
            Err(StoreError::UnknownHost(_)) => Err(Stop::Left("host not in the store".into())),
            Err(e) => Err(Stop::Store(e)),
        }
    }

    /// Applies `Fail` with `reason` (redacted); the store deletes the key.
    fn fail(&self, reason: &str) -> Stop {
        let reason = self.redact(reason);
        tracing::warn!(host = %self.name, operation = self.operation, reason = %reason, "join: failing the rebuild");
        match self.apply(EventKind::Fail, &reason) {
            Ok(()) => Stop::Failed,
            Err(stop) => stop,
        }
    }

    /// Adds a note (redacted); a store error is logged, not fatal.
    fn note(&self, kind: &str, message: &str) {
        let message = self.redact(message);
        if let Err(e) = self
            .store()
            .add_note(&self.name, Some(self.operation), kind, &message)
        {
            tracing::warn!(host = %self.name, operation = self.operation, kind, error = %self.redact(&e.to_string()), "join: cannot record a note");
        }
    }

    fn redact(&self, text: &str) -> String {
        let secrets: Vec<&str> = self.secrets.iter().map(SecretString::expose).collect();
        redact(text, &secrets)
    }
}

/// The pinned host key lines from the install webhook's JSON: every string
/// value of the object (or array), nested one level for arrays.
fn pinned_host_keys(value: Option<&serde_json::Value>) -> Vec<String> {
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            serde_json::Value::Object(map) => map.values().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(v) = value {
        collect(v, &mut out);
    }
    out
}

fn server_type_id(configured: &str) -> ServerTypeId {
    if !configured.is_empty()
        && configured.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = configured.parse()
    {
        return ServerTypeId::Number(n);
    }
    ServerTypeId::Text(configured.to_string())
}

/// The failure reason for a join error: short and specific for the cases
/// the dashboard shows most.
fn join_failure_reason(e: &JoinError) -> String {
    match e {
        JoinError::CommandFailed { status, output, .. } => {
            let status = match status {
                Some(s) => format!("exit {s}"),
                None => "no exit status".to_string(),
            };
            format!("pvecm add failed ({status}): {output}")
        }
        other => other.to_string(),
    }
}

fn attempt_message(a: &Attempt) -> String {
    let took = human(a.elapsed);
    match &a.outcome {
        AttemptOutcome::Succeeded => format!("attempt {}: succeeded in {took}", a.number),
        AttemptOutcome::WillRetry { error, retry_in } => format!(
            "attempt {}: failed after {took}: {error}; retrying in {}",
            a.number,
            human(*retry_in)
        ),
        AttemptOutcome::GaveUp { error, reason } => {
            let why = match reason {
                GiveUpReason::Permanent => "not retrying (permanent)",
                GiveUpReason::Deadline => "giving up (deadline)",
            };
            format!("attempt {}: failed after {took}: {error}; {why}", a.number)
        }
    }
}

fn output_message(out: &CommandOutput) -> String {
    let status = match out.exit_status {
        Some(s) => s.to_string(),
        None => "none".to_string(),
    };
    let mut text = format!("$ {}\nexit status: {status}\n", out.command);
    if out.truncated {
        text.push_str("(output truncated: the head was dropped)\n");
    }
    text.push_str("--- stdout ---\n");
    text.push_str(&tail(&out.stdout, NOTE_OUTPUT_CHARS));
    text.push_str("\n--- stderr ---\n");
    text.push_str(&tail(&out.stderr, NOTE_OUTPUT_CHARS));
    text
}

fn tail(s: &str, max_chars: usize) -> String {
    let s = s.trim_end();
    let count = s.chars().count();
    if count <= max_chars {
        s.to_string()
    } else {
        let mut t = String::from("…");
        t.extend(s.chars().skip(count - max_chars));
        t
    }
}

/// A duration rounded to milliseconds (whole seconds above a minute).
fn human(d: Duration) -> String {
    let d = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_keys_from_webhook_json() {
        let v = serde_json::json!({"ed25519": "ssh-ed25519 AAAA x", "rsa": " ", "ecdsa": ["ecdsa-sha2 BBBB"], "n": 1});
        let mut keys = pinned_host_keys(Some(&v));
        keys.sort();
        assert_eq!(keys, vec!["ecdsa-sha2 BBBB", "ssh-ed25519 AAAA x"]);
        assert!(pinned_host_keys(None).is_empty());
    }

    #[test]
    fn server_type_ids() {
        assert_eq!(server_type_id("7"), ServerTypeId::Number(7));
        assert_eq!(server_type_id("gpu-a"), ServerTypeId::Text("gpu-a".into()));
        assert_eq!(server_type_id(""), ServerTypeId::Text(String::new()));
        assert_eq!(
            server_type_id("99999999999999999999999"),
            ServerTypeId::Text("99999999999999999999999".into())
        );
    }

    #[test]
    fn attempt_messages() {
        let a = Attempt {
            number: 2,
            elapsed: Duration::from_micros(1_234_567),
            outcome: AttemptOutcome::WillRetry {
                error: "cannot connect".into(),
                retry_in: Duration::from_millis(1500),
            },
        };
        assert_eq!(
            attempt_message(&a),
            "attempt 2: failed after 1s 234ms: cannot connect; retrying in 1s 500ms"
        );
    }

    #[test]
    fn pvecm_failure_reason() {
        let e = JoinError::CommandFailed {
            status: Some(255),
            output: "500 Authentication failed".into(),
            details: Box::new(CommandOutput {
                command: "pvecm add".into(),
                exit_status: Some(255),
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
            }),
        };
        assert_eq!(
            join_failure_reason(&e),
            "pvecm add failed (exit 255): 500 Authentication failed"
        );
    }
}
