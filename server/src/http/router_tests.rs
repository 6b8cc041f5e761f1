//! The HTTP API in process: the real routers over a real `AppState` (a SQLite file in
//! a temporary data directory, the example profiles), driven with `tower`'s `oneshot`,
//! no sockets. Every error answer has the one shape `{"error", "code"}`.

use super::*;
use crate::inventory::now_ms;
use axum::body::Body;
use axum::http::header;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Api {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
}

fn api() -> Api {
    api_with("", "")
}

/// An API whose config has `dhcp_extra` in `[dhcp]` and `tail` at the end.
fn api_with(dhcp_extra: &str, tail: &str) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nadvertise = \"192.0.2.1\"\ndata_dir = \"{}\"\n[dhcp]\nmode = \"authoritative\"\n{dhcp_extra}\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.199\"\n[installer]\nmirror = \"http://mirror.example/debian\"\n{tail}",
        dir.path().join("data").display()
    );
    let cfg = crate::config::Config::parse_with(&text, "test.toml", &|_| None).unwrap();
    let profiles = crate::profiles::Catalog::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"),
    )
    .unwrap();
    let state = AppState::open(cfg, profiles)
        .unwrap_or_else(|e| panic!("{} (run ./x setup)", crate::error_chain(&e)));
    Api {
        _dir: dir,
        state: Arc::new(state),
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = admin_router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let token = self.state.admin_token.clone();
        self.call(method, path, Some(&token), body).await
    }
}

/// An error answer: exactly `error` (a sentence) and `code` (stable, snake case).
fn assert_error(v: &serde_json::Value, code: &str) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(o.len(), 2, "{v}");
    assert_eq!(o["code"], code, "{v}");
    assert!(!o["error"].as_str().unwrap().is_empty(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_wants_its_token() {
    let a = api();
    let (s, v) = a.call("GET", "/api/nodes", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, v) = a.call("GET", "/api/nodes", Some("wrong"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, v) = a.admin("GET", "/api/nodes", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_added_shown_refused_and_deleted_with_one_error_shape() {
    let a = api();
    let body = r#"{"mac": "52:54:00:aa:00:01", "hostname": "web1", "profile": "lab-single-disk"}"#;
    let (s, v) = a.admin("POST", "/api/nodes", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["hostname"], "web1");
    let (s, v) = a.admin("GET", "/api/nodes/web1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["mac"], "52:54:00:aa:00:01");
    assert_eq!(v["install_token_valid"], true);
    // The same hostname again: a conflict naming the other node.
    let again = r#"{"mac": "52:54:00:aa:00:02", "hostname": "web1", "profile": "lab-single-disk"}"#;
    let (s, v) = a.admin("POST", "/api/nodes", Some(again)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "conflict");
    let (s, v) = a.admin("POST", "/api/nodes", Some("{not json")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");
    let bad = r#"{"mac": "52:54:00:aa:00:03", "hostname": "a\nb", "profile": "lab-single-disk"}"#;
    let (s, v) = a.admin("POST", "/api/nodes", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "bad_request");
    let (s, v) = a.admin("GET", "/api/nodes/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "not_found");
    let (s, _) = a.admin("DELETE", "/api/nodes/web1", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = a.admin("GET", "/api/nodes/web1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Nothing of the refused requests was stored.
    let (_, v) = a.admin("GET", "/api/nodes", None).await;
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_listener_has_no_admin_api() {
    let a = api();
    let token = a.state.admin_token.clone();
    let req = axum::http::Request::builder()
        .uri("/api/nodes")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[test]
fn internal_errors_send_no_detail() {
    let e = ApiError::internal("query failed: /var/lib/rackseed/inventory.db: disk I/O error");
    assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(e.code, "internal");
    assert!(!e.message.contains("inventory.db"), "{}", e.message);
    let e = ApiError::from(crate::inventory::InventoryError::Query {
        doing: "listing nodes",
        source: rusqlite::Error::InvalidQuery.into(),
    });
    assert_eq!(e.code, "internal");
    assert!(!e.message.contains("listing nodes"), "{}", e.message);
}

/// One request to the admin router as a browser on 127.0.0.1 sends it.
async fn browser(
    a: &Api,
    method: &str,
    path: &str,
    cookies: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if !cookies.is_empty() {
        req = req.header(header::COOKIE, cookies);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if form.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let mut req = req
        .body(Body::from(form.unwrap_or("").to_string()))
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            50_000,
        ))));
    let resp = admin_router(a.state.clone()).oneshot(req).await.unwrap();
    let (status, h) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, h, String::from_utf8_lossy(&bytes).to_string())
}

/// `name=value` of the cookie `name` that a response sets.
fn set_cookie(h: &axum::http::HeaderMap, name: &str) -> String {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no cookie {name} in {h:?}"))
        .to_string()
}

/// Logs `user` in; returns the session cookie (`name=value`) and the CSRF token.
async fn session(a: &Api, user: &str, password: &str) -> (String, String) {
    let (_, h, body) = browser(a, "GET", "/ui/login", "", &[], None).await;
    let login = set_cookie(&h, "rackseed_login");
    let login = login.split(';').next().unwrap().to_string();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let form = format!("user={user}&password={password}&csrf={csrf}");
    let (s, h, body) = browser(a, "POST", "/ui/login", &login, &[], Some(&form)).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let c = set_cookie(&h, "rackseed_session");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(c.contains(attr), "{c}");
    }
    let cookie = c.split(';').next().unwrap().to_string();
    let (_, _, page) = browser(a, "GET", "/ui/", &cookie, &[], None).await;
    let token = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (cookie, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn console_logins_sessions_and_csrf() {
    let a = api();
    // Accounts: made with the admin token; bad values refused with the one shape.
    for (body, status, code) in [
        (
            r#"{"name": "tech", "role": "admin", "password": "tech-password-1"}"#,
            StatusCode::CREATED,
            "",
        ),
        (
            r#"{"name": "viewer", "role": "read-only", "password": "viewer-password-1"}"#,
            StatusCode::CREATED,
            "",
        ),
        (
            r#"{"name": "tech", "role": "admin", "password": "tech-password-2"}"#,
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            r#"{"name": "Bad Name", "role": "admin", "password": "tech-password-1"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            r#"{"name": "x", "role": "root", "password": "tech-password-1"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            r#"{"name": "x", "role": "admin", "password": "short"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (s, v) = a.admin("POST", "/api/users", Some(body)).await;
        assert_eq!(s, status, "{body}: {v}");
        if !code.is_empty() {
            assert_error(&v, code);
        }
    }
    let (_, v) = a.admin("GET", "/api/users", None).await;
    assert_eq!(v["users"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(!v.to_string().contains("argon2"), "hashes listed: {v}");

    // Pages need a session.
    let (s, h, _) = browser(&a, "GET", "/ui/", "", &[], None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/ui/login");
    // The login form's token must come back with the browser's login cookie.
    let (_, h, body) = browser(&a, "GET", "/ui/login", "", &[], None).await;
    let login = set_cookie(&h, "rackseed_login");
    let login = login.split(';').next().unwrap();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (s, _, body) = browser(
        &a,
        "POST",
        "/ui/login",
        "",
        &[],
        Some(&format!("user=tech&password=tech-password-1&csrf={csrf}")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no login cookie: {body}");
    let (s, _, _) = browser(
        &a,
        "POST",
        "/ui/login",
        login,
        &[],
        Some("user=tech&password=tech-password-1"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no csrf field");
    for (user, pw) in [("tech", "wrong-password"), ("nobody", "tech-password-1")] {
        let form = format!("user={user}&password={pw}&csrf={csrf}");
        let (s, h, body) = browser(&a, "POST", "/ui/login", login, &[], Some(&form)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{user}");
        assert!(body.contains("Wrong user name or password."), "{body}");
        assert!(
            h.get_all(header::SET_COOKIE)
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("rackseed_session="))
        );
    }

    let (cookie, token) = session(&a, "tech", "tech-password-1").await;
    let node = r#"{"mac": "52:54:00:aa:00:07", "hostname": "web7", "profile": "lab-single-disk"}"#;
    let post = |cookie: String, hdrs: Vec<(&'static str, String)>| {
        let a = &a;
        async move {
            let mut req = axum::http::Request::builder()
                .method("POST")
                .uri("/api/nodes")
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/json");
            for (k, v) in hdrs {
                req = req.header(k, v);
            }
            let resp = admin_router(a.state.clone())
                .oneshot(req.body(Body::from(node)).unwrap())
                .await
                .unwrap();
            let s = resp.status();
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            (
                s,
                serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default(),
            )
        }
    };
    let (s, v) = post(cookie.clone(), vec![]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "csrf");
    let (s, v) = post(cookie.clone(), vec![("x-csrf-token", "0".repeat(64))]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "csrf");
    let (s, v) = post(cookie.clone(), vec![("x-csrf-token", token.clone())]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Every page renders, with the console's headers.
    for path in [
        "/ui/",
        "/ui/?state=provisioning",
        "/ui/fragments/nodes",
        "/ui/nodes/web7",
        "/ui/groups",
        "/ui/images",
    ] {
        let (s, h, body) = browser(&a, "GET", path, &cookie, &[], None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        if path.starts_with("/ui/nodes") || path.starts_with("/ui/?") || path == "/ui/" {
            assert!(body.contains("web7"), "{path}: {body}");
        }
    }
    let (_, _, page) = browser(&a, "GET", "/ui/nodes/web7", &cookie, &[], None).await;
    // (`/` is HTML-escaped in the page.)
    assert!(
        page.contains("install&#x2f;INSTALL-TOKEN&#x2f;"),
        "preview without placeholder"
    );
    // A read-only account looks but does not act, and does not manage accounts.
    let (viewer, vtoken) = session(&a, "viewer", "viewer-password-1").await;
    let (s, v) = post(viewer.clone(), vec![("x-csrf-token", vtoken)]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "read_only");
    let (s, _, _) = browser(&a, "GET", "/ui/nodes/web7", &viewer, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = browser(&a, "GET", "/api/users", &viewer, &[], None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // Logging out ends the session.
    let (s, _, _) = browser(&a, "POST", "/ui/logout", &cookie, &[], Some("csrf=bad")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = browser(
        &a,
        "POST",
        "/ui/logout",
        &cookie,
        &[],
        Some(&format!("csrf={token}")),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = browser(&a, "GET", "/ui/", &cookie, &[], None).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "session still valid after logout");
    let (s, _, _) = browser(&a, "GET", "/api/nodes", &cookie, &[], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sends_the_timeline_and_follows_it() {
    let a = api();
    let body = r#"{"mac": "52:54:00:aa:00:08", "hostname": "web8", "profile": "lab-single-disk"}"#;
    let (s, _) = a.admin("POST", "/api/nodes", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED);
    let token = a.state.admin_token.clone();
    let req = axum::http::Request::builder()
        .uri("/api/events/stream?node=web8")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = admin_router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut read_until = async |want: &str, text: &mut String| {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !text.contains(want) {
            let f = tokio::time::timeout_at(deadline, body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} in the stream: {text}"))
                .unwrap()
                .unwrap();
            if let Ok(d) = f.into_data() {
                text.push_str(&String::from_utf8_lossy(&d));
            }
        }
    };
    read_until("event: timeline", &mut text).await;
    assert!(text.starts_with("event: node\n"), "{text}");
    assert!(text.contains("added as provisioning"), "{text}");
    // A new event arrives on the open stream, with the node's new state.
    a.state.events.emit(1, "ipxe", "iPXE script served");
    read_until("iPXE script served", &mut text).await;
    let t = crate::inventory::Transition::Fail {
        reason: "disk missing".into(),
    };
    a.state
        .inventory
        .transition(
            1,
            &t,
            std::time::Duration::from_secs(60),
            crate::node::now_ms(),
        )
        .unwrap();
    a.state.events.notify();
    read_until("provisioning → failed: disk missing", &mut text).await;
    let last = text.rsplit("data: ").next().unwrap();
    assert!(last.contains("\"state\":\"failed\""), "{last}");
}

#[test]
fn enrollment_refusals_map_to_one_status_and_code_each() {
    use crate::enroll::Refusal as R;
    for (r, status, code) in [
        (
            R::Placement("node2 and node1 share rack `a`".into()),
            StatusCode::CONFLICT,
            "placement",
        ),
        (
            R::Mismatch(vec!["zpool tank".into()]),
            StatusCode::CONFLICT,
            "facts_mismatch",
        ),
        (R::TokenUsed, StatusCode::FORBIDDEN, "token_used"),
        (
            R::BadRequest("node: bad".into()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let e = ApiError::from(r);
        assert_eq!((e.status, e.code), (status, code), "{}", e.message);
        assert!(
            e.message.starts_with("enrollment refused: "),
            "{}",
            e.message
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bmc_is_stored_sealed_shown_without_its_password_and_checked() {
    let a = api();
    let body = r#"{"mac":"52:54:00:00:00:61","hostname":"pw1","profile":"lab-single-disk"}"#;
    let (s, _) = a.admin("POST", "/api/nodes", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = a
        .admin(
            "POST",
            "/api/nodes/pw1/power",
            Some(r#"{"action":"status"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "no_bmc");
    for bad in [
        r#"{"protocol":"ipmi","address":"192.0.2.9;reboot","username":"u","password":"p"}"#,
        r#"{"protocol":"ipmi","address":"192.0.2.9","username":"u","password":"p\nq"}"#,
        r#"{"protocol":"redfish","address":"192.0.2.9","username":"u","password":"p"}"#,
        r#"{"protocol":"snmp","address":"192.0.2.9","username":"u","password":"p"}"#,
        r#"{"protocol":"ipmi","address":"192.0.2.9","username":"u","password":"p","extra":1}"#,
    ] {
        let (s, v) = a.admin("PUT", "/api/nodes/pw1/bmc", Some(bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_error(&v, "bad_request");
    }
    let (s, v) = a.admin("GET", "/api/nodes/pw1/bmc", None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "nothing stored by a refused PUT: {v}"
    );
    let good = r#"{"protocol":"ipmi","address":"192.0.2.9:6230","username":"admin","password":"s3cret-pw"}"#;
    let (s, v) = a.admin("PUT", "/api/nodes/pw1/bmc", Some(good)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["password"], "<sealed>");
    let (_, v) = a.admin("GET", "/api/nodes/pw1/bmc", None).await;
    assert_eq!(v["address"], "192.0.2.9:6230");
    assert!(!v.to_string().contains("s3cret-pw"), "{v}");
    let db = std::fs::read(a.state.config.server.data_dir.join("inventory.db")).unwrap();
    let wal =
        std::fs::read(a.state.config.server.data_dir.join("inventory.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(9).any(|w| w == b"s3cret-pw"),
            "password stored in clear"
        );
    }
    let (s, v) = a
        .admin(
            "POST",
            "/api/nodes/pw1/power",
            Some(r#"{"action":"reboot"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = a.admin("DELETE", "/api/nodes/pw1/bmc", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = a
        .admin(
            "POST",
            "/api/nodes/pw1/reprovision",
            Some(r#"{"power_cycle":true}"#),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "no_bmc");
    let (_, n) = a.admin("GET", "/api/nodes/pw1", None).await;
    assert_eq!(n["state"], "provisioning", "left as it was: {n}");
}

const RULES: &str = r#"
[[rules]]
name = "big-iron"
match = { "disks.count" = ">= 24" }
profile = "storage-node"
hostname = "big"

[[rules]]
name = "rack-b"
match = { "dhcp.circuit_id" = "{rack}-{port}", "disks.nvme" = ">= 3", "nic.driver" = "virtio*" }
profile = "lab-single-disk"
hostname = "rack-{rack}-{port}"
failure_domain = "rack-{rack}"
group = "rg2"
"#;

fn six_disks() -> crate::commission::HwFacts {
    let mut hw = crate::commission::HwFacts {
        system: crate::commission::System {
            vendor: "QEMU".into(),
            product: "Standard PC (i440FX + PIIX, 1996)".into(),
            serial: "RS-0715".into(),
            uuid: "5a1d0000-0000-4000-8000-000000000715".into(),
        },
        ..Default::default()
    };
    for (i, bus) in ["sata", "sata", "sata", "nvme", "nvme", "nvme"]
        .iter()
        .enumerate()
    {
        hw.disks.push(crate::commission::Disk {
            name: format!("d{i}"),
            bus: bus.to_string(),
            size_bytes: 10 << 30,
            ..Default::default()
        });
    }
    hw.nics.push(crate::commission::Nic {
        name: "ens3".into(),
        mac: "52:54:00:15:00:01".into(),
        driver: "virtio_net".into(),
        link: true,
        speed_mbps: None,
    });
    hw
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_tested_and_applied_to_commissioned_machines() {
    let a = api_with("unknown = \"commission\"", RULES);
    // Facts given: the second rule matches, named after the relay's circuit-id.
    let input = serde_json::json!({
        "mac": "52:54:00:15:00:01",
        "dhcp": {"giaddr": "198.51.100.1", "circuit_id": "b-07"},
        "hw": six_disks(),
    });
    let (s, v) = a
        .admin(
            "POST",
            "/api/rules/test",
            Some(&serde_json::json!({"input": input}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["assignment"]["rule"], "rack-b", "{v}");
    assert_eq!(v["assignment"]["hostname"], "rack-b-07");
    assert_eq!(v["assignment"]["failure_domain"], "rack-b");
    assert!(
        v["trace"][0]
            .as_str()
            .unwrap()
            .contains("disks.count \"6\" does not match `>= 24`"),
        "{v}"
    );
    // Neither or both of node and input, hostile facts: refused with the one shape.
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"node": "x", "input": input}),
        serde_json::json!({"input": {"mac": "m", "hw": {"system": {"vendor": "a\nb", "product": "", "serial": "", "uuid": ""}, "cpu": {"model": "", "count": 1}, "memory_bytes": 0, "disks": [], "nics": []}}}),
    ] {
        let (s, v) = a
            .admin("POST", "/api/rules/test", Some(&bad.to_string()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_error(&v, "bad_request");
    }
    // A machine discovered through the relay and commissioned with too few disks
    // matches nothing and stays commissioned; with six it is assigned by `apply`.
    let inv = &a.state.inventory;
    let disc = crate::inventory::Discovery {
        giaddr: Some("198.51.100.1".parse().unwrap()),
        circuit_id: Some("b-07".into()),
        ..Default::default()
    };
    let (n, _) = inv
        .discover("52:54:00:15:00:01".parse().unwrap(), &disc, now_ms())
        .unwrap();
    let mut few = six_disks();
    few.disks.truncate(4);
    inv.commission(n.id, &few, now_ms()).unwrap();
    let (s, v) = a
        .admin(
            "POST",
            "/api/rules/test",
            Some(r#"{"node": "52:54:00:15:00:01"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["assignment"].is_null(), "{v}");
    assert!(
        v["trace"][1]
            .as_str()
            .unwrap()
            .contains("disks.nvme \"1\" does not match `>= 3`"),
        "{v}"
    );
    let (_, v) = a.admin("POST", "/api/rules/apply", None).await;
    assert_eq!(v["assigned"], serde_json::json!([]), "{v}");
    let (_, v) = a.admin("GET", "/api/nodes/52:54:00:15:00:01", None).await;
    assert_eq!(v["state"], "commissioned", "{v}");
    assert_eq!(v["dhcp"]["circuit_id"], "b-07");
    assert_eq!(v["hardware"]["disks"].as_array().unwrap().len(), 4);
    let (_, ev) = a
        .admin("GET", "/api/nodes/52:54:00:15:00:01/events", None)
        .await;
    assert!(ev.to_string().contains("no rule matched"), "{ev}");

    // Commissioned again with six disks (the state machine allows a new report).
    inv.commission(n.id, &six_disks(), now_ms()).unwrap();
    let (s, v) = a.admin("POST", "/api/rules/apply", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["assigned"][0]["hostname"], "rack-b-07", "{v}");
    let (_, v) = a.admin("GET", "/api/nodes/rack-b-07", None).await;
    assert_eq!(v["state"], "provisioning", "{v}");
    assert_eq!(v["group"], "rg2");
    assert_eq!(v["failure_domain"], "rack-b");
    assert_eq!(v["profile"], "lab-single-disk");
    assert_eq!(v["install_token_valid"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_facts_name_services_down_stalled_nodes_disks_and_certificates() {
    use crate::health::{Facts, Status, Thresholds, judge};
    let a = api();
    let (s, v) = a.call("GET", "/api/health", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");

    a.state.health.up("tftp");
    a.state
        .health
        .down("dhcp", "panicked: failpoint dhcp:10 fired");
    let body = r#"{"mac": "52:54:00:16:00:01", "hostname": "web1", "profile": "lab-single-disk"}"#;
    let (s, v) = a.admin("POST", "/api/nodes", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    a.state.stalled.write().unwrap().insert(
        id,
        crate::stall::Stall {
            step: "boot-loader",
            since: now_ms() - 600_000,
            message: "stalled".into(),
            reported: true,
        },
    );
    // A stall of a node deleted since the last check is left out.
    a.state.stalled.write().unwrap().insert(
        id + 100,
        crate::stall::Stall {
            step: "install",
            since: now_ms(),
            message: "stalled".into(),
            reported: true,
        },
    );
    let (s, v) = a.admin("GET", "/api/health", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let f: Facts = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(f.services.len(), 2, "{v}");
    assert_eq!(f.stalled.len(), 1, "{v}");
    assert_eq!(
        (f.stalled[0].hostname.as_str(), f.stalled[0].step.as_str()),
        ("web1", "boot-loader")
    );
    assert!(f.replication.is_empty(), "{v}");
    assert_eq!(f.disks.len(), 1, "{v}");
    assert_eq!(f.disks[0].name, "data");
    assert!(
        f.disks[0].size_bytes > 0 && f.disks[0].error.is_none(),
        "{v}"
    );
    // The HTTPS server certificate is issued when its listener binds: until then it
    // is reported unreadable, after that with its expiry.
    assert_eq!(f.certificates.len(), 2, "{v}");
    assert!(f.certificates[0].not_after.is_some(), "{v}");
    assert!(f.certificates[1].error.is_some(), "{v}");
    // (Disk limits at 0%: the test's file system may be nearly full.)
    let t = Thresholds {
        disk_warning_pct: 0.0,
        disk_critical_pct: 0.0,
        ..Thresholds::default()
    };
    let verdict = judge(&f, &t);
    assert_eq!(verdict.status, Status::Critical);
    assert!(
        verdict
            .line
            .starts_with("RACKSEED CRITICAL - service dhcp down: panicked: failpoint dhcp:10 fired; WARNING: 1 node stalled: web1 at boot-loader; WARNING: certificate HTTPS server 192.0.2.1"),
        "{}",
        verdict.line
    );
    a.state
        .ca
        .server_cert(std::net::IpAddr::V4(a.state.config.server.advertise))
        .unwrap();
    a.state.health.up("dhcp");
    a.state.stalled.write().unwrap().clear();
    let (_, v) = a.admin("GET", "/api/health", None).await;
    let f: Facts = serde_json::from_value(v.clone()).unwrap();
    let day = 86_400_000;
    assert_eq!(
        f.certificates
            .iter()
            .map(|c| c.not_after.map(|t| (t - f.now) / day))
            .collect::<Vec<_>>(),
        [Some(3649), Some(824)],
        "{v}"
    );
    let verdict = judge(&f, &t);
    assert_eq!(verdict.status, Status::Ok, "{}", verdict.line);
}
