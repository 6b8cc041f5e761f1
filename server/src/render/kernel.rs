//! What the installer is booted with: its kernel command line, the domain it uses and
//! the NIC it configures. Pure functions of the config, the node and its profile; the
//! HTTP boot handlers and the node contexts in `render` call them.

use super::NodeCtx;
use crate::config::Config;
use crate::mac::MacAddr;
use crate::node::Node;

/// The domain a node's installer uses: from its hostname if qualified, else the
/// domain of the subnet holding its address, else of the first subnet that has one.
pub fn node_domain(cfg: &Config, node: &Node) -> String {
    if let Some(h) = &node.hostname
        && let Some((_, d)) = h.split_once('.')
    {
        return d.to_string();
    }
    let by_ip = node.ip.and_then(|ip| {
        cfg.dhcp
            .subnets
            .iter()
            .find(|s| s.network.contains(&ip))
            .and_then(|s| s.domain.clone())
    });
    by_ip.unwrap_or_else(|| first_domain(cfg))
}

/// The domain of the first subnet that has one ("" when none does).
pub fn first_domain(cfg: &Config) -> String {
    cfg.dhcp
        .subnets
        .iter()
        .find_map(|s| s.domain.clone())
        .unwrap_or_default()
}

/// The end of every installer command line: locale and keymap, `boot.kernel_args`,
/// and the console (for the installer and, after `---`, the installed system).
fn push_tail(cfg: &Config, a: &mut Vec<String>) {
    a.extend(["locale=en_US.UTF-8".into(), "keymap=us".into()]);
    a.extend(cfg.boot.kernel_args.iter().cloned());
    if let Some(c) = &cfg.boot.console {
        a.push(format!("console={c}"));
        a.push("---".into());
        a.push(format!("console={c}"));
    }
}

/// The installer's kernel command line for a node and its install token.
///
/// netcfg runs before the preseed is fetched, so the NIC it configures is settled
/// here: `BOOTIF` names `installer_nic` (the boot NIC unless the node says
/// otherwise) and `interface=auto` makes netcfg take the BOOTIF NIC without asking,
/// whatever its position and whichever other NICs have link.
pub fn kernel_args(cfg: &Config, node: &NodeCtx, installer_nic: MacAddr, token: &str) -> String {
    let base = &cfg.server.base_url;
    let mut a: Vec<String> = vec![
        "auto=true".into(),
        "priority=critical".into(),
        format!("url={base}/install/{token}/preseed.cfg"),
        format!("log_host={}", cfg.server.advertise),
        format!("log_port={}", cfg.server.syslog.port()),
    ];
    if cfg.boot.installer_interface == crate::config::InstallerInterface::Bootif {
        a.push(format!("BOOTIF=01-{}", installer_nic.hyphenated()));
        a.push("interface=auto".into());
    }
    a.extend([
        format!("hostname={}", node.hostname),
        format!("domain={}", node.domain),
    ]);
    push_tail(cfg, &mut a);
    a.join(" ")
}

/// The installer's kernel command line for the commissioning boot of `mac`: the
/// commissioning preseed by its token, the boot NIC settled as for an install.
pub fn commission_kernel_args(cfg: &Config, mac: MacAddr, token: &str) -> String {
    let base = &cfg.server.base_url;
    let mut a: Vec<String> = vec![
        "auto=true".into(),
        "priority=critical".into(),
        format!("url={base}/commission/{token}/preseed.cfg"),
        format!("log_host={}", cfg.server.advertise),
        format!("log_port={}", cfg.server.syslog.port()),
        format!("BOOTIF=01-{}", mac.hyphenated()),
        "interface=auto".into(),
        format!("hostname={}", commission_hostname(mac)),
        format!("domain={}", first_domain(cfg)),
    ];
    push_tail(cfg, &mut a);
    a.join(" ")
}

/// The installer's hostname during a commissioning boot.
pub fn commission_hostname(mac: MacAddr) -> String {
    format!("commission-{}", mac.hyphenated())
}

/// The NIC the installer configures: the node's `installer_nic` var when set, else
/// its profile's `installer_nic`, else the MAC it boots from.
pub fn installer_nic_of(node: &Node, profile: Option<&crate::profiles::Profile>) -> MacAddr {
    node.vars
        .get("installer_nic")
        .and_then(|v| v.as_str())
        .or_else(|| profile.and_then(|p| p.installer_nic.as_deref()))
        .and_then(|m| m.parse().ok())
        .unwrap_or(node.mac)
}
