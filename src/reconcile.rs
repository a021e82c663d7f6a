//! The reconciler: compares the declarations (desired, a [`Snapshot`]) with
//! the store (observed) and brings the store in line, level-triggered.
//!
//! [`decide`] is a pure function of one host's desired and observed state
//! and the time; it never looks at *which* event caused the pass, so running
//! a pass twice, or after a restart, gives the same result. [`Reconciler`]
//! applies the decisions through the [`Store`] in name order. This module
//! never reads `hosts.d`, never sends packets and never talks to machines:
//! it reports which hosts started a rebuild and the caller does the rest
//! (Wake-on-LAN, the dnsmasq host list).

use crate::decl::{Host, HostName, Snapshot};
use crate::secrets::{EphemeralKey, SecretsError, Token, ephemeral_key_comment};
use crate::state::HostState;
use crate::store::{HostRecord, NewRebuild, OpenOperation, Store, StoreError, TransitionRecord};
use serde::Serialize;
use std::time::Duration;

/// How long a host may stay in each state of an active rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Armed, waiting for the machine to PXE-boot.
    pub pxe_ready: Duration,
    /// iPXE script served, waiting for the installer to fetch its answer.
    pub pxe_booted: Duration,
    /// Answer served, waiting for the post-installation webhook.
    pub installing: Duration,
    /// Installed, waiting for the first boot to phone home.
    pub installed: Duration,
    /// Phoned home, waiting for the join to start.
    pub first_boot: Duration,
    /// Join started, waiting for it to complete.
    pub joining: Duration,
}

const MINUTE: u64 = 60;

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            pxe_ready: Duration::from_secs(30 * MINUTE),
            pxe_booted: Duration::from_secs(30 * MINUTE),
            installing: Duration::from_secs(60 * MINUTE),
            installed: Duration::from_secs(30 * MINUTE),
            first_boot: Duration::from_secs(15 * MINUTE),
            joining: Duration::from_secs(30 * MINUTE),
        }
    }
}

impl Deadlines {
    /// The deadline of an active state; `None` for states without one.
    pub fn for_state(&self, state: HostState) -> Option<Duration> {
        match state {
            HostState::PxeReady => Some(self.pxe_ready),
            HostState::PxeBooted => Some(self.pxe_booted),
            HostState::Installing => Some(self.installing),
            HostState::Installed => Some(self.installed),
            HostState::FirstBoot => Some(self.first_boot),
            HostState::Joining => Some(self.joining),
            HostState::Registered | HostState::Ready | HostState::Failed => None,
        }
    }

    /// When a host that entered `state` at `since_ms` misses its deadline.
    pub fn expires_at(&self, state: HostState, since_ms: i64) -> Option<i64> {
        let d = self.for_state(state)?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Some(since_ms.saturating_add(ms))
    }

    /// The earliest moment any of `open` misses its deadline: when the
    /// caller should run the next pass at the latest.
    pub fn next_expiry(&self, open: &[OpenOperation]) -> Option<i64> {
        open.iter()
            .filter_map(|o| self.expires_at(o.state, o.since_ms))
            .min()
    }
}

impl From<&crate::settings::DeadlineSettings> for Deadlines {
    fn from(s: &crate::settings::DeadlineSettings) -> Self {
        Deadlines {
            pxe_ready: s.pxe_ready,
            pxe_booted: s.pxe_booted,
            installing: s.installing,
            installed: s.installed,
            first_boot: s.first_boot,
            joining: s.joining,
        }
    }
}

/// What the missed deadline of each state means, for the failure reason.
fn waiting_for(state: HostState) -> &'static str {
    match state {
        HostState::PxeReady => "no PXE boot",
        HostState::PxeBooted => "installer did not fetch its answer",
        HostState::Installing => "installation not reported",
        HostState::Installed => "no phone-home from the installed system",
        HostState::FirstBoot => "cluster join not started",
        HostState::Joining => "cluster join not completed",
        HostState::Registered | HostState::Ready | HostState::Failed => "nothing",
    }
}

/// `30m`, `1h30m`, `45s`: short and exact.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// What one host needs next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Nothing,
    /// Create the host's row, update its MAC or bring it back from retirement.
    EnsureHost,
    /// Start rebuild `generation`, superseding the open operation if any.
    StartRebuild {
        generation: u64,
        supersedes: Option<i64>,
    },
    /// The declaration is gone.
    Retire,
    /// The current state's deadline passed.
    Fail {
        operation: i64,
        reason: String,
    },
}

/// Decides the next step for one host. Pure: the same inputs always give
/// the same answer, and applying the answer makes the next answer for the
/// host either `Nothing` or a later step (never the same one again).
///
/// The order of the rules matters: the host must exist before a rebuild can
/// start, and a raised `rebuild` supersedes an active rebuild rather than
/// letting it fail on its deadline.
pub fn decide(
    desired: Option<&Host>,
    observed: Option<&HostRecord>,
    now_ms: i64,
    deadlines: &Deadlines,
) -> Action {
    let Some(host) = desired else {
        return match observed {
            Some(rec) if !rec.retired => Action::Retire,
            _ => Action::Nothing,
        };
    };
    let Some(rec) = observed.filter(|r| !r.retired && r.mac == host.mac.to_string()) else {
        return Action::EnsureHost;
    };
    if host.rebuild > rec.observed_generation {
        return Action::StartRebuild {
            generation: host.rebuild,
            supersedes: rec.operation,
        };
    }
    let expired = deadlines
        .expires_at(rec.state, rec.since_ms)
        .is_some_and(|at| now_ms >= at);
    match (rec.operation, deadlines.for_state(rec.state)) {
        (Some(operation), Some(within)) if expired => Action::Fail {
            operation,
            reason: format!(
                "deadline missed: {} within {} (in {})",
                waiting_for(rec.state),
                short_duration(within),
                rec.state
            ),
        },
        _ => Action::Nothing,
    }
}

/// One decision the reconciler carried out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Applied {
    pub host: String,
    pub action: Action,
    /// The transition the action caused, if it moved the host.
    pub transition: Option<TransitionRecord>,
}

impl Applied {
    /// `(generation, operation)` if this started a rebuild: the caller sends
    /// Wake-on-LAN and re-arms dnsmasq for it.
    pub fn started_rebuild(&self) -> Option<(u64, i64)> {
        match (&self.action, &self.transition) {
            (Action::StartRebuild { generation, .. }, Some(t)) => {
                t.operation.map(|op| (*generation, op))
            }
            _ => None,
        }
    }
}

/// More steps than any host can need in one pass (ensure, start): a bound
/// so that a bug can never turn a pass into an endless loop.
const MAX_STEPS_PER_HOST: usize = 4;

/// Applies [`decide`] through the store.
#[derive(Clone, Debug, Default)]
pub struct Reconciler {
    pub deadlines: Deadlines,
}

impl Reconciler {
    pub fn new(deadlines: Deadlines) -> Reconciler {
        Reconciler { deadlines }
    }

    /// One pass over every declared host and every host in the store, in
    /// name order. Idempotent: a second pass right after does nothing.
    ///
    /// A host whose step fails is logged and skipped (one host never stops
    /// the others); the next pass tries again. Only a failure to read the
    /// store at all is an error.
    pub fn reconcile_all(
        &self,
        snapshot: &Snapshot,
        store: &Store,
        now_ms: i64,
        new_secrets: &dyn Fn(&Host, u64) -> NewRebuild,
    ) -> Result<Vec<Applied>, StoreError> {
        self.try_reconcile_all(snapshot, store, now_ms, &|h, g| Ok(new_secrets(h, g)))
    }

    /// [`Reconciler::reconcile_all`] with secret generation that can fail
    /// (the OS RNG, see [`fresh_secrets`]): a host whose secrets cannot be
    /// made is logged and skipped, and its rebuild starts on a later pass.
    pub fn try_reconcile_all(
        &self,
        snapshot: &Snapshot,
        store: &Store,
        now_ms: i64,
        new_secrets: SecretsFn<'_>,
    ) -> Result<Vec<Applied>, StoreError> {
        // Both sides are sorted by name (the snapshot's map and the store's
        // rows, byte order both): one merge walk, no maps, no copies of the
        // 10,000 records of a big fleet.
        let mut observed = store.all_hosts()?.into_iter().peekable();
        let mut declared = snapshot.hosts.iter().peekable();
        let mut applied = Vec::new();
        loop {
            use std::cmp::Ordering::{Equal, Greater};
            let (desired, first) = match (declared.peek(), observed.peek()) {
                (None, None) => break,
                (Some((n, _)), Some(r)) => match n.as_str().cmp(r.name.as_str()) {
                    Equal => (declared.next(), observed.next()),
                    Greater => (None, observed.next()),
                    _ => (declared.next(), None),
                },
                (Some(_), None) => (declared.next(), None),
                (None, Some(_)) => (None, observed.next()),
            };
            let Some(name) = desired
                .map(|(n, _)| n.as_str().to_string())
                .or_else(|| first.as_ref().map(|r| r.name.clone()))
            else {
                break;
            };
            self.reconcile_host(
                &name,
                desired.map(|(_, h)| h.as_ref()),
                first,
                store,
                now_ms,
                new_secrets,
                &mut applied,
            );
        }
        Ok(applied)
    }

    /// One host (after a file event that touched it): the same decisions as
    /// in [`Reconciler::reconcile_all`], for `name` only.
    pub fn reconcile_one(
        &self,
        name: &str,
        snapshot: &Snapshot,
        store: &Store,
        now_ms: i64,
        new_secrets: SecretsFn<'_>,
    ) -> Result<Vec<Applied>, StoreError> {
        let desired = HostName::parse(name)
            .ok()
            .and_then(|n| snapshot.hosts.get(&n))
            .map(|h| h.as_ref());
        let observed = store.host(name)?;
        let mut applied = Vec::new();
        self.reconcile_host(
            name,
            desired,
            observed,
            store,
            now_ms,
            new_secrets,
            &mut applied,
        );
        Ok(applied)
    }

    #[allow(clippy::too_many_arguments)]
    fn reconcile_host(
        &self,
        name: &str,
        desired: Option<&Host>,
        mut observed: Option<HostRecord>,
        store: &Store,
        now_ms: i64,
        new_secrets: SecretsFn<'_>,
        applied: &mut Vec<Applied>,
    ) {
        for _ in 0..MAX_STEPS_PER_HOST {
            let action = decide(desired, observed.as_ref(), now_ms, &self.deadlines);
            if action == Action::Nothing {
                return;
            }
            match self.step(
                name,
                desired,
                observed.as_ref(),
                &action,
                store,
                now_ms,
                new_secrets,
            ) {
                // The host moved on before its deadline check could fail it.
                Ok(None) if matches!(action, Action::Fail { .. }) => return,
                Ok(transition) => {
                    match (&action, &transition) {
                        (Action::StartRebuild { generation, .. }, Some(t)) => tracing::info!(
                            host = %name, generation, operation = ?t.operation, "rebuild started"
                        ),
                        _ => tracing::info!(host = %name, action = ?action, "reconciled"),
                    }
                    applied.push(Applied {
                        host: name.to_string(),
                        action,
                        transition,
                    });
                }
                Err(StepError::Store(e)) if e.is_conflict() => {
                    // Someone moved the host since we read it; the next pass
                    // decides again from what is there then.
                    tracing::debug!(host = %name, error = %e, "reconcile conflict");
                    return;
                }
                Err(e) => {
                    tracing::warn!(host = %name, error = %e, "reconcile step failed");
                    return;
                }
            }
            observed = match store.host(name) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(host = %name, error = %e, "reading host after reconcile step");
                    return;
                }
            };
        }
        tracing::error!(host = %name, "reconcile did not settle; will retry on the next pass");
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        name: &str,
        desired: Option<&Host>,
        observed: Option<&HostRecord>,
        action: &Action,
        store: &Store,
        now_ms: i64,
        new_secrets: SecretsFn<'_>,
    ) -> Result<Option<TransitionRecord>, StepError> {
        Ok(match (action, desired, observed) {
            (Action::EnsureHost, Some(host), _) => {
                store.ensure_host_at(name, &host.mac.to_string(), now_ms)?;
                None
            }
            (Action::StartRebuild { generation, .. }, Some(host), Some(rec)) => {
                let cause = format!(
                    "rebuild {generation} requested (last acted on: {})",
                    rec.observed_generation
                );
                let secrets = new_secrets(host, *generation)?;
                Some(store.start_rebuild_at(name, *generation, secrets, &cause, now_ms)?)
            }
            (Action::Retire, _, _) => store.retire_at(name, "declaration removed", now_ms)?,
            (Action::Fail { operation, reason }, _, Some(rec)) => {
                store.fail_if_still(name, *operation, rec.state, reason, now_ms)?
            }
            // `decide` never returns these combinations.
            _ => None,
        })
    }
}

/// Makes the secrets of a new rebuild with fallible generation.
pub type SecretsFn<'a> = &'a dyn Fn(&Host, u64) -> Result<NewRebuild, SecretsError>;

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("generating rebuild secrets: {0}")]
    Secrets(#[from] SecretsError),
}

/// Fresh secrets for rebuild `generation` of `host`: an ed25519 key pair
/// (comment [`crate::secrets::ephemeral_key_comment`]) and the hash of a
/// random token. The token text is dropped on purpose: the machine gets
/// its token with the answer file, minted by the answer handler (which
/// stores its hash with the `AnswerServed` transition, see
/// [`Store::serve_answer`]); this hash only makes sure no token works before.
pub fn fresh_secrets(host: &Host, generation: u64) -> Result<NewRebuild, SecretsError> {
    let key = EphemeralKey::generate(&ephemeral_key_comment(host.name.as_str(), generation))?;
    Ok(NewRebuild {
        token_hash: Token::generate()?.hash(),
        public_key: key.public_openssh().to_string(),
        private_key: key.private_openssh().expose().to_string(),
    })
}
