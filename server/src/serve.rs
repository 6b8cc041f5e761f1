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
    /// The admin API (`server.admin`).
    pub admin: tokio::net::TcpListener,
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
    let admin = tokio::net::TcpListener::bind(s.admin)
        .await
        .map_err(bind_err("admin API", s.admin))?;
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
        admin,
        https,
        tftp,
        syslog,
        dhcp,
    })
}

/// Runs every part until `cancel` fires.
pub async fn run(
    state: Arc<AppState>,
    l: Listeners,
    cancel: CancellationToken,
) -> Result<(), StartError> {
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
        admin = ?l.admin.local_addr().ok(),
        tftp = ?l.tftp.local_addr().ok(),
        syslog = ?l.syslog.local_addr().ok(),
        dhcp = ?dhcp_ports,
        mode = ?state.config.dhcp.mode,
        advertise = %state.config.server.advertise,
        installer = %state.installer.name,
        "rackseed ready"
    );
    let mut services: Vec<(&'static str, Service)> = Vec::new();
    let mut spawn = |name: &'static str, fut: Service| services.push((name, failpoint(name, fut)));
    if !l.dhcp.is_empty() {
        let (st, c) = (state.clone(), cancel.clone());
        spawn(
            "dhcp",
            Box::pin(async move { dhcp_server::run(st, l.dhcp, c).await }),
        );
    }
    {
        let (st, c) = (state.clone(), cancel.clone());
        spawn(
            "tftp",
            Box::pin(async move {
                crate::tftp::run(st, l.tftp, c)
                    .await
                    .map_err(|e| crate::error_chain(&e))
            }),
        );
    }
    {
        let (st, c) = (state.clone(), cancel.clone());
        spawn(
            "syslog",
            Box::pin(async move {
                crate::syslog::run(st, l.syslog, c).await;
                Ok(())
            }),
        );
    }
    {
        let (st, c) = (state.clone(), cancel.clone());
        let app = crate::http::router(st.clone());
        spawn(
            "http",
            Box::pin(async move {
                crate::http::run(st, l.http, app, c, crate::http::Listener::Nodes)
                    .await
                    .map_err(|e| crate::error_chain(&e))
            }),
        );
    }
    {
        let (st, c) = (state.clone(), cancel.clone());
        let app = crate::http::admin_router(st.clone());
        spawn(
            "admin",
            Box::pin(async move {
                crate::http::run(st, l.admin, app, c, crate::http::Listener::Admin)
                    .await
                    .map_err(|e| crate::error_chain(&e))
            }),
        );
    }
    {
        let (st, c) = (state.clone(), cancel.clone());
        spawn(
            "stall-watch",
            Box::pin(async move {
                watch_stalls(st, c).await;
                Ok(())
            }),
        );
    }
    if let Some((listener, tls)) = l.https {
        let (st, c) = (state.clone(), cancel.clone());
        spawn(
            "https",
            Box::pin(async move {
                crate::http::agent::run_https(st, listener, tls, c).await;
                Ok(())
            }),
        );
    }
    let r = supervise(&state.health, services, cancel).await;
    if r.is_ok() {
        info!("rackseed stopped");
    }
    r
}

/// Fault injection for the tests, in debug builds only: `RACKSEED_FAILPOINT=<service>:<ms>`
/// makes that service panic `ms` milliseconds after it started, so a test can watch the
/// real process die of it. Release builds ignore the variable.
fn failpoint(name: &'static str, fut: Service) -> Service {
    if !cfg!(debug_assertions) {
        return fut;
    }
    let Some(after) = std::env::var("RACKSEED_FAILPOINT").ok().and_then(|v| {
        let (svc, ms) = v.split_once(':')?;
        (svc == name).then(|| ms.parse::<u64>().ok()).flatten()
    }) else {
        return fut;
    };
    Box::pin(async move {
        tokio::select! {
            r = fut => r,
            () = tokio::time::sleep(std::time::Duration::from_millis(after)) => {
                panic!("failpoint {name}:{after} fired")
            }
        }
    })
}

/// A service: runs until `cancel` fires, or ends with why.
pub type Service = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Runs `services` under supervision: one that ends (error or panic) before `cancel`
/// fired is marked down in `health`, cancels the others and makes this return
/// [`StartError::ServiceDied`] with its name and reason, so the process exits non-zero
/// and systemd restarts it.
pub async fn supervise(
    health: &crate::state::Health,
    services: Vec<(&'static str, Service)>,
    cancel: CancellationToken,
) -> Result<(), StartError> {
    let mut set = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for (name, fut) in services {
        health.up(name);
        let h = set.spawn(fut);
        names.insert(h.id(), name);
    }
    let mut died: Option<(String, String)> = None;
    while let Some(done) = set.join_next_with_id().await {
        let (name, outcome) = match done {
            Ok((id, r)) => (names.get(&id).copied().unwrap_or("?"), r),
            Err(e) => {
                let name = names.get(&e.id()).copied().unwrap_or("?");
                let why = if e.is_panic() {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("panicked: {msg}")
                } else {
                    "was cancelled".to_string()
                };
                (name, Err(why))
            }
        };
        if cancel.is_cancelled() && died.is_none() {
            continue;
        }
        if died.is_some() {
            continue;
        }
        let why = match outcome {
            Ok(()) => "stopped without being asked to".to_string(),
            Err(e) => e,
        };
        error!(service = name, reason = %why, "service died; stopping rackseed");
        health.down(name, &why);
        died = Some((name.to_string(), why));
        cancel.cancel();
    }
    match died {
        Some((name, reason)) => Err(StartError::ServiceDied { name, reason }),
        None => Ok(()),
    }
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
        // Replication lag: an alarm on a member's timeline when it falls behind.
        match crate::state::blocking(&state, |s| s.replication_health()).await {
            Ok(groups) => {
                for (g, members) in groups {
                    for m in members.into_iter().filter(|m| m.raise) {
                        tracing::warn!(group = %g.name, node = m.node_id, host = %m.hostname, lag_s = m.lag_ms.unwrap_or(0) / 1000, "replication behind");
                        state.metrics.replication_lag_alarms.inc();
                        state
                            .events
                            .emit(m.node_id, crate::groups::health::LAG_EVENT, m.message);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "replication check could not read the inventory")
            }
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
    run(state, listeners, cancel).await
}

#[cfg(test)]
mod supervise_tests {
    use super::*;

    fn until_cancelled(c: CancellationToken) -> Service {
        Box::pin(async move {
            c.cancelled().await;
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_panicking_service_stops_the_others_and_names_itself() {
        let health = crate::state::Health::default();
        let cancel = CancellationToken::new();
        let services: Vec<(&'static str, Service)> = vec![
            ("http", until_cancelled(cancel.clone())),
            (
                "dhcp",
                Box::pin(async {
                    tokio::task::yield_now().await;
                    panic!("option 94 length")
                }),
            ),
        ];
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            supervise(&health, services, cancel.clone()),
        )
        .await
        .expect("supervise returned");
        let e = r.unwrap_err().to_string();
        assert_eq!(
            e,
            "service dhcp died: panicked: option 94 length; rackseed stopped (systemd restarts it)"
        );
        assert!(cancel.is_cancelled());
        let list = health.list();
        assert_eq!(list[0], ("dhcp", Some("panicked: option 94 length".into())));
        assert_eq!(list[1], ("http", None));
    }

    #[tokio::test]
    async fn a_service_that_returns_is_a_death_too_but_shutdown_is_not() {
        let health = crate::state::Health::default();
        let cancel = CancellationToken::new();
        let services: Vec<(&'static str, Service)> = vec![
            ("http", until_cancelled(cancel.clone())),
            ("tftp", Box::pin(async { Err("socket closed".to_string()) })),
        ];
        let e = supervise(&health, services, cancel).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("service tftp died: socket closed"),
            "{e}"
        );

        let cancel = CancellationToken::new();
        let services: Vec<(&'static str, Service)> = vec![
            ("http", until_cancelled(cancel.clone())),
            ("syslog", until_cancelled(cancel.clone())),
        ];
        cancel.cancel();
        assert!(supervise(&health, services, cancel).await.is_ok());
    }
}
