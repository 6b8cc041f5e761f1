//! Validation of a resolved profile: every cross-reference and limit that serde's types
//! cannot express, each problem reported as `file: key: what is wrong and what to do`.
//!
//! Pure: takes a [`Profile`], returns every problem found (never stops at the first).

use super::ProfileError;
use super::model::*;
use std::collections::BTreeMap;

/// Largest MTU accepted (jumbo frames on common switches).
pub const MAX_MTU: u32 = 9216;
/// Smallest MTU accepted (IPv4 minimum reassembly size).
pub const MIN_MTU: u32 = 576;

/// Names `zpool` reserves for vdev types; a pool cannot be called that.
const RESERVED_POOL_NAMES: &[&str] = &[
    "mirror", "raidz", "raidz1", "raidz2", "raidz3", "draid", "spare", "log", "cache", "special",
    "dedup",
];

struct Check<'a> {
    file: &'a str,
    out: Vec<ProfileError>,
}

impl Check<'_> {
    fn err(&mut self, key: &str, message: impl Into<String>) {
        self.out.push(ProfileError::new(self.file, key, message));
    }
}

/// Every problem of profile `p` read from `file`.
pub fn validate(file: &str, p: &Profile) -> Vec<ProfileError> {
    let mut c = Check {
        file,
        out: Vec::new(),
    };
    accounts(&mut c, p);
    let root_devices = root(&mut c, &p.storage.root);
    pools(&mut c, &p.storage.zfs, &root_devices);
    if let Some(n) = &p.network {
        network(&mut c, n);
    }
    replication(&mut c, p);
    c.out
}

fn accounts(c: &mut Check<'_>, p: &Profile) {
    if let Some(g) = &p.group
        && !crate::config::valid_name(g)
    {
        c.err(
            "group",
            format!("`{g}` is not a group name (letters, digits, `-` and `_`, at most 63)"),
        );
    }
    if let Some(h) = &p.root_password_hash
        && !(h.starts_with("$6$") || h.starts_with("$5$") || h.starts_with("$y$") || h == "!")
    {
        c.err(
            "root_password_hash",
            "must be a crypt(3) hash ($6$…, $y$…), not a password; make one with `mkpasswd -m sha-512`",
        );
    }
    if let Some(h) = &p.root_password_hash
        && h.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.err("root_password_hash", "must not contain blanks");
    }
    for (i, pkg) in p.packages.iter().enumerate() {
        if !valid_package(pkg) {
            c.err(
                &format!("packages[{i}]"),
                format!("`{pkg}` is not a Debian package name"),
            );
        }
    }
    for (i, k) in p.ssh_authorized_keys.iter().enumerate() {
        if k.lines().count() != 1
            || k.split_whitespace().count() < 2
            || k.contains('\'')
            || k.chars().any(char::is_control)
        {
            c.err(
                &format!("ssh_authorized_keys[{i}]"),
                "must be one line: `TYPE BASE64 [COMMENT]`",
            );
        }
    }
    let tz_name = |tz: &str| {
        tz.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_+-".contains(ch))
        })
    };
    if let Some(tz) = &p.timezone
        && !tz_name(tz)
    {
        c.err(
            "timezone",
            format!("`{tz}` is not a tz database name such as `Etc/UTC` or `Europe/Berlin`"),
        );
    }
    for (i, s) in p.ntp.iter().enumerate() {
        if !crate::facts::is_dns_name(s) {
            c.err(
                &format!("ntp[{i}]"),
                format!("`{s}` is not a host name or IPv4 address"),
            );
        }
    }
    if let Some(m) = &p.mirror {
        if let Some(u) = &m.url
            && crate::mirror::MirrorCtx::from_uri(u, "bookworm", None).is_none()
        {
            c.err(
                "mirror.url",
                format!("`{u}` is not a mirror URL like `http://<mirror>/debian`"),
            );
        }
        if let Some(px) = &m.proxy
            && !(px.starts_with("http://") && safe_word(px))
        {
            c.err(
                "mirror.proxy",
                format!("`{px}` is not a proxy URL like `http://proxy.example:3128/`"),
            );
        }
    }
    if let Some(m) = &p.installer_nic
        && !valid_mac(m)
    {
        c.err(
            "installer_nic",
            format!("`{m}` is not a MAC address like `52:54:00:12:34:56`"),
        );
    }
    for (i, a) in p.kernel_args.iter().enumerate() {
        if a.is_empty() || !safe_word(a) {
            c.err(
                &format!("kernel_args[{i}]"),
                format!("`{a}` is not one kernel argument (no blanks or quotes)"),
            );
        }
    }
}

/// A Debian package name.
fn valid_package(pkg: &str) -> bool {
    pkg.len() >= 2
        && pkg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && pkg
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// Text that can sit unquoted in a preseed value or a shell word.
fn safe_word(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_graphic() && !"'\"`$\\;&|<>(){}".contains(c))
}

/// A device path rackseed can pass through preseed values and shell words.
fn valid_device(d: &str) -> bool {
    d.starts_with("/dev/")
        && d.len() > 5
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.:+-@".contains(c))
        && !d.contains("/../")
}

/// A glob that can be matched in `case`: no control characters, not empty.
fn valid_glob(g: &str) -> bool {
    !g.is_empty() && !g.chars().any(char::is_control)
}

/// Checks a disk selection; returns the number of disks it picks.
fn disk_selection(c: &mut Check<'_>, key: &str, d: &DiskSelection, default_count: u32) -> u32 {
    let rule = d.count.is_some()
        || d.min_size.is_some()
        || d.max_size.is_some()
        || d.model.is_some()
        || d.by_id.is_some();
    if !d.devices.is_empty() && rule {
        c.err(
            key,
            "give either `devices` or a rule (`count`, `min_size`, `max_size`, `model`, `by_id`), not both",
        );
    }
    for (i, dev) in d.devices.iter().enumerate() {
        if !valid_device(dev) {
            c.err(
                &format!("{key}.devices[{i}]"),
                format!("`{dev}` is not a device path like `/dev/disk/by-id/ata-…`"),
            );
        }
        if let Some(j) = d.devices[..i].iter().position(|x| x == dev) {
            c.err(
                &format!("{key}.devices[{i}]"),
                format!("{dev} is listed twice (also {key}.devices[{j}])"),
            );
        }
    }
    if let Some(0) = d.count {
        c.err(&format!("{key}.count"), "must be at least 1");
    }
    if let (Some(min), Some(max)) = (d.min_size, d.max_size)
        && max < min
    {
        c.err(
            &format!("{key}.max_size"),
            format!("{max} is smaller than min_size {min}"),
        );
    }
    for (what, g) in [("model", &d.model), ("by_id", &d.by_id)] {
        if let Some(g) = g
            && !valid_glob(g)
        {
            c.err(
                &format!("{key}.{what}"),
                "must be a non-empty shell glob on one line",
            );
        }
    }
    if d.devices.is_empty() {
        d.count.unwrap_or(default_count)
    } else {
        d.devices.len() as u32
    }
}

/// Checks the root storage; returns its explicit devices with their keys.
fn root(c: &mut Check<'_>, r: &RootStorage) -> Vec<(String, String)> {
    let n = disk_selection(c, "storage.root.disks", &r.disks, r.raid.min_disks());
    match r.raid {
        RaidLevel::Raid1 | RaidLevel::Raid10 if n < r.raid.min_disks() => {
            c.err(
                "storage.root.raid",
                format!("{} needs {} disks, found {n}", r.raid, r.raid.min_disks()),
            );
        }
        RaidLevel::None if n != 1 => {
            c.err(
                "storage.root.raid",
                format!(
                    "none (one disk, no RAID) takes 1 disk, found {n}; use raid1 or raid10 for more"
                ),
            );
        }
        _ => {}
    }
    if let Some(s) = r.swap
        && s.mib() < 64
    {
        c.err(
            "storage.root.swap",
            format!("{s} is too small (at least 64M)"),
        );
    }
    if let Some(s) = r.min_size
        && s.mib() < 2048
    {
        c.err(
            "storage.root.min_size",
            format!("{s} is too small for Debian (at least 2G)"),
        );
    }
    r.disks
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("storage.root.disks.devices[{i}]"), d.clone()))
        .collect()
}

fn valid_pool_name(n: &str) -> bool {
    n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.len() <= 200
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        && !RESERVED_POOL_NAMES.contains(&n)
        && !(n.starts_with("c") && n[1..].starts_with(|c: char| c.is_ascii_digit()))
}

fn valid_dataset_name(n: &str) -> bool {
    !n.is_empty()
        && n.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        })
}

fn properties(c: &mut Check<'_>, key: &str, props: &BTreeMap<String, PropValue>) {
    for (k, v) in props {
        let name_ok = !k.is_empty()
            && k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_:.-".contains(c));
        if !name_ok {
            c.err(
                &format!("{key}.{k}"),
                "is not a ZFS property name (lowercase letters, digits, `_`, and `:` for user properties)",
            );
        }
        let v = v.as_str();
        if v.is_empty() || v.chars().any(char::is_control) {
            c.err(
                &format!("{key}.{k}"),
                "needs a value on one line (write `\"on\"` or `\"off\"` in quotes if in doubt)",
            );
        }
    }
}

fn pools(c: &mut Check<'_>, z: &Zfs, root_devices: &[(String, String)]) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut used: Vec<(String, String)> = root_devices.to_vec();
    for (i, p) in z.pools.iter().enumerate() {
        let key = format!("storage.zfs.pools[{i}]");
        if !valid_pool_name(&p.name) {
            c.err(
                &format!("{key}.name"),
                format!(
                    "`{}` is not a ZFS pool name (starts with a letter; letters, digits, `_.:-`; not a vdev keyword)",
                    p.name
                ),
            );
        }
        if let Some(j) = names.insert(&p.name, i) {
            c.err(
                &format!("{key}.name"),
                format!(
                    "pool `{}` is already defined (storage.zfs.pools[{j}])",
                    p.name
                ),
            );
        }
        if p.vdevs.is_empty() {
            c.err(
                &format!("{key}.vdevs"),
                "a pool needs at least one vdev, e.g. `- {kind: mirror, disks: 2}`",
            );
        }
        let mut total = 0;
        for (j, v) in p.vdevs.iter().enumerate() {
            if v.disks < v.kind.min_disks() {
                c.err(
                    &format!("{key}.vdevs[{j}].disks"),
                    format!(
                        "a {} vdev needs at least {} disks, found {}",
                        v.kind,
                        v.kind.min_disks(),
                        v.disks
                    ),
                );
            }
            total += v.disks;
        }
        let n = disk_selection(c, &format!("{key}.disks"), &p.disks, total);
        if !p.disks.devices.is_empty() && n != total {
            c.err(
                &format!("{key}.disks.devices"),
                format!("the vdevs take {total} disks, {n} are listed"),
            );
        } else if let Some(count) = p.disks.count
            && count != total
        {
            c.err(
                &format!("{key}.disks.count"),
                format!("the vdevs take {total} disks, not {count}"),
            );
        }
        if let Some(a) = p.ashift
            && !(9..=16).contains(&a)
        {
            c.err(
                &format!("{key}.ashift"),
                format!("{a} is out of range (9–16; 12 for 4K-sector disks)"),
            );
        }
        properties(c, &format!("{key}.properties"), &p.properties);
        properties(
            c,
            &format!("{key}.filesystem_properties"),
            &p.filesystem_properties,
        );
        let mut ds: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, d) in p.datasets.iter().enumerate() {
            if !valid_dataset_name(&d.name) {
                c.err(
                    &format!("{key}.datasets[{j}].name"),
                    format!(
                        "`{}` is not a dataset name below the pool (e.g. `data` or `vm/images`)",
                        d.name
                    ),
                );
            }
            if let Some(k) = ds.insert(&d.name, j) {
                c.err(
                    &format!("{key}.datasets[{j}].name"),
                    format!(
                        "dataset `{}` is already defined ({key}.datasets[{k}])",
                        d.name
                    ),
                );
            }
            properties(c, &format!("{key}.datasets[{j}].properties"), &d.properties);
        }
        for (j, dev) in p.disks.devices.iter().enumerate() {
            let k = format!("{key}.disks.devices[{j}]");
            if let Some((other, _)) = used.iter().find(|(_, d)| d == dev) {
                let what = if other.starts_with("storage.root") {
                    "a root disk"
                } else {
                    "a disk of another pool"
                };
                c.err(
                    &k,
                    format!(
                        "{dev} is also {what} ({other}); a disk belongs to root or to one pool"
                    ),
                );
            }
            used.push((k, dev.clone()));
        }
    }
}

/// What a network name refers to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Interface,
    Bond,
    Vlan,
    Bridge,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Interface => "an interface",
            Kind::Bond => "a bond",
            Kind::Vlan => "a VLAN",
            Kind::Bridge => "a bridge",
        }
    }
}

struct Named<'a> {
    kind: Kind,
    key: String,
    mtu: u32,
    ipv4: Option<&'a Ipv4Config>,
}

fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "lo"
        && n != "all"
        && n != "none"
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn mtu(c: &mut Check<'_>, key: &str, m: Option<u32>) -> u32 {
    if let Some(v) = m
        && !(MIN_MTU..=MAX_MTU).contains(&v)
    {
        c.err(
            &format!("{key}.mtu"),
            format!("{v} is out of range ({MIN_MTU}–{MAX_MTU})"),
        );
    }
    m.unwrap_or(DEFAULT_MTU)
}

/// Parses a MAC address in `aa:bb:cc:dd:ee:ff` form.
pub fn valid_mac(m: &str) -> bool {
    m.parse::<crate::mac::MacAddr>().is_ok() && m.len() == 17
}

fn declare<'a>(
    c: &mut Check<'_>,
    names: &mut BTreeMap<String, Named<'a>>,
    name: &str,
    named: Named<'a>,
) {
    let key = format!("{}.name", named.key);
    if !valid_ifname(name) {
        c.err(
            &key,
            format!("`{name}` is not an interface name (1–15 letters, digits, `_.-`; not `lo`)"),
        );
    }
    if let Some(prev) = names.get(name) {
        c.err(
            &key,
            format!(
                "`{name}` is already the name of {} ({})",
                prev.kind.what(),
                prev.key
            ),
        );
    } else {
        names.insert(name.to_string(), named);
    }
}

fn network(c: &mut Check<'_>, n: &Network) {
    let mut names: BTreeMap<String, Named<'_>> = BTreeMap::new();
    for (i, itf) in n.interfaces.iter().enumerate() {
        let key = format!("network.interfaces[{i}]");
        let m = mtu(c, &key, itf.mtu);
        if has_glob(&itf.name) {
            c.err(
                &format!("{key}.name"),
                "must be a kernel name, not a glob (globs select bond members)",
            );
        }
        declare(
            c,
            &mut names,
            &itf.name,
            Named {
                kind: Kind::Interface,
                key,
                mtu: m,
                ipv4: itf.ipv4.as_ref(),
            },
        );
    }
    // Literal member names, to find NICs used twice.
    let mut members: BTreeMap<String, String> = BTreeMap::new();
    for (i, b) in n.bonds.iter().enumerate() {
        let key = format!("network.bonds[{i}]");
        let m = mtu(c, &key, b.mtu);
        bond(c, &key, b, &mut members);
        declare(
            c,
            &mut names,
            &b.name,
            Named {
                kind: Kind::Bond,
                key,
                mtu: m,
                ipv4: b.ipv4.as_ref(),
            },
        );
    }
    for (i, itf) in n.interfaces.iter().enumerate() {
        if let Some(owner) = members.get(&itf.name) {
            c.err(
                &format!("network.interfaces[{i}].name"),
                format!(
                    "{} is a member of {owner}; configure the bond instead",
                    itf.name
                ),
            );
        }
    }
    let mut ids: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for (i, v) in n.vlans.iter().enumerate() {
        let key = format!("network.vlans[{i}]");
        if !(1..=4094).contains(&v.id) {
            c.err(
                &format!("{key}.id"),
                format!("{} is not a VLAN id (1–4094)", v.id),
            );
        }
        let m = mtu(c, &key, v.mtu);
        match names.get(&v.on) {
            Some(p) if matches!(p.kind, Kind::Bond | Kind::Interface) => {
                if m > p.mtu {
                    c.err(
                        &format!("{key}.mtu"),
                        format!(
                            "{m} is larger than {}'s MTU ({}); raise the MTU of {} too",
                            v.on, p.mtu, v.on
                        ),
                    );
                }
            }
            Some(p) => c.err(
                &format!("{key}.on"),
                format!(
                    "{} is {} ({}); VLANs go on a bond or interface",
                    v.on,
                    p.kind.what(),
                    p.key
                ),
            ),
            None if members.contains_key(&v.on) => c.err(
                &format!("{key}.on"),
                format!(
                    "{} is a member of {}; put the VLAN on the bond",
                    v.on, members[&v.on]
                ),
            ),
            None => c.err(
                &format!("{key}.on"),
                format!("no bond or interface named {}", v.on),
            ),
        }
        if let Some(j) = ids.insert((v.on.clone(), v.id), i) {
            c.err(
                &format!("{key}.id"),
                format!(
                    "VLAN {} is already defined on {} (network.vlans[{j}])",
                    v.id, v.on
                ),
            );
            continue;
        }
        let ifname = v.ifname();
        if let Some(given) = &v.name
            && *given != ifname
        {
            c.err(
                &format!("{key}.name"),
                format!("must be `{ifname}` (`<on>.<id>`), the name ifupdown creates the VLAN by"),
            );
        }
        declare(
            c,
            &mut names,
            &ifname,
            Named {
                kind: Kind::Vlan,
                key,
                mtu: m,
                ipv4: v.ipv4.as_ref(),
            },
        );
    }
    let vlan_names: Vec<String> = n.vlans.iter().map(Vlan::ifname).collect();
    let mut ports: BTreeMap<String, String> = BTreeMap::new();
    for (i, b) in n.bridges.iter().enumerate() {
        let key = format!("network.bridges[{i}]");
        let m = mtu(c, &key, b.mtu);
        for (j, port) in b.ports.iter().enumerate() {
            let pkey = format!("{key}.ports[{j}]");
            match names.get(port) {
                Some(p) if p.kind == Kind::Bridge => c.err(
                    &pkey,
                    format!("{port} is a bridge; bridges cannot be nested"),
                ),
                Some(p) => {
                    if p.ipv4.is_some() {
                        c.err(
                            &pkey,
                            format!(
                                "{port} has an address ({}.ipv4); an interface attached to a bridge cannot, give it to {}",
                                p.key, b.name
                            ),
                        );
                    }
                    if m > p.mtu {
                        c.err(
                            &format!("{key}.mtu"),
                            format!("{m} is larger than the MTU of port {port} ({})", p.mtu),
                        );
                    }
                }
                None if members.contains_key(port) => c.err(
                    &pkey,
                    format!(
                        "{port} is a member of {}; attach the bond or one of its VLANs",
                        members[port]
                    ),
                ),
                None if port.contains('.') => c.err(
                    &pkey,
                    format!(
                        "no VLAN named {port} (VLANs: {})",
                        if vlan_names.is_empty() {
                            "none".into()
                        } else {
                            vlan_names.join(", ")
                        }
                    ),
                ),
                None => c.err(&pkey, format!("no VLAN, bond or interface named {port}")),
            }
            if let Some(other) = ports.insert(port.clone(), b.name.clone()) {
                c.err(&pkey, format!("{port} is already a port of bridge {other}"));
            }
        }
        declare(
            c,
            &mut names,
            &b.name,
            Named {
                kind: Kind::Bridge,
                key,
                mtu: m,
                ipv4: b.ipv4.as_ref(),
            },
        );
    }
    addresses(c, &names);
    if let Some(d) = &n.dns {
        for (i, s) in d.search.iter().enumerate() {
            if !crate::facts::is_dns_name(s) {
                c.err(
                    &format!("network.dns.search[{i}]"),
                    format!("`{s}` is not a domain name"),
                );
            }
        }
    }
}

fn bond(c: &mut Check<'_>, key: &str, b: &Bond, members: &mut BTreeMap<String, String>) {
    let m = &b.members;
    let mkey = format!("{key}.members");
    match (m.names.is_empty(), m.macs.is_empty()) {
        (true, true) => c.err(
            &mkey,
            "give `names` (kernel names or globs) or `macs` of the NICs to bond",
        ),
        (false, false) => c.err(&mkey, "give `names` or `macs`, not both"),
        _ => {}
    }
    let globbed = m.names.iter().any(|n| has_glob(n));
    if globbed && m.count.is_none() {
        c.err(
            &format!("{mkey}.count"),
            format!(
                "required when `names` has a glob ({}); say how many NICs to bond",
                m.names.join(", ")
            ),
        );
    }
    let listed = m.names.len().max(m.macs.len()) as u32;
    if let Some(count) = m.count {
        if count == 0 {
            c.err(&format!("{mkey}.count"), "must be at least 1");
        } else if !globbed && count != listed {
            c.err(
                &format!("{mkey}.count"),
                format!("{count} does not match the {listed} members listed"),
            );
        }
    }
    for (i, n) in m.names.iter().enumerate() {
        if n.is_empty()
            || n.len() > 15
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-*?[]!".contains(c))
        {
            c.err(
                &format!("{mkey}.names[{i}]"),
                format!("`{n}` is not an interface name or glob"),
            );
        }
        if !has_glob(n) {
            if let Some(other) = members.get(n) {
                c.err(
                    &format!("{mkey}.names[{i}]"),
                    format!("{n} is already a member of {other}"),
                );
            }
            members.insert(n.clone(), b.name.clone());
        }
    }
    for (i, mac) in m.macs.iter().enumerate() {
        if !valid_mac(mac) {
            c.err(
                &format!("{mkey}.macs[{i}]"),
                format!("`{mac}` is not a MAC address like `52:54:00:12:34:56`"),
            );
        }
    }
    let lacp = b.mode == BondMode::Lacp;
    if b.lacp_rate.is_some() && !lacp {
        c.err(
            &format!("{key}.lacp_rate"),
            format!(
                "only 802.3ad bonds have a LACP rate (this bond is {})",
                b.mode
            ),
        );
    }
    if b.xmit_hash_policy.is_some() && !lacp {
        c.err(
            &format!("{key}.xmit_hash_policy"),
            format!(
                "only 802.3ad bonds take a transmit hash policy (this bond is {})",
                b.mode
            ),
        );
    }
    if let Some(p) = &b.primary {
        if b.mode != BondMode::ActiveBackup {
            c.err(
                &format!("{key}.primary"),
                format!(
                    "only active-backup bonds have a primary member (this bond is {})",
                    b.mode
                ),
            );
        }
        if !globbed && !m.names.is_empty() && !m.names.contains(p) {
            c.err(
                &format!("{key}.primary"),
                format!("{p} is not a member ({})", m.names.join(", ")),
            );
        }
    }
    if let Some(mi) = b.miimon
        && mi > 60_000
    {
        c.err(
            &format!("{key}.miimon"),
            format!("{mi} ms is out of range (0–60000; 100 is usual)"),
        );
    }
}

fn addresses(c: &mut Check<'_>, names: &BTreeMap<String, Named<'_>>) {
    let mut provisioning: Option<&str> = None;
    let mut gateway: Option<&str> = None;
    let mut any = false;
    for (name, n) in names {
        let Some(ip) = n.ipv4 else { continue };
        any = true;
        let key = format!("{}.ipv4", n.key);
        match ip.method {
            AddressMethod::Node => {
                if ip.subnet.is_none() {
                    c.err(
                        &format!("{key}.subnet"),
                        "required with `method: node`: the network node addresses come from, e.g. `198.51.100.0/24`",
                    );
                }
            }
            AddressMethod::Dhcp | AddressMethod::Provisioning => {
                if ip.gateway.is_some() {
                    c.err(
                        &format!("{key}.gateway"),
                        format!(
                            "only static (`method: node`) addresses take a gateway; {} brings its own",
                            ip.method
                        ),
                    );
                }
            }
        }
        if ip.method == AddressMethod::Provisioning {
            if let Some(other) = provisioning {
                c.err(
                    &format!("{key}.method"),
                    format!(
                        "only one interface can keep the provisioning address (already {other})"
                    ),
                );
            }
            provisioning = Some(name);
        }
        if let Some(gw) = ip.gateway {
            if let Some(other) = gateway {
                c.err(
                    &format!("{key}.gateway"),
                    format!("a default gateway is already set on {other}"),
                );
            }
            gateway = Some(name);
            if let Some(net) = ip.subnet
                && !net.contains(&gw)
            {
                c.err(
                    &format!("{key}.gateway"),
                    format!("{gw} is outside the subnet {net}"),
                );
            }
        }
        for (j, r) in ip.routes.iter().enumerate() {
            if let Some(net) = ip.subnet
                && !net.contains(&r.via)
            {
                c.err(
                    &format!("{key}.routes[{j}].via"),
                    format!("{} is outside the subnet {net}", r.via),
                );
            }
        }
    }
    if !any && !names.is_empty() {
        c.err(
            "network",
            "no interface has an address, so the node would be unreachable; give one `ipv4: {method: provisioning}`",
        );
    }
}

fn replication(c: &mut Check<'_>, p: &Profile) {
    let Some(r) = &p.replication else { return };
    let Some(n) = &p.network else {
        c.err(
            "replication.interface",
            format!(
                "no interface named {}: the profile has no `network` section",
                r.interface
            ),
        );
        return;
    };
    let found = n
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), i.ipv4.as_ref()))
        .chain(n.bonds.iter().map(|b| (b.name.clone(), b.ipv4.as_ref())))
        .chain(n.vlans.iter().map(|v| (v.ifname(), v.ipv4.as_ref())))
        .chain(n.bridges.iter().map(|b| (b.name.clone(), b.ipv4.as_ref())))
        .find(|(name, _)| *name == r.interface);
    match found {
        None => c.err(
            "replication.interface",
            format!("no interface named {}", r.interface),
        ),
        Some((_, None)) => c.err(
            "replication.interface",
            format!("{} has no address; peers need one to replicate to", r.interface),
        ),
        Some((_, Some(ip))) if ip.method == AddressMethod::Dhcp => c.err(
            "replication.interface",
            format!(
                "{} takes its address by DHCP; peers need a known one (`method: node` or `provisioning`)",
                r.interface
            ),
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::profiles::parse_str;

    /// Every message for a profile text, as `rackseed profile check` prints them.
    fn errors(yaml: &str) -> Vec<String> {
        let file = "profiles/storage.yaml";
        match parse_str(yaml, file) {
            Err(e) => vec![e.to_string()],
            Ok((p, _)) => super::validate(file, &p)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    fn one(yaml: &str) -> String {
        let e = errors(yaml);
        assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
        e[0].clone()
    }

    const NET: &str = "network:\n  bonds:\n    - name: bond0\n      mode: 802.3ad\n      members: {names: [eth0, eth1]}\n      ipv4: {method: provisioning}\n";

    #[test]
    fn raid1_with_one_disk() {
        assert_eq!(
            one("storage:\n  root:\n    raid: raid1\n    disks: {count: 1}\n"),
            "profiles/storage.yaml: storage.root.raid: raid1 needs 2 disks, found 1"
        );
        assert_eq!(
            one(
                "storage:\n  root:\n    raid: raid10\n    disks: {devices: [/dev/disk/by-id/a, /dev/disk/by-id/b]}\n"
            ),
            "profiles/storage.yaml: storage.root.raid: raid10 needs 4 disks, found 2"
        );
        assert_eq!(
            one("storage:\n  root:\n    raid: none\n    disks: {count: 2}\n"),
            "profiles/storage.yaml: storage.root.raid: none (one disk, no RAID) takes 1 disk, found 2; use raid1 or raid10 for more"
        );
    }

    #[test]
    fn vlan_on_a_bond_that_does_not_exist() {
        let y =
            format!("{NET}  vlans:\n    - {{id: 10, on: bond0}}\n    - {{id: 20, on: bond1}}\n");
        assert_eq!(
            one(&y),
            "profiles/storage.yaml: network.vlans[1].on: no bond or interface named bond1"
        );
    }

    #[test]
    fn zfs_disk_also_used_by_root() {
        let y = "storage:\n  root:\n    disks: {devices: [/dev/disk/by-id/ata-A, /dev/disk/by-id/ata-B]}\n  zfs:\n    pools:\n      - name: tank\n        vdevs: [{kind: mirror, disks: 2}]\n        disks: {devices: [/dev/disk/by-id/ata-C, /dev/disk/by-id/ata-B]}\n";
        assert_eq!(
            one(y),
            "profiles/storage.yaml: storage.zfs.pools[0].disks.devices[1]: /dev/disk/by-id/ata-B is also a root disk (storage.root.disks.devices[1]); a disk belongs to root or to one pool"
        );
    }

    #[test]
    fn bridge_on_a_vlan_that_does_not_exist() {
        let y = format!(
            "{NET}  vlans:\n    - {{id: 10, on: bond0}}\n    - {{id: 20, on: bond0}}\n  bridges:\n    - name: br-guest\n      ports: [bond0.40]\n"
        );
        assert_eq!(
            one(&y),
            "profiles/storage.yaml: network.bridges[0].ports[0]: no VLAN named bond0.40 (VLANs: bond0.10, bond0.20)"
        );
    }

    #[test]
    fn duplicate_vlan_ids() {
        let y =
            format!("{NET}  vlans:\n    - {{id: 10, on: bond0}}\n    - {{id: 10, on: bond0}}\n");
        assert_eq!(
            one(&y),
            "profiles/storage.yaml: network.vlans[1].id: VLAN 10 is already defined on bond0 (network.vlans[0])"
        );
    }

    #[test]
    fn unknown_keys() {
        assert_eq!(
            one("storage:\n  root:\n    riad: raid1\n"),
            "profiles/storage.yaml: storage.root.riad: unknown field `riad`, expected one of `raid`, `filesystem`, `disks`, `swap`, `min_size` at line 3 column 5"
        );
        assert_eq!(
            one(&format!("{NET}  bonds_extra: []\n")),
            "profiles/storage.yaml: network.bonds_extra: unknown field `bonds_extra`, expected one of `interfaces`, `bonds`, `vlans`, `bridges`, `dns` at line 7 column 3"
        );
    }

    #[test]
    fn wrong_values_name_their_key() {
        assert_eq!(
            one("storage:\n  root:\n    raid: raid5\n"),
            "profiles/storage.yaml: storage.root.raid: unknown variant `raid5`, expected one of `raid1`, `raid10`, `none` at line 3 column 11"
        );
        assert_eq!(
            one("storage:\n  root:\n    swap: 2X\n"),
            "profiles/storage.yaml: storage.root.swap: `2X` is not a size; write it like `512M`, `8G` or `2T` at line 3 column 5"
        );
    }

    #[test]
    fn bond_options_and_addresses() {
        let y = "network:\n  bonds:\n    - name: bond0\n      mode: active-backup\n      lacp_rate: fast\n      members: {names: [\"eth*\"]}\n      ipv4: {method: node}\n";
        assert_eq!(
            errors(y),
            [
                "profiles/storage.yaml: network.bonds[0].members.count: required when `names` has a glob (eth*); say how many NICs to bond",
                "profiles/storage.yaml: network.bonds[0].lacp_rate: only 802.3ad bonds have a LACP rate (this bond is active-backup)",
                "profiles/storage.yaml: network.bonds[0].ipv4.subnet: required with `method: node`: the network node addresses come from, e.g. `198.51.100.0/24`",
            ]
        );
    }

    #[test]
    fn names_used_twice_and_ports_with_addresses() {
        let y = format!(
            "{NET}  vlans:\n    - {{id: 10, on: bond0, ipv4: {{method: dhcp}}}}\n  bridges:\n    - name: bond0\n      ports: []\n    - name: br0\n      ports: [bond0.10]\n"
        );
        assert_eq!(
            errors(&y),
            [
                "profiles/storage.yaml: network.bridges[0].name: `bond0` is already the name of a bond (network.bonds[0])",
                "profiles/storage.yaml: network.bridges[1].ports[0]: bond0.10 has an address (network.vlans[0].ipv4); an interface attached to a bridge cannot, give it to br0",
            ]
        );
    }

    #[test]
    fn mtu_of_a_vlan_above_its_bond() {
        let y = format!("{NET}  vlans:\n    - {{id: 10, on: bond0, mtu: 9000}}\n");
        assert_eq!(
            one(&y),
            "profiles/storage.yaml: network.vlans[0].mtu: 9000 is larger than bond0's MTU (1500); raise the MTU of bond0 too"
        );
    }

    #[test]
    fn pools_need_the_disks_their_vdevs_take() {
        let y = "storage:\n  zfs:\n    pools:\n      - name: tank\n        vdevs: [{kind: mirror, disks: 1}, {kind: raidz2, disks: 3}]\n        disks: {count: 5}\n";
        assert_eq!(
            errors(y),
            [
                "profiles/storage.yaml: storage.zfs.pools[0].vdevs[0].disks: a mirror vdev needs at least 2 disks, found 1",
                "profiles/storage.yaml: storage.zfs.pools[0].disks.count: the vdevs take 4 disks, not 5",
            ]
        );
    }

    #[test]
    fn replication_needs_an_addressed_interface() {
        let y = format!(
            "{NET}  bridges:\n    - {{name: br-guest, ports: []}}\nreplication: {{interface: br-guest}}\n"
        );
        assert_eq!(
            one(&y),
            "profiles/storage.yaml: replication.interface: br-guest has no address; peers need one to replicate to"
        );
        assert_eq!(
            one("replication: {interface: br-storage}\n"),
            "profiles/storage.yaml: replication.interface: no interface named br-storage: the profile has no `network` section"
        );
    }
}
