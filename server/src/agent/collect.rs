//! Reads the facts of the machine the agent runs on (kernel files and tools), using
//! the pure parsers of `crate::facts`.

use crate::facts::{self, Bridge, Facts, Interface, RootFacts, SshKey};
use std::path::Path;
use std::process::Command;

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

/// The names in a directory, sorted (none when it cannot be read).
pub(super) fn list_dir(path: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// The interfaces under `/sys/class/net` (not `lo`), with their permanent MACs.
pub fn interfaces() -> Vec<Interface> {
    list_dir("/sys/class/net")
        .into_iter()
        .filter(|n| n != "lo")
        .map(|name| {
            let base = format!("/sys/class/net/{name}");
            // A bond member carries the bond's MAC; its own is kept by the bonding driver.
            let mac = read(format!("{base}/bonding_slave/perm_hwaddr"))
                .or_else(|| read(format!("{base}/address")))
                .unwrap_or_default();
            Interface {
                mac: mac.trim().to_string(),
                mtu: read(format!("{base}/mtu"))
                    .and_then(|m| m.trim().parse().ok())
                    .unwrap_or(0),
                up: read(format!("{base}/operstate")).is_some_and(|s| s.trim() == "up"),
                name,
            }
        })
        .collect()
}

/// The facts of this machine.
pub fn collect() -> Facts {
    let hostname = read("/etc/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|| output("hostname", &[]).map(|h| h.trim().to_string()))
        .unwrap_or_default();
    let md_arrays = read("/proc/mdstat")
        .map(|t| facts::parse_mdstat(&t))
        .unwrap_or_default();
    let root = {
        let line = output("findmnt", &["-n", "-o", "SOURCE,FSTYPE", "/"]).unwrap_or_default();
        let mut w = line.split_whitespace();
        let source = w.next().unwrap_or_default().to_string();
        let fstype = w.next().unwrap_or_default().to_string();
        // /dev/md0, /dev/md/0 or a by-uuid link: resolve to the kernel name.
        let real = std::fs::canonicalize(&source)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_default();
        let md = md_arrays.iter().find(|a| a.name == real).cloned();
        RootFacts { source, fstype, md }
    };
    let mut pools = output("zpool", &["status", "-P"])
        .map(|t| facts::parse_zpool_status(&t))
        .unwrap_or_default();
    for p in &mut pools {
        if let Some(t) = output(
            "zfs",
            &[
                "get",
                "-H",
                "-r",
                "-s",
                "local",
                "-o",
                "name,property,value",
                "all",
                &p.name,
            ],
        ) {
            for line in t.lines() {
                let cols: Vec<&str> = line.split('\t').collect();
                if cols.len() == 3 {
                    p.datasets
                        .entry(cols[0].to_string())
                        .or_default()
                        .insert(cols[1].to_string(), cols[2].to_string());
                }
            }
        }
        if let Some(t) = output("zfs", &["list", "-H", "-r", "-o", "name", &p.name]) {
            for ds in t.lines() {
                p.datasets.entry(ds.trim().to_string()).or_default();
            }
        }
    }
    let bonds = list_dir("/proc/net/bonding")
        .into_iter()
        .filter_map(|b| {
            read(format!("/proc/net/bonding/{b}")).map(|t| facts::parse_bonding(&b, &t))
        })
        .collect();
    let vlans = read("/proc/net/vlan/config")
        .map(|t| facts::parse_vlan_config(&t))
        .unwrap_or_default();
    let bridges = list_dir("/sys/class/net")
        .into_iter()
        .filter(|n| Path::new(&format!("/sys/class/net/{n}/bridge")).is_dir())
        .map(|n| Bridge {
            ports: list_dir(&format!("/sys/class/net/{n}/brif")),
            name: n,
        })
        .collect();
    let addresses = output("ip", &["-j", "-4", "addr"])
        .map(|t| facts::parse_ip_addr_json(&t))
        .unwrap_or_default();
    let ssh_host_keys: Vec<SshKey> = list_dir("/etc/ssh")
        .into_iter()
        .filter(|f| f.starts_with("ssh_host_") && f.ends_with("_key.pub"))
        .filter_map(|f| read(format!("/etc/ssh/{f}")).and_then(|t| facts::parse_ssh_public_key(&t)))
        .collect();
    Facts {
        hostname,
        machine_id: read("/etc/machine-id")
            .map(|m| m.trim().to_string())
            .unwrap_or_default(),
        smbios_uuid: read("/sys/class/dmi/id/product_uuid").map(|u| u.trim().to_lowercase()),
        root,
        md_arrays,
        pools,
        bonds,
        vlans,
        bridges,
        interfaces: interfaces(),
        addresses,
        ssh_host_keys,
    }
}
