//! Who is asking: whether a request on the provisioning network comes from the node
//! whose install token it carries (pure; no I/O).
//!
//! A token in a URL proves only that the caller saw it, and every host on the
//! provisioning LAN can see or guess a boot-script URL. So a node's install script, its
//! preseed and scripts, its agent binary and its event reports are served only to a
//! caller that rackseed can tie to the node by other evidence. Today that evidence is
//! the address: the one rackseed's own DHCP leased to one of the node's NICs (its boot
//! NIC or its installer NIC; authoritative mode), or that the node was seen using in
//! its own DHCP/PXE exchange (ProxyDHCP, where the site server's REQUEST and the
//! port-4011 exchange are observed). A TPM quote or an identity asserted by the node's
//! BMC would be another [`Evidence`] variant judged by [`judge`]; the handlers only
//! ask for a [`Verdict`].

use crate::mac::MacAddr;
use std::net::IpAddr;

/// What is known about a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The caller's source address; the MAC that holds rackseed's live lease on it, and
    /// the node last seen using it in its own DHCP exchange.
    Address {
        addr: IpAddr,
        lease_mac: Option<MacAddr>,
        seen_node: Option<i64>,
    },
}

/// The node a token belongs to: its id and the MACs it boots and installs with.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    pub macs: Vec<MacAddr>,
}

/// Whether the caller is the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The evidence ties the caller to the node.
    Node,
    /// It does not; `lease_mac` holds rackseed's lease on the caller's address, if any.
    Stranger { lease_mac: Option<MacAddr> },
}

/// Judges whether `evidence` shows the caller is `node`. A live lease decides alone (an
/// address rackseed leased to another machine is that machine's, whatever was seen on
/// it before); without one, the node seen using the address in its own DHCP exchange.
pub fn judge(node: &Claimed, evidence: &Evidence) -> Verdict {
    match *evidence {
        Evidence::Address {
            lease_mac: Some(m), ..
        } if node.macs.contains(&m) => Verdict::Node,
        Evidence::Address {
            lease_mac: Some(m), ..
        } => Verdict::Stranger { lease_mac: Some(m) },
        Evidence::Address {
            seen_node: Some(id),
            ..
        } if id == node.id => Verdict::Node,
        Evidence::Address { .. } => Verdict::Stranger { lease_mac: None },
    }
}

/// The timeline text for a refused request: what was asked, from where, and why.
pub fn refusal_text(what: &str, evidence: &Evidence, verdict: Verdict) -> String {
    let Evidence::Address { addr, .. } = evidence;
    let why = match verdict {
        Verdict::Node => return format!("{what} served to {addr}"),
        Verdict::Stranger { lease_mac: Some(m) } => {
            format!("rackseed leased that address to {m}, which is not one of this node's NICs")
        }
        Verdict::Stranger { lease_mac: None } => {
            "this node holds no DHCP lease on that address and was not seen using it".to_string()
        }
    };
    format!(
        "refused {what} to {addr}: {why}; a node's token works only from the address the node booted with"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    fn ev(lease_mac: Option<MacAddr>, seen_node: Option<i64>) -> Evidence {
        Evidence::Address {
            addr: "192.0.2.50".parse().unwrap(),
            lease_mac,
            seen_node,
        }
    }

    #[test]
    fn only_the_nodes_own_nics_and_addresses_are_the_node() {
        let node = Claimed {
            id: 7,
            macs: vec![mac(1), mac(2)],
        };
        assert_eq!(judge(&node, &ev(Some(mac(1)), None)), Verdict::Node);
        assert_eq!(judge(&node, &ev(Some(mac(2)), Some(9))), Verdict::Node);
        assert_eq!(
            judge(&node, &ev(Some(mac(3)), Some(7))),
            Verdict::Stranger {
                lease_mac: Some(mac(3))
            },
            "a live lease of another machine outweighs an older sighting"
        );
        assert_eq!(judge(&node, &ev(None, Some(7))), Verdict::Node);
        assert_eq!(
            judge(&node, &ev(None, Some(8))),
            Verdict::Stranger { lease_mac: None }
        );
        assert_eq!(
            judge(&node, &ev(None, None)),
            Verdict::Stranger { lease_mac: None }
        );
    }

    #[test]
    fn refusals_name_the_address_and_the_lease() {
        let t = refusal_text(
            "the install script",
            &ev(None, None),
            Verdict::Stranger { lease_mac: None },
        );
        assert!(
            t.starts_with(
                "refused the install script to 192.0.2.50: this node holds no DHCP lease"
            ),
            "{t}"
        );
        let t = refusal_text(
            "preseed.cfg",
            &ev(Some(mac(3)), None),
            Verdict::Stranger {
                lease_mac: Some(mac(3)),
            },
        );
        assert!(
            t.contains("leased that address to 52:54:00:00:00:03"),
            "{t}"
        );
    }
}
