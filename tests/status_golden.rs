//! Golden tests of `provisioning status` output: the table, one host in
//! detail, and the `--watch` line, from fixed API data and a fixed "now".

use provisioning::status::{
    ApiDetail, ApiHost, ApiTransition, any_failed, format_detail, format_table, format_watch_line,
};

/// 2026-11-25T10:00:00Z
const NOW: i64 = 1_795_600_800_000;
const MIN: i64 = 60_000;

fn hosts() -> Vec<ApiHost> {
    serde_json::from_value(serde_json::json!([
        {"name": "pve-01", "mac": "52:54:00:00:00:01", "server_type": "ms-01", "state": "ready",
         "rebuild": 3, "observed_generation": 3, "since_ms": NOW - 26 * 60 * MIN, "operation": null,
         "last_error": null, "errors": [], "file": "hosts.d/rack1.kdl", "line": 1},
        {"name": "pve-02", "mac": "52:54:00:00:00:02", "server_type": "ms-01", "state": "installing",
         "rebuild": 2, "observed_generation": 2, "since_ms": NOW - 5 * MIN - 10_000, "operation": 7,
         "last_error": null, "errors": [], "file": "hosts.d/rack1.kdl", "line": 7},
        {"name": "pve-03", "mac": "52:54:00:00:00:03", "server_type": "r640", "state": "failed",
         "rebuild": 1, "observed_generation": 1, "since_ms": NOW - 45_000, "operation": null,
         "last_error": "deadline missed: no iPXE request within 30m after pxe_ready (check the boot order and the PXE VLAN)",
         "errors": [], "file": "hosts.d/rack2.kdl", "line": 1},
        {"name": "pve-04", "mac": "52:54:00:00:00:04", "server_type": "r640", "state": "registered",
         "rebuild": 0, "observed_generation": 0, "since_ms": 0, "operation": null,
         "last_error": null, "errors": [], "file": "hosts.d/rack2.kdl", "line": 8},
        {"name": "pve-05", "mac": "52:54:00:00:00:05", "server_type": "r640", "state": "ready",
         "rebuild": 5, "observed_generation": 4, "since_ms": NOW - 3 * 24 * 60 * MIN, "operation": null,
         "last_error": "an old failure", "errors": ["hosts.d/rack2.kdl:14:5: error: unknown field \"disk-size\""],
         "file": "hosts.d/rack2.kdl", "line": 12}
    ]))
    .unwrap()
}

#[test]
fn table() {
    let hosts = hosts();
    insta::assert_snapshot!(format_table(&hosts, NOW));
    assert!(any_failed(&hosts));
    assert!(!any_failed(&hosts[..2]));
}

#[test]
fn empty_table() {
    insta::assert_snapshot!(format_table(&[], NOW), @"no hosts declared");
}

fn detail() -> ApiDetail {
    let op_start = NOW - 40 * MIN;
    serde_json::from_value(serde_json::json!({
        "name": "pve-02", "mac": "52:54:00:00:00:02", "server_type": "ms-01", "state": "installing",
        "rebuild": 2, "observed_generation": 2, "since": "2026-11-25T09:54:50.000Z",
        "since_ms": NOW - 5 * MIN - 10_000, "operation": 7, "last_error": null, "errors": [],
        "file": "hosts.d/rack1.kdl", "line": 7, "wake_on_lan": true,
        "history": [
            {"id": 1, "host": "pve-02", "operation": 3, "at_ms": NOW - 3 * 24 * 60 * MIN, "from": "registered", "to": "pxe_ready", "event": "start_rebuild", "cause": "rebuild 1 requested"},
            {"id": 2, "host": "pve-02", "operation": 3, "at_ms": NOW - 3 * 24 * 60 * MIN + 31 * MIN, "from": "pxe_ready", "to": "failed", "event": "fail", "cause": "deadline missed in pxe_ready"},
            {"id": 3, "host": "pve-02", "operation": 7, "at_ms": op_start, "from": "failed", "to": "pxe_ready", "event": "start_rebuild", "cause": "rebuild 2 requested"},
            {"id": 4, "host": "pve-02", "operation": 7, "at_ms": op_start + 2 * MIN, "from": "pxe_ready", "to": "pxe_booted", "event": "ipxe_served", "cause": "GET /ipxe/52:54:00:00:00:02"},
            {"id": 5, "host": "pve-02", "operation": 7, "at_ms": NOW - 5 * MIN - 10_000, "from": "pxe_booted", "to": "installing", "event": "answer_served", "cause": "answer file served"}
        ],
        "operations": [
            {"id": 7, "host": "pve-02", "generation": 2, "started_ms": op_start, "ended_ms": null, "outcome": null, "reason": null, "public_key": "ssh-ed25519 AAAA", "has_private_key": true},
            {"id": 3, "host": "pve-02", "generation": 1, "started_ms": NOW - 3 * 24 * 60 * MIN, "ended_ms": NOW - 3 * 24 * 60 * MIN + 31 * MIN, "outcome": "failed", "reason": "deadline missed in pxe_ready", "public_key": "ssh-ed25519 AAAA", "has_private_key": false}
        ],
        "notes": [
            {"id": 1, "host": "pve-02", "operation": 7, "at_ms": op_start + 1000, "kind": "wake-on-lan", "message": "magic packet sent to 52:54:00:00:00:02"}
        ]
    }))
    .unwrap()
}

#[test]
fn detail_with_history() {
    insta::assert_snapshot!(format_detail(&detail(), NOW));
}

#[test]
fn watch_line() {
    let t: ApiTransition = serde_json::from_value(serde_json::json!(
        {"id": 9, "host": "pve-02", "operation": 7, "at_ms": NOW, "from": "installing", "to": "installed", "event": "install_reported", "cause": "post-installation webhook"}
    ))
    .unwrap();
    insta::assert_snapshot!(format_watch_line(&t), @"2026-11-25T10:00:00Z  pve-02  installing → installed  (install_reported)  post-installation webhook");
}
