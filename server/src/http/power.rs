//! Power control over the admin API: a node's BMC (set, shown without its password,
//! removed) and power requests (`on`, `off`, `cycle`, `status`, with a one-time network
//! boot). Every request, done or failed, is a timeline event; a failed one changes no
//! node state.

use super::ApiError;
use crate::inventory::{Node, Transition, now_ms};
use crate::power::{self, Action, Bmc, Credentials, PowerError, Protocol, Report};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::{info, warn};

/// `PUT /api/nodes/{key}/bmc`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBmc {
    pub protocol: Protocol,
    pub address: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub insecure_tls: bool,
}

/// A node's BMC as the API shows it.
#[derive(Serialize)]
pub struct BmcView {
    pub node: String,
    #[serde(flatten)]
    pub bmc: Bmc,
    /// Always `"<sealed>"`: the password is stored, never shown.
    pub password: &'static str,
}

pub async fn set_bmc(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Result<Json<SetBmc>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<BmcView>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let bmc = Bmc {
        protocol: b.protocol,
        address: b.address,
        username: b.username,
        system: b.system,
        insecure_tls: b.insecure_tls,
    };
    power::validate(&bmc, &b.password).map_err(ApiError::bad_request)?;
    crate::state::blocking(&state, move |state| {
        let node = state.inventory.find_node(&key)?;
        let sealed = state.vault.seal(node.id, &b.password);
        state.inventory.set_bmc(node.id, &bmc, &sealed, now_ms())?;
        state.events.emit(
            node.id,
            "bmc",
            format!(
                "BMC set: {} {} as user {}",
                bmc.protocol.title(),
                bmc.address,
                bmc.username
            ),
        );
        info!(node = node.id, protocol = bmc.protocol.as_str(), address = %bmc.address, "BMC set");
        Ok(Json(BmcView {
            node: node.display_name(),
            bmc,
            password: "<sealed>",
        }))
    })
    .await
}

pub async fn show_bmc(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<Json<BmcView>, ApiError> {
    crate::state::blocking(&state, move |state| {
        let node = state.inventory.find_node(&key)?;
        let (bmc, _) = state.inventory.bmc(node.id)?.ok_or_else(|| no_bmc(&node))?;
        Ok(Json(BmcView {
            node: node.display_name(),
            bmc,
            password: "<sealed>",
        }))
    })
    .await
}

pub async fn delete_bmc(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::state::blocking(&state, move |state| {
        let node = state.inventory.find_node(&key)?;
        state
            .inventory
            .delete_bmc(node.id)
            .map_err(|_| no_bmc(&node))?;
        state.events.emit(node.id, "bmc", "BMC removed");
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

fn no_bmc(node: &Node) -> ApiError {
    ApiError::not_found(format!(
        "node {} has no BMC; set one with `rackseed node bmc set {} --protocol ipmi|redfish --address … --user …`",
        node.display_name(),
        node.display_name()
    ))
    .with_code("no_bmc")
}

/// `POST /api/nodes/{key}/power`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub action: Action,
    /// A one-time network boot before powering on or cycling.
    #[serde(default)]
    pub pxe: bool,
}

/// What a power request answers.
#[derive(Serialize)]
pub struct PowerAnswer {
    pub node: String,
    #[serde(flatten)]
    pub report: Report,
    pub message: String,
}

pub async fn power(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Result<Json<PowerRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PowerAnswer>, ApiError> {
    let Json(r) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    crate::state::blocking(&state, move |state| {
        let node = state.inventory.find_node(&key)?;
        run_power(&state, &node, r.action, r.pxe).map(Json)
    })
    .await
}

/// Runs one power request on `node` (blocking): one at a time per node; the result,
/// done or failed, is a `power` or `power_error` event.
pub fn run_power(
    state: &AppState,
    node: &Node,
    action: Action,
    pxe: bool,
) -> Result<PowerAnswer, ApiError> {
    let (bmc, sealed) = state.inventory.bmc(node.id)?.ok_or_else(|| no_bmc(node))?;
    let password = state
        .vault
        .unseal(node.id, &sealed)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()).with_code("bmc_sealed"))?;
    {
        let mut busy = state.power_busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(node.id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a power request for node {} is under way; wait for it to finish",
                    node.display_name()
                ),
            )
            .with_code("power_busy"));
        }
    }
    let uefi = node.arch.as_deref().is_some_and(|a| a.starts_with("efi"));
    let creds = Credentials { bmc, password };
    let result = power::driver::run(&creds, action, pxe, uefi);
    state
        .power_busy
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&node.id);
    match result {
        Ok(report) => {
            let message = report.summary(&creds.bmc);
            state.events.emit(node.id, "power", message.clone());
            info!(node = node.id, action = action.as_str(), power = report.power.as_str(), bmc = %creds.bmc.address, "power request done");
            Ok(PowerAnswer {
                node: node.display_name(),
                report,
                message,
            })
        }
        Err(e) => Err(power_failed(state, node, action, &e)),
    }
}

fn power_failed(state: &AppState, node: &Node, action: Action, e: &PowerError) -> ApiError {
    let message = format!("power {} failed: {e}", action.as_str());
    state.events.emit(node.id, "power_error", message.clone());
    warn!(node = node.id, action = action.as_str(), code = e.code(), error = %e, "power request failed");
    ApiError::new(StatusCode::BAD_GATEWAY, message).with_code(e.code())
}

/// `POST /api/nodes/{key}/reprovision` with `{"power_cycle": true}`: the BMC is
/// checked first (a BMC that does not answer leaves the node as it was), then the node
/// becomes `provisioning` and is power-cycled into a one-time network boot.
pub fn reprovision_and_cycle(state: &AppState, key: &str) -> Result<(Node, PowerAnswer), ApiError> {
    let node = state.inventory.find_node(key)?;
    run_power(state, &node, Action::Status, false)?;
    let node = state.inventory.transition(
        node.id,
        &Transition::Reprovision,
        state.config.boot.token_ttl,
        now_ms(),
    )?;
    state.events.notify();
    let answer = run_power(state, &node, Action::Cycle, true)?;
    Ok((node, answer))
}
