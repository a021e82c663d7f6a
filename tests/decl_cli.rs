//! `provisioning check` as an operator and CI run it: exit status 0 when the
//! directory is valid, 1 with compiler-style diagnostics when not.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

#[test]
fn repository_examples_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hosts.d");
    Command::cargo_bin("provisioning")
        .unwrap()
        .arg("check")
        .arg(&dir)
        .arg("--server-types")
        .arg(dir.join("server-types.yaml"))
        .assert()
        .success()
        .stdout(predicate::str::ends_with(
            "3 hosts, 4 server types, 0 errors\n",
        ));
}

#[test]
fn broken_directory_fails_with_positions() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("a.kdl"),
        "host \"pve-01\" {\n    mac \"58:47:ca:71:02\"\n    server-type \"x\"\n    rebuild 1\n}\nserver-type \"x\"\n",
    )
    .unwrap();
    let a = tmp.path().join("a.kdl").display().to_string();
    Command::cargo_bin("provisioning")
        .unwrap()
        .arg("check")
        .arg(tmp.path())
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "{a}:2:9: error: invalid MAC address \"58:47:ca:71:02\""
        )))
        .stdout(predicate::str::contains(
            "    2 |     mac \"58:47:ca:71:02\"\n      |         ^\n",
        ))
        .stdout(predicate::str::contains("0 hosts, 0 server types, 1 error"));

    let out = Command::cargo_bin("provisioning")
        .unwrap()
        .args(["check", "--format", "json"])
        .arg(tmp.path())
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["file"], a);
    assert_eq!(v["diagnostics"][0]["line"], 2);
    assert_eq!(v["diagnostics"][0]["column"], 9);
}
