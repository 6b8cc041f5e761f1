//! DHCP rate: perfdhcp in the client namespace acts as a relay (giaddr 198.51.100.2)
//! and runs 4-way exchanges with PXE-like options (60 `PXEClient:Arch:00000:UNDI:002001`,
//! 93 BIOS, 94 UNDI 2.1) from 50,000 distinct MACs. The documentation ranges give a
//! pool of 241 addresses, so perfdhcp releases leases at the exchange rate (`-F`):
//! every lease is bound, stored, and released again, for every server alike.
//!
//! Per run and server: a search for the highest rate with under 1% drops (doubling,
//! then bisecting), and the latency at a fixed rate.

use super::refs::{self, RefServer};
use super::{Better, Net, Opts, RELAY_IP, SERVER_IP, Table};
use anyhow::Result;
use std::collections::HashMap;
use std::time::Duration;

const SERVERS: &[&str] = &["rackseed", "kea", "dnsmasq"];

/// What perfdhcp reported for one period.
#[derive(Debug, Default, Clone)]
pub struct Perf {
    /// Achieved 4-way exchanges per second.
    pub rate: f64,
    pub sent: u64,
    pub received: u64,
    /// Average DISCOVER→OFFER plus REQUEST→ACK delay, ms.
    pub latency_ms: f64,
    /// Maximum of the two max delays, ms.
    pub max_ms: f64,
}

impl Perf {
    /// Lost exchanges over both halves, as a fraction of those sent.
    pub fn drop_ratio(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            self.sent.saturating_sub(self.received) as f64 / self.sent as f64
        }
    }
}

/// Parses perfdhcp's final report.
pub fn parse_perfdhcp(out: &str) -> Perf {
    let mut p = Perf::default();
    let mut section = String::new();
    let mut per: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for line in out.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix("***Statistics for:") {
            section = s.trim_end_matches('*').trim().to_string();
            continue;
        }
        if let Some(r) = l.strip_prefix("Rate:") {
            p.rate = r
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0);
            continue;
        }
        if let Some((k, v)) = l.split_once(':')
            && !section.is_empty()
            && let Some(x) = v.split_whitespace().next().and_then(|x| x.parse().ok())
        {
            per.entry(section.clone())
                .or_default()
                .insert(k.trim().to_string(), x);
        }
    }
    for s in ["DISCOVER-OFFER", "REQUEST-ACK"] {
        if let Some(m) = per.get(s) {
            p.sent += *m.get("sent packets").unwrap_or(&0.0) as u64;
            p.received += *m.get("received packets").unwrap_or(&0.0) as u64;
            p.latency_ms += m.get("avg delay").copied().unwrap_or(0.0);
            p.max_ms = p.max_ms.max(m.get("max delay").copied().unwrap_or(0.0));
        }
    }
    p
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Runs perfdhcp for `secs` at `rate` against the server in `net`.
pub fn perfdhcp(net: &Net, rate: u32, secs: u32, clients: u32, seed: u32) -> Result<Perf> {
    let opt60 = format!("60,{}", hex("PXEClient:Arch:00000:UNDI:002001"));
    let args: Vec<String> = vec![
        "perfdhcp".into(),
        "-4".into(),
        "-l".into(),
        RELAY_IP.into(),
        "-r".into(),
        rate.to_string(),
        "-F".into(),
        rate.to_string(),
        "-R".into(),
        clients.to_string(),
        "-p".into(),
        secs.to_string(),
        "-W".into(),
        "500000".into(),
        "-s".into(),
        seed.to_string(),
        "-o".into(),
        opt60,
        "-o".into(),
        "93,0000".into(),
        "-o".into(),
        "94,010201".into(),
        SERVER_IP.into(),
    ];
    let line = args.join(" ");
    let (_, out) = refs::client_sh(
        net,
        &format!("{line} 2>&1"),
        Duration::from_secs(secs as u64 + 20),
    );
    let p = parse_perfdhcp(&out);
    if p.sent == 0 {
        anyhow::bail!("perfdhcp sent nothing: {}", crate::tail(&out, 15));
    }
    Ok(p)
}

/// Sizes of one pass.
struct Plan {
    clients: u32,
    step_secs: u32,
    start: u32,
    max: u32,
    bisect: u32,
    fixed_rate: u32,
    fixed_secs: u32,
}

/// The highest achieved rate with under 1% drops: doubling from `start`, then bisecting.
/// Every step runs against a freshly started server (in fresh namespaces), so a step
/// is not slowed by the leases an overloaded step before it left behind.
fn search(plan: &Plan, seed: &mut u32, name: &str) -> Result<f64> {
    let mut best = 0.0f64;
    let mut pass_rate = 0u32;
    let mut fail_rate: Option<u32> = None;
    let mut rate = plan.start;
    let try_rate = |rate: u32, seed: &mut u32| -> Result<(bool, f64)> {
        *seed += 1;
        let net = Net::new()?;
        let server = start(&net, name)?;
        let p = perfdhcp(&net, rate, plan.step_secs, plan.clients, *seed)?;
        drop(server);
        let ok = p.drop_ratio() < 0.01;
        eprintln!(
            "   {name}: rate {rate}/s → achieved {:.0}/s, drops {:.2}%, latency {:.2} ms {}",
            p.rate,
            p.drop_ratio() * 100.0,
            p.latency_ms,
            if ok { "pass" } else { "FAIL" }
        );
        Ok((ok, p.rate))
    };
    while rate <= plan.max {
        let (ok, achieved) = try_rate(rate, seed)?;
        if ok {
            best = best.max(achieved);
            pass_rate = rate;
            rate *= 2;
        } else {
            fail_rate = Some(rate);
            break;
        }
    }
    if let Some(mut hi) = fail_rate {
        let mut lo = pass_rate;
        for _ in 0..plan.bisect {
            let mid = (lo + hi) / 2;
            if hi - lo < plan.start / 4 || mid == 0 {
                break;
            }
            let (ok, achieved) = try_rate(mid, seed)?;
            if ok {
                best = best.max(achieved);
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(best)
}

/// A running server, kept until it is dropped.
pub enum Running {
    Rackseed(crate::Server),
    Ref(RefServer),
}

fn start(net: &Net, name: &str) -> Result<Running> {
    Ok(match name {
        "rackseed" => Running::Rackseed(super::start_rackseed(
            net,
            &super::rackseed_config(),
            |_| Ok(()),
        )?),
        "kea" => Running::Ref(refs::kea(net, 0)?),
        "dnsmasq" => Running::Ref(refs::dnsmasq_dhcp(net)?),
        other => anyhow::bail!("unknown DHCP server {other}"),
    })
}

/// The DHCP scenario.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    super::need("perfdhcp", "kea-admin")?;
    super::need("kea-dhcp4", "kea-dhcp4-server")?;
    super::need("dnsmasq", "dnsmasq-base")?;
    let plan = if opts.quick {
        Plan {
            clients: 50_000,
            step_secs: 2,
            start: 500,
            max: 1000,
            bisect: 0,
            fixed_rate: 200,
            fixed_secs: 2,
        }
    } else {
        Plan {
            clients: 50_000,
            step_secs: 4,
            start: 1000,
            max: 32_000,
            bisect: 3,
            fixed_rate: 1000,
            fixed_secs: 5,
        }
    };
    let mut rate = Table::new(
        "DHCP: highest rate with < 1% drops (perfdhcp, PXE options, 50,000 clients, relayed)",
        "4-way exchanges/s",
        Better::Higher,
        SERVERS,
    );
    let mut lat = Table::new(
        &format!(
            "DHCP: latency at {}/s (DISCOVER→OFFER + REQUEST→ACK, mean)",
            plan.fixed_rate
        ),
        "ms",
        Better::Lower,
        SERVERS,
    );
    let mut seed = 1u32;
    for run in 0..opts.runs {
        for name in opts.order(SERVERS, run) {
            eprintln!(" run {}/{} {name}", run + 1, opts.runs);
            let net = Net::new()?;
            let server = start(&net, name)?;
            seed += 100;
            let fixed = perfdhcp(&net, plan.fixed_rate, plan.fixed_secs, plan.clients, seed)?;
            eprintln!(
                "   {name}: fixed {}/s → latency {:.3} ms, drops {:.2}%",
                plan.fixed_rate,
                fixed.latency_ms,
                fixed.drop_ratio() * 100.0
            );
            lat.add("mean latency", name, fixed.latency_ms);
            drop(server);
            let best = search(&plan, &mut seed, name)?;
            rate.add("highest rate < 1% drops", name, best);
        }
    }
    Ok(vec![rate, lat])
}
