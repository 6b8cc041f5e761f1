//! Boot storm: N simulated nodes (see [`super::pxe`]) power on together and each goes
//! PXE ROM DHCP → TFTP undionly.kpxe → iPXE DHCP → iPXE script → kernel + initrd over
//! HTTP → preseed. Against rackseed (the nodes in its inventory as `provisioning`, so
//! scripts and preseeds are rendered per node) and against dnsmasq (DHCP + TFTP) with
//! nginx serving per-node static scripts and preseeds of the same shape. Measures the
//! wall time until the last node has its preseed, and rackseed's peak memory.

use super::pxe::{self, DhcpBus, NodeResult};
use super::refs::{self, Tree};
use super::{Better, Net, Opts, SERVER_IP, Table};
use anyhow::{Context, Result, bail};
use rackseed::inventory::{Inventory, NewNode};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SERVERS: &[&str] = &["rackseed", "dnsmasq+nginx"];
const POOL: (u8, u8) = (20, 250);
/// Addresses in [`POOL`]: the most nodes that can hold a lease at once (the
/// documentation range 192.0.2.0/24 is all the bench may use).
const POOL_SIZE: usize = (POOL.1 - POOL.0) as usize + 1;

/// The MAC of storm node `i` (1-based).
pub fn node_mac(i: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x5e, (i >> 8) as u8, (i & 0xff) as u8]
}

fn mac_text(m: [u8; 6], sep: &str) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// What the storm client reports.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StormReport {
    pub nodes: usize,
    pub done: usize,
    /// Until the last successful node had its preseed.
    pub wall_ms: u64,
    pub results: Vec<NodeResult>,
}

/// `rackseed-bench storm-client --nodes N --at-once C --timeout SECS`: runs inside the
/// client namespace and prints a [`StormReport`] as JSON. At most `C` nodes boot at a
/// time (the pool's size); each releases its lease after its preseed and the next one
/// powers on.
pub fn client_main(args: &[String]) -> Result<()> {
    let mut nodes = 200usize;
    let mut at_once = POOL_SIZE;
    let mut timeout = 300u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => {
                nodes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--nodes N")?
            }
            "--at-once" => {
                at_once = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--at-once C")?
            }
            "--timeout" => {
                timeout = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--timeout SECS")?
            }
            other => bail!("storm-client: unknown argument {other}"),
        }
    }
    let nodes = nodes.clamp(1, 4000);
    let at_once = at_once.clamp(1, POOL_SIZE);
    // Past the pool, a finished node's address is what the next node gets.
    let release = nodes > at_once;
    let bus = DhcpBus::bind("eth0")?;
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let start = |i: usize| -> Result<()> {
        let (bus, tx) = (bus.clone(), tx.clone());
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tx.send(pxe::boot_node(&bus, node_mac(i), t0, release));
            })?;
        Ok(())
    };
    let mut next = 1;
    while next <= nodes.min(at_once) {
        start(next)?;
        next += 1;
    }
    let deadline = t0 + Duration::from_secs(timeout);
    let mut results = Vec::new();
    while results.len() < nodes {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok(r) => {
                results.push(r);
                if next <= nodes {
                    start(next)?;
                    next += 1;
                }
            }
            Err(_) => break,
        }
    }
    bus.shutdown();
    let done = results.iter().filter(|r| r.ok).count();
    let wall_ms = results
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.preseed_ms)
        .max()
        .unwrap_or(0);
    let report = StormReport {
        nodes,
        done,
        wall_ms,
        results,
    };
    println!("{}", serde_json::to_string(&report)?);
    // Threads of nodes that never finished are abandoned with the process.
    std::process::exit(0);
}

/// Adds the storm nodes to a rackseed inventory before it starts, as `provisioning`.
fn add_nodes(db: &Path, n: usize) -> Result<()> {
    let inv = Inventory::open(db)?;
    let now = rackseed::inventory::now_ms();
    for i in 1..=n {
        inv.add_node(
            &NewNode {
                mac: Some(mac_text(node_mac(i), ":").parse()?),
                hostname: format!("storm{i:04}"),
                profile: "lab-single-disk".into(),
                provision: true,
                ..NewNode::default()
            },
            Duration::from_secs(4 * 3600),
            now,
        )?;
    }
    Ok(())
}

/// Writes nginx's per-node scripts and preseeds (the shape rackseed renders).
fn write_static(root: &Path, n: usize, preseed: &str) -> Result<()> {
    std::fs::create_dir_all(root.join("boot"))?;
    std::fs::create_dir_all(root.join("install"))?;
    let base = format!("http://{SERVER_IP}:8080");
    for i in 1..=n {
        let m = node_mac(i);
        let hy = mac_text(m, "-");
        let token = format!("{:048x}", (i as u128) * 0x9e37_79b9_7f4a_7c15);
        let script = format!(
            "#!ipxe\necho installing storm{i:04} ({mac})\nkernel {base}/installer/default/linux?mac={mac} initrd=initrd.gz auto=true priority=critical url={base}/install/{token}/preseed.cfg log_host={SERVER_IP} BOOTIF=01-{hy} hostname=storm{i:04} domain=prov.example || goto failed\ninitrd --name initrd.gz {base}/installer/default/initrd.gz?mac={mac} || goto failed\nboot || goto failed\n:failed\nsleep 5\nchain --replace {base}/boot/{hy}.ipxe\n",
            mac = mac_text(m, ":"),
        );
        std::fs::write(root.join(format!("boot/{hy}.ipxe")), script)?;
        std::fs::create_dir_all(root.join(format!("install/{token}")))?;
        std::fs::write(root.join(format!("install/{token}/preseed.cfg")), preseed)?;
    }
    Ok(())
}

/// Gives the client's eth0 every pool address (secondary), so each node can bind the
/// address it leases; `ip -batch` adds them in one call.
fn add_pool_addresses(net: &Net) -> Result<()> {
    let batch: String = (POOL.0..=POOL.1)
        .map(|o| format!("addr add 192.0.2.{o}/32 dev eth0\n"))
        .collect();
    let f = tempfile::NamedTempFile::new()?;
    std::fs::write(f.path(), batch)?;
    crate::run(
        std::process::Command::new("ip")
            .args(["-n", &net.client().name, "-batch"])
            .arg(f.path()),
    )?;
    Ok(())
}

fn run_client(net: &Net, nodes: usize, timeout: u64) -> Result<StormReport> {
    let exe = std::env::current_exe()?;
    let out = net
        .client()
        .cmd(&exe)
        .args([
            "storm-client",
            "--nodes",
            &nodes.to_string(),
            "--timeout",
            &timeout.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the storm client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| l.starts_with('{'))
        .with_context(|| format!("the storm client printed no report: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

fn summarize(name: &str, r: &StormReport) {
    let failed: Vec<&NodeResult> = r.results.iter().filter(|x| !x.ok).collect();
    eprintln!(
        "   {name}: {}/{} nodes reached their preseed, last at {:.1}s",
        r.done,
        r.nodes,
        r.wall_ms as f64 / 1000.0
    );
    for f in failed.iter().take(3) {
        eprintln!(
            "     failed {}: {}",
            f.mac,
            f.error.as_deref().unwrap_or("?")
        );
    }
    let phase = |label: &str, get: fn(&NodeResult) -> u64| {
        let v: Vec<f64> = r
            .results
            .iter()
            .filter(|x| x.ok)
            .map(|x| get(x).saturating_sub(x.start_ms) as f64 / 1000.0)
            .collect();
        if let Some(m) = super::median(&v) {
            eprint!(" {label} {m:.1}s");
        }
    };
    eprint!("     median time from power-on to:");
    phase("dhcp", |x| x.dhcp_pxe_ms);
    phase("tftp", |x| x.tftp_ms);
    phase("ipxe-dhcp", |x| x.dhcp_ipxe_ms);
    phase("script", |x| x.script_ms);
    phase("kernel+initrd", |x| x.kernel_initrd_ms);
    phase("preseed", |x| x.preseed_ms);
    eprintln!();
}

/// The boot storm scenario.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    super::need("dnsmasq", "dnsmasq-base")?;
    super::need("nginx", "nginx")?;
    let (nodes, timeout) = if opts.quick { (20, 120) } else { (1000, 600) };
    let tree = Tree::new()?;
    let mut wall = Table::new(
        &format!(
            "Boot storm: {nodes} nodes ({} booting at once), wall time until the last preseed",
            nodes.min(POOL_SIZE)
        ),
        "s",
        Better::Lower,
        SERVERS,
    );
    let mut done = Table::new(
        &format!("Boot storm: nodes that reached their preseed (of {nodes})"),
        "nodes",
        Better::Higher,
        SERVERS,
    );
    let mut mem = Table::new(
        "Boot storm: rackseed peak memory (VmHWM)",
        "MB",
        Better::Lower,
        &["rackseed"],
    );
    let mut preseed: Option<String> = None;
    for run in 0..opts.runs {
        for name in opts.order(SERVERS, run) {
            eprintln!(" run {}/{} {name}", run + 1, opts.runs);
            let net = Net::new()?;
            add_pool_addresses(&net)?;
            let report = if name == "rackseed" {
                // The pool of the bridge subnet widened to POOL.
                let cfg = crate::LabConfig::lab().set(
                    "dhcp.subnets.0.range",
                    format!("192.0.2.{}-192.0.2.{}", POOL.0, POOL.1),
                );
                let mut s = crate::Server::prepare(&net.lab, &cfg)?;
                s.log_filter = "info".into();
                let data = s.dir.path().join("data");
                std::fs::create_dir_all(&data)?;
                add_nodes(&data.join("inventory.db"), nodes)?;
                s.spawn_polling(Duration::from_millis(20))?;
                let r = run_client(&net, nodes, timeout)?;
                if let Some(kb) = s.pid().and_then(|p| super::proc_status_kb(p, "VmHWM")) {
                    mem.add("peak memory", "rackseed", kb as f64 / 1000.0);
                    eprintln!("   rackseed: peak memory {:.1} MB", kb as f64 / 1000.0);
                }
                if preseed.is_none() {
                    preseed = fetch_preseed(&net, node_mac(1)).ok();
                }
                r
            } else {
                let dir = tempfile::Builder::new()
                    .prefix("rackseed-bench-storm")
                    .tempdir()?;
                let root = dir.path();
                std::fs::set_permissions(
                    root,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
                tree.link_into(root)?;
                let body = preseed.clone().unwrap_or_else(|| {
                    "d-i debian-installer/locale string en_US.UTF-8\n".repeat(80)
                });
                write_static(root, nodes, &body)?;
                let _nginx = refs::nginx(&net, root)?;
                let _dnsmasq = refs::dnsmasq_pxe(&net, root, &format!("http://{SERVER_IP}:8080"))?;
                run_client(&net, nodes, timeout)?
            };
            summarize(name, &report);
            done.add("nodes with preseed", name, report.done as f64);
            if report.done == report.nodes {
                wall.add("wall time", name, report.wall_ms as f64 / 1000.0);
            } else {
                wall.add("wall time", name, timeout as f64);
            }
        }
    }
    Ok(vec![wall, done, mem])
}

/// One node's preseed as rackseed renders it (its script names the URL), so the
/// reference serves a file of the same size.
fn fetch_preseed(net: &Net, mac: [u8; 6]) -> Result<String> {
    let url = format!("http://{SERVER_IP}:8080/boot/{}.ipxe", mac_text(mac, "-"));
    let script = refs::client_out(net, &["curl", "-sf", "-m", "10", &url])?;
    let (_, _, p) = pxe::script_urls(&script)?;
    refs::client_out(net, &["curl", "-sf", "-m", "10", &p])
}
