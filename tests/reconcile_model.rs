//! Property: any sequence of declaration edits (add, change `rebuild`,
//! change MAC, delete), boot-flow callbacks (current and stale), passing
//! time, reconcile passes and daemon restarts (drop the store, reopen the
//! file) leaves the store in the state a small pure reference model
//! predicts; and a reconcile pass right after another one does nothing.

use proptest::prelude::*;
use provisioning::decl::{DiskSpec, Host, HostName, Snapshot, SourceLoc};
use provisioning::reconcile::{Deadlines, Reconciler};
use provisioning::state::{self, EventKind as E, HostState as S};
use provisioning::store::{NewRebuild, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const NAMES: [&str; 3] = ["a", "b", "c"];
const MACS: [&str; 2] = ["02:00:00:00:00:0", "02:00:00:00:01:0"];
const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const BOOT_EVENTS: [E; 7] = [
    E::IpxeServed,
    E::AnswerServed,
    E::InstallReported,
    E::PhoneHome,
    E::JoinStarted,
    E::Completed,
    E::Fail,
];

/// The callback a host in `state` waits for.
fn expected_next(state: S) -> E {
    match state {
        S::PxeBooted => E::AnswerServed,
        S::Installing => E::InstallReported,
        S::Installed => E::PhoneHome,
        S::FirstBoot => E::JoinStarted,
        S::Joining => E::Completed,
        S::Registered | S::PxeReady | S::Ready | S::Failed => E::IpxeServed,
    }
}

fn mac(host: usize, variant: usize) -> String {
    format!("{}{}", MACS[variant], host)
}

#[derive(Clone, Debug)]
enum Op {
    /// Declare host (or re-declare it) with this rebuild number and MAC.
    Declare {
        host: usize,
        rebuild: u64,
        mac: usize,
    },
    /// Edit the `rebuild` number of a declared host.
    SetRebuild {
        host: usize,
        rebuild: u64,
    },
    Delete {
        host: usize,
    },
    /// A boot-flow callback with the current operation, or with an ended
    /// one. `event: None` is the callback the host's state expects next.
    Boot {
        host: usize,
        event: Option<usize>,
        stale: bool,
    },
    TimePasses {
        minutes: i64,
    },
    Reconcile,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize, 0..5u64, 0..2usize).prop_map(|(host, rebuild, mac)| Op::Declare { host, rebuild, mac }),
        3 => (0..3usize, 0..6u64).prop_map(|(host, rebuild)| Op::SetRebuild { host, rebuild }),
        1 => (0..3usize).prop_map(|host| Op::Delete { host }),
        9 => (0..3usize).prop_map(|host| Op::Boot { host, event: None, stale: false }),
        3 => (0..3usize, 0..7usize, prop::bool::weighted(0.2)).prop_map(|(host, event, stale)| Op::Boot { host, event: Some(event), stale }),
        2 => prop::sample::select(vec![1i64, 1, 1, 2, 5, 14, 15, 16, 29, 30, 31, 59, 60, 61]).prop_map(|minutes| Op::TimePasses { minutes }),
        4 => Just(Op::Reconcile),
        1 => Just(Op::Restart),
    ]
}

// ---- the reference model ------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct MHost {
    mac: String,
    state: S,
    generation: u64,
    since: i64,
    op: Option<i64>,
    last_error: Option<&'static str>,
    retired: bool,
    transitions: usize,
}

#[derive(Clone, Debug, PartialEq)]
struct MOp {
    host: String,
    generation: u64,
    outcome: Option<&'static str>,
    has_key: bool,
}

#[derive(Default)]
struct Model {
    declared: BTreeMap<String, (String, u64)>,
    hosts: BTreeMap<String, MHost>,
    /// Index + 1 is the operation id (SQLite hands out rowids in order).
    ops: Vec<MOp>,
}

fn deadline_min(s: S) -> Option<i64> {
    match s {
        S::PxeReady | S::PxeBooted | S::Installed | S::Joining => Some(30),
        S::Installing => Some(60),
        S::FirstBoot => Some(15),
        S::Registered | S::Ready | S::Failed => None,
    }
}

impl Model {
    fn end_op(&mut self, id: i64, outcome: &'static str) {
        let op = &mut self.ops[(id - 1) as usize];
        op.outcome = Some(outcome);
        op.has_key = false;
    }

    fn enter(h: &mut MHost, to: S, now: i64, fresh: bool) {
        if to != h.state || fresh {
            h.since = now;
        }
        h.state = to;
        h.transitions += 1;
    }

    /// Returns the hosts that started a rebuild in this pass.
    fn reconcile(&mut self, now: i64) -> BTreeSet<String> {
        let mut started = BTreeSet::new();
        let names: BTreeSet<String> = self
            .declared
            .keys()
            .chain(self.hosts.keys())
            .cloned()
            .collect();
        for name in names {
            let desired = self.declared.get(&name).cloned();
            loop {
                let Some((mac, rebuild)) = desired.clone() else {
                    if let Some(h) = self.hosts.get(&name).filter(|h| !h.retired).cloned() {
                        let mut h = h;
                        if let Some(op) = h.op.take() {
                            self.end_op(op, "cancelled");
                            Self::enter(&mut h, S::Failed, now, false);
                            h.last_error = Some("declaration removed");
                        }
                        h.retired = true;
                        self.hosts.insert(name.clone(), h);
                    }
                    break;
                };
                let Some(mut h) = self.hosts.get(&name).cloned() else {
                    self.hosts.insert(
                        name.clone(),
                        MHost {
                            mac,
                            state: S::Registered,
                            generation: 0,
                            since: now,
                            op: None,
                            last_error: None,
                            retired: false,
                            transitions: 0,
                        },
                    );
                    continue;
                };
                if h.retired || h.mac != mac {
                    h.retired = false;
                    h.mac = mac;
                } else if rebuild > h.generation {
                    if let Some(old) = h.op {
                        self.end_op(old, "superseded");
                    }
                    self.ops.push(MOp {
                        host: name.clone(),
                        generation: rebuild,
                        outcome: None,
                        has_key: true,
                    });
                    h.op = Some(self.ops.len() as i64);
                    h.generation = rebuild;
                    h.last_error = None;
                    Self::enter(&mut h, S::PxeReady, now, true);
                    started.insert(name.clone());
                } else if let (Some(op), Some(d)) = (h.op, deadline_min(h.state)) {
                    if now >= h.since + d * MIN {
                        self.end_op(op, "failed");
                        h.op = None;
                        h.last_error = Some("deadline missed");
                        Self::enter(&mut h, S::Failed, now, false);
                    } else {
                        break;
                    }
                } else {
                    break;
                }
                self.hosts.insert(name.clone(), h);
            }
        }
        started
    }

    /// Whether the store must accept `event` for operation `op`, applying it if so.
    fn boot(&mut self, name: &str, op: i64, event: E, now: i64) -> bool {
        let Some(mut h) = self.hosts.get(name).cloned() else {
            return false;
        };
        if h.retired || h.op != Some(op) {
            return false;
        }
        let Some(to) = state::next(h.state, event) else {
            return false;
        };
        match event {
            E::Completed => {
                self.end_op(op, "ready");
                h.op = None;
                h.last_error = None;
            }
            E::Fail => {
                self.end_op(op, "failed");
                h.op = None;
                h.last_error = Some("boom");
            }
            _ => {}
        }
        Self::enter(&mut h, to, now, false);
        self.hosts.insert(name.to_string(), h);
        true
    }
}

// ---- the system under test ----------------------------------------------

fn open(path: &Path, clock: &Arc<AtomicI64>) -> Store {
    let c = clock.clone();
    Store::open(path)
        .unwrap()
        .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
}

fn snapshot(declared: &BTreeMap<String, (String, u64)>) -> Snapshot {
    let mut s = Snapshot::default();
    for (name, (mac, rebuild)) in declared {
        let h = Host {
            name: HostName::parse(name).unwrap(),
            mac: mac.parse().unwrap(),
            server_type: "t".into(),
            rebuild: *rebuild,
            network: None,
            disk: DiskSpec::default(),
            wake_on_lan: true,
            source: SourceLoc {
                file: format!("hosts.d/{name}.kdl").into(),
                line: 1,
                column: 1,
            },
        };
        s.by_mac.insert(h.mac, h.name.clone());
        s.hosts.insert(h.name.clone(), Arc::new(h));
    }
    s
}

fn fake_secrets(h: &Host, generation: u64) -> NewRebuild {
    NewRebuild {
        token_hash: [generation as u8; 32],
        public_key: format!("ssh-ed25519 {}-{generation}", h.name),
        private_key: format!("private {}-{generation}", h.name),
    }
}

/// The store's state in the model's terms.
fn observe(store: &Store) -> (BTreeMap<String, MHost>, Vec<MOp>) {
    let mut hosts = BTreeMap::new();
    let mut ops = Vec::new();
    for h in store.all_hosts().unwrap() {
        hosts.insert(
            h.name.clone(),
            MHost {
                mac: h.mac.clone(),
                state: h.state,
                generation: h.observed_generation,
                since: h.since_ms,
                op: h.operation,
                last_error: h.last_error.as_deref().map(|e| match e.split(':').next() {
                    Some("deadline missed") => "deadline missed",
                    Some("declaration removed") => "declaration removed",
                    Some("boom") => "boom",
                    _ => "unexpected error text",
                }),
                retired: h.retired,
                transitions: store.history(&h.name).unwrap().len(),
            },
        );
        for o in store.operations(&h.name).unwrap() {
            ops.push((o.id, o.clone()));
            // Secrets of open operations are the injected ones; ended ones have none.
            let key = store.private_key(o.id).unwrap();
            if o.ended_ms.is_none() {
                assert_eq!(key, Some(format!("private {}-{}", o.host, o.generation)));
                assert_eq!(
                    store.token_hash(o.id).unwrap(),
                    Some([o.generation as u8; 32])
                );
            } else {
                assert_eq!(key, None, "ended operation {} kept its key", o.id);
                assert_eq!(store.token_hash(o.id).unwrap(), None);
            }
        }
    }
    ops.sort_by_key(|(id, _)| *id);
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(i, (id, o))| {
            assert_eq!(id, i as i64 + 1, "operation ids are dense");
            MOp {
                host: o.host,
                generation: o.generation,
                outcome: o.outcome.as_deref().map(|s| match s {
                    "ready" => "ready",
                    "failed" => "failed",
                    "superseded" => "superseded",
                    "cancelled" => "cancelled",
                    _ => "unexpected outcome",
                }),
                has_key: o.has_private_key,
            }
        })
        .collect();
    (hosts, ops)
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    let clock = Arc::new(AtomicI64::new(T0));
    let mut store = open(&path, &clock);
    let reconciler = Reconciler::new(Deadlines::default());
    let mut model = Model::default();

    for op in ops.into_iter().chain([Op::Reconcile]) {
        let now = clock.load(Ordering::SeqCst);
        match op {
            Op::Declare {
                host,
                rebuild,
                mac: m,
            } => {
                model
                    .declared
                    .insert(NAMES[host].into(), (mac(host, m), rebuild));
            }
            Op::SetRebuild { host, rebuild } => {
                if let Some(d) = model.declared.get_mut(NAMES[host]) {
                    d.1 = rebuild;
                }
            }
            Op::Delete { host } => {
                model.declared.remove(NAMES[host]);
            }
            Op::Boot { host, event, stale } => {
                let name = NAMES[host];
                let state = model.hosts.get(name).map_or(S::Registered, |h| h.state);
                let event = event.map_or_else(|| expected_next(state), |e| BOOT_EVENTS[e]);
                let id = if stale {
                    model
                        .ops
                        .iter()
                        .rposition(|o| o.host == name && o.outcome.is_some())
                        .map(|i| i as i64 + 1)
                } else {
                    model.hosts.get(name).and_then(|h| h.op)
                };
                if let Some(id) = id {
                    let cause = if event == E::Fail { "boom" } else { "callback" };
                    let got = store.apply(name, id, event, cause);
                    let want = model.boot(name, id, event, now);
                    assert_eq!(got.is_ok(), want, "{name} op {id} {event:?}: {got:?}");
                    if let Err(e) = got {
                        assert!(e.is_conflict(), "{e}");
                    }
                }
            }
            Op::TimePasses { minutes } => {
                clock.fetch_add(minutes * MIN, Ordering::SeqCst);
            }
            Op::Reconcile => {
                let snap = snapshot(&model.declared);
                let applied = reconciler
                    .reconcile_all(&snap, &store, now, &fake_secrets)
                    .unwrap();
                let started: BTreeSet<String> = applied
                    .iter()
                    .filter(|a| a.started_rebuild().is_some())
                    .map(|a| a.host.clone())
                    .collect();
                assert_eq!(
                    started,
                    model.reconcile(now),
                    "hosts that started a rebuild"
                );
                let before = observe(&store);
                let again = reconciler
                    .reconcile_all(&snap, &store, now, &fake_secrets)
                    .unwrap();
                assert!(again.is_empty(), "second pass did something: {again:?}");
                assert_eq!(observe(&store), before);
            }
            Op::Restart => {
                drop(store);
                store = open(&path, &clock);
            }
        }
        let (hosts, ops) = observe(&store);
        assert_eq!(hosts, model.hosts);
        assert_eq!(ops, model.ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_and_reconciler_follow_the_reference_model(ops in prop::collection::vec(op(), 1..48)) {
        // Start from three declared hosts with a rebuild requested, so that
        // most steps act on hosts in the middle of a rebuild.
        let start = (0..3).map(|host| Op::Declare { host, rebuild: 1, mac: 0 });
        run(start.chain([Op::Reconcile]).chain(ops).collect());
    }
}

/// A fixed walk through a whole rebuild with a restart in every state, so
/// the important path is covered whatever the random cases pick.
#[test]
fn full_rebuild_with_restarts_everywhere() {
    let mut ops = vec![
        Op::Declare {
            host: 0,
            rebuild: 1,
            mac: 0,
        },
        Op::Reconcile,
    ];
    for event in 0..6 {
        ops.extend([
            Op::Restart,
            Op::Boot {
                host: 0,
                event: Some(event),
                stale: false,
            },
            Op::TimePasses { minutes: 14 },
            Op::Reconcile,
        ]);
    }
    ops.extend([
        Op::SetRebuild {
            host: 0,
            rebuild: 2,
        },
        Op::Reconcile,
        Op::TimePasses { minutes: 31 },
        Op::Restart,
        Op::Reconcile,
        Op::Boot {
            host: 0,
            event: Some(1),
            stale: true,
        },
        Op::Delete { host: 0 },
        Op::Reconcile,
        Op::Declare {
            host: 0,
            rebuild: 3,
            mac: 1,
        },
        Op::Reconcile,
    ]);
    run(ops);
}
