//! Log setup: journald (structured fields `HOST`, `MAC`, `STATE`,
//! `OPERATION` come from tracing fields `host`, `mac`, `state`,
//! `operation`) when running under systemd, human-readable stderr otherwise.
//!
//! Filter with `RUST_LOG` (default `info`). Never logs secrets itself; call
//! sites must not pass them.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry
            .with(journald.with_syslog_identifier("provisioning".into()))
            .try_init();
        return;
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a terminal: a log file or a pipe gets
                // plain text, not escape sequences.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .compact(),
        )
        .try_init();
}
