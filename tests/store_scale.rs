//! 10,000 declared hosts: the first reconcile pass creates and arms them,
//! the next pass (the periodic requeue) must do nothing and stay cheap.

use provisioning::decl::{DiskSpec, Host, HostName, Snapshot, SourceLoc};
use provisioning::mac::MacAddr;
use provisioning::reconcile::Reconciler;
use provisioning::state::HostState;
use provisioning::store::{NewRebuild, Store};
use std::sync::Arc;
use std::time::Instant;

const N: usize = 10_000;
const NOW: i64 = 1_700_000_000_000;

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..N {
        let h = Host {
            name: HostName::parse(&format!("node-{i:05}")).unwrap(),
            mac: MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
            server_type: "t".into(),
            rebuild: (i % 2) as u64,
            network: None,
            disk: DiskSpec::default(),
            wake_on_lan: false,
            source: SourceLoc {
                file: "hosts.d/all.kdl".into(),
                line: i + 1,
                column: 1,
            },
        };
        s.by_mac.insert(h.mac, h.name.clone());
        s.hosts.insert(h.name.clone(), Arc::new(h));
    }
    s
}

fn secrets(_: &Host, g: u64) -> NewRebuild {
    NewRebuild {
        token_hash: [g as u8; 32],
        public_key: "ssh-ed25519 AAAA".into(),
        private_key: "k".into(),
    }
}

#[test]
fn ten_thousand_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let snap = snapshot();
    let r = Reconciler::default();

    let t = Instant::now();
    let applied = r.reconcile_all(&snap, &store, NOW, &secrets).unwrap();
    let first = t.elapsed();
    assert_eq!(
        applied.len(),
        N + N / 2,
        "every host ensured, half of them armed"
    );

    let t = Instant::now();
    let again = r.reconcile_all(&snap, &store, NOW + 1, &secrets).unwrap();
    let steady = t.elapsed();
    assert!(again.is_empty());

    let t = Instant::now();
    let stats = store.stats().unwrap();
    let open = store.open_operations().unwrap();
    let queries = t.elapsed();
    assert_eq!(stats.get(&HostState::PxeReady), Some(&(N as u64 / 2)));
    assert_eq!(open.len(), N / 2);
    eprintln!("first pass {first:?}, steady pass {steady:?}, stats+open {queries:?}");
}
