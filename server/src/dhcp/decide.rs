//! DHCP decisions as plain functions: which boot file a client gets, which subnet and
//! address, which reply goes where. Also builds the reply message.
//!
//! Pure: typed request + context + lease table in, [`Outcome`] out. No sockets, no
//! inventory writes (the server persists what the outcome says before sending).

use super::classify::{Arch, BootClient, Request};
use super::leases::LeaseTable;
use crate::bootfiles::{IPXE_BIOS, IPXE_EFI, IPXE_SNPONLY, SHIM_EFI};
use crate::config::{ChainloadPolicy, DhcpConfig, DhcpMode, EfiBinary, Subnet, UnknownPolicy};
use crate::mac::MacAddr;
use crate::node::{LeaseWrite, UnixMs};
use dhcproto::v4::{self, DhcpOption, Flags, Message, MessageType, Opcode};
use std::net::{Ipv4Addr, SocketAddrV4};

/// What a booting client is told to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootFile {
    /// A name in rackseed's TFTP tree.
    Tftp(String),
    /// A full HTTP URL.
    Http(String),
}

impl BootFile {
    /// The text for the `file` field and option 67.
    pub fn as_str(&self) -> &str {
        match self {
            BootFile::Tftp(s) | BootFile::Http(s) => s,
        }
    }
}

/// The URL of a node's iPXE script, as iPXE is told to fetch it.
pub fn script_url(base_url: &str, mac: MacAddr) -> String {
    format!("{base_url}/boot/{}.ipxe", mac.hyphenated())
}

/// The boot file for a client: an iPXE binary for firmware, the node's script for
/// iPXE. `chainloaded_recently` is true when this MAC was given rackseed's iPXE binary
/// within the chainload window (so `always-once` cannot loop).
pub fn boot_file_for(
    client: &BootClient,
    policy: ChainloadPolicy,
    chainloaded_recently: bool,
    efi: EfiBinary,
    mac: MacAddr,
    base_url: &str,
) -> Option<BootFile> {
    let binary_for = |arch: &Arch| -> Option<BootFile> {
        match arch {
            Arch::Bios => Some(BootFile::Tftp(IPXE_BIOS.into())),
            Arch::EfiX64 => Some(BootFile::Tftp(match efi {
                EfiBinary::Ipxe => IPXE_EFI.into(),
                EfiBinary::Snponly => IPXE_SNPONLY.into(),
                EfiBinary::Shim => SHIM_EFI.into(),
            })),
            Arch::EfiX64Http => Some(BootFile::Http(format!("{base_url}/ipxe/{IPXE_EFI}"))),
            _ => None,
        }
    };
    match client {
        BootClient::None => None,
        BootClient::Ipxe(arch) => {
            if policy == ChainloadPolicy::AlwaysOnce && !chainloaded_recently {
                binary_for(arch)
            } else {
                Some(BootFile::Http(script_url(base_url, mac)))
            }
        }
        BootClient::Pxe(arch) | BootClient::HttpBoot(arch) => binary_for(arch),
    }
}

/// Where a reply is sent (RFC 2131 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the receiving interface.
    Broadcast,
    /// A client that already has an address, or a proxyDHCP client on port 4011.
    Unicast(SocketAddrV4),
    /// The relay agent at giaddr, port 67.
    Relay(Ipv4Addr),
}

/// RFC 2131 4.1: relay if giaddr is set; NAKs broadcast; unicast to ciaddr when the
/// client has one; otherwise broadcast (rackseed does not inject ARP entries).
pub fn destination(req: &Request, msg_type: MessageType) -> Destination {
    if !req.giaddr.is_unspecified() {
        return Destination::Relay(req.giaddr);
    }
    if msg_type == MessageType::Nak {
        return Destination::Broadcast;
    }
    if !req.ciaddr.is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(req.ciaddr, 68));
    }
    Destination::Broadcast
}

/// The subnet a request belongs to: by giaddr when relayed, else the subnet of the
/// interface it arrived on.
pub fn choose_subnet<'a>(
    cfg: &'a DhcpConfig,
    req: &Request,
    arrived_on: Option<&'a Subnet>,
) -> Option<&'a Subnet> {
    if !req.giaddr.is_unspecified() {
        return cfg.subnets.iter().find(|s| s.network.contains(&req.giaddr));
    }
    arrived_on
}

/// What rackseed knows of the requesting MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: i64,
    pub hostname: Option<String>,
    pub domain: Option<String>,
}

/// Everything a decision may look at besides the request and the lease table.
pub struct Ctx<'a> {
    pub dhcp: &'a DhcpConfig,
    pub server_ip: Ipv4Addr,
    pub base_url: &'a str,
    pub efi_binary: EfiBinary,
    pub arrived_on: Option<&'a Subnet>,
    pub node: Option<&'a NodeView>,
    pub now: UnixMs,
    pub chainloaded_recently: bool,
}

/// A reply to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub msg_type: MessageType,
    pub yiaddr: Ipv4Addr,
    pub boot: Option<BootFile>,
    pub lease_secs: Option<u32>,
    pub subnet: Option<Subnet>,
    pub hostname: Option<String>,
    pub dest: Destination,
    /// `PXEClient` or `HTTPClient` when answering a network-boot firmware.
    pub vendor_class: Option<&'static str>,
}

/// The result of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Option<Reply>,
    /// Must be durable before the reply is sent.
    pub persist: Option<LeaseWrite>,
    /// What happened, for logs and timelines.
    pub note: String,
    /// True when this reply hands rackseed's iPXE binary to the client.
    pub chainloads: bool,
}

impl Outcome {
    fn silent(note: impl Into<String>) -> Outcome {
        Outcome {
            reply: None,
            persist: None,
            note: note.into(),
            chainloads: false,
        }
    }
}

fn vendor_class_for(client: &BootClient) -> Option<&'static str> {
    match client {
        BootClient::Pxe(_) => Some("PXEClient"),
        BootClient::HttpBoot(_) => Some("HTTPClient"),
        _ => None,
    }
}

fn lease_secs(ctx: &Ctx<'_>, subnet: &Subnet) -> u32 {
    subnet
        .lease_time
        .unwrap_or(ctx.dhcp.lease_time)
        .as_secs()
        .min(u32::MAX as u64) as u32
}

/// Authoritative mode: addresses from pools and reservations, plus boot information.
pub fn decide_authoritative(req: &Request, ctx: &Ctx<'_>, table: &mut LeaseTable) -> Outcome {
    if ctx.node.is_none() && ctx.dhcp.unknown == UnknownPolicy::Ignore {
        return Outcome::silent("unknown MAC ignored (dhcp.unknown = \"ignore\")");
    }
    let Some(subnet) = choose_subnet(ctx.dhcp, req, ctx.arrived_on) else {
        return Outcome::silent(if req.giaddr.is_unspecified() {
            "no subnet is configured for the interface this arrived on".to_string()
        } else {
            format!("no subnet contains relay address {}", req.giaddr)
        });
    };
    let a = Answer {
        req,
        ctx,
        subnet,
        boot: boot_file_for(
            &req.client,
            ctx.dhcp.chainload,
            ctx.chainloaded_recently,
            ctx.efi_binary,
            req.mac,
            ctx.base_url,
        ),
        secs: lease_secs(ctx, subnet),
        hostname: ctx.node.and_then(|n| n.hostname.clone()),
    };
    match req.msg_type {
        MessageType::Discover => on_discover(&a, table),
        MessageType::Request => on_request(&a, table),
        MessageType::Release => on_release(req, table),
        MessageType::Decline => on_decline(req, ctx, table),
        MessageType::Inform => on_inform(&a),
        other => Outcome::silent(format!("{other:?} is not handled")),
    }
}

/// What every authoritative answer to one request shares: the subnet, boot file,
/// lease time and hostname.
struct Answer<'a> {
    req: &'a Request,
    ctx: &'a Ctx<'a>,
    subnet: &'a Subnet,
    boot: Option<BootFile>,
    secs: u32,
    hostname: Option<String>,
}

impl Answer<'_> {
    fn reply(&self, msg_type: MessageType, yiaddr: Ipv4Addr, lease: Option<u32>) -> Reply {
        Reply {
            msg_type,
            yiaddr,
            boot: if msg_type == MessageType::Nak {
                None
            } else {
                self.boot.clone()
            },
            lease_secs: lease,
            subnet: Some(self.subnet.clone()),
            hostname: self.hostname.clone(),
            dest: destination(self.req, msg_type),
            vendor_class: vendor_class_for(&self.req.client),
        }
    }

    fn nak(&self, note: String) -> Outcome {
        Outcome {
            reply: Some(Reply {
                subnet: None,
                hostname: None,
                vendor_class: None,
                ..self.reply(MessageType::Nak, Ipv4Addr::UNSPECIFIED, None)
            }),
            persist: None,
            note,
            chainloads: false,
        }
    }
}

/// DISCOVER: offer an address (held for `dhcp.offer_hold`), or stay silent when the
/// pool has none.
fn on_discover(a: &Answer<'_>, table: &mut LeaseTable) -> Outcome {
    let (req, ctx) = (a.req, a.ctx);
    match table.pick(req.mac, a.subnet, req.requested_ip, ctx.now) {
        Ok(ip) => {
            table.offer(
                req.mac,
                ip,
                ctx.now + ctx.dhcp.offer_hold.as_millis() as i64,
            );
            Outcome {
                reply: Some(a.reply(MessageType::Offer, ip, Some(a.secs))),
                persist: None,
                note: format!("offer {ip}"),
                chainloads: false,
            }
        }
        Err(e) => Outcome::silent(e.to_string()),
    }
}

/// REQUEST (SELECTING, INIT-REBOOT, RENEWING, REBINDING): ACK and bind the address the
/// client may have, NAK one it may not, stay silent where RFC 2131 says so.
fn on_request(a: &Answer<'_>, table: &mut LeaseTable) -> Outcome {
    let (req, ctx, subnet) = (a.req, a.ctx, a.subnet);
    let selecting = req.server_id.is_some();
    if let Some(sid) = req.server_id
        && sid != ctx.server_ip
    {
        table.forget_offer(req.mac);
        return Outcome::silent(format!("client chose server {sid}"));
    }
    // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and
    // REBINDING in ciaddr.
    let Some(wanted) = req
        .requested_ip
        .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr))
    else {
        return a.nak("REQUEST names no address".into());
    };
    if !subnet.network.contains(&wanted) {
        return a.nak(format!("{wanted} is not in {}", subnet.network));
    }
    let ours = table.lease_of(req.mac).map(|l| l.ip);
    let reserved = table.reservation(req.mac, subnet);
    let acceptable = match reserved {
        Some(r) => r == wanted,
        None => {
            ours == Some(wanted)
                || (!selecting
                    && subnet
                        .range
                        .is_some_and(|(lo, hi)| wanted >= lo && wanted <= hi)
                    && table.available_to(wanted, req.mac, subnet, ctx.now))
        }
    };
    if !acceptable {
        if !selecting
            && ours.is_none()
            && reserved.is_none()
            && table
                .lease_at(wanted)
                .is_none_or(|l| l.expires_at <= ctx.now)
        {
            // RFC 2131 4.3.2: no record of this client and the address is not
            // taken → stay silent in INIT-REBOOT.
            return Outcome::silent(format!("no record of {} for {wanted}", req.mac));
        }
        return a.nak(format!("{wanted} is not leased to {}", req.mac));
    }
    let until = ctx.now + i64::from(a.secs) * 1000;
    let write = table.bind(
        req.mac,
        wanted,
        until,
        a.hostname.clone().or(req.hostname.clone()),
    );
    Outcome {
        reply: Some(a.reply(MessageType::Ack, wanted, Some(a.secs))),
        persist: Some(write),
        note: format!("ack {wanted}"),
        chainloads: matches!(a.boot, Some(BootFile::Tftp(_))),
    }
}

/// RELEASE: the client gives its address back.
fn on_release(req: &Request, table: &mut LeaseTable) -> Outcome {
    match table.release(req.mac, req.ciaddr) {
        Some(w) => Outcome {
            reply: None,
            persist: Some(w),
            note: format!("released {}", req.ciaddr),
            chainloads: false,
        },
        None => Outcome::silent(format!("release of {} not held by {}", req.ciaddr, req.mac)),
    }
}

/// DECLINE: the address is in use by someone else; hold it out of the pool for
/// `dhcp.decline_hold`.
fn on_decline(req: &Request, ctx: &Ctx<'_>, table: &mut LeaseTable) -> Outcome {
    let Some(ip) = req.requested_ip else {
        return Outcome::silent("DECLINE without option 50");
    };
    let until = ctx.now + ctx.dhcp.decline_hold.as_millis() as i64;
    match table.decline(req.mac, ip, until) {
        Some(w) => Outcome {
            reply: None,
            persist: Some(w),
            note: format!("declined {ip}"),
            chainloads: false,
        },
        None => Outcome::silent(format!("decline of {ip} not held by {}", req.mac)),
    }
}

/// INFORM: configuration (and boot file) for a client that has its address already.
fn on_inform(a: &Answer<'_>) -> Outcome {
    let req = a.req;
    if req.ciaddr.is_unspecified() {
        return Outcome::silent("INFORM without ciaddr");
    }
    let mut r = a.reply(MessageType::Ack, Ipv4Addr::UNSPECIFIED, None);
    r.dest = destination(req, MessageType::Ack);
    Outcome {
        reply: Some(r),
        persist: None,
        note: format!("inform from {}", req.ciaddr),
        chainloads: false,
    }
}

/// ProxyDHCP (PXE spec): no addresses, boot information only. `on_4011` is true for
/// requests that arrived on the proxy port; `src` is where they came from.
pub fn decide_proxy(req: &Request, ctx: &Ctx<'_>, on_4011: bool, src: SocketAddrV4) -> Outcome {
    if !req.client.is_boot() {
        return Outcome::silent("not a network-boot client");
    }
    if ctx.node.is_none() && ctx.dhcp.unknown == UnknownPolicy::Ignore {
        return Outcome::silent("unknown MAC ignored (dhcp.unknown = \"ignore\")");
    }
    let Some(boot) = boot_file_for(
        &req.client,
        ctx.dhcp.chainload,
        ctx.chainloaded_recently,
        ctx.efi_binary,
        req.mac,
        ctx.base_url,
    ) else {
        return Outcome::silent(format!("no boot file for {}", req.client.describe()));
    };
    let (msg_type, dest) = match (on_4011, req.msg_type) {
        (false, MessageType::Discover) => {
            (MessageType::Offer, destination(req, MessageType::Offer))
        }
        (true, MessageType::Request | MessageType::Inform) => {
            let to = if req.ciaddr.is_unspecified() {
                *src.ip()
            } else {
                req.ciaddr
            };
            (
                MessageType::Ack,
                Destination::Unicast(SocketAddrV4::new(to, src.port())),
            )
        }
        (false, MessageType::Request) => {
            if req.server_id == Some(ctx.server_ip) {
                // Some firmware requests the proxy offer on port 67 itself.
                (MessageType::Ack, destination(req, MessageType::Ack))
            } else {
                return Outcome::silent("request for the site DHCP server");
            }
        }
        (_, t) => return Outcome::silent(format!("{t:?} is not answered in proxy mode")),
    };
    let chainloads = msg_type == MessageType::Ack && matches!(boot, BootFile::Tftp(_));
    Outcome {
        reply: Some(Reply {
            msg_type,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            boot: Some(boot),
            lease_secs: None,
            subnet: None,
            hostname: None,
            dest,
            // The PXE spec requires option 60 `PXEClient` in every proxyDHCP reply.
            vendor_class: Some(vendor_class_for(&req.client).unwrap_or("PXEClient")),
        }),
        persist: None,
        note: format!(
            "proxy {}",
            if msg_type == MessageType::Offer {
                "offer"
            } else {
                "ack"
            }
        ),
        chainloads,
    }
}

/// Which mode's decision applies.
pub fn decide(
    req: &Request,
    ctx: &Ctx<'_>,
    table: &mut LeaseTable,
    on_4011: bool,
    src: SocketAddrV4,
) -> Outcome {
    match ctx.dhcp.mode {
        DhcpMode::Authoritative => decide_authoritative(req, ctx, table),
        DhcpMode::Proxy => decide_proxy(req, ctx, on_4011, src),
        DhcpMode::Disabled => Outcome::silent("DHCP is disabled"),
    }
}

/// PXE vendor options (option 43): discovery control 8 = "use the boot file in this
/// reply, do not search for boot servers".
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// Builds the reply message for `req_msg` (xid, chaddr, flags and giaddr copied).
pub fn encode_reply(
    req_msg: &Message,
    req: &Request,
    reply: &Reply,
    server_ip: Ipv4Addr,
) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(v4::HType::Eth)
        .set_xid(req_msg.xid())
        .set_flags(if req.broadcast {
            Flags::default().set_broadcast()
        } else {
            Flags::default()
        })
        .set_chaddr(req_msg.chaddr())
        .set_giaddr(req_msg.giaddr())
        .set_yiaddr(reply.yiaddr);
    if reply.msg_type != MessageType::Nak {
        m.set_ciaddr(req_msg.ciaddr());
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(reply.msg_type));
    opts.insert(DhcpOption::ServerIdentifier(server_ip));
    // RFC 3046 2.2: a relay's agent information goes back to it unchanged (last;
    // the encoder puts option 82 at the end), so that it can forward the reply.
    if !req_msg.giaddr().is_unspecified()
        && let Some(o @ DhcpOption::RelayAgentInformation(_)) =
            req_msg.opts().get(v4::OptionCode::RelayAgentInformation)
    {
        opts.insert(o.clone());
    }
    if reply.msg_type == MessageType::Nak {
        return m;
    }
    if let Some(secs) = reply.lease_secs {
        opts.insert(DhcpOption::AddressLeaseTime(secs));
        opts.insert(DhcpOption::Renewal(secs / 2));
        opts.insert(DhcpOption::Rebinding(secs / 8 * 7));
    }
    if let Some(s) = &reply.subnet {
        opts.insert(DhcpOption::SubnetMask(s.network.netmask()));
        opts.insert(DhcpOption::BroadcastAddr(s.network.broadcast()));
        if let Some(r) = s.router {
            opts.insert(DhcpOption::Router(vec![r]));
        }
        if !s.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
    }
    if let Some(h) = &reply.hostname {
        opts.insert(DhcpOption::Hostname(
            h.split('.').next().unwrap_or(h).to_string(),
        ));
    }
    if let Some(boot) = &reply.boot {
        // next-server is set even for HTTP boot files: iPXE only accepts a proxyDHCP
        // reply as carrying PXE options when siaddr and a boot file are both present.
        m.set_siaddr(server_ip);
        m.set_fname_str(boot.as_str());
        let opts = m.opts_mut();
        opts.insert(DhcpOption::BootfileName(boot.as_str().as_bytes().to_vec()));
        if let Some(vc) = reply.vendor_class {
            opts.insert(DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()));
            if vc == "PXEClient" {
                opts.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
            }
        }
        if let Some(uuid) = &req.client_uuid {
            opts.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::super::classify::{
        classify,
        tests::{pxe, request},
    };
    use super::*;
    use crate::config::Config;

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const BASE: &str = "http://192.0.2.1:8080";

    fn cfg(mode: &str, extra: &str) -> Config {
        let text = format!(
            "[server]\nadvertise = \"192.0.2.1\"\n[dhcp]\nmode = \"{mode}\"\n{extra}\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.109\"\nrouter = \"192.0.2.1\"\ndns = [\"192.0.2.1\"]\ndomain = \"prov.example\"\n[[dhcp.subnets]]\nnetwork = \"198.51.100.0/24\"\nrange = \"198.51.100.10-198.51.100.19\"\n"
        );
        Config::parse_with(&text, "t", &|_| None).unwrap()
    }

    fn ctx<'a>(c: &'a Config, node: Option<&'a NodeView>) -> Ctx<'a> {
        Ctx {
            dhcp: &c.dhcp,
            server_ip: SERVER,
            base_url: BASE,
            efi_binary: c.boot.efi_binary,
            arrived_on: c.dhcp.subnets.first(),
            node,
            now: 1_000,
            chainloaded_recently: false,
        }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn src() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
    }

    #[test]
    fn boot_file_per_arch_and_user_class() {
        let m = mac(1);
        let f = |c, p, r, e| boot_file_for(&c, p, r, e, m, BASE);
        use ChainloadPolicy::*;
        assert_eq!(
            f(
                BootClient::Pxe(Arch::Bios),
                Firmware,
                false,
                EfiBinary::Ipxe
            ),
            Some(BootFile::Tftp("undionly.kpxe".into()))
        );
        assert_eq!(
            f(
                BootClient::Pxe(Arch::EfiX64),
                Firmware,
                false,
                EfiBinary::Ipxe
            ),
            Some(BootFile::Tftp("ipxe.efi".into()))
        );
        assert_eq!(
            f(
                BootClient::Pxe(Arch::EfiX64),
                Firmware,
                false,
                EfiBinary::Snponly
            ),
            Some(BootFile::Tftp("snponly.efi".into()))
        );
        assert_eq!(
            f(
                BootClient::HttpBoot(Arch::EfiX64Http),
                Firmware,
                false,
                EfiBinary::Ipxe
            ),
            Some(BootFile::Http("http://192.0.2.1:8080/ipxe/ipxe.efi".into()))
        );
        assert_eq!(
            f(
                BootClient::Pxe(Arch::EfiX64),
                Firmware,
                false,
                EfiBinary::Shim
            ),
            Some(BootFile::Tftp(SHIM_EFI.into()))
        );
        let script = Some(BootFile::Http(
            "http://192.0.2.1:8080/boot/52-54-00-00-00-01.ipxe".into(),
        ));
        assert_eq!(
            f(
                BootClient::Ipxe(Arch::Bios),
                Firmware,
                false,
                EfiBinary::Ipxe
            ),
            script
        );
        assert_eq!(
            f(
                BootClient::Ipxe(Arch::EfiX64),
                Firmware,
                false,
                EfiBinary::Ipxe
            ),
            script
        );
        assert_eq!(f(BootClient::None, Firmware, false, EfiBinary::Ipxe), None);
        assert_eq!(
            f(
                BootClient::Pxe(Arch::EfiArm64),
                Firmware,
                false,
                EfiBinary::Ipxe
            ),
            None
        );
    }

    #[test]
    fn always_once_chainloads_once_then_gives_the_script() {
        let m = mac(1);
        let c = BootClient::Ipxe(Arch::Bios);
        assert_eq!(
            boot_file_for(
                &c,
                ChainloadPolicy::AlwaysOnce,
                false,
                EfiBinary::Ipxe,
                m,
                BASE
            ),
            Some(BootFile::Tftp("undionly.kpxe".into()))
        );
        assert!(matches!(
            boot_file_for(
                &c,
                ChainloadPolicy::AlwaysOnce,
                true,
                EfiBinary::Ipxe,
                m,
                BASE
            ),
            Some(BootFile::Http(_))
        ));
    }

    #[test]
    fn dora_binds_and_persists_only_on_ack() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let d = classify(&request(MessageType::Discover, 1, &pxe(0))).unwrap();
        let o = decide_authoritative(&d, &ctx(&c, None), &mut t);
        let offer = o.reply.unwrap();
        assert_eq!(offer.msg_type, MessageType::Offer);
        assert_eq!(offer.dest, Destination::Broadcast);
        assert_eq!(offer.boot, Some(BootFile::Tftp("undionly.kpxe".into())));
        assert!(o.persist.is_none());
        let ip = offer.yiaddr;
        let mut opts = pxe(0);
        opts.push(DhcpOption::RequestedIpAddress(ip));
        opts.push(DhcpOption::ServerIdentifier(SERVER));
        let r = classify(&request(MessageType::Request, 1, &opts)).unwrap();
        let o = decide_authoritative(&r, &ctx(&c, None), &mut t);
        assert_eq!(o.reply.as_ref().unwrap().msg_type, MessageType::Ack);
        assert!(
            matches!(o.persist, Some(LeaseWrite::Upsert(ref row)) if row.ip == ip && row.state == "bound")
        );
        assert!(o.chainloads);
    }

    #[test]
    fn request_for_another_server_is_silent_and_drops_offer() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let d = classify(&request(MessageType::Discover, 1, &[])).unwrap();
        let ip = decide_authoritative(&d, &ctx(&c, None), &mut t)
            .reply
            .unwrap()
            .yiaddr;
        let r = classify(&request(
            MessageType::Request,
            1,
            &[
                DhcpOption::RequestedIpAddress(ip),
                DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 254)),
            ],
        ))
        .unwrap();
        let o = decide_authoritative(&r, &ctx(&c, None), &mut t);
        assert!(o.reply.is_none());
        assert!(t.lease_of(mac(1)).is_none());
    }

    #[test]
    fn wrong_address_gets_nak_broadcast() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        t.bind(mac(2), Ipv4Addr::new(192, 0, 2, 100), 999_999, None);
        let r = classify(&request(
            MessageType::Request,
            1,
            &[DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                192, 0, 2, 100,
            ))],
        ))
        .unwrap();
        let o = decide_authoritative(&r, &ctx(&c, None), &mut t);
        let reply = o.reply.unwrap();
        assert_eq!(reply.msg_type, MessageType::Nak);
        assert_eq!(reply.dest, Destination::Broadcast);
        // Outside the subnet.
        let r = classify(&request(
            MessageType::Request,
            1,
            &[DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                203, 0, 113, 5,
            ))],
        ))
        .unwrap();
        assert_eq!(
            decide_authoritative(&r, &ctx(&c, None), &mut t)
                .reply
                .unwrap()
                .msg_type,
            MessageType::Nak
        );
    }

    #[test]
    fn init_reboot_without_record_is_silent_and_free_address_is_acked() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        // A free pool address the client remembers (e.g. after our database was lost).
        let r = classify(&request(
            MessageType::Request,
            1,
            &[DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                192, 0, 2, 105,
            ))],
        ))
        .unwrap();
        assert_eq!(
            decide_authoritative(&r, &ctx(&c, None), &mut t)
                .reply
                .unwrap()
                .msg_type,
            MessageType::Ack
        );
        // Outside the pool, no record: silent.
        let r = classify(&request(
            MessageType::Request,
            2,
            &[DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 50))],
        ))
        .unwrap();
        assert!(
            decide_authoritative(&r, &ctx(&c, None), &mut t)
                .reply
                .is_none()
        );
    }

    #[test]
    fn renewal_is_unicast_to_ciaddr() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let ip = Ipv4Addr::new(192, 0, 2, 101);
        t.bind(mac(1), ip, 5_000, None);
        let mut m = request(MessageType::Request, 1, &[]);
        m.set_ciaddr(ip).set_flags(Flags::default());
        let r = classify(&m).unwrap();
        let o = decide_authoritative(&r, &ctx(&c, None), &mut t);
        let reply = o.reply.unwrap();
        assert_eq!(reply.msg_type, MessageType::Ack);
        assert_eq!(reply.dest, Destination::Unicast(SocketAddrV4::new(ip, 68)));
        assert!(o.persist.is_some());
    }

    #[test]
    fn relayed_request_uses_giaddr_subnet_and_answers_the_relay() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let mut m = request(MessageType::Discover, 1, &[]);
        m.set_giaddr(Ipv4Addr::new(198, 51, 100, 1));
        let r = classify(&m).unwrap();
        let reply = decide_authoritative(&r, &ctx(&c, None), &mut t)
            .reply
            .unwrap();
        assert_eq!(
            reply.dest,
            Destination::Relay(Ipv4Addr::new(198, 51, 100, 1))
        );
        assert!(
            reply.yiaddr >= Ipv4Addr::new(198, 51, 100, 10)
                && reply.yiaddr <= Ipv4Addr::new(198, 51, 100, 19)
        );
        // A relay in no configured subnet gets nothing.
        let mut m = request(MessageType::Discover, 1, &[]);
        m.set_giaddr(Ipv4Addr::new(203, 0, 113, 1));
        let o = decide_authoritative(&classify(&m).unwrap(), &ctx(&c, None), &mut t);
        assert!(o.reply.is_none());
        assert_eq!(o.note, "no subnet contains relay address 203.0.113.1");
    }

    #[test]
    fn release_and_decline() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let ip = Ipv4Addr::new(192, 0, 2, 101);
        t.bind(mac(1), ip, 5_000_000, None);
        let mut m = request(MessageType::Release, 1, &[]);
        m.set_ciaddr(ip);
        let o = decide_authoritative(&classify(&m).unwrap(), &ctx(&c, None), &mut t);
        assert!(o.reply.is_none());
        assert_eq!(o.persist, Some(LeaseWrite::Delete(ip)));
        t.bind(mac(1), ip, 5_000_000, None);
        let d = classify(&request(
            MessageType::Decline,
            1,
            &[DhcpOption::RequestedIpAddress(ip)],
        ))
        .unwrap();
        let o = decide_authoritative(&d, &ctx(&c, None), &mut t);
        assert!(
            matches!(o.persist, Some(LeaseWrite::Upsert(ref r)) if r.state == "declined" && r.mac.is_none())
        );
    }

    #[test]
    fn inform_gets_options_without_address() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let mut m = request(MessageType::Inform, 1, &[]);
        m.set_ciaddr(Ipv4Addr::new(192, 0, 2, 77));
        let reply = decide_authoritative(&classify(&m).unwrap(), &ctx(&c, None), &mut t)
            .reply
            .unwrap();
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.lease_secs, None);
        assert_eq!(
            reply.dest,
            Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 77), 68))
        );
    }

    #[test]
    fn ignore_policy_answers_only_known_nodes() {
        let c = cfg("authoritative", "unknown = \"ignore\"");
        let mut t = LeaseTable::default();
        let d = classify(&request(MessageType::Discover, 1, &pxe(0))).unwrap();
        assert!(
            decide_authoritative(&d, &ctx(&c, None), &mut t)
                .reply
                .is_none()
        );
        let n = NodeView {
            id: 1,
            hostname: Some("web1".into()),
            domain: None,
        };
        let reply = decide_authoritative(&d, &ctx(&c, Some(&n)), &mut t)
            .reply
            .unwrap();
        assert_eq!(reply.hostname.as_deref(), Some("web1"));
    }

    #[test]
    fn proxy_offers_boot_only_to_boot_clients() {
        let c = cfg("proxy", "");
        let mut t = LeaseTable::default();
        let plain = classify(&request(MessageType::Discover, 1, &[])).unwrap();
        assert!(
            decide(&plain, &ctx(&c, None), &mut t, false, src())
                .reply
                .is_none()
        );
        let d = classify(&request(MessageType::Discover, 1, &pxe(7))).unwrap();
        let o = decide(&d, &ctx(&c, None), &mut t, false, src());
        let reply = o.reply.unwrap();
        assert_eq!(reply.msg_type, MessageType::Offer);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.boot, Some(BootFile::Tftp("ipxe.efi".into())));
        assert_eq!(reply.vendor_class, Some("PXEClient"));
        assert!(t.is_empty(), "proxy mode never allocates");
        // The site server's REQUEST on port 67 is not ours.
        let r = classify(&request(
            MessageType::Request,
            1,
            &[
                pxe(7),
                vec![DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 254))],
            ]
            .concat(),
        ))
        .unwrap();
        assert!(
            decide(&r, &ctx(&c, None), &mut t, false, src())
                .reply
                .is_none()
        );
    }

    #[test]
    fn proxy_port_4011_acks_unicast_to_the_client() {
        let c = cfg("proxy", "");
        let mut t = LeaseTable::default();
        let mut opts = pxe(0);
        opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let mut m = request(MessageType::Request, 1, &opts);
        m.set_ciaddr(Ipv4Addr::new(192, 0, 2, 150));
        let r = classify(&m).unwrap();
        let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 150), 68);
        let reply = decide(&r, &ctx(&c, None), &mut t, true, from)
            .reply
            .unwrap();
        assert_eq!(reply.msg_type, MessageType::Ack);
        assert_eq!(reply.dest, Destination::Unicast(from));
        assert_eq!(
            reply.boot,
            Some(BootFile::Http(
                "http://192.0.2.1:8080/boot/52-54-00-00-00-01.ipxe".into()
            ))
        );
    }

    #[test]
    fn a_relays_option_82_is_read_and_echoed_back_unchanged() {
        use dhcproto::v4::relay::{RelayAgentInformation, RelayInfo};
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let mut info = RelayAgentInformation::default();
        info.insert(RelayInfo::AgentCircuitId(b"b-07".to_vec()));
        info.insert(RelayInfo::AgentRemoteId(vec![0, 6, 2, 0, 0, 0, 0, 7]));
        let mut opts = pxe(0);
        opts.push(DhcpOption::RelayAgentInformation(info.clone()));
        let mut msg = request(MessageType::Discover, 3, &opts);
        msg.set_giaddr(Ipv4Addr::new(198, 51, 100, 1));
        let r = classify(&msg).unwrap();
        assert_eq!(r.circuit_id.as_deref(), Some("b-07"));
        assert_eq!(r.remote_id.as_deref(), Some("0x0006020000000007"));
        let reply = decide_authoritative(&r, &ctx(&c, None), &mut t)
            .reply
            .unwrap();
        let m = encode_reply(&msg, &r, &reply, SERVER);
        assert_eq!(m.giaddr(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(
            m.opts().get(v4::OptionCode::RelayAgentInformation),
            Some(&DhcpOption::RelayAgentInformation(info))
        );
        // Not relayed (giaddr 0): option 82 from a client is neither read nor echoed.
        msg.set_giaddr(Ipv4Addr::UNSPECIFIED);
        let r = classify(&msg).unwrap();
        assert_eq!(r.circuit_id, None);
        let reply = decide_authoritative(&r, &ctx(&c, None), &mut t)
            .reply
            .unwrap();
        let m = encode_reply(&msg, &r, &reply, SERVER);
        assert!(
            m.opts()
                .get(v4::OptionCode::RelayAgentInformation)
                .is_none()
        );
    }

    #[test]
    fn encoded_reply_carries_pxe_options() {
        let c = cfg("authoritative", "");
        let mut t = LeaseTable::default();
        let mut opts = pxe(0);
        opts.push(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
        let msg = request(MessageType::Discover, 1, &opts);
        let r = classify(&msg).unwrap();
        let reply = decide_authoritative(&r, &ctx(&c, None), &mut t)
            .reply
            .unwrap();
        let m = encode_reply(&msg, &r, &reply, SERVER);
        assert_eq!(m.opcode(), Opcode::BootReply);
        // An HTTP boot file (iPXE script) still carries next-server.
        let mut o = pxe(0);
        o.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let msg2 = request(MessageType::Discover, 2, &o);
        let r2 = classify(&msg2).unwrap();
        let reply2 = decide_authoritative(&r2, &ctx(&c, None), &mut t)
            .reply
            .unwrap();
        assert_eq!(encode_reply(&msg2, &r2, &reply2, SERVER).siaddr(), SERVER);
        assert_eq!(m.xid(), msg.xid());
        assert_eq!(m.siaddr(), SERVER);
        assert_eq!(m.fname_str().unwrap().unwrap(), "undionly.kpxe");
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert!(
            matches!(m.opts().get(v4::OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient")
        );
        assert!(m.opts().get(v4::OptionCode::VendorExtensions).is_some());
        assert!(
            m.opts()
                .get(v4::OptionCode::ClientMachineIdentifier)
                .is_some()
        );
        assert!(
            matches!(m.opts().get(v4::OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(mask)) if *mask == Ipv4Addr::new(255, 255, 255, 0))
        );
        assert!(matches!(
            m.opts().get(v4::OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(3600))
        ));
    }
}
