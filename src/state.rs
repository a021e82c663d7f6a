//! The host lifecycle: states, events and the one table of allowed
//! transitions.
//!
//! This module owns the vocabulary of the state machine and nothing else: it
//! performs no I/O. The store applies transitions through [`next`] inside a
//! transaction; no other code decides which state follows which.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a host is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Declared, no rebuild acted on (or `rebuild 0`).
    Registered,
    /// A rebuild was started: the MAC is armed, PXE answers are given.
    PxeReady,
    /// The machine fetched its iPXE installer script.
    PxeBooted,
    /// The installer fetched its answer file (disks are being wiped).
    Installing,
    /// The installer's post-installation webhook arrived.
    Installed,
    /// The installed system phoned home after its first boot.
    FirstBoot,
    /// The daemon is joining the node to the cluster over SSH.
    Joining,
    /// Joined, registered, done.
    Ready,
    /// The rebuild failed; stays failed until `rebuild` is raised.
    Failed,
}

impl HostState {
    pub const ALL: [HostState; 9] = [
        HostState::Registered,
        HostState::PxeReady,
        HostState::PxeBooted,
        HostState::Installing,
        HostState::Installed,
        HostState::FirstBoot,
        HostState::Joining,
        HostState::Ready,
        HostState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Registered => "registered",
            HostState::PxeReady => "pxe_ready",
            HostState::PxeBooted => "pxe_booted",
            HostState::Installing => "installing",
            HostState::Installed => "installed",
            HostState::FirstBoot => "first_boot",
            HostState::Joining => "joining",
            HostState::Ready => "ready",
            HostState::Failed => "failed",
        }
    }

    /// States in which a rebuild is in progress (an operation is open and
    /// a deadline runs).
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            HostState::Registered | HostState::Ready | HostState::Failed
        )
    }

    /// Whether PXE requests from this host get the installer (the MAC is
    /// "armed"). Only before the answer file was served.
    pub fn is_armed(self) -> bool {
        matches!(self, HostState::PxeReady | HostState::PxeBooted)
    }

    /// Position in the happy path, 0..=7, for progress bars.
    pub fn progress(self) -> Option<u8> {
        match self {
            HostState::Failed => None,
            s => HostState::ALL.iter().position(|x| *x == s).map(|p| p as u8),
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown host state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for HostState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// What happened to a host. Events carry no data; the cause and details are
/// recorded beside the transition by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The reconciler started a new rebuild (generation raised).
    StartRebuild,
    /// `GET /ipxe/{mac}` served the installer script.
    IpxeServed,
    /// `POST /api/boot/answer` served the answer file.
    AnswerServed,
    /// The post-installation webhook arrived.
    InstallReported,
    /// The first-boot script phoned home.
    PhoneHome,
    /// The SSH join started.
    JoinStarted,
    /// Joined, key removed, registered.
    Completed,
    /// Anything that ends the rebuild unsuccessfully: a missed deadline, an
    /// installer error, a failed join. The reason is recorded beside it.
    Fail,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StartRebuild => "start_rebuild",
            EventKind::IpxeServed => "ipxe_served",
            EventKind::AnswerServed => "answer_served",
            EventKind::InstallReported => "install_reported",
            EventKind::PhoneHome => "phone_home",
            EventKind::JoinStarted => "join_started",
            EventKind::Completed => "completed",
            EventKind::Fail => "fail",
        }
    }
}

use EventKind as E;
use HostState as S;

/// The transition table: (from, event, to). One place, data not `if`s.
///
/// `StartRebuild` is allowed from every state: a raised `rebuild` number
/// supersedes whatever runs (the store closes the old operation first).
/// `Fail` is allowed from every active state.
pub const TRANSITIONS: &[(HostState, EventKind, HostState)] = &[
    (S::Registered, E::StartRebuild, S::PxeReady),
    (S::PxeReady, E::StartRebuild, S::PxeReady),
    (S::PxeBooted, E::StartRebuild, S::PxeReady),
    (S::Installing, E::StartRebuild, S::PxeReady),
    (S::Installed, E::StartRebuild, S::PxeReady),
    (S::FirstBoot, E::StartRebuild, S::PxeReady),
    (S::Joining, E::StartRebuild, S::PxeReady),
    (S::Ready, E::StartRebuild, S::PxeReady),
    (S::Failed, E::StartRebuild, S::PxeReady),
    (S::PxeReady, E::IpxeServed, S::PxeBooted),
    // A machine that reboots before fetching its answer fetches the script again.
    (S::PxeBooted, E::IpxeServed, S::PxeBooted),
    // The installer can be started by other means than our iPXE script
    // (USB stick with the prepared ISO): accept the answer from pxe_ready too.
    (S::PxeReady, E::AnswerServed, S::Installing),
    (S::PxeBooted, E::AnswerServed, S::Installing),
    (S::Installing, E::InstallReported, S::Installed),
    (S::Installed, E::PhoneHome, S::FirstBoot),
    (S::FirstBoot, E::JoinStarted, S::Joining),
    // A daemon restart during the join re-enters the step from `joining`.
    (S::Joining, E::JoinStarted, S::Joining),
    (S::Joining, E::Completed, S::Ready),
    (S::PxeReady, E::Fail, S::Failed),
    (S::PxeBooted, E::Fail, S::Failed),
    (S::Installing, E::Fail, S::Failed),
    (S::Installed, E::Fail, S::Failed),
    (S::FirstBoot, E::Fail, S::Failed),
    (S::Joining, E::Fail, S::Failed),
];

/// The state that follows `from` on `event`, or `None` if the table does not
/// allow it.
pub fn next(from: HostState, event: EventKind) -> Option<HostState> {
    TRANSITIONS
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_EVENTS: [EventKind; 8] = [
        E::StartRebuild,
        E::IpxeServed,
        E::AnswerServed,
        E::InstallReported,
        E::PhoneHome,
        E::JoinStarted,
        E::Completed,
        E::Fail,
    ];

    /// Every (state, event) pair, written out: the table under test is
    /// compared against this independent statement of the rules.
    #[test]
    fn table_is_exactly_the_intended_one() {
        for from in HostState::ALL {
            for ev in ALL_EVENTS {
                let expected = match (from, ev) {
                    (_, E::StartRebuild) => Some(S::PxeReady),
                    (s, E::Fail) if s.is_active() => Some(S::Failed),
                    (S::PxeReady | S::PxeBooted, E::IpxeServed) => Some(S::PxeBooted),
                    (S::PxeReady | S::PxeBooted, E::AnswerServed) => Some(S::Installing),
                    (S::Installing, E::InstallReported) => Some(S::Installed),
                    (S::Installed, E::PhoneHome) => Some(S::FirstBoot),
                    (S::FirstBoot | S::Joining, E::JoinStarted) => Some(S::Joining),
                    (S::Joining, E::Completed) => Some(S::Ready),
                    _ => None,
                };
                assert_eq!(next(from, ev), expected, "{from} on {ev:?}");
            }
        }
    }

    #[test]
    fn table_has_no_duplicate_keys() {
        for (i, (f, e, _)) in TRANSITIONS.iter().enumerate() {
            for (g, d, _) in &TRANSITIONS[i + 1..] {
                assert!(!(f == g && e == d), "duplicate entry {f} {e:?}");
            }
        }
    }

    #[test]
    fn terminal_states_are_left_only_by_a_new_rebuild() {
        for s in [S::Ready, S::Failed, S::Registered] {
            for ev in ALL_EVENTS {
                if ev != E::StartRebuild {
                    assert_eq!(next(s, ev), None, "{s} on {ev:?}");
                }
            }
        }
    }

    #[test]
    fn names_roundtrip() {
        for s in HostState::ALL {
            assert_eq!(s.as_str().parse::<HostState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
