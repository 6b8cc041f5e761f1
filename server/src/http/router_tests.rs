//! The HTTP API in process: the real routers over a real `AppState` (a SQLite file in
//! a temporary data directory, the example profiles), driven with `tower`'s `oneshot`,
//! no sockets. Every error answer has the one shape `{"error", "code"}`.

use super::*;
use axum::body::Body;
use axum::http::header;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Api {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nadvertise = \"192.0.2.1\"\ndata_dir = \"{}\"\n[dhcp]\nmode = \"authoritative\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.199\"\n[installer]\nmirror = \"http://mirror.example/debian\"\n",
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
        source: rusqlite::Error::InvalidQuery,
    });
    assert_eq!(e.code, "internal");
    assert!(!e.message.contains("listing nodes"), "{}", e.message);
}
