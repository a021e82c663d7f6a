//! The reconciler's driver: secrets that fail for one host, the per-host
//! entry point, and real secrets from `fresh_secrets`.

use provisioning::decl::{DiskSpec, Host, HostName, Snapshot, SourceLoc};
use provisioning::reconcile::{Action, Reconciler, fresh_secrets};
use provisioning::secrets::{EphemeralKey, SecretsError};
use provisioning::state::HostState as S;
use provisioning::store::{NewRebuild, Store};
use std::sync::Arc;

const NOW: i64 = 1_700_000_000_000;

fn host(name: &str, last: u8, rebuild: u64) -> Host {
    Host {
        name: HostName::parse(name).unwrap(),
        mac: format!("02:00:00:00:00:{last:02x}").parse().unwrap(),
        server_type: "t".into(),
        rebuild,
        network: None,
        disk: DiskSpec::default(),
        wake_on_lan: true,
        source: SourceLoc {
            file: format!("hosts.d/{name}.kdl").into(),
            line: 1,
            column: 1,
        },
    }
}

fn snapshot(hosts: &[Host]) -> Snapshot {
    let mut s = Snapshot::default();
    for h in hosts {
        s.by_mac.insert(h.mac, h.name.clone());
        s.hosts.insert(h.name.clone(), Arc::new(h.clone()));
    }
    s
}

fn fake(h: &Host, g: u64) -> Result<NewRebuild, SecretsError> {
    Ok(NewRebuild {
        token_hash: [g as u8; 32],
        public_key: format!("ssh-ed25519 AAAA {}", h.name),
        private_key: "k".into(),
    })
}

#[test]
fn failing_secrets_skip_one_host_until_a_later_pass() {
    let store = Store::open_in_memory().unwrap();
    let snap = snapshot(&[host("a", 1, 1), host("b", 2, 1), host("c", 3, 1)]);
    let r = Reconciler::default();
    let flaky = |h: &Host, g: u64| {
        if h.name.as_str() == "b" {
            Err(SecretsError::Rng("test".into()))
        } else {
            fake(h, g)
        }
    };
    let applied = r.try_reconcile_all(&snap, &store, NOW, &flaky).unwrap();
    let started: Vec<_> = applied
        .iter()
        .filter_map(|a| a.started_rebuild().map(|_| a.host.as_str()))
        .collect();
    assert_eq!(started, ["a", "c"]);
    let b = store.host("b").unwrap().unwrap();
    assert_eq!((b.state, b.observed_generation), (S::Registered, 0));

    let applied = r.try_reconcile_all(&snap, &store, NOW + 1, &fake).unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].host, "b");
    assert!(matches!(
        applied[0].action,
        Action::StartRebuild {
            generation: 1,
            supersedes: None
        }
    ));
    let (generation, op) = applied[0].started_rebuild().unwrap();
    assert_eq!(generation, 1);
    assert_eq!(store.host("b").unwrap().unwrap().operation, Some(op));
}

#[test]
fn reconcile_one_touches_only_its_host() {
    let store = Store::open_in_memory().unwrap();
    let r = Reconciler::default();
    let snap = snapshot(&[host("a", 1, 1), host("b", 2, 1)]);
    let applied = r.reconcile_one("b", &snap, &store, NOW, &fake).unwrap();
    assert_eq!(
        applied.iter().map(|a| a.action.clone()).collect::<Vec<_>>(),
        [
            Action::EnsureHost,
            Action::StartRebuild {
                generation: 1,
                supersedes: None
            }
        ]
    );
    assert_eq!(store.host("a").unwrap(), None);
    assert!(
        r.reconcile_one("b", &snap, &store, NOW, &fake)
            .unwrap()
            .is_empty()
    );
    // Declaration gone: retire (an active rebuild is cancelled).
    let applied = r
        .reconcile_one("b", &snapshot(&[]), &store, NOW, &fake)
        .unwrap();
    assert_eq!(applied[0].action, Action::Retire);
    let b = store.host("b").unwrap().unwrap();
    assert!(b.retired);
    assert_eq!(b.state, S::Failed);
    // An invalid or unknown name is nothing to do.
    assert!(
        r.reconcile_one("NOT A NAME", &snap, &store, NOW, &fake)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn fresh_secrets_are_a_real_key_pair_and_differ_per_rebuild() {
    let h = host("pve-01", 1, 3);
    let s1 = fresh_secrets(&h, 3).unwrap();
    let s2 = fresh_secrets(&h, 3).unwrap();
    let key = EphemeralKey::from_private_openssh(&s1.private_key).unwrap();
    assert_eq!(key.public_openssh(), s1.public_key);
    assert!(s1.public_key.starts_with("ssh-ed25519 "));
    assert!(
        s1.public_key.ends_with(" provisioning:pve-01:rebuild-3"),
        "{}",
        s1.public_key
    );
    assert_ne!(s1.token_hash, s2.token_hash);
    assert_ne!(s1.public_key, s2.public_key);
}
