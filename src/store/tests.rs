//! The host cache against the table: after every store operation —
//! including writes that fail and roll back, and changes no store method
//! makes — the cache must equal what a second, independent connection
//! reads from the same file, and every cached read must answer what the
//! SQL it replaced answered.

use super::cache::{Entry, cached, keyed_row};
use super::*;
use crate::state::{EventKind as E, HostState as S};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

const MACS: [&str; 3] = [
    "58:47:ca:71:02:1e",
    "58:47:ca:71:02:1f",
    "02:00:00:00:00:01",
];

fn secrets(n: u64) -> NewRebuild {
    NewRebuild {
        token_hash: [n as u8; 32],
        public_key: format!("ssh-ed25519 AAAA{n} provisioning"),
        private_key: format!("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret{n}\n"),
    }
}

/// A store on a file, its clock, and a second connection to the same file.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    now: Arc<AtomicI64>,
    db: Connection,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let now = Arc::new(AtomicI64::new(1_000));
    let n = now.clone();
    let store = Store::open(&path)
        .unwrap()
        .with_clock(Arc::new(move || n.load(Ordering::SeqCst)));
    let db = Connection::open(&path).unwrap();
    // Fault injection: the transition row is the last write of every state
    // change, after the host row was updated; a cause of `boom` makes it
    // fail, so the whole transaction rolls back.
    db.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN NEW.cause = 'boom'
         BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .unwrap();
    Fixture {
        _dir: dir,
        store,
        now,
        db,
    }
}

impl Fixture {
    fn tick(&self) -> i64 {
        self.now.fetch_add(1_000, Ordering::SeqCst) + 1_000
    }

    /// The open operation of `host` as the table has it.
    fn current_op(&self, host: &str) -> Option<i64> {
        self.db
            .query_row(
                "SELECT operation_id FROM hosts WHERE name = ?1",
                [host],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
            .flatten()
    }

    /// The newest operation of `host`, open or ended.
    fn last_op(&self, host: &str) -> Option<i64> {
        self.db
            .query_row(
                "SELECT max(id) FROM operations WHERE host = ?1",
                [host],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn generation(&self, host: &str) -> u64 {
        self.db
            .query_row(
                "SELECT observed_generation FROM hosts WHERE name = ?1",
                [host],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .unwrap()
            .map_or(0, |g| g as u64)
    }

    /// Asserts the cache equals the table and every cached read answers
    /// what the SQL it replaced answers on the independent connection.
    fn check(&self) {
        let s = &self.store;
        let mut by_name = BTreeMap::new();
        let mut by_rowid = HashMap::new();
        let mut stmt = self
            .db
            .prepare(&format!("SELECT {HOST_COLUMNS}, rowid FROM hosts"))
            .unwrap();
        for row in stmt.query_map([], keyed_row).unwrap() {
            let (rowid, row) = row.unwrap();
            by_rowid.insert(rowid, row.0.clone());
            by_name.insert(
                row.0.clone(),
                Entry {
                    rowid,
                    row: cached(row),
                },
            );
        }
        {
            let t = s.hosts.read().expect("the cache is not stale");
            assert_eq!(t.by_name, by_name, "cached rows");
            assert_eq!(t.by_rowid, by_rowid, "cached rowids");
        }
        assert_eq!(
            format!("{:?}", s.all_hosts()),
            format!("{:?}", self.sql_hosts("")),
            "all_hosts"
        );
        assert_eq!(
            format!("{:?}", s.hosts()),
            format!("{:?}", self.sql_hosts("WHERE retired_at IS NULL")),
            "hosts"
        );
        assert_eq!(
            format!("{:?}", s.stats()),
            format!("{:?}", self.sql_stats()),
            "stats"
        );
        for name in by_name.keys().map(String::as_str).chain(["absent"]) {
            let sql = load_host(&self.db, name);
            assert_eq!(
                format!("{:?}", s.host(name)),
                format!("{sql:?}"),
                "host({name})"
            );
            let boot = sql.map(|h| h.map(|h| (h.state, h.operation)));
            assert_eq!(
                format!("{:?}", s.host_boot_state(name)),
                format!("{boot:?}"),
                "host_boot_state({name})"
            );
        }
    }

    /// `hosts()`/`all_hosts()` as they were written before the cache.
    fn sql_hosts(&self, filter: &str) -> Result<Vec<HostRecord>> {
        let mut stmt = self.db.prepare(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts {filter} ORDER BY name"
        ))?;
        let rows = stmt.query_map([], host_row)?;
        rows.map(|r| host_record(r?)).collect()
    }

    /// `stats()` as it was written before the cache.
    fn sql_stats(&self) -> Result<BTreeMap<HostState, u64>> {
        let mut stmt = self
            .db
            .prepare("SELECT state, count(*) FROM hosts WHERE retired_at IS NULL GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (state, n) = r?;
            Ok((parse_state(&state)?, from_sql_u64("count", n)?))
        })
        .collect()
    }
}

#[test]
fn cache_equals_the_table_after_every_public_operation() {
    let f = fixture();
    let s = &f.store;
    f.check();
    s.ensure_host("a", MACS[0]).unwrap();
    f.check();
    s.ensure_host("b", MACS[1]).unwrap();
    f.check();
    f.tick();
    s.ensure_host("a", MACS[0]).unwrap(); // no change
    f.check();
    s.ensure_host("a", MACS[2]).unwrap(); // new MAC
    f.check();
    assert_eq!(s.host("a").unwrap().unwrap().mac, MACS[2]);

    let op = s
        .start_rebuild("a", 1, secrets(1), "rebuild 1")
        .unwrap()
        .operation
        .unwrap();
    f.check();
    assert_eq!(
        s.host_boot_state("a").unwrap(),
        Some((S::PxeReady, Some(op)))
    );
    let e = s.start_rebuild("a", 1, secrets(1), "again").unwrap_err();
    assert!(matches!(e, StoreError::StaleGeneration { .. }), "{e}");
    f.check();
    let e = s.apply("a", op, E::Completed, "too early").unwrap_err();
    assert!(matches!(e, StoreError::NotAllowed { .. }), "{e}");
    f.check();
    let e = s.apply("a", op + 100, E::IpxeServed, "stale").unwrap_err();
    assert!(matches!(e, StoreError::StaleOperation { .. }), "{e}");
    f.check();
    let e = s.apply("nobody", op, E::IpxeServed, "unknown").unwrap_err();
    assert!(matches!(e, StoreError::UnknownHost(_)), "{e}");
    f.check();
    let e = s
        .start_rebuild("a", u64::MAX, secrets(9), "huge")
        .unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    f.check();

    f.tick();
    s.apply("a", op, E::IpxeServed, "ipxe").unwrap();
    f.check();
    f.tick();
    s.apply("a", op, E::IpxeServed, "ipxe again").unwrap();
    f.check();
    s.update_operation(
        op,
        OperationUpdate {
            dmi_uuid: Some("uuid".into()),
            ..OperationUpdate::default()
        },
    )
    .unwrap();
    f.check();
    s.serve_answer("a", op, [7; 32], OperationUpdate::default(), "answer")
        .unwrap();
    f.check();
    assert!(!s.mark_answer_served(op).unwrap());
    f.check();
    s.apply_with(
        "a",
        op,
        E::InstallReported,
        "installed",
        OperationUpdate {
            phone_home_ip: Some("192.0.2.9".into()),
            ..OperationUpdate::default()
        },
    )
    .unwrap();
    f.check();
    // The host moved on: left alone.
    let t = f.tick();
    assert_eq!(
        s.fail_if_still("a", op, S::Installing, "late", t).unwrap(),
        None
    );
    f.check();
    s.add_note("a", Some(op), "wol", "sent").unwrap();
    f.check();
    s.add_note("nobody", None, "wol", "sent").unwrap_err();
    f.check();
    s.record_unknown_mac("02:00:00:00:00:99").unwrap();
    f.check();
    s.delete_private_key(op).unwrap();
    f.check();

    // Superseded by rebuild 2, then failed for a deadline.
    let op2 = s
        .start_rebuild("a", 2, secrets(2), "rebuild 2")
        .unwrap()
        .operation
        .unwrap();
    f.check();
    let t = f.tick();
    assert!(
        s.fail_if_still("a", op2, S::PxeReady, "deadline", t)
            .unwrap()
            .is_some()
    );
    f.check();
    assert_eq!(s.host_boot_state("a").unwrap(), Some((S::Failed, None)));
    let e = s
        .apply("a", op2, E::IpxeServed, "after failure")
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");
    f.check();

    // Retired mid-rebuild, retired again (nothing), refused, declared again.
    let op3 = s
        .start_rebuild("b", 1, secrets(3), "rebuild b")
        .unwrap()
        .operation
        .unwrap();
    f.check();
    let t = f.tick();
    assert!(s.retire_at("b", "gone", t).unwrap().is_some());
    f.check();
    assert!(s.hosts().unwrap().iter().all(|h| h.name != "b"));
    assert!(s.all_hosts().unwrap().iter().any(|h| h.name == "b"));
    s.retire("b", "gone again").unwrap();
    f.check();
    let e = s.start_rebuild("b", 2, secrets(4), "retired").unwrap_err();
    assert!(matches!(e, StoreError::UnknownHost(_)), "{e}");
    f.check();
    let e = s.apply("b", op3, E::IpxeServed, "retired").unwrap_err();
    assert!(e.is_conflict(), "{e}");
    f.check();
    s.ensure_host("b", MACS[1]).unwrap();
    f.check();
    assert!(!s.host("b").unwrap().unwrap().retired);
    s.retire("a", "idle").unwrap();
    f.check();
    let e = s.retire("nobody", "unknown").unwrap_err();
    assert!(matches!(e, StoreError::UnknownHost(_)), "{e}");
    f.check();
}

#[test]
fn a_rolled_back_write_leaves_the_cache_equal_to_the_table() {
    let f = fixture();
    let s = &f.store;
    s.ensure_host("a", MACS[0]).unwrap();
    let op = s
        .start_rebuild("a", 1, secrets(1), "rebuild 1")
        .unwrap()
        .operation
        .unwrap();
    let before = s.host("a").unwrap();
    f.tick();
    // Each of these updated the host row, then failed on the transition row.
    let e = s.start_rebuild("a", 2, secrets(2), "boom").unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    f.check();
    let e = s.apply("a", op, E::IpxeServed, "boom").unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    f.check();
    let e = s.apply("a", op, E::Fail, "boom").unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    f.check();
    let e = s.retire("a", "boom").unwrap_err();
    assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    f.check();
    assert_eq!(s.host("a").unwrap(), before);
    // A change inside a transaction that then fails by hand.
    let e = s
        .write(|tx, _| -> Result<()> {
            tx.execute("UPDATE hosts SET mac = 'x', retired_at = 1", [])?;
            tx.execute(
                "INSERT INTO hosts (name, mac, state, since_ms) VALUES ('z', 'm', 'registered', 1)",
                [],
            )?;
            Err(StoreError::Corrupt("refused".into()))
        })
        .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    f.check();
    assert_eq!(s.host("a").unwrap(), before);
    assert_eq!(s.host("z").unwrap(), None);
}

/// No store method renames, replaces or deletes a host row; the cache still
/// follows such changes exactly, so a future write cannot silently break it.
#[test]
fn cache_follows_changes_no_store_method_makes() {
    let f = fixture();
    let s = &f.store;
    for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        s.ensure_host(name, MACS[i % MACS.len()]).unwrap();
    }
    s.start_rebuild("e", 1, secrets(1), "rebuild").unwrap();
    f.check();
    let raw = |sql: &str| {
        s.write(|tx, _| Ok(tx.execute_batch(sql)?)).unwrap();
        f.check();
    };
    raw("UPDATE hosts SET name = 'a2' WHERE name = 'a'");
    raw(
        "INSERT OR REPLACE INTO hosts (name, mac, state, since_ms) VALUES ('b', 'new', 'failed', 7)",
    );
    raw("DELETE FROM hosts WHERE name = 'c'");
    raw("UPDATE hosts SET state = 'bogus' WHERE name = 'd'");
    assert!(matches!(s.host("d"), Err(StoreError::Corrupt(_))));
    assert!(matches!(s.hosts(), Err(StoreError::Corrupt(_))));
    assert!(matches!(s.stats(), Err(StoreError::Corrupt(_))));
    raw("UPDATE hosts SET state = 'registered', observed_generation = -1 WHERE name = 'd'");
    assert!(
        s.stats().is_ok(),
        "a bad generation does not spoil the counts"
    );
    raw("UPDATE hosts SET retired_at = 1, state = 'bogus' WHERE name = 'd'");
    assert!(s.hosts().is_ok(), "a retired row is not read by hosts()");
    raw("INSERT INTO hosts (name, mac, state, since_ms) VALUES ('c', 'back', 'registered', 8)");
    // Every row that has no history; without a WHERE clause SQLite may
    // truncate, which would bypass the hook (it must not, with foreign keys).
    raw("DELETE FROM hosts WHERE name <> 'e'");
    raw(
        "UPDATE hosts SET operation_id = NULL; DELETE FROM transitions; DELETE FROM operations; DELETE FROM hosts",
    );
    assert_eq!(s.all_hosts().unwrap(), vec![]);
    s.ensure_host("a", MACS[0]).unwrap();
    f.check();
}

#[test]
fn a_stale_cache_is_reloaded_before_it_is_read() {
    let f = fixture();
    let s = &f.store;
    s.ensure_host("a", MACS[0]).unwrap();
    s.hosts.mark_stale();
    assert!(s.hosts.read().is_none());
    assert_eq!(s.host("a").unwrap().unwrap().mac, MACS[0]);
    f.check();
    s.hosts.mark_stale();
    s.ensure_host("b", MACS[1]).unwrap();
    f.check();
}

#[derive(Clone, Debug)]
enum Op {
    Ensure {
        host: usize,
        mac: usize,
    },
    Rebuild {
        host: usize,
        ahead: u64,
        boom: bool,
    },
    /// `event: None` is the event that moves the host along the happy path.
    Apply {
        host: usize,
        current: bool,
        event: Option<usize>,
        boom: bool,
    },
    FailIfStill {
        host: usize,
        state: usize,
    },
    ServeAnswer {
        host: usize,
    },
    Retire {
        host: usize,
        boom: bool,
    },
    Note {
        host: usize,
    },
    Update {
        host: usize,
    },
    MarkServed {
        host: usize,
    },
    DeleteKey {
        host: usize,
    },
    UnknownMac {
        mac: usize,
    },
}

/// Index 3 is never declared.
const HOSTS: [&str; 4] = ["a", "b", "c", "never"];

fn op() -> impl Strategy<Value = Op> {
    // Mostly declared names: an unknown host is refused before any write.
    let host = || prop_oneof![9 => 0..HOSTS.len() - 1, 1 => Just(HOSTS.len() - 1)];
    prop_oneof![
        3 => (host(), 0..MACS.len()).prop_map(|(host, mac)| Op::Ensure { host, mac }),
        4 => (host(), 0..3u64, prop::bool::weighted(0.2)).prop_map(|(host, ahead, boom)| Op::Rebuild { host, ahead, boom }),
        12 => (host(), prop::bool::weighted(0.9), prop::option::weighted(0.3, 0..ALL_EVENTS.len()), prop::bool::weighted(0.15))
            .prop_map(|(host, current, event, boom)| Op::Apply { host, current, event, boom }),
        1 => (host(), 0..S::ALL.len()).prop_map(|(host, state)| Op::FailIfStill { host, state }),
        1 => host().prop_map(|host| Op::ServeAnswer { host }),
        1 => (host(), prop::bool::weighted(0.3)).prop_map(|(host, boom)| Op::Retire { host, boom }),
        1 => host().prop_map(|host| Op::Note { host }),
        1 => host().prop_map(|host| Op::Update { host }),
        1 => host().prop_map(|host| Op::MarkServed { host }),
        1 => host().prop_map(|host| Op::DeleteKey { host }),
        1 => (0..MACS.len()).prop_map(|mac| Op::UnknownMac { mac }),
    ]
}

fn cause(boom: bool) -> &'static str {
    if boom { "boom" } else { "test" }
}

impl Fixture {
    /// The event that moves `host` one step along the happy path.
    fn next_event(&self, host: &str) -> E {
        let state: Option<String> = self
            .db
            .query_row("SELECT state FROM hosts WHERE name = ?1", [host], |r| {
                r.get(0)
            })
            .optional()
            .unwrap();
        match state.as_deref().map(parse_state).transpose().unwrap() {
            Some(S::PxeBooted) => E::AnswerServed,
            Some(S::Installing) => E::InstallReported,
            Some(S::Installed) => E::PhoneHome,
            Some(S::FirstBoot) => E::JoinStarted,
            Some(S::Joining) => E::Completed,
            _ => E::IpxeServed,
        }
    }

    /// Runs one operation; refusals and injected failures are part of the
    /// test, so results are ignored (the check after it is what matters).
    fn run(&self, op: &Op) {
        let s = &self.store;
        let now = self.tick();
        let op_of = |host: &str, current: bool| {
            let cur = self.current_op(host);
            if current {
                cur.or(self.last_op(host)).unwrap_or(1)
            } else {
                self.last_op(host).map_or(999, |o| o + 7)
            }
        };
        match *op {
            Op::Ensure { host, mac } => drop(s.ensure_host_at(HOSTS[host], MACS[mac], now)),
            Op::Rebuild { host, ahead, boom } => {
                let h = HOSTS[host];
                let g = (self.generation(h) + ahead).max(1);
                drop(s.start_rebuild_at(h, g, secrets(g), cause(boom), now));
            }
            Op::Apply {
                host,
                current,
                event,
                boom,
            } => {
                let h = HOSTS[host];
                let event = event.map_or_else(|| self.next_event(h), |e| ALL_EVENTS[e]);
                drop(s.apply_at(h, op_of(h, current), event, cause(boom), now));
            }
            Op::FailIfStill { host, state } => {
                let h = HOSTS[host];
                drop(s.fail_if_still(h, op_of(h, true), S::ALL[state], "deadline", now));
            }
            Op::ServeAnswer { host } => {
                let h = HOSTS[host];
                drop(s.serve_answer(h, op_of(h, true), [3; 32], OperationUpdate::default(), "a"));
            }
            Op::Retire { host, boom } => drop(s.retire_at(HOSTS[host], cause(boom), now)),
            Op::Note { host } => drop(s.add_note(HOSTS[host], None, "wol", "sent")),
            Op::Update { host } => {
                let update = OperationUpdate {
                    machine_id: Some("m".into()),
                    ..OperationUpdate::default()
                };
                drop(s.update_operation(op_of(HOSTS[host], true), update));
            }
            Op::MarkServed { host } => drop(s.mark_answer_served(op_of(HOSTS[host], true))),
            Op::DeleteKey { host } => drop(s.delete_private_key(op_of(HOSTS[host], true))),
            Op::UnknownMac { mac } => drop(s.record_unknown_mac(MACS[mac])),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_cache_exact(ops in prop::collection::vec(op(), 1..60)) {
        let f = fixture();
        f.check();
        for op in &ops {
            f.run(op);
            f.check();
        }
    }
}
