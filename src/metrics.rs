//! Prometheus metrics: the counters and histograms the daemon keeps, and
//! `GET /metrics` in the text exposition format 0.0.4, written by hand.
//!
//! Transition counters and the duration histograms are fed from the store's
//! event stream by [`start_collector`]; the boot-flow handlers, the
//! declaration loader and the dnsmasq supervisor call the small hooks on
//! [`Metrics`]. The host gauge is computed from the store at scrape time.
//! Labels only ever hold bounded vocabularies (state and event names,
//! endpoint names, reason categories): never a host name, a MAC, or any text
//! that came from outside, and never a secret.

use crate::server::SharedState;
use crate::state::{EventKind, HostState};
use crate::store::{HostRecord, Store, StoreEvent, TransitionRecord};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the whole-rebuild histogram: 1 min to 3 h.
const REBUILD_BUCKETS: &[f64] = &[
    60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0,
];
/// Upper bounds (seconds) of the per-phase histogram: 1 s to 2 h.
const PHASE_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Reason categories of failed rebuilds: the `reason` label never takes any
/// other value.
pub const REASON_CATEGORIES: &[&str] =
    &["deadline", "installer", "join", "infrastructure", "other"];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(slot) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                fmt_float(*bound)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", fmt_float(self.sum));
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What the collector remembers per host to measure durations.
#[derive(Clone, Debug)]
struct Track {
    state: HostState,
    since_ms: i64,
    /// When the running rebuild started, if one runs.
    rebuild_started_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    transitions: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    rebuilds: BTreeMap<(&'static str, &'static str), u64>,
    boot_requests: BTreeMap<(&'static str, &'static str), u64>,
    rebuild_duration: Option<Histogram>,
    phase_duration: BTreeMap<HostState, Histogram>,
    tracks: HashMap<String, Track>,
}

/// The daemon's metrics. Shared as `Arc<Metrics>` in [`AppState`].
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    declaration_reloads: AtomicU64,
    declaration_errors: AtomicU64,
    dnsmasq_restarts: AtomicU64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters in a
        // state worse than "one observation missing": keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request to a boot-flow endpoint (`ipxe`, `answer`,
    /// `installed`, `first_boot_script`, `phone_home`, …) with its outcome
    /// (`ok`, `refused`, `not_found`, `bad_request`, `error`, …).
    pub fn boot_request(&self, endpoint: &'static str, outcome: &'static str) {
        *self
            .lock()
            .boot_requests
            .entry((endpoint, outcome))
            .or_insert(0) += 1;
    }

    /// Counts one (re)load of the declarations.
    pub fn declaration_reloaded(&self) {
        self.declaration_reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the number of current declaration errors (a gauge).
    pub fn set_declaration_errors(&self, errors: u64) {
        self.declaration_errors.store(errors, Ordering::Relaxed);
    }

    /// Counts one restart of the supervised dnsmasq.
    pub fn dnsmasq_restarted(&self) {
        self.dnsmasq_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the dnsmasq restart count from a supervisor that counts them
    /// itself (never lowers it).
    pub fn set_dnsmasq_restarts(&self, restarts: u64) {
        self.dnsmasq_restarts.fetch_max(restarts, Ordering::Relaxed);
    }

    /// Tells the collector where a host is, so the first transition it sees
    /// after a daemon start can be measured. `rebuild_started_ms` is the
    /// start of the open operation, if any.
    pub fn seed_host(
        &self,
        name: &str,
        state: HostState,
        since_ms: i64,
        rebuild_started_ms: Option<i64>,
    ) {
        self.lock().tracks.insert(
            name.to_string(),
            Track {
                state,
                since_ms,
                rebuild_started_ms,
            },
        );
    }

    /// Accounts for one committed transition: the counter, the time spent
    /// in the state it left and, when a rebuild ends, its outcome and
    /// duration.
    pub fn observe_transition(&self, t: &TransitionRecord) {
        let mut inner = self.lock();
        *inner
            .transitions
            .entry((t.from.as_str(), t.to.as_str(), t.event.as_str()))
            .or_insert(0) += 1;

        let previous = inner.tracks.get(&t.host).cloned();
        // Re-entering the same state (a second iPXE fetch, a resumed join)
        // continues the phase; a new rebuild always starts a new one.
        if t.from == t.to && t.event != EventKind::StartRebuild {
            return;
        }
        if let Some(prev) = &previous
            && prev.state == t.from
            && t.from.is_active()
        {
            let seconds = (t.at_ms - prev.since_ms) as f64 / 1000.0;
            inner
                .phase_duration
                .entry(t.from)
                .or_insert_with(|| Histogram::new(PHASE_BUCKETS))
                .observe(seconds);
        }
        let mut rebuild_started_ms = previous.as_ref().and_then(|p| p.rebuild_started_ms);
        match t.event {
            EventKind::StartRebuild => {
                if t.from.is_active() {
                    *inner
                        .rebuilds
                        .entry(("superseded", "superseded"))
                        .or_insert(0) += 1;
                }
                rebuild_started_ms = Some(t.at_ms);
            }
            EventKind::Completed | EventKind::Fail => {
                let key = if t.event == EventKind::Completed {
                    ("ready", "none")
                } else {
                    ("failed", reason_category(&t.cause))
                };
                *inner.rebuilds.entry(key).or_insert(0) += 1;
                if let Some(start) = rebuild_started_ms.take() {
                    inner
                        .rebuild_duration
                        .get_or_insert_with(|| Histogram::new(REBUILD_BUCKETS))
                        .observe((t.at_ms - start) as f64 / 1000.0);
                }
            }
            _ => {}
        }
        inner.tracks.insert(
            t.host.clone(),
            Track {
                state: t.to,
                since_ms: t.at_ms,
                rebuild_started_ms,
            },
        );
    }

    /// The exposition text, with the host gauge from `hosts_by_state`
    /// (every state is listed, zeros included).
    pub fn render(&self, hosts_by_state: &BTreeMap<HostState, u64>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        header(
            &mut out,
            "provisioning_hosts",
            "gauge",
            "Declared hosts by state.",
        );
        for state in HostState::ALL {
            let n = hosts_by_state.get(&state).copied().unwrap_or(0);
            let _ = writeln!(out, "provisioning_hosts{{state=\"{state}\"}} {n}");
        }

        let inner = self.lock();
        header(
            &mut out,
            "provisioning_transitions_total",
            "counter",
            "State transitions applied, by from-state, to-state and event.",
        );
        for ((from, to, event), n) in &inner.transitions {
            let _ = writeln!(
                out,
                "provisioning_transitions_total{{from=\"{from}\",to=\"{to}\",event=\"{event}\"}} {n}"
            );
        }

        header(
            &mut out,
            "provisioning_rebuilds_total",
            "counter",
            "Rebuilds that ended, by outcome (ready, failed, superseded) and reason category.",
        );
        for ((outcome, reason), n) in &inner.rebuilds {
            let _ = writeln!(
                out,
                "provisioning_rebuilds_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
            );
        }

        header(
            &mut out,
            "provisioning_rebuild_duration_seconds",
            "histogram",
            "Duration of finished rebuilds, from start to ready or failed.",
        );
        inner
            .rebuild_duration
            .clone()
            .unwrap_or_else(|| Histogram::new(REBUILD_BUCKETS))
            .write(&mut out, "provisioning_rebuild_duration_seconds", "");

        header(
            &mut out,
            "provisioning_phase_duration_seconds",
            "histogram",
            "Time spent in each state of a rebuild.",
        );
        for state in HostState::ALL.into_iter().filter(|s| s.is_active()) {
            let labels = format!("state=\"{state}\"");
            match inner.phase_duration.get(&state) {
                Some(h) => h.write(&mut out, "provisioning_phase_duration_seconds", &labels),
                None => Histogram::new(PHASE_BUCKETS).write(
                    &mut out,
                    "provisioning_phase_duration_seconds",
                    &labels,
                ),
            }
        }

        header(
            &mut out,
            "provisioning_boot_requests_total",
            "counter",
            "Boot-flow requests by endpoint and outcome (refusals included).",
        );
        for ((endpoint, outcome), n) in &inner.boot_requests {
            let _ = writeln!(
                out,
                "provisioning_boot_requests_total{{endpoint=\"{}\",outcome=\"{}\"}} {n}",
                escape_label(endpoint),
                escape_label(outcome)
            );
        }
        drop(inner);

        header(
            &mut out,
            "provisioning_declaration_reloads_total",
            "counter",
            "Loads and reloads of hosts.d and the server types.",
        );
        let _ = writeln!(
            out,
            "provisioning_declaration_reloads_total {}",
            self.declaration_reloads.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "provisioning_declaration_errors",
            "gauge",
            "Current errors in hosts.d and the server types.",
        );
        let _ = writeln!(
            out,
            "provisioning_declaration_errors {}",
            self.declaration_errors.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "provisioning_dnsmasq_restarts_total",
            "counter",
            "Restarts of the supervised dnsmasq.",
        );
        let _ = writeln!(
            out,
            "provisioning_dnsmasq_restarts_total {}",
            self.dnsmasq_restarts.load(Ordering::Relaxed)
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn fmt_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Maps a failure cause to one of [`REASON_CATEGORIES`], so the label
/// stays bounded whatever text the cause holds.
pub fn reason_category(cause: &str) -> &'static str {
    let c = cause.to_ascii_lowercase();
    if c.contains("deadline") || c.contains("timed out") || c.contains("timeout") {
        "deadline"
    } else if c.contains("infrastructure") {
        "infrastructure"
    } else if c.contains("join") || c.contains("ssh") || c.contains("pvecm") {
        "join"
    } else if c.contains("install") {
        "installer"
    } else {
        "other"
    }
}

/// Counts hosts per state (every state present, zeros included).
pub fn count_by_state(records: &[HostRecord]) -> BTreeMap<HostState, u64> {
    let mut counts: BTreeMap<HostState, u64> = HostState::ALL.iter().map(|s| (*s, 0)).collect();
    for r in records.iter().filter(|r| !r.retired) {
        *counts.entry(r.state).or_insert(0) += 1;
    }
    counts
}

/// Feeds `metrics` from the store's events until the store goes away.
/// Subscribes before seeding from the store's current state, so no
/// transition falls between the two.
pub fn start_collector(metrics: Arc<Metrics>, store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    let mut rx = store.subscribe();
    tokio::spawn(async move {
        let seed_metrics = metrics.clone();
        let seeded = tokio::task::spawn_blocking(move || -> crate::store::Result<()> {
            for h in store.hosts()? {
                let started = match h.operation {
                    Some(op) => store.operation(op)?.map(|o| o.started_ms),
                    None => None,
                };
                seed_metrics.seed_host(&h.name, h.state, h.since_ms, started);
            }
            Ok(())
        })
        .await;
        match seeded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot seed host states"),
            Err(e) => tracing::warn!(error = %e, "metrics: seeding task failed"),
        }
        loop {
            match rx.recv().await {
                Ok(StoreEvent::Transition(t)) => metrics.observe_transition(&t),
                Ok(StoreEvent::Note(_)) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "metrics: fell behind the store's events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

pub fn routes() -> Router<SharedState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(st): State<SharedState>) -> Response {
    if let Some(rx) = &st.dnsmasq {
        let restarts = rx.borrow().restarts;
        st.metrics.set_dnsmasq_restarts(restarts);
    }
    let store = st.store.clone();
    let counts = match tokio::task::spawn_blocking(move || store.stats()).await {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => return crate::server::api::internal(e),
        Err(e) => return crate::server::api::internal(e),
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        st.metrics.render(&counts),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(
        host: &str,
        at: i64,
        from: HostState,
        to: HostState,
        ev: EventKind,
        cause: &str,
    ) -> TransitionRecord {
        TransitionRecord {
            id: 0,
            host: host.into(),
            operation: Some(1),
            at_ms: at,
            from,
            to,
            event: ev,
            cause: cause.into(),
        }
    }

    #[test]
    fn a_rebuild_feeds_counters_and_histograms() {
        use EventKind as E;
        use HostState as S;
        let m = Metrics::new();
        m.observe_transition(&t(
            "a",
            0,
            S::Registered,
            S::PxeReady,
            E::StartRebuild,
            "rebuild 1",
        ));
        m.observe_transition(&t(
            "a",
            10_000,
            S::PxeReady,
            S::PxeBooted,
            E::IpxeServed,
            "",
        ));
        m.observe_transition(&t(
            "a",
            12_000,
            S::PxeBooted,
            S::PxeBooted,
            E::IpxeServed,
            "",
        ));
        m.observe_transition(&t(
            "a",
            20_000,
            S::PxeBooted,
            S::Failed,
            E::Fail,
            "deadline missed",
        ));
        let text = m.render(&BTreeMap::new());
        assert!(
            text.contains("provisioning_rebuilds_total{outcome=\"failed\",reason=\"deadline\"} 1")
        );
        assert!(text.contains(
            "provisioning_phase_duration_seconds_bucket{state=\"pxe_ready\",le=\"15\"} 1"
        ));
        assert!(text.contains("provisioning_phase_duration_seconds_sum{state=\"pxe_booted\"} 10"));
        assert!(text.contains("provisioning_rebuild_duration_seconds_count 1"));
        assert!(text.contains("provisioning_rebuild_duration_seconds_sum 20"));
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(
            reason_category("deadline for installing missed"),
            "deadline"
        );
        assert_eq!(reason_category("SSH connect refused"), "join");
        assert_eq!(reason_category("installer reported an error"), "installer");
        assert_eq!(reason_category("a \"weird\"\nthing"), "other");
    }
}
