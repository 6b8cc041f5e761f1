//! `rackseed serve`: binds every listener first (so a taken port fails at once), then
//! runs DHCP, TFTP, HTTP and syslog on the shared state until cancelled.
//!
//! Owns start-up order and shutdown; no protocol logic.

use crate::config::Config;
use crate::dhcp::server::{self as dhcp_server, DhcpSocket};
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
