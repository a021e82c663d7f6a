//! View models of the dashboard pages, built by pure functions from the
//! snapshot, the store's records, the settings and "now".
//!
//! These structs are the only things the templates see. They are built
//! from record types that carry no secrets, and every free text that came
//! from a machine or a command (causes, notes, errors) goes through
//! [`scrub`] on the way in, so a private key pasted into a message by
//! mistake is not rendered either.

use crate::decl::{Diagnostic, Severity, Snapshot};
use crate::server::api::{HostView, host_views};
use crate::settings::DeadlineSettings;
use crate::state::HostState;
use crate::store::{HostRecord, NoteRecord, OperationRecord, TransitionRecord, UnknownMachine};
use base64::Engine as _;
use serde::Serialize;
use sha2::Digest as _;
use std::time::Duration;

/// The eight states of the happy path, in order (the progress bar).
pub const STEPS: [HostState; 8] = [
    HostState::Registered,
    HostState::PxeReady,
    HostState::PxeBooted,
    HostState::Installing,
    HostState::Installed,
    HostState::FirstBoot,
    HostState::Joining,
    HostState::Ready,
];

/// The human label and the icon of a state. The icon is decoration; the
/// label always appears next to it, so nothing depends on colour alone.
pub fn state_label(s: HostState) -> &'static str {
    match s {
        HostState::Registered => "registered",
        HostState::PxeReady => "PXE ready",
        HostState::PxeBooted => "PXE booted",
        HostState::Installing => "installing",
        HostState::Installed => "installed",
        HostState::FirstBoot => "first boot",
        HostState::Joining => "joining",
        HostState::Ready => "ready",
        HostState::Failed => "failed",
    }
}

pub fn state_icon(s: HostState) -> &'static str {
    match s {
        HostState::Registered => "○",
        HostState::PxeReady => "◔",
        HostState::PxeBooted => "◑",
        HostState::Installing => "◕",
        HostState::Installed => "◉",
        HostState::FirstBoot => "↻",
        HostState::Joining => "⇄",
        HostState::Ready => "✓",
        HostState::Failed => "✕",
    }
}

/// `45s`, `3m 12s`, `2h 05m`, `3d 4h`.
pub fn duration_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `2026-11-25 10:05:12Z`: sortable, unambiguous, short.
pub fn time_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replacen('T', " ", 1)
}

/// RFC 3339 for `<time datetime>`.
pub fn time_attr(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Replaces anything that looks like a PEM private key block by a marker.
/// The record types carry no secrets; this guards free text (causes, notes)
/// against a key that ended up there by mistake.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let header_end = after[11..].find("-----").map(|i| i + 11);
        let is_private = header_end.is_some_and(|e| after[..e].contains("PRIVATE KEY"));
        if !is_private {
            out.push_str(&rest[..start + 11]);
            rest = &rest[start + 11..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str("[private key redacted]");
        // Skip to the end marker, or drop the rest if there is none.
        match after
            .find("-----END ")
            .and_then(|e| after[e + 9..].find("-----").map(|f| e + 9 + f + 5))
        {
            Some(end) => rest = &after[end..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct StepCell {
    pub state: &'static str,
    pub label: &'static str,
    /// `done`, `current`, `todo`, or `failed`.
    pub status: &'static str,
}

/// One tile of the fleet grid.
#[derive(Clone, Debug, Serialize)]
pub struct Tile {
    pub name: String,
    pub mac: String,
    pub server_type: String,
    pub state: &'static str,
    pub label: &'static str,
    pub icon: &'static str,
    pub since_ms: i64,
    pub since_attr: String,
    pub since_time: String,
    pub in_state: String,
    pub rebuild: u64,
    pub observed: u64,
    pub pending: bool,
    /// 1-based step of the happy path (0 when failed).
    pub step: usize,
    pub steps: Vec<StepCell>,
    pub last_error: Option<String>,
    pub decl_errors: Vec<String>,
    /// Hidden by the state filter.
    pub hidden: bool,
}

/// The progress cells. A failed host shows the steps it got through and
/// the one it failed in (`failed_in`), when known.
fn steps_for(state: HostState, failed_in: Option<HostState>) -> (usize, Vec<StepCell>) {
    let pos = STEPS.iter().position(|s| *s == state);
    let failed_pos = failed_in.and_then(|f| STEPS.iter().position(|s| *s == f));
    let cells = STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| StepCell {
            state: s.as_str(),
            label: state_label(*s),
            status: match pos {
                None => match failed_pos {
                    Some(f) if i < f => "done",
                    Some(f) if i > f => "todo",
                    _ => "failed",
                },
                Some(p) if i < p => "done",
                Some(p) if i == p && state == HostState::Ready => "done",
                Some(p) if i == p => "current",
                Some(_) => "todo",
            },
        })
        .collect();
    (pos.or(failed_pos).map(|p| p + 1).unwrap_or(0), cells)
}

pub fn tile(
    v: &HostView,
    now_ms: i64,
    filter: Option<HostState>,
    failed_in: Option<HostState>,
) -> Tile {
    let (step, steps) = steps_for(v.state, failed_in);
    Tile {
        name: v.name.clone(),
        mac: v.mac.clone(),
        server_type: v.server_type.clone(),
        state: v.state.as_str(),
        label: state_label(v.state),
        icon: state_icon(v.state),
        since_ms: v.since_ms,
        since_attr: time_attr(v.since_ms),
        since_time: time_text(v.since_ms),
        in_state: if v.since_ms > 0 {
            duration_text(now_ms - v.since_ms)
        } else {
            "—".to_string()
        },
        rebuild: v.rebuild,
        observed: v.observed_generation,
        pending: v.rebuild != v.observed_generation,
        step,
        steps,
        last_error: if v.state == HostState::Failed {
            v.last_error.as_deref().map(scrub)
        } else {
            None
        },
        decl_errors: v.errors.iter().map(|e| scrub(e)).collect(),
        hidden: filter.is_some_and(|f| f != v.state),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CountItem {
    pub state: &'static str,
    pub label: &'static str,
    pub icon: &'static str,
    pub count: usize,
    pub active: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiagView {
    pub location: String,
    pub severity: &'static str,
    pub message: String,
    pub snippet: Option<String>,
}

pub fn diag_view(d: &Diagnostic) -> DiagView {
    DiagView {
        location: format!("{}:{}:{}", d.file.display(), d.line, d.column),
        severity: match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        message: scrub(&d.message),
        snippet: d.snippet.as_deref().map(scrub),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DeadlineView {
    pub host: String,
    pub state: &'static str,
    pub label: &'static str,
    pub icon: &'static str,
    pub due_ms: i64,
    pub due_time: String,
    pub remaining: String,
    /// `ok`, `soon` or `expired`.
    pub urgency: &'static str,
}

/// The deadline of `state`, if it has one.
pub fn deadline_for(d: &DeadlineSettings, state: HostState) -> Option<Duration> {
    match state {
        HostState::PxeReady => Some(d.pxe_ready),
        HostState::PxeBooted => Some(d.pxe_booted),
        HostState::Installing => Some(d.installing),
        HostState::Installed => Some(d.installed),
        HostState::FirstBoot => Some(d.first_boot),
        HostState::Joining => Some(d.joining),
        _ => None,
    }
}

/// Every running deadline, soonest first. "Soon" is the last fifth of the
/// allowed time, but at least the last five minutes.
pub fn deadlines(hosts: &[HostView], d: &DeadlineSettings, now_ms: i64) -> Vec<DeadlineView> {
    let mut out: Vec<DeadlineView> = hosts
        .iter()
        .filter(|h| h.state.is_active() && h.since_ms > 0)
        .filter_map(|h| {
            let limit = deadline_for(d, h.state)?.as_millis() as i64;
            let due = h.since_ms + limit;
            let left = due - now_ms;
            let soon_window = (limit / 5).max(5 * 60 * 1000);
            let (urgency, remaining) = if left <= 0 {
                ("expired", format!("expired {} ago", duration_text(-left)))
            } else if left <= soon_window {
                ("soon", format!("in {}", duration_text(left)))
            } else {
                ("ok", format!("in {}", duration_text(left)))
            };
            Some(DeadlineView {
                host: h.name.clone(),
                state: h.state.as_str(),
                label: state_label(h.state),
                icon: state_icon(h.state),
                due_ms: due,
                due_time: time_text(due),
                remaining,
                urgency,
            })
        })
        .collect();
    out.sort_by(|a, b| a.due_ms.cmp(&b.due_ms).then(a.host.cmp(&b.host)));
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct UnknownView {
    pub mac: String,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    /// A declaration to paste into `hosts.d/`.
    pub kdl: String,
}

/// A paste-ready KDL declaration for a machine seen PXE-booting.
pub fn unknown_kdl(mac: &str, server_type: &str) -> String {
    let compact: String = mac
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "host \"new-{compact}\" {{\n    mac \"{mac}\"\n    server-type \"{server_type}\"\n    rebuild 1\n}}\n"
    )
}

pub fn unknown_views(machines: &[UnknownMachine], snapshot: &Snapshot) -> Vec<UnknownView> {
    let server_type = snapshot
        .server_types
        .keys()
        .next()
        .map(String::as_str)
        .unwrap_or("CHANGE-ME");
    machines
        .iter()
        .map(|m| {
            // MACs come from the store (validated when recorded); keep only
            // MAC characters anyway, since this text is meant to be pasted.
            let mac: String = m
                .mac
                .chars()
                .filter(|c| c.is_ascii_hexdigit() || *c == ':')
                .take(17)
                .collect::<String>()
                .to_ascii_lowercase();
            UnknownView {
                kdl: unknown_kdl(&mac, server_type),
                mac,
                first_seen: time_text(m.first_seen_ms),
                last_seen: time_text(m.last_seen_ms),
                count: m.count,
            }
        })
        .collect()
}

/// Everything the fleet page shows.
#[derive(Clone, Debug, Serialize)]
pub struct FleetPage {
    /// Which page this is (the navigation marks it).
    pub page: &'static str,
    pub now_ms: i64,
    pub generated: String,
    pub filter: Option<&'static str>,
    pub filter_label: Option<&'static str>,
    pub total: usize,
    pub counts: Vec<CountItem>,
    pub tiles: Vec<Tile>,
    pub diagnostics: Vec<DiagView>,
    pub dnsmasq: Option<String>,
    pub deadlines: Vec<DeadlineView>,
    pub unknown: Vec<UnknownView>,
}

/// The inputs of the fleet page, gathered by the handler.
pub struct FleetInput<'a> {
    pub snapshot: &'a Snapshot,
    pub records: &'a [HostRecord],
    pub unknown: &'a [UnknownMachine],
    pub deadlines: &'a DeadlineSettings,
    pub dnsmasq: Option<String>,
    pub filter: Option<HostState>,
    /// For failed hosts: the state they failed in (from the history).
    pub failed_in: &'a std::collections::HashMap<String, HostState>,
    pub now_ms: i64,
}

pub fn fleet_page(input: FleetInput<'_>) -> FleetPage {
    let views = host_views(input.snapshot, input.records);
    let counts = HostState::ALL
        .iter()
        .map(|s| CountItem {
            state: s.as_str(),
            label: state_label(*s),
            icon: state_icon(*s),
            count: views.iter().filter(|v| v.state == *s).count(),
            active: input.filter == Some(*s),
        })
        .collect();
    FleetPage {
        page: "fleet",
        now_ms: input.now_ms,
        generated: time_text(input.now_ms),
        filter: input.filter.map(HostState::as_str),
        filter_label: input.filter.map(state_label),
        total: views.len(),
        counts,
        tiles: views
            .iter()
            .map(|v| {
                tile(
                    v,
                    input.now_ms,
                    input.filter,
                    input.failed_in.get(&v.name).copied(),
                )
            })
            .collect(),
        diagnostics: input.snapshot.diagnostics.iter().map(diag_view).collect(),
        dnsmasq: input.dnsmasq,
        deadlines: deadlines(&views, input.deadlines, input.now_ms),
        unknown: unknown_views(input.unknown, input.snapshot),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseView {
    pub state: &'static str,
    pub label: &'static str,
    pub icon: &'static str,
    pub entered_ms: i64,
    pub entered_attr: String,
    pub entered: String,
    /// Empty for the phase that ends the rebuild.
    pub duration: String,
    pub current: bool,
    pub cause: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostKeyView {
    pub algorithm: String,
    pub fingerprint: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OperationView {
    pub id: i64,
    pub generation: u64,
    pub started: String,
    pub started_attr: String,
    pub ended: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub running: bool,
    pub total: String,
    pub phases: Vec<PhaseView>,
    pub mgmt_address: Option<String>,
    pub phone_home_ip: Option<String>,
    pub dmi_uuid: Option<String>,
    pub host_keys: Vec<HostKeyView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryRow {
    pub at_ms: i64,
    pub at: String,
    pub at_attr: String,
    /// `transition` or `note`.
    pub kind: &'static str,
    pub operation: Option<i64>,
    pub from: Option<&'static str>,
    pub from_label: Option<&'static str>,
    pub to: Option<&'static str>,
    pub to_label: Option<&'static str>,
    pub to_icon: Option<&'static str>,
    /// The event name or the note kind.
    pub what: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputView {
    pub at: String,
    pub operation: Option<i64>,
    pub text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostPage {
    pub page: &'static str,
    pub now_ms: i64,
    pub generated: String,
    pub tile: Tile,
    pub file: String,
    pub line: usize,
    pub wake_on_lan: bool,
    pub operation: Option<OperationView>,
    pub earlier_operations: Vec<OperationView>,
    pub history: Vec<HistoryRow>,
    pub join_output: Vec<OutputView>,
}

/// SHA256 fingerprint (`SHA256:…`, as `ssh-keygen -l` prints it) of an
/// OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
pub fn fingerprint(key_line: &str) -> Option<(String, String)> {
    let mut parts = key_line.split_whitespace();
    let alg = parts.next()?;
    let blob = parts.next()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .ok()?;
    let digest = sha2::Sha256::digest(&bytes);
    let fp = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_slice());
    Some((alg.to_string(), format!("SHA256:{fp}")))
}

/// Fingerprints of the pinned host keys (a JSON object of key lines, or an
/// array of them). Keys that do not parse are listed as such, never echoed.
pub fn host_keys(keys: Option<&serde_json::Value>) -> Vec<HostKeyView> {
    let lines: Vec<&str> = match keys {
        Some(serde_json::Value::Object(m)) => m.values().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        Some(serde_json::Value::String(s)) => s.lines().collect(),
        _ => Vec::new(),
    };
    let mut out: Vec<HostKeyView> = lines
        .into_iter()
        .map(|l| match fingerprint(l) {
            Some((algorithm, fingerprint)) => HostKeyView {
                algorithm,
                fingerprint,
            },
            None => HostKeyView {
                algorithm: "unknown".to_string(),
                fingerprint: "(not a public key line)".to_string(),
            },
        })
        .collect();
    out.sort_by(|a, b| a.algorithm.cmp(&b.algorithm));
    out
}

fn operation_view(
    op: &OperationRecord,
    history: &[TransitionRecord],
    now_ms: i64,
) -> OperationView {
    let mut mine: Vec<&TransitionRecord> = history
        .iter()
        .filter(|t| t.operation == Some(op.id))
        .collect();
    mine.sort_by_key(|t| (t.at_ms, t.id));
    // One phase per state entered; re-entering the same state (a second
    // iPXE fetch, a resumed join) continues the phase.
    let mut phases: Vec<(HostState, i64, String)> = Vec::new();
    for t in mine {
        if phases.last().is_some_and(|(s, _, _)| *s == t.to) {
            continue;
        }
        phases.push((t.to, t.at_ms, scrub(&t.cause)));
    }
    let running = op.ended_ms.is_none();
    let end = op.ended_ms.unwrap_or(now_ms);
    let n = phases.len();
    let phase_views = phases
        .iter()
        .enumerate()
        .map(|(i, (state, at, cause))| {
            let terminal = matches!(state, HostState::Ready | HostState::Failed);
            let next = phases.get(i + 1).map(|p| p.1);
            let duration = match next {
                Some(nx) => duration_text(nx - at),
                None if terminal => String::new(),
                None => duration_text(end - at),
            };
            PhaseView {
                state: state.as_str(),
                label: state_label(*state),
                icon: state_icon(*state),
                entered_ms: *at,
                entered_attr: time_attr(*at),
                entered: time_text(*at),
                duration,
                current: running && i + 1 == n,
                cause: cause.clone(),
            }
        })
        .collect();
    OperationView {
        id: op.id,
        generation: op.generation,
        started: time_text(op.started_ms),
        started_attr: time_attr(op.started_ms),
        ended: op.ended_ms.map(time_text),
        outcome: op.outcome.clone().unwrap_or_else(|| "running".to_string()),
        reason: op.reason.as_deref().map(scrub),
        running,
        total: duration_text(end - op.started_ms),
        phases: phase_views,
        mgmt_address: op.mgmt_address.clone(),
        phone_home_ip: op.phone_home_ip.clone(),
        dmi_uuid: op.dmi_uuid.clone(),
        host_keys: host_keys(op.ssh_host_keys.as_ref()),
    }
}

/// The state a failed host failed in: the `from` of its last transition
/// into `failed`.
pub fn failed_in(history: &[TransitionRecord], state: HostState) -> Option<HostState> {
    if state != HostState::Failed {
        return None;
    }
    history
        .iter()
        .rev()
        .find(|t| t.to == HostState::Failed)
        .map(|t| t.from)
}

/// Note kinds whose message is the (redacted) output of the join command.
pub const JOIN_OUTPUT_KINDS: &[&str] = &["join-output", "join_output"];

/// The inputs of a host page, gathered by the handler.
pub struct HostInput<'a> {
    pub view: &'a HostView,
    pub wake_on_lan: bool,
    pub history: &'a [TransitionRecord],
    /// Newest first, as the store returns them.
    pub operations: &'a [OperationRecord],
    pub notes: &'a [NoteRecord],
    pub now_ms: i64,
}

pub fn host_page(input: HostInput<'_>) -> HostPage {
    let mut ops = input
        .operations
        .iter()
        .map(|op| operation_view(op, input.history, input.now_ms));
    let operation = ops.next();
    let earlier_operations = ops.collect();

    let mut history: Vec<HistoryRow> = input
        .history
        .iter()
        .map(|t| HistoryRow {
            at_ms: t.at_ms,
            at: time_text(t.at_ms),
            at_attr: time_attr(t.at_ms),
            kind: "transition",
            operation: t.operation,
            from: Some(t.from.as_str()),
            from_label: Some(state_label(t.from)),
            to: Some(t.to.as_str()),
            to_label: Some(state_label(t.to)),
            to_icon: Some(state_icon(t.to)),
            what: t.event.as_str().to_string(),
            detail: scrub(&t.cause),
        })
        .chain(
            input
                .notes
                .iter()
                .filter(|n| !JOIN_OUTPUT_KINDS.contains(&n.kind.as_str()))
                .map(|n| HistoryRow {
                    at_ms: n.at_ms,
                    at: time_text(n.at_ms),
                    at_attr: time_attr(n.at_ms),
                    kind: "note",
                    operation: n.operation,
                    from: None,
                    from_label: None,
                    to: None,
                    to_label: None,
                    to_icon: None,
                    what: n.kind.clone(),
                    detail: scrub(&n.message),
                }),
        )
        .collect();
    // Newest first: what just happened is what one looks for.
    history.sort_by_key(|r| std::cmp::Reverse(r.at_ms));

    let join_output = input
        .notes
        .iter()
        .filter(|n| JOIN_OUTPUT_KINDS.contains(&n.kind.as_str()))
        .map(|n| OutputView {
            at: time_text(n.at_ms),
            operation: n.operation,
            text: scrub(&n.message),
        })
        .collect();

    HostPage {
        page: "host",
        now_ms: input.now_ms,
        generated: time_text(input.now_ms),
        tile: tile(
            input.view,
            input.now_ms,
            None,
            failed_in(input.history, input.view.state),
        ),
        file: input.view.file.clone(),
        line: input.view.line,
        wake_on_lan: input.wake_on_lan,
        operation,
        earlier_operations,
        history,
        join_output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_scrubbed() {
        let s = "before -----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY----- after";
        assert_eq!(scrub(s), "before [private key redacted] after");
        assert_eq!(
            scrub("x -----BEGIN PRIVATE KEY----- truncated"),
            "x [private key redacted]"
        );
        let public = "-----BEGIN CERTIFICATE----- fine";
        assert_eq!(scrub(public), public);
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // What `ssh-keygen -lf` prints for this key.
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtWWA8IIvT1cfTLXXs8Hq0Bwpnzv60eVb7QrlP1DL9n root@pve";
        let (alg, fp) = fingerprint(key).unwrap();
        assert_eq!(alg, "ssh-ed25519");
        assert_eq!(fp, "SHA256:6u+BmSK9gSaj0Ke4gEOW9QJ5kC8eHk0SwejBgIgSr/8");
        assert!(fingerprint("ssh-ed25519 not-base64!").is_none());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(12_000), "12s");
        assert_eq!(duration_text(192_000), "3m 12s");
        assert_eq!(duration_text(2 * 3_600_000 + 5 * 60_000), "2h 05m");
        assert_eq!(duration_text(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn unknown_machines_get_a_declaration() {
        assert_eq!(
            unknown_kdl("52:54:00:12:34:ab", "ms-01"),
            "host \"new-5254001234ab\" {\n    mac \"52:54:00:12:34:ab\"\n    server-type \"ms-01\"\n    rebuild 1\n}\n"
        );
    }
}
