//! A simulated PXE node over real sockets: DHCP as a PXE ROM and as iPXE (broadcast
//! DISCOVER/REQUEST from port 68 with the options those clients send, retransmitted on
//! the PXE schedule), a lockstep TFTP client (blksize, tsize, OACK), and a small
//! HTTP/1.1 client, each bound to the node's leased address. Runs inside the client
//! namespace (`rackseed-bench storm-client`).

use anyhow::{Context, Result, anyhow, bail};
use dhcproto::v4::{
    self, Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Decoder, Encodable};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shared client port 68: one socket, replies routed to nodes by xid.
pub struct DhcpBus {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u32, mpsc::Sender<Message>>>,
    stop: AtomicBool,
}

impl DhcpBus {
    /// Binds 0.0.0.0:68 on `iface` with broadcast and starts the receive thread.
    pub fn bind(iface: &str) -> Result<Arc<DhcpBus>> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.set_recv_buffer_size(4 << 20)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 68)).into())
            .context("cannot bind the DHCP client port 68")?;
        let sock: UdpSocket = s.into();
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let bus = Arc::new(DhcpBus {
            sock,
            waiting: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let b = bus.clone();
        std::thread::spawn(move || b.receive());
        Ok(bus)
    }

    fn receive(&self) {
        let mut buf = [0u8; 1500];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            if m.opcode() != Opcode::BootReply {
                continue;
            }
            let tx = self
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&m.xid())
                .cloned();
            if let Some(tx) = tx {
                let _ = tx.send(m);
            }
        }
    }

    /// Stops the receive thread (within its 200 ms read timeout).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Broadcasts `msg` and waits for a reply of type `want` with the same xid (and
    /// chaddr), retransmitting after each timeout of `schedule`.
    fn exchange(&self, msg: &Message, want: MessageType, schedule: &[u64]) -> Result<Message> {
        let (tx, rx) = mpsc::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(msg.xid(), tx);
        let bytes = msg.to_vec()?;
        let dest = SocketAddr::from(([255, 255, 255, 255], 67));
        let mut result = Err(anyhow!("no {want:?} after {} tries", schedule.len()));
        'tries: for secs in schedule {
            self.sock.send_to(&bytes, dest).context("DHCP send")?;
            let until = Instant::now() + Duration::from_secs(*secs);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(m) if m.chaddr() == msg.chaddr() => {
                        if m.opts().msg_type() == Some(want) {
                            result = Ok(m);
                            break 'tries;
                        }
                        if m.opts().msg_type() == Some(MessageType::Nak) {
                            result = Err(anyhow!("NAK"));
                            break 'tries;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&msg.xid());
        result
    }
}

impl DhcpBus {
    /// Sends a DHCPRELEASE of `lease` to its server (unicast, no answer).
    pub fn release(&self, mac: [u8; 6], lease: &Lease) -> Result<()> {
        let mut m = boot_request(mac, lease.ip, rand_u32(mac));
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Release));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server_id));
        self.sock
            .send_to(&m.to_vec()?, SocketAddrV4::new(lease.server_id, 67))
            .context("DHCP RELEASE")?;
        Ok(())
    }
}

/// Which firmware a DHCP exchange pretends to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// A BIOS PXE ROM (option 60 `PXEClient:Arch:00000:UNDI:002001`, 93, 94, 97).
    PxeRom,
    /// iPXE chainloaded from it: the same plus user class `iPXE`.
    Ipxe,
}

/// What a DORA gave the node.
#[derive(Clone, Debug)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub next_server: Ipv4Addr,
    pub server_id: Ipv4Addr,
    pub file: String,
}

/// The PXE ROM's DHCP retransmission schedule (seconds), shortened at the end.
pub const PXE_SCHEDULE: &[u64] = &[4, 8, 16, 32];

/// A BOOTREQUEST from `mac` with client address `ciaddr`, no options yet.
fn boot_request(mac: [u8; 6], ciaddr: Ipv4Addr, xid: u32) -> Message {
    let unset = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new(ciaddr, unset, unset, unset, &mac);
    m.set_opcode(Opcode::BootRequest)
        .set_htype(v4::HType::Eth)
        .set_xid(xid);
    m
}

fn request_msg(mac: [u8; 6], xid: u32, t: MessageType, fw: Firmware) -> Message {
    let mut m = boot_request(mac, Ipv4Addr::UNSPECIFIED, xid);
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    o.insert(DhcpOption::MaxMessageSize(1464));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::VendorExtensions,
        OptionCode::ServerIdentifier,
        OptionCode::ClassIdentifier,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
    o.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(0)));
    o.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    let mut uuid = vec![0u8];
    uuid.extend_from_slice(&[0x11; 10]);
    uuid.extend_from_slice(&mac);
    o.insert(DhcpOption::ClientMachineIdentifier(uuid));
    if fw == Firmware::Ipxe {
        o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    m
}

/// DISCOVER → OFFER → REQUEST → ACK as `fw`; a NAK starts over with a DISCOVER, as
/// RFC 2131 §3.1 has a client do (up to 20 times: a server that does not hold its
/// offers can offer one free address to several clients at once when the pool is full).
pub fn dora(bus: &DhcpBus, mac: [u8; 6], fw: Firmware) -> Result<Lease> {
    let mut tries = 0;
    loop {
        tries += 1;
        match dora_once(bus, mac, fw) {
            Err(e) if tries < 20 && format!("{e:#}").ends_with("NAK") => continue,
            r => return r,
        }
    }
}

fn dora_once(bus: &DhcpBus, mac: [u8; 6], fw: Firmware) -> Result<Lease> {
    let xid: u32 = rand_u32(mac);
    let offer = bus
        .exchange(
            &request_msg(mac, xid, MessageType::Discover, fw),
            MessageType::Offer,
            PXE_SCHEDULE,
        )
        .context("DISCOVER")?;
    let server_id = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => *a,
        _ => bail!("OFFER without a server identifier"),
    };
    let mut req = request_msg(mac, xid, MessageType::Request, fw);
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    req.opts_mut()
        .insert(DhcpOption::ServerIdentifier(server_id));
    let ack = bus
        .exchange(&req, MessageType::Ack, PXE_SCHEDULE)
        .context("REQUEST")?;
    let file = match ack.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => String::from_utf8_lossy(f).to_string(),
        _ => ack
            .fname_str()
            .and_then(|r| r.ok())
            .unwrap_or_default()
            .to_string(),
    };
    Ok(Lease {
        ip: ack.yiaddr(),
        next_server: if ack.siaddr().is_unspecified() {
            server_id
        } else {
            ack.siaddr()
        },
        server_id,
        file: file.trim_end_matches('\0').to_string(),
    })
}

fn rand_u32(mac: [u8; 6]) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u32::from_be_bytes([mac[2] ^ mac[3], mac[4], mac[5], 0]) ^ t.rotate_left(7)
}

/// iPXE's expansion of `${mac}` and `${mac:hexhyp}` in a boot file name.
pub fn expand(file: &str, mac: [u8; 6]) -> String {
    let colon = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    file.replace("${mac:hexhyp}", &colon.replace(':', "-"))
        .replace("${mac}", &colon)
}

/// Fetches `file` over TFTP from `server` (lockstep, blksize `blksize`, tsize), bound
/// to `local`; returns the bytes received. Retransmits like iPXE: the last packet again
/// after each second of silence, up to 8 times.
pub fn tftp_get(local: Ipv4Addr, server: Ipv4Addr, file: &str, blksize: u16) -> Result<u64> {
    let sock = UdpSocket::bind(SocketAddrV4::new(local, 0))?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut rrq = vec![0u8, 1];
    for part in [file, "octet", "blksize", &blksize.to_string(), "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let mut peer = SocketAddr::from(SocketAddrV4::new(server, 69));
    let mut locked = false;
    let mut last: Vec<u8> = rrq;
    let mut expect: u16 = 1;
    let mut got: u64 = 0;
    let mut bs = 512usize;
    let mut buf = vec![0u8; 65536];
    let mut silent = 0;
    let started = Instant::now();
    sock.send_to(&last, peer)?;
    loop {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("TFTP {file}: over 120 s");
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => {
                silent += 1;
                if silent > 8 {
                    bail!("TFTP {file}: no answer after {silent} retransmissions");
                }
                sock.send_to(&last, peer)?;
                continue;
            }
        };
        if locked && from != peer {
            continue;
        }
        if !locked {
            peer = from;
            locked = true;
        }
        silent = 0;
        if n < 4 {
            continue;
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        match op {
            6 => {
                // OACK: take blksize, acknowledge block 0.
                let fields: Vec<&[u8]> = buf[2..n].split(|b| *b == 0).collect();
                for pair in fields.chunks(2) {
                    if let [k, v] = pair
                        && k.eq_ignore_ascii_case(b"blksize")
                    {
                        bs = String::from_utf8_lossy(v).parse().unwrap_or(512);
                    }
                }
                last = vec![0, 4, 0, 0];
                sock.send_to(&last, peer)?;
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == expect {
                    got += (n - 4) as u64;
                    last = vec![0, 4, buf[2], buf[3]];
                    sock.send_to(&last, peer)?;
                    if n - 4 < bs {
                        return Ok(got);
                    }
                    expect = expect.wrapping_add(1);
                } else {
                    // A duplicate: acknowledge what we have again.
                    sock.send_to(&last, peer)?;
                }
            }
            5 => bail!(
                "TFTP {file}: error {}",
                String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
            ),
            _ => {}
        }
    }
}

/// An HTTP response: status, and the body (kept only when `keep` was asked).
pub struct HttpResponse {
    pub status: u16,
    pub len: u64,
    pub body: Vec<u8>,
}

/// `GET url` (http://host:port/path) from `local` over a fresh connection. The body is
/// read to its Content-Length (or to the end of the connection) and kept when `keep`.
pub fn http_get(local: Ipv4Addr, url: &str, keep: bool) -> Result<HttpResponse> {
    use socket2::{Domain, Protocol, Socket, Type};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = if hostport.contains(':') {
        hostport.parse()?
    } else {
        format!("{hostport}:80").parse()?
    };
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::from(SocketAddrV4::new(local, 0)).into())?;
    s.connect_timeout(&addr.into(), Duration::from_secs(10))
        .with_context(|| format!("connect {addr}"))?;
    let mut c: TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: iPXE/1.0.0 (rackseed-bench)\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let body_start;
    loop {
        let n = c.read(&mut buf)?;
        if n == 0 {
            bail!("{url}: connection closed in the headers");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            body_start = i + 4;
            break;
        }
        if head.len() > 64 * 1024 {
            bail!("{url}: headers over 64 KiB");
        }
    }
    let text = String::from_utf8_lossy(&head[..body_start]).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{url}: bad status line"))?;
    let length: Option<u64> = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    });
    let mut body = Vec::new();
    let first = &head[body_start..];
    let mut len = first.len() as u64;
    if keep {
        body.extend_from_slice(first);
    }
    while length.is_none_or(|l| len < l) {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if keep {
            body.extend_from_slice(&buf[..n]);
        }
    }
    if let Some(l) = length
        && len != l
    {
        bail!("{url}: {len} of {l} bytes");
    }
    Ok(HttpResponse { status, len, body })
}

/// The kernel URL, initrd URL and preseed URL (`url=`) of an iPXE script.
pub fn script_urls(script: &str) -> Result<(String, String, String)> {
    let mut kernel = None;
    let mut initrd = None;
    let mut preseed = None;
    for line in script.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("kernel") => {
                let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                kernel = rest.first().map(|s| s.to_string());
                preseed = rest
                    .iter()
                    .find_map(|w| w.strip_prefix("url="))
                    .map(str::to_string);
            }
            Some("initrd") => {
                initrd = words
                    .filter(|w| !w.starts_with("--"))
                    .find(|w| w.starts_with("http://"))
                    .map(str::to_string);
            }
            _ => {}
        }
    }
    match (kernel, initrd, preseed) {
        (Some(k), Some(i), Some(p)) => Ok((k, i, p)),
        _ => bail!(
            "the iPXE script names no kernel, initrd or preseed url:\n{}",
            script
        ),
    }
}

/// How one node's boot went, in milliseconds since the storm started.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeResult {
    pub mac: String,
    pub ok: bool,
    pub error: Option<String>,
    /// When the node powered on.
    pub start_ms: u64,
    pub dhcp_pxe_ms: u64,
    pub tftp_ms: u64,
    pub dhcp_ipxe_ms: u64,
    pub script_ms: u64,
    pub kernel_initrd_ms: u64,
    pub preseed_ms: u64,
}

/// Boots one node as far as its preseed; with `release`, the node then gives its
/// address back (DHCPRELEASE), so a storm larger than the pool goes on.
pub fn boot_node(bus: &DhcpBus, mac: [u8; 6], t0: Instant, release: bool) -> NodeResult {
    let ms = || t0.elapsed().as_millis() as u64;
    let mut r = NodeResult {
        mac: mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        start_ms: ms(),
        ..NodeResult::default()
    };
    let res: Result<()> = (|| {
        let l1 = dora(bus, mac, Firmware::PxeRom).context("PXE ROM DHCP")?;
        r.dhcp_pxe_ms = ms();
        if l1.file.is_empty() {
            bail!("the PXE ROM got no boot file");
        }
        tftp_get(l1.ip, l1.next_server, &l1.file, 1432).context("TFTP")?;
        r.tftp_ms = ms();
        let l2 = dora(bus, mac, Firmware::Ipxe).context("iPXE DHCP")?;
        r.dhcp_ipxe_ms = ms();
        let url = expand(&l2.file, mac);
        let script = http_get(l2.ip, &url, true).context("iPXE script")?;
        if script.status != 200 {
            bail!("iPXE script {url}: HTTP {}", script.status);
        }
        r.script_ms = ms();
        let (k, i, p) = script_urls(&String::from_utf8_lossy(&script.body))?;
        for u in [&k, &i] {
            let resp = http_get(l2.ip, u, false)?;
            if resp.status != 200 || resp.len == 0 {
                bail!("{u}: HTTP {}", resp.status);
            }
        }
        r.kernel_initrd_ms = ms();
        let pre = http_get(l2.ip, &p, true).context("preseed")?;
        if pre.status != 200 || pre.body.is_empty() {
            bail!("{p}: HTTP {}", pre.status);
        }
        r.preseed_ms = ms();
        if release {
            bus.release(mac, &l2)?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => r.ok = true,
        Err(e) => r.error = Some(format!("{e:#}")),
    }
    r
}
