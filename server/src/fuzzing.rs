//! Fuzz targets: one function per parser that takes arbitrary bytes, runs the parser
//! and checks what must hold of its result. The same functions run on the stable
//! toolchain in the test command (checked-in corpus in `fuzz/corpus/<target>/` plus
//! bounded mutations, see [`TARGETS`] and the test below) and, where a nightly
//! toolchain exists, under `cargo fuzz` (`fuzz/fuzz_targets/`). No I/O.

use std::sync::OnceLock;

/// A fuzz target: arbitrary bytes in, a panic when a property fails.
pub type Target = fn(&[u8]);

/// Every target by its corpus name.
pub const TARGETS: &[(&str, Target)] = &[
    ("dhcp", dhcp),
    ("tftp_path", tftp_path),
    ("syslog", syslog),
    ("profile", profile),
    ("facts", facts),
    ("http_path", http_path),
    ("commission", commission),
    ("bmc", bmc),
    ("lease_journal", lease_journal),
    ("backup", backup),
];

fn config(mode: &str) -> crate::config::Config {
    let text = format!(
        "[server]\nadvertise = \"192.0.2.1\"\n[dhcp]\nmode = \"{mode}\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.109\"\nrouter = \"192.0.2.1\"\n[[dhcp.subnets]]\nnetwork = \"198.51.100.0/24\"\nrange = \"198.51.100.10-198.51.100.19\"\n"
    );
    crate::config::Config::parse_with(&text, "fuzz", &|_| None)
        .unwrap_or_else(|e| panic!("fuzz config: {e}"))
}

/// A DHCP packet through the wire check, decoder and classification, then both
/// decisions for an unknown and a known machine. An authoritative reply never leases
/// outside the ranges of the configured subnets.
pub fn dhcp(data: &[u8]) {
    use crate::dhcp::decide::{Ctx, NodeView, decide};
    static CFG: OnceLock<(crate::config::Config, crate::config::Config)> = OnceLock::new();
    let (auth, proxy) = CFG.get_or_init(|| (config("authoritative"), config("proxy")));
    let Ok((_, req)) = crate::dhcp::classify::parse_packet(data) else {
        return;
    };
    let node = NodeView {
        id: 1,
        hostname: Some("n1".into()),
        domain: None,
    };
    let mut table = crate::dhcp::LeaseTable::default();
    let src = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 68);
    for n in [None, Some(&node)] {
        for (cfg, on_4011) in [(auth, false), (proxy, false), (proxy, true)] {
            let ctx = Ctx {
                dhcp: &cfg.dhcp,
                server_ip: cfg.server.advertise,
                base_url: &cfg.server.base_url,
                efi_binary: cfg.boot.efi_binary,
                arrived_on: cfg.dhcp.subnets.first(),
                node: n,
                now: 1_000,
                chainloaded_recently: false,
            };
            let o = decide(&req, &ctx, &mut table, on_4011, src);
            if cfg.dhcp.mode == crate::config::DhcpMode::Authoritative
                && let Some(r) = &o.reply
                && !r.yiaddr.is_unspecified()
            {
                let ip = u32::from(r.yiaddr);
                let in_range = cfg.dhcp.subnets.iter().any(|s| {
                    s.range
                        .is_some_and(|(a, b)| (u32::from(a)..=u32::from(b)).contains(&ip))
                });
                assert!(in_range, "leased {} outside every range", r.yiaddr);
            }
        }
    }
}

/// A TFTP request name: an accepted name has no empty, `.` or `..` component.
pub fn tftp_path(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    if let Ok(parts) = crate::tftp::check_path(&name) {
        assert!(
            parts
                .iter()
                .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\\')),
            "{name:?}"
        );
        assert!(!name.starts_with('/'));
    }
    // The same bytes as a datagram to the server port and as a client's reply.
    if let Ok(req) = crate::tftp::wire::parse_request(data) {
        assert!(!req.name.contains('\0'));
        assert!(req.options.blksize.is_none_or(|b| (8..=65464).contains(&b)));
        assert!(req.options.windowsize.is_none_or(|w| w >= 1));
        let limits = crate::tftp::wire::Limits {
            blksize: 1468,
            windowsize: 32,
        };
        let t = crate::tftp::wire::negotiate(&req.options, limits, 1 << 20);
        assert!((8..=1468).contains(&t.blksize) && (1..=32).contains(&t.windowsize));
    }
    let _ = crate::tftp::wire::parse_reply(data);
}

/// A syslog datagram: a line has no control character but tab and is within the cap.
pub fn syslog(data: &[u8]) {
    if let Some(l) = crate::syslog::parse_line(data) {
        assert!(
            !l.text.chars().any(|c| c.is_control() && c != '\t'),
            "{:?}",
            l.text
        );
        assert!(l.text.chars().count() <= crate::syslog::MAX_LINE);
        assert!(l.severity.is_none_or(|s| s <= 7));
    }
}

/// A profile: parsed and validated, or refused with errors.
pub fn profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok((p, _)) = crate::profiles::parse_str(&text, "fuzz.yaml") {
        let _ = crate::profiles::validate::validate("fuzz.yaml", &p);
    }
}

/// Enrollment facts as JSON: parsed and checked on arrival; facts that pass the check
/// carry no control character anywhere.
pub fn facts(data: &[u8]) {
    if let Ok(f) = serde_json::from_slice::<crate::facts::Facts>(data)
        && crate::facts::check_untrusted(&f, None).is_ok()
    {
        let text = serde_json::to_string(&f).unwrap_or_default();
        assert!(!text.contains("\\u0000") && !text.contains("\\n"), "{text}");
    }
}

/// HTTP path segments and headers the node routes parse: a boot-script name as a MAC,
/// an event kind, a `Range` header; and the raw bytes as a request head for the node
/// listener's connection loop.
pub fn http_path(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderValue, Method, header};
    if let crate::http::head::Head::Complete(p) = crate::http::head::parse(data) {
        assert!(p.len <= data.len() && p.len <= crate::http::head::MAX_HEAD);
        assert!(p.path.starts_with('/') && !p.path.contains('?'));
        assert!(!p.whole_get || p.body == 0);
        if let Some(q) = &p.query {
            let _ = crate::http::head::query_value(q, "mac");
        }
    }
    let s = String::from_utf8_lossy(data);
    if let Ok(m) = s
        .strip_suffix(".ipxe")
        .unwrap_or(&s)
        .parse::<crate::mac::MacAddr>()
    {
        let back = m.to_string();
        assert_eq!(back.len(), 17, "{back}");
        assert!(back.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'));
    }
    if crate::node::valid_kind(&s) {
        assert!(s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    }
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v);
        let _ = crate::http::boot::is_first_range(&h);
        let _ = crate::http::files::wants_whole_file(&Method::GET, &h);
    }
}

/// A lease journal file as found at start (torn, stale or hostile bytes): the half to
/// replay is chosen and replayed without a panic, and what is replayed encodes back to
/// exactly the bytes it came from.
pub fn lease_journal(data: &[u8]) {
    use crate::dhcp::journal;
    let split = data.len().min(journal::HEADER_LEN);
    let (header, body) = data.split_at(split);
    let (a, b) = body.split_at(body.len() / 2);
    if let Some(head) = journal::current(header, [a, b]) {
        let half = if head.half == 0 { a } else { b };
        let r = journal::replay(head.epoch, half);
        assert!(r.len <= half.len());
        let mut again = Vec::new();
        for (i, w) in r.writes.iter().enumerate() {
            journal::encode(head.epoch, i as u64 + 1, w, &mut again)
                .unwrap_or_else(|e| panic!("a replayed write does not encode: {e}"));
        }
        assert_eq!(
            again,
            &half[..r.len],
            "replayed records re-encode differently"
        );
    }
    // The body read as a journal of any epoch its first record names.
    if let Some(epoch) = journal::first_epoch(body) {
        assert!(!journal::replay(epoch, body).writes.is_empty());
    }
}

/// A backup archive as `rackseed restore` reads it (any bytes), and the same bytes as
/// a manifest alone and as one tar header. An accepted archive or manifest lists only
/// files a backup carries (never a path with `..` or outside its roots), each once,
/// and a manifest renders back to itself; a header that decodes has no control
/// character in its name and encodes back to the same name and size.
pub fn backup(data: &[u8]) {
    use crate::backup::{self, archive};
    let check = |m: &backup::Manifest| {
        for f in &m.files {
            assert!(backup::place(&f.path).is_ok(), "{}", f.path);
            assert!(
                !f.path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."),
                "{}",
                f.path
            );
        }
        assert_eq!(backup::Manifest::parse(&m.render()).as_ref(), Ok(m));
    };
    if let Ok(m) = backup::verify_archive(data) {
        check(&m);
    }
    if let Ok(m) = backup::Manifest::parse(data) {
        check(&m);
    }
    if let Some(block) = data
        .get(..archive::BLOCK)
        .and_then(|b| <&[u8; archive::BLOCK]>::try_from(b).ok())
        && let Ok(Some(h)) = archive::decode_header(block)
    {
        assert!(!h.name.is_empty() && !h.name.chars().any(char::is_control));
        if let Ok(again) = archive::encode_header(&h.name, h.size, h.mode, h.mtime) {
            let back = archive::decode_header(&again)
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("an encoded header does not decode: {h:?}"));
            assert_eq!((back.name, back.size), (h.name, h.size));
        }
    }
}

/// What BMCs answer: ipmitool output (power state, boot flags, failure text) and
/// Redfish JSON (a system, a systems collection, an error body). A boot override read
/// as a one-time network boot really says PXE, once, enabled; a failure's text has no
/// control character.
pub fn bmc(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::power::ipmi::parse_power(&text);
    if let Ok(o) = crate::power::ipmi::parse_boot_flags(&text)
        && o.is_pxe_once()
    {
        assert!(o.enabled && o.once && o.target == "pxe");
    }
    let e = crate::power::ipmi::failure("bmc", "status", &text).to_string();
    let _ = e;
    let m = crate::power::redfish::error_message(&text);
    assert!(!m.chars().any(|c| c.is_control()), "{m:?}");
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(s) = crate::power::redfish::parse_system(&v) {
            assert!(s.reset_uri.starts_with("/redfish/v1/") && !s.reset_uri.contains(".."));
        }
        if let Ok(m) = crate::power::redfish::members(&v) {
            for p in m {
                assert!(crate::power::redfish::system_path(&p).is_ok());
            }
        }
    }
}

/// What an unknown machine sends while commissioning, and what rules make of it: an
/// LLDPDU (any bytes), a hardware report (JSON), rule patterns (text). A parsed
/// neighbour and an accepted report carry no control character; a rule's hostname is
/// always a valid one, whatever the option-82 text it was made from.
pub fn commission(data: &[u8]) {
    use crate::commission::{self, rules};
    if let Some(n) = commission::parse_lldpdu("eth0", data) {
        for t in [&n.chassis_id, &n.port_id] {
            assert!(!t.is_empty() && !t.chars().any(char::is_control), "{t:?}");
        }
    }
    let text = commission::relay_text(data);
    assert!(!text.chars().any(char::is_control));
    static RULES: OnceLock<Vec<rules::Rule>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let r = |m: &[(&str, &str)], hostname: &str| rules::Rule {
            name: "r".into(),
            matches: m
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            profile: "p".into(),
            hostname: hostname.into(),
            failure_domain: None,
            group: None,
            vars: None,
        };
        vec![
            r(
                &[
                    ("dhcp.circuit_id", "{rack}-{port}"),
                    ("disks.count", ">= 1"),
                ],
                "rack-{rack}-{port}",
            ),
            r(
                &[("system.serial", "{s}"), ("lldp.port_id", "*{p}")],
                "n-{s}-{p}",
            ),
            r(&[("dhcp.remote_id", "{x}")], "{x}"),
        ]
    });
    let mut input = rules::Input {
        mac: "52:54:00:00:00:01".into(),
        dhcp: commission::DhcpFacts {
            circuit_id: Some(text.clone()),
            remote_id: Some(String::from_utf8_lossy(data).into_owned()),
            ..Default::default()
        },
        hw: None,
    };
    if let Ok(hw) = serde_json::from_slice::<commission::HwFacts>(data)
        && commission::check(&hw).is_ok()
    {
        assert!(!hw.summary().is_empty());
        input.hw = Some(hw);
    }
    if let Some(a) = rules::evaluate(rules, &input).assignment {
        assert!(crate::facts::is_dns_name(&a.hostname), "{:?}", a.hostname);
    }
    // Patterns from the bytes: validation refuses or accepts, never panics.
    let pat = String::from_utf8_lossy(data).into_owned();
    let mut r = rules[0].clone();
    r.matches.insert("dhcp.circuit_id".into(), pat);
    if rules::validate(std::slice::from_ref(&r)).is_ok() {
        let _ = rules::evaluate(std::slice::from_ref(&r), &input);
    }
}

#[cfg(test)]
mod tests {
    /// Every target on its checked-in corpus and on mutations of it (a fixed number
    /// per target, a few seconds in all; debug assertions on). A crash prints its
    /// input; it becomes a file in the corpus and a named regression test.
    #[test]
    fn every_fuzz_target_survives_its_corpus_and_mutations() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect();
            seeds.sort();
            assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
            let refs: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
            let n = if *name == "profile" { 10_000 } else { 100_000 };
            crate::fuzz::each_mutation(&refs, n, target);
            eprintln!("fuzz {name}: {} seeds, {n} mutations", refs.len());
        }
    }
}
