//! DHCP rate: perfdhcp in the client namespace acts as a relay (giaddr 198.51.100.2)
//! and runs 4-way exchanges with PXE-like options (60 `PXEClient:Arch:00000:UNDI:002001`,
//! 93 BIOS, 94 UNDI 2.1) from 50,000 distinct MACs. The documentation ranges give a
//! pool of 241 addresses, so perfdhcp releases leases at the exchange rate (`-F`):
//! every lease is bound, stored, and released again, for every server alike.
//!
//! Per run and server: a search for the highest rate with under 1% drops (doubling,
//! then bisecting), and the latency at a fixed rate: the mean and the p99, the latter
//! from perfdhcp's per-exchange timestamps (`-x t`).

use super::refs::{self, RefServer};
use super::{Better, Net, Opts, RELAY_IP, SERVER_IP, Table};
use anyhow::Result;
use std::collections::HashMap;
use std::time::Duration;

const SERVERS: &[&str] = &["rackseed", "kea", "dnsmasq"];

/// The two timed halves of a 4-way exchange, as perfdhcp names them.
const HALVES: [&str; 2] = ["DISCOVER-OFFER", "REQUEST-ACK"];

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
    /// The 99th percentile of DISCOVER→OFFER delays plus that of REQUEST→ACK delays,
    /// ms, over the answered exchanges; `None` unless perfdhcp printed timestamps
    /// (`-x t`) for both halves.
    pub p99_ms: Option<f64>,
    /// Answered exchanges per half that had timestamps (the p99's sample size).
    pub timed: usize,
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

/// Parses perfdhcp's final report, and its per-exchange timestamps when it printed them
/// (`-x t`).
pub fn parse_perfdhcp(out: &str) -> Perf {
    let mut p = Perf::default();
    let mut section = String::new();
    let mut per: HashMap<String, HashMap<String, f64>> = HashMap::new();
    let mut stamps = String::new();
    let mut delays: HashMap<String, Vec<f64>> = HashMap::new();
    for line in out.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix("***Statistics for:") {
            section = s.trim_end_matches('*').trim().to_string();
            stamps.clear();
            continue;
        }
        if let Some(s) = l.strip_prefix("***Timestamps for packets:") {
            stamps = s.trim_end_matches('*').trim().to_string();
            section.clear();
            continue;
        }
        if !stamps.is_empty() {
            if let Some(d) = l
                .strip_prefix("sent / received:")
                .and_then(exchange_delay_ms)
            {
                delays.entry(stamps.clone()).or_default().push(d);
            }
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
    for s in HALVES {
        if let Some(m) = per.get(s) {
            p.sent += *m.get("sent packets").unwrap_or(&0.0) as u64;
            p.received += *m.get("received packets").unwrap_or(&0.0) as u64;
            p.latency_ms += m.get("avg delay").copied().unwrap_or(0.0);
            p.max_ms = p.max_ms.max(m.get("max delay").copied().unwrap_or(0.0));
        }
    }
    let p99s: Option<Vec<f64>> = HALVES
        .iter()
        .map(|s| delays.get_mut(*s).and_then(|d| percentile(d, 99)))
        .collect();
    p.p99_ms = p99s.map(|v| v.iter().sum());
    p.timed = HALVES
        .iter()
        .map(|s| delays.get(*s).map_or(0, Vec::len))
        .min()
        .unwrap_or(0);
    p
}

/// The delay of one `-x t` line, `000059.500271 / 000100.000243`, in ms. perfdhcp
/// prints each time as a boost ISO duration since its start, `HHMMSS.ffffff`.
fn exchange_delay_ms(pair: &str) -> Option<f64> {
    let (sent, received) = pair.split_once('/')?;
    Some((iso_duration_secs(received.trim())? - iso_duration_secs(sent.trim())?) * 1000.0)
}

/// A boost ISO duration, `[-]H…HMMSS[.f…]`, in seconds.
fn iso_duration_secs(s: &str) -> Option<f64> {
    let (sign, s) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.len() < 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = whole.len();
    let hours: f64 = whole[..n - 4].parse().ok()?;
    let mins: f64 = whole[n - 4..n - 2].parse().ok()?;
    let secs: f64 = whole[n - 2..].parse().ok()?;
    let frac: f64 = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse().ok()?
    };
    Some(sign * (hours * 3600.0 + mins * 60.0 + secs + frac))
}

/// The `pct`th percentile of `v` (1–100) by nearest rank: the smallest sample with at
/// least `pct`% of the samples at or below it. Sorts `v`; `None` when `v` is empty.
pub fn percentile(v: &mut [f64], pct: usize) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (v.len() * pct.min(100)).div_ceil(100);
    Some(v[rank.max(1) - 1])
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Runs perfdhcp for `secs` at `rate` against the server in `net`; with `timestamps`,
/// also has it print every answered exchange's times (`-x t`, for [`Perf::p99_ms`]).
pub fn perfdhcp(
    net: &Net,
    rate: u32,
    secs: u32,
    clients: u32,
    seed: u32,
    timestamps: bool,
) -> Result<Perf> {
    let opt60 = format!("60,{}", hex("PXEClient:Arch:00000:UNDI:002001"));
    let mut args: Vec<String> = vec![
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
    ];
    if timestamps {
        args.extend(["-x".into(), "t".into()]);
    }
    args.push(SERVER_IP.into());
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
        let p = perfdhcp(&net, rate, plan.step_secs, plan.clients, *seed, false)?;
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
            "DHCP: latency at {}/s (DISCOVER→OFFER + REQUEST→ACK; p99 is the sum of each half's p99)",
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
            let fixed = perfdhcp(
                &net,
                plan.fixed_rate,
                plan.fixed_secs,
                plan.clients,
                seed,
                true,
            )?;
            eprintln!(
                "   {name}: fixed {}/s → latency mean {:.3} ms, p99 {} ms over {} exchanges, drops {:.2}%",
                plan.fixed_rate,
                fixed.latency_ms,
                fixed.p99_ms.map_or("?".into(), |x| format!("{x:.3}")),
                fixed.timed,
                fixed.drop_ratio() * 100.0
            );
            lat.add("mean latency", name, fixed.latency_ms);
            match fixed.p99_ms {
                Some(p99) => lat.add("p99 latency", name, p99),
                None => eprintln!("   {name}: perfdhcp printed no timestamps; no p99"),
            }
            drop(server);
            let best = search(&plan, &mut seed, name)?;
            rate.add("highest rate < 1% drops", name, best);
        }
    }
    Ok(vec![rate, lat])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// perfdhcp 2.2.0 (kea-admin) at 8/s for 1 s with `-x t`, against Kea in the bench
    /// namespaces, verbatim.
    const WITH_TIMESTAMPS: &str = r#"Running: perfdhcp -4 -l 198.51.100.2 -r 8 -F 8 -R 50000 -p 1 -W 500000 -s 7 -o 60,505845436c69656e743a417263683a30303030303a554e44493a303032303031 -o 93,0000 -o 94,010201 -x t 192.0.2.1
Scenario: basic.
Multi-thread mode enabled.
***Rate statistics***
Rate: 4.66466 4-way exchanges/second, expected rate: 8

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 7
received packets: 7
drops: 0
drops ratio: 0 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.737 ms
avg delay: 2.036 ms
max delay: 4.487 ms
std deviation: 1.431 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 7
received packets: 7
drops: 0
drops ratio: 0.000 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.353 ms
avg delay: 0.760 ms
max delay: 1.517 ms
std deviation: 0.339 ms
collected packets: 0

***Statistics for: RELEASE***
sent packets: 6
received packets: 0
drops: 6
drops ratio: 100.000 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: inf ms
avg delay: min delay: n/a
avg delay: n/a
max delay: n/a
std deviation: n/a
collected packets: 0

***Timestamps for packets: DISCOVER-OFFER***
sent / received: 000000.000178 / 000000.001360
sent / received: 000000.250514 / 000000.251274
sent / received: 000000.375235 / 000000.377925
sent / received: 000000.500216 / 000000.501034
sent / received: 000000.625317 / 000000.626054
sent / received: 000000.750306 / 000000.754793
sent / received: 000000.875259 / 000000.878834

***Timestamps for packets: REQUEST-ACK***
sent / received: 000000.001446 / 000000.002171
sent / received: 000000.251410 / 000000.252130
sent / received: 000000.378065 / 000000.379582
sent / received: 000000.502343 / 000000.502975
sent / received: 000000.626378 / 000000.626731
sent / received: 000000.754949 / 000000.755768
sent / received: 000000.879016 / 000000.879572

***Timestamps for packets: RELEASE***
Unavailable! No packets received.

"#;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn report_and_timestamps_parse() {
        let p = parse_perfdhcp(WITH_TIMESTAMPS);
        assert!(close(p.rate, 4.66466));
        assert_eq!((p.sent, p.received), (14, 14));
        assert!(close(p.latency_ms, 2.036 + 0.760));
        assert!(close(p.max_ms, 4.487));
        assert_eq!(p.timed, 7);
        // Seven samples per half: the p99 is each half's maximum, which perfdhcp's own
        // "max delay" confirms.
        assert!(close(
            p.p99_ms.expect("timestamps were printed"),
            4.487 + 1.517
        ));
    }

    #[test]
    fn timestamps_agree_with_perfdhcps_averages() {
        let mut half = "";
        let mut sums: HashMap<&str, (f64, usize)> = HashMap::new();
        for l in WITH_TIMESTAMPS.lines() {
            if let Some(s) = l.strip_prefix("***Timestamps for packets: ") {
                half = s.trim_end_matches('*');
            } else if let Some(d) = l
                .strip_prefix("sent / received:")
                .and_then(exchange_delay_ms)
            {
                let e = sums.entry(half).or_default();
                e.0 += d;
                e.1 += 1;
            }
        }
        let mean = |h: &str| sums[h].0 / sums[h].1 as f64;
        assert!((mean("DISCOVER-OFFER") - 2.036).abs() < 0.001);
        assert!((mean("REQUEST-ACK") - 0.760).abs() < 0.001);
        assert!(!sums.contains_key("RELEASE"));
    }

    #[test]
    fn no_timestamps_no_p99() {
        let report = WITH_TIMESTAMPS
            .split("***Timestamps")
            .next()
            .expect("split yields one part");
        let p = parse_perfdhcp(report);
        assert_eq!(p.p99_ms, None);
        assert_eq!(p.timed, 0);
        assert!(close(p.latency_ms, 2.036 + 0.760));
    }

    #[test]
    fn times_are_hours_minutes_seconds() {
        // Two lines from a 65 s perfdhcp run, either side of its first minute.
        let before = "000059.500271 / 000059.505550";
        let after = "000100.000243 / 000100.004572";
        assert!(close(exchange_delay_ms(before).expect("parses"), 5.279));
        assert!(close(exchange_delay_ms(after).expect("parses"), 4.329));
        assert!(close(
            iso_duration_secs("000100.000243").expect("parses"),
            60.000243
        ));
        assert!(close(
            iso_duration_secs("1230405.5").expect("parses"),
            123.0 * 3600.0 + 245.5
        ));
        assert!(close(
            iso_duration_secs("-000001.25").expect("parses"),
            -1.25
        ));
        assert_eq!(iso_duration_secs("59.5"), None);
        assert_eq!(iso_duration_secs("n/a"), None);
        assert_eq!(exchange_delay_ms("000001.0"), None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99), Some(99.0));
        assert_eq!(percentile(&mut v, 100), Some(100.0));
        let mut v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99), Some(990.0));
        let mut v: Vec<f64> = (1..=150).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99), Some(149.0));
        assert_eq!(percentile(&mut [3.0], 99), Some(3.0));
        assert_eq!(percentile(&mut [], 99), None);
    }
}
