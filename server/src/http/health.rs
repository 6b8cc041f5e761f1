//! `GET /api/health` (admin listener, admin token or console session): the facts the
//! monitoring check `rackseed health` judges — every supervised service, the nodes
//! stalled at the last stall check, each replicating member's lag, the free space of
//! the data directory (and of the image store when it is on another file system) and
//! when the appliance's own certificates expire.
//!
//! Owns gathering them: `statvfs`, the certificate files, inventory reads, all on a
//! blocking thread. It always answers 200 with the facts, a service down included;
//! the verdict and its thresholds are the command's ([`crate::health::judge`]).

use super::ApiError;
use crate::health::{CertFact, DiskFact, Facts, LagFact, ServiceFact, StalledFact};
use crate::inventory::{InventoryError, now_ms};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use std::path::Path;
use std::sync::Arc;

/// `GET /api/health`.
pub async fn get_health(State(state): State<Arc<AppState>>) -> Result<Json<Facts>, ApiError> {
    let facts = crate::state::blocking(&state, |st| facts_of(&st)).await?;
    Ok(Json(facts))
}

/// What the server knows of its own health now (blocking: reads the inventory and
/// the file systems).
pub fn facts_of(state: &AppState) -> Result<Facts, InventoryError> {
    let now = now_ms();
    let services = state
        .health
        .list()
        .into_iter()
        .map(|(name, down)| ServiceFact {
            name: name.to_string(),
            down,
        })
        .collect();
    let mut stalled_ids: Vec<(i64, String, i64)> = state
        .stalled
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, s)| (*id, s.step.to_string(), s.since))
        .collect();
    stalled_ids.sort_unstable();
    let mut stalled = Vec::with_capacity(stalled_ids.len());
    for (node_id, step, since) in stalled_ids {
        // A node deleted since the last stall check is not stalled any more.
        if let Some(node) = state.inventory.node_by_id(node_id)? {
            stalled.push(StalledFact {
                node_id,
                hostname: node.display_name(),
                step,
                since,
            });
        }
    }
    let mut replication = Vec::new();
    for (g, members) in state.replication_health()? {
        for m in members {
            // Only members expected to replicate have a lag (enrolled, with a peer).
            if let Some(lag) = m.lag_ms {
                replication.push(LagFact {
                    group: g.name.clone(),
                    node_id: m.node_id,
                    hostname: m.hostname,
                    status: m.status.to_string(),
                    lag_s: lag / 1000,
                    interval_s: g.interval_secs,
                });
            }
        }
    }
    let cfg = &state.config;
    let mut disks = vec![disk("data", &cfg.server.data_dir)];
    if on_another_file_system(&cfg.images.store, &cfg.server.data_dir) {
        disks.push(disk("images", &cfg.images.store));
    }
    let server = cfg
        .enroll
        .https
        .map(|_| std::net::IpAddr::V4(cfg.server.advertise));
    let certificates = state
        .ca
        .own_certificates(server)
        .into_iter()
        .map(|(name, path)| {
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|pem| crate::ca::not_after(&pem));
            CertFact {
                name,
                path: path.display().to_string(),
                not_after: read.as_ref().ok().copied(),
                error: read.err(),
            }
        })
        .collect();
    Ok(Facts {
        now,
        version: env!("CARGO_PKG_VERSION").to_string(),
        services,
        stalled,
        replication,
        disks,
        certificates,
    })
}

/// The free space of the file system holding `path`.
fn disk(name: &str, path: &Path) -> DiskFact {
    let mut d = DiskFact {
        name: name.to_string(),
        path: path.display().to_string(),
        ..DiskFact::default()
    };
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            d.free_bytes = s.blocks_available().saturating_mul(frag);
            d.size_bytes = s.blocks().saturating_mul(frag);
        }
        Err(e) => d.error = Some(std::io::Error::from(e).to_string()),
    }
    d
}

/// Whether `path` exists on another file system than `base` (the image store
/// mounted apart from the data directory).
fn on_another_file_system(path: &Path, base: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), std::fs::metadata(base)) {
        (Ok(p), Ok(b)) => p.dev() != b.dev(),
        _ => false,
    }
}
