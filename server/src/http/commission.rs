//! The commissioning boot of unknown machines (`dhcp.unknown = "commission"`): its
//! preseed, script and binary by commissioning token, the hardware report, the rules
//! applied to it, and the answer the machine acts on (`reboot`, `poweroff`, `wait`).
//! The rules' admin routes (`/api/rules…`) are here too.
//!
//! Node-facing answers for a bad token, or from an address that is not the
//! machine's, are a plain 404 (see `boot`).

use super::ApiError;
use super::assign::{AddNode, check_new_node};
use super::boot::{serve_file, token_node};
use crate::commission::{HwFacts, rules};
use crate::config::AfterCommission;
use crate::inventory::{Node, NodeState, TokenKind, now_ms};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{info, warn};

/// The node of a live commissioning token when `peer` is that machine; 404 otherwise
/// (with a refusal on the timeline when the token is right but the caller is not).
fn commissioning_node(
    state: &AppState,
    token: &str,
    peer: std::net::IpAddr,
    what: &str,
) -> Result<Node, ApiError> {
    token_node(state, token, TokenKind::Commission, |_| true, peer, what)
}

fn text(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

use crate::render::COMMISSION_FILES as FILES;

/// `GET /commission/{token}/{file}`: the preseed, the script, or `rackseed` itself.
pub async fn commission_file(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let st = state.clone();
    let f = file.clone();
    let r = crate::state::blocking(&state, move |state| {
        let node = commissioning_node(&state, &token, peer.ip(), &format!("commissioning {f}"))?;
        if !matches!(node.state, NodeState::Discovered) {
            return Err(ApiError::not_found("not found"));
        }
        if f == "rackseed" {
            return Ok((node, None));
        }
        if !FILES.contains(&f.as_str()) {
            return Err(ApiError::not_found(format!(
                "no commissioning file `{}` ({})",
                f.escape_debug(),
                FILES.join(", ")
            )));
        }
        let ctx = crate::render::CommissionCtx::new(
            &state.config,
            node.mac,
            &token,
            state.driver_packages(),
            &state.agent.sha256,
        );
        let body = crate::render::commission_file(&state.templates, &f, &ctx)
            .map_err(ApiError::internal)?;
        let kind = if f == "preseed.cfg" {
            "preseed"
        } else {
            "commission"
        };
        state.events.emit(
            node.id,
            kind,
            format!("HTTP commissioning {f} to {}", peer.ip()),
        );
        Ok((node, Some(body)))
    })
    .await;
    match r {
        Ok((_, Some(body))) => text(body),
        Ok((node, None)) => {
            st.events.emit(
                node.id,
                "agent",
                format!(
                    "HTTP rackseed binary ({} bytes, sha256 {}) to {} for commissioning",
                    st.agent.size,
                    st.agent.sha256,
                    peer.ip()
                ),
            );
            serve_file(&st, &st.agent.path, req).await
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /commission/{token}/events/{kind}`: a step of the commissioning boot.
pub async fn commission_event(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, kind)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    crate::state::blocking(&state, move |state| {
        let text = crate::node::event_text(&kind, &body)?;
        let node = commissioning_node(&state, &token, peer.ip(), &format!("a `{kind}` event"))?;
        state.events.emit(node.id, &kind, text);
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// What a commissioned machine does next, as the script reads it.
fn answer(state: &AppState, node: &Node) -> &'static str {
    match node.state {
        NodeState::Provisioning => "reboot",
        _ => match state.config.commission.after {
            AfterCommission::Poweroff => "poweroff",
            AfterCommission::Wait => "wait",
        },
    }
}

/// `POST /commission/{token}/facts`: the hardware report (JSON, see
/// [`crate::commission::HwFacts`]). Stored, then the rules run: a match assigns
/// the machine (it installs on its next boot). Answers `reboot`, `poweroff` or
/// `wait`. Only once per machine: a second report is refused (409).
pub async fn commission_facts(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let node = commissioning_node(&state, &token, peer.ip(), "a hardware report")?;
        if node.state != NodeState::Discovered {
            return Err(ApiError::new(StatusCode::CONFLICT, format!(
                "{} already reported its hardware (it is {}); delete the node to commission it again",
                node.display_name(),
                node.state
            )));
        }
        let refuse = |why: String| {
            state
                .events
                .emit(node.id, "commission_error", format!("hardware report refused: {why}"));
            warn!(node = node.id, error = %why, "hardware report refused");
            ApiError::bad_request(format!("hardware report: {why}"))
        };
        let hw: HwFacts =
            serde_json::from_slice(&body).map_err(|e| refuse(format!("not a report: {e}")))?;
        crate::commission::check(&hw).map_err(|errs| refuse(errs.join("; ")))?;
        let node = state.inventory.commission(node.id, &hw, now_ms())?;
        info!(node = node.id, mac = %node.mac, "commissioned");
        let node = apply_rules(&state, &node, &hw)?;
        state.events.notify();
        Ok(text(format!("{}\n", answer(&state, &node))))
    })
    .await
}

/// Runs the rules on a commissioned node and assigns it when one matches; the
/// verdict (or why its assignment was refused) goes on the timeline. Returns the
/// node as it is afterwards.
pub fn apply_rules(state: &AppState, node: &Node, hw: &HwFacts) -> Result<Node, ApiError> {
    let input = rules::Input {
        mac: node.mac.to_string(),
        dhcp: state.inventory.dhcp_facts(node.id)?,
        hw: Some(hw.clone()),
    };
    let verdict = rules::evaluate(&state.config.rules, &input);
    // The verdict goes on the timeline first (synchronously), before the state
    // change it causes.
    state
        .inventory
        .record_event(node.id, "rule", &verdict.summary(), now_ms())?;
    let Some(a) = verdict.assignment.clone() else {
        info!(node = node.id, "no rule matched");
        return Ok(node.clone());
    };
    let body = AddNode {
        mac: node.mac.to_string(),
        hostname: a.hostname.clone(),
        profile: a.profile.clone(),
        ip: None,
        provision: Some(true),
        group: a.group.clone(),
        failure_domain: a.failure_domain.clone(),
        vars: a.vars.clone(),
    };
    let assigned = check_new_node(state, &body).and_then(|new| {
        state
            .inventory
            .add_node(&new, state.config.boot.token_ttl, now_ms())
            .map_err(ApiError::from)
    });
    match assigned {
        Ok(n) => {
            state.reload_reservations();
            info!(node = n.id, rule = %a.rule, hostname = %a.hostname, "assigned by rule");
            Ok(n)
        }
        Err(e) => {
            let why = format!(
                "rule `{}` matched, but its assignment was refused: {}; the machine stays commissioned",
                a.rule, e.message
            );
            state.events.emit(node.id, "rule_error", why.clone());
            warn!(node = node.id, rule = %a.rule, error = %e.message, "rule assignment refused");
            Ok(node.clone())
        }
    }
}

/// `GET /commission/{token}/next`: a waiting machine asks whether it was assigned.
pub async fn commission_next(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let node = commissioning_node(&state, &token, peer.ip(), "an assignment poll")?;
        let a = match node.state {
            NodeState::Provisioning => "reboot",
            NodeState::Commissioned | NodeState::Discovered => "wait",
            _ => "poweroff",
        };
        Ok(text(format!("{a}\n")))
    })
    .await
}

/// `POST /api/rules/test`: which rule a machine (a node's stored facts, or facts
/// given) matches, and why every rule before it did not.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub input: Option<rules::Input>,
}

pub async fn rule_test(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RuleTest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<rules::Verdict>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let body = super::json(body)?;
        let input = match (body.node, body.input) {
            (Some(key), None) => {
                let n = state.inventory.find_node(&key)?;
                rules::Input {
                    mac: n.mac.to_string(),
                    dhcp: state.inventory.dhcp_facts(n.id)?,
                    hw: state.inventory.hw_facts(n.id)?,
                }
            }
            (None, Some(i)) => {
                if let Some(hw) = &i.hw {
                    crate::commission::check(hw).map_err(|e| {
                        ApiError::bad_request(format!("input.hw: {}", e.join("; ")))
                    })?;
                }
                i
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give either `node` (a node's stored facts) or `input` (facts), not both",
                ));
            }
        };
        Ok(Json(rules::evaluate(&state.config.rules, &input)))
    })
    .await
}

/// `GET /api/rules`: the configured rules, in order, and the facts they can match.
pub async fn list_rules(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "rules": state.config.rules,
        "facts": rules::FACTS.iter().map(|(f, d)| serde_json::json!({"name": f, "about": d})).collect::<Vec<_>>(),
    }))
}

/// `POST /api/rules/apply`: runs the rules again on every commissioned node (after
/// the rules changed); returns the nodes assigned.
pub async fn apply_all(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let mut assigned = Vec::new();
        for n in state.inventory.list_nodes()? {
            if n.state != NodeState::Commissioned {
                continue;
            }
            let Some(hw) = state.inventory.hw_facts(n.id)? else {
                continue;
            };
            let after = apply_rules(&state, &n, &hw)?;
            if after.state != NodeState::Commissioned {
                assigned.push(after);
            }
        }
        state.events.notify();
        Ok(Json(serde_json::json!({ "assigned": assigned })))
    })
    .await
}
