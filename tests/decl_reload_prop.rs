//! Random sequences of edits, breakages and deletions across a few files:
//! after every reload the snapshot is consistent, no host disappears except
//! through its own file (deleted, or a valid version without it), and once
//! every file is valid again the snapshot equals a fresh load.

use proptest::prelude::*;
use provisioning::decl::kdl::parse_kdl;
use provisioning::decl::{DeclLoader, HostName, Snapshot};
use std::path::{Path, PathBuf};

const FILES: &[&str] = &["a.kdl", "b.kdl", "c.kdl"];
const TYPES: &str = "server-type \"ms-01\" {\n    boot-disk \"nvme0n1\"\n}\n";

#[derive(Clone, Debug)]
struct Decl {
    name: u8,
    mac: u8,
    rebuild: u8,
    known_type: bool,
}

#[derive(Clone, Debug)]
enum Edit {
    Write(usize, Vec<Decl>),
    Garbage(usize),
    Delete(usize),
}

fn render(decls: &[Decl]) -> String {
    decls
        .iter()
        .map(|d| {
            format!(
                "host \"h{}\" {{\n    mac \"02:00:00:00:00:{:02x}\"\n    server-type \"{}\"\n    rebuild {}\n}}\n",
                d.name,
                d.mac,
                if d.known_type { "ms-01" } else { "ms-99" },
                d.rebuild
            )
        })
        .collect()
}

fn decl() -> impl Strategy<Value = Decl> {
    (0u8..4, 0u8..4, 0u8..3, prop::bool::weighted(0.9)).prop_map(
        |(name, mac, rebuild, known_type)| Decl {
            name,
            mac,
            rebuild,
            known_type,
        },
    )
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0..FILES.len(), prop::collection::vec(decl(), 0..3)).prop_map(|(f, d)| Edit::Write(f, d)),
        1 => (0..FILES.len()).prop_map(Edit::Garbage),
        1 => (0..FILES.len()).prop_map(Edit::Delete),
    ]
}

fn apply(dir: &Path, e: &Edit) -> PathBuf {
    match e {
        Edit::Write(f, d) => {
            let p = dir.join(FILES[*f]);
            std::fs::write(&p, render(d)).unwrap();
            p
        }
        Edit::Garbage(f) => {
            let p = dir.join(FILES[*f]);
            std::fs::write(&p, "host \"h0\" {\n    mac").unwrap();
            p
        }
        Edit::Delete(f) => {
            let p = dir.join(FILES[*f]);
            let _ = std::fs::remove_file(&p);
            p
        }
    }
}

fn assert_consistent(snap: &Snapshot) {
    assert_eq!(snap.by_mac.len(), snap.hosts.len(), "one MAC per host");
    for (mac, name) in &snap.by_mac {
        assert_eq!(&snap.hosts[name].mac, mac);
    }
}

/// A host may leave only through its own file: deleted, or holding a
/// version that is valid on its own and no longer declares it (that version
/// may come into force later than it was written, once a conflict with
/// another file is resolved).
fn assert_no_silent_retirement(prev: &Snapshot, next: &Snapshot) {
    for (name, host) in &prev.hosts {
        if next.hosts.contains_key(name) {
            continue;
        }
        let file = &host.source.file;
        if let Ok(text) = std::fs::read_to_string(file) {
            let decls = parse_kdl(file, &text);
            assert!(decls.is_valid(), "{name} vanished because of an error");
            assert!(
                !decls.hosts.iter().any(|d| &d.host.name == name),
                "{name} vanished although its file still declares it"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn edits_converge(edits in prop::collection::vec(edit(), 1..25)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hosts.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("types.kdl"), TYPES).unwrap();
        let mut loader = DeclLoader::new();
        let mut prev = loader.load_all(&dir, None);
        for e in &edits {
            let changed = apply(&dir, e);
            let next = loader.reload(std::slice::from_ref(&changed));
            assert_consistent(&next);
            assert_no_silent_retirement(&prev, &next);
            prev = next;
        }
        // Make every file valid and conflict-free: the result no longer
        // depends on history.
        let mut changed = Vec::new();
        for (i, f) in FILES.iter().enumerate() {
            let p = dir.join(f);
            let d = Decl { name: i as u8, mac: i as u8, rebuild: 1, known_type: true };
            std::fs::write(&p, render(&[d])).unwrap();
            changed.push(p);
        }
        let after = loader.reload(&changed);
        let fresh = DeclLoader::new().load_all(&dir, None);
        prop_assert!(after.diagnostics.is_empty(), "{:?}", after.diagnostics);
        prop_assert_eq!(&after.hosts, &fresh.hosts);
        let names: Vec<&str> = after.hosts.keys().map(HostName::as_str).collect();
        prop_assert_eq!(names, vec!["h0", "h1", "h2"]);
    }
}
