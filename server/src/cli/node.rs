//! `rackseed node add|list|show|rm|reprovision|provision|events`: nodes on a running
//! server, through its REST API. Owns these commands' tables, the `node show` summary
//! and the event follower (`--follow`, `--until`, `--timeout`).

use super::args::{ApiArgs, NodeCmd};
use super::client::{Client, enc};
use crate::inventory::{Event, NodeState};
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Formats a Unix-ms time as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn fmt_time(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let f = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    );
    t.format(f).unwrap_or_else(|_| ms.to_string())
}

fn print_node(v: &Value) {
    let s = |k: &str| {
        v[k].as_str().map(str::to_string).unwrap_or_else(|| {
            if v[k].is_null() {
                "-".into()
            } else {
                v[k].to_string()
            }
        })
    };
    println!(
        "{:<5} {:<17} {:<24} {:<18} {:<13} {:<15} {}",
        s("id"),
        s("mac"),
        s("hostname"),
        s("profile"),
        s("state"),
        s("ip"),
        match v["stalled"]["step"].as_str() {
            Some(step) => format!("STALLED in {step}: see `node show`"),
            None => v["state_reason"].as_str().unwrap_or("").to_string(),
        }
    );
}

/// Formats a Unix-ms time in the given offset as `YYYY-MM-DD HH:MM:SS`.
pub fn fmt_local(ms: i64, offset: time::UtcOffset) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.to_offset(offset)
        .format(f)
        .unwrap_or_else(|_| ms.to_string())
}

/// `4 min`, `2 h 5 min`, `12 s`: a duration for people.
pub fn fmt_ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

/// The number of events `node show` lists.
const SUMMARY_EVENTS: usize = 12;

/// What `rackseed node show` prints: who the node is, its state and for how long, why it
/// is stuck or failed, and its last events, in local time.
pub fn node_summary(v: &Value, events: &[Event], now: i64, offset: time::UtcOffset) -> String {
    use std::fmt::Write;
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = String::new();
    let name = v["hostname"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("node {}", s("mac")));
    let _ = writeln!(out, "{name} ({}), id {}", s("mac"), v["id"]);
    let state = s("state");
    let since = v["updated_at"].as_i64().unwrap_or(0);
    let _ = writeln!(
        out,
        "  state         {state} since {} ({} ago)",
        fmt_local(since, offset),
        fmt_ago(now - since)
    );
    let last_change = events
        .iter()
        .rev()
        .find(|e| e.kind == "state")
        .map(|e| e.at)
        .unwrap_or(since);
    let stalled = events
        .iter()
        .rev()
        .take_while(|e| e.at >= last_change)
        .find(|e| e.kind == "stalled" || e.kind == "question");
    if state == "failed" {
        let _ = writeln!(
            out,
            "  why           {}",
            v["state_reason"].as_str().unwrap_or("no reason recorded")
        );
    } else if let Some(msg) = v["stalled"]["message"].as_str() {
        let _ = writeln!(out, "  STALLED       {msg}");
    } else if let Some(e) = stalled {
        let _ = writeln!(
            out,
            "  STALLED       {} ({} ago)",
            e.message,
            fmt_ago(now - e.at)
        );
    }
    let _ = writeln!(out, "  profile       {}", s("profile"));
    let _ = writeln!(out, "  address       {}", s("ip"));
    let arch = match (v["arch"].as_str(), v["vendor_class"].as_str()) {
        (Some(a), Some(c)) => format!("{a} ({c})"),
        (Some(a), None) => a.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => "-".to_string(),
    };
    let _ = writeln!(out, "  firmware      {arch}");
    let group = match (v["group"].as_str(), v["failure_domain"].as_str()) {
        (Some(g), Some(d)) => format!("{g}, failure domain {d}"),
        (Some(g), None) => g.to_string(),
        (None, Some(d)) => format!("none, failure domain {d}"),
        (None, None) => "none".to_string(),
    };
    let _ = writeln!(out, "  group         {group}");
    if let Some(g) = v["dhcp"]["giaddr"].as_str() {
        let _ = writeln!(
            out,
            "  relay         {g}, circuit-id {}, remote-id {}",
            v["dhcp"]["circuit_id"].as_str().unwrap_or("-"),
            v["dhcp"]["remote_id"].as_str().unwrap_or("-")
        );
    }
    if let Ok(hw) = serde_json::from_value::<crate::commission::HwFacts>(v["hardware"].clone()) {
        let _ = writeln!(
            out,
            "  system        {} {}, serial {}, uuid {}",
            hw.system.vendor, hw.system.product, hw.system.serial, hw.system.uuid
        );
        let _ = writeln!(
            out,
            "  cpu, memory   {} × {}, {}",
            hw.cpu.count,
            hw.cpu.model,
            crate::commission::human_bytes(hw.memory_bytes)
        );
        for d in &hw.disks {
            let _ = writeln!(
                out,
                "  disk          {} {} {} {:?} serial {} ({})",
                d.name,
                d.bus,
                crate::commission::human_bytes(d.size_bytes),
                d.model,
                d.serial,
                if d.by_id.is_empty() {
                    "-".to_string()
                } else {
                    d.by_id.join(", ")
                }
            );
        }
        for n in &hw.nics {
            let _ = writeln!(
                out,
                "  nic           {} {} {} {}{}",
                n.name,
                n.mac,
                n.driver,
                if n.link { "link up" } else { "no link" },
                n.speed_mbps
                    .map(|s| format!(" {s} Mb/s"))
                    .unwrap_or_default()
            );
        }
        for l in &hw.lldp {
            let _ = writeln!(
                out,
                "  lldp          {}: {} port {}{}",
                l.nic,
                l.system_name.as_deref().unwrap_or(&l.chassis_id),
                l.port_id,
                l.port_description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(seen) = v["last_seen_at"].as_i64() {
        let _ = writeln!(
            out,
            "  last seen     {} ({} ago)",
            fmt_local(seen, offset),
            fmt_ago(now - seen)
        );
    }
    let _ = writeln!(
        out,
        "  install token {}",
        if v["install_token_valid"].as_bool() == Some(true) {
            "valid"
        } else {
            "none"
        }
    );
    let _ = writeln!(
        out,
        "  added         {}",
        fmt_local(v["created_at"].as_i64().unwrap_or(0), offset)
    );
    if events.is_empty() {
        let _ = writeln!(out, "no events yet");
    } else {
        let shown = events.len().min(SUMMARY_EVENTS);
        let _ = writeln!(out, "last {shown} of {} events:", events.len());
        for e in &events[events.len() - shown..] {
            let _ = writeln!(
                out,
                "  {}  {:<14} {}",
                fmt_local(e.at, offset),
                e.kind,
                e.message
            );
        }
    }
    out
}

fn print_event(e: &Event) {
    println!("{}  {:<14} {}", fmt_time(e.at), e.kind, e.message);
}

/// Runs a `rackseed node` command.
pub fn run(cmd: NodeCmd) -> Result<ExitCode> {
    match cmd {
        NodeCmd::Add {
            api,
            mac,
            hostname,
            profile,
            ip,
            ready,
            group,
            failure_domain,
            vars,
        } => {
            let c = Client::new(&api)?;
            let vars: Value = match vars {
                Some(v) => serde_json::from_str(&v).context("--vars must be a JSON object")?,
                None => Value::Null,
            };
            let body = serde_json::json!({
                "mac": mac, "hostname": hostname, "profile": profile, "ip": ip,
                "provision": !ready, "group": group, "failure_domain": failure_domain, "vars": vars,
            });
            let n = c.post("/api/nodes", &body)?;
            if api.json {
                println!("{n:#}");
            } else {
                println!(
                    "node {} ({}) added: {}",
                    n["hostname"].as_str().unwrap_or("?"),
                    n["mac"].as_str().unwrap_or("?"),
                    n["state"].as_str().unwrap_or("?")
                );
            }
        }
        NodeCmd::List { api } => {
            let v = Client::new(&api)?.get("/api/nodes")?;
            if api.json {
                println!("{v:#}");
            } else {
                println!(
                    "{:<5} {:<17} {:<24} {:<18} {:<13} {:<15} REASON",
                    "ID", "MAC", "HOSTNAME", "PROFILE", "STATE", "IP"
                );
                for n in v["nodes"].as_array().into_iter().flatten() {
                    print_node(n);
                }
            }
        }
        NodeCmd::Show { api, node } => {
            // Read the local offset while the process has one thread (the HTTP client
            // starts more); it is then applied to every time shown.
            let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
            let c = Client::new(&api)?;
            let v = c.get(&format!("/api/nodes/{}", enc(&node)))?;
            if api.json {
                println!("{v:#}");
            } else {
                let page = c.get(&format!(
                    "/api/nodes/{}/events?after=0&limit=5000",
                    enc(&node)
                ))?;
                let events: Vec<Event> = serde_json::from_value(page["events"].clone())
                    .map_err(|e| anyhow!("bad event page: {e}"))?;
                print!(
                    "{}",
                    node_summary(&v, &events, crate::inventory::now_ms(), offset)
                );
            }
        }
        NodeCmd::Rm { api, node } => {
            Client::new(&api)?.delete(&format!("/api/nodes/{}", enc(&node)))?;
            println!("node {node} deleted");
        }
        NodeCmd::Reprovision {
            api,
            node,
            power_cycle: false,
        } => {
            let n = Client::new(&api)?.post(
                &format!("/api/nodes/{}/reprovision", enc(&node)),
                &Value::Null,
            )?;
            println!("node {node}: {}", n["state"].as_str().unwrap_or("?"));
        }
        NodeCmd::Reprovision {
            api,
            node,
            power_cycle: true,
        } => {
            let r = Client::new(&api)?.post(
                &format!("/api/nodes/{}/reprovision", enc(&node)),
                &serde_json::json!({"power_cycle": true}),
            )?;
            println!(
                "node {node}: {}; {}",
                r["node"]["state"].as_str().unwrap_or("?"),
                r["power"]["message"].as_str().unwrap_or("?")
            );
        }
        NodeCmd::Power {
            api,
            action,
            node,
            pxe,
        } => {
            let r = Client::new(&api)?.post(
                &format!("/api/nodes/{}/power", enc(&node)),
                &serde_json::json!({"action": action, "pxe": pxe}),
            )?;
            if action == crate::power::Action::Status {
                println!("{}", r["power"].as_str().unwrap_or("?"));
            } else {
                println!("node {node}: {}", r["message"].as_str().unwrap_or("?"));
            }
        }
        NodeCmd::Bmc { cmd } => bmc(cmd)?,
        NodeCmd::Provision { api, node } => {
            let n = Client::new(&api)?.post(
                &format!("/api/nodes/{}/provision", enc(&node)),
                &Value::Null,
            )?;
            println!("node {node}: {}", n["state"].as_str().unwrap_or("?"));
        }
        NodeCmd::Events {
            api,
            node,
            follow,
            until,
            timeout,
            kind,
        } => {
            return follow_events(&api, &node, follow, until, timeout, kind.as_deref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn follow_events(
    api: &ApiArgs,
    node: &str,
    follow: bool,
    until: Option<NodeState>,
    timeout: Option<u64>,
    kind: Option<&str>,
) -> Result<ExitCode> {
    let c = Client::new(api)?;
    let print = |e: &Event| -> Result<()> {
        if api.json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            print_event(e);
        }
        Ok(())
    };
    let kind_q = kind
        .map(|k| format!("&kind={}", enc(k)))
        .unwrap_or_default();
    if !follow {
        let page = c.get(&format!("/api/nodes/{}/events?after=0{kind_q}", enc(node)))?;
        let events: Vec<Event> = serde_json::from_value(page["events"].clone())
            .map_err(|e| anyhow!("bad event page: {e}"))?;
        for e in &events {
            print(e)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Following reads the server's event stream (Server-Sent Events), the one the
    // console uses; it reconnects after the last event seen if the server ends it.
    let started = Instant::now();
    let limit = timeout.map(Duration::from_secs);
    let (mut after, mut state) = (0i64, String::new());
    let reached = |state: &str| until.is_some_and(|u| state == u.as_str());
    loop {
        let left = limit.map(|l| l.saturating_sub(started.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            break;
        }
        let path = format!(
            "/api/events/stream?node={}&after={after}{kind_q}",
            enc(node)
        );
        let lines = c.stream(&path, left)?;
        let (mut name, mut data) = (String::new(), String::new());
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if line.is_empty() && !data.is_empty() {
                let v: Value = serde_json::from_str(&data)
                    .map_err(|e| anyhow!("bad event from the server: {e}"))?;
                data.clear();
                if let Some(s) = v["node"]["state"].as_str() {
                    state = s.to_string();
                }
                if name == "timeline" {
                    let e: Event = serde_json::from_value(v["event"].clone())
                        .map_err(|e| anyhow!("bad event from the server: {e}"))?;
                    after = e.id;
                    print(&e)?;
                }
                if reached(&state) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        let pause = Duration::from_secs(1);
        std::thread::sleep(left.map_or(pause, |l| l.min(pause)));
    }
    let t = timeout.unwrap_or_default();
    eprintln!(
        "rackseed: node {node} is {state} after {t}s{}",
        until.map(|u| format!(", not {u}")).unwrap_or_default()
    );
    Ok(ExitCode::FAILURE)
}

fn bmc(cmd: super::args::BmcCmd) -> Result<()> {
    use super::args::BmcCmd;
    match cmd {
        BmcCmd::Set {
            api,
            node,
            protocol,
            address,
            user,
            system,
            insecure_tls,
        } => {
            let mut password = String::new();
            std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut password)
                .context("cannot read the BMC password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!(
                    "no BMC password on standard input; run e.g. `read -rs P; printf '%s\\n' \"$P\" | rackseed node bmc set {node} …`"
                );
            }
            let b = Client::new(&api)?.put(
                &format!("/api/nodes/{}/bmc", enc(&node)),
                &serde_json::json!({
                    "protocol": protocol, "address": address, "username": user,
                    "password": password, "system": system, "insecure_tls": insecure_tls,
                }),
            )?;
            println!(
                "node {node}: BMC {} {} as user {} (password sealed)",
                b["protocol"].as_str().unwrap_or("?"),
                b["address"].as_str().unwrap_or("?"),
                b["username"].as_str().unwrap_or("?")
            );
        }
        BmcCmd::Show { api, node } => {
            let b = Client::new(&api)?.get(&format!("/api/nodes/{}/bmc", enc(&node)))?;
            println!("{}", serde_json::to_string_pretty(&b)?);
        }
        BmcCmd::Delete { api, node } => {
            Client::new(&api)?.delete(&format!("/api/nodes/{}/bmc", enc(&node)))?;
            println!("node {node}: BMC removed");
        }
    }
    Ok(())
}
