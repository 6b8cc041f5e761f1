//! Assigning a node: the checks of a new node's hostname, profile, address,
//! failure domain, group and vars against the config and the profiles, shared by
//! `POST /api/nodes` and the commissioning rules.

use super::ApiError;
use crate::inventory::{NewNode, valid_hostname};
use crate::mac::MacAddr;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The body of `POST /api/nodes`.
#[derive(Deserialize, Serialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub mac: String,
    pub hostname: String,
    pub profile: String,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Install on next boot (default); false holds the node in `ready`.
    #[serde(default)]
    pub provision: Option<bool>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub failure_domain: Option<String>,
    /// Node-level overrides of profile values (a JSON object).
    #[serde(default)]
    pub vars: Option<serde_json::Value>,
}

/// Checks a new node against the config and profiles; the message says what to fix.
pub fn check_new_node(state: &AppState, body: &AddNode) -> Result<NewNode, ApiError> {
    let mac: MacAddr = body
        .mac
        .parse()
        .map_err(|e: crate::mac::MacParseError| ApiError::bad_request(format!("mac: {e}")))?;
    if !valid_hostname(&body.hostname) {
        return Err(ApiError::bad_request(format!(
            "hostname: `{}` is not a valid hostname",
            body.hostname.escape_debug()
        )));
    }
    let catalog = state.catalog();
    let Some(profile) = catalog.get(&body.profile) else {
        let names: Vec<&str> = catalog.names().collect();
        return Err(ApiError::bad_request(format!(
            "profile: no profile named `{}` is loaded (loaded: {})",
            body.profile,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    if let Some(ip) = body.ip {
        let subnets = &state.config.dhcp.subnets;
        if !subnets.is_empty()
            && !subnets.iter().any(|s| {
                s.network.contains(&ip) && ip != s.network.network() && ip != s.network.broadcast()
            })
        {
            return Err(ApiError::bad_request(format!(
                "ip: {ip} is not a host address of any served subnet ({})",
                subnets
                    .iter()
                    .map(|s| s.network.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if let Some(fd) = &body.failure_domain
        && !(crate::config::valid_name(fd) || fd.split('.').all(crate::config::valid_name))
    {
        return Err(ApiError::bad_request(format!(
            "failure_domain: `{}` is not a label (letters, digits, `-`, `_` and `.`, at most 63 per part)",
            fd.escape_debug()
        )));
    }
    if let Some(g) = &body.group
        && !crate::config::valid_name(g)
    {
        return Err(ApiError::bad_request(format!(
            "group: `{}` is not a group name (letters, digits, `-` and `_`, 1–63)",
            g.escape_debug()
        )));
    }
    let vars = body.vars.clone().unwrap_or(serde_json::Value::Null);
    if !(vars.is_null() || vars.is_object()) {
        return Err(ApiError::bad_request("vars: must be a JSON object"));
    }
    // The vars must fit the profile, and static addresses must be free.
    let checked = crate::profiles::vars::check(&body.profile, &profile.profile, &vars)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let others = state.inventory.list_nodes()?;
    let others = others
        .iter()
        .filter(|n| n.mac != mac)
        .map(|n| (n.hostname.as_deref().unwrap_or("?"), &n.vars));
    if let Some((itf, ip, other)) = crate::profiles::vars::address_conflict(&checked, others) {
        return Err(ApiError::bad_request(format!(
            "vars.addresses.{itf}: {ip} is already an address of node {other}"
        )));
    }
    Ok(NewNode {
        vars,
        mac: Some(mac),
        hostname: body.hostname.clone(),
        profile: body.profile.clone(),
        ip: body.ip,
        provision: body.provision.unwrap_or(true),
        group: body.group.clone(),
        failure_domain: body.failure_domain.clone(),
    })
}
