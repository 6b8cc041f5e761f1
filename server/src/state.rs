//! The one shared state every part receives (`Arc<AppState>`): validated config,
//! inventory, lease table, templates, profiles, counters.
//!
//! Owns start-up checks (data directory, admin token, installer files) and the map
//! from network addresses to nodes used to attribute TFTP, HTTP and syslog traffic.

use crate::config::Config;
use crate::dhcp::LeaseTable;
use crate::events::EventSink;
use crate::identity::{Claimed, Evidence, Verdict};
use crate::inventory::{Inventory, InventoryError, UnixMs, now_ms};
use crate::metrics::Metrics;
use crate::profiles::{Catalog, ProfileErrors};
use crate::render::{MirrorCtx, Templates};
use crate::tftp::tree::{Sessions, Tree};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tracing::{info, warn};

/// Why rackseed cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service {name} died: {reason}; rackseed stopped (systemd restarts it)")]
    ServiceDied { name: String, reason: String },
    #[error(transparent)]
    Journal(#[from] crate::dhcp::store::JournalError),
    #[error("cannot create data directory `{path}`")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or create the admin token `{path}`")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or create the BMC password key `{path}`")]
    Vault {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("profiles are invalid; no node can be assigned a broken profile")]
    Profiles(#[source] ProfileErrors),
    #[error(
        "rules: rule `{rule}` assigns profile `{profile}`, which is not loaded (loaded: {loaded}); fix its `profile` in [[rules]] or add the profile"
    )]
    RuleProfile {
        rule: String,
        profile: String,
        loaded: String,
    },
    #[error("installer file `{path}` is missing: {hint}")]
    Installer { path: String, hint: String },
    #[error(
        "no Debian mirror: none in this host's APT sources and none in the config; set [installer] mirror = \"http://<mirror>/debian\""
    )]
    NoMirror,
    #[error("cannot bind {what}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Templates(#[from] crate::render::RenderError),
    #[error(transparent)]
    Images(#[from] crate::images::ImageError),
    #[error("cannot set up the certificate authority")]
    Ca(#[from] crate::ca::CaError),
    #[error("cannot read this program to serve it as the node agent")]
    AgentBinary(#[source] std::io::Error),
}

/// The running binary, served to nodes as their agent.
#[derive(Clone, Debug)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// This program's path, digest and size.
pub fn agent_binary() -> Result<AgentBinary, StartError> {
    use sha2::Digest;
    use std::io::Read;
    let path = std::env::current_exe().map_err(StartError::AgentBinary)?;
    let mut f = std::fs::File::open(&path).map_err(StartError::AgentBinary)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(StartError::AgentBinary)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(AgentBinary {
        path,
        sha256: hex::encode(h.finalize()),
        size,
    })
}

/// The installer kernel and initrd nodes boot.
#[derive(Clone, Debug)]
pub struct InstallerFiles {
    /// The name in URLs (`/installer/{name}/linux`).
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Each supervised service: `None` while up, the reason once down (`/healthz`).
#[derive(Default, Debug)]
pub struct Health(RwLock<std::collections::BTreeMap<&'static str, Option<String>>>);

impl Health {
    /// Marks service `name` running.
    pub fn up(&self, name: &'static str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, None);
    }

    /// Marks service `name` down with `reason`.
    pub fn down(&self, name: &'static str, reason: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Some(reason.to_string()));
    }

    /// Every supervised service and, for one that is down, why.
    pub fn list(&self) -> Vec<(&'static str, Option<String>)> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

/// Shared state.
pub struct AppState {
    pub config: Config,
    pub inventory: Arc<Inventory>,
    pub events: EventSink,
    pub leases: Mutex<LeaseTable>,
    /// The lease journal, until the DHCP server takes it.
    pub lease_journal: Mutex<Option<crate::dhcp::store::LeaseJournal>>,
    pub metrics: Metrics,
    pub admin_token: String,
    pub templates: Templates,
    pub profiles: RwLock<Arc<Catalog>>,
    pub installer: InstallerFiles,
    pub tftp_tree: Tree,
    pub tftp_sessions: Arc<Sessions>,
    /// Reused buffers for file bodies sent over HTTP.
    pub file_chunks: Arc<crate::chunks::ChunkPool>,
    pub mirror: MirrorCtx,
    pub ca: crate::ca::Ca,
    /// `https://<advertise>:<port>` when the agent HTTPS listener is on.
    pub https_url: Option<String>,
    pub agent: AgentBinary,
    /// The installer's disk-controller drivers, when stored for its kernel: (directory,
    /// set).
    pub drivers: Option<(PathBuf, crate::images::drivers::DriverSet)>,
    /// Nodes stalled at the last stall check, by node id (see `serve::watch_stalls`).
    pub stalled: RwLock<HashMap<i64, crate::stall::Stall>>,
    peers: Mutex<HashMap<Ipv4Addr, (i64, UnixMs)>>,
    refusals: Mutex<HashMap<(i64, IpAddr), UnixMs>>,
    /// Each supervised service, up or down.
    pub health: Health,
    held_syslog: Mutex<crate::syslog::line::Hold>,
    /// Seals and opens BMC passwords (`<data_dir>/bmc.key`).
    pub vault: crate::power::vault::Vault,
    /// Nodes with a power request under way: one at a time per node.
    pub power_busy: Mutex<std::collections::HashSet<i64>>,
}

/// At most one timeline event per node and refused address in this time.
const REFUSAL_EVENT_MS: i64 = 60 * 1000;

/// Runs `f` (work that reads or writes the inventory, or other blocking work) on
/// tokio's blocking threads, so a slow write or an fsync never occupies an executor
/// worker that DHCP, TFTP and syslog need. A panic in `f` is re-raised here.
pub async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(Arc<AppState>) -> T + Send + 'static,
) -> T {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || f(st)).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The admin token in `data_dir/admin.token`, created (mode 0600) at first start.
pub fn admin_token(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join("admin.token");
    let err = |source| StartError::Token {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = crate::inventory::new_token();
    crate::durable::write_atomically(&path, format!("{token}\n").as_bytes(), 0o600).map_err(err)?;
    info!(path = %path.display(), "admin token created");
    Ok(token)
}

/// The mirror nodes install from: the config's, else the host's APT sources.
pub fn resolve_mirror(cfg: &Config) -> Result<MirrorCtx, StartError> {
    let uri = match &cfg.installer.mirror {
        Some(m) => m.clone(),
        None => crate::aptsources::debian_mirror(&crate::aptsources::host_sources(Path::new("/")))
            .ok_or(StartError::NoMirror)?,
    };
    MirrorCtx::from_uri(&uri, &cfg.installer.suite, cfg.installer.proxy.as_deref())
        .ok_or(StartError::NoMirror)
}

/// The installer files the config names, checked to exist.
pub fn resolve_installer(cfg: &Config) -> Result<InstallerFiles, StartError> {
    if let Some(name) = &cfg.installer.image {
        let img = crate::images::Store::open(&cfg.images.store)?.image(name)?;
        return Ok(InstallerFiles {
            name: name.clone(),
            kernel: img.kernel,
            initrd: img.initrd,
        });
    }
    let kernel = cfg.installer.dir.join("linux");
    let initrd = cfg.installer.dir.join("initrd.gz");
    for p in [&kernel, &initrd] {
        if !p.is_file() {
            return Err(StartError::Installer {
                path: p.display().to_string(),
                hint: "install the `debian-installer-12-netboot-amd64` package, or set [installer] dir or image".into(),
            });
        }
    }
    Ok(InstallerFiles {
        name: "default".into(),
        kernel,
        initrd,
    })
}

impl AppState {
    /// Opens everything rackseed needs. Must run inside a tokio runtime.
    pub fn open(config: Config, profiles: Catalog) -> Result<AppState, StartError> {
        for r in &config.rules {
            if profiles.get(&r.profile).is_none() {
                return Err(StartError::RuleProfile {
                    rule: r.name.clone(),
                    profile: r.profile.clone(),
                    loaded: profiles.names().collect::<Vec<_>>().join(", "),
                });
            }
        }
        let dir = &config.server.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let admin_token = admin_token(dir)?;
        let vault = crate::power::vault::Vault::open(dir).map_err(|source| StartError::Vault {
            path: dir.join("bmc.key").display().to_string(),
            source,
        })?;
        let location = config.inventory_location();
        let inventory = Arc::new(Inventory::open_at(&location)?);
        info!(inventory = %location, "inventory opened");
        // Replayed into the inventory before the leases are read from it.
        let lease_journal = crate::dhcp::store::LeaseJournal::open(dir, &inventory)?;
        let mut leases = LeaseTable::from_rows(inventory.load_leases()?);
        leases.set_reservations(inventory.reservations()?);
        info!(leases = leases.len(), "leases loaded");
        let installer = resolve_installer(&config)?;
        let drivers = crate::images::kernel::initrd_kernel_version(&installer.initrd)
            .ok()
            .and_then(|k| {
                let set = crate::images::drivers::stored(&config.images.store, &k)?;
                Some((
                    crate::images::drivers::dir_for(&config.images.store, &k),
                    set,
                ))
            });
        match &drivers {
            Some((_, set)) => info!(kernel = %set.kernel, "installer disk drivers stored"),
            None => info!(
                "no installer disk drivers stored (rackseed image drivers); SATA and NVMe disks appear to the installer only after it loads its components"
            ),
        }
        let mirror = resolve_mirror(&config)?;
        let templates = Templates::embedded();
        let tftp_tree = Tree::from_config(
            &config,
            &installer.kernel,
            &installer.initrd,
            config.tftp.extra_dir.clone(),
        );
        for (name, path) in tftp_tree.names() {
            if !path.is_file() {
                warn!(name = %name, path = %path.display(), "TFTP tree entry is missing; clients asking for it get `file not found`");
            }
        }
        let events = EventSink::start(inventory.clone());
        let ca = crate::ca::Ca::open(&dir.join("ca"))?;
        let https_url = config
            .enroll
            .https
            .map(|a| format!("https://{}:{}", config.server.advertise, a.port()));
        let agent = agent_binary()?;
        crate::inventory::groups::sync_config_groups(&inventory, &config.groups, now_ms())?;
        Ok(AppState {
            ca,
            https_url,
            agent,
            config,
            inventory,
            events,
            leases: Mutex::new(leases),
            lease_journal: Mutex::new(Some(lease_journal)),
            metrics: Metrics::default(),
            admin_token,
            templates,
            profiles: RwLock::new(Arc::new(profiles)),
            installer,
            tftp_tree,
            tftp_sessions: Arc::default(),
            file_chunks: Arc::default(),
            mirror,
            stalled: RwLock::default(),
            drivers,
            peers: Mutex::default(),
            refusals: Mutex::default(),
            health: Health::default(),
            held_syslog: Mutex::default(),
            vault,
            power_busy: Mutex::default(),
        })
    }

    /// Whether node `id` was stalled at the last stall check: (step, message).
    pub fn stall_of(&self, id: i64) -> Option<(String, String)> {
        self.stalled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|s| (s.step.to_string(), s.message.clone()))
    }

    /// The current profile catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.profiles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the lease table's reservations after nodes changed.
    pub fn reload_reservations(&self) {
        match self.inventory.reservations() {
            Ok(r) => self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_reservations(r),
            Err(e) => warn!(error = %crate::error_chain(&e), "reservations not reloaded"),
        }
    }

    /// Remembers that `ip` is node `id` (from a DHCP reply or an authenticated HTTP
    /// request), and files any syslog lines held for that address.
    pub fn note_peer(&self, ip: Ipv4Addr, id: i64) {
        let now = now_ms();
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.len() > 65_536 {
                peers.retain(|_, (_, at)| now - *at < 24 * 3600 * 1000);
            }
            peers.insert(ip, (id, now));
        }
        let held = self
            .held_syslog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(ip, now);
        for text in held {
            self.events.emit(id, "syslog", text);
        }
    }

    /// The node an address belongs to: the node whose MAC holds rackseed's live lease on
    /// it, else the node seen using it in its own DHCP/PXE exchange. (Syslog and TFTP
    /// attribution; token checks use [`AppState::judge_caller`].)
    pub fn node_for_ip(&self, ip: IpAddr) -> Option<i64> {
        match self.lease_holder(ip) {
            Some(mac) => self.node_of_holder(ip, mac),
            None => self.seen_on(ip),
        }
    }

    /// The MAC holding rackseed's live lease on `ip`, if any (memory only).
    fn lease_holder(&self, ip: IpAddr) -> Option<crate::mac::MacAddr> {
        let IpAddr::V4(v4) = ip else { return None };
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .holder_of(v4, now_ms())
    }

    /// The node of lease holder `mac` on `ip` (an inventory read), else the node seen
    /// on `ip`.
    fn node_of_holder(&self, ip: IpAddr, mac: crate::mac::MacAddr) -> Option<i64> {
        match self.inventory.node_by_mac(mac) {
            Ok(Some(node)) => Some(node.id),
            _ => self.seen_on(ip),
        }
    }

    /// [`AppState::node_for_ip`] for async callers: the lease table and the seen
    /// addresses are memory; only a lease holder's node is looked up in the inventory,
    /// on a blocking thread, so a slow inventory never stalls the executor.
    pub async fn node_for_ip_async(self: &Arc<Self>, ip: IpAddr) -> Option<i64> {
        match self.lease_holder(ip) {
            None => self.seen_on(ip),
            Some(mac) => blocking(self, move |st| st.node_of_holder(ip, mac)).await,
        }
    }

    /// Every group with its members' replication health (see
    /// [`crate::groups::health`]), from the agents' reports on the timelines.
    pub fn replication_health(
        &self,
    ) -> Result<
        Vec<(
            crate::groups::Group,
            Vec<crate::groups::health::MemberHealth>,
        )>,
        crate::inventory::InventoryError,
    > {
        use crate::groups::health::{LAG_EVENT, Reports, member_health};
        let inv = &self.inventory;
        let now = now_ms();
        let mut out = Vec::new();
        for g in crate::inventory::groups::list(inv)? {
            let members = crate::inventory::groups::members(inv, &g)?;
            let active = members
                .iter()
                .filter(|m| m.state == crate::node::NodeState::Enrolled)
                .count();
            let mut health = Vec::with_capacity(members.len());
            for m in &members {
                let member_since = if m.state == crate::node::NodeState::Enrolled {
                    inv.state_since(m.node_id)?
                } else {
                    None
                };
                let latest = |kind: &str| inv.latest_event(m.node_id, &[kind], false);
                let r = Reports {
                    last_ok: latest("replication")?.map(|e| e.at),
                    last_failed: latest("replication_failed")?.map(|e| (e.at, e.message)),
                    member_since,
                    alarmed_at: latest(LAG_EVENT)?.map(|e| e.at),
                };
                health.push(member_health(&g, m, active, &r, now));
            }
            out.push((g, health));
        }
        Ok(out)
    }

    fn seen_on(&self, ip: IpAddr) -> Option<i64> {
        let IpAddr::V4(ip) = ip else { return None };
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .map(|(id, _)| *id)
    }

    /// The stored installer driver packages, in dependency order (none when
    /// `rackseed image drivers` stored none for the installer's kernel).
    pub fn driver_packages(&self) -> Vec<String> {
        let mut drivers: Vec<String> = self
            .drivers
            .as_ref()
            .map(|(_, set)| set.packages.keys().cloned().collect())
            .unwrap_or_default();
        drivers.sort_by_key(|p| {
            crate::images::drivers::DRIVER_PACKAGES
                .iter()
                .position(|d| d == p)
                .unwrap_or(usize::MAX)
        });
        drivers
    }

    /// What is known about a caller at `peer`, and whether it is `node`.
    pub fn judge_caller(&self, node: &Claimed, peer: IpAddr) -> (Evidence, Verdict) {
        let lease_mac = self.lease_holder(peer);
        let evidence = Evidence::Address {
            addr: peer,
            lease_mac,
            seen_node: self.seen_on(peer),
        };
        (evidence, crate::identity::judge(node, &evidence))
    }

    /// Records a refused request for node `node_id`'s token-protected files: counted
    /// always, logged, and put on the node's timeline at most once a minute per address
    /// (so a flood of refusals cannot flood the timeline).
    pub fn note_refusal(&self, node_id: i64, what: &str, evidence: &Evidence, verdict: Verdict) {
        self.metrics.token_refused.inc();
        let Evidence::Address { addr, .. } = *evidence;
        let text = crate::identity::refusal_text(what, evidence, verdict);
        warn!(node = node_id, peer = %addr, what, "token request from another address refused");
        let now = now_ms();
        let fresh = {
            let mut seen = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > 4096 {
                seen.retain(|_, at| now - *at < REFUSAL_EVENT_MS);
            }
            match seen.get(&(node_id, addr)) {
                Some(at) if now - *at < REFUSAL_EVENT_MS => false,
                _ => {
                    seen.insert((node_id, addr), now);
                    true
                }
            }
        };
        if fresh {
            self.events.emit(node_id, "refused", text);
        }
    }

    /// Holds a syslog line from an address no node is known by yet.
    pub fn hold_syslog(&self, ip: Ipv4Addr, text: String) {
        self.held_syslog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ip, text, now_ms());
    }
}
