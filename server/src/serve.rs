//! `rackseed serve`: binds every listener first (so a taken port fails at once), then
//! runs DHCP, TFTP, HTTP and syslog on the shared state until cancelled.
//!
//! Owns start-up order and shutdown; no protocol logic.

use crate::config::Config;
use crate::dhcp::server::{self as dhcp_server, DhcpSocket};
use crate::inventory::NodeState;
use crate::profiles::Catalog;
use crate::state::{AppState, StartError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Every bound listener.
pub struct Listeners {
    pub http: tokio::net::TcpListener,
    pub https: Option<(tokio::net::TcpListener, rustls::ServerConfig)>,
    pub tftp: std::net::UdpSocket,
    pub syslog: tokio::net::UdpSocket,
    pub dhcp: Vec<DhcpSocket>,
}

fn bind_err(what: &str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> StartError {
    let what = format!("{what} on {addr}");
    move |source| StartError::Bind { what, source }
}

/// Binds the listeners the config asks for. Must run inside a tokio runtime.
pub async fn bind(state: &AppState) -> Result<Listeners, StartError> {
    let s = &state.config.server;
    let http = tokio::net::TcpListener::bind(s.http)
        .await
        .map_err(bind_err("HTTP", s.http))?;
    let tftp = std::net::UdpSocket::bind(s.tftp).map_err(bind_err("TFTP", s.tftp))?;
    tftp.set_nonblocking(true)
        .map_err(bind_err("TFTP", s.tftp))?;
    let syslog = tokio::net::UdpSocket::bind(s.syslog)
        .await
        .map_err(bind_err("syslog", s.syslog))?;
    let https = match state.config.enroll.https {
        Some(addr) => {
            let tls = crate::http::agent::tls_config(state).map_err(|e| StartError::Bind {
                what: format!("HTTPS (agents) on {addr}"),
                source: std::io::Error::other(e),
            })?;
            Some((
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err("HTTPS (agents)", addr))?,
                tls,
            ))
        }
        None => None,
    };
    let dhcp = dhcp_server::bind_all(state).map_err(|e| StartError::Bind {
        what: e.to_string(),
        source: std::io::Error::other(e),
    })?;
    Ok(Listeners {
        http,
        https,
        tftp,
        syslog,
        dhcp,
    })
}

/// Runs every part until `cancel` fires.
pub async fn run(state: Arc<AppState>, l: Listeners, cancel: CancellationToken) {
    let dhcp_ports: Vec<String> = l
        .dhcp
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d.iface.as_deref().unwrap_or("*"),
                d.socket.local_addr().map(|a| a.port()).unwrap_or(0)
            )
        })
        .collect();
    info!(
        http = ?l.http.local_addr().ok(),
        tftp = ?l.tftp.local_addr().ok(),
        syslog = ?l.syslog.local_addr().ok(),
        dhcp = ?dhcp_ports,
        mode = ?state.config.dhcp.mode,
        advertise = %state.config.server.advertise,
        installer = %state.installer.name,
        "rackseed ready"
    );
    let mut tasks = vec![
        tokio::spawn(dhcp_server::run(state.clone(), l.dhcp, cancel.clone())),
        tokio::spawn({
            let (st, c) = (state.clone(), cancel.clone());
            async move {
                if let Err(e) = crate::tftp::run(st, l.tftp, c).await {
                    error!(error = %crate::error_chain(&e), "tftp server stopped");
                }
            }
        }),
        tokio::spawn(crate::syslog::run(state.clone(), l.syslog, cancel.clone())),
        tokio::spawn({
            let (st, c) = (state.clone(), cancel.clone());
            async move {
                if let Err(e) = crate::http::run(st, l.http, c).await {
                    error!(error = %crate::error_chain(&e), "http server stopped");
                }
            }
        }),
    ];
    tasks.push(tokio::spawn(watch_stalls(state.clone(), cancel.clone())));
    if let Some((listener, tls)) = l.https {
        tasks.push(tokio::spawn(crate::http::agent::run_https(
            state.clone(),
            listener,
            tls,
            cancel.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    info!("rackseed stopped");
}

/// Events read per node when looking for a stall: enough to span the current step.
const STALL_WINDOW: u32 = 200;

/// Every few seconds, gives each node that stayed in a step past its limit one
/// `stalled` event naming the step and the likely cause (see [`crate::stall`]).
async fn watch_stalls(state: Arc<AppState>, cancel: CancellationToken) {
    let limits = state.config.stall;
    let shortest = [
        limits.boot,
        limits.installer,
        limits.install,
        limits.first_boot,
    ]
    .into_iter()
    .min()
    .unwrap_or(std::time::Duration::from_secs(60));
    let every = (shortest / 6).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(15),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let inv = state.inventory.clone();
        let found = tokio::task::spawn_blocking(move || {
            let now = crate::inventory::now_ms();
            let mut found = Vec::new();
            for n in inv.list_nodes()? {
                if !matches!(
                    n.state,
                    NodeState::Provisioning | NodeState::Installing | NodeState::Installed
                ) {
                    continue;
                }
                let events = inv.recent_events(n.id, STALL_WINDOW)?;
                if let Some(s) = crate::stall::stall_of(n.state, &events, now, &limits) {
                    found.push((n, s));
                }
            }
            Ok::<_, crate::inventory::InventoryError>(found)
        })
        .await;
        match found {
            Ok(Ok(found)) => {
                let mut now_stalled = std::collections::HashMap::new();
                for (n, s) in found {
                    if !s.reported {
                        tracing::warn!(node = n.id, mac = %n.mac, step = s.step, "node stalled");
                        state.metrics.stalls.inc();
                        state
                            .events
                            .emit(n.id, crate::stall::STALLED, s.message.clone());
                    }
                    now_stalled.insert(n.id, s);
                }
                *state.stalled.write().unwrap_or_else(|p| p.into_inner()) = now_stalled;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "stall check could not read the inventory")
            }
            Err(e) => tracing::warn!(error = %e, "stall check failed"),
        }
    }
}

/// Loads profiles for serving: a missing directory is an empty catalog (with a
/// warning); a broken profile refuses the start.
pub fn load_profiles(cfg: &Config) -> Result<Catalog, StartError> {
    if !cfg.profiles.dir.is_dir() {
        tracing::warn!(dir = %cfg.profiles.dir.display(), "profile directory does not exist; no node can be assigned a profile");
        return Ok(Catalog::default());
    }
    Catalog::load(&cfg.profiles.dir).map_err(StartError::Profiles)
}

/// Opens the state, binds and serves until `cancel` fires.
pub async fn serve(config: Config, cancel: CancellationToken) -> Result<(), StartError> {
    let profiles = load_profiles(&config)?;
    let state = Arc::new(AppState::open(config, profiles)?);
    let listeners = bind(&state).await?;
    run(state, listeners, cancel).await;
    Ok(())
}
