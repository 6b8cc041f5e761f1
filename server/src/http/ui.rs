//! The technician's console: server-rendered HTML pages on the admin listener, with
//! one small script (`server/ui/ui.js`) for live updates and actions.
//!
//! Owns login, logout, the session cookie and the pages; every asset is embedded in
//! the binary. What a page shows is decided in [`crate::console`]; actions are the
//! admin API's own routes (`/api/…`), which the script calls with the session cookie
//! and the session's CSRF token; live updates come from `/api/events/stream`.

use super::ApiError;
use super::api::{SESSION_COOKIE, cookie, session_of};
use crate::accounts::{self, Session};
use crate::console::{self, Filters};
use crate::inventory::now_ms;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, context};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use tracing::{info, warn};

/// The cookie that ties a login form to the browser that loaded it.
const LOGIN_COOKIE: &str = "rackseed_login";

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../ui/base.html")),
    ("login.html", include_str!("../../ui/login.html")),
    ("overview.html", include_str!("../../ui/overview.html")),
    ("rows.html", include_str!("../../ui/rows.html")),
    ("node.html", include_str!("../../ui/node.html")),
    ("groups.html", include_str!("../../ui/groups.html")),
    ("images.html", include_str!("../../ui/images.html")),
];

/// The embedded assets: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/ui.js"),
    ),
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/ui.css"),
    ),
];

/// The page templates (HTML-escaped by default: every `.html` template auto-escapes).
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut e = Environment::new();
        for (name, src) in TEMPLATES {
            e.add_template(name, src)
                .unwrap_or_else(|err| panic!("embedded template {name}: {err}"));
        }
        e
    })
}

fn page(name: &str, ctx: minijinja::Value) -> Result<Response, ApiError> {
    let t = env()
        .get_template(name)
        .map_err(|e| ApiError::internal(format!("template {name}: {e}")))?;
    let body = t
        .render(ctx)
        .map_err(|e| ApiError::internal(format!("template {name}: {e:#}")))?;
    Ok(Html(body).into_response())
}

/// The console's routes (on the admin listener only).
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let pages = Router::new()
        .route("/ui/", get(overview))
        .route("/ui/fragments/nodes", get(overview_rows))
        .route("/ui/nodes/{key}", get(node_page))
        .route("/ui/groups", get(groups_page))
        .route("/ui/images", get(images_page))
        .route("/ui/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/assets/{file}", get(asset))
        .merge(pages)
        .layer(middleware::from_fn(security_headers))
}

/// Headers on every console answer: no framing, no sniffing, no caching, scripts and
/// styles from this origin only.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Pages need a session; without one the browser is sent to the login form.
async fn require_session(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match session_of(&state, req.headers()).await {
        Ok(Some(s)) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        Ok(None) => Redirect::to("/ui/login").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == file) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found(format!("no console asset `{file}`")).into_response(),
    }
}

fn session_cookie(id: &str, max_age_s: i64) -> String {
    format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}")
}

async fn login_form(headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    login_page(&headers, None, StatusCode::OK)
}

fn login_page(
    headers: &axum::http::HeaderMap,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    // The form's token is the browser's login cookie (made here if it has none).
    let existing = cookie(headers, LOGIN_COOKIE).filter(|v| v.len() == 64);
    let token = existing.map_or_else(accounts::new_secret, str::to_string);
    let mut r = page("login.html", context! { csrf => token, error => error })?;
    *r.status_mut() = status;
    if existing.is_none() {
        let c =
            format!("{LOGIN_COOKIE}={token}; Path=/ui/login; HttpOnly; Secure; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    Ok(r)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let Ok(Form(f)) = form else {
        return login_page(
            &headers,
            Some("The login form was not sent as a form; use the page's Log in button."),
            StatusCode::BAD_REQUEST,
        );
    };
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if f.csrf.is_empty() || !accounts::secrets_match(&f.csrf, bound) {
        warn!(%peer, "console login refused: CSRF token missing or not this browser's");
        return login_page(
            &headers,
            Some("The login form expired or did not come from this console; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let user = f.user.trim().to_string();
    let password = f.password;
    let who = user.clone();
    let ok = crate::state::blocking(&state, move |s| -> Result<bool, ApiError> {
        let stored = s.inventory.user_secret(&who)?;
        // A missing user costs as much as a wrong password.
        let hash = stored
            .as_ref()
            .map_or(accounts::decoy_hash(), |(_, h)| h.as_str());
        Ok(accounts::verify_password(hash, &password) && stored.is_some())
    })
    .await?;
    if !ok {
        state.metrics.console_login_refused.inc();
        warn!(%peer, user = %user.escape_debug(), "console login refused: wrong user name or password");
        return login_page(
            &headers,
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let (id, csrf) = (accounts::new_secret(), accounts::new_secret());
    let digest = accounts::session_digest(&id);
    let now = now_ms();
    let u = user.clone();
    crate::state::blocking(&state, move |s| {
        s.inventory
            .create_session(&digest, &u, &csrf, now, now + accounts::SESSION_TTL_MS)
    })
    .await?;
    info!(%peer, user = %user, "console login");
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&id, accounts::SESSION_TTL_MS / 1000)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    axum::Extension(s): axum::Extension<Session>,
    headers: axum::http::HeaderMap,
    form: Result<Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if !accounts::secrets_match(&csrf, &s.csrf) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the CSRF token does not match this session; reload the page and try again",
        )
        .with_code("csrf"));
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        let digest = accounts::session_digest(id);
        crate::state::blocking(&state, move |st| st.inventory.delete_session(&digest)).await?;
    }
    info!(user = %s.user, "console logout");
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie("", 0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// What every page's frame needs.
fn frame(s: &Session, active: &str) -> minijinja::Value {
    context! {
        user => s.user,
        role => s.role.as_str(),
        admin => s.role == accounts::Role::Admin,
        csrf => s.csrf,
        active => active,
        version => env!("CARGO_PKG_VERSION"),
    }
}

/// The overview's data: rows, filter menus, the newest event id.
fn overview_data(state: &AppState, f: &Filters) -> Result<minijinja::Value, ApiError> {
    let nodes = state.inventory.list_nodes()?;
    let mut latest = console::Latest::default();
    for n in &nodes {
        if let Some(e) = state
            .inventory
            .latest_event(n.id, console::NOT_STEPS, true)?
        {
            latest.step.insert(n.id, e);
        }
        if let Some((_, msg)) = state.stall_of(n.id) {
            latest.stalls.insert(n.id, msg);
        }
    }
    let rows = console::rows(&nodes, &latest, now_ms(), f);
    let counts = {
        let mut c: std::collections::BTreeMap<&str, usize> = Default::default();
        for n in &nodes {
            *c.entry(n.state.as_str()).or_default() += 1;
        }
        c
    };
    let stalled = rows.iter().filter(|r| r.stalled).count();
    Ok(context! {
        rows => rows,
        total => nodes.len(),
        counts => counts,
        stalled => stalled,
        values => console::filter_values(&nodes),
        filters => f,
        last_event => state.inventory.last_event_id()?,
        profiles => state.catalog().names().map(str::to_string).collect::<Vec<_>>(),
    })
}

async fn overview(
    State(state): State<Arc<AppState>>,
    axum::Extension(s): axum::Extension<Session>,
    Query(f): Query<Filters>,
) -> Result<Response, ApiError> {
    let data = crate::state::blocking(&state, move |st| overview_data(&st, &f)).await?;
    page(
        "overview.html",
        context! { ..frame(&s, "overview"), ..data },
    )
}

/// The overview's table body alone (the script swaps it in on live updates).
async fn overview_rows(
    State(state): State<Arc<AppState>>,
    axum::Extension(s): axum::Extension<Session>,
    Query(f): Query<Filters>,
) -> Result<Response, ApiError> {
    let data = crate::state::blocking(&state, move |st| overview_data(&st, &f)).await?;
    page("rows.html", context! { ..frame(&s, "overview"), ..data })
}

async fn node_page(
    State(state): State<Arc<AppState>>,
    axum::Extension(s): axum::Extension<Session>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let data = crate::state::blocking(&state, move |st| -> Result<_, ApiError> {
        let node = st.inventory.find_node(&key)?;
        let events = st.inventory.recent_events(node.id, 2000)?;
        let (syslog, timeline): (Vec<_>, Vec<_>) =
            events.into_iter().partition(|e| e.kind == "syslog");
        let timeline: Vec<_> = timeline.into_iter().rev().take(300).rev().collect();
        let syslog: Vec<_> = syslog.into_iter().rev().take(300).rev().collect();
        let last_event = st.inventory.last_event_id()?;
        let stall = st.stall_of(node.id).map(|(_, m)| m);
        // The plan and the files the node will receive, rendered as the installer
        // would fetch them, with a placeholder token and secrets cut.
        let (plan, files, render_error) = preview(&st, &node);
        let bmc = st.inventory.bmc(node.id)?.map(|(b, _)| b);
        let dhcp = st.inventory.dhcp_facts(node.id)?;
        let hardware = st.inventory.hw_facts(node.id)?;
        let memory = hardware
            .as_ref()
            .map(|h| crate::commission::human_bytes(h.memory_bytes));
        let disks: Vec<_> = hardware
            .iter()
            .flat_map(|h| h.disks.iter())
            .map(|d| {
                context! {
                    name => &d.name, bus => &d.bus, size => crate::commission::human_bytes(d.size_bytes),
                    model => &d.model, serial => &d.serial, by_id => &d.by_id,
                }
            })
            .collect();
        let catalog = st.catalog();
        Ok(context! {
            node => node,
            name => node.display_name(),
            timeline => timeline,
            syslog => syslog,
            last_event => last_event,
            stall => stall,
            plan => plan,
            files => files,
            render_error => render_error,
            bmc => bmc,
            profiles => catalog.names().map(str::to_string).collect::<Vec<_>>(),
            assignable => matches!(
                node.state,
                crate::inventory::NodeState::Discovered | crate::inventory::NodeState::Commissioned
            ),
            dhcp => dhcp,
            hardware => hardware,
            memory => memory,
            disks => disks,
        })
    })
    .await?;
    page("node.html", context! { ..frame(&s, "overview"), ..data })
}

/// The token shown in previews instead of a real one.
const PREVIEW_TOKEN: &str = "INSTALL-TOKEN";

/// The node's plan (pretty JSON) and install files, redacted; or why there are none.
fn preview(
    st: &AppState,
    node: &crate::inventory::Node,
) -> (Option<String>, Vec<(String, String)>, Option<String>) {
    let Some(name) = node.profile.as_deref() else {
        return (None, vec![], Some("no profile assigned yet".into()));
    };
    let Some(profile) = st.catalog().get(name) else {
        return (
            None,
            vec![],
            Some(format!("profile `{name}` is not loaded")),
        );
    };
    let ctx =
        match crate::render::node_ctx(&st.config, node, &profile, st.mirror.clone(), PREVIEW_TOKEN)
        {
            Ok(c) => c,
            Err(e) => return (None, vec![], Some(crate::error_chain(&e))),
        };
    let plan = serde_json::to_string_pretty(&ctx.plan).ok();
    match crate::render::install_files(&st.templates, &ctx) {
        Ok(files) => (
            plan,
            files
                .into_iter()
                .map(|(n, body)| (n.to_string(), console::redact(&body, &[])))
                .collect(),
            None,
        ),
        Err(e) => (plan, vec![], Some(crate::error_chain(&e))),
    }
}

async fn groups_page(
    State(state): State<Arc<AppState>>,
    axum::Extension(s): axum::Extension<Session>,
) -> Result<Response, ApiError> {
    let data = crate::state::blocking(&state, move |st| -> Result<_, ApiError> {
        let health = st.replication_health()?;
        let mut groups = Vec::new();
        for (g, h) in health {
            let behind = h.iter().filter(|m| m.behind).count();
            let members = crate::inventory::groups::members(&st.inventory, &g)?;
            let rows: Vec<_> = members
                .iter()
                .filter_map(|m| h.iter().find(|x| x.node_id == m.node_id).map(|x| (m, x)))
                .map(|(m, h)| {
                    context! {
                        member => m,
                        health => h,
                        lag => h.lag_ms.map(console::duration_text),
                    }
                })
                .collect();
            groups.push(context! { group => g, members => rows, behind => behind });
        }
        Ok(context! { groups => groups, behind_after => crate::groups::health::BEHIND_AFTER_INTERVALS })
    })
    .await?;
    page("groups.html", context! { ..frame(&s, "groups"), ..data })
}

async fn images_page(
    State(state): State<Arc<AppState>>,
    axum::Extension(s): axum::Extension<Session>,
) -> Result<Response, ApiError> {
    let data = crate::state::blocking(&state, move |st| -> Result<_, ApiError> {
        let (images, error) = match crate::images::Store::open(&st.config.images.store)
            .and_then(|store| store.list())
        {
            Ok(list) => (list, None),
            Err(e) => (vec![], Some(crate::error_chain(&e))),
        };
        Ok(context! {
            images => images,
            error => error,
            in_use => st.installer.name.clone(),
        })
    })
    .await?;
    page("images.html", context! { ..frame(&s, "images"), ..data })
}
