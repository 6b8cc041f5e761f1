//! The admin REST API under `/api`, behind the bearer token from `admin.token`.
//!
//! Owns request shapes and status codes. Validation of node input lives here (profile
//! exists, address inside a served subnet); state rules live in the inventory.

use super::ApiError;
use crate::inventory::{Event, Node, Transition, now_ms};
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The session cookie of the console.
pub const SESSION_COOKIE: &str = "rackseed_session";

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The live console session a request's cookie names, if any (a lookup on a read
/// connection, off the executor).
pub async fn session_of(
    state: &Arc<AppState>,
    headers: &axum::http::HeaderMap,
) -> Result<Option<crate::accounts::Session>, ApiError> {
    let Some(id) = cookie(headers, SESSION_COOKIE).filter(|v| v.len() == 64) else {
        return Ok(None);
    };
    let digest = crate::accounts::session_digest(id);
    Ok(crate::state::blocking(state, move |s| s.inventory.session(&digest, now_ms())).await?)
}

/// Who is calling: the admin token's bearer or a console session (cookie); actions
/// of a session need its CSRF token in `X-CSRF-Token` and an admin account. The caller
/// is put into the request's extensions as an [`crate::accounts::Principal`].
async fn require_admin(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    use crate::accounts::{Principal, authorize};
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let principal = match given {
        Some(t) if crate::accounts::secrets_match(t.trim(), &state.admin_token) => Principal::Token,
        Some(_) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "wrong admin token").into_response();
        }
        None => match session_of(&state, req.headers()).await {
            Ok(Some(s)) => Principal::User(s),
            Ok(None) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing `Authorization: Bearer <token>` (the token is in <data_dir>/admin.token) or a console session (log in at /ui/login)",
                )
                .into_response();
            }
            Err(e) => return e.into_response(),
        },
    };
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let csrf = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    if let Err(d) = authorize(&principal, safe, csrf) {
        let code = match d {
            crate::accounts::Denied::Csrf(_) => "csrf",
            crate::accounts::Denied::ReadOnly(_) => "read_only",
        };
        tracing::warn!(caller = principal.name(), method = %req.method(), path = %req.uri().path(), reason = %d, "admin request refused");
        return ApiError::new(StatusCode::FORBIDDEN, d.to_string())
            .with_code(code)
            .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The `/api` routes, all behind the admin token.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/nodes", get(list_nodes).post(add_node))
        .route("/nodes/{key}", get(show_node).delete(delete_node))
        .route("/nodes/{key}/reprovision", post(reprovision))
        .route("/nodes/{key}/provision", post(provision))
        .route(
            "/nodes/{key}/bmc",
            get(super::power::show_bmc)
                .put(super::power::set_bmc)
                .delete(super::power::delete_bmc),
        )
        .route("/nodes/{key}/power", post(super::power::power))
        .route("/nodes/{key}/events", get(node_events))
        .route("/profiles", get(list_profiles))
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{name}", get(show_group).delete(delete_group))
        .route("/groups/{name}/members", post(add_member))
        .route(
            "/groups/{name}/members/{node}",
            axum::routing::delete(remove_member),
        )
        .route("/rules", get(super::commission::list_rules))
        .route("/rules/test", post(super::commission::rule_test))
        .route("/rules/apply", post(super::commission::apply_all))
        .route("/leases", get(list_leases))
        .route("/health", get(super::health::get_health))
        .route("/events/stream", get(super::stream::event_stream))
        .route("/users", get(list_users).post(add_user))
        .route("/users/{name}", axum::routing::delete(delete_user))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

use super::json;

/// A stalled node's step and the likely cause (see `stall`).
#[derive(Serialize, Clone, Debug)]
pub struct StallView {
    pub step: String,
    pub message: String,
}

fn stall_view(state: &AppState, id: i64) -> Option<StallView> {
    state
        .stall_of(id)
        .map(|(step, message)| StallView { step, message })
}

/// One node of `GET /api/nodes`.
#[derive(Serialize)]
struct NodeItem {
    #[serde(flatten)]
    node: Node,
    /// Set while the node stays in a step past its limit.
    stalled: Option<StallView>,
}

#[derive(Serialize)]
struct NodeList {
    nodes: Vec<NodeItem>,
}

async fn list_nodes(State(state): State<Arc<AppState>>) -> Result<Json<NodeList>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let nodes = state
            .inventory
            .list_nodes()?
            .into_iter()
            .map(|node| NodeItem {
                stalled: stall_view(&state, node.id),
                node,
            })
            .collect();
        Ok(Json(NodeList { nodes }))
    })
    .await
}

pub use super::assign::{AddNode, check_new_node};

async fn add_node(
    State(state): State<Arc<AppState>>,
    body: Result<Json<AddNode>, JsonRejection>,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let body = json(body)?;
        let new = check_new_node(&state, &body)?;
        let node = state
            .inventory
            .add_node(&new, state.config.boot.token_ttl, now_ms())?;
        state.reload_reservations();
        state.events.notify();
        info!(node = node.id, mac = %node.mac, hostname = ?node.hostname, state = %node.state, "node added");
        Ok((StatusCode::CREATED, Json(node)).into_response())
    })
    .await
}

/// `GET /api/nodes/{key}`.
#[derive(Serialize)]
pub struct NodeDetail {
    #[serde(flatten)]
    pub node: Node,
    pub install_token_valid: bool,
    /// What the node reported at enrollment.
    pub facts: Option<serde_json::Value>,
    /// What DHCP told about the machine: relay, option 82, vendor class, arch.
    pub dhcp: crate::commission::DhcpFacts,
    /// What its commissioning boot reported.
    pub hardware: Option<crate::commission::HwFacts>,
    /// Set while the node stays in a step past its limit.
    pub stalled: Option<StallView>,
}

async fn show_node(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<Json<NodeDetail>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let node = state.inventory.find_node(&key)?;
        let install_token_valid = state
            .inventory
            .current_install_token(node.id, now_ms())?
            .is_some();
        let facts = state.inventory.facts(node.id)?;
        Ok(Json(NodeDetail {
            dhcp: state.inventory.dhcp_facts(node.id)?,
            hardware: state.inventory.hw_facts(node.id)?,
            stalled: stall_view(&state, node.id),
            node,
            install_token_valid,
            facts,
        }))
    })
    .await
}

async fn delete_node(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::state::blocking(&state, move |state| {
        let node = state.inventory.find_node(&key)?;
        state.inventory.delete_node(node.id)?;
        {
            let mut leases = state.leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = leases.lease_of(node.mac).cloned() {
                leases.release(node.mac, l.ip);
            }
        }
        state.reload_reservations();
        info!(node = node.id, mac = %node.mac, "node deleted");
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn change(state: &Arc<AppState>, key: &str, t: Transition) -> Result<Json<Node>, ApiError> {
    let key = key.to_string();
    crate::state::blocking(state, move |state| {
        let node = state.inventory.find_node(&key)?;
        let node = state
            .inventory
            .transition(node.id, &t, state.config.boot.token_ttl, now_ms())?;
        state.events.notify();
        info!(node = node.id, state = %node.state, action = t.name(), "node state changed by operator");
        Ok(Json(node))
    })
    .await
}

/// The optional body of `POST /api/nodes/{key}/reprovision`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReprovisionBody {
    /// Power-cycle the node through its BMC into a one-time network boot.
    #[serde(default)]
    power_cycle: bool,
}

async fn reprovision(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: ReprovisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReprovisionBody::default()
    } else {
        serde_json::from_slice::<Option<ReprovisionBody>>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "reprovision body: {e} (expected {{\"power_cycle\": true}} or nothing)"
                ))
            })?
            .unwrap_or_default()
    };
    if !b.power_cycle {
        return Ok(change(&state, &key, Transition::Reprovision)
            .await?
            .into_response());
    }
    crate::state::blocking(&state, move |state| {
        let (node, power) = super::power::reprovision_and_cycle(&state, &key)?;
        info!(
            node = node.id,
            "node reprovisioned and power-cycled by operator"
        );
        Ok(Json(serde_json::json!({ "node": node, "power": power })).into_response())
    })
    .await
}

async fn provision(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<Json<Node>, ApiError> {
    change(&state, &key, Transition::Provision).await
}

#[derive(Deserialize)]
pub struct EventQuery {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
    /// Seconds to wait for new events when there are none (long poll), at most 60.
    wait: Option<u64>,
    /// Only events of this kind.
    kind: Option<String>,
}

#[derive(Serialize)]
pub struct EventPage {
    pub node: Node,
    pub events: Vec<Event>,
    /// Pass as `after` to get what comes next.
    pub last: i64,
}

async fn node_events(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let k = key.clone();
    let node = crate::state::blocking(&state, move |s| s.inventory.find_node(&k)).await?;
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let mut changed = state.events.subscribe();
    let (after, id) = (q.after, node.id);
    loop {
        let mut events =
            crate::state::blocking(&state, move |s| s.inventory.events(id, after, limit)).await?;
        let last = events.last().map(|e| e.id).unwrap_or(q.after);
        if let Some(k) = &q.kind {
            events.retain(|e| &e.kind == k);
        }
        let done = !events.is_empty() || last != q.after || tokio::time::Instant::now() >= deadline;
        if done
            || tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
        {
            let k = key.clone();
            let node = crate::state::blocking(&state, move |s| s.inventory.find_node(&k)).await?;
            return Ok(Json(EventPage { node, events, last }));
        }
    }
}

/// One lease as the API shows it.
#[derive(Serialize)]
pub struct LeaseView {
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    pub state: String,
    pub expires_at: i64,
    pub hostname: Option<String>,
}

#[derive(Serialize)]
struct LeaseList {
    leases: Vec<LeaseView>,
}

async fn list_leases(State(state): State<Arc<AppState>>) -> Json<LeaseList> {
    crate::state::blocking(&state, move |state| {
        let table = state.leases.lock().unwrap_or_else(|p| p.into_inner());
        let mut leases: Vec<LeaseView> = table
            .iter()
            .map(|l| LeaseView {
                ip: l.ip,
                mac: l.mac.map(|m| m.to_string()),
                state: format!("{:?}", l.state).to_lowercase(),
                expires_at: l.expires_at,
                hostname: l.hostname.clone(),
            })
            .collect();
        leases.sort_by_key(|l| l.ip);
        Json(LeaseList { leases })
    })
    .await
}

#[derive(Serialize)]
struct GroupSummary {
    #[serde(flatten)]
    group: crate::groups::Group,
    members: Vec<String>,
}

async fn list_groups(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let mut out = Vec::new();
        for g in crate::inventory::groups::list(&state.inventory)? {
            let members = crate::inventory::groups::members(&state.inventory, &g)?
                .into_iter()
                .map(|m| m.hostname)
                .collect();
            out.push(GroupSummary { group: g, members });
        }
        Ok(Json(serde_json::json!({ "groups": out })))
    })
    .await
}

async fn create_group(
    State(state): State<Arc<AppState>>,
    body: Result<Json<crate::groups::NewGroup>, JsonRejection>,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let body = json(body)?;
        let g = crate::groups::check_new_group(&body).map_err(ApiError::bad_request)?;
        crate::inventory::groups::create(&state.inventory, &g, now_ms())?;
        info!(group = %g.name, "group created");
        Ok((StatusCode::CREATED, Json(g)).into_response())
    })
    .await
}

/// `GET /api/groups/{name}`: settings, members and who replicates to whom.
#[derive(Serialize)]
pub struct GroupDetail {
    pub group: crate::groups::Group,
    pub members: Vec<crate::groups::Member>,
    /// hostname → the peer it pushes to.
    pub replication: std::collections::BTreeMap<String, String>,
}

async fn show_group(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<GroupDetail>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let group = crate::inventory::groups::get(&state.inventory, &name)?;
        let members = crate::inventory::groups::members(&state.inventory, &group)?;
        let replication = crate::groups::replication_targets(&members);
        Ok(Json(GroupDetail {
            group,
            members,
            replication,
        }))
    })
    .await
}

async fn delete_group(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::state::blocking(&state, move |state| {
        crate::inventory::groups::delete(&state.inventory, &name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    pub node: String,
}

async fn add_member(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<MemberBody>, JsonRejection>,
) -> Result<Json<GroupDetail>, ApiError> {
    let body = json(body)?;
    let n = name.clone();
    crate::state::blocking(&state, move |state| -> Result<(), ApiError> {
        let node = state.inventory.find_node(&body.node)?;
        crate::inventory::groups::get(&state.inventory, &n)?;
        crate::inventory::groups::set_membership(&state.inventory, node.id, Some(&n))?;
        state
            .events
            .emit(node.id, "group", format!("added to group {n}"));
        state.events.notify();
        Ok(())
    })
    .await?;
    show_group(State(state), Path(name)).await
}

async fn remove_member(
    State(state): State<Arc<AppState>>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<GroupDetail>, ApiError> {
    let n = name.clone();
    crate::state::blocking(&state, move |state| -> Result<(), ApiError> {
        let node = state.inventory.find_node(&key)?;
        if node.group.as_deref() != Some(n.as_str()) {
            return Err(ApiError::not_found(format!(
                "node {key} is not a member of group {n}"
            )));
        }
        crate::inventory::groups::set_membership(&state.inventory, node.id, None)?;
        state
            .events
            .emit(node.id, "group", format!("removed from group {n}"));
        state.events.notify();
        Ok(())
    })
    .await?;
    show_group(State(state), Path(name)).await
}

#[derive(Serialize)]
struct ProfileList {
    profiles: Vec<String>,
}

async fn list_profiles(State(state): State<Arc<AppState>>) -> Json<ProfileList> {
    crate::state::blocking(&state, move |state| {
        Json(ProfileList {
            profiles: state.catalog().names().map(str::to_string).collect(),
        })
    })
    .await
}

#[derive(Deserialize)]
pub struct NewUser {
    pub name: String,
    pub role: String,
    pub password: String,
}

/// Only the admin token or an admin account manages accounts.
fn must_be_admin(p: Option<&crate::accounts::Principal>) -> Result<(), ApiError> {
    use crate::accounts::{Principal, Role};
    match p {
        Some(Principal::Token) => Ok(()),
        Some(Principal::User(s)) if s.role == Role::Admin => Ok(()),
        _ => Err(
            ApiError::new(StatusCode::FORBIDDEN, "only an admin manages accounts")
                .with_code("read_only"),
        ),
    }
}

/// `GET /api/users`: the console accounts (names, roles; never hashes).
async fn list_users(
    State(state): State<Arc<AppState>>,
    p: Option<axum::Extension<crate::accounts::Principal>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    must_be_admin(p.as_deref())?;
    let users = crate::state::blocking(&state, |s| s.inventory.users()).await?;
    Ok(Json(serde_json::json!({ "users": users })))
}

/// `POST /api/users` `{"name", "role": "admin"|"read-only", "password"}`: a console
/// account (the first admin is made with the admin token: `rackseed user add`).
async fn add_user(
    State(state): State<Arc<AppState>>,
    p: Option<axum::Extension<crate::accounts::Principal>>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    must_be_admin(p.as_deref())?;
    let by = p.map(|p| p.name().to_string()).unwrap_or_default();
    let u = json(body)?;
    crate::state::blocking(&state, move |state| {
        let bad = |e: crate::accounts::AccountError| ApiError::bad_request(e.to_string());
        crate::accounts::check_name(&u.name).map_err(bad)?;
        let role: crate::accounts::Role = u.role.parse().map_err(bad)?;
        let hash = crate::accounts::hash_password(&u.password).map_err(bad)?;
        let user = state.inventory.add_user(&u.name, role, &hash, now_ms())?;
        info!(user = %user.name, role = %user.role, by = %by, "console account added");
        Ok((StatusCode::CREATED, Json(user)).into_response())
    })
    .await
}

/// `DELETE /api/users/{name}`: removes an account and ends its sessions.
async fn delete_user(
    State(state): State<Arc<AppState>>,
    p: Option<axum::Extension<crate::accounts::Principal>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    must_be_admin(p.as_deref())?;
    crate::state::blocking(&state, move |s| s.inventory.delete_user(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
