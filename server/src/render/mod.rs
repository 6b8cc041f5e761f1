//! Rendering: node + profile → iPXE scripts, preseed and the scripts the installer and
//! the installed node run.
//!
//! Owns the template set (minijinja; the files in `preseed/`, embedded in the binary
//! and overridable from a directory), the context each template sees ([`InstallCtx`],
//! built around the node's [`NodePlan`]), the partman recipes (`partman`) and a reader
//! of preseeds that behaves like the installer's (`debconf`), and the check of a
//! profile's rendered files (`check`). Does no I/O besides reading an override
//! directory once.
//!
//! The install files of a node (its [`INSTALL_FILES`]) are served by `http::boot` with
//! the node's install token and written by `rackseed profile render`; both go through
//! [`install_file`], so a preview is byte for byte what a node receives.

pub mod check;
pub mod debconf;
pub mod escape;
#[cfg(test)]
mod examples;
#[cfg(test)]
mod hostile;
pub mod kernel;
pub mod network;
pub mod partman;

pub use check::check_rendering;

use crate::config::Config;
use crate::node::{Node, NodeState};
use crate::plan::{Firmware, NodePlan, PlanError, PlanInputs};
use crate::profiles::Resolved;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::path::Path;

/// A template that failed to load or render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template `{name}` failed to render")]
    Render {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("cannot read template override directory `{dir}`")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no install file named `{0}`")]
    UnknownFile(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("rendered preseed cannot be read back")]
    Preseed(#[source] debconf::PreseedError),
}

/// The embedded templates: (name, source).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "install.ipxe",
        include_str!("../../../preseed/install.ipxe.j2"),
    ),
    ("local.ipxe", include_str!("../../../preseed/local.ipxe.j2")),
    ("wait.ipxe", include_str!("../../../preseed/wait.ipxe.j2")),
    ("chain.ipxe", include_str!("../../../preseed/chain.ipxe.j2")),
    ("grub.cfg", include_str!("../../../preseed/grub.cfg.j2")),
    (
        "install.grub",
        include_str!("../../../preseed/install.grub.j2"),
    ),
    ("local.grub", include_str!("../../../preseed/local.grub.j2")),
    ("wait.grub", include_str!("../../../preseed/wait.grub.j2")),
    (
        "commission.ipxe",
        include_str!("../../../preseed/commission.ipxe.j2"),
    ),
    (
        "commission.grub",
        include_str!("../../../preseed/commission.grub.j2"),
    ),
    (
        "commission.cfg",
        include_str!("../../../preseed/commission.cfg.j2"),
    ),
    (
        "commission.sh",
        include_str!("../../../preseed/commission.sh.j2"),
    ),
    (
        "preseed.cfg",
        include_str!("../../../preseed/preseed.cfg.j2"),
    ),
    ("early.sh", include_str!("../../../preseed/early.sh.j2")),
    ("disks.sh", include_str!("../../../preseed/disks.sh.j2")),
    ("late.sh", include_str!("../../../preseed/late.sh.j2")),
    (
        "late-agent.sh",
        include_str!("../../../preseed/late-agent.sh.j2"),
    ),
    ("network.sh", include_str!("../../../preseed/network.sh.j2")),
    ("zfs.sh", include_str!("../../../preseed/zfs.sh.j2")),
    (
        "esp-sync.sh",
        include_str!("../../../preseed/esp-sync.sh.j2"),
    ),
    (
        "lib-report.sh",
        include_str!("../../../preseed/lib-report.sh.j2"),
    ),
    (
        "lib-disks.sh",
        include_str!("../../../preseed/lib-disks.sh.j2"),
    ),
];

/// The files an installing node fetches with its token, by name:
/// - `preseed.cfg`: the preseed (kernel argument `url=`);
/// - `early.sh`: `preseed/early_command` (reports, previews the disk choice);
/// - `disks.sh`: `partman/early_command` (chooses root disks, sets the partman answers);
/// - `late.sh`: `preseed/late_command` (installs the files below into the target);
/// - `network.sh`, `zfs.sh`: run on the installed node (first boot) to apply the plan;
/// - `esp-sync.sh`: keeps every root disk's EFI system partition current (UEFI);
/// - `plan.json`: the node's [`NodePlan`].
pub const INSTALL_FILES: &[&str] = &[
    "preseed.cfg",
    "early.sh",
    "disks.sh",
    "late.sh",
    "network.sh",
    "zfs.sh",
    "esp-sync.sh",
    "plan.json",
];

/// Install files that are shell scripts (checked with shellcheck by the tests).
pub const SCRIPTS: &[&str] = &[
    "early.sh",
    "disks.sh",
    "late.sh",
    "network.sh",
    "zfs.sh",
    "esp-sync.sh",
];

/// The compiled template set.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// The templates built into the binary.
    pub fn embedded() -> Templates {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|name| match escape::Lang::of(name) {
            Some(lang) => minijinja::AutoEscape::Custom(lang.tag()),
            None => minijinja::AutoEscape::None,
        });
        env.set_formatter(format_value);
        env.remove_filter("safe");
        env.add_filter("shquote", shquote);
        env.add_filter("grubquote", grubquote);
        env.add_filter("ipxetext", ipxetext);
        env.add_filter("debconf", debconf_filter);
        env.add_filter("comment", comment);
        env.add_filter("heredoc", heredoc_filter);
        for (name, src) in EMBEDDED {
            // Embedded templates are checked by tests; a syntax error is a build defect.
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("embedded template {name}: {e}"));
        }
        Templates { env }
    }

    /// The embedded templates with any `<name>.j2` in `dir` replacing its namesake.
    pub fn with_overrides(dir: &Path) -> Result<Templates, RenderError> {
        let mut t = Templates::embedded();
        let entries = std::fs::read_dir(dir).map_err(|source| RenderError::Dir {
            dir: dir.display().to_string(),
            source,
        })?;
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".j2"))
            else {
                continue;
            };
            let src = std::fs::read_to_string(&path).map_err(|source| RenderError::Dir {
                dir: path.display().to_string(),
                source,
            })?;
            t.env
                .add_template_owned(name.to_string(), src)
                .map_err(|source| RenderError::Render {
                    name: name.to_string(),
                    source,
                })?;
        }
        Ok(t)
    }

    /// Renders template `name` with `ctx`.
    pub fn render<S: Serialize>(&self, name: &str, ctx: &S) -> Result<String, RenderError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|source| RenderError::Render {
                name: name.into(),
                source,
            })?;
        tmpl.render(ctx).map_err(|source| RenderError::Render {
            name: name.into(),
            source,
        })
    }
}

pub use crate::mirror::MirrorCtx;
pub use escape::{grub_quote, ipxe_text, sh_quote};

fn as_text(v: &minijinja::Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    }
}

fn refused(e: escape::Refused) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
}

fn shquote(v: minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(sh_quote(&as_text(&v)))
}

fn grubquote(v: minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(grub_quote(&as_text(&v)))
}

fn ipxetext(v: minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(ipxe_text(&as_text(&v)))
}

fn comment(v: minijinja::Value) -> minijinja::Value {
    minijinja::Value::from_safe_string(escape::comment_text(&as_text(&v)))
}

fn debconf_filter(v: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    let s = as_text(&v);
    escape::debconf_value(&s).map_err(refused)?;
    Ok(minijinja::Value::from_safe_string(s))
}

fn heredoc_filter(
    v: minijinja::Value,
    delimiter: &str,
) -> Result<minijinja::Value, minijinja::Error> {
    let s = as_text(&v);
    escape::heredoc(&s, delimiter).map_err(refused)?;
    Ok(minijinja::Value::from_safe_string(s))
}

/// Writes `{{ value }}`: a value made by a quoting filter as it is, any other only if
/// it is plain in the template's language ([`escape::plain`]).
fn format_value(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    let lang = match state.auto_escape() {
        minijinja::AutoEscape::Custom(tag) => escape::Lang::from_tag(tag),
        _ => None,
    };
    match lang {
        None => minijinja::escape_formatter(out, state, value),
        Some(_) if value.is_undefined() => Ok(()),
        Some(lang) => {
            let s = as_text(value);
            if !value.is_safe() {
                escape::plain(lang, &s).map_err(refused)?;
            }
            out.write_str(&s).map_err(minijinja::Error::from)
        }
    }
}

/// What templates know of the node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCtx {
    pub id: i64,
    pub mac: String,
    pub mac_hyphen: String,
    pub hostname: String,
    pub domain: String,
    pub fqdn: String,
    pub display_name: String,
    pub profile: String,
    pub ip: Option<String>,
    pub state: String,
    pub group: Option<String>,
}

impl NodeCtx {
    /// The context for `node`, in `domain`.
    pub fn new(node: &Node, domain: &str) -> NodeCtx {
        let hostname = node.hostname.clone().unwrap_or_else(|| node.display_name());
        let (short, dom) = match hostname.split_once('.') {
            Some((h, d)) => (h.to_string(), d.to_string()),
            None => (hostname.clone(), domain.to_string()),
        };
        NodeCtx {
            id: node.id,
            mac: node.mac.to_string(),
            mac_hyphen: node.mac.hyphenated(),
            fqdn: if dom.is_empty() {
                short.clone()
            } else {
                format!("{short}.{dom}")
            },
            hostname: short,
            domain: dom,
            display_name: node.display_name(),
            profile: node.profile.clone().unwrap_or_default(),
            ip: node.ip.map(|i| i.to_string()),
            state: node.state.to_string(),
            group: node.group.clone(),
        }
    }
}

/// URLs an installing node uses, all carrying its install token.
#[derive(Clone, Debug, Serialize)]
pub struct UrlsCtx {
    pub base: String,
    pub preseed: String,
    pub early: String,
    pub disks: String,
    pub late: String,
    pub events: String,
    /// The directory of every install file (`{files}/network.sh`, …).
    pub files: String,
}

impl UrlsCtx {
    /// The URLs for `token` under `base`.
    pub fn new(base: &str, token: &str) -> UrlsCtx {
        let files = format!("{base}/install/{token}");
        UrlsCtx {
            base: base.into(),
            preseed: format!("{files}/preseed.cfg"),
            early: format!("{files}/early.sh"),
            disks: format!("{files}/disks.sh"),
            late: format!("{files}/late.sh"),
            events: format!("{files}/events"),
            files,
        }
    }
}

/// Everything the install-file templates see.
#[derive(Clone, Debug, Serialize)]
pub struct InstallCtx {
    pub node: NodeCtx,
    /// The resolved profile as plain data.
    pub profile: serde_json::Value,
    /// The node's plan: the scripts are written from it.
    pub plan: NodePlan,
    /// The mirror the node installs from (the profile's override, else rackseed's).
    pub mirror: MirrorCtx,
    pub urls: UrlsCtx,
    pub partman: partman::Partitioning,
    /// What network.sh writes; `None` when the profile leaves the network alone.
    pub network: Option<network::NetworkFiles>,
    /// `pkgsel/include`: the profile's packages plus what the layout needs.
    pub packages: Vec<String>,
    /// Kernel arguments of the installed system.
    pub kernel_opts: String,
    /// The first-boot agent (filled in by the server; placeholders in previews).
    pub agent: AgentCtx,
    /// Disk-controller driver packages early_command loads from
    /// `{base}/installer/drivers/<name>.udeb` (filled in by the server when stored).
    pub drivers: Vec<String>,
}

/// What the late command needs to install the first-boot agent.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AgentCtx {
    /// Where the agent binary is downloaded (with the install token).
    pub url: String,
    /// SHA-256 of the binary; also carried by the preseed's late_command.
    pub sha256: String,
    /// rackseed's HTTP base URL, where the agent enrolls.
    pub server: String,
    /// The node's single-use enrollment token.
    pub token: String,
    /// rackseed's CA certificate (PEM).
    pub ca_pem: String,
}

impl AgentCtx {
    /// Values a preview shows when it has no server to ask.
    pub fn placeholder(urls: &UrlsCtx) -> AgentCtx {
        AgentCtx {
            url: format!("{}/agent/rackseed", urls.files),
            sha256: "unknown".into(),
            server: urls.base.clone(),
            token: "issued-when-the-node-fetches-late.sh".into(),
            ca_pem: "# rackseed's CA certificate".into(),
        }
    }
}

/// What [`InstallCtx::new`] needs besides the node and profile.
#[derive(Clone, Debug)]
pub struct CtxInputs {
    /// The node's DNS domain.
    pub domain: String,
    /// rackseed's mirror (a profile may override it).
    pub mirror: MirrorCtx,
    pub urls: UrlsCtx,
    /// The served subnet holding the node's inventory address.
    pub provisioning_subnet: Option<Ipv4Net>,
}

impl InstallCtx {
    /// Builds the context of `node` installed with `profile`. Fails when the node's
    /// vars do not fit the profile.
    pub fn new(
        node: &Node,
        profile: &Resolved,
        inputs: CtxInputs,
    ) -> Result<InstallCtx, RenderError> {
        let firmware = Firmware::from_arch(node.arch.as_deref());
        let plan = crate::plan::plan_for(
            profile,
            node,
            &PlanInputs {
                domain: inputs.domain.clone(),
                firmware,
                provisioning_subnet: inputs.provisioning_subnet,
            },
        )?;
        let p = &profile.profile;
        let mut mirror = inputs.mirror;
        if let Some(m) = &p.mirror {
            if let Some(url) = &m.url
                && let Some(over) = MirrorCtx::from_uri(url, &mirror.suite, Some(&mirror.proxy))
            {
                mirror = over;
            }
            if let Some(px) = &m.proxy {
                mirror.proxy = px.clone();
            }
        }
        let partman = partman::partitioning(&plan.root, plan.firmware);
        let network = network::network_files(&plan);
        Ok(InstallCtx {
            agent: AgentCtx::placeholder(&inputs.urls),
            drivers: Vec::new(),
            network,
            node: NodeCtx::new(node, &inputs.domain),
            profile: serde_json::to_value(p).unwrap_or(serde_json::Value::Null),
            packages: packages_for(p, &plan),
            kernel_opts: p.kernel_args.join(" "),
            plan,
            mirror,
            urls: inputs.urls,
            partman,
        })
    }
}

/// The packages the installer adds: the profile's, then those its layout needs.
pub fn packages_for(p: &crate::profiles::Profile, plan: &NodePlan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !out.iter().any(|x| x == name) {
            out.push(name.to_string());
        }
    };
    for pkg in &p.packages {
        add(pkg);
    }
    add("wget");
    add("xfsprogs");
    if plan.root.md_device.is_some() {
        add("mdadm");
    }
    if plan.firmware == Firmware::Uefi {
        add("efibootmgr");
    }
    if let Some(n) = &plan.network {
        add("ifupdown");
        if !n.bonds.is_empty() {
            add("ifenslave");
        }
        if !n.vlans.is_empty() {
            add("vlan");
        }
        if !n.bridges.is_empty() {
            add("bridge-utils");
        }
        if !n.dhcp.is_empty() {
            add("isc-dhcp-client");
        }
    }
    if !plan.zfs.is_empty() {
        add("linux-headers-amd64");
        add("zfs-dkms");
        add("zfsutils-linux");
    }
    out
}

/// The context of `node` as rackseed serves it: its domain and provisioning subnet
/// from `cfg`, URLs for `token`.
pub fn node_ctx(
    cfg: &Config,
    node: &Node,
    profile: &Resolved,
    mirror: MirrorCtx,
    token: &str,
) -> Result<InstallCtx, RenderError> {
    let provisioning_subnet = node.ip.and_then(|ip| {
        cfg.dhcp
            .subnets
            .iter()
            .find(|s| s.network.contains(&ip))
            .map(|s| s.network)
    });
    InstallCtx::new(
        node,
        profile,
        CtxInputs {
            domain: kernel::node_domain(cfg, node),
            mirror,
            urls: UrlsCtx::new(&cfg.server.base_url, token),
            provisioning_subnet,
        },
    )
}

/// What early.sh sees in addition: the questions of the rendered preseed, to report
/// back what the installer parsed.
#[derive(Serialize)]
struct EarlyCtx<'a> {
    #[serde(flatten)]
    ctx: &'a InstallCtx,
    preseed_questions: Vec<PreseedQuestion>,
}

#[derive(Serialize)]
struct PreseedQuestion {
    name: String,
    secret: bool,
}

/// Renders one of [`INSTALL_FILES`].
/// The URLs a commissioning boot uses, all under its token.
#[derive(Clone, Debug, Serialize)]
pub struct CommissionUrls {
    pub base: String,
    pub script: String,
    pub agent: String,
    pub facts: String,
    pub next: String,
    pub events: String,
}

/// What the commissioning preseed and script are rendered from.
#[derive(Clone, Debug, Serialize)]
pub struct CommissionCtx {
    pub mac: String,
    pub hostname: String,
    pub domain: String,
    pub urls: CommissionUrls,
    /// Disk-controller driver packages, in dependency order.
    pub drivers: Vec<String>,
    pub agent_sha256: String,
    pub lldp_wait_secs: u64,
    pub poll_secs: u64,
}

/// The commissioning files a machine fetches by its token.
pub const COMMISSION_FILES: &[&str] = &["preseed.cfg", "commission.sh"];

impl CommissionCtx {
    /// The context for `mac` with commissioning token `token`.
    pub fn new(
        cfg: &crate::config::Config,
        mac: crate::mac::MacAddr,
        token: &str,
        drivers: Vec<String>,
        agent_sha256: &str,
    ) -> CommissionCtx {
        let root = &cfg.server.base_url;
        let base = format!("{root}/commission/{token}");
        CommissionCtx {
            mac: mac.to_string(),
            hostname: kernel::commission_hostname(mac),
            domain: kernel::first_domain(cfg),
            urls: CommissionUrls {
                base: root.clone(),
                script: format!("{base}/commission.sh"),
                agent: format!("{base}/rackseed"),
                facts: format!("{base}/facts"),
                next: format!("{base}/next"),
                events: format!("{base}/events"),
            },
            drivers,
            agent_sha256: agent_sha256.to_string(),
            lldp_wait_secs: cfg.commission.lldp_wait.as_secs(),
            poll_secs: cfg.commission.poll.as_secs().max(1),
        }
    }
}

/// Renders commissioning file `name` (one of [`COMMISSION_FILES`]).
pub fn commission_file(
    t: &Templates,
    name: &str,
    ctx: &CommissionCtx,
) -> Result<String, RenderError> {
    let template = match name {
        "preseed.cfg" => "commission.cfg",
        _ => "commission.sh",
    };
    t.render(template, ctx)
}

pub fn install_file(t: &Templates, name: &str, ctx: &InstallCtx) -> Result<String, RenderError> {
    match name {
        "plan.json" => {
            let mut s = serde_json::to_string_pretty(&ctx.plan).unwrap_or_default();
            s.push('\n');
            Ok(s)
        }
        "early.sh" => {
            let preseed = t.render("preseed.cfg", ctx)?;
            let sel = debconf::parse(&preseed).map_err(RenderError::Preseed)?;
            let preseed_questions = debconf::values(&sel)
                .into_iter()
                .map(|(q, _)| PreseedQuestion {
                    secret: sel.iter().any(|s| s.question == q && s.kind == "password"),
                    name: q,
                })
                .collect();
            t.render(
                name,
                &EarlyCtx {
                    ctx,
                    preseed_questions,
                },
            )
        }
        _ if INSTALL_FILES.contains(&name) => t.render(name, ctx),
        _ => Err(RenderError::UnknownFile(name.into())),
    }
}

/// Every install file of a node, in [`INSTALL_FILES`] order.
pub fn install_files(
    t: &Templates,
    ctx: &InstallCtx,
) -> Result<Vec<(&'static str, String)>, RenderError> {
    INSTALL_FILES
        .iter()
        .map(|n| install_file(t, n, ctx).map(|body| (*n, body)))
        .collect()
}

/// The boot loader a per-node script is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// iPXE script (`#!ipxe`), fetched over HTTP.
    Ipxe,
    /// GRUB configuration of the signed chain, fetched over TFTP.
    Grub,
}

impl Loader {
    fn ext(self) -> &'static str {
        match self {
            Loader::Ipxe => "ipxe",
            Loader::Grub => "grub",
        }
    }
}

/// Inputs of the per-node iPXE script.
pub struct ScriptInputs<'a> {
    pub base_url: &'a str,
    pub kernel_url: String,
    pub initrd_url: String,
    pub kernel_args: String,
    pub retry_secs: u64,
    /// The kernel arguments are for a commissioning boot of a discovered machine.
    pub commission: bool,
}

/// The iPXE script for a MAC: install for `provisioning` nodes, local disk for
/// `installed`/`enrolled`, a wait-and-retry message for everything else.
pub fn ipxe_script(
    t: &Templates,
    mac: &str,
    node: Option<&Node>,
    inputs: &ScriptInputs<'_>,
) -> Result<String, RenderError> {
    boot_script(t, Loader::Ipxe, mac, node, inputs)
}

/// The TFTP name of a node's GRUB configuration (`mac` with colons, as GRUB's
/// `$net_default_mac` spells it).
pub fn grub_node_file(mac: &str) -> String {
    format!("{}{mac}.cfg", crate::bootfiles::GRUB_NODE_DIR)
}

/// The generic GRUB entry point (`grub/grub.cfg` of the signed chain).
pub fn grub_entry(t: &Templates, retry_secs: u64) -> Result<String, RenderError> {
    t.render("grub.cfg", &minijinja::context! { retry_secs })
}

/// The per-node boot script for `loader`: install for `provisioning` nodes, local disk
/// for `installed`/`enrolled`, a wait-and-retry message for everything else. For GRUB,
/// `kernel_url` and `initrd_url` are TFTP paths and `kernel_args` is split into
/// arguments, each quoted for GRUB.
pub fn boot_script(
    t: &Templates,
    loader: Loader,
    mac: &str,
    node: Option<&Node>,
    inputs: &ScriptInputs<'_>,
) -> Result<String, RenderError> {
    let ext = loader.ext();
    let script_url = match loader {
        Loader::Ipxe => format!("{}/boot/{}.ipxe", inputs.base_url, mac.replace(':', "-")),
        Loader::Grub => format!("/{}", grub_node_file(mac)),
    };
    let wait = |reason: &str, hint: &str| {
        t.render(
            &format!("wait.{ext}"),
            &minijinja::context! { mac, reason, hint, retry_secs => inputs.retry_secs, script_url => &script_url },
        )
    };
    let Some(node) = node else {
        return wait(
            "is not known to rackseed",
            "add it with `rackseed node add --mac <MAC> --hostname <NAME> --profile <PROFILE>`",
        );
    };
    let nctx = NodeCtx::new(node, "");
    // GRUB: a list of arguments, each quoted by the template for GRUB's script language.
    let kernel_args = match loader {
        Loader::Ipxe => minijinja::Value::from(inputs.kernel_args.as_str()),
        Loader::Grub => minijinja::Value::from(
            inputs
                .kernel_args
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        ),
    };
    match node.state {
        NodeState::Provisioning => t.render(
            &format!("install.{ext}"),
            &minijinja::context! {
                node => nctx,
                kernel_url => &inputs.kernel_url,
                initrd_url => &inputs.initrd_url,
                kernel_path => &inputs.kernel_url,
                initrd_path => &inputs.initrd_url,
                kernel_args => kernel_args,
                retry_secs => inputs.retry_secs,
                script_url => &script_url,
            },
        ),
        NodeState::Installed | NodeState::Enrolled => t.render(
            &format!("local.{ext}"),
            &minijinja::context! { node => nctx },
        ),
        NodeState::Discovered if inputs.commission => t.render(
            &format!("commission.{ext}"),
            &minijinja::context! {
                mac,
                kernel_url => &inputs.kernel_url,
                initrd_url => &inputs.initrd_url,
                kernel_path => &inputs.kernel_url,
                initrd_path => &inputs.initrd_url,
                kernel_args => kernel_args,
                retry_secs => inputs.retry_secs,
                script_url => &script_url,
            },
        ),
        NodeState::Commissioned => wait(
            "was commissioned and no rule assigned it",
            "see why with `rackseed rule test --node <NODE>`; assign it with `rackseed node add --mac <MAC> --hostname <NAME> --profile <PROFILE>`",
        ),
        NodeState::Discovered => wait(
            "was discovered and waits for a profile",
            "assign it with `rackseed node add --mac <MAC> --hostname <NAME> --profile <PROFILE>`",
        ),
        NodeState::Ready => wait(
            "is ready but not scheduled for install",
            "start it with `rackseed node provision <NODE>`",
        ),
        NodeState::Installing => wait(
            "is already installing; a second boot of the installer was refused",
            "reprovision it with `rackseed node reprovision <NODE>` to start over",
        ),
        NodeState::Failed => wait(
            &format!(
                "failed: {}",
                node.state_reason.as_deref().unwrap_or("no reason recorded")
            ),
            "fix the cause and run `rackseed node reprovision <NODE>`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_uri_splits() {
        let m =
            MirrorCtx::from_uri("http://mirror.example:8080/debian/", "bookworm", None).unwrap();
        assert_eq!(
            (m.host.as_str(), m.directory.as_str()),
            ("mirror.example:8080", "/debian")
        );
        assert!(MirrorCtx::from_uri("ftp://x/debian", "bookworm", None).is_none());
        assert!(MirrorCtx::from_uri("http:///debian", "bookworm", None).is_none());
    }

    #[test]
    fn every_embedded_template_compiles() {
        let t = Templates::embedded();
        for (name, _) in EMBEDDED {
            assert!(t.env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn grub_quote_never_lets_a_value_start_a_command() {
        assert_eq!(grub_quote("a b"), "'a b'");
        assert_eq!(grub_quote("it's"), r"'it'\''s'");
        assert_eq!(grub_quote("x\nreboot; $(y)"), "'x?reboot; $(y)'");
        assert_eq!(grub_quote("${prefix}"), "'${prefix}'");
    }

    #[test]
    fn ipxe_text_never_lets_a_value_start_a_command_or_expand() {
        assert_eq!(
            ipxe_text("disk sda failed (3 of 4)"),
            "disk sda failed (3 of 4)"
        );
        assert_eq!(
            ipxe_text("x\nchain http://192.0.2.66/evil"),
            "x?chain http://192.0.2.66/evil"
        );
        assert_eq!(
            ipxe_text("${root-password} || shell && x"),
            "??root-password? ?? shell ?? x"
        );
        assert_eq!(ipxe_text("a\\b;c#d\0e\u{1b}f\u{e9}"), "a?b?c?d?e?f?");
    }

    #[test]
    fn shquote_escapes() {
        assert_eq!(
            shquote(minijinja::Value::from("a'b")).as_str(),
            Some(r"'a'\''b'")
        );
        assert_eq!(shquote(minijinja::Value::from(12)).as_str(), Some("'12'"));
    }
}
