//! The read-only dashboard: `GET /` (the fleet), `GET /hosts/{name}` (one
//! host) and the static assets under `/assets/`.
//!
//! Pages are rendered on the server from `templates/*.html` (autoescaped)
//! with the view models of [`view`], so they work without JavaScript; a
//! small script (`templates/assets/dashboard.js`) follows `/events` and
//! updates them in place. This module only reads: it has no handler that
//! accepts anything but GET and renders no control that changes anything.
//! It never renders a secret: the view models are built from record types
//! that carry none.

pub mod view;

use crate::decl::HostName;
use crate::server::api::{host_views, internal};
use crate::server::{AppState, SharedState};
use crate::state::HostState;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::{LazyLock, RwLock};

/// The dashboard's templates, embedded.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../templates/layout.html")),
    ("fleet.html", include_str!("../../templates/fleet.html")),
    ("host.html", include_str!("../../templates/host.html")),
    ("tile.html", include_str!("../../templates/tile.html")),
    ("error.html", include_str!("../../templates/error.html")),
];

/// Static assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../../templates/assets/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../templates/assets/dashboard.js"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("view model does not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cannot read template override {path}: {source}")]
    ReadOverride {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An embedded asset with its content hash (for the URL and the ETag).
struct Asset {
    content_type: &'static str,
    body: &'static str,
    hash: String,
}

static ASSET_TABLE: LazyLock<BTreeMap<&'static str, Asset>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(name, ct, body)| {
            let digest = sha2::Sha256::digest(body.as_bytes());
            let hash = hex::encode(&digest.as_slice()[..8]);
            (
                *name,
                Asset {
                    content_type: ct,
                    body,
                    hash,
                },
            )
        })
        .collect()
});

/// `/assets/{name}?v={hash}`: the URL changes whenever the content does,
/// so the browser may cache it for good.
pub fn asset_url(name: &str) -> String {
    match ASSET_TABLE.get(name) {
        Some(a) => format!("/assets/{name}?v={}", a.hash),
        None => format!("/assets/{name}"),
    }
}

fn environment() -> Result<Environment<'static>, DashboardError> {
    environment_with(None)
}

/// The environment with every template replaced by `dir/<name>` where that
/// file exists (the operator's `paths.templates_dir`, shared with the iPXE
/// and first-boot templates).
fn environment_with(dir: Option<&std::path::Path>) -> Result<Environment<'static>, DashboardError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug info would copy template state (values) into errors.
    env.set_debug(false);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // Our own URLs (no outside input): not escaped, so they read plainly.
    env.add_global(
        "css_url",
        Value::from_safe_string(asset_url("dashboard.css")),
    );
    env.add_global("js_url", Value::from_safe_string(asset_url("dashboard.js")));
    for (name, embedded) in TEMPLATES {
        let source = match dir.map(|d| d.join(name)) {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*embedded).to_string(),
                Err(source) => return Err(DashboardError::ReadOverride { path, source }),
            },
            None => (*embedded).to_string(),
        };
        env.add_template_owned(*name, source)
            .map_err(|source| DashboardError::Template {
                name: (*name).to_string(),
                source,
            })?;
    }
    Ok(env)
}

/// The environment installed by [`use_templates_dir`], if any.
static OVERRIDDEN: RwLock<Option<std::sync::Arc<Environment<'static>>>> = RwLock::new(None);

/// Loads the dashboard's templates with the operator's overrides from
/// `dir` (a file per template name: `layout.html`, `fleet.html`,
/// `host.html`, `tile.html`, `error.html`). Called once at start; an
/// override that cannot be read or does not parse is an error then, not a
/// broken page later. `None` goes back to the embedded templates.
pub fn use_templates_dir(dir: Option<&std::path::Path>) -> Result<(), DashboardError> {
    let env = match dir {
        Some(d) => Some(std::sync::Arc::new(environment_with(Some(d))?)),
        None => None,
    };
    if let Ok(mut slot) = OVERRIDDEN.write() {
        *slot = env;
    }
    Ok(())
}

static ENV: LazyLock<Result<Environment<'static>, String>> =
    LazyLock::new(|| environment().map_err(|e| e.to_string()));

/// Converts a serializable view model into a template value (the crate
/// builds minijinja without its serde feature).
fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(m) => Value::from(
            m.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// Renders template `name` with the view model `ctx`.
pub fn render(name: &str, ctx: &impl Serialize) -> Result<String, DashboardError> {
    let overridden = OVERRIDDEN.read().ok().and_then(|o| o.clone());
    let env = match &overridden {
        Some(env) => env.as_ref(),
        None => ENV.as_ref().map_err(|e| DashboardError::Template {
            name: name.to_string(),
            source: minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.clone()),
        })?,
    };
    let value = to_value(&serde_json::to_value(ctx)?);
    let err = |source| DashboardError::Template {
        name: name.to_string(),
        source,
    };
    env.get_template(name)
        .map_err(err)?
        .render(value)
        .map_err(err)
}

/// The dnsmasq status line shown in the diagnostics panel; set by whoever
/// supervises dnsmasq (`None`: not known / not supervised).
static DNSMASQ_STATUS: RwLock<Option<String>> = RwLock::new(None);

/// Sets the dnsmasq status line the dashboard shows.
pub fn set_dnsmasq_status(status: Option<String>) {
    if let Ok(mut s) = DNSMASQ_STATUS.write() {
        *s = status;
    }
}

/// The line for the diagnostics panel: the supervised dnsmasq's status
/// when the daemon runs it, else whatever was set with
/// [`set_dnsmasq_status`].
fn dnsmasq_status(st: &AppState) -> Option<String> {
    use crate::boot::dnsmasq::DnsmasqState;
    if let Some(rx) = &st.dnsmasq {
        let s = rx.borrow().clone();
        let state = match s.state {
            DnsmasqState::Starting => "starting",
            DnsmasqState::Running => "running",
            DnsmasqState::Backoff => "waiting to restart",
            DnsmasqState::Stopped => "stopped",
        };
        let mut line = format!("supervised by the daemon: {state}");
        if let Some(pid) = s.pid {
            line.push_str(&format!(" (pid {pid})"));
        }
        if s.restarts > 0 {
            line.push_str(&format!(", {} restarts", s.restarts));
        }
        if let Some(exit) = &s.last_exit {
            line.push_str(&format!("; last exit: {exit}"));
        }
        return Some(line);
    }
    DNSMASQ_STATUS.read().ok().and_then(|s| s.clone())
}

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/", get(fleet))
        .route("/hosts/{name}", get(host))
        .route("/assets/{name}", get(asset))
}

/// Security headers for every page: no framing, no sniffing, scripts and
/// styles only from ourselves.
fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
        Html(html),
    )
        .into_response()
}

#[derive(Serialize)]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    match render("error.html", &ErrorPage { title, message }) {
        Ok(html) => page(status, html),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct FleetQuery {
    state: Option<String>,
}

async fn fleet(State(st): State<SharedState>, Query(q): Query<FleetQuery>) -> Response {
    let filter = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<HostState>() {
            Ok(st) => Some(st),
            Err(_) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Unknown state",
                    "The state filter names no host state.",
                );
            }
        },
    };
    let snapshot = st.snapshot.borrow().clone();
    let settings = st.settings.borrow().clone();
    let store = st.store.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let hosts = store.hosts()?;
        let mut failed_in = std::collections::HashMap::new();
        for h in hosts.iter().filter(|h| h.state == HostState::Failed) {
            if let Some(s) = view::failed_in(&store.history(&h.name)?, h.state) {
                failed_in.insert(h.name.clone(), s);
            }
        }
        Ok::<_, crate::store::StoreError>((hosts, store.unknown_machines()?, failed_in))
    })
    .await;
    let (records, unknown, failed_in) = match loaded {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let model = view::fleet_page(view::FleetInput {
        snapshot: &snapshot,
        records: &records,
        unknown: &unknown,
        deadlines: &settings.deadlines,
        dnsmasq: dnsmasq_status(&st),
        filter,
        failed_in: &failed_in,
        now_ms: st.store.now_ms(),
    });
    match render("fleet.html", &model) {
        Ok(html) => page(StatusCode::OK, html),
        Err(e) => internal(e),
    }
}

async fn host(State(st): State<SharedState>, Path(name): Path<String>) -> Response {
    let Ok(name) = HostName::parse(&name) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid host name",
            "Host names are DNS labels.",
        );
    };
    let snapshot = st.snapshot.borrow().clone();
    let Some(decl) = snapshot.hosts.get(&name).cloned() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No such host",
            "No host of that name is declared in hosts.d.",
        );
    };
    let store = st.store.clone();
    let n = name.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((
            store.host(&n)?,
            store.history(&n)?,
            store.operations(&n)?,
            store.notes(&n)?,
        ))
    })
    .await;
    let (record, history, operations, notes) = match loaded {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let single = crate::decl::Snapshot {
        hosts: [(name, decl.clone())].into_iter().collect(),
        diagnostics: snapshot.diagnostics.clone(),
        ..Default::default()
    };
    let records: Vec<_> = record.into_iter().collect();
    let Some(hv) = host_views(&single, &records).into_iter().next() else {
        return internal("host view vanished");
    };
    let model = view::host_page(view::HostInput {
        view: &hv,
        wake_on_lan: decl.wake_on_lan,
        history: &history,
        operations: &operations,
        notes: &notes,
        now_ms: st.store.now_ms(),
    });
    match render("host.html", &model) {
        Ok(html) => page(StatusCode::OK, html),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct AssetQuery {
    v: Option<String>,
}

async fn asset(
    Path(name): Path<String>,
    Query(q): Query<AssetQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(a) = ASSET_TABLE.get(name.as_str()) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let etag = format!("\"{}\"", a.hash);
    // With the content hash in the URL the response never changes: cache
    // it for good. Without it, make the browser revalidate.
    let cache = if q.v.as_deref() == Some(a.hash.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag_value),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        a.body,
    )
        .into_response()
}

/// Renders the fleet page from explicit inputs (for tests and tools).
pub fn render_fleet(input: view::FleetInput<'_>) -> Result<String, DashboardError> {
    render("fleet.html", &view::fleet_page(input))
}

/// Renders a host page from explicit inputs (for tests and tools).
pub fn render_host(input: view::HostInput<'_>) -> Result<String, DashboardError> {
    render("host.html", &view::host_page(input))
}

#[cfg(test)]
mod tests {
    use super::environment_with;
    use minijinja::context;

    #[test]
    fn an_override_replaces_one_template_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("error.html"),
            "{% extends \"layout.html\" %}{% block main %}OURS: {{ message }}{% endblock %}",
        )
        .unwrap();
        let env = environment_with(Some(dir.path())).unwrap();
        let out = env
            .get_template("error.html")
            .unwrap()
            .render(context! { title => "t", message => "<b>x</b>" })
            .unwrap();
        assert!(out.contains("OURS: &lt;b&gt;x&lt;&#x2f;b&gt;"), "{out}");
        // layout.html is still the embedded one (and overrides stay escaped).
        assert!(out.contains("<html"), "{out}");
    }

    #[test]
    fn a_broken_override_is_an_error_naming_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleet.html"), "{% if %}").unwrap();
        let err = environment_with(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("fleet.html"), "{err}");
    }
}
