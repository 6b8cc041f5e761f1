//! Agent-facing HTTP: `POST /enroll` (plain HTTP, authenticated by the single-use
//! enrollment token) and the HTTPS API where every request carries the node's client
//! certificate (`GET /agent/v1/view`).
//!
//! Owns the TLS listener (rustls; client certificates must chain to rackseed's CA and
//! name a node whose current certificate serial they carry). Decisions are in
//! `enroll` and `groups`.

use super::ApiError;
use crate::enroll::{self, EnrollRequest, EnrollResponse, Refusal};
use crate::groups;
use crate::inventory::now_ms;
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

fn refused(state: &AppState, node: Option<i64>, r: &Refusal) -> Response {
    if let Some(id) = node {
        let text = match r {
            Refusal::Internal(_) => "enrollment failed inside rackseed (see its log)".to_string(),
            r => format!("enrollment refused: {r}"),
        };
        state.events.emit(id, "enroll_refused", text);
    }
    info!(node = ?node, reason = %r, code = r.code(), "enrollment refused");
    ApiError::from(r.clone()).into_response()
}

/// The group a node belongs to: its own, else its profile's.
pub fn group_of(state: &AppState, node: &crate::inventory::Node) -> Option<String> {
    node.group.clone().or_else(|| {
        node.profile
            .as_deref()
            .and_then(|p| state.catalog().get(p))
            .and_then(|r| r.profile.group.clone())
    })
}

/// `POST /enroll`.
pub async fn post_enroll(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Response {
    crate::state::blocking(&state, move |state| {
        let req = match body {
            Ok(Json(r)) => r,
            Err(e) => {
                return refused(
                    &state,
                    None,
                    &Refusal::BadRequest(format!("invalid enrollment request: {}", e.body_text())),
                );
            }
        };
        let now = now_ms();
        let record = state.inventory.enroll_token_record(&req.token);
        let record = match record {
            Ok(r) => r,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let owner = record.as_ref().map(|r| r.node_id);
        let node = match enroll::judge_token(&req, record, now) {
            Ok(n) => n,
            // Tell the owner of the token (if any) that someone tried to use it.
            Err(r) => return refused(&state, owner, &r),
        };
        // The decision is pure; its inputs are read here.
        let group = match group_of(&state, &node)
            .map(|g| -> Result<_, crate::inventory::InventoryError> {
                let grp = crate::inventory::groups::get(&state.inventory, &g)?;
                let members = crate::inventory::groups::members(&state.inventory, &grp)?;
                Ok((grp, members))
            })
            .transpose()
        {
            Ok(g) => g,
            Err(e @ crate::inventory::InventoryError::NotFound(_)) => {
                return refused(&state, Some(node.id), &Refusal::Placement(e.to_string()));
            }
            Err(e) => return ApiError::from(e).into_response(),
        };
        let catalog = state.catalog();
        let profile = catalog.get(node.profile.as_deref().unwrap_or_default());
        let plan = match enroll::plan_of(&state.config, profile.as_deref(), state.mirror.clone(), &node) {
            Ok(p) => p,
            Err(r) => return refused(&state, Some(node.id), &r),
        };
        if let Err(r) = enroll::decide(
            &node,
            &plan,
            &req.facts,
            req.replication_key.as_deref(),
            group.as_ref().map(|(g, m)| (g, m.as_slice())),
        ) {
            return refused(&state, Some(node.id), &r);
        }
        let (cert, serial) = match state.ca.sign_node(node.id, &node.display_name(), &req.csr) {
            Ok(x) => x,
            Err(e) => {
                return refused(
                    &state,
                    Some(node.id),
                    &Refusal::BadRequest(crate::error_chain(&e)),
                );
            }
        };
        let facts = serde_json::to_value(&req.facts).unwrap_or_default();
        let msg = format!(
            "enrolled from {}: machine-id {}, root {} {}, {} pool(s), {} bond(s); certificate serial {serial}",
            peer.ip(),
            req.facts.machine_id,
            req.facts.root.fstype,
            req.facts
                .root
                .md
                .as_ref()
                .map(|m| m.level.as_str())
                .unwrap_or("without md"),
            req.facts.pools.len(),
            req.facts.bonds.len(),
        );
        let key = req
            .replication_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        // One transaction: re-reads the group's members, consumes the token, enrolls
        // and sets membership; a placement conflict found there undoes all of it.
        let installed_since = state.inventory.state_since(node.id).ok().flatten();
        let node = match state.inventory.complete_enrollment(
            node.id,
            &crate::inventory::Enrollment {
                token: &req.token,
                facts: &facts,
                cert_serial: &serial,
                repl_key: key,
                message: &msg,
                group: group.as_ref().map(|(g, _)| g),
            },
            now,
        ) {
            Ok(n) => {
                if let Some(since) = installed_since {
                    state.metrics.observe_step(
                        crate::metrics::step::FIRST_BOOT,
                        (now - since) as f64 / 1000.0,
                    );
                }
                n
            }
            Err(crate::inventory::InventoryError::Placement(why)) => {
                return refused(&state, Some(node.id), &Refusal::Placement(why));
            }
            Err(e @ crate::inventory::InventoryError::Conflict(_)) => {
                debug!(error = %e, "enrollment token used meanwhile");
                return refused(&state, Some(node.id), &Refusal::TokenUsed);
            }
            Err(e) => return ApiError::from(e).into_response(),
        };
        let group = group.map(|(g, _)| g.name);
        state.events.notify();
        info!(node = node.id, hostname = ?node.hostname, group = ?group, "node enrolled");
        let resp = EnrollResponse {
            status: "enrolled".into(),
            node_id: node.id,
            certificate: cert,
            ca: state.ca.cert_pem.clone(),
            https: state.https_url.clone().unwrap_or_default(),
        };
        (StatusCode::OK, Json(resp)).into_response()
    })
    .await
}

/// `POST /enroll/{token}/events/{kind}`: first-boot reports before enrollment (plan
/// scripts, agent progress). They never change the node's state: enrollment, which
/// compares facts with the plan, decides.
pub async fn enroll_event(
    State(state): State<Arc<AppState>>,
    Path((token, kind)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let text = crate::node::event_text(&kind, &body)?;
        let now = now_ms();
        let (node_id, used, expires) = state
            .inventory
            .enroll_token(&token)?
            .ok_or_else(|| ApiError::not_found("not found"))?;
        if used.is_some() || expires <= now {
            return Err(ApiError::not_found("not found"));
        }
        state
            .inventory
            .record_event(node_id, &kind, text.trim(), now)?;
        state.events.notify();
        Ok((StatusCode::OK, "ok\n").into_response())
    })
    .await
}

/// The node a client certificate belongs to (set per TLS connection).
#[derive(Clone, Copy, Debug)]
pub struct AgentIdentity {
    pub node_id: i64,
}

#[derive(Deserialize)]
pub struct ViewQuery {
    /// The version the agent has; with `wait`, answer when it changes.
    version: Option<i64>,
    wait: Option<u64>,
}

/// `GET /agent/v1/view`: the node's group view (or `{"group": null}`).
pub async fn view(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<AgentIdentity>,
    Query(q): Query<ViewQuery>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let mut changed = state.events.subscribe();
    loop {
        let version = q.version;
        let node_id = id.node_id;
        let past = tokio::time::Instant::now() >= deadline;
        let answer =
            crate::state::blocking(&state, move |state| -> Result<Option<Response>, ApiError> {
                let node = state
                    .inventory
                    .node_by_id(node_id)?
                    .ok_or_else(|| ApiError::not_found("node is gone"))?;
                let Some(gname) = node.group.clone() else {
                    return Ok(Some(
                        Json(json!({ "group": null, "node": node.display_name() })).into_response(),
                    ));
                };
                let g = crate::inventory::groups::get(&state.inventory, &gname)?;
                if version != Some(g.version) || past {
                    let members = crate::inventory::groups::members(&state.inventory, &g)?;
                    let v = groups::view_for(&g, &members, &node.display_name());
                    return Ok(Some(Json(v).into_response()));
                }
                Ok(None)
            })
            .await?;
        if let Some(r) = answer {
            return Ok(r);
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            continue;
        }
    }
}

/// `POST /agent/v1/events/{kind}`: an enrolled node's report (replication runs, …).
pub async fn agent_event(
    State(state): State<Arc<AppState>>,
    Extension(id): Extension<AgentIdentity>,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let text = crate::node::event_text(&kind, &body)?;
        state
            .inventory
            .record_event(id.node_id, &kind, text.trim(), now_ms())?;
        state.events.notify();
        Ok((StatusCode::OK, "ok\n").into_response())
    })
    .await
}

async fn log_agent_requests(
    Extension(id): Extension<AgentIdentity>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    debug!(node = id.node_id, %method, %path, status = resp.status().as_u16(), "agent request");
    resp
}

/// The HTTPS router (every route needs a node certificate).
pub fn https_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/agent/v1/view", get(view))
        .route("/agent/v1/events/{kind}", post(agent_event))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn(log_agent_requests))
        .with_state(state)
}

/// Routes on the plain listener.
pub fn plain_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/enroll", post(post_enroll))
        .route("/enroll/{token}/events/{kind}", post(enroll_event))
}

/// The rustls server config: rackseed's server certificate, client certificates
/// required and checked against rackseed's CA.
pub fn tls_config(state: &AppState) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = state
        .ca
        .server_cert(std::net::IpAddr::V4(state.config.server.advertise))
        .map_err(|e| crate::error_chain(&e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(state.ca.cert_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// Serves the HTTPS API on an already-bound listener until `cancel` fires.
pub async fn run_https(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    cancel: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = https_router(state.clone());
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    info!(addr = ?listener.local_addr().ok(), "https (agents) listening");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(e) => { debug!(error = %e, "accept failed"); continue; } },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "too many agent connections; closing");
            continue;
        };
        let (acceptor, app, state, cancel) =
            (acceptor.clone(), app.clone(), state.clone(), cancel.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let Some(cert) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec())
            else {
                return;
            };
            let identity = match crate::ca::node_of_cert(&cert) {
                Ok((id, serial))
                    if state.inventory.cert_serial(id).ok().flatten().as_deref()
                        == Some(serial.as_str()) =>
                {
                    AgentIdentity { node_id: id }
                }
                Ok((id, _)) => {
                    info!(%peer, node = id, "revoked or superseded node certificate refused");
                    return;
                }
                Err(e) => {
                    debug!(%peer, error = %e, "client certificate refused");
                    return;
                }
            };
            let svc = TowerToHyperService::new(app.layer(Extension(identity)));
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn.serve_connection(TokioIo::new(tls), svc) => { if let Err(e) = r { debug!(%peer, error = %e, "agent connection ended"); } }
            }
        });
    }
}
