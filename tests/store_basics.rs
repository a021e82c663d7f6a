//! The store's contract, method by method: what each write changes, what
//! it refuses (changing nothing), when events are published, what survives
//! a reopen, and that private keys die with their operation.

use provisioning::state::{EventKind as E, HostState as S};
use provisioning::store::{HostRecord, NewRebuild, OperationUpdate, Store, StoreError, StoreEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::broadcast::error::TryRecvError;

const MAC: &str = "58:47:ca:71:02:1e";

fn secrets(n: u8) -> NewRebuild {
    NewRebuild {
        token_hash: [n; 32],
        public_key: format!("ssh-ed25519 AAAA{n} provisioning"),
        private_key: format!("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret{n}\n"),
    }
}

/// A store with a clock the test moves.
fn store() -> (Store, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(1_000));
    let n = now.clone();
    let s = Store::open_in_memory()
        .unwrap()
        .with_clock(Arc::new(move || n.load(Ordering::SeqCst)));
    (s, now)
}

/// Everything observable about one host, for "nothing changed" checks.
fn dump(s: &Store, host: &str) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        s.host(host).unwrap(),
        s.operations(host).unwrap(),
        s.history(host).unwrap(),
        s.notes(host).unwrap()
    )
}

/// Registers `pve-01` and starts rebuild 1; returns the operation id.
fn armed(s: &Store) -> i64 {
    s.ensure_host("pve-01", MAC).unwrap();
    let t = s
        .start_rebuild("pve-01", 1, secrets(1), "rebuild 1 requested")
        .unwrap();
    t.operation.unwrap()
}

const HAPPY: [(E, S); 6] = [
    (E::IpxeServed, S::PxeBooted),
    (E::AnswerServed, S::Installing),
    (E::InstallReported, S::Installed),
    (E::PhoneHome, S::FirstBoot),
    (E::JoinStarted, S::Joining),
    (E::Completed, S::Ready),
];

#[test]
fn ensure_host_creates_updates_and_is_idempotent() {
    let (s, now) = store();
    assert_eq!(s.host("pve-01").unwrap(), None);
    s.ensure_host("pve-01", MAC).unwrap();
    let h = s.host("pve-01").unwrap().unwrap();
    assert_eq!(
        h,
        HostRecord {
            name: "pve-01".into(),
            mac: MAC.into(),
            state: S::Registered,
            observed_generation: 0,
            since_ms: 1_000,
            operation: None,
            last_error: None,
            retired: false,
        }
    );
    now.store(2_000, Ordering::SeqCst);
    s.ensure_host("pve-01", MAC).unwrap();
    assert_eq!(
        s.host("pve-01").unwrap().unwrap(),
        h,
        "second ensure changes nothing"
    );
    s.ensure_host("pve-01", "58:47:ca:71:02:1f").unwrap();
    let h2 = s.host("pve-01").unwrap().unwrap();
    assert_eq!(h2.mac, "58:47:ca:71:02:1f");
    assert_eq!(h2.since_ms, 1_000, "a MAC change is not a state change");
    assert!(s.history("pve-01").unwrap().is_empty());
}

#[test]
fn hosts_are_sorted_and_hide_retired() {
    let (s, _) = store();
    for n in ["c", "a", "b"] {
        s.ensure_host(n, MAC).unwrap();
    }
    s.retire("b", "declaration removed").unwrap();
    let names: Vec<_> = s.hosts().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(names, ["a", "c"]);
    let all: Vec<_> = s
        .all_hosts()
        .unwrap()
        .into_iter()
        .map(|h| (h.name, h.retired))
        .collect();
    assert_eq!(
        all,
        [("a".into(), false), ("b".into(), true), ("c".into(), false)]
    );
    assert!(s.host("b").unwrap().unwrap().retired);
}

#[test]
fn happy_path_walks_every_state_and_records_history() {
    let (s, now) = store();
    let op = armed(&s);
    let h = s.host("pve-01").unwrap().unwrap();
    assert_eq!(
        (h.state, h.observed_generation, h.operation),
        (S::PxeReady, 1, Some(op))
    );
    for (i, (ev, to)) in HAPPY.into_iter().enumerate() {
        now.store(10_000 + i as i64, Ordering::SeqCst);
        let t = s.apply("pve-01", op, ev, "test").unwrap();
        assert_eq!(
            (t.event, t.to, t.at_ms, t.operation),
            (ev, to, 10_000 + i as i64, Some(op))
        );
        let h = s.host("pve-01").unwrap().unwrap();
        assert_eq!((h.state, h.since_ms), (to, 10_000 + i as i64));
    }
    let h = s.host("pve-01").unwrap().unwrap();
    assert_eq!(h.operation, None, "ready closes the operation");
    let o = s.operation(op).unwrap().unwrap();
    assert_eq!(o.outcome.as_deref(), Some("ready"));
    assert_eq!(o.ended_ms, Some(10_005));
    assert_eq!(o.answer_served_ms, Some(10_001));
    assert!(!o.has_private_key);
    assert_eq!(s.private_key(op).unwrap(), None);
    assert_eq!(
        s.token_hash(op).unwrap(),
        None,
        "tokens die with the rebuild"
    );
    let hist: Vec<_> = s
        .history("pve-01")
        .unwrap()
        .into_iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        hist,
        [
            (S::Registered, S::PxeReady),
            (S::PxeReady, S::PxeBooted),
            (S::PxeBooted, S::Installing),
            (S::Installing, S::Installed),
            (S::Installed, S::FirstBoot),
            (S::FirstBoot, S::Joining),
            (S::Joining, S::Ready),
        ]
    );
}

#[test]
fn repeated_event_keeps_the_state_entry_time() {
    let (s, now) = store();
    let op = armed(&s);
    now.store(5_000, Ordering::SeqCst);
    s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
    now.store(9_000, Ordering::SeqCst);
    let t = s.apply("pve-01", op, E::IpxeServed, "ipxe again").unwrap();
    assert_eq!((t.from, t.to), (S::PxeBooted, S::PxeBooted));
    assert_eq!(s.host("pve-01").unwrap().unwrap().since_ms, 5_000);
}

#[test]
fn start_rebuild_stores_secrets_and_refuses_old_generations() {
    let (s, _) = store();
    let op = armed(&s);
    assert_eq!(s.token_hash(op).unwrap(), Some([1; 32]));
    assert_eq!(
        s.private_key(op).unwrap().as_deref(),
        Some("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret1\n")
    );
    let o = s.operation(op).unwrap().unwrap();
    assert_eq!(
        (o.generation, o.ended_ms, o.has_private_key),
        (1, None, true)
    );
    assert_eq!(o.public_key, "ssh-ed25519 AAAA1 provisioning");

    let before = dump(&s, "pve-01");
    for g in [0, 1] {
        let e = s
            .start_rebuild("pve-01", g, secrets(9), "again")
            .unwrap_err();
        assert!(
            matches!(e, StoreError::StaleGeneration { observed: 1, .. }),
            "{e}"
        );
    }
    assert_eq!(dump(&s, "pve-01"), before, "refused start changes nothing");
    let e = s.start_rebuild("nope", 1, secrets(9), "x").unwrap_err();
    assert!(matches!(e, StoreError::UnknownHost(_)), "{e}");
}

#[test]
fn superseding_closes_the_old_operation_and_deletes_its_key() {
    let (s, now) = store();
    let op1 = armed(&s);
    s.apply("pve-01", op1, E::IpxeServed, "ipxe").unwrap();
    s.apply("pve-01", op1, E::AnswerServed, "answer").unwrap();
    now.store(7_000, Ordering::SeqCst);
    let t = s
        .start_rebuild("pve-01", 5, secrets(5), "rebuild 5")
        .unwrap();
    let op2 = t.operation.unwrap();
    assert_ne!(op1, op2);
    assert_eq!((t.from, t.to), (S::Installing, S::PxeReady));
    let old = s.operation(op1).unwrap().unwrap();
    assert_eq!(old.outcome.as_deref(), Some("superseded"));
    assert_eq!(old.reason.as_deref(), Some("superseded by rebuild 5"));
    assert_eq!(old.ended_ms, Some(7_000));
    assert_eq!(s.private_key(op1).unwrap(), None);
    assert_eq!(s.token_hash(op1).unwrap(), None);
    assert!(s.private_key(op2).unwrap().is_some());
    let h = s.host("pve-01").unwrap().unwrap();
    assert_eq!(
        (h.operation, h.observed_generation, h.since_ms),
        (Some(op2), 5, 7_000)
    );
    // Newest first.
    let ids: Vec<_> = s
        .operations("pve-01")
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, [op2, op1]);
    // The old operation's callbacks are dead.
    let before = dump(&s, "pve-01");
    let e = s
        .apply("pve-01", op1, E::InstallReported, "late")
        .unwrap_err();
    assert!(matches!(e, StoreError::StaleOperation { operation, .. } if operation == op1));
    assert_eq!(dump(&s, "pve-01"), before);
}

#[test]
fn disallowed_and_stale_events_change_nothing() {
    let (s, _) = store();
    let op = armed(&s);
    let before = dump(&s, "pve-01");
    for ev in [
        E::InstallReported,
        E::PhoneHome,
        E::JoinStarted,
        E::Completed,
        E::StartRebuild,
    ] {
        let e = s.apply("pve-01", op, ev, "wrong").unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::NotAllowed {
                    state: S::PxeReady,
                    ..
                }
            ),
            "{ev:?}: {e}"
        );
        assert!(e.is_conflict());
    }
    let e = s
        .apply("pve-01", op + 100, E::IpxeServed, "stale")
        .unwrap_err();
    assert!(matches!(e, StoreError::StaleOperation { .. }), "{e}");
    let e = s.apply("ghost", op, E::IpxeServed, "who").unwrap_err();
    assert!(matches!(e, StoreError::UnknownHost(_)), "{e}");
    assert_eq!(dump(&s, "pve-01"), before);
}

#[test]
fn fail_records_reason_and_deletes_key_then_stays_failed() {
    let (s, _) = store();
    let op = armed(&s);
    s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
    let t = s
        .apply("pve-01", op, E::Fail, "installer reported an error")
        .unwrap();
    assert_eq!(t.to, S::Failed);
    let h = s.host("pve-01").unwrap().unwrap();
    assert_eq!(h.state, S::Failed);
    assert_eq!(h.operation, None);
    assert_eq!(h.last_error.as_deref(), Some("installer reported an error"));
    let o = s.operation(op).unwrap().unwrap();
    assert_eq!(o.outcome.as_deref(), Some("failed"));
    assert_eq!(o.reason.as_deref(), Some("installer reported an error"));
    assert!(!o.has_private_key);
    assert_eq!(s.private_key(op).unwrap(), None);
    // Nothing but a new rebuild leaves failed.
    let e = s.apply("pve-01", op, E::IpxeServed, "again").unwrap_err();
    assert!(e.is_conflict());
    let t = s
        .start_rebuild("pve-01", 2, secrets(2), "rebuild 2")
        .unwrap();
    assert_eq!((t.from, t.to), (S::Failed, S::PxeReady));
    assert_eq!(s.host("pve-01").unwrap().unwrap().last_error, None);
}

#[test]
fn fail_if_still_leaves_a_host_that_moved_on() {
    let (s, _) = store();
    let op = armed(&s);
    s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
    let before = dump(&s, "pve-01");
    let r = s
        .fail_if_still("pve-01", op, S::PxeReady, "deadline missed", 99_000)
        .unwrap();
    assert_eq!(r, None);
    assert_eq!(dump(&s, "pve-01"), before);
    let r = s
        .fail_if_still("pve-01", op, S::PxeBooted, "deadline missed", 99_000)
        .unwrap()
        .unwrap();
    assert_eq!((r.to, r.at_ms), (S::Failed, 99_000));
    assert_eq!(s.private_key(op).unwrap(), None);
}

#[test]
fn retire_cancels_the_rebuild_and_keeps_history() {
    let (s, _) = store();
    let op = armed(&s);
    s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
    s.add_note("pve-01", Some(op), "wol", "magic packet sent")
        .unwrap();
    s.retire("pve-01", "declaration removed").unwrap();
    let h = s.host("pve-01").unwrap().unwrap();
    assert!(h.retired);
    assert_eq!(h.state, S::Failed, "disarmed");
    assert_eq!(h.operation, None);
    let o = s.operation(op).unwrap().unwrap();
    assert_eq!(o.outcome.as_deref(), Some("cancelled"));
    assert_eq!(o.reason.as_deref(), Some("declaration removed"));
    assert_eq!(s.private_key(op).unwrap(), None);
    assert_eq!(s.history("pve-01").unwrap().len(), 3);
    assert_eq!(s.notes("pve-01").unwrap().len(), 1);
    assert!(s.open_operations().unwrap().is_empty());
    // Retiring twice is harmless; callbacks of the cancelled rebuild are dead.
    let before = dump(&s, "pve-01");
    s.retire("pve-01", "again").unwrap();
    assert!(s.apply("pve-01", op, E::AnswerServed, "late").is_err());
    assert!(s.start_rebuild("pve-01", 2, secrets(2), "x").is_err());
    assert_eq!(dump(&s, "pve-01"), before);
    // Declared again: back, still failed, generation kept.
    s.ensure_host("pve-01", MAC).unwrap();
    let h = s.host("pve-01").unwrap().unwrap();
    assert!(!h.retired);
    assert_eq!((h.state, h.observed_generation), (S::Failed, 1));
    assert!(matches!(
        s.retire("ghost", "x"),
        Err(StoreError::UnknownHost(_))
    ));
}

#[test]
fn retire_of_an_idle_host_keeps_its_state() {
    let (s, _) = store();
    s.ensure_host("pve-01", MAC).unwrap();
    s.retire("pve-01", "declaration removed").unwrap();
    let h = s.host("pve-01").unwrap().unwrap();
    assert_eq!((h.state, h.retired), (S::Registered, true));
    assert!(s.history("pve-01").unwrap().is_empty());
}

#[test]
fn operation_updates_merge_and_refuse_ended_operations() {
    let (s, _) = store();
    let op = armed(&s);
    s.update_operation(
        op,
        OperationUpdate {
            dmi_uuid: Some("4c4c4544-0042".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let keys = serde_json::json!({"ed25519": "ssh-ed25519 AAAAC3"});
    s.update_operation(
        op,
        OperationUpdate {
            ssh_host_keys: Some(keys.clone()),
            machine_id: Some("m1".into()),
            mgmt_address: Some("10.0.0.5".into()),
            phone_home_ip: Some("10.0.0.5".into()),
            hardware_id: Some("hw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let o = s.operation(op).unwrap().unwrap();
    assert_eq!(
        o.dmi_uuid.as_deref(),
        Some("4c4c4544-0042"),
        "None leaves fields alone"
    );
    assert_eq!(o.ssh_host_keys, Some(keys));
    assert_eq!(o.machine_id.as_deref(), Some("m1"));
    assert_eq!(o.mgmt_address.as_deref(), Some("10.0.0.5"));
    assert_eq!(o.phone_home_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(o.hardware_id.as_deref(), Some("hw"));
    assert!(matches!(
        s.update_operation(12345, OperationUpdate::default()),
        Err(StoreError::UnknownOperation(12345))
    ));
    s.apply("pve-01", op, E::Fail, "x").unwrap();
    assert!(matches!(
        s.update_operation(op, OperationUpdate::default()),
        Err(StoreError::StaleOperation { .. })
    ));
}

#[test]
fn apply_with_writes_facts_and_transition_together() {
    let (s, _) = store();
    let op = armed(&s);
    let upd = || OperationUpdate {
        ssh_host_keys: Some(serde_json::json!({"ed25519": "k"})),
        ..Default::default()
    };
    // Refused transition: the facts are not written either.
    assert!(
        s.apply_with("pve-01", op, E::InstallReported, "webhook", upd())
            .is_err()
    );
    assert_eq!(s.operation(op).unwrap().unwrap().ssh_host_keys, None);
    s.apply("pve-01", op, E::AnswerServed, "answer").unwrap();
    s.apply_with("pve-01", op, E::InstallReported, "webhook", upd())
        .unwrap();
    assert!(s.operation(op).unwrap().unwrap().ssh_host_keys.is_some());
}

#[test]
fn answer_is_served_at_most_once() {
    let (s, _) = store();
    let op = armed(&s);
    assert!(s.mark_answer_served(op).unwrap());
    assert!(!s.mark_answer_served(op).unwrap());
    let op2 = s
        .start_rebuild("pve-01", 2, secrets(2), "rebuild 2")
        .unwrap()
        .operation
        .unwrap();
    assert!(matches!(
        s.mark_answer_served(op),
        Err(StoreError::StaleOperation { .. })
    ));
    s.apply("pve-01", op2, E::AnswerServed, "answer").unwrap();
    assert!(
        !s.mark_answer_served(op2).unwrap(),
        "apply(AnswerServed) marks it"
    );
    assert!(matches!(
        s.mark_answer_served(999),
        Err(StoreError::UnknownOperation(999))
    ));
}

#[test]
fn a_write_that_fails_midway_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let s = Store::open(&path).unwrap();
    let op = armed(&s);
    s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
    // Fault injection: the transition row is the last write of a
    // transaction; make it fail after everything else was written.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN NEW.cause = 'boom'
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    let mut rx = s.subscribe();
    let before = dump(&s, "pve-01");
    let e = s
        .start_rebuild("pve-01", 2, secrets(2), "boom")
        .unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    let e = s.apply("pve-01", op, E::Fail, "boom").unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    let e = s.retire_at("pve-01", "boom", 5).unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    assert_eq!(dump(&s, "pve-01"), before);
    assert!(s.private_key(op).unwrap().is_some());
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    // Too large a generation is refused before anything is written.
    let e = s
        .start_rebuild("pve-01", u64::MAX, secrets(2), "huge")
        .unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    assert_eq!(dump(&s, "pve-01"), before);
}

#[test]
fn serve_answer_mints_the_token_once() {
    let (s, now) = store();
    let op = armed(&s);
    s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
    now.store(4_000, Ordering::SeqCst);
    let upd = || OperationUpdate {
        dmi_uuid: Some("uuid-1".into()),
        ..Default::default()
    };
    let t = s
        .serve_answer("pve-01", op, [7; 32], upd(), "answer")
        .unwrap();
    assert_eq!((t.event, t.to), (E::AnswerServed, S::Installing));
    assert_eq!(s.token_hash(op).unwrap(), Some([7; 32]));
    let o = s.operation(op).unwrap().unwrap();
    assert_eq!(
        (o.answer_served_ms, o.dmi_uuid.as_deref()),
        (Some(4_000), Some("uuid-1"))
    );
    // A second answer for the same rebuild is refused and changes nothing.
    let before = dump(&s, "pve-01");
    let e = s
        .serve_answer("pve-01", op, [8; 32], upd(), "again")
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NotAllowed {
                state: S::Installing,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(dump(&s, "pve-01"), before);
    assert_eq!(s.token_hash(op).unwrap(), Some([7; 32]));
    // A stale operation gets no answer (and no token).
    let op2 = s
        .start_rebuild("pve-01", 2, secrets(2), "rebuild 2")
        .unwrap()
        .operation
        .unwrap();
    let e = s
        .serve_answer("pve-01", op, [9; 32], upd(), "stale")
        .unwrap_err();
    assert!(matches!(e, StoreError::StaleOperation { .. }), "{e}");
    assert_eq!(s.token_hash(op2).unwrap(), Some([2; 32]));
}

#[test]
fn notes_are_kept_in_order_and_need_a_host() {
    let (s, now) = store();
    s.ensure_host("pve-01", MAC).unwrap();
    let a = s.add_note("pve-01", None, "wol", "sent").unwrap();
    now.store(2_000, Ordering::SeqCst);
    let b = s.add_note("pve-01", None, "infra", "registered").unwrap();
    assert_eq!(s.notes("pve-01").unwrap(), [a, b.clone()]);
    assert_eq!((b.kind.as_str(), b.at_ms), ("infra", 2_000));
    assert!(matches!(
        s.add_note("ghost", None, "x", "y"),
        Err(StoreError::UnknownHost(_))
    ));
}

#[test]
fn private_key_can_be_deleted_early() {
    let (s, _) = store();
    let op = armed(&s);
    s.delete_private_key(op).unwrap();
    assert_eq!(s.private_key(op).unwrap(), None);
    assert!(!s.operation(op).unwrap().unwrap().has_private_key);
    assert_eq!(
        s.token_hash(op).unwrap(),
        Some([1; 32]),
        "the rebuild is still open"
    );
}

#[test]
fn unknown_machines_are_counted() {
    let (s, now) = store();
    s.record_unknown_mac("aa:bb:cc:dd:ee:01").unwrap();
    now.store(2_000, Ordering::SeqCst);
    s.record_unknown_mac("aa:bb:cc:dd:ee:02").unwrap();
    now.store(3_000, Ordering::SeqCst);
    s.record_unknown_mac("aa:bb:cc:dd:ee:01").unwrap();
    let u = s.unknown_machines().unwrap();
    assert_eq!(u.len(), 2);
    assert_eq!(
        (
            u[0].mac.as_str(),
            u[0].first_seen_ms,
            u[0].last_seen_ms,
            u[0].count
        ),
        ("aa:bb:cc:dd:ee:01", 1_000, 3_000, 2)
    );
    assert_eq!((u[1].mac.as_str(), u[1].count), ("aa:bb:cc:dd:ee:02", 1));
}

#[test]
fn stats_and_open_operations() {
    let (s, _) = store();
    for n in ["a", "b", "c", "d"] {
        s.ensure_host(n, MAC).unwrap();
    }
    let op_b = s
        .start_rebuild("b", 1, secrets(1), "x")
        .unwrap()
        .operation
        .unwrap();
    let op_c = s
        .start_rebuild("c", 3, secrets(3), "x")
        .unwrap()
        .operation
        .unwrap();
    s.apply("c", op_c, E::IpxeServed, "ipxe").unwrap();
    s.retire("d", "gone").unwrap();
    let stats = s.stats().unwrap();
    assert_eq!(
        stats.into_iter().collect::<Vec<_>>(),
        [(S::Registered, 1), (S::PxeReady, 1), (S::PxeBooted, 1)]
    );
    let open: Vec<_> = s
        .open_operations()
        .unwrap()
        .into_iter()
        .map(|o| (o.host, o.operation, o.generation, o.state))
        .collect();
    assert_eq!(
        open,
        [
            ("b".into(), op_b, 1, S::PxeReady),
            ("c".into(), op_c, 3, S::PxeBooted)
        ]
    );
}

#[test]
fn events_are_published_after_commit_and_only_for_changes() {
    let (s, _) = store();
    let mut rx = s.subscribe();
    let op = armed(&s);
    match rx.try_recv().unwrap() {
        StoreEvent::Transition(t) => {
            assert_eq!((t.to, t.operation), (S::PxeReady, Some(op)));
            // Published after commit: the subscriber sees what the event says.
            assert_eq!(s.host("pve-01").unwrap().unwrap().state, S::PxeReady);
            assert_eq!(s.history("pve-01").unwrap().last(), Some(&t));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.apply("pve-01", op, E::Completed, "nope").is_err());
    assert!(s.start_rebuild("pve-01", 1, secrets(1), "nope").is_err());
    assert_eq!(
        rx.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "refusals publish nothing"
    );
    let n = s.add_note("pve-01", Some(op), "wol", "sent").unwrap();
    match rx.try_recv().unwrap() {
        StoreEvent::Note(got) => assert_eq!(got, n),
        other => panic!("unexpected {other:?}"),
    }
    s.retire("pve-01", "gone").unwrap();
    match rx.try_recv().unwrap() {
        StoreEvent::Transition(t) => assert_eq!((t.to, t.event), (S::Failed, E::Fail)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn concurrent_writers_each_publish_once() {
    let (s, _) = store();
    let s = Arc::new(s);
    for i in 0..8 {
        s.ensure_host(&format!("h{i}"), MAC).unwrap();
    }
    let mut rx = s.subscribe();
    std::thread::scope(|scope| {
        for i in 0..8 {
            let s = s.clone();
            scope.spawn(move || {
                s.start_rebuild(&format!("h{i}"), 1, secrets(1), "go")
                    .unwrap();
            });
        }
    });
    let mut seen = Vec::new();
    while let Ok(StoreEvent::Transition(t)) = rx.try_recv() {
        seen.push(t.host);
    }
    seen.sort();
    assert_eq!(seen.len(), 8);
}

#[test]
fn secrets_stay_out_of_debug_and_serialized_records() {
    let (s, _) = store();
    let op = armed(&s);
    let o = s.operation(op).unwrap().unwrap();
    let h = s.host("pve-01").unwrap().unwrap();
    let hist = s.history("pve-01").unwrap();
    let texts = [
        format!("{o:?}{h:?}{hist:?}{s:?}"),
        serde_json::to_string(&o).unwrap(),
        format!("{:?}", secrets(1)),
    ];
    for t in texts {
        assert!(!t.contains("secret1"), "private key leaked: {t}");
        assert!(!t.contains("PRIVATE KEY"), "private key leaked: {t}");
        assert!(!t.contains("[1, 1, 1"), "token hash leaked: {t}");
    }
}

#[test]
fn reopening_the_file_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("db.sqlite3");
    let (op, before) = {
        let s = Store::open(&path).unwrap();
        let op = armed(&s);
        s.apply("pve-01", op, E::IpxeServed, "ipxe").unwrap();
        s.add_note("pve-01", Some(op), "wol", "sent").unwrap();
        s.record_unknown_mac("aa:bb:cc:dd:ee:ff").unwrap();
        (op, (dump(&s, "pve-01"), s.unknown_machines().unwrap()))
    };
    let s = Store::open(&path).unwrap();
    assert_eq!((dump(&s, "pve-01"), s.unknown_machines().unwrap()), before);
    assert_eq!(s.token_hash(op).unwrap(), Some([1; 32]));
    assert!(s.private_key(op).unwrap().is_some());
    s.apply("pve-01", op, E::AnswerServed, "answer after restart")
        .unwrap();
    assert_eq!(s.path(), Some(path.as_path()));
}

#[test]
fn database_files_are_private_and_wal() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = Store::open_in_dir(&state).unwrap();
    s.ensure_host("pve-01", MAC).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let db = state.join(provisioning::store::DB_FILE_NAME);
    assert_eq!(mode(&db), 0o600);
    let wal = state.join(format!("{}-wal", provisioning::store::DB_FILE_NAME));
    assert!(wal.exists(), "WAL mode: {} missing", wal.display());
    assert_eq!(mode(&wal), 0o600);
    drop(s);
    // A database file that became readable by others is tightened on open.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _s = Store::open_in_dir(&state).unwrap();
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn store_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

/// A deleted private key is in no file of the store afterwards: not in the
/// database's free pages (secure_delete) and not in the WAL (checkpointed).
#[test]
fn deleted_private_key_leaves_no_trace_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = provisioning::store::Store::open_in_dir(dir.path()).unwrap();
    s.ensure_host("pve-01", "52:54:00:12:34:56").unwrap();
    let marker = "PRIVATE-KEY-MARKER-0123456789abcdef";
    let t = s
        .start_rebuild(
            "pve-01",
            1,
            provisioning::store::NewRebuild {
                token_hash: [7; 32],
                public_key: "ssh-ed25519 AAAA test".into(),
                private_key: marker.into(),
            },
            "test",
        )
        .unwrap();
    let op = t.operation.unwrap();
    let contains = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read(e.path())
                    .map(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
                    .unwrap_or(false)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(!contains(dir.path()).is_empty(), "the key is stored first");
    s.delete_private_key(op).unwrap();
    assert_eq!(
        contains(dir.path()),
        Vec::<String>::new(),
        "files still holding the key"
    );

    // Ending a rebuild (here: failing it) scrubs as well.
    let t = s
        .start_rebuild(
            "pve-01",
            2,
            provisioning::store::NewRebuild {
                token_hash: [8; 32],
                public_key: "ssh-ed25519 AAAA test".into(),
                private_key: marker.into(),
            },
            "test",
        )
        .unwrap();
    s.apply(
        "pve-01",
        t.operation.unwrap(),
        provisioning::state::EventKind::Fail,
        "boom",
    )
    .unwrap();
    assert_eq!(
        contains(dir.path()),
        Vec::<String>::new(),
        "files still holding the key after fail"
    );
}
