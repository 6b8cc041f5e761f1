//! HTTP: what nodes fetch (iPXE scripts, installer files, preseeds, scripts), what they
//! report (events), the admin REST API, health and metrics.
//!
//! Owns routing, request limits and the JSON error shape. Handlers call inventory and
//! render functions; the decisions (which script, which state change) live there.
//! Request logs name the route, never its tokens.

pub mod agent;
pub mod api;
pub mod assign;
pub mod boot;
pub mod commission;
pub mod conn;
pub mod files;
pub mod head;
pub mod health;
pub mod power;
/// A JSON request body, or a 400 in the one error shape.
pub(crate) fn json<T>(
    r: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    r.map(|axum::Json(v)| v)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {}", e.body_text())))
}

#[cfg(test)]
mod router_tests;
pub mod stream;
pub mod ui;

use crate::inventory::InventoryError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// The one error contract of every HTTP answer: a status, a stable machine-readable
/// `code` and a public message, rendered as `{"error": "<message>", "code": "<code>"}`.
/// Domain errors ([`InventoryError`], [`crate::enroll::Refusal`], …) know nothing of
/// HTTP; the `From` conversions below are the one place that maps them. Internal
/// detail (SQL errors, file paths of failed reads) is logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::INSUFFICIENT_STORAGE => "disk_full",
            s if s.is_server_error() => "internal",
            _ => "error",
        };
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// The same error with a more specific `code`.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
    }
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }
    pub fn bad_request(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, what)
    }
    /// A failure that is rackseed's, not the caller's: `what` is logged with its
    /// sources; the caller learns only that it happened and where to look.
    pub fn internal(what: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %what, "request failed inside rackseed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rackseed failed to answer this request; the reason is in its log (journalctl -u rackseed)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "error": self.message, "code": self.code })),
        )
            .into_response()
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> ApiError {
        match &e {
            InventoryError::NotFound(_) => ApiError::not_found(e.to_string()),
            InventoryError::Conflict(_) | InventoryError::Transition { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            InventoryError::DiskFull { .. } => {
                tracing::error!(error = %e, "data directory full");
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            InventoryError::Unreachable { .. } => {
                tracing::error!(error = %crate::error_chain(&e), "inventory unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the inventory database cannot be reached; retry (the reason is in rackseed's log)".to_string(),
                )
                .with_code("unavailable")
            }
            InventoryError::Busy { .. } => {
                tracing::warn!(error = %crate::error_chain(&e), "inventory busy");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).with_code("busy")
            }
            _ => ApiError::internal(crate::error_chain(&e)),
        }
    }
}

impl From<crate::node::EventRejected> for ApiError {
    fn from(e: crate::node::EventRejected) -> ApiError {
        match e {
            crate::node::EventRejected::Kind(_) => ApiError::bad_request(e.to_string()),
            crate::node::EventRejected::TooLarge => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
        }
    }
}

impl From<crate::enroll::Refusal> for ApiError {
    fn from(r: crate::enroll::Refusal) -> ApiError {
        use crate::enroll::Refusal as R;
        let status = match &r {
            R::UnknownToken | R::TokenUsed | R::TokenExpired | R::WrongNode => {
                StatusCode::FORBIDDEN
            }
            R::WrongState(..) | R::Mismatch(_) | R::Placement(_) => StatusCode::CONFLICT,
            R::BadRequest(_) => StatusCode::BAD_REQUEST,
            R::Internal(_) => return ApiError::internal(&r),
        };
        ApiError::new(status, format!("enrollment refused: {r}")).with_code(r.code())
    }
}

async fn log_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "<unmatched>".into());
    let resp = next.run(req).await;
    state.metrics.http_requests.inc();
    debug!(%method, %route, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "http request");
    resp
}

/// `GET /healthz`: each supervised service and whether it is up; 503 when one is down.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let services = state.health.list();
    let down = services.iter().any(|(_, d)| d.is_some());
    let list: serde_json::Map<String, serde_json::Value> = services
        .into_iter()
        .map(|(name, d)| {
            let v = match d {
                None => json!({ "status": "up" }),
                Some(why) => json!({ "status": "down", "reason": why }),
            };
            (name.to_string(), v)
        })
        .collect();
    let body = json!({
        "status": if down { "unhealthy" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "services": list,
    });
    let code = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<String, ApiError> {
    crate::state::blocking(&state, move |state| {
        let counts = state.inventory.count_by_state()?;
        let stalled = state.stalled.read().map_or(0, |m| m.len());
        let lags: Vec<(String, String, i64)> = state
            .replication_health()?
            .into_iter()
            .flat_map(|(g, members)| {
                members.into_iter().filter_map(move |m| {
                    m.lag_ms
                        .map(|l| (g.name.clone(), m.hostname.clone(), l / 1000))
                })
            })
            .collect();
        state.metrics.set_replication_lag(&lags);
        Ok(state
            .metrics
            .render(&counts, stalled, state.tftp_sessions.active()))
    })
    .await
}

/// The admin API's router (`server.admin`): `/api/…`, with health and metrics.
pub fn admin_router(state: Arc<AppState>) -> Router {
    let limit = state.config.server.max_body;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api", api::router(state.clone()))
        .merge(ui::routes(state.clone()))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), log_requests))
        .with_state(state)
}

/// The router of the listener nodes use (`server.http`): boot scripts, installer
/// files, install files and events, agent routes, health and metrics. The admin API
/// is not here: its bearer token would cross the provisioning network.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.server.max_body;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/boot.ipxe", get(boot::chain_script))
        .route("/boot/{file}", get(boot::node_script))
        .route("/installer/drivers/{file}", get(boot::driver_file))
        .route("/installer/{image}/{file}", get(boot::installer_file))
        .route("/ipxe/{file}", get(boot::ipxe_binary))
        .route("/install/{token}/{file}", get(boot::install_file))
        .route("/install/{token}/events/{kind}", post(boot::install_event))
        .route("/install/{token}/agent/rackseed", get(boot::agent_binary))
        .route(
            "/commission/{token}/facts",
            post(commission::commission_facts),
        )
        .route("/commission/{token}/next", get(commission::commission_next))
        .route(
            "/commission/{token}/events/{kind}",
            post(commission::commission_event),
        )
        .route(
            "/commission/{token}/{file}",
            get(commission::commission_file),
        )
        .merge(agent::plain_routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), log_requests))
        .with_state(state)
}

/// Which listener [`run`] serves: the nodes' one answers whole-file `GET`s of
/// installer files with `sendfile` ([`conn`]); the admin one hands every connection to
/// hyper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Nodes,
    Admin,
}

/// Serves HTTP on an already-bound listener until `cancel` fires, with bounds: at
/// most `server.max_connections` open connections (more are closed at once and
/// counted), request headers within `server.header_timeout`, and a connection that
/// moves no byte for `server.idle_timeout` is closed.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    app: Router,
    cancel: CancellationToken,
    which: Listener,
) -> std::io::Result<()> {
    info!(addr = ?listener.local_addr().ok(), "http listening");
    let cfg = &state.config.server;
    let idle_timeout = cfg.idle_timeout;
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let senders = Arc::new(crate::workers::Workers::new(
        "http-send",
        128 * 1024,
        16,
        std::time::Duration::from_secs(60),
    ));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            state.metrics.http_connections_refused.inc();
            debug!(%peer, "too many HTTP connections; closing");
            continue;
        };
        let (app, cancel, state) = (app.clone(), cancel.clone(), state.clone());
        let senders = senders.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let started = Instant::now();
            let tcp = files::Activity::new(tcp, activity.clone(), started);
            let conn = conn::serve(state, app, tcp, peer, cancel, which, senders);
            tokio::pin!(conn);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = tick.tick() => {
                        let last = activity.load(std::sync::atomic::Ordering::Relaxed);
                        let idle = started.elapsed().saturating_sub(std::time::Duration::from_millis(last));
                        if idle > idle_timeout {
                            debug!(%peer, idle_s = idle.as_secs(), "idle HTTP connection closed");
                            return;
                        }
                    }
                }
            }
        });
    }
}
