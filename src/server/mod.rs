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

/// What the router hands each handler: one reference count per request
/// instead of one per field of [`AppState`] (in a boot storm, two cores
/// contending for a dozen shared counters per request cost measurably).
pub type SharedState = Arc<AppState>;

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
        .with_state(Arc::new(state))
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

/// The listen queue asked for. Linux caps it at `net.core.somaxconn` (4096 by
/// default since 5.4). The standard library's (and tokio's) 128 overflows when a
/// rack of machines powers on at once: every SYN beyond the queue is dropped and
/// retried by the client only after one second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the daemon's listening socket (address reuse on, [`LISTEN_BACKLOG`]).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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

    /// 600 machines connecting at once while nobody accepts yet: every
    /// handshake completes (with the default backlog of 128, the 129th SYN
    /// and later are dropped and their connect times out here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listen_queue_holds_a_rack_powering_on() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connected = tokio::task::spawn_blocking(move || {
            let handles: Vec<_> = (0..600)
                .map(|_| {
                    std::thread::spawn(move || {
                        std::net::TcpStream::connect_timeout(
                            &addr,
                            std::time::Duration::from_millis(800),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter(|r| r.is_ok())
                .count()
        })
        .await
        .unwrap();
        assert_eq!(connected, 600);
        drop(listener);
    }

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
