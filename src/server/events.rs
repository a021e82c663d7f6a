//! `GET /events`: Server-Sent Events for dashboards and `status --watch`.
//!
//! Event types: `transition` (a [`crate::store::TransitionRecord`]), `note`
//! (a [`crate::store::NoteRecord`]), `diagnostics` (the current declaration
//! problems, sent whenever they change) and `resync` (the client fell behind
//! and should refetch `/api/hosts`). The stream only reads.

use super::SharedState;
use crate::store::StoreEvent;
use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

pub fn routes() -> Router<SharedState> {
    Router::new().route("/events", get(events))
}

fn sse_event(kind: &str, data: &impl serde::Serialize) -> Option<Event> {
    let json = serde_json::to_string(data).ok()?;
    Some(Event::default().event(kind).data(json))
}

fn store_event(ev: &StoreEvent) -> Option<Event> {
    match ev {
        StoreEvent::Transition(t) => sse_event("transition", t),
        StoreEvent::Note(n) => sse_event("note", n),
    }
}

async fn events(
    State(st): State<SharedState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut store_rx = st.store.subscribe();
    let mut snapshot_rx = st.snapshot.clone();
    let mut stopping = st.stopping.clone();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    tokio::spawn(async move {
        // Say hello with the current diagnostics so a (re)connecting client
        // knows it is live.
        let hello = {
            let snap = snapshot_rx.borrow_and_update();
            sse_event("diagnostics", &snap.diagnostics)
        };
        if let Some(ev) = hello
            && tx.send(Ok(ev)).await.is_err()
        {
            return;
        }
        let mut last_diags = snapshot_rx.borrow().diagnostics.clone();
        loop {
            let out = tokio::select! {
                r = store_rx.recv() => match r {
                    Ok(ev) => store_event(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => sse_event("resync", &serde_json::json!({"missed": n})),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                r = snapshot_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let diags = snapshot_rx.borrow_and_update().diagnostics.clone();
                    if diags == last_diags {
                        continue;
                    }
                    last_diags = diags;
                    sse_event("diagnostics", &last_diags)
                }
                _ = tx.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            };
            if let Some(ev) = out
                && tx.send(Ok(ev)).await.is_err()
            {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
