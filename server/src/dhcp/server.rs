//! The DHCP socket loops: receive, classify, decide under the lease-table lock, make the
//! outcome's lease write durable in the lease journal (group commit) and only then send
//! the reply.
//!
//! Decides nothing itself; one bad packet is logged and dropped. The socket loops never
//! write to the inventory. A packet whose reply depends on a lease write goes to the
//! journal thread, which commits every write waiting at that moment with one write and
//! one flush (`dhcp::store`), sends their replies, and passes them on. Everything a
//! packet changes in the inventory (a discovered machine, its last-seen time, its
//! lease, timeline events) goes to the writer task, which stores a whole batch in one
//! transaction, off the reply path, and tells the journal how far the inventory has
//! caught up. Which MAC is which node is answered from a bounded cache, emptied
//! whenever the inventory says nodes were added, renamed or deleted.

use super::classify::Request;
use super::decide::{self, Ctx, Destination, NodeView, Outcome};
use super::store::LeaseJournal;
use crate::config::{DhcpMode, UnknownPolicy};
use crate::inventory::UnixMs;
use crate::inventory::{
    self, DhcpEvent, DhcpWrites, Discovered, Discovery, LeaseWrite, NodeKey, now_ms,
};
use crate::mac::MacAddr;
use crate::state::AppState;
use dhcproto::Encodable;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn};

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

/// The receive buffer asked for on DHCP sockets (about 10,000 queued requests).
const RECV_BUFFER: usize = 4 << 20;

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
    // Room for a burst (a rack powering on, a relay flushing) while the loop is busy:
    // past net.core.rmem_max when privileged, else as much as it allows.
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &RECV_BUFFER)
        .is_err()
    {
        let _ = s.set_recv_buffer_size(RECV_BUFFER);
    }
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

/// What one packet leaves for the writer: inventory changes (stored in the batch's
/// transaction) and, when the reply depends on a lease write, the reply to send once
/// that is durable.
struct Pending {
    mac: MacAddr,
    /// The node, when it was known before this packet.
    node: Option<i64>,
    /// Record this machine as discovered (its node id is known only after the write).
    discover: Option<Discovery>,
    /// Update the known node's last-seen time and what it said.
    seen: Option<Discovery>,
    write: Option<LeaseWrite>,
    /// Timeline events for the node, emitted once the batch is stored.
    events: Vec<(&'static str, String)>,
    /// An address to attribute to the node (TFTP, HTTP and syslog traffic).
    peer: Option<Ipv4Addr>,
    send: Option<(Vec<u8>, SocketAddr, Arc<UdpSocket>)>,
    /// The number of the journal commit holding `write` (0: none).
    journalled: u64,
}

/// Most MACs the node cache holds before it starts over.
const CACHE_LIMIT: usize = 1 << 18;
/// MACs given rackseed's iPXE binary, and when (for `always-once`). Stale entries are
/// pruned whenever the map has doubled since the last pruning, so the cost per packet
/// stays constant; past `CACHE_LIMIT` live entries it starts over.
struct Chainloaded {
    map: HashMap<MacAddr, i64>,
    prune_at: usize,
}

impl Default for Chainloaded {
    fn default() -> Self {
        Chainloaded {
            map: HashMap::new(),
            prune_at: 1024,
        }
    }
}

impl Chainloaded {
    fn recently(&self, mac: MacAddr, now: i64, window: i64) -> bool {
        self.map.get(&mac).is_some_and(|t| now - t < window)
    }

    fn insert(&mut self, mac: MacAddr, now: i64, window: i64) {
        if self.map.len() >= self.prune_at {
            self.map.retain(|_, t| now - *t < window);
            if self.map.len() >= CACHE_LIMIT {
                self.map.clear();
            }
            self.prune_at = (2 * self.map.len()).max(1024);
        }
        self.map.insert(mac, now);
    }
}

/// Which MAC is which node, as of an inventory generation. `complete` when it holds
/// every node (loaded whole after each change of the inventory's nodes, plus the
/// machines DHCP discovered since): a MAC it lacks is then not a node, with no lookup.
/// Until then, entries are single lookups (`None`: not a node). On PostgreSQL the
/// generation also moves every `inventory::PG_GENERATION_MS`, so nodes another rackseed
/// on the same database added or deleted are seen within that time (a standby that
/// takes over needs no reload of its own).
#[derive(Default)]
struct NodeCache {
    generation: u64,
    map: HashMap<MacAddr, Option<NodeKey>>,
    complete: bool,
    /// A whole load is under way (for `generation`).
    loading: bool,
}

impl NodeCache {
    fn insert(&mut self, mac: MacAddr, key: Option<NodeKey>) {
        if self.map.len() >= CACHE_LIMIT && !self.map.contains_key(&mac) {
            self.map.clear();
            self.complete = false;
        }
        self.map.insert(mac, key);
    }
}

/// What the socket tasks and the writer share.
struct Shared {
    state: Arc<AppState>,
    cache: Mutex<NodeCache>,
    chainloaded: Mutex<Chainloaded>,
    /// The discovery budget, and when the stored count was last re-read and the last
    /// warning given.
    discovery: Mutex<(super::limit::DiscoveryLimit, UnixMs, UnixMs)>,
}

/// Discovered nodes in the inventory.
fn discovered_count(state: &AppState) -> usize {
    state
        .inventory
        .count_by_state()
        .ok()
        .and_then(|c| c.into_iter().find(|(s, _)| s == "discovered"))
        .map_or(0, |(_, n)| usize::try_from(n).unwrap_or(0))
}

impl Shared {
    /// Whether one more unknown machine may become a discovered node now; counted and
    /// warned about (once a minute) when a limit stops it.
    fn admit_discovery(self: &Arc<Self>, now: UnixMs) -> bool {
        let cfg = &self.state.config.dhcp;
        let mut g = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        let (limit, recounted, warned) = &mut *g;
        let r = limit.admit(now);
        if r == Err(super::limit::Limited::Total) && now - *recounted > 10_000 {
            // Operators may have deleted or assigned discovered nodes since: recounted
            // on a blocking thread (this packet stays refused; later ones see the count).
            *recounted = now;
            let shared = self.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || {
                    let n = discovered_count(&shared.state);
                    let cfg = &shared.state.config.dhcp;
                    let mut g = shared.discovery.lock().unwrap_or_else(|p| p.into_inner());
                    g.0 = super::limit::DiscoveryLimit::new(
                        cfg.discover_max,
                        cfg.discover_per_minute,
                        n,
                    );
                });
            }
        }
        match r {
            Ok(()) => true,
            Err(why) => {
                self.state.metrics.dhcp_discover_limited.inc();
                if now - *warned > 60_000 {
                    *warned = now;
                    let which = match why {
                        super::limit::Limited::Total => {
                            format!("dhcp.discover_max = {}", cfg.discover_max)
                        }
                        super::limit::Limited::Rate => {
                            format!("dhcp.discover_per_minute = {}", cfg.discover_per_minute)
                        }
                    };
                    warn!(limit = %which, "unknown machines are not being recorded as discovered nodes: the limit {which} is reached (a flood of new MACs on the provisioning LAN?); see rackseed_dhcp_discover_limited_total");
                }
                false
            }
        }
    }
}

impl Shared {
    /// The node with this MAC from the cache; `None` when the cache does not know.
    /// Starts loading the whole map when it is not complete for the current generation.
    fn cached_key(self: &Arc<Self>, mac: MacAddr) -> Option<Option<NodeKey>> {
        let generation = self.state.inventory.generation();
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.generation != generation {
            c.map.clear();
            c.generation = generation;
            c.complete = false;
            c.loading = false;
        }
        if let Some(k) = c.map.get(&mac) {
            return Some(k.clone());
        }
        if c.complete {
            return Some(None);
        }
        if !c.loading {
            c.loading = true;
            self.load_all(generation);
        }
        None
    }

    /// Loads every node's MAC on a blocking thread and makes the map complete, unless
    /// the nodes changed meanwhile (then the next lookup starts over).
    fn load_all(self: &Arc<Self>, generation: u64) {
        let shared = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn_blocking(move || {
            let keys = shared.state.inventory.node_keys();
            let mut c = shared.cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.generation != generation {
                return;
            }
            c.loading = false;
            match keys {
                Ok(keys) if keys.len() < CACHE_LIMIT => {
                    for (mac, key) in keys {
                        // Entries added meanwhile (discoveries) are newer than the load.
                        c.map.entry(mac).or_insert(Some(key));
                    }
                    // Not-a-node entries from before the load stay right: the load saw
                    // no such node either, and a discovery replaces them.
                    c.complete = true;
                }
                Ok(keys) => {
                    debug!(nodes = keys.len(), "too many nodes for the DHCP node map; looked up one by one");
                }
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), "cannot load the DHCP node map; nodes are looked up one by one")
                }
            }
        });
    }

    /// The node with this MAC: from the cache, else from the inventory on a blocking
    /// thread (one of its read connections) and cached. The socket task waits for the
    /// lookup; other tasks and services keep running on the executor meanwhile.
    async fn node_key(
        self: &Arc<Self>,
        mac: MacAddr,
    ) -> Result<Option<NodeKey>, inventory::InventoryError> {
        if let Some(k) = self.cached_key(mac) {
            return Ok(k);
        }
        let generation = self.state.inventory.generation();
        let key = crate::state::blocking(&self.state, move |st| st.inventory.node_key_by_mac(mac))
            .await?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.generation == generation {
            c.insert(mac, key.clone());
        }
        Ok(key)
    }
}

/// Runs the DHCP server on already-bound sockets until `cancel` fires. Fails when the
/// lease journal cannot be written (no reply may leave without its lease on disk).
pub async fn run(
    state: Arc<AppState>,
    sockets: Vec<DhcpSocket>,
    cancel: CancellationToken,
) -> Result<(), String> {
    if sockets.is_empty() {
        return Ok(());
    }
    let Some(journal) = state
        .lease_journal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return Err("the lease journal is already in use by another DHCP server".into());
    };
    let (tx, rx) = mpsc::channel::<Pending>(4096);
    let (to_journal, journal_rx) = mpsc::channel::<Pending>(4096);
    let discovery = super::limit::DiscoveryLimit::new(
        state.config.dhcp.discover_max,
        state.config.dhcp.discover_per_minute,
        discovered_count(&state),
    );
    let shared = Arc::new(Shared {
        state: state.clone(),
        cache: Mutex::default(),
        chainloaded: Mutex::default(),
        discovery: Mutex::new((discovery, now_ms(), 0)),
    });
    let applied = journal.applied();
    let writer = tokio::spawn(dhcp_writer(shared.clone(), rx, applied));
    // Ends the socket loops too when the journal thread fails.
    let cancel = cancel.child_token();
    let committer = {
        let (state, tx, stop) = (state.clone(), tx.clone(), cancel.clone());
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            // Cancels when the loop returns or panics.
            let _stop = stop.drop_guard();
            commit_loop(state, journal, journal_rx, tx, rt)
        })
    };
    let mut tasks = Vec::new();
    for s in sockets {
        let (shared, tx, to_journal, cancel) = (
            shared.clone(),
            tx.clone(),
            to_journal.clone(),
            cancel.clone(),
        );
        info!(
            iface = s.iface.as_deref().unwrap_or("*"),
            port = s.socket.local_addr().map(|a| a.port()).unwrap_or(0),
            "dhcp listening"
        );
        tasks.push(tokio::spawn(async move {
            serve_socket(shared, s, tx, to_journal, cancel).await
        }));
    }
    drop((tx, to_journal));
    for t in tasks {
        let _ = t.await;
    }
    let committed = committer.await;
    let _ = writer.await;
    match committed {
        Ok(r) => r.map_err(|e| crate::error_chain(&e)),
        Err(e) => Err(format!("the lease journal thread panicked: {e}")),
    }
}

/// The journal thread: commits the lease writes of every packet waiting (one write, one
/// flush), then sends their replies and passes them to the inventory writer. Returns
/// when the socket loops are gone, or with the error when the journal cannot be
/// written (the DHCP service then stops: nothing may be answered without its lease).
fn commit_loop(
    state: Arc<AppState>,
    mut journal: LeaseJournal,
    mut rx: mpsc::Receiver<Pending>,
    writer: mpsc::Sender<Pending>,
    rt: tokio::runtime::Handle,
) -> Result<(), super::store::JournalError> {
    let mut batch: Vec<Pending> = Vec::with_capacity(256);
    let mut writes: Vec<LeaseWrite> = Vec::with_capacity(256);
    let mut resets = journal.resets;
    // With the inventory on PostgreSQL another rackseed may share it: every binding
    // of a batch is claimed in the database before its ACK leaves.
    let mut claims = (state.inventory.backend() == crate::inventory::Backend::Postgres)
        .then(|| Claims { conn: None });
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        writes.clear();
        writes.extend(batch.iter().filter_map(|p| p.write.clone()));
        let number = match journal.commit(&writes) {
            Ok(n) => n,
            Err(e) => {
                error!(error = %crate::error_chain(&e), withheld = batch.len(), "lease journal write failed; DHCP replies withheld and the DHCP service stops");
                return Err(e);
            }
        };
        state.metrics.dhcp_journal_flushes.inc();
        if journal.resets != resets {
            resets = journal.resets;
            state.metrics.dhcp_journal_resets.inc();
        }
        if let Some(c) = claims.as_mut() {
            c.arbitrate(&state, &mut batch);
        }
        for mut p in batch.drain(..) {
            p.journalled = number;
            if let Some((bytes, dest, sock)) = p.send.take() {
                send_now(&state, &rt, sock, bytes, dest);
            }
            if writer.blocking_send(p).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The journal thread's PostgreSQL connection for lease claims (opened on first use,
/// again after it is lost).
struct Claims {
    conn: Option<crate::inventory::Conn>,
}

impl Claims {
    /// Claims the bindings (`bound` lease writes) of `batch` in the database. A binding
    /// another server holds loses its reply and lease write, and the address is kept
    /// from offers here until the lease would have ended; the client's next REQUEST
    /// gets a NAK and it starts over. When the database cannot be asked, no binding of
    /// the batch is answered (safety over availability: two servers must not ACK one
    /// address); the clients retry, and the bindings stay for the inventory writer.
    fn arbitrate(&mut self, state: &AppState, batch: &mut [Pending]) {
        let bound: Vec<usize> = batch
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(&p.write, Some(LeaseWrite::Upsert(l)) if l.state == "bound" && l.mac.is_some()))
            .map(|(i, _)| i)
            .collect();
        if bound.is_empty() {
            return;
        }
        let rows: Vec<&crate::inventory::LeaseRow> = bound
            .iter()
            .filter_map(|&i| match &batch[i].write {
                Some(LeaseWrite::Upsert(l)) => Some(l),
                _ => None,
            })
            .collect();
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = state.inventory.connect_own().map_err(|e| {
                warn!(error = %crate::error_chain(&e), "cannot reach the inventory to claim leases; ACKs withheld");
            }).ok();
        }
        let won = match self.conn.as_mut() {
            Some(c) => inventory::claim_leases(c, &rows, now_ms()).map_err(|e| {
                warn!(error = %crate::error_chain(&e), leases = rows.len(), "lease claims failed; ACKs withheld");
                let _ = state.inventory.recover(c, &e);
            }),
            None => Err(()),
        };
        let Ok(won) = won else {
            for &i in &bound {
                // Kept for the writer (the journal holds it); only the ACK waits.
                batch[i].send = None;
            }
            return;
        };
        let mut table = state.leases.lock().unwrap_or_else(|p| p.into_inner());
        for (&i, ok) in bound.iter().zip(won) {
            if ok {
                continue;
            }
            let p = &mut batch[i];
            if let Some(LeaseWrite::Upsert(l)) = p.write.take() {
                info!(ip = %l.ip, mac = %p.mac, "address held by another rackseed on the same inventory; ACK withheld");
                table.held_elsewhere(p.mac, l.ip, l.expires_at);
            }
            p.send = None;
        }
    }
}

/// Sends a reply from a thread outside the runtime: at once when the socket takes it,
/// else from a task once it is writable.
fn send_now(
    state: &Arc<AppState>,
    rt: &tokio::runtime::Handle,
    sock: Arc<UdpSocket>,
    bytes: Vec<u8>,
    dest: SocketAddr,
) {
    match sock.try_send_to(&bytes, dest) {
        Ok(_) => state.metrics.dhcp_sent.inc(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let state = state.clone();
            rt.spawn(async move { send_reply(&state, &sock, &bytes, dest).await });
        }
        Err(e) => debug!(error = %crate::error_chain(&e), %dest, "dhcp send failed"),
    }
}

async fn serve_socket(
    shared: Arc<Shared>,
    s: DhcpSocket,
    tx: mpsc::Sender<Pending>,
    to_journal: mpsc::Sender<Pending>,
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
        shared.state.metrics.dhcp_received.inc();
        let span = info_span!("dhcp", iface = s.iface.as_deref().unwrap_or("*"), %from);
        let Some((msg, req)) = span.in_scope(|| parse(&shared.state, &buf[..len], from)) else {
            continue;
        };
        let known = match shared.node_key(req.mac).await {
            Ok(k) => k,
            Err(e) => {
                let _g = span.enter();
                warn!(error = %crate::error_chain(&e), mac = %req.mac, "inventory lookup failed; packet dropped");
                continue;
            }
        };
        let pending = span.in_scope(|| handle_packet(&shared, &s, &msg, req, known, from));
        let Some(mut p) = pending else { continue };
        if p.write.is_none()
            && let Some((bytes, dest, sock)) = p.send.take()
        {
            // Nothing to make durable first (an OFFER, a NAK, a proxy reply).
            send_reply(&shared.state, &sock, &bytes, dest).await;
        }
        let sent = if p.write.is_some() {
            to_journal.send(p).await.is_ok()
        } else if p.discover.is_some() || p.seen.is_some() || !p.events.is_empty() {
            tx.send(p).await.is_ok()
        } else {
            true
        };
        if !sent {
            return;
        }
    }
}

/// The packet parsed, or `None` (counted and logged) when it is dropped.
fn parse(
    state: &AppState,
    bytes: &[u8],
    from: SocketAddrV4,
) -> Option<(dhcproto::v4::Message, Request)> {
    match crate::dhcp::classify::parse_packet(bytes) {
        Ok(x) => Some(x),
        Err(e) => {
            state.metrics.dhcp_dropped.inc();
            if matches!(e, crate::dhcp::classify::Drop::Wire(_)) {
                state.metrics.dhcp_malformed.inc();
            }
            debug!(error = %e, len = bytes.len(), from = %from, "DHCP packet dropped");
            None
        }
    }
}

/// What a parsed packet from a client, which is node `known` (or no node), leads to:
/// the decision, the reply and what the writer must store. No inventory I/O.
fn handle_packet(
    shared: &Arc<Shared>,
    s: &DhcpSocket,
    msg: &dhcproto::v4::Message,
    req: Request,
    known: Option<NodeKey>,
    from: SocketAddrV4,
) -> Option<Pending> {
    let state = &shared.state;
    let cfg = &state.config;
    let now = now_ms();
    let relayed = !req.giaddr.is_unspecified();
    let info = Discovery {
        arch: req.client.arch().map(|a| a.as_str()),
        vendor_class: req.vendor_class.clone(),
        giaddr: relayed.then_some(req.giaddr),
        circuit_id: req.circuit_id.clone(),
        remote_id: req.remote_id.clone(),
    };
    let discover =
        known.is_none() && req.client.is_boot() && cfg.dhcp.unknown != UnknownPolicy::Ignore;
    if discover && !shared.admit_discovery(now) {
        // Past the discovery limits an unknown boot client is ignored as with
        // `dhcp.unknown = "ignore"`: no node, no offer holding a pool address.
        debug!(mac = %req.mac, "unknown boot client ignored: discovery limit reached");
        return None;
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
    // A machine being discovered now is decided on like a known node without a hostname.
    let view = match &known {
        Some(k) => Some(NodeView {
            id: k.id,
            hostname: k.hostname.clone(),
            domain: arrived_on.and_then(|s| s.domain.clone()),
        }),
        None if discover => Some(NodeView {
            id: 0,
            hostname: None,
            domain: arrived_on.and_then(|s| s.domain.clone()),
        }),
        None => None,
    };
    let window = cfg.dhcp.chainload_window.as_millis() as i64;
    let recently = shared
        .chainloaded
        .lock()
        .is_ok_and(|m| m.recently(req.mac, now, window));
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
        && let Ok(mut m) = shared.chainloaded.lock()
    {
        m.insert(req.mac, now, window);
    }
    let report = super::report::report(
        &req,
        outcome.reply.as_ref(),
        known.is_some() || discover,
        super::report::Arrival {
            mode: cfg.dhcp.mode,
            advertise: cfg.server.advertise,
            proxy_port: s.proxy_port,
        },
    );
    if let Some(r) = &outcome.reply
        && r.msg_type == dhcproto::v4::MessageType::Nak
    {
        state.metrics.dhcp_nak.inc();
    }
    let send = match &outcome.reply {
        None => None,
        Some(reply) => {
            let out = decide::encode_reply(msg, &req, reply, cfg.server.advertise);
            match out.to_vec() {
                Ok(b) => {
                    let dest: SocketAddr = match reply.dest {
                        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68).into(),
                        Destination::Unicast(a) => a.into(),
                        Destination::Relay(g) => SocketAddrV4::new(g, 67).into(),
                    };
                    Some((b, dest, s.socket.clone()))
                }
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), "could not encode DHCP reply");
                    None
                }
            }
        }
    };
    let node = known.as_ref().map(|k| k.id);
    Some(Pending {
        mac: req.mac,
        node,
        discover: discover.then(|| info.clone()),
        seen: node.map(|_| info),
        write: outcome.persist,
        events: report.events,
        peer: report.address,
        send,
        journalled: 0,
    })
}

async fn send_reply(state: &AppState, sock: &UdpSocket, bytes: &[u8], dest: SocketAddr) {
    match sock.send_to(bytes, dest).await {
        Ok(_) => state.metrics.dhcp_sent.inc(),
        Err(e) => debug!(error = %crate::error_chain(&e), %dest, "dhcp send failed"),
    }
}

/// How often at most the inventory writer flushes SQLite's write-ahead log (and then
/// tells the journal how far it may forget).
const INVENTORY_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// The inventory writer's durable point: stored writes are reported to the journal
/// only once SQLite's write-ahead log holding them is flushed.
struct Flushed {
    /// SQLite's write-ahead log; `None` on PostgreSQL, where a commit is durable when
    /// it returns (the server flushes its own WAL), so stored writes are reported at
    /// once.
    wal: Option<std::path::PathBuf>,
    applied: Arc<AtomicU64>,
    /// The last journal number stored (committed to SQLite, maybe not flushed).
    stored: u64,
    at: std::time::Instant,
}

impl Flushed {
    /// Flushes the write-ahead log when writes are stored but not reported and the
    /// last flush is `INVENTORY_FLUSH` ago (always, with `now`), then reports them.
    /// Blocking: runs on the writer's blocking thread.
    fn maybe_flush(&mut self, now: bool) {
        if self.stored <= self.applied.load(Ordering::Acquire)
            || (!now && self.at.elapsed() < INVENTORY_FLUSH)
        {
            return;
        }
        let Some(wal) = &self.wal else {
            self.applied.fetch_max(self.stored, Ordering::AcqRel);
            return;
        };
        // SQLite in WAL mode writes committed frames to the -wal file (or, once
        // checkpointed, to the database file, which the checkpoint flushes itself).
        match std::fs::File::open(wal).and_then(|f| f.sync_data()) {
            Ok(()) => {
                self.at = std::time::Instant::now();
                self.applied.fetch_max(self.stored, Ordering::AcqRel);
            }
            Err(e) => {
                warn!(error = %crate::error_chain(&e), wal = %wal.display(), "cannot flush the inventory's write-ahead log; the lease journal keeps its records")
            }
        }
    }
}

/// Stores each batch (discoveries, last-seen times, lease writes, timeline events) in
/// one transaction on its own connection, off the reply path (the lease writes are in
/// the journal already). Its commits are not flushed one by one
/// (`synchronous = NORMAL`): the write-ahead log is flushed at most every
/// `INVENTORY_FLUSH` and when idle, and only then is the journal told which lease
/// writes the inventory holds durably. Lease writes of a batch that cannot be stored
/// are tried again with the next one.
async fn dhcp_writer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Pending>,
    applied: Arc<AtomicU64>,
) {
    let state = shared.state.clone();
    let mut conn = match state
        .inventory
        .connect_own()
        .and_then(|mut c| inventory::relaxed(&mut c).map(|()| c))
    {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "dhcp writer cannot open the inventory; leases stay in the journal only");
            None
        }
    };
    let mut flushed = Some(Flushed {
        wal: state
            .inventory
            .sqlite_path()
            .map(|p| std::path::PathBuf::from(format!("{}-wal", p.display()))),
        applied,
        stored: 0,
        at: std::time::Instant::now(),
    });
    let mut batch: Vec<Pending> = Vec::with_capacity(256);
    // Lease writes not stored yet (a batch that failed), and the last one's number.
    let mut carried: (Vec<LeaseWrite>, u64) = (Vec::new(), 0);
    loop {
        let n = match tokio::time::timeout(INVENTORY_FLUSH, rx.recv_many(&mut batch, 1024)).await {
            Ok(n) => n,
            Err(_) => {
                // Idle: flush what is stored and not reported.
                if let Some(mut f) = flushed.take() {
                    flushed = Some(
                        tokio::task::spawn_blocking(move || {
                            f.maybe_flush(true);
                            f
                        })
                        .await
                        .unwrap_or_else(|e| panic!("dhcp writer thread panicked: {e}")),
                    );
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        let mut writes = DhcpWrites::default();
        let mut seen: HashMap<i64, Discovery> = HashMap::new();
        let mut journalled = carried.1;
        writes.leases = std::mem::take(&mut carried.0);
        let at = now_ms();
        for p in batch.iter_mut() {
            for (kind, message) in p.events.drain(..) {
                writes.events.push(DhcpEvent {
                    node: p.node,
                    mac: p.mac,
                    at,
                    kind,
                    message,
                });
            }
            if let Some(d) = p.discover.take()
                && !writes.discover.iter().any(|(m, _)| *m == p.mac)
            {
                writes.discover.push((p.mac, d));
            }
            if let (Some(id), Some(d)) = (p.node, p.seen.take()) {
                seen.insert(id, d);
            }
            if let Some(w) = p.write.take() {
                writes.leases.push(w);
            }
            journalled = journalled.max(p.journalled);
        }
        writes.seen = seen.into_iter().collect();
        let writes_events_empty = writes.events.is_empty();
        let mut found: Vec<Discovered> = Vec::new();
        if !writes.is_empty() {
            let (Some(c), Some(f)) = (conn.take(), flushed.take()) else {
                batch.clear();
                continue;
            };
            let inv = state.inventory.clone();
            let (c, f, writes, res) = tokio::task::spawn_blocking(move || {
                let (mut c, mut f) = (c, f);
                let r = inv
                    .reconnect_if_closed(&mut c)
                    .and_then(|()| inventory::store_dhcp(&mut c, &writes, now_ms()));
                if let Err(e) = &r {
                    // The batch's leases are carried to the next one; that one runs on
                    // a new connection when this one was lost.
                    let _ = inv.recover(&mut c, e);
                }
                if r.is_ok() {
                    f.stored = f.stored.max(journalled);
                }
                f.maybe_flush(false);
                (c, f, writes, r)
            })
            .await
            .unwrap_or_else(|e| panic!("dhcp writer thread panicked: {e}"));
            conn = Some(c);
            flushed = Some(f);
            match res {
                Ok(f) => found = f,
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), dropped = batch.len(), leases = writes.leases.len(), "dhcp batch not stored in the inventory (the leases are in the journal and are tried again)");
                    carried = (writes.leases, journalled);
                    batch.clear();
                    continue;
                }
            }
        } else if let Some(f) = flushed.as_mut() {
            f.stored = f.stored.max(journalled);
        }
        if !found.is_empty() {
            let mut c = shared.cache.lock().unwrap_or_else(|p| p.into_inner());
            for d in &found {
                c.insert(d.mac, Some(d.node.clone()));
            }
        }
        for d in found.iter().filter(|d| d.fresh) {
            info!(mac = %d.mac, node = d.node.id, "node discovered");
        }
        if !found.is_empty() || !writes_events_empty {
            state.events.notify();
        }
        for p in batch.drain(..) {
            let node = p
                .node
                .or_else(|| found.iter().find(|d| d.mac == p.mac).map(|d| d.node.id));
            if let (Some(id), Some(ip)) = (node, p.peer) {
                state.note_peer(ip, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::LeaseRow;

    /// A server's state (its own data directory) on the PostgreSQL database `url`.
    fn state_on(url: &str) -> (tempfile::TempDir, Arc<AppState>) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nadvertise = \"192.0.2.1\"\ndata_dir = \"{}\"\n[dhcp]\nmode = \"authoritative\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.199\"\n[installer]\nmirror = \"http://mirror.example/debian\"\n[inventory]\nurl = \"{url}\"\n",
            dir.path().join("data").display()
        );
        let cfg = crate::config::Config::parse_with(&text, "test.toml", &|_| None).unwrap();
        let profiles = crate::profiles::Catalog::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"),
        )
        .unwrap();
        let state = AppState::open(cfg, profiles)
            .unwrap_or_else(|e| panic!("{} (run ./x setup)", crate::error_chain(&e)));
        (dir, Arc::new(state))
    }

    /// Two rackseed servers on one PostgreSQL inventory whose address books both hand
    /// out the same address, to different MACs, in the same moment: the journal
    /// threads' claims let exactly one ACK leave; the other server keeps the address
    /// from its offers and drops its lease write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_on_one_database_never_ack_one_address_twice() {
        let url = crate::pgtest::shared().create_database().unwrap();
        let servers = [state_on(&url), state_on(&url)];
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        for round in 0..10u8 {
            let ip = Ipv4Addr::new(192, 0, 2, 100 + round);
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = servers
                .iter()
                .enumerate()
                .map(|(i, (_, state))| {
                    let mac = MacAddr([0x52, 0x54, 0, 9, round, i as u8]);
                    let mut batch = vec![Pending {
                        mac,
                        node: None,
                        discover: None,
                        seen: None,
                        write: Some(LeaseWrite::Upsert(LeaseRow {
                            ip,
                            mac: Some(mac),
                            state: "bound".into(),
                            expires_at: now_ms() + 600_000,
                            hostname: None,
                        })),
                        events: vec![],
                        peer: None,
                        send: Some((vec![0], "127.0.0.1:9".parse().unwrap(), sock.clone())),
                        journalled: 0,
                    }];
                    let (state, barrier) = (state.clone(), barrier.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut claims = Claims { conn: None };
                        barrier.wait();
                        claims.arbitrate(&state, &mut batch);
                        batch.pop().unwrap()
                    })
                })
                .collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            let acked: Vec<_> = out.iter().filter(|p| p.send.is_some()).collect();
            assert_eq!(acked.len(), 1, "round {round}: exactly one ACK");
            let winner = acked[0].mac;
            let (loser_i, loser) = out
                .iter()
                .enumerate()
                .find(|(_, p)| p.send.is_none())
                .unwrap();
            assert!(loser.write.is_none(), "the lost binding is not stored");
            let table = servers[loser_i].1.leases.lock().unwrap();
            assert!(
                table.lease_at(ip).is_some_and(|l| l.mac.is_none()),
                "the loser keeps the address from its offers"
            );
            drop(table);
            let rows = servers[0].1.inventory.load_leases().unwrap();
            let row = rows.iter().find(|l| l.ip == ip).unwrap();
            assert_eq!(row.mac, Some(winner));
        }
    }
}
