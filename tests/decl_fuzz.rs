//! Property target standing in for a fuzzer: arbitrary text and bytes fed to
//! the KDL decoder, the server-types YAML decoder and the loader must never
//! panic, and every diagnostic must point inside the input.

use proptest::prelude::*;
use provisioning::decl::kdl::parse_kdl;
use provisioning::decl::yaml::parse_server_types_yaml;
use provisioning::decl::{DeclLoader, FileDecls};
use std::path::Path;

fn assert_sane(text: &str, decls: &FileDecls) {
    let lines = text.split('\n').count();
    for d in &decls.diagnostics {
        assert!(
            d.line >= 1 && d.line <= lines,
            "line {} of {lines}: {d}",
            d.line
        );
        assert!(d.column >= 1, "{d}");
        assert!(!d.message.is_empty());
    }
    if !decls.is_valid() {
        assert!(decls.diagnostics.iter().any(|d| d.line > 0));
    }
}

/// Text built from the grammar's own tokens reaches the decoder's deeper
/// paths far more often than uniform noise.
fn kdl_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("host".to_string()),
        Just("server-type".to_string()),
        Just("mac".to_string()),
        Just("rebuild".to_string()),
        Just("wake-on-lan".to_string()),
        Just("network".to_string()),
        Just("cidr".to_string()),
        Just("gateway".to_string()),
        Just("dns".to_string()),
        Just("disk".to_string()),
        Just("filesystem".to_string()),
        Just("disks".to_string()),
        Just("filter".to_string()),
        Just("filter-match".to_string()),
        Just("raid".to_string()),
        Just("ashift".to_string()),
        Just("hdsize".to_string()),
        Just("swapsize".to_string()),
        Just("display-name".to_string()),
        Just("gpu".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(";".to_string()),
        Just("\n".to_string()),
        Just("/-".to_string()),
        Just("//".to_string()),
        Just("#true".to_string()),
        Just("#null".to_string()),
        Just("(t)".to_string()),
        Just("k=".to_string()),
        Just("\"58:47:ca:71:02:1e\"".to_string()),
        Just("\"192.168.1.1/24\"".to_string()),
        Just("\"zfs\"".to_string()),
        Just("\"raid1\"".to_string()),
        Just("\"pve-01\"".to_string()),
        Just("\"ms-01\"".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("99999999999999999999999".to_string()),
        "\"[^\"\\\\]{0,8}\"",
        "[a-z0-9é-]{1,6}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn kdl_decoder_never_panics_on_text(s in "\\PC{0,200}") {
        let decls = parse_kdl(Path::new("f.kdl"), &s);
        assert_sane(&s, &decls);
    }

    #[test]
    fn kdl_decoder_never_panics_on_grammar_soup(s in kdl_like()) {
        let decls = parse_kdl(Path::new("f.kdl"), &s);
        assert_sane(&s, &decls);
    }

    #[test]
    fn yaml_decoder_never_panics(s in "\\PC{0,200}") {
        let decls = parse_server_types_yaml(Path::new("t.yaml"), &s);
        assert_sane(&s, &decls);
    }

    #[test]
    fn yaml_decoder_never_panics_on_yaml_soup(
        parts in prop::collection::vec(prop_oneof![
            Just("server_types:"), Just("\n  "), Just("\n    "), Just("a:"), Just(" display_name: x"),
            Just(" gpu: true"), Just(" disks: [sda, sdb]"), Just(" filter: {ID_MODEL: x}"),
            Just(" raid: raidz-1"), Just(" filesystem: btrfs"), Just(" ashift: 300"),
            Just(" hdsize: -1"), Just(" &a"), Just(" *a"), Just(" <<: *a"), Just("- "), Just("---\n"),
            Just(" \"q"), Just(" {"), Just(" ["), Just(" ~"),
        ], 0..30)
    ) {
        let s: String = parts.concat();
        let decls = parse_server_types_yaml(Path::new("t.yaml"), &s);
        assert_sane(&s, &decls);
    }

    #[test]
    fn loader_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hosts.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.kdl"), &bytes).unwrap();
        let yaml = tmp.path().join("types.yaml");
        std::fs::write(&yaml, &bytes).unwrap();
        let snap = DeclLoader::new().load_all(&dir, Some(&yaml));
        // Random bytes are almost never a valid declaration, and never silently.
        if snap.hosts.is_empty() && !bytes.is_empty() && std::str::from_utf8(&bytes).is_err() {
            assert!(snap.has_errors());
        }
    }
}

/// Inputs that make a recursive parser overflow its stack (which aborts the
/// process, beyond any `catch_unwind`) are refused before parsing.
#[test]
fn deep_nesting_is_a_diagnostic_not_an_abort() {
    for s in [
        "host {".repeat(20_000),
        "/- ".repeat(50_000) + "host",
        "(t)".repeat(20_000),
        "host /* ".repeat(30_000),
    ] {
        let decls = parse_kdl(Path::new("f.kdl"), &s);
        assert!(!decls.is_valid());
        assert!(
            decls.diagnostics.len() <= 101,
            "{} diagnostics",
            decls.diagnostics.len()
        );
    }
    for s in [
        "[".repeat(20_000),
        format!("server_types:\n  a:\n    filter: {}", "{a: ".repeat(20_000)),
    ] {
        let decls = parse_server_types_yaml(Path::new("t.yaml"), &s);
        assert!(!decls.is_valid());
    }
}

/// A huge line of junk gives a bounded number of diagnostics, quickly.
#[test]
fn many_errors_are_capped() {
    let s = "a;".repeat(20_000);
    let decls = parse_kdl(Path::new("f.kdl"), &s);
    assert_eq!(decls.diagnostics.len(), 101);
    assert!(
        decls.diagnostics[100]
            .message
            .starts_with("too many errors")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The loader parses a directory on all cores: the batch parser gives
    /// exactly what the one-file parser gives for each file, in order.
    #[test]
    fn parsing_many_files_at_once_equals_parsing_each(
        texts in proptest::collection::vec(kdl_like(), 0..12)
    ) {
        let names: Vec<String> = (0..texts.len()).map(|i| format!("f{i}.kdl")).collect();
        let files: Vec<(&Path, &str)> = names
            .iter()
            .zip(&texts)
            .map(|(n, t)| (Path::new(n.as_str()), t.as_str()))
            .collect();
        let many = provisioning::decl::kdl::parse_kdl_many(&files);
        prop_assert_eq!(many.len(), files.len());
        for ((path, text), got) in files.iter().zip(&many) {
            let alone = parse_kdl(path, text);
            prop_assert_eq!(format!("{got:?}"), format!("{alone:?}"));
        }
    }
}
