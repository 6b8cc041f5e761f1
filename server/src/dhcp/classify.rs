//! Turns a decoded DHCP message into a typed [`Request`]: who is asking, for what, and
//! what kind of network-boot client it is (option 93 arch, option 60, user class).
//!
//! Pure: no sockets, no inventory.

use crate::mac::MacAddr;
use dhcproto::v4::relay::{RelayCode, RelayInfo};
use dhcproto::v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode};
use std::fmt;
use std::net::Ipv4Addr;

/// The client system architecture of RFC 4578 option 93 (IANA registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 0: x86 BIOS.
    Bios,
    /// 6: x86 UEFI.
    EfiIa32,
    /// 7 or 9: x86-64 UEFI.
    EfiX64,
    /// 16: x86-64 UEFI HTTP boot.
    EfiX64Http,
    /// 11: ARM64 UEFI.
    EfiArm64,
    /// 19: ARM64 UEFI HTTP boot.
    EfiArm64Http,
    Other(u16),
}

impl Arch {
    /// From the numeric option 93 value.
    pub fn from_code(code: u16) -> Arch {
        match code {
            0 => Arch::Bios,
            6 => Arch::EfiIa32,
            7 | 9 => Arch::EfiX64,
            16 => Arch::EfiX64Http,
            11 => Arch::EfiArm64,
            19 => Arch::EfiArm64Http,
            n => Arch::Other(n),
        }
    }

    /// The name used in the inventory and the API.
    pub fn as_str(&self) -> String {
        match self {
            Arch::Bios => "bios".into(),
            Arch::EfiIa32 => "efi-ia32".into(),
            Arch::EfiX64 => "efi-x64".into(),
            Arch::EfiX64Http => "efi-x64-http".into(),
            Arch::EfiArm64 => "efi-arm64".into(),
            Arch::EfiArm64Http => "efi-arm64-http".into(),
            Arch::Other(n) => format!("arch-{n}"),
        }
    }

    /// True for firmware that boots over HTTP rather than TFTP.
    pub fn is_http(&self) -> bool {
        matches!(self, Arch::EfiX64Http | Arch::EfiArm64Http)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// What kind of network-boot client sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootClient {
    /// Not booting from the network (an OS DHCP client, the installer, perfdhcp without PXE options).
    None,
    /// A firmware PXE ROM (option 60 `PXEClient`).
    Pxe(Arch),
    /// UEFI HTTP boot firmware (option 60 `HTTPClient`).
    HttpBoot(Arch),
    /// iPXE (user class `iPXE`), whatever loaded it.
    Ipxe(Arch),
}

impl BootClient {
    /// True for every network-boot client.
    pub fn is_boot(&self) -> bool {
        !matches!(self, BootClient::None)
    }

    /// The architecture, when the client is booting.
    pub fn arch(&self) -> Option<Arch> {
        match self {
            BootClient::None => None,
            BootClient::Pxe(a) | BootClient::HttpBoot(a) | BootClient::Ipxe(a) => Some(*a),
        }
    }

    /// A short description for events and logs: `pxe bios`, `ipxe efi-x64`.
    pub fn describe(&self) -> String {
        match self {
            BootClient::None => "no network boot".into(),
            BootClient::Pxe(a) => format!("pxe {a}"),
            BootClient::HttpBoot(a) => format!("http-boot {a}"),
            BootClient::Ipxe(a) => format!("ipxe {a}"),
        }
    }
}

/// A DHCP request, reduced to what rackseed decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub msg_type: MessageType,
    pub xid: u32,
    pub mac: MacAddr,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub client: BootClient,
    pub vendor_class: Option<String>,
    pub hostname: Option<String>,
    pub max_size: Option<u16>,
    /// Option 97 (client machine identifier), echoed to PXE clients.
    pub client_uuid: Option<Vec<u8>>,
    /// Option 61, echoed when present.
    pub client_id: Option<Vec<u8>>,
    /// Option 82 circuit-id and remote-id from a relay agent, as text (see
    /// [`crate::commission::relay_text`]); only when the packet came through a relay.
    pub circuit_id: Option<String>,
    pub remote_id: Option<String>,
}

/// A packet that is not a usable DHCP request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClassifyError {
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("hardware type is not Ethernet or address length is not 6")]
    NotEthernet,
    #[error("no DHCP message type (option 53); BOOTP is not served")]
    NoMessageType,
    #[error("message type {0:?} is not sent by clients")]
    ServerMessage(MessageType),
}

/// Why a packet was dropped before it reached the DHCP decoder.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    #[error("shorter than a BOOTP header with the DHCP magic cookie")]
    Short,
    #[error("no DHCP magic cookie")]
    NoCookie,
    #[error("option {code} runs past the end of the packet")]
    Truncated { code: u8 },
    #[error("option {code} has length {len}; it must be {rule}")]
    BadLength {
        code: u8,
        len: usize,
        rule: LengthRule,
    },
    #[error("option overload (52) is not served")]
    Overload,
}

/// The length an option must have.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum LengthRule {
    Exactly(usize),
    AtLeast(usize),
    MultipleOf(usize),
}

impl fmt::Display for LengthRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthRule::Exactly(n) => write!(f, "{n}"),
            LengthRule::AtLeast(n) => write!(f, "at least {n}"),
            LengthRule::MultipleOf(n) => write!(f, "a multiple of {n}"),
        }
    }
}

/// Options the DHCP decoder (dhcproto 0.15) reads at a fixed width, or with a minimum,
/// whatever length the packet claims: a wrong length would make it read misaligned,
/// hit a `debug_assert` (option 94) or underflow (options 81 and 151). Checked before
/// decoding.
const LENGTH_RULES: &[(u8, LengthRule)] = {
    use LengthRule::*;
    &[
        (13, Exactly(2)),
        (19, Exactly(1)),
        (20, Exactly(1)),
        (22, Exactly(2)),
        (23, Exactly(1)),
        (24, Exactly(4)),
        (25, MultipleOf(2)),
        (26, Exactly(2)),
        (27, Exactly(1)),
        (29, Exactly(1)),
        (30, Exactly(1)),
        (31, Exactly(1)),
        (34, Exactly(1)),
        (35, Exactly(4)),
        (36, Exactly(1)),
        (37, Exactly(1)),
        (38, Exactly(4)),
        (39, Exactly(1)),
        (46, Exactly(1)),
        (51, Exactly(4)),
        (53, Exactly(1)),
        (57, Exactly(2)),
        (58, Exactly(4)),
        (59, Exactly(4)),
        (80, Exactly(0)),
        (81, AtLeast(3)),
        (91, Exactly(4)),
        (93, Exactly(2)),
        (94, Exactly(3)),
        (106, Exactly(4)),
        (116, Exactly(1)),
        (151, AtLeast(1)),
        (152, Exactly(4)),
        (153, Exactly(4)),
        (154, Exactly(4)),
        (155, Exactly(4)),
        (156, Exactly(1)),
        (157, Exactly(1)),
    ]
};

/// Checks the option area of a raw DHCP packet: every option inside the packet, every
/// fixed-width option at its width, no option overload. Pure; runs before decoding.
///
/// The decoder joins an option repeated back to back into one (RFC 3396) and treats
/// instances apart as separate options, so the length rules apply to each run of one
/// code: `94/2, 94/1` is one 3-byte option, `94/2, 53/1, 94/1` is a 2-byte one.
pub fn check_wire(bytes: &[u8]) -> Result<(), WireError> {
    const OPTIONS_AT: usize = 240;
    if bytes.len() < OPTIONS_AT {
        return Err(WireError::Short);
    }
    if bytes[236..240] != [99, 130, 83, 99] {
        return Err(WireError::NoCookie);
    }
    // The run being summed: (code, total length so far).
    let mut run: Option<(u8, usize)> = None;
    let mut i = OPTIONS_AT;
    while i < bytes.len() {
        let code = bytes[i];
        if code == 0 || code == 255 {
            check_run(run.take())?;
            if code == 255 {
                return Ok(());
            }
            i += 1;
            continue;
        }
        let Some(&len) = bytes.get(i + 1) else {
            return Err(WireError::Truncated { code });
        };
        let len = usize::from(len);
        if i + 2 + len > bytes.len() {
            return Err(WireError::Truncated { code });
        }
        if code == 52 {
            return Err(WireError::Overload);
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            other => {
                check_run(other)?;
                Some((code, len))
            }
        };
        i += 2 + len;
    }
    check_run(run)
}

/// One decoded option's length against its rule.
fn check_run(run: Option<(u8, usize)>) -> Result<(), WireError> {
    let Some((code, len)) = run else {
        return Ok(());
    };
    let Some((_, rule)) = LENGTH_RULES.iter().find(|(c, _)| *c == code) else {
        return Ok(());
    };
    let ok = match *rule {
        LengthRule::Exactly(n) => len == n,
        LengthRule::AtLeast(n) => len >= n,
        LengthRule::MultipleOf(n) => len % n == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(WireError::BadLength {
            code,
            len,
            rule: *rule,
        })
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}

/// Why a received packet is not answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Drop {
    #[error("malformed: {0}")]
    Wire(#[from] WireError),
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("ignored: {0}")]
    Classify(#[from] ClassifyError),
}

/// Raw bytes to a classified request: the wire check, the decoder, then [`classify`].
/// Never panics, whatever the bytes (see `mutated_packets_never_panic_the_parser`).
pub fn parse_packet(bytes: &[u8]) -> Result<(Message, Request), Drop> {
    use dhcproto::{Decodable, Decoder};
    check_wire(bytes)?;
    let msg = Message::decode(&mut Decoder::new(bytes)).map_err(|e| Drop::Decode(e.to_string()))?;
    let req = classify(&msg)?;
    Ok((msg, req))
}

/// Reads the fields rackseed uses from a decoded message.
pub fn classify(msg: &Message) -> Result<Request, ClassifyError> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(ClassifyError::NotRequest);
    }
    if msg.htype() != v4::HType::Eth || msg.hlen() != 6 {
        return Err(ClassifyError::NotEthernet);
    }
    let mac = MacAddr::from_slice(msg.chaddr()).ok_or(ClassifyError::NotEthernet)?;
    let opts = msg.opts();
    let msg_type = opts.msg_type().ok_or(ClassifyError::NoMessageType)?;
    if matches!(
        msg_type,
        MessageType::Offer | MessageType::Ack | MessageType::Nak
    ) {
        return Err(ClassifyError::ServerMessage(msg_type));
    }
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(text(v)),
        _ => None,
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(Arch::from_code(u16::from(*a))),
        _ => None,
    };
    let is_ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(v)) => user_class_is_ipxe(v),
        _ => false,
    };
    let vc = vendor_class.as_deref().unwrap_or("");
    // Option 60 carries `PXEClient:Arch:00000:...`; some ROMs omit option 93.
    let arch = arch.or_else(|| {
        vc.split(':')
            .nth(2)
            .and_then(|a| a.parse().ok())
            .map(Arch::from_code)
    });
    let client = if is_ipxe {
        BootClient::Ipxe(arch.unwrap_or(Arch::Bios))
    } else if vc.starts_with("PXEClient") {
        BootClient::Pxe(arch.unwrap_or(Arch::Bios))
    } else if vc.starts_with("HTTPClient") {
        BootClient::HttpBoot(arch.unwrap_or(Arch::EfiX64Http))
    } else {
        BootClient::None
    };
    let ip = |code| match opts.get(code) {
        Some(DhcpOption::RequestedIpAddress(a)) | Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    Ok(Request {
        msg_type,
        xid: msg.xid(),
        mac,
        broadcast: msg.flags().broadcast(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        requested_ip: ip(OptionCode::RequestedIpAddress),
        server_id: ip(OptionCode::ServerIdentifier),
        client,
        vendor_class,
        hostname: match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(text(h.as_bytes())),
            _ => None,
        },
        max_size: match opts.get(OptionCode::MaxMessageSize) {
            Some(DhcpOption::MaxMessageSize(n)) => Some(*n),
            _ => None,
        },
        client_uuid: match opts.get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
            _ => None,
        },
        client_id: match opts.get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(v)) => Some(v.clone()),
            _ => None,
        },
        circuit_id: relay_sub(msg, RelayCode::AgentCircuitId),
        remote_id: relay_sub(msg, RelayCode::AgentRemoteId),
    })
}

/// An option-82 sub-option of a relayed packet, as text.
fn relay_sub(msg: &Message, code: RelayCode) -> Option<String> {
    if msg.giaddr().is_unspecified() {
        return None;
    }
    let Some(DhcpOption::RelayAgentInformation(info)) =
        msg.opts().get(OptionCode::RelayAgentInformation)
    else {
        return None;
    };
    match info.get(code)? {
        RelayInfo::AgentCircuitId(v) | RelayInfo::AgentRemoteId(v) => {
            Some(crate::commission::relay_text(&v[..v.len().min(255)]))
        }
        _ => None,
    }
}

/// iPXE sends the literal `iPXE`; RFC 3004 clients send length-prefixed entries.
fn user_class_is_ipxe(v: &[u8]) -> bool {
    if v == b"iPXE" {
        return true;
    }
    let mut rest = v;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if tail.len() < len {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, Flags};

    pub fn request(t: MessageType, mac: u8, extra: &[DhcpOption]) -> Message {
        let chaddr = [0x52, 0x54, 0, 0, 0, mac];
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &chaddr,
        );
        m.set_xid(0x1234)
            .set_flags(Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::MessageType(t));
        for o in extra {
            m.opts_mut().insert(o.clone());
        }
        m
    }

    pub fn pxe(arch: u16) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClassIdentifier(
                format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
            ),
            DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        ]
    }

    fn encoded(m: &Message) -> Vec<u8> {
        use dhcproto::{Encodable, Encoder};
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    /// Replaces the value of option `code` in an encoded packet with `value`.
    fn with_option(mut bytes: Vec<u8>, code: u8, value: &[u8]) -> Vec<u8> {
        let end = bytes.iter().rposition(|b| *b == 255).unwrap();
        bytes.truncate(end);
        bytes.extend_from_slice(&[code, value.len() as u8]);
        bytes.extend_from_slice(value);
        bytes.push(255);
        bytes
    }

    /// The crash found by 20,000 mutated packets: option 94 of two bytes hit a
    /// `debug_assert` inside the decoder and killed the DHCP task. It is dropped with
    /// its reason before decoding now.
    #[test]
    fn option_94_of_two_bytes_is_dropped_with_its_reason() {
        let base = encoded(&request(MessageType::Discover, 1, &[]));
        let bad = with_option(base, 94, &[1, 2]);
        assert_eq!(
            parse_packet(&bad).unwrap_err(),
            Drop::Wire(WireError::BadLength {
                code: 94,
                len: 2,
                rule: LengthRule::Exactly(3)
            })
        );
        // The decoder on its own panics on it in a debug build: the guard is needed.
        if cfg!(debug_assertions) {
            let raw = std::panic::catch_unwind(|| {
                use dhcproto::{Decodable, Decoder};
                let _ = Message::decode(&mut Decoder::new(&bad));
            });
            assert!(
                raw.is_err(),
                "dhcproto no longer panics on option 94 of 2 bytes"
            );
        }
    }

    #[test]
    fn fixed_width_and_underflowing_options_are_dropped() {
        let base = encoded(&request(MessageType::Discover, 1, &[]));
        for (code, value, want) in [
            (93u8, vec![0u8], "option 93 has length 1; it must be 2"),
            (93, vec![0, 7, 0, 9], "option 93 has length 4; it must be 2"),
            (
                81,
                vec![0, 0],
                "option 81 has length 2; it must be at least 3",
            ),
            (
                151,
                vec![],
                "option 151 has length 0; it must be at least 1",
            ),
            (57, vec![2], "option 57 has length 1; it must be 2"),
            (52, vec![3], "option overload (52) is not served"),
        ] {
            let e = parse_packet(&with_option(base.clone(), code, &value)).unwrap_err();
            assert!(e.to_string().contains(want), "{code}: {e}");
        }
        let mut cut = base.clone();
        cut.truncate(cut.len() - 1);
        cut.extend_from_slice(&[12, 40, b'x']);
        assert_eq!(
            parse_packet(&cut).unwrap_err(),
            Drop::Wire(WireError::Truncated { code: 12 })
        );
        assert_eq!(
            parse_packet(&base[..100]).unwrap_err(),
            Drop::Wire(WireError::Short)
        );
        assert!(parse_packet(&base).is_ok());
    }

    #[test]
    fn a_repeated_fixed_length_option_is_refused_before_the_decoder() {
        // Found by libFuzzer: option 94 twice with 3 bytes each; the decoder joins them
        // into 6 bytes and its debug assertion fires.
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/dhcp/repeated-option-94"),
        )
        .unwrap();
        assert!(matches!(
            parse_packet(&bytes),
            Err(Drop::Wire(WireError::BadLength {
                code: 94,
                len: 6,
                ..
            }))
        ));
    }

    /// Found by libFuzzer in CI: option 94 split 2 + 1 around another option; the sum
    /// is 3, but the decoder reads the first instance alone as a 2-byte option.
    #[test]
    fn a_fixed_length_option_split_around_another_is_judged_per_instance() {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/dhcp/split-option-94"),
        )
        .unwrap();
        assert!(matches!(
            parse_packet(&bytes),
            Err(Drop::Wire(WireError::BadLength {
                code: 94,
                len: 2,
                ..
            }))
        ));
        // Back to back, 2 + 1 is one 3-byte option and is accepted.
        let mut joined = bytes[..240].to_vec();
        joined.extend([53, 1, 1, 94, 2, 1, 0, 94, 1, 0, 255]);
        assert!(check_wire(&joined).is_ok());
    }

    /// Mutated and generated packets from real client shapes (PXE firmware, iPXE, a
    /// plain client) through the whole parse path: no input panics (debug assertions
    /// on). Bounded: 20,000 inputs from a fixed seed, well under a second.
    #[test]
    fn mutated_packets_never_panic_the_parser() {
        let seeds: Vec<Vec<u8>> = vec![
            encoded(&request(MessageType::Discover, 1, &pxe(7))),
            encoded(&request(
                MessageType::Request,
                2,
                &[
                    DhcpOption::UserClass(b"iPXE".to_vec()),
                    DhcpOption::RequestedIpAddress([192, 0, 2, 100].into()),
                    DhcpOption::ServerIdentifier([192, 0, 2, 1].into()),
                ],
            )),
            encoded(&request(MessageType::Discover, 3, &pxe(0))),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut dropped) = (0, 0);
        for i in 0..20_000u32 {
            let mut p = seeds[i as usize % seeds.len()].clone();
            match next() % 4 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let at = 240 + (next() as usize % (p.len() - 240));
                        p[at] = next() as u8;
                    }
                }
                1 => {
                    let code = (next() % 256) as u8;
                    let len = (next() % 8) as usize;
                    let value: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    p = with_option(p, code, &value);
                }
                2 => {
                    let keep = next() as usize % p.len();
                    p.truncate(keep);
                }
                _ => {
                    let n = next() as usize % 64;
                    p.extend((0..n).map(|_| next() as u8));
                    let at = 240 + (next() as usize % (p.len() - 240));
                    p[at] = [93u8, 94, 81, 151, 52, 53][next() as usize % 6];
                }
            }
            match parse_packet(&p) {
                Ok(_) => ok += 1,
                Err(_) => dropped += 1,
            }
        }
        assert!(ok > 100 && dropped > 100, "ok {ok}, dropped {dropped}");
    }

    #[test]
    fn firmware_pxe_by_arch() {
        let r = classify(&request(MessageType::Discover, 1, &pxe(0))).unwrap();
        assert_eq!(r.client, BootClient::Pxe(Arch::Bios));
        let r = classify(&request(MessageType::Discover, 1, &pxe(7))).unwrap();
        assert_eq!(r.client, BootClient::Pxe(Arch::EfiX64));
        let r = classify(&request(MessageType::Discover, 1, &pxe(9))).unwrap();
        assert_eq!(r.client, BootClient::Pxe(Arch::EfiX64));
        assert!(r.broadcast);
    }

    #[test]
    fn ipxe_user_class_wins_over_pxeclient() {
        let mut o = pxe(7);
        o.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let r = classify(&request(MessageType::Discover, 1, &o)).unwrap();
        assert_eq!(r.client, BootClient::Ipxe(Arch::EfiX64));
        // RFC 3004 encoding.
        let o = vec![DhcpOption::UserClass(b"\x03abc\x04iPXE".to_vec())];
        assert_eq!(
            classify(&request(MessageType::Discover, 1, &o))
                .unwrap()
                .client,
            BootClient::Ipxe(Arch::Bios)
        );
        assert!(!user_class_is_ipxe(b"\x09iPXE"));
    }

    #[test]
    fn http_boot_client() {
        let o = vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(16)),
        ];
        let r = classify(&request(MessageType::Discover, 1, &o)).unwrap();
        assert_eq!(r.client, BootClient::HttpBoot(Arch::EfiX64Http));
    }

    #[test]
    fn arch_from_vendor_class_when_option_93_missing() {
        let o = vec![DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
        )];
        assert_eq!(
            classify(&request(MessageType::Discover, 1, &o))
                .unwrap()
                .client,
            BootClient::Pxe(Arch::EfiX64)
        );
    }

    #[test]
    fn plain_os_client_is_not_booting() {
        let o = vec![
            DhcpOption::ClassIdentifier(b"udhcp 1.35.0".to_vec()),
            DhcpOption::Hostname("web1".into()),
        ];
        let r = classify(&request(MessageType::Discover, 1, &o)).unwrap();
        assert_eq!(r.client, BootClient::None);
        assert_eq!(r.hostname.as_deref(), Some("web1"));
    }

    #[test]
    fn refuses_server_messages_and_bootp() {
        assert_eq!(
            classify(&request(MessageType::Offer, 1, &[])),
            Err(ClassifyError::ServerMessage(MessageType::Offer))
        );
        let mut m = request(MessageType::Discover, 1, &[]);
        m.opts_mut().remove(OptionCode::MessageType);
        assert_eq!(classify(&m), Err(ClassifyError::NoMessageType));
        let mut m = request(MessageType::Discover, 1, &[]);
        m.set_opcode(Opcode::BootReply);
        assert_eq!(classify(&m), Err(ClassifyError::NotRequest));
    }
}
