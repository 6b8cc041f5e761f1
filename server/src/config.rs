//! Domain settings: one TOML file, read into raw serde structs and converted into
//! validated types.
//!
//! Owns the file format, its defaults and every check on it. Everything after loading
//! sees only [`Config`]; nothing else parses TOML. Does not open sockets or files other
//! than the config itself (path existence checks of boot files are in `rackseed check`).

use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config that cannot be used, naming the file, the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// How the DHCP part answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Hands out addresses from pools and reservations, with boot information.
    Authoritative,
    /// ProxyDHCP: boot information only, beside a site DHCP server (ports 67 and 4011).
    Proxy,
    /// No DHCP at all (another server points nodes at rackseed).
    Disabled,
}

/// What happens to MAC addresses rackseed does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// Record PXE-booting unknown machines as `discovered` nodes and answer them.
    Discover,
    /// Do not answer unknown machines at all.
    Ignore,
    /// Record them as `discovered` and boot them into the installer's inventory mode:
    /// they report their hardware, become `commissioned`, and `[[rules]]` assign them.
    Commission,
}

/// What a commissioned machine that no rule assigned does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterCommission {
    /// Power off (until a BMC or a technician powers it on again).
    Poweroff,
    /// Stay in the inventory boot, asking rackseed again every `commission.poll`, and
    /// reboot into the installer once an operator (or a new rule) assigns it.
    Wait,
}

/// The inventory boot of unknown machines (`dhcp.unknown = "commission"`).
#[derive(Clone, Debug)]
pub struct CommissionConfig {
    pub after: AfterCommission,
    /// How long the inventory boot listens for LLDP frames on every NIC.
    pub lldp_wait: Duration,
    /// How often a waiting machine asks whether it was assigned.
    pub poll: Duration,
}

/// When a client that already runs iPXE still gets rackseed's own iPXE binary first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainloadPolicy {
    /// Only firmware PXE clients get an iPXE binary; an iPXE client gets its script.
    Firmware,
    /// Every PXE boot goes through rackseed's iPXE binary once; the next iPXE request
    /// from the same MAC within `chainload_window` gets the script (no loops).
    AlwaysOnce,
}

/// Which boot chain x86-64 UEFI clients get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EfiBinary {
    /// `ipxe.efi`: iPXE with its own NIC drivers (unsigned: refused by Secure Boot).
    Ipxe,
    /// `snponly.efi`: iPXE on the firmware's SNP driver (unsigned).
    Snponly,
    /// Debian's signed chain from the netboot package: the Microsoft-signed shim
    /// (`bootnetx64.efi`), Debian's signed network GRUB, the signed installer kernel.
    /// Boots with Secure Boot on or off. Needs authoritative DHCP: GRUB takes its
    /// configuration only from the DHCP server's ACK, not from a ProxyDHCP offer.
    Shim,
}

/// The validated configuration every part receives.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from, for messages (`<embedded>` for the built-in defaults).
    pub source: String,
    pub server: ServerConfig,
    pub dhcp: DhcpConfig,
    pub tftp: TftpConfig,
    pub boot: BootConfig,
    pub installer: InstallerConfig,
    pub profiles: ProfilesConfig,
    pub enroll: EnrollConfig,
    pub groups: Vec<GroupConfig>,
    pub images: ImagesConfig,
    /// How long each step may take before a node gets a `stalled` event.
    pub stall: crate::stall::StallLimits,
    pub commission: CommissionConfig,
    /// Commissioning rules, in order (`[[rules]]`).
    pub rules: Vec<crate::commission::rules::Rule>,
    /// Where the inventory lives (`[inventory]`).
    pub inventory: InventoryConfig,
}

/// `[inventory]`: SQLite in the data directory (the default), or PostgreSQL.
#[derive(Clone, Debug, Default)]
pub struct InventoryConfig {
    /// `inventory.url`: a PostgreSQL database instead of `<data_dir>/inventory.db`.
    pub url: Option<PostgresUrl>,
}

impl Config {
    /// Where the inventory is: `inventory.url`, or `inventory.db` in the data directory.
    pub fn inventory_location(&self) -> InventoryLocation {
        match &self.inventory.url {
            Some(u) => InventoryLocation::Postgres(u.clone()),
            None => InventoryLocation::Sqlite(self.server.data_dir.join("inventory.db")),
        }
    }
}

/// Where an inventory is. Shown (`Display`) as the file's path or the URL without its
/// password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventoryLocation {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

impl std::fmt::Display for InventoryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InventoryLocation::Sqlite(p) => write!(f, "{}", p.display()),
            InventoryLocation::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// A PostgreSQL connection URL (`postgres://user[:password]@host[:port]/db[?…]`, the
/// host may be a socket directory written percent-encoded, `%2Frun%2Fpostgresql`).
/// `Display` and `Debug` replace the password with `***`; only [`PostgresUrl::secret`]
/// gives the URL as written, for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    shown: String,
    host: String,
}

impl PostgresUrl {
    /// Parses a URL; the error says what is wrong (never repeating a password).
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        else {
            return Err("must start with `postgres://` or `postgresql://` (e.g. \"postgres://rackseed@db.example/rackseed\"); leave `inventory.url` out for the SQLite file in the data directory".into());
        };
        let scheme = &url[..url.len() - rest.len()];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let shown_user = userinfo.map(|u| match u.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            None => format!("{u}@"),
        });
        let redacted_tail = tail
            .split_once('?')
            .map(|(path, query)| {
                let q: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{path}?{}", q.join("&"))
            })
            .unwrap_or_else(|| tail.to_string());
        let shown = format!(
            "{scheme}{}{hostport}{redacted_tail}",
            shown_user.unwrap_or_default()
        );
        let host_enc = if hostport.starts_with('[') {
            hostport
                .split_once(']')
                .map(|(h, _)| &h[1..])
                .unwrap_or(hostport)
        } else {
            hostport
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(hostport)
        };
        let host = percent_decode(host_enc);
        let parsed: Result<postgres::Config, _> = url.parse();
        if let Err(e) = parsed {
            return Err(format!("`{shown}` is not a PostgreSQL URL: {e}"));
        }
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        Ok(PostgresUrl {
            url: url.to_string(),
            shown,
            host,
        })
    }

    /// The URL as written, password included: for connecting only, never for a log.
    pub fn secret(&self) -> &str {
        &self.url
    }

    /// The host (or socket directory) the URL names.
    pub fn host(&self) -> &str {
        &self.host
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The address nodes use to reach rackseed (HTTP, TFTP, syslog, DHCP server id).
    pub advertise: Ipv4Addr,
    pub http: SocketAddr,
    /// The admin API's own listener (`/api/…`): loopback by default, a management
    /// address when set; never the listener nodes use.
    pub admin: SocketAddr,
    pub tftp: SocketAddr,
    pub syslog: SocketAddr,
    pub data_dir: PathBuf,
    /// Base URL nodes use for HTTP, built from `advertise` and the HTTP port.
    pub base_url: String,
    /// Maximum HTTP request body in bytes (events, enrollment, API).
    pub max_body: usize,
    /// Open HTTP connections at most; more are closed at once (counted).
    pub max_connections: usize,
    /// A client must send a request's headers within this time.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this time.
    pub idle_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// Interfaces to answer on; empty means every interface.
    pub interfaces: Vec<String>,
    pub port: u16,
    pub proxy_port: u16,
    pub unknown: UnknownPolicy,
    /// At most this many `discovered` nodes exist; further unknown machines are ignored.
    pub discover_max: usize,
    /// At most this many new `discovered` nodes a minute.
    pub discover_per_minute: usize,
    pub lease_time: Duration,
    pub offer_hold: Duration,
    pub decline_hold: Duration,
    pub chainload: ChainloadPolicy,
    pub chainload_window: Duration,
    pub subnets: Vec<Subnet>,
}

/// One address range rackseed answers for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Net,
    /// Set for directly attached subnets; relayed subnets are found by giaddr.
    pub interface: Option<String>,
    /// First and last address of the dynamic pool, inclusive (reservations may be outside).
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct TftpConfig {
    pub max_sessions: usize,
    /// Transfers in flight from one address.
    pub max_sessions_per_client: usize,
    /// A directory whose files are also served (symlinks out of it are refused).
    pub extra_dir: Option<PathBuf>,
    /// Largest `blksize` granted (default 8192).
    pub block_size_limit: u16,
    /// Largest `windowsize` granted (default 32); blksize × windowsize is at most 1 MiB.
    pub window_size_limit: u16,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct BootConfig {
    pub ipxe_bios: PathBuf,
    pub ipxe_efi: PathBuf,
    pub ipxe_snponly: PathBuf,
    pub efi_binary: EfiBinary,
    pub console: Option<String>,
    pub token_ttl: Duration,
    pub retry_interval: Duration,
    pub kernel_args: Vec<String>,
    pub installer_interface: InstallerInterface,
}

/// How the installer's kernel command line settles which NIC it configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallerInterface {
    /// `BOOTIF=<mac>` and `interface=auto`: netcfg takes the NIC named by BOOTIF (the
    /// boot NIC, or the node's `installer_nic`) without asking, whatever its position.
    Bootif,
    /// Leave the choice to the installer, which asks on the console when the machine
    /// has several NICs (for tests of stall detection).
    Ask,
}

#[derive(Clone, Debug)]
pub struct InstallerConfig {
    /// Name of a stored image (see `rackseed image`), used when set.
    pub image: Option<String>,
    /// Directory holding `linux` and `initrd.gz` when no image is named.
    pub dir: PathBuf,
    pub suite: String,
    /// Debian mirror base URI, e.g. `http://mirror.example/debian`.
    pub mirror: Option<String>,
    pub proxy: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ProfilesConfig {
    pub dir: PathBuf,
    pub default: Option<String>,
}

#[derive(Clone, Debug)]
pub struct EnrollConfig {
    pub token_ttl: Duration,
    /// HTTPS listener for agents holding a node certificate.
    pub https: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub name: String,
    pub min_members: u32,
    pub failure_domain: Option<String>,
    pub interval: Duration,
    pub retention: String,
    pub datasets: Vec<String>,
    pub replication_network: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ImagesConfig {
    pub store: PathBuf,
    pub keyring: PathBuf,
    pub manifests: PathBuf,
    pub proxy: Option<String>,
}

// ---------- raw file format ----------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    dhcp: RawDhcp,
    #[serde(default)]
    tftp: RawTftp,
    #[serde(default)]
    boot: RawBoot,
    #[serde(default)]
    installer: RawInstaller,
    #[serde(default)]
    profiles: RawProfiles,
    #[serde(default)]
    enroll: RawEnroll,
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    images: RawImages,
    #[serde(default)]
    stall: RawStall,
    #[serde(default)]
    commission: RawCommission,
    #[serde(default)]
    rules: Vec<crate::commission::rules::Rule>,
    #[serde(default)]
    inventory: RawInventory,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCommission {
    after: Option<AfterCommission>,
    lldp_wait: Option<String>,
    poll: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStall {
    boot: Option<String>,
    installer: Option<String>,
    install: Option<String>,
    first_boot: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    advertise: Option<Ipv4Addr>,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    tftp: Option<SocketAddr>,
    syslog: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    max_body: Option<usize>,
    max_connections: Option<usize>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDhcp {
    mode: Option<DhcpMode>,
    #[serde(default)]
    interfaces: Vec<String>,
    port: Option<u16>,
    proxy_port: Option<u16>,
    unknown: Option<UnknownPolicy>,
    discover_max: Option<usize>,
    discover_per_minute: Option<usize>,
    lease_time: Option<String>,
    offer_hold: Option<String>,
    decline_hold: Option<String>,
    chainload: Option<ChainloadPolicy>,
    chainload_window: Option<String>,
    #[serde(default)]
    subnets: Vec<RawSubnet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    network: String,
    interface: Option<String>,
    range: Option<String>,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    domain: Option<String>,
    lease_time: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTftp {
    max_sessions: Option<usize>,
    max_sessions_per_client: Option<usize>,
    extra_dir: Option<PathBuf>,
    block_size_limit: Option<u16>,
    window_size_limit: Option<u16>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    ipxe_bios: Option<PathBuf>,
    ipxe_efi: Option<PathBuf>,
    ipxe_snponly: Option<PathBuf>,
    efi_binary: Option<EfiBinary>,
    console: Option<String>,
    token_ttl: Option<String>,
    retry_interval: Option<String>,
    #[serde(default)]
    kernel_args: Vec<String>,
    installer_interface: Option<InstallerInterface>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInstaller {
    image: Option<String>,
    dir: Option<PathBuf>,
    suite: Option<String>,
    mirror: Option<String>,
    proxy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProfiles {
    dir: Option<PathBuf>,
    default: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEnroll {
    token_ttl: Option<String>,
    https: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    min_members: Option<u32>,
    failure_domain: Option<String>,
    interval: Option<String>,
    retention: Option<String>,
    #[serde(default)]
    datasets: Vec<String>,
    replication_network: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImages {
    store: Option<PathBuf>,
    keyring: Option<PathBuf>,
    manifests: Option<PathBuf>,
    proxy: Option<String>,
}

/// The directory of the netboot installer in Debian's `debian-installer-12-netboot-amd64`.
pub const PACKAGE_INSTALLER_DIR: &str =
    "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64";

/// The built-in defaults, used when no config file is given: a proxyDHCP appliance on
/// every interface, serving Debian's `ipxe` and netboot installer packages.
pub const EMBEDDED: &str = include_str!("../../examples/default.toml");

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The built-in defaults.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED, "<embedded>")
    }

    /// Validates config text; `source` names it in errors. A missing
    /// `server.advertise` is detected from this host's interfaces.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, source, &crate::netif::detect_advertise)
    }

    /// Like [`Config::parse`], with the advertise-address detection given (for tests).
    pub fn parse_with(
        text: &str,
        source: &str,
        detect: &dyn Fn(&[String]) -> Option<Ipv4Addr>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Validator { source, detect }.config(raw)
    }

    /// The subnet a directly attached interface serves.
    pub fn subnet_for_interface(&self, iface: &str) -> Option<&Subnet> {
        self.dhcp
            .subnets
            .iter()
            .find(|s| s.interface.as_deref() == Some(iface))
    }
}

struct Validator<'a> {
    source: &'a str,
    detect: &'a dyn Fn(&[String]) -> Option<Ipv4Addr>,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(&v).map_err(|e| {
                self.err(
                    key,
                    format!("`{v}` is not a duration ({e}); write e.g. \"30s\", \"15m\" or \"4h\""),
                )
            }),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let advertise = match raw.server.advertise {
            Some(a) => a,
            None => (self.detect)(&raw.dhcp.interfaces).ok_or_else(|| {
                self.err("server.advertise", "missing and not detectable from this host's interfaces: set the IPv4 address nodes use to reach rackseed on the provisioning network")
            })?,
        };
        if advertise.is_unspecified() || advertise.is_broadcast() {
            return Err(self.err("server.advertise", format!("{advertise} cannot be reached by nodes; use this host's address on the provisioning network")));
        }
        let http = raw
            .server
            .http
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        let admin = raw
            .server
            .admin
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
        if admin.port() == http.port()
            && (admin.ip() == http.ip()
                || admin.ip().is_unspecified()
                || http.ip().is_unspecified())
        {
            return Err(self.err(
                "server.admin",
                format!("{admin} overlaps server.http {http}: the admin API needs its own listener (default 127.0.0.1:8081)"),
            ));
        }
        let server = ServerConfig {
            advertise,
            http,
            admin,
            tftp: raw
                .server
                .tftp
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 69))),
            syslog: raw
                .server
                .syslog
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 514))),
            data_dir: raw
                .server
                .data_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/rackseed")),
            base_url: if http.port() == 80 {
                format!("http://{advertise}")
            } else {
                format!("http://{advertise}:{}", http.port())
            },
            max_body: raw.server.max_body.unwrap_or(1 << 20),
            max_connections: raw.server.max_connections.unwrap_or(1024),
            header_timeout: self.duration(
                "server.header_timeout",
                raw.server.header_timeout.clone(),
                Duration::from_secs(10),
            )?,
            idle_timeout: self.duration(
                "server.idle_timeout",
                raw.server.idle_timeout.clone(),
                Duration::from_secs(60),
            )?,
        };
        if server.max_connections == 0 {
            return Err(self.err("server.max_connections", "must be at least 1"));
        }

        let dhcp = self.dhcp(raw.dhcp)?;
        let tftp = TftpConfig {
            max_sessions: raw.tftp.max_sessions.unwrap_or(512),
            max_sessions_per_client: raw.tftp.max_sessions_per_client.unwrap_or(8),
            extra_dir: raw.tftp.extra_dir,
            block_size_limit: raw.tftp.block_size_limit.unwrap_or(8192),
            window_size_limit: raw.tftp.window_size_limit.unwrap_or(32),
            timeout: self.duration("tftp.timeout", raw.tftp.timeout, Duration::from_secs(3))?,
        };
        if tftp.max_sessions == 0 {
            return Err(self.err("tftp.max_sessions", "must be at least 1"));
        }
        if tftp.max_sessions_per_client == 0 {
            return Err(self.err("tftp.max_sessions_per_client", "must be at least 1"));
        }
        if !(8..=65464).contains(&tftp.block_size_limit) {
            return Err(self.err(
                "tftp.block_size_limit",
                format!("{} is outside 8..=65464 (RFC 2348)", tftp.block_size_limit),
            ));
        }
        if tftp.window_size_limit == 0 {
            return Err(self.err("tftp.window_size_limit", "must be at least 1 (RFC 7440)"));
        }
        let in_flight = usize::from(tftp.block_size_limit) * usize::from(tftp.window_size_limit);
        if in_flight > 1 << 20 {
            return Err(self.err(
                "tftp.window_size_limit",
                format!(
                    "block_size_limit × window_size_limit is {in_flight} bytes a session holds in flight; keep it at most 1 MiB"
                ),
            ));
        }
        if tftp.timeout > Duration::from_secs(30) {
            return Err(self.err(
                "tftp.timeout",
                "must be at most 30s (a dead client holds its slot this long per retry)",
            ));
        }

        let boot = BootConfig {
            ipxe_bios: raw
                .boot
                .ipxe_bios
                .unwrap_or_else(|| "/usr/lib/ipxe/undionly.kpxe".into()),
            ipxe_efi: raw
                .boot
                .ipxe_efi
                .unwrap_or_else(|| "/usr/lib/ipxe/ipxe.efi".into()),
            ipxe_snponly: raw
                .boot
                .ipxe_snponly
                .unwrap_or_else(|| "/usr/lib/ipxe/snponly.efi".into()),
            // The signed chain boots whether Secure Boot is on or off, and a PXE request
            // does not say which; GRUB cannot boot beside another DHCP server, so
            // ProxyDHCP keeps iPXE.
            efi_binary: raw
                .boot
                .efi_binary
                .unwrap_or(if dhcp.mode == DhcpMode::Authoritative {
                    EfiBinary::Shim
                } else {
                    EfiBinary::Ipxe
                }),
            console: raw.boot.console.filter(|c| !c.is_empty()),
            token_ttl: self.duration(
                "boot.token_ttl",
                raw.boot.token_ttl,
                Duration::from_secs(4 * 3600),
            )?,
            retry_interval: self.duration(
                "boot.retry_interval",
                raw.boot.retry_interval,
                Duration::from_secs(30),
            )?,
            kernel_args: raw.boot.kernel_args,
            installer_interface: raw
                .boot
                .installer_interface
                .unwrap_or(InstallerInterface::Bootif),
        };
        if boot.efi_binary == EfiBinary::Shim && dhcp.mode == DhcpMode::Proxy {
            return Err(self.err(
                "boot.efi_binary",
                "\"shim\" (the signed shim → GRUB chain) needs dhcp.mode = \"authoritative\": GRUB takes its boot configuration only from the DHCP server's ACK and ignores a ProxyDHCP offer, so it would never boot; use \"ipxe\" or \"snponly\" (with Secure Boot off), or make rackseed the DHCP server of the provisioning network",
            ));
        }
        for (i, arg) in boot.kernel_args.iter().enumerate() {
            if arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.err(
                    format!("boot.kernel_args[{i}]"),
                    "one argument per entry, without spaces",
                ));
            }
        }

        let installer = InstallerConfig {
            image: raw.installer.image,
            dir: raw
                .installer
                .dir
                .unwrap_or_else(|| PACKAGE_INSTALLER_DIR.into()),
            suite: raw.installer.suite.unwrap_or_else(|| "bookworm".into()),
            mirror: raw
                .installer
                .mirror
                .map(|m| m.trim_end_matches('/').to_string()),
            proxy: raw.installer.proxy,
        };
        if let Some(m) = &installer.mirror
            && !(m.starts_with("http://") || m.starts_with("https://"))
        {
            return Err(self.err(
                "installer.mirror",
                format!("`{m}` must be an http:// or https:// URL such as http://<mirror>/debian"),
            ));
        }

        let profiles = ProfilesConfig {
            dir: raw
                .profiles
                .dir
                .unwrap_or_else(|| "/etc/rackseed/profiles".into()),
            default: raw.profiles.default,
        };
        // Enrollment tokens are short-lived (issued when the late command runs, used
        // at first boot); the agent HTTPS API is on unless a config turns it off.
        let enroll = EnrollConfig {
            token_ttl: self.duration(
                "enroll.token_ttl",
                raw.enroll.token_ttl,
                Duration::from_secs(2 * 3600),
            )?,
            https: match raw.enroll.https.as_deref() {
                None => Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
                Some("off") => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    self.err(
                        "enroll.https",
                        format!("`{a}` is not an address like \"0.0.0.0:8443\" (or \"off\")"),
                    )
                })?),
            },
        };

        let mut groups = Vec::new();
        for (i, g) in raw.groups.into_iter().enumerate() {
            let key = format!("groups[{i}]");
            if !valid_name(&g.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!(
                        "`{}` is not a valid group name (letters, digits, `-`, `_`)",
                        g.name
                    ),
                ));
            }
            if groups.iter().any(|x: &GroupConfig| x.name == g.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("group `{}` is defined twice", g.name),
                ));
            }
            for (j, d) in g.datasets.iter().enumerate() {
                if !valid_dataset(d) {
                    return Err(self.err(
                        format!("{key}.datasets[{j}]"),
                        format!(
                            "`{}` is not a dataset name like tank/data",
                            d.escape_debug()
                        ),
                    ));
                }
            }
            if let Some(r) = &g.retention {
                check_retention(r).map_err(|e| {
                    self.err(
                        format!("{key}.retention"),
                        e.trim_start_matches("retention: ").to_string(),
                    )
                })?;
            }
            if let Some(fd) = &g.failure_domain
                && !valid_name(fd)
            {
                return Err(self.err(
                    format!("{key}.failure_domain"),
                    format!(
                        "`{}` is not a label name (letters, digits, `-`, `_`)",
                        fd.escape_debug()
                    ),
                ));
            }
            if let Some(n) = &g.replication_network
                && !valid_interface(n)
            {
                return Err(self.err(
                    format!("{key}.replication_network"),
                    format!("`{}` is not an interface name", n.escape_debug()),
                ));
            }
            groups.push(GroupConfig {
                min_members: g.min_members.unwrap_or(2),
                failure_domain: g.failure_domain,
                interval: self.duration(
                    &format!("{key}.interval"),
                    g.interval,
                    Duration::from_secs(15 * 60),
                )?,
                retention: g.retention.unwrap_or_else(|| "hourly=24,daily=7".into()),
                datasets: g.datasets,
                replication_network: g.replication_network,
                name: g.name,
            });
        }

        let images = ImagesConfig {
            store: raw
                .images
                .store
                .unwrap_or_else(|| server.data_dir.join("images")),
            keyring: raw
                .images
                .keyring
                .unwrap_or_else(|| "/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            manifests: raw
                .images
                .manifests
                .unwrap_or_else(|| "/etc/rackseed/images".into()),
            proxy: raw.images.proxy,
        };

        let d = crate::stall::StallLimits::default();
        let stall = crate::stall::StallLimits {
            boot: self.duration("stall.boot", raw.stall.boot, d.boot)?,
            installer: self.duration("stall.installer", raw.stall.installer, d.installer)?,
            install: self.duration("stall.install", raw.stall.install, d.install)?,
            first_boot: self.duration("stall.first_boot", raw.stall.first_boot, d.first_boot)?,
        };
        for (key, v) in [
            ("stall.boot", stall.boot),
            ("stall.installer", stall.installer),
            ("stall.install", stall.install),
            ("stall.first_boot", stall.first_boot),
        ] {
            if v < Duration::from_secs(10) {
                return Err(self.err(key, "must be at least 10s"));
            }
        }

        let commission = CommissionConfig {
            after: raw.commission.after.unwrap_or(AfterCommission::Poweroff),
            lldp_wait: self.duration(
                "commission.lldp_wait",
                raw.commission.lldp_wait,
                Duration::from_secs(35),
            )?,
            poll: self.duration(
                "commission.poll",
                raw.commission.poll,
                Duration::from_secs(30),
            )?,
        };
        if commission.lldp_wait > Duration::from_secs(300) {
            return Err(self.err("commission.lldp_wait", "must be at most 300s"));
        }
        if commission.poll < Duration::from_secs(1) {
            return Err(self.err("commission.poll", "must be at least 1s"));
        }
        if let Err(errs) = crate::commission::rules::validate(&raw.rules) {
            return Err(self.err("rules", errs.join("; ")));
        }

        Ok(Config {
            source: self.source.to_string(),
            server,
            dhcp,
            tftp,
            boot,
            installer,
            profiles,
            enroll,
            groups,
            images,
            stall,
            commission,
            rules: raw.rules,
            inventory: InventoryConfig {
                url: raw
                    .inventory
                    .url
                    .map(|u| PostgresUrl::parse(&u).map_err(|m| self.err("inventory.url", m)))
                    .transpose()?,
            },
        })
    }

    fn dhcp(&self, raw: RawDhcp) -> Result<DhcpConfig, ConfigError> {
        let mode = raw.mode.unwrap_or(DhcpMode::Proxy);
        let mut subnets: Vec<Subnet> = Vec::new();
        for (i, s) in raw.subnets.into_iter().enumerate() {
            let key = format!("dhcp.subnets[{i}]");
            let network: Ipv4Net = s.network.parse().map_err(|_| {
                self.err(
                    format!("{key}.network"),
                    format!("`{}` is not an IPv4 network like 192.0.2.0/24", s.network),
                )
            })?;
            if network.trunc() != network {
                return Err(self.err(
                    format!("{key}.network"),
                    format!(
                        "`{network}` has host bits set; did you mean {}?",
                        network.trunc()
                    ),
                ));
            }
            let range = match s.range {
                None => None,
                Some(r) => {
                    let (a, b) = r.split_once('-').ok_or_else(|| {
                        self.err(
                            format!("{key}.range"),
                            format!("`{r}` must be `FIRST-LAST`, e.g. 192.0.2.100-192.0.2.199"),
                        )
                    })?;
                    let parse = |x: &str| {
                        x.trim().parse::<Ipv4Addr>().map_err(|_| {
                            self.err(
                                format!("{key}.range"),
                                format!("`{x}` is not an IPv4 address"),
                            )
                        })
                    };
                    let (a, b) = (parse(a)?, parse(b)?);
                    if a > b {
                        return Err(self.err(
                            format!("{key}.range"),
                            format!("{a} comes after {b}; write the lower address first"),
                        ));
                    }
                    for ip in [a, b] {
                        if !network.contains(&ip)
                            || ip == network.network()
                            || ip == network.broadcast()
                        {
                            return Err(self.err(
                                format!("{key}.range"),
                                format!("{ip} is not a host address of {network}"),
                            ));
                        }
                    }
                    Some((a, b))
                }
            };
            if let Some(r) = s.router
                && !network.contains(&r)
            {
                return Err(self.err(
                    format!("{key}.router"),
                    format!("{r} is not inside {network}"),
                ));
            }
            if let Some(other) = subnets.iter().find(|o| {
                o.network.contains(&network.network()) || network.contains(&o.network.network())
            }) {
                return Err(self.err(
                    format!("{key}.network"),
                    format!("{network} overlaps {}", other.network),
                ));
            }
            if let Some(iface) = &s.interface
                && subnets
                    .iter()
                    .any(|o| o.interface.as_deref() == Some(iface))
            {
                return Err(self.err(
                    format!("{key}.interface"),
                    format!("interface `{iface}` already serves another subnet"),
                ));
            }
            subnets.push(Subnet {
                network,
                interface: s.interface,
                range,
                router: s.router,
                dns: s.dns,
                domain: s.domain,
                lease_time: s
                    .lease_time
                    .map(|v| self.duration(&format!("{key}.lease_time"), Some(v), Duration::ZERO))
                    .transpose()?,
            });
        }
        if mode == DhcpMode::Authoritative && subnets.is_empty() {
            return Err(self.err("dhcp.subnets", "authoritative mode needs at least one [[dhcp.subnets]] entry; or set dhcp.mode = \"proxy\""));
        }
        if raw.chainload == Some(ChainloadPolicy::AlwaysOnce) && mode != DhcpMode::Authoritative {
            return Err(self.err("dhcp.chainload", "\"always-once\" needs dhcp.mode = \"authoritative\" (a proxy cannot see which boot a request belongs to)"));
        }
        let lease_time =
            self.duration("dhcp.lease_time", raw.lease_time, Duration::from_secs(3600))?;
        if lease_time < Duration::from_secs(60) {
            return Err(self.err("dhcp.lease_time", "must be at least 60s"));
        }
        Ok(DhcpConfig {
            mode,
            interfaces: raw.interfaces,
            port: raw.port.unwrap_or(67),
            proxy_port: raw.proxy_port.unwrap_or(4011),
            unknown: raw.unknown.unwrap_or(UnknownPolicy::Discover),
            discover_max: raw.discover_max.unwrap_or(1024),
            discover_per_minute: raw.discover_per_minute.unwrap_or(60),
            lease_time,
            offer_hold: self.duration(
                "dhcp.offer_hold",
                raw.offer_hold,
                Duration::from_secs(60),
            )?,
            decline_hold: self.duration(
                "dhcp.decline_hold",
                raw.decline_hold,
                Duration::from_secs(600),
            )?,
            chainload: raw.chainload.unwrap_or(ChainloadPolicy::Firmware),
            chainload_window: self.duration(
                "dhcp.chainload_window",
                raw.chainload_window,
                Duration::from_secs(300),
            )?,
            subnets,
        })
    }
}

/// A ZFS dataset below a pool, e.g. `tank/data`: parts of letters, digits and `-_.:`.
pub fn valid_dataset(d: &str) -> bool {
    d.len() <= 255
        && d.contains('/')
        && !d.starts_with('-')
        && d.split('/').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
}

/// A Linux interface name: 1–15 of letters, digits and `-_.@`.
pub fn valid_interface(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// sanoid retention: `KEY=COUNT` pairs separated by commas, KEY one of sanoid's.
pub fn check_retention(r: &str) -> Result<(), String> {
    const KEYS: [&str; 6] = [
        "frequently",
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "yearly",
    ];
    for part in r.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!(
                "retention: `{}` must be KEY=COUNT, e.g. hourly=24",
                part.escape_debug()
            )
        })?;
        if !KEYS.contains(&k.trim()) {
            return Err(format!(
                "retention: `{}` is not one of {}",
                k.escape_debug(),
                KEYS.join(", ")
            ));
        }
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("retention: `{}` is not a count", v.escape_debug()))?;
    }
    Ok(())
}

/// Names of groups, profiles and images: ASCII letters, digits, `-` and `_`, 1–63 long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse_with(text, "rackseed.toml", &|_| None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_inventory_is_sqlite_unless_a_postgres_url_is_set() {
        let base = "[server]\nadvertise = \"192.0.2.1\"\ndata_dir = \"/srv/rs\"\n";
        let c = Config::parse_with(base, "rackseed.toml", &|_| None).unwrap();
        assert_eq!(
            c.inventory_location(),
            InventoryLocation::Sqlite(PathBuf::from("/srv/rs/inventory.db"))
        );
        let c = Config::parse_with(
            &format!("{base}[inventory]\nurl = \"postgres://rackseed:s3cret@db.example:5433/inv?sslmode=disable&password=x2\"\n"),
            "rackseed.toml",
            &|_| None,
        )
        .unwrap();
        let InventoryLocation::Postgres(u) = c.inventory_location() else {
            panic!("not postgres");
        };
        assert_eq!(u.host(), "db.example");
        let shown = format!("{} {u:?} {c:?}", c.inventory_location());
        assert!(
            !shown.contains("s3cret") && !shown.contains("x2"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "postgres://rackseed:***@db.example:5433/inv?sslmode=disable&password=***"
            ),
            "{shown}"
        );
        let u = PostgresUrl::parse("postgres://postgres@%2Ftmp%2Fpg:5432/t").unwrap();
        assert_eq!(u.host(), "/tmp/pg");
        let e = err(&format!("{base}[inventory]\nurl = \"mysql://x@y/z\"\n"));
        assert!(
            e.contains("inventory.url") && e.contains("postgres://"),
            "{e}"
        );
        let e = err(&format!("{base}[inventory]\npath = \"/x\"\n"));
        assert!(e.contains("path"), "{e}");
    }

    /// Group values reach sanoid.conf, replicate.sh and systemd units on every member:
    /// line breaks, brackets, quotes and shell are refused with the key named.
    #[test]
    fn hostile_group_values_are_refused() {
        let base = "[server]\nadvertise = \"192.0.2.1\"\n[[groups]]\nname = \"rg1\"\n";
        for (extra, want) in [
            (
                "datasets = [\"tank/data\\n[evil]\"]",
                "groups[0].datasets[0]: `tank/data\\n[evil]` is not a dataset name",
            ),
            ("datasets = [\"tank/$(reboot)\"]", "groups[0].datasets[0]"),
            ("datasets = [\"tank/a b\"]", "groups[0].datasets[0]"),
            ("datasets = [\"-tank/x\"]", "groups[0].datasets[0]"),
            (
                "retention = \"hourly=24\\n\\tautoprune = no\"",
                "groups[0].retention: `24\\n\\tautoprune = no` is not a count",
            ),
            (
                "retention = \"hourly=24,evil=1\"",
                "groups[0].retention: `evil` is not one of",
            ),
            (
                "failure_domain = \"rack\\nx\"",
                "groups[0].failure_domain: `rack\\nx` is not a label",
            ),
            (
                "replication_network = \"br-storage; reboot\"",
                "groups[0].replication_network",
            ),
        ] {
            let e = err(&format!("{base}{extra}\n"));
            assert!(e.contains(want), "{extra}: {e}");
        }
        let ok = format!(
            "{base}datasets = [\"tank/data\"]\nretention = \"hourly=24,daily=7\"\nfailure_domain = \"rack\"\nreplication_network = \"br-storage\"\n"
        );
        assert!(Config::parse_with(&ok, "rackseed.toml", &|_| None).is_ok());
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::parse_with(EMBEDDED, "<embedded>", &|_| {
            Some(Ipv4Addr::new(192, 0, 2, 1))
        })
        .unwrap();
        assert_eq!(c.dhcp.mode, DhcpMode::Proxy);
        assert_eq!(c.dhcp.unknown, UnknownPolicy::Discover);
    }

    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Config::parse_with(&text, &path.display().to_string(), &|_| {
                    Some(Ipv4Addr::new(192, 0, 2, 1))
                })
                .unwrap_or_else(|e| panic!("{e}"));
                // Every rule of an example assigns a profile of the examples.
                let c =
                    Config::parse_with(&text, "x", &|_| Some(Ipv4Addr::new(192, 0, 2, 1))).unwrap();
                let profiles = crate::profiles::Catalog::load(
                    &Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"),
                )
                .unwrap();
                for r in &c.rules {
                    assert!(
                        profiles.get(&r.profile).is_some(),
                        "{}: {}",
                        path.display(),
                        r.name
                    );
                }
                n += 1;
            }
        }
        assert!(n >= 2, "expected example configs, found {n}");
    }

    #[test]
    fn commissioning_and_rules_are_validated_with_the_key() {
        let base = "[server]\nadvertise = \"192.0.2.1\"\n";
        let e = err(&format!("{base}[commission]\nlldp_wait = \"10m\"\n"));
        assert!(
            e.contains("commission.lldp_wait: must be at most 300s"),
            "{e}"
        );
        let e = err(&format!(
            "{base}[[rules]]\nname = \"r\"\nprofile = \"p\"\nhostname = \"n-{{port}}\"\n"
        ));
        assert!(
            e.contains("rules: rules[0] (r): hostname uses `{port}`"),
            "{e}"
        );
        let e = err(&format!("{base}[[rules]]\nname = \"r\"\nprofile = \"p\"\n"));
        assert!(e.contains("hostname"), "{e}");
        let c = Config::parse_with(
            &format!("{base}[dhcp]\nunknown = \"commission\"\n[commission]\nafter = \"wait\"\npoll = \"5s\"\n"),
            "t",
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.dhcp.unknown, UnknownPolicy::Commission);
        assert_eq!(c.commission.after, AfterCommission::Wait);
        assert_eq!(c.commission.poll, Duration::from_secs(5));
    }

    #[test]
    fn missing_advertise_names_key_and_fix() {
        assert_eq!(
            err(""),
            "rackseed.toml: server.advertise: missing and not detectable from this host's interfaces: set the IPv4 address nodes use to reach rackseed on the provisioning network"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = err("[server]\nadvertise = \"192.0.2.1\"\nadvertize = 1\n");
        assert!(e.starts_with("rackseed.toml: "), "{e}");
        assert!(e.contains("unknown field `advertize`"), "{e}");
    }

    #[test]
    fn subnet_errors_name_the_entry() {
        let base = "[server]\nadvertise = \"192.0.2.1\"\n[dhcp]\nmode = \"authoritative\"\n";
        assert_eq!(
            err(&format!(
                "{base}[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\nrange = \"192.0.2.200-192.0.2.100\"\n"
            )),
            "rackseed.toml: dhcp.subnets[0].range: 192.0.2.200 comes after 192.0.2.100; write the lower address first"
        );
        assert_eq!(
            err(&format!(
                "{base}[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\nrange = \"192.0.2.10-198.51.100.9\"\n"
            )),
            "rackseed.toml: dhcp.subnets[0].range: 198.51.100.9 is not a host address of 192.0.2.0/24"
        );
        assert_eq!(
            err(&format!(
                "{base}[[dhcp.subnets]]\nnetwork = \"192.0.2.1/24\"\n"
            )),
            "rackseed.toml: dhcp.subnets[0].network: `192.0.2.1/24` has host bits set; did you mean 192.0.2.0/24?"
        );
        assert_eq!(
            err(&format!(
                "{base}[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.128/25\"\n"
            )),
            "rackseed.toml: dhcp.subnets[1].network: 192.0.2.128/25 overlaps 192.0.2.0/24"
        );
        assert!(err(base).contains("dhcp.subnets: authoritative mode needs at least one"));
    }

    #[test]
    fn bad_durations_say_how_to_write_them() {
        let e = err("[server]\nadvertise = \"192.0.2.1\"\n[boot]\ntoken_ttl = \"soon\"\n");
        assert!(
            e.starts_with("rackseed.toml: boot.token_ttl: `soon` is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn base_url_omits_port_80() {
        let c = Config::parse(
            "[server]\nadvertise = \"192.0.2.1\"\nhttp = \"0.0.0.0:80\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.server.base_url, "http://192.0.2.1");
        let c = Config::parse("[server]\nadvertise = \"192.0.2.1\"\n", "x").unwrap();
        assert_eq!(c.server.base_url, "http://192.0.2.1:8080");
    }
}
