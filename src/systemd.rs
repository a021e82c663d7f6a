//! systemd integration, best effort: `READY=1`, `STATUS=`, `RELOADING=1`,
//! `STOPPING=1` and watchdog pings at half `WATCHDOG_USEC`.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op. It never
//! changes the environment after the runtime started and never fails the
//! daemon: a notification that cannot be sent is logged at debug level.

use sd_notify::NotifyState;
use std::time::Duration;

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The daemon is serving: socket bound, first snapshot loaded.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Around a SIGHUP reload; `ready` ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading settings"),
        ]),
        Err(e) => tracing::debug!(error = %e, "cannot read the monotonic clock"),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Half the watchdog interval systemd asked for, if it asked.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog]);
}
