//! What one DHCP exchange tells the node's timeline and rackseed's address book. Pure.
//!
//! [`report`] takes the request, rackseed's reply (if any) and how the packet arrived,
//! and says which timeline events to record and which address the node now uses (so
//! its TFTP, HTTP and syslog traffic is attributed to it from the first packet). One
//! function per DHCP message that reaches a timeline: an ACK (or, in proxy mode, an
//! OFFER) rackseed sends, and a REQUEST a node sends to the site's DHCP server.

use super::classify::Request;
use super::decide::{BootFile, Reply};
use crate::config::DhcpMode;
use dhcproto::v4::MessageType;
use std::net::Ipv4Addr;

/// How a packet reached rackseed.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// DHCP mode of this rackseed.
    pub mode: DhcpMode,
    /// rackseed's own address (the server identifier it answers with).
    pub advertise: Ipv4Addr,
    /// Whether the packet came to the PXE boot-server port 4011.
    pub proxy_port: bool,
}

/// The timeline events of one exchange and the address the node is now known by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `(kind, message)` for the node's timeline.
    pub events: Vec<(&'static str, String)>,
    /// The address the node uses from now on, if this exchange tells it.
    pub address: Option<Ipv4Addr>,
}

/// The report of `req` answered by `reply`. `is_node` is false for machines that are
/// neither known nodes nor being discovered: they get no timeline and no attribution.
pub fn report(req: &Request, reply: Option<&Reply>, is_node: bool, at: Arrival) -> Report {
    if !is_node {
        return Report::default();
    }
    match reply {
        Some(r) if r.msg_type == MessageType::Ack => answered(req, r, at),
        Some(r) if r.msg_type == MessageType::Offer && at.mode == DhcpMode::Proxy => {
            answered(req, r, at)
        }
        Some(_) => Report::default(),
        None if req.msg_type == MessageType::Request && at.mode == DhcpMode::Proxy => {
            observed_request(req, at)
        }
        None => Report::default(),
    }
}

/// An ACK (or a proxy OFFER) rackseed sends: one `dhcp` event naming the address, the
/// port and the boot file; the node is known by the address it was given (or the one it
/// already has).
fn answered(req: &Request, r: &Reply, at: Arrival) -> Report {
    let addr = if r.yiaddr.is_unspecified() {
        String::new()
    } else {
        format!(" {}", r.yiaddr)
    };
    let boot = match &r.boot {
        Some(BootFile::Tftp(f)) => format!("; boot file {f} via TFTP"),
        Some(BootFile::Http(u)) => format!("; boot file {u}"),
        None => String::new(),
    };
    let port = if at.proxy_port { " (port 4011)" } else { "" };
    let kind = format!("{:?}", r.msg_type).to_uppercase();
    let address = if !r.yiaddr.is_unspecified() {
        Some(r.yiaddr)
    } else if !req.ciaddr.is_unspecified() {
        Some(req.ciaddr)
    } else {
        None
    };
    Report {
        events: vec![(
            "dhcp",
            format!("{kind}{addr}{port} to {}{boot}", req.client.describe()),
        )],
        address,
    }
}

/// In proxy mode, a REQUEST the node sends to the site's DHCP server for an address:
/// rackseed does not answer it, but records it and knows the node by that address.
fn observed_request(req: &Request, at: Arrival) -> Report {
    match (req.server_id, req.requested_ip) {
        (Some(site), Some(ip)) if site != at.advertise => Report {
            events: vec![(
                "dhcp",
                format!(
                    "REQUEST {ip} from site DHCP server {site} (observed) by {}",
                    req.client.describe()
                ),
            )],
            address: Some(ip),
        },
        _ => Report::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::classify::{Arch, BootClient};
    use crate::dhcp::decide::Destination;

    fn req(msg_type: MessageType) -> Request {
        Request {
            msg_type,
            xid: 1,
            mac: "52:54:00:12:34:56".parse().unwrap(),
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
            client: BootClient::Pxe(Arch::Bios),
            vendor_class: None,
            hostname: None,
            max_size: None,
            client_uuid: None,
            client_id: None,
            circuit_id: None,
            remote_id: None,
        }
    }

    fn reply(msg_type: MessageType, yiaddr: [u8; 4], boot: Option<BootFile>) -> Reply {
        Reply {
            msg_type,
            yiaddr: yiaddr.into(),
            boot,
            lease_secs: None,
            subnet: None,
            hostname: None,
            dest: Destination::Broadcast,
            vendor_class: None,
        }
    }

    const AUTH: Arrival = Arrival {
        mode: DhcpMode::Authoritative,
        advertise: Ipv4Addr::new(192, 0, 2, 1),
        proxy_port: false,
    };
    const PROXY: Arrival = Arrival {
        mode: DhcpMode::Proxy,
        advertise: Ipv4Addr::new(192, 0, 2, 1),
        proxy_port: false,
    };

    #[test]
    fn an_ack_names_address_and_boot_file_and_attributes_the_node() {
        let r = reply(
            MessageType::Ack,
            [192, 0, 2, 100],
            Some(BootFile::Tftp("undionly.kpxe".into())),
        );
        let got = report(&req(MessageType::Request), Some(&r), true, AUTH);
        assert_eq!(
            got,
            Report {
                events: vec![(
                    "dhcp",
                    "ACK 192.0.2.100 to pxe bios; boot file undionly.kpxe via TFTP".into()
                )],
                address: Some("192.0.2.100".parse().unwrap()),
            }
        );
    }

    #[test]
    fn offers_reach_the_timeline_only_in_proxy_mode() {
        let r = reply(MessageType::Offer, [192, 0, 2, 100], None);
        let d = req(MessageType::Discover);
        assert_eq!(report(&d, Some(&r), true, AUTH), Report::default());
        let r = reply(
            MessageType::Offer,
            [0, 0, 0, 0],
            Some(BootFile::Http("http://192.0.2.1:8080/boot/x.ipxe".into())),
        );
        let port = Arrival {
            proxy_port: true,
            ..PROXY
        };
        let got = report(&d, Some(&r), true, port);
        assert_eq!(
            got.events,
            vec![(
                "dhcp",
                "OFFER (port 4011) to pxe bios; boot file http://192.0.2.1:8080/boot/x.ipxe".into()
            )]
        );
        assert_eq!(got.address, None, "no address offered, none known yet");
    }

    #[test]
    fn an_ack_without_an_address_attributes_the_clients_own() {
        let mut q = req(MessageType::Inform);
        q.ciaddr = "192.0.2.77".parse().unwrap();
        let r = reply(MessageType::Ack, [0, 0, 0, 0], None);
        assert_eq!(
            report(&q, Some(&r), true, AUTH).address,
            Some("192.0.2.77".parse().unwrap())
        );
    }

    #[test]
    fn a_proxy_node_requesting_from_the_site_server_is_observed() {
        let mut q = req(MessageType::Request);
        q.server_id = Some("198.51.100.1".parse().unwrap());
        q.requested_ip = Some("198.51.100.50".parse().unwrap());
        let got = report(&q, None, true, PROXY);
        assert_eq!(
            got.events,
            vec![(
                "dhcp",
                "REQUEST 198.51.100.50 from site DHCP server 198.51.100.1 (observed) by pxe bios"
                    .into()
            )]
        );
        assert_eq!(got.address, Some("198.51.100.50".parse().unwrap()));
        // The same request to rackseed itself, or in authoritative mode, is not.
        q.server_id = Some(PROXY.advertise);
        assert_eq!(report(&q, None, true, PROXY), Report::default());
        q.server_id = Some("198.51.100.1".parse().unwrap());
        assert_eq!(report(&q, None, true, AUTH), Report::default());
    }

    #[test]
    fn strangers_and_naks_leave_no_trace() {
        let r = reply(MessageType::Ack, [192, 0, 2, 100], None);
        assert_eq!(
            report(&req(MessageType::Request), Some(&r), false, AUTH),
            Report::default()
        );
        let n = reply(MessageType::Nak, [0, 0, 0, 0], None);
        assert_eq!(
            report(&req(MessageType::Request), Some(&n), true, AUTH),
            Report::default()
        );
    }
}
