//! HTTP: wrk in the client namespace downloads the installer kernel and initrd
//! (alternating) over 1, 20 and 100 keep-alive connections for a fixed period; the
//! aggregate throughput is the bytes read over the period. Against nginx with sendfile.

use super::refs::{self, RefServer, Tree};
use super::{Better, Net, Opts, SERVER_IP, Table};
use anyhow::{Result, bail};
use std::time::Duration;

const SERVERS: &[&str] = &["rackseed", "nginx"];

const SCRIPT: &str = r#"
local paths = { "/installer/default/linux", "/installer/default/initrd.gz" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % 2) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH bytes=%d us=%d requests=%d errors=%d\n",
    summary.bytes, summary.duration, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

/// What wrk measured.
#[derive(Debug, Default)]
pub struct Wrk {
    pub mb_per_s: f64,
    pub requests: u64,
    pub errors: u64,
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs wrk with `conns` connections for `secs`.
pub fn wrk(net: &Net, script: &std::path::Path, conns: usize, secs: u32) -> Result<Wrk> {
    let threads = conns.clamp(1, 2);
    let (_, out) = refs::client_sh(
        net,
        &format!(
            "wrk -t {threads} -c {conns} -d {secs}s --timeout 60s -s {} http://{SERVER_IP}:8080/ 2>&1",
            script.display()
        ),
        Duration::from_secs(secs as u64 + 90),
    );
    let Some(line) = out.lines().find(|l| l.starts_with("BENCH ")) else {
        bail!("wrk printed no result: {}", crate::tail(&out, 10));
    };
    let bytes = field(line, "bytes");
    let us = field(line, "us").max(1);
    Ok(Wrk {
        mb_per_s: bytes as f64 / us as f64,
        requests: field(line, "requests"),
        errors: field(line, "errors"),
    })
}

/// A running server, kept until it is dropped.
pub enum Running {
    Rackseed(crate::Server),
    Ref(RefServer),
}

/// The HTTP scenario.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    super::need("wrk", "wrk")?;
    super::need("nginx", "nginx")?;
    let tree = Tree::new()?;
    let script = tree.root().join("bench.lua");
    std::fs::write(&script, SCRIPT)?;
    let (conns, secs): (&[usize], u32) = if opts.quick {
        (&[1, 20], 2)
    } else {
        (&[1, 20, 100], 8)
    };
    let mut t = Table::new(
        "HTTP: installer kernel + initrd, aggregate throughput (wrk, keep-alive)",
        "MB/s",
        Better::Higher,
        SERVERS,
    );
    // Both servers stay up (each in its own namespaces); the runs alternate between
    // them case by case, so a burst of load from elsewhere hits both alike.
    let mut up = Vec::new();
    for name in opts.order(SERVERS, 0) {
        let net = Net::new()?;
        let server = match name {
            "rackseed" => Running::Rackseed(super::start_rackseed(
                &net,
                &super::rackseed_config(),
                |_| Ok(()),
            )?),
            _ => Running::Ref(refs::nginx(&net, tree.root())?),
        };
        up.push((name, net, server));
    }
    for run in 0..opts.runs {
        for c in conns {
            let mut order: Vec<usize> = (0..up.len()).collect();
            order.rotate_left(run % up.len().max(1));
            for i in order {
                let (name, net, _) = &up[i];
                let w = wrk(net, &script, *c, secs)?;
                eprintln!(
                    " run {}/{} {name}: {c} clients: {:.0} MB/s, {} requests, {} errors",
                    run + 1,
                    opts.runs,
                    w.mb_per_s,
                    w.requests,
                    w.errors
                );
                t.add(&format!("{c} clients"), name, w.mb_per_s);
            }
        }
    }
    Ok(vec![t])
}
