//! Read-only JSON API: `/api/hosts`, `/api/hosts/{name}`,
//! `/api/diagnostics`, `/api/unknown-machines`, `/healthz`. Never writes.

use super::SharedState;
use crate::decl::{Diagnostic, HostName, Snapshot};
use crate::store::{HostRecord, NoteRecord, OperationRecord, TransitionRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/hosts", get(list_hosts))
        .route("/api/hosts/{name}", get(one_host))
        .route("/api/diagnostics", get(diagnostics))
        .route("/api/unknown-machines", get(unknown_machines))
}

/// One host as the API shows it: the declaration joined with the observed
/// state. No secrets.
#[derive(Debug, Serialize)]
pub struct HostView {
    pub name: String,
    pub mac: String,
    pub server_type: String,
    pub state: crate::state::HostState,
    /// Desired generation (`rebuild` in the declaration).
    pub rebuild: u64,
    pub observed_generation: u64,
    /// RFC 3339 time the current state was entered.
    pub since: String,
    pub since_ms: i64,
    pub operation: Option<i64>,
    pub last_error: Option<String>,
    /// Problems in the file that declares this host.
    pub errors: Vec<String>,
    pub file: String,
    pub line: usize,
    pub wake_on_lan: bool,
}

#[derive(Debug, Serialize)]
pub struct HostDetail {
    #[serde(flatten)]
    pub host: HostView,
    pub history: Vec<TransitionRecord>,
    pub operations: Vec<OperationRecord>,
    pub notes: Vec<NoteRecord>,
}

pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Joins the snapshot with the store's records, sorted by name.
pub fn host_views(snapshot: &Snapshot, records: &[HostRecord]) -> Vec<HostView> {
    let by_name: HashMap<&str, &HostRecord> =
        records.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut errors_by_file: HashMap<&std::path::Path, Vec<String>> = HashMap::new();
    for d in &snapshot.diagnostics {
        errors_by_file
            .entry(d.file.as_path())
            .or_default()
            .push(d.to_string());
    }
    snapshot
        .hosts
        .values()
        .map(|h| {
            let rec = by_name.get(h.name.as_str());
            let since_ms = rec.map(|r| r.since_ms).unwrap_or(0);
            HostView {
                name: h.name.to_string(),
                mac: h.mac.to_string(),
                server_type: h.server_type.clone(),
                state: rec
                    .map(|r| r.state)
                    .unwrap_or(crate::state::HostState::Registered),
                rebuild: h.rebuild,
                observed_generation: rec.map(|r| r.observed_generation).unwrap_or(0),
                since: rfc3339(since_ms),
                since_ms,
                operation: rec.and_then(|r| r.operation),
                last_error: rec.and_then(|r| r.last_error.clone()),
                errors: errors_by_file
                    .get(h.source.file.as_path())
                    .cloned()
                    .unwrap_or_default(),
                file: h.source.file.display().to_string(),
                line: h.source.line,
                wake_on_lan: h.wake_on_lan,
            }
        })
        .collect()
}

async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

async fn list_hosts(State(st): State<SharedState>) -> Response {
    let snapshot = st.snapshot.borrow().clone();
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.hosts()).await {
        Ok(Ok(records)) => Json(host_views(&snapshot, &records)).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

async fn one_host(State(st): State<SharedState>, Path(name): Path<String>) -> Response {
    let Ok(name) = HostName::parse(&name) else {
        return (StatusCode::BAD_REQUEST, "invalid host name\n").into_response();
    };
    let snapshot = st.snapshot.borrow().clone();
    let Some(host) = snapshot.hosts.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "no such host\n").into_response();
    };
    let store = st.store.clone();
    let n = name.to_string();
    let result = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((
            store.host(&n)?,
            store.history(&n)?,
            store.operations(&n)?,
            store.notes(&n)?,
        ))
    })
    .await;
    match result {
        Ok(Ok((rec, history, operations, notes))) => {
            let records: Vec<HostRecord> = rec.into_iter().collect();
            let single = Snapshot {
                hosts: [(name, host)].into_iter().collect(),
                diagnostics: snapshot.diagnostics.clone(),
                ..Snapshot::default()
            };
            let Some(view) = host_views(&single, &records).into_iter().next() else {
                return internal("host view vanished");
            };
            Json(HostDetail {
                host: view,
                history,
                operations,
                notes,
            })
            .into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

async fn diagnostics(State(st): State<SharedState>) -> Json<Vec<Diagnostic>> {
    Json(st.snapshot.borrow().diagnostics.clone())
}

/// Machines that PXE-booted without a declaration (`pxe.discover_unknown`),
/// most recently seen first.
async fn unknown_machines(State(st): State<SharedState>) -> Response {
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.unknown_machines()).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
