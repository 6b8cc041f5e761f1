//! `rackseed-bench`: rackseed against dnsmasq, Kea, tftpd-hpa, atftpd and nginx, one
//! scenario after another, runs alternating between servers; prints a Markdown table per
//! scenario (median and range per server, rackseed's ratio to the best reference).
//!
//! Usage: rackseed-bench [--quick] [--scenario NAME] [--runs N] [--only SERVER,...] [--out FILE]
//! Scenarios: dhcp, tftp, http, storm, inventory. Needs root (network namespaces).

use anyhow::{Context, Result, bail};
use rackseed_tests::bench::{self, Opts, SCENARIOS};

const USAGE: &str =
    "usage: rackseed-bench [--quick] [--scenario NAME] [--runs N] [--only SERVER,...] [--out FILE]";

fn opts() -> Result<Option<Opts>> {
    let mut o = Opts {
        quick: false,
        scenario: None,
        runs: 0,
        out: None,
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--scenario" => o.scenario = Some(args.next().context("--scenario needs a name")?),
            "--runs" => {
                o.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0 && *n <= 50)
                    .context("--runs needs a number from 1 to 50")?
            }
            "--only" => {
                o.only = args
                    .next()
                    .context("--only needs server names, comma-separated")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--out" => o.out = Some(args.next().context("--out needs a file")?.into()),
            "storm-client" => {
                let rest: Vec<String> = args.collect();
                bench::storm::client_main(&rest)?;
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}\nscenarios: {}", SCENARIOS.join(", "));
                return Ok(None);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if o.runs == 0 {
        o.runs = if o.quick { 1 } else { 3 };
    }
    Ok(Some(o))
}

fn main() -> Result<()> {
    let Some(o) = opts()? else { return Ok(()) };
    if !nix_is_root() {
        bail!("rackseed-bench needs root (network namespaces); run it through `./x bench`");
    }
    println!(
        "# rackseed-bench{}\n",
        if o.quick { " (quick)" } else { "" }
    );
    println!("Machine: {}\n", bench::machine());
    println!("| program | version |\n|---|---|");
    for (p, v) in bench::versions() {
        println!("| {p} | {v} |");
    }
    println!();
    let tables = bench::run(&o)?;
    if let Some(path) = &o.out {
        let text: String = tables.iter().map(|t| t.render()).collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
