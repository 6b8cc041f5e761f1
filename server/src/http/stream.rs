//! `GET /api/events/stream`: the timeline as Server-Sent Events, for the console and
//! `rackseed node events --follow`. Each open stream re-reads what was stored after the
//! last event it sent whenever the event writer signals a change.

use super::ApiError;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// `GET /api/events/stream[?node=KEY][&after=ID][&kind=KIND]`: the timeline as
/// Server-Sent Events, live. Each event is `event: timeline`, `id: <event id>` and
/// `data: {"event": {…}, "node": {…}}` (the node as it is when the event is sent, so a
/// follower sees state changes); a reconnecting `EventSource` resumes after
/// `Last-Event-ID`. Without `node` it carries every node's events (the console's
/// overview) and starts at the newest unless `after` is given. The console and
/// `rackseed node events --follow` read it.
pub async fn event_stream(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as Sse, KeepAlive};
    let node = match q.node.clone() {
        Some(k) => Some(crate::state::blocking(&state, move |s| s.inventory.find_node(&k)).await?),
        None => None,
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let after = match (resume.or(q.after), &node) {
        (Some(a), _) => a,
        (None, Some(_)) => 0,
        (None, None) => crate::state::blocking(&state, |s| s.inventory.last_event_id()).await?,
    };
    let hello = node.as_ref().map(|n| {
        Sse::default()
            .event("node")
            .json_data(serde_json::json!({ "node": n }))
            .unwrap_or_default()
    });
    let feed = Feed {
        state: state.clone(),
        node: node.map(|n| n.id),
        kind: q.kind,
        after,
        changed: state.events.subscribe(),
        queue: std::collections::VecDeque::new(),
        states: std::collections::HashMap::new(),
    };
    let stream = futures_lite::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(item) = f.queue.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(item), f));
            }
            match f.fill().await {
                Ok(true) => continue,
                Ok(false) => {
                    if f.changed.changed().await.is_err() {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "event stream ended");
                    return None;
                }
            }
        }
    });
    let stream = futures_lite::StreamExt::chain(futures_lite::stream::iter(hello.map(Ok)), stream);
    Ok(axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

#[derive(Deserialize)]
pub struct StreamQuery {
    node: Option<String>,
    after: Option<i64>,
    kind: Option<String>,
}

/// The state of one event stream.
struct Feed {
    state: Arc<AppState>,
    node: Option<i64>,
    kind: Option<String>,
    after: i64,
    changed: tokio::sync::watch::Receiver<u64>,
    queue: std::collections::VecDeque<axum::response::sse::Event>,
    /// The state last sent for each node.
    states: std::collections::HashMap<i64, Option<crate::inventory::NodeState>>,
}

impl Feed {
    /// Reads what was stored after `after` into the queue; whether anything was read.
    async fn fill(&mut self) -> Result<bool, crate::inventory::InventoryError> {
        let (after, node) = (self.after, self.node);
        let (events, nodes) = crate::state::blocking(&self.state, move |s| {
            let events = match node {
                Some(id) => s.inventory.events(id, after, 500)?,
                None => s.inventory.events_after(after, 500)?,
            };
            let mut nodes = std::collections::HashMap::new();
            for e in &events {
                if let std::collections::hash_map::Entry::Vacant(v) = nodes.entry(e.node_id)
                    && let Some(n) = s.inventory.node_by_id(e.node_id)?
                {
                    v.insert(n);
                }
            }
            Ok::<_, crate::inventory::InventoryError>((events, nodes))
        })
        .await?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(false);
        };
        self.after = last;
        for e in events {
            let node = nodes.get(&e.node_id);
            let state = node.map(|n| n.state);
            let changed = self.states.insert(e.node_id, state) != Some(state);
            if self.kind.as_ref().is_some_and(|k| *k != e.kind) {
                // Filtered out; a follower still learns of the node's new state.
                if changed
                    && let Ok(ev) = axum::response::sse::Event::default()
                        .event("node")
                        .json_data(serde_json::json!({ "node": node }))
                {
                    self.queue.push_back(ev);
                }
                continue;
            }
            let data = serde_json::json!({ "event": e, "node": node });
            if let Ok(ev) = axum::response::sse::Event::default()
                .event("timeline")
                .id(e.id.to_string())
                .json_data(data)
            {
                self.queue.push_back(ev);
            }
        }
        Ok(true)
    }
}
