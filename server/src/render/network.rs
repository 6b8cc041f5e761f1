//! The Debian ifupdown configuration of a node's network plan, as `network.sh` writes
//! it: `/etc/network/interfaces` with one stanza per bond, VLAN, bridge and NIC, in
//! the order they must come up.
//!
//! Pure. Bond members are only known on the node (chosen by name pattern or MAC from
//! `/sys/class/net`), so each bond's `bond-slaves` line holds a shell variable
//! (`$members_0`, …) that `network.sh` fills in before writing the file.

use crate::plan::{AddressPlan, NetworkPlan, NodePlan};
use crate::profiles::model::AddressMethod;
use crate::profiles::model::DEFAULT_MTU;
use serde::Serialize;
use std::fmt::Write;

/// What `network.sh` writes and brings up.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NetworkFiles {
    /// `/etc/network/interfaces`, with `$members_N` for bond members.
    pub interfaces: String,
    /// Interfaces in the order `ifup` brings them up.
    pub order: Vec<String>,
    /// `/etc/resolv.conf` when the profile sets DNS servers.
    pub resolv_conf: Option<String>,
}

/// The shell variable that holds the members of bond number `i`.
pub fn members_var(i: usize) -> String {
    format!("members_{i}")
}

fn stanza(out: &mut String, name: &str, ip: Option<&AddressPlan>, mtu: u32, body: &[String]) {
    let method = match ip.map(|i| i.method) {
        None => "manual",
        Some(AddressMethod::Node) => "static",
        Some(AddressMethod::Dhcp | AddressMethod::Provisioning) => "dhcp",
    };
    let _ = write!(out, "\nauto {name}\niface {name} inet {method}\n");
    if let Some(ip) = ip
        && ip.method == AddressMethod::Node
    {
        if let Some(a) = &ip.address {
            let _ = writeln!(out, "    address {a}");
        }
        if let Some(g) = ip.gateway {
            let _ = writeln!(out, "    gateway {g}");
        }
    }
    for line in body {
        let _ = writeln!(out, "    {line}");
    }
    if mtu != DEFAULT_MTU {
        let _ = writeln!(out, "    mtu {mtu}");
    }
    if let Some(ip) = ip {
        for r in &ip.routes {
            let _ = writeln!(
                out,
                "    up ip route replace {} via {} dev {name}",
                r.to, r.via
            );
            let _ = writeln!(
                out,
                "    down ip route del {} via {} dev {name} || true",
                r.to, r.via
            );
        }
    }
}

/// The files of `plan`'s network, or `None` when the profile leaves the network alone.
pub fn network_files(plan: &NodePlan) -> Option<NetworkFiles> {
    let n: &NetworkPlan = plan.network.as_ref()?;
    let mut out = format!(
        "# Written by rackseed network.sh for {} (profile {}) from its plan.\n# rackseed replaces this file whenever it applies the plan again.\n\nauto lo\niface lo inet loopback\n",
        plan.fqdn, plan.profile
    );
    let mut order = Vec::new();
    for i in &n.interfaces {
        stanza(&mut out, &i.name, i.ipv4.as_ref(), i.mtu, &[]);
        order.push(i.name.clone());
    }
    for (k, b) in n.bonds.iter().enumerate() {
        let mut body = Vec::new();
        if let Some(mac) = &b.hwaddress {
            body.push(format!("hwaddress ether {mac}"));
        }
        body.push(format!("bond-slaves ${}", members_var(k)));
        body.push(format!("bond-mode {}", b.mode));
        body.push(format!("bond-miimon {}", b.miimon));
        if let Some(r) = b.lacp_rate {
            body.push(format!("bond-lacp-rate {r}"));
        }
        if let Some(x) = b.xmit_hash_policy {
            body.push(format!("bond-xmit-hash-policy {x}"));
        }
        if let Some(p) = &b.primary {
            body.push(format!("bond-primary {p}"));
        }
        stanza(&mut out, &b.name, b.ipv4.as_ref(), b.mtu, &body);
        order.push(b.name.clone());
    }
    for v in &n.vlans {
        stanza(&mut out, &v.name, v.ipv4.as_ref(), v.mtu, &[]);
        order.push(v.name.clone());
    }
    for b in &n.bridges {
        let body = vec![
            format!(
                "bridge-ports {}",
                if b.ports.is_empty() {
                    "none".to_string()
                } else {
                    b.ports.join(" ")
                }
            ),
            format!("bridge-stp {}", if b.stp { "on" } else { "off" }),
            "bridge-fd 0".to_string(),
        ];
        stanza(&mut out, &b.name, b.ipv4.as_ref(), b.mtu, &body);
        order.push(b.name.clone());
    }
    let resolv_conf = (!n.dns.servers.is_empty()).then(|| {
        let mut r = String::from("# Written by rackseed network.sh from the node's plan.\n");
        if !n.dns.search.is_empty() {
            let _ = writeln!(r, "search {}", n.dns.search.join(" "));
        }
        for s in &n.dns.servers {
            let _ = writeln!(r, "nameserver {s}");
        }
        r
    });
    Some(NetworkFiles {
        interfaces: out,
        order,
        resolv_conf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Node;
    use crate::plan::{PlanInputs, plan_for};
    use crate::profiles::{Resolved, parse_str, validate};

    fn plan(yaml: &str, vars: serde_json::Value) -> NodePlan {
        let (profile, _) = parse_str(yaml, "t.yaml").unwrap();
        assert_eq!(validate::validate("t.yaml", &profile), []);
        let r = Resolved {
            name: "t".into(),
            file: "t.yaml".into(),
            profile,
        };
        let node = Node {
            hostname: Some("h1".into()),
            ..crate::plan::sample_node("t", crate::plan::Firmware::Bios, vars)
        };
        plan_for(&r, &node, &PlanInputs::default()).unwrap()
    }

    #[test]
    fn nic_with_static_address_routes_vlan_and_alb_bond_by_mac() {
        let p = plan(
            "network:\n  interfaces:\n    - name: eth0\n      mtu: 9000\n      ipv4:\n        method: node\n        subnet: 198.51.100.0/24\n        gateway: 198.51.100.1\n        routes: [{to: 203.0.113.0/24, via: 198.51.100.254}]\n  bonds:\n    - name: bond1\n      mode: balance-alb\n      members: {macs: [\"52:54:00:00:00:0A\", \"52:54:00:00:00:0b\"]}\n  vlans:\n    - {id: 5, on: eth0, mtu: 9000, ipv4: {method: dhcp}}\n  bridges:\n    - name: br-host\n      ports: []\n      stp: true\n  dns: {servers: [192.0.2.53], search: [example.net]}\n",
            serde_json::json!({"addresses": {"eth0": "198.51.100.7"}}),
        );
        let f = network_files(&p).unwrap();
        assert_eq!(
            f.interfaces,
            "# Written by rackseed network.sh for h1 (profile t) from its plan.
# rackseed replaces this file whenever it applies the plan again.

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 198.51.100.7/24
    gateway 198.51.100.1
    mtu 9000
    up ip route replace 203.0.113.0/24 via 198.51.100.254 dev eth0
    down ip route del 203.0.113.0/24 via 198.51.100.254 dev eth0 || true

auto bond1
iface bond1 inet manual
    bond-slaves $members_0
    bond-mode balance-alb
    bond-miimon 100

auto eth0.5
iface eth0.5 inet dhcp
    mtu 9000

auto br-host
iface br-host inet manual
    bridge-ports none
    bridge-stp on
    bridge-fd 0
"
        );
        assert_eq!(f.order, ["eth0", "bond1", "eth0.5", "br-host"]);
        assert_eq!(
            f.resolv_conf.as_deref(),
            Some(
                "# Written by rackseed network.sh from the node's plan.\nsearch example.net\nnameserver 192.0.2.53\n"
            )
        );
        let net = p.network.unwrap();
        assert_eq!(
            net.bonds[0].members.macs,
            ["52:54:00:00:00:0a", "52:54:00:00:00:0b"]
        );
        assert_eq!(net.bonds[0].lacp_rate, None);
        assert_eq!(net.dhcp, ["eth0.5"]);
    }

    #[test]
    fn no_network_section_leaves_the_network_alone() {
        assert_eq!(
            network_files(&plan(
                "storage: {root: {raid: none}}\n",
                serde_json::Value::Null
            )),
            None
        );
    }
}
