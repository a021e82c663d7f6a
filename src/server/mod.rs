//! The HTTP server: read-only JSON API, the event stream, and (in `boot`)
//! the machine-facing boot-flow endpoints.
//!
//! Built as `app(state) -> Router` and run with an injected listener and
//! shutdown future, so tests bind `127.0.0.1:0`. No handler here changes a
//! host's state except through the store's state machine; the read-only
//! handlers never write at all.

pub mod api;
pub mod boot;
pub mod events;

use crate::decl::Snapshot;
use crate::settings::Settings;
use crate::store::Store;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// Largest request body any endpoint accepts (the installer's system
/// information and the webhook are a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can see. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub settings: watch::Receiver<Arc<Settings>>,
    /// Wakes the reconciler after a callback changed something.
    pub kick: Arc<Notify>,
    pub boot: Arc<boot::BootContext>,
    /// Turns true when the daemon stops: long-lived responses (the event
    /// stream) end so that graceful shutdown does not wait for them.
    pub stopping: watch::Receiver<bool>,
    /// The supervised dnsmasq's status (`pxe.dnsmasq: spawn` only).
    pub dnsmasq: Option<watch::Receiver<crate::boot::dnsmasq::DnsmasqStatus>>,
    /// Counters and histograms served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(boot::routes())
        .merge(events::routes())
        .merge(crate::dashboard::routes())
        .merge(crate::metrics::routes())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                // Log the path only: query strings may carry secrets.
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!("http", method = %req.method(), path = %redact_path(req.uri().path()))
                },
            ),
        )
        .with_state(state)
}

/// Paths of the callbacks carry a token as their last segment
/// (`/api/hosts/{name}/installed/{token}`): never log it. Anything below
/// `/api/hosts/{name}/{endpoint}/` is redacted, however the client spells
/// the path (a trailing slash or doubled slashes must not reveal a token
/// that the router then refuses).
pub fn redact_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() > 4 && segments[0] == "api" && segments[1] == "hosts" {
        format!("/api/hosts/{}/{}/<redacted>", segments[2], segments[3])
    } else {
        path.to_string()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn tokens_in_paths_are_redacted() {
        assert_eq!(
            redact_path("/api/hosts/pve-01/installed/SECRET"),
            "/api/hosts/pve-01/installed/<redacted>"
        );
        assert_eq!(
            redact_path("/api/hosts/pve-01/first-boot-script/SECRET"),
            "/api/hosts/pve-01/first-boot-script/<redacted>"
        );
        assert_eq!(redact_path("/api/hosts/pve-01"), "/api/hosts/pve-01");
        assert_eq!(
            redact_path("/api/hosts/pve-01/phone-home"),
            "/api/hosts/pve-01/phone-home"
        );
        for sneaky in [
            "/api/hosts/pve-01/installed/SECRET/",
            "//api//hosts/pve-01/installed//SECRET",
            "/api/hosts/pve-01/installed/x/SECRET",
        ] {
            assert!(!redact_path(sneaky).contains("SECRET"), "{sneaky}");
        }
    }
}
