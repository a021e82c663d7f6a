//! The reconciler's decisions, table-driven: one row per rule, all through
//! one `check` helper.

use provisioning::decl::{DiskSpec, Host, HostName, SourceLoc};
use provisioning::reconcile::{Action, Deadlines, decide};
use provisioning::state::HostState as S;
use provisioning::store::HostRecord;
use std::time::Duration;

const MAC: &str = "58:47:ca:71:02:1e";
const MIN: i64 = 60_000;
/// State entered at this time in every row.
const T0: i64 = 1_700_000_000_000;

fn host(rebuild: u64) -> Host {
    Host {
        name: HostName::parse("pve-01").unwrap(),
        mac: MAC.parse().unwrap(),
        server_type: "minisforum-ms-01".into(),
        rebuild,
        network: None,
        disk: DiskSpec::default(),
        wake_on_lan: false,
        source: SourceLoc {
            file: "hosts.d/pve-01.kdl".into(),
            line: 1,
            column: 1,
        },
    }
}

/// An observed host in `state` with observed generation `gen`; an open
/// operation (id 7) exactly when the state is active.
fn rec(state: S, generation: u64) -> HostRecord {
    HostRecord {
        name: "pve-01".into(),
        mac: MAC.into(),
        state,
        observed_generation: generation,
        since_ms: T0,
        operation: state.is_active().then_some(7),
        last_error: None,
        retired: false,
    }
}

fn retired(mut r: HostRecord) -> HostRecord {
    r.retired = true;
    r
}

fn with_mac(mut r: HostRecord, mac: &str) -> HostRecord {
    r.mac = mac.into();
    r
}

fn check(desired: Option<Host>, observed: Option<HostRecord>, now: i64, expected: Action) {
    let got = decide(
        desired.as_ref(),
        observed.as_ref(),
        now,
        &Deadlines::default(),
    );
    assert_eq!(
        got,
        expected,
        "desired {:?} observed {:?} at T0+{}ms",
        desired.map(|h| h.rebuild),
        observed.map(|o| (o.state, o.observed_generation, o.retired)),
        now - T0
    );
}

fn start(generation: u64, supersedes: Option<i64>) -> Action {
    Action::StartRebuild {
        generation,
        supersedes,
    }
}

fn fail(reason: &str) -> Action {
    Action::Fail {
        operation: 7,
        reason: reason.into(),
    }
}

#[test]
fn existence() {
    check(Some(host(0)), None, T0, Action::EnsureHost);
    check(Some(host(3)), None, T0, Action::EnsureHost);
    check(
        Some(host(0)),
        Some(rec(S::Registered, 0)),
        T0,
        Action::Nothing,
    );
    check(None, None, T0, Action::Nothing);
    check(None, Some(rec(S::Ready, 2)), T0, Action::Retire);
    check(None, Some(rec(S::Installing, 2)), T0, Action::Retire);
    check(None, Some(retired(rec(S::Ready, 2))), T0, Action::Nothing);
    // Declared again after retirement, or with a new MAC: ensure first.
    check(
        Some(host(2)),
        Some(retired(rec(S::Ready, 2))),
        T0,
        Action::EnsureHost,
    );
    check(
        Some(host(2)),
        Some(with_mac(rec(S::Ready, 2), "58:47:ca:71:02:1f")),
        T0,
        Action::EnsureHost,
    );
}

#[test]
fn generations() {
    // rebuild 0 and rebuild <= observed leave the host alone, in any state.
    for st in [S::Registered, S::Ready, S::Failed] {
        check(Some(host(0)), Some(rec(st, 0)), T0, Action::Nothing);
        check(Some(host(2)), Some(rec(st, 2)), T0, Action::Nothing);
        check(Some(host(1)), Some(rec(st, 2)), T0, Action::Nothing);
    }
    // A raised number starts a rebuild, from idle or terminal states.
    check(
        Some(host(1)),
        Some(rec(S::Registered, 0)),
        T0,
        start(1, None),
    );
    check(Some(host(3)), Some(rec(S::Ready, 2)), T0, start(3, None));
    // failed stays failed until the number is raised.
    check(
        Some(host(2)),
        Some(rec(S::Failed, 2)),
        T0 + 600 * MIN,
        Action::Nothing,
    );
    check(Some(host(3)), Some(rec(S::Failed, 2)), T0, start(3, None));
    // During an active rebuild, a raised number supersedes it.
    for st in [
        S::PxeReady,
        S::PxeBooted,
        S::Installing,
        S::Installed,
        S::FirstBoot,
        S::Joining,
    ] {
        check(Some(host(5)), Some(rec(st, 4)), T0, start(5, Some(7)));
        check(Some(host(4)), Some(rec(st, 4)), T0, Action::Nothing);
        // Superseding wins over a missed deadline.
        check(
            Some(host(5)),
            Some(rec(st, 4)),
            T0 + 600 * MIN,
            start(5, Some(7)),
        );
    }
}

#[test]
fn deadlines() {
    let rows = [
        (
            S::PxeReady,
            30,
            "deadline missed: no PXE boot within 30m (in pxe_ready)",
        ),
        (
            S::PxeBooted,
            30,
            "deadline missed: installer did not fetch its answer within 30m (in pxe_booted)",
        ),
        (
            S::Installing,
            60,
            "deadline missed: installation not reported within 60m (in installing)",
        ),
        (
            S::Installed,
            30,
            "deadline missed: no phone-home from the installed system within 30m (in installed)",
        ),
        (
            S::FirstBoot,
            15,
            "deadline missed: cluster join not started within 15m (in first_boot)",
        ),
        (
            S::Joining,
            30,
            "deadline missed: cluster join not completed within 30m (in joining)",
        ),
    ];
    for (st, minutes, reason) in rows {
        let at = T0 + minutes * MIN;
        check(Some(host(1)), Some(rec(st, 1)), at - 1, Action::Nothing);
        check(Some(host(1)), Some(rec(st, 1)), at, fail(reason));
        check(
            Some(host(1)),
            Some(rec(st, 1)),
            at + 600 * MIN,
            fail(reason),
        );
        // A clock that went backwards never fails anything.
        check(
            Some(host(1)),
            Some(rec(st, 1)),
            T0 - 600 * MIN,
            Action::Nothing,
        );
    }
    // Idle and terminal states have no deadline.
    for st in [S::Registered, S::Ready, S::Failed] {
        check(
            Some(host(1)),
            Some(rec(st, 1)),
            T0 + 100_000 * MIN,
            Action::Nothing,
        );
    }
}

#[test]
fn configured_deadlines_are_used() {
    let d = Deadlines {
        installing: Duration::from_secs(90),
        ..Deadlines::default()
    };
    let r = rec(S::Installing, 1);
    assert_eq!(
        decide(Some(&host(1)), Some(&r), T0 + 89_999, &d),
        Action::Nothing
    );
    assert_eq!(
        decide(Some(&host(1)), Some(&r), T0 + 90_000, &d),
        fail("deadline missed: installation not reported within 1m 30s (in installing)")
    );
    assert_eq!(d.expires_at(S::Installing, T0), Some(T0 + 90_000));
    assert_eq!(d.expires_at(S::Ready, T0), None);
}

#[test]
fn defaults_match_the_settings_defaults() {
    let from_settings = Deadlines::from(&provisioning::settings::DeadlineSettings::default());
    assert_eq!(from_settings, Deadlines::default());
}
