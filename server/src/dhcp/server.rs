//! The DHCP socket loops: receive, classify, decide under the lease-table lock, persist
//! the outcome's lease write (batched, durable) and only then send the reply.
//!
//! Decides nothing itself; one bad packet is logged and dropped.

use super::classify::classify;
use super::decide::{self, Ctx, Destination, NodeView, Outcome};
use crate::config::{DhcpMode, UnknownPolicy};
use crate::inventory::{self, Discovery, LeaseWrite, now_ms};
use crate::mac::MacAddr;
use crate::state::AppState;
use dhcproto::{Decodable, Decoder, Encodable, v4::Message};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// One bound DHCP socket.
pub struct DhcpSocket {
    /// The interface it is bound to (`SO_BINDTODEVICE`), if any.
    pub iface: Option<String>,
    /// True for the ProxyDHCP port (4011).
    pub proxy_port: bool,
    pub socket: Arc<UdpSocket>,
}

/// Failure to set up a DHCP socket.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for DHCP on {what}")]
pub struct BindError {
    what: String,
    #[source]
    source: std::io::Error,
}

/// Binds `0.0.0.0:port` with broadcast enabled, bound to `iface` when given.
pub fn bind(iface: Option<&str>, port: u16) -> Result<UdpSocket, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let what = format!("{}:{port}", iface.unwrap_or("0.0.0.0"));
    let err = |source| BindError {
        what: what.clone(),
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    if let Some(i) = iface {
        s.bind_device(Some(i.as_bytes())).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
        .map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// Binds every socket the config asks for: port 67 (and 4011 in proxy mode) on each
/// DHCP interface, or on all interfaces when none is named.
pub fn bind_all(state: &AppState) -> Result<Vec<DhcpSocket>, BindError> {
    let cfg = &state.config.dhcp;
    if cfg.mode == DhcpMode::Disabled {
        return Ok(Vec::new());
    }
    let mut ifaces: Vec<String> = cfg.interfaces.clone();
    for s in &cfg.subnets {
        if let Some(i) = &s.interface
            && !ifaces.contains(i)
        {
            ifaces.push(i.clone());
        }
    }
    let targets: Vec<Option<String>> = if ifaces.is_empty() {
        vec![None]
    } else {
        ifaces.into_iter().map(Some).collect()
    };
    let mut out = Vec::new();
    for iface in targets {
        out.push(DhcpSocket {
            iface: iface.clone(),
            proxy_port: false,
            socket: Arc::new(bind(iface.as_deref(), cfg.port)?),
        });
        if cfg.mode == DhcpMode::Proxy {
            out.push(DhcpSocket {
                iface: iface.clone(),
                proxy_port: true,
                socket: Arc::new(bind(iface.as_deref(), cfg.proxy_port)?),
            });
        }
    }
    Ok(out)
}

/// A reply waiting for its lease write to be durable.
struct Pending {
    write: Option<LeaseWrite>,
    send: Option<(Vec<u8>, SocketAddr, Arc<UdpSocket>)>,
}

/// Runs the DHCP server on already-bound sockets until `cancel` fires.
pub async fn run(state: Arc<AppState>, sockets: Vec<DhcpSocket>, cancel: CancellationToken) {
    if sockets.is_empty() {
        return;
    }
    let (tx, rx) = mpsc::channel::<Pending>(4096);
    let writer = tokio::spawn(lease_writer(state.clone(), rx));
    let chainloaded: Arc<Mutex<HashMap<MacAddr, i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for s in sockets {
        let (state, tx, cancel, chainloaded) = (
            state.clone(),
            tx.clone(),
            cancel.clone(),
            chainloaded.clone(),
        );
        info!(
            iface = s.iface.as_deref().unwrap_or("*"),
            port = s.socket.local_addr().map(|a| a.port()).unwrap_or(0),
            "dhcp listening"
        );
        tasks.push(tokio::spawn(async move {
            serve_socket(state, s, tx, chainloaded, cancel).await
        }));
    }
    drop(tx);
    for t in tasks {
        let _ = t.await;
    }
    let _ = writer.await;
}

async fn serve_socket(
    state: Arc<AppState>,
    s: DhcpSocket,
    tx: mpsc::Sender<Pending>,
    chainloaded: Arc<Mutex<HashMap<MacAddr, i64>>>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (len, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = s.socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => { warn!(error = %crate::error_chain(&e), "dhcp receive failed"); continue; }
            },
        };
        let SocketAddr::V4(from) = from else { continue };
        state.metrics.dhcp_received.inc();
        let span = info_span!("dhcp", iface = s.iface.as_deref().unwrap_or("*"), %from);
        let pending = handle_packet(&state, &s, &buf[..len], from, &chainloaded)
            .instrument(span)
            .await;
        if let Some(p) = pending
            && tx.send(p).await.is_err()
        {
            return;
        }
    }
}

async fn handle_packet(
    state: &AppState,
    s: &DhcpSocket,
    bytes: &[u8],
    from: SocketAddrV4,
    chainloaded: &Mutex<HashMap<MacAddr, i64>>,
) -> Option<Pending> {
    let msg = match Message::decode(&mut Decoder::new(bytes)) {
        Ok(m) => m,
        Err(e) => {
            state.metrics.dhcp_dropped.inc();
            debug!(error = %crate::error_chain(&e), len = bytes.len(), "malformed DHCP packet dropped");
            return None;
        }
    };
    let req = match classify(&msg) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.dhcp_dropped.inc();
            debug!(error = %crate::error_chain(&e), "DHCP packet ignored");
            return None;
        }
    };
    let cfg = &state.config;
    let now = now_ms();
    let inv = &state.inventory;
    let info = Discovery {
        arch: req.client.arch().map(|a| a.as_str()),
        vendor_class: req.vendor_class.clone(),
    };
    let mut node = match inv.node_by_mac(req.mac) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), mac = %req.mac, "inventory lookup failed; packet dropped");
            return None;
        }
    };
    if node.is_none() && req.client.is_boot() && cfg.dhcp.unknown == UnknownPolicy::Discover {
        match inv.discover(req.mac, &info, now) {
            Ok((n, fresh)) => {
                if fresh {
                    info!(mac = %req.mac, client = %req.client.describe(), "node discovered");
                    state.events.notify();
                }
                node = Some(n);
            }
            Err(e) => {
                warn!(error = %crate::error_chain(&e), mac = %req.mac, "could not record discovered node")
            }
        }
    }
    let arrived_on = s
        .iface
        .as_deref()
        .and_then(|i| cfg.subnet_for_interface(i))
        .or_else(|| {
            // Unbound socket: the only directly attached subnet, if there is exactly one.
            let direct: Vec<_> = cfg
                .dhcp
                .subnets
                .iter()
                .filter(|s| s.interface.is_some())
                .collect();
            (direct.len() == 1).then(|| direct[0])
        });
    let view = node.as_ref().map(|n| NodeView {
        id: n.id,
        hostname: n.hostname.clone(),
        domain: arrived_on.and_then(|s| s.domain.clone()),
    });
    let window = cfg.dhcp.chainload_window.as_millis() as i64;
    let recently = chainloaded
        .lock()
        .ok()
        .and_then(|m| m.get(&req.mac).copied())
        .is_some_and(|t| now - t < window);
    let ctx = Ctx {
        dhcp: &cfg.dhcp,
        server_ip: cfg.server.advertise,
        base_url: &cfg.server.base_url,
        efi_binary: cfg.boot.efi_binary,
        arrived_on,
        node: view.as_ref(),
        now,
        chainloaded_recently: recently,
    };
    let outcome: Outcome = {
        let mut table = state.leases.lock().unwrap_or_else(|p| p.into_inner());
        decide::decide(&req, &ctx, &mut table, s.proxy_port, from)
    };
    debug!(mac = %req.mac, xid = req.xid, msg = ?req.msg_type, client = %req.client.describe(), note = %outcome.note, "dhcp decision");
    if outcome.chainloads
        && let Ok(mut m) = chainloaded.lock()
    {
        m.retain(|_, t| now - *t < window);
        m.insert(req.mac, now);
    }
    if let Some(n) = &node
        && cfg.dhcp.mode == DhcpMode::Proxy
        && outcome.reply.is_none()
        && req.msg_type == dhcproto::v4::MessageType::Request
        && let (Some(site), Some(ip)) = (req.server_id, req.requested_ip)
        && site != cfg.server.advertise
    {
        // The node accepts an address from the site's DHCP server: remember it, so its
        // TFTP, HTTP and syslog traffic is attributed from the first packet.
        state.note_peer(ip, n.id);
        state.events.emit(
            n.id,
            "dhcp",
            format!(
                "REQUEST {ip} from site DHCP server {site} (observed) by {}",
                req.client.describe()
            ),
        );
    }
    if let Some(n) = &node {
        if let Err(e) = inv.touch(n.id, &info, now) {
            debug!(error = %crate::error_chain(&e), "last-seen update failed");
        }
        if let Some(r) = &outcome.reply
            && matches!(
                r.msg_type,
                dhcproto::v4::MessageType::Ack | dhcproto::v4::MessageType::Offer
            )
            && (r.msg_type == dhcproto::v4::MessageType::Ack || cfg.dhcp.mode == DhcpMode::Proxy)
        {
            let addr = if r.yiaddr.is_unspecified() {
                String::new()
            } else {
                format!(" {}", r.yiaddr)
            };
            let boot = match &r.boot {
                Some(decide::BootFile::Tftp(f)) => format!("; boot file {f} via TFTP"),
                Some(decide::BootFile::Http(u)) => format!("; boot file {u}"),
                None => String::new(),
            };
            let port = if s.proxy_port { " (port 4011)" } else { "" };
            let kind = format!("{:?}", r.msg_type).to_uppercase();
            state.events.emit(
                n.id,
                "dhcp",
                format!("{kind}{addr}{port} to {}{boot}", req.client.describe()),
            );
            if !r.yiaddr.is_unspecified() {
                state.note_peer(r.yiaddr, n.id);
            } else if !req.ciaddr.is_unspecified() {
                state.note_peer(req.ciaddr, n.id);
            }
        }
    }
    if let Some(r) = &outcome.reply
        && r.msg_type == dhcproto::v4::MessageType::Nak
    {
        state.metrics.dhcp_nak.inc();
    }
    let reply = outcome.reply.as_ref()?;
    let out = decide::encode_reply(&msg, &req, reply, cfg.server.advertise);
    let bytes = match out.to_vec() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "could not encode DHCP reply");
            return None;
        }
    };
    let dest: SocketAddr = match reply.dest {
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68).into(),
        Destination::Unicast(a) => a.into(),
        Destination::Relay(g) => SocketAddrV4::new(g, 67).into(),
    };
    Some(Pending {
        write: outcome.persist,
        send: Some((bytes, dest, s.socket.clone())),
    })
}

/// Commits lease writes in batches on its own connection, then sends the replies that
/// waited for them. A reply is never sent before its lease is durable.
async fn lease_writer(state: Arc<AppState>, mut rx: mpsc::Receiver<Pending>) {
    let mut conn = match inventory::connect(state.inventory.path()) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "lease writer cannot open the inventory; leases will not be persisted");
            None
        }
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 512).await > 0 {
        let writes: Vec<LeaseWrite> = batch.iter_mut().filter_map(|p| p.write.take()).collect();
        if !writes.is_empty()
            && let Some(c) = conn.take()
        {
            let (c, res) = tokio::task::spawn_blocking(move || {
                let mut c = c;
                let r = inventory::store_leases(&mut c, &writes);
                (c, r)
            })
            .await
            .unwrap_or_else(|e| panic!("lease writer thread panicked: {e}"));
            conn = Some(c);
            if let Err(e) = res {
                // Not durable: do not acknowledge anything in this batch.
                warn!(error = %crate::error_chain(&e), dropped = batch.len(), "lease batch not stored; replies withheld");
                batch.clear();
                continue;
            }
        }
        for p in batch.drain(..) {
            if let Some((bytes, dest, sock)) = p.send {
                match sock.send_to(&bytes, dest).await {
                    Ok(_) => state.metrics.dhcp_sent.inc(),
                    Err(e) => debug!(error = %crate::error_chain(&e), %dest, "dhcp send failed"),
                }
            }
        }
    }
}
