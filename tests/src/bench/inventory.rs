//! Inventory scale: rackseed started on an empty inventory and on one holding 10,000
//! nodes (added through `Inventory::add_node` before start): time until `/healthz`
//! answers, resident memory, and the latency of the admin API's node list. There is no
//! reference server for this; the empty inventory is the baseline.

use super::{Better, Net, Opts, Table};
use anyhow::Result;
use rackseed::inventory::{Inventory, InventoryError, NewNode};
use std::path::Path;
use std::time::Duration;

/// Adds `n` ready nodes (synchronous writes off while filling; the server reopens the
/// file with its own settings).
pub fn fill(db: &Path, n: usize) -> Result<()> {
    let inv = Inventory::open(db)?;
    inv.with_conn(|c| {
        c.batch("PRAGMA synchronous = OFF")
            .map_err(|source| InventoryError::Query {
                doing: "turning off synchronous writes for the bench fill",
                source,
            })
    })?;
    let now = rackseed::inventory::now_ms();
    for i in 0..n {
        inv.add_node(
            &NewNode {
                mac: Some(
                    format!(
                        "52:54:01:{:02x}:{:02x}:{:02x}",
                        i >> 16,
                        (i >> 8) & 0xff,
                        i & 0xff
                    )
                    .parse()?,
                ),
                hostname: format!("scale{i:05}"),
                profile: "lab-single-disk".into(),
                provision: false,
                ..NewNode::default()
            },
            Duration::from_secs(3600),
            now,
        )?;
    }
    Ok(())
}

/// The inventory scenario.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    let big = if opts.quick { 1_000 } else { 10_000 };
    let big_label = format!("{big} nodes");
    let cols = ["empty inventory", big_label.as_str()];
    let mut startup = Table::new(
        "Inventory scale: start-up until /healthz answers",
        "ms",
        Better::Lower,
        &cols,
    );
    let mut rss = Table::new(
        "Inventory scale: resident memory (VmRSS)",
        "MB",
        Better::Lower,
        &cols,
    );
    let mut list = Table::new(
        "Inventory scale: GET /api/nodes (all nodes)",
        "ms",
        Better::Lower,
        &cols,
    );
    let lists = if opts.quick { 3 } else { 10 };
    for run in 0..opts.runs {
        for (label, n) in [(cols[0], 0usize), (cols[1], big)] {
            eprintln!(" run {}/{} {label}", run + 1, opts.runs);
            let net = Net::new()?;
            let cfg = super::rackseed_config();
            let mut s = crate::Server::prepare(&net.lab, &cfg)?;
            s.log_filter = "info".into();
            let data = s.dir.path().join("data");
            std::fs::create_dir_all(&data)?;
            fill(&data.join("inventory.db"), n)?;
            let took = s.spawn_polling(Duration::from_millis(10))?;
            startup.add("start-up", label, took.as_secs_f64() * 1000.0);
            let pid = s.pid();
            if let Some(kb) = pid.and_then(|p| super::proc_status_kb(p, "VmRSS")) {
                rss.add("after start-up", label, kb as f64 / 1000.0);
            }
            let auth = format!("Authorization: Bearer {}", s.token);
            let mut times = Vec::new();
            for _ in 0..lists {
                // The admin API listens on the server's loopback (server.admin).
                let out = String::from_utf8_lossy(
                    &crate::run(std::process::Command::new("ip").args([
                        "netns",
                        "exec",
                        &s.ns,
                        "curl",
                        "-sf",
                        "-m",
                        "60",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{time_total}",
                        "-H",
                        &auth,
                        &format!("{}/api/nodes", crate::ADMIN),
                    ]))?
                    .stdout,
                )
                .to_string();
                times.push(out.trim().parse::<f64>().unwrap_or(f64::NAN) * 1000.0);
            }
            if let Some(m) = super::median(&times) {
                list.add("list latency (median of requests)", label, m);
            }
            if let Some(kb) = pid.and_then(|p| super::proc_status_kb(p, "VmRSS")) {
                rss.add(
                    &format!("after {lists} node lists"),
                    label,
                    kb as f64 / 1000.0,
                );
            }
            eprintln!(
                "   {label}: start-up {:.0} ms, list {:.1} ms",
                took.as_secs_f64() * 1000.0,
                super::median(&times).unwrap_or(0.0)
            );
        }
    }
    Ok(vec![startup, rss, list])
}
