//! `rackseed agent commission`: runs in the installer's inventory boot of an unknown
//! machine. Reads DMI, CPU, memory, disks (size, model, serial, bus, by-id names)
//! and NICs (MAC, driver, link, speed) from sysfs and procfs, listens for LLDP
//! frames, posts the report, and prints rackseed's answer (`reboot`, `poweroff`,
//! `wait`) for the script to act on. Parsing is `crate::commission`'s.

use crate::commission::{self, Cpu, Disk, HwFacts, Neighbour, Nic, System};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

use super::collect::list_dir;

/// `/dev/disk/by-id` names by the kernel name they point at.
fn by_id() -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in list_dir("/dev/disk/by-id") {
        if let Ok(target) = std::fs::read_link(format!("/dev/disk/by-id/{name}"))
            && let Some(dev) = target.file_name()
        {
            m.entry(dev.to_string_lossy().to_string())
                .or_default()
                .push(name);
        }
    }
    m
}

/// Every whole disk under `/sys/block` (not loop, ram, optical or device-mapper).
pub fn disks() -> Vec<Disk> {
    let ids = by_id();
    list_dir("/sys/block")
        .into_iter()
        .filter(|n| {
            !["loop", "ram", "sr", "fd", "dm-", "md", "zram"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        // The per-path devices of NVMe multipath (nvme0c0n1) are not disks of their own.
        .filter(|n| read(format!("/sys/block/{n}/hidden")) != "1")
        .filter(|n| !(n.starts_with("nvme") && n.contains('c')))
        .map(|name| {
            let base = format!("/sys/block/{name}");
            let path = std::fs::canonicalize(&base)
                .map(|p| p.to_string_lossy().to_string())
                .unwrap_or_default();
            let sectors: u64 = read(format!("{base}/size")).parse().unwrap_or(0);
            let mut serial = read(format!("{base}/device/serial"));
            if serial.is_empty() {
                serial = read(format!("{base}/serial"));
            }
            let by_id = ids.get(&name).cloned().unwrap_or_default();
            if serial.is_empty() {
                // ATA disks show their serial only in the by-id name: ata-<model>_<serial>.
                serial = by_id
                    .iter()
                    .find_map(|n| n.strip_prefix("ata-"))
                    .and_then(|n| n.rsplit_once('_'))
                    .map(|(_, s)| s.to_string())
                    .unwrap_or_default();
            }
            Disk {
                size_bytes: sectors * 512,
                model: read(format!("{base}/device/model")),
                serial,
                bus: commission::bus_of_sysfs_path(&path).to_string(),
                by_id,
                name,
            }
        })
        .collect()
}

/// Every NIC under `/sys/class/net` that is a device (not `lo`, bridges or bonds).
pub fn nics() -> Vec<Nic> {
    list_dir("/sys/class/net")
        .into_iter()
        .filter(|n| Path::new(&format!("/sys/class/net/{n}/device")).exists())
        .map(|name| {
            let base = format!("/sys/class/net/{name}");
            let driver = std::fs::read_link(format!("{base}/device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().to_string()))
                .unwrap_or_default();
            Nic {
                mac: read(format!("{base}/address")),
                driver,
                link: read(format!("{base}/carrier")) == "1",
                speed_mbps: read(format!("{base}/speed"))
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .map(|s| s as u32),
                name,
            }
        })
        .collect()
}

/// The hardware of this machine, without LLDP.
pub fn collect() -> HwFacts {
    let dmi = |f: &str| read(format!("/sys/class/dmi/id/{f}"));
    HwFacts {
        system: System {
            vendor: dmi("sys_vendor"),
            product: dmi("product_name"),
            serial: dmi("product_serial"),
            uuid: dmi("product_uuid"),
        },
        cpu: std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| commission::parse_cpuinfo(&t))
            .unwrap_or_else(|_| Cpu::default()),
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .map(|t| commission::parse_meminfo(&t))
            .unwrap_or(0),
        disks: disks(),
        nics: nics(),
        lldp: Vec::new(),
    }
}

/// Listens on every interface for LLDP frames for `wait`; one neighbour per NIC
/// and chassis/port. Errors (no packet sockets here) give no neighbours.
pub fn listen_lldp(wait: Duration, nics: &[Nic]) -> Vec<Neighbour> {
    use nix::sys::socket::{
        AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, recvfrom, setsockopt, socket,
        sockopt,
    };
    let mut out: Vec<Neighbour> = Vec::new();
    if wait.is_zero() {
        return out;
    }
    let names: BTreeMap<usize, String> = nics
        .iter()
        .filter_map(|n| {
            read(format!("/sys/class/net/{}/ifindex", n.name))
                .parse()
                .ok()
                .map(|i| (i, n.name.clone()))
        })
        .collect();
    let fd = match socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::EthAll,
    ) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("rackseed: no LLDP capture: packet socket: {e}");
            return out;
        }
    };
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 9216];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let tv = nix::sys::time::TimeVal::new(
            left.as_secs().min(1) as i64,
            if left.as_secs() >= 1 {
                0
            } else {
                left.subsec_micros().max(1000) as i64
            },
        );
        if setsockopt(&fd, sockopt::ReceiveTimeout, &tv).is_err() {
            break;
        }
        use std::os::fd::AsRawFd;
        let (n, from) = match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
            Ok(x) => x,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("rackseed: LLDP capture stopped: {e}");
                break;
            }
        };
        let frame = &buf[..n];
        if frame.len() < 14
            || u16::from_be_bytes([frame[12], frame[13]]) != commission::LLDP_ETHERTYPE
        {
            continue;
        }
        let Some(nic) = from.and_then(|a| names.get(&a.ifindex())) else {
            continue;
        };
        if let Some(nb) = commission::parse_lldpdu(nic, &frame[14..])
            && !out.iter().any(|o| {
                o.nic == nb.nic && o.chassis_id == nb.chassis_id && o.port_id == nb.port_id
            })
            && out.len() < commission::MAX_NEIGHBOURS
        {
            eprintln!(
                "rackseed: LLDP on {}: {} port {}",
                nb.nic, nb.chassis_id, nb.port_id
            );
            out.push(nb);
            // One neighbour per NIC is all a server has; stop early once every NIC
            // with link heard one.
            let linked = nics.iter().filter(|n| n.link).count();
            let heard = nics
                .iter()
                .filter(|n| out.iter().any(|o| o.nic == n.name))
                .count();
            if linked > 0 && heard >= linked {
                break;
            }
        }
    }
    out
}

/// Collects, listens, posts to `url` and returns rackseed's answer line.
pub fn run(url: &str, lldp_wait: Duration) -> Result<String> {
    let mut hw = collect();
    eprintln!(
        "rackseed: {} disks, {} NICs; listening for LLDP for {} s",
        hw.disks.len(),
        hw.nics.len(),
        lldp_wait.as_secs()
    );
    hw.lldp = listen_lldp(lldp_wait, &hw.nics);
    eprintln!("rackseed: {}", hw.summary());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build an HTTP client")?;
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        match client
            .post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&hw)?)
            .send()
        {
            Ok(r) => {
                let status = r.status();
                let body = r.text().unwrap_or_default();
                if status.is_success() {
                    return Ok(body.trim().to_string());
                }
                if status.is_client_error() {
                    anyhow::bail!(
                        "rackseed refused the hardware report: HTTP {status}: {}",
                        body.trim()
                    );
                }
                last = Some(anyhow::anyhow!("HTTP {status}: {}", body.trim()));
            }
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("no attempt"))
        .context(format!("cannot post the hardware report to {url}")))
}
