//! `provisioning check`: validates a hosts directory and the server types the
//! way `nginx -t` does, and prints every problem compiler style
//! (`path:line:column: error: message`, the source line and a caret) or as
//! JSON for tools. It runs the same loader and validator as the daemon and
//! never changes anything on disk.

use crate::decl::{DeclLoader, Diagnostic, Severity, Snapshot};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    #[default]
    Text,
    Json,
}

/// Validates `hosts_dir` (and the server-types file, when given) and writes
/// the report. Returns whether the declarations are valid (no errors;
/// warnings do not count).
pub fn run_check(
    hosts_dir: &Path,
    server_types: Option<&Path>,
    format: CheckFormat,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let snap = DeclLoader::new().load_all(hosts_dir, server_types);
    let valid = !snap.has_errors();
    match format {
        CheckFormat::Text => write_text(hosts_dir, &snap, out)?,
        CheckFormat::Json => write_json(&snap, out)?,
    }
    Ok(valid)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_text(hosts_dir: &Path, snap: &Snapshot, out: &mut impl Write) -> std::io::Result<()> {
    for d in &snap.diagnostics {
        write_diagnostic(d, out)?;
    }
    let errors = snap
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = snap.diagnostics.len() - errors;
    write!(
        out,
        "{}: {}, {}, {}",
        hosts_dir.display(),
        plural(snap.hosts.len(), "host", "hosts"),
        plural(snap.server_types.len(), "server type", "server types"),
        plural(errors, "error", "errors"),
    )?;
    if warnings > 0 {
        write!(out, ", {}", plural(warnings, "warning", "warnings"))?;
    }
    writeln!(out)
}

/// One diagnostic, clang style:
///
/// ```text
/// hosts.d/pve-01.kdl:2:9: error: invalid MAC address "58:47": …
///     2 |     mac "58:47"
///       |         ^
/// ```
pub fn write_diagnostic(d: &Diagnostic, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{d}")?;
    if d.line == 0 {
        return Ok(());
    }
    if let Some(snippet) = &d.snippet {
        let num = d.line.to_string();
        let gutter = " ".repeat(num.len());
        // Keep tabs so the caret lines up under the same character.
        let pad: String = snippet
            .chars()
            .take(d.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        writeln!(out, "    {num} | {snippet}")?;
        writeln!(out, "    {gutter} | {pad}^")?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    hosts: usize,
    server_types: usize,
    diagnostics: Vec<JsonDiagnostic<'a>>,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: String,
    line: usize,
    column: usize,
    severity: Severity,
    message: &'a str,
}

fn write_json(snap: &Snapshot, out: &mut impl Write) -> std::io::Result<()> {
    let report = JsonReport {
        valid: !snap.has_errors(),
        hosts: snap.hosts.len(),
        server_types: snap.server_types.len(),
        diagnostics: snap
            .diagnostics
            .iter()
            .map(|d| JsonDiagnostic {
                file: d.file.display().to_string(),
                line: d.line,
                column: d.column,
                severity: d.severity,
                message: &d.message,
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::other)?;
    writeln!(out)
}
