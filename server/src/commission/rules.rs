//! Commissioning rules: ordered matches over a machine's facts (hardware, DHCP,
//! option 82, LLDP) that set its profile, hostname, failure domain, group and vars.
//!
//! A rule's `match` maps a fact name to a pattern: text with `*` (any run of
//! characters) and `{name}` (a capture: one or more letters, digits, `-`, `_` or
//! `.`), or a number comparison (`>= 6`, `< 2`, `= 4`). A fact with several values
//! (every disk's model, every LLDP port) matches when one of them does. The first
//! rule whose every condition holds wins; its `hostname`, `failure_domain` and
//! `group` may use the captures as `{name}`. Pure: the config gives the rules, the
//! HTTP handlers give the facts and apply the verdict.

use super::{DhcpFacts, HwFacts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rule as written in the config (`[[rules]]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Fact name → pattern; every one must hold. Empty matches every machine.
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
    pub profile: String,
    /// The hostname, e.g. `rack-{rack}-{port}`; lowercased.
    pub hostname: String,
    #[serde(default)]
    pub failure_domain: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Node vars (checked against the profile when the rule is applied); `{name}` in
    /// a string value is a capture, e.g. `"198.51.100.{port}"`.
    #[serde(default)]
    pub vars: Option<serde_json::Value>,
}

/// The `{name}`s in the string values of `v` that look like captures.
fn var_names(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find('{') {
                rest = &rest[i + 1..];
                if let Some(j) = rest.find('}')
                    && valid_capture(&rest[..j])
                {
                    out.push(rest[..j].to_string());
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| var_names(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| var_names(x, out)),
        _ => {}
    }
}

/// `v` with the captures filled into its string values.
fn fill_vars(v: &serde_json::Value, caps: &[(String, String)]) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(fill(s, caps)),
        serde_json::Value::Array(a) => a.iter().map(|x| fill_vars(x, caps)).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, x)| (k.clone(), fill_vars(x, caps)))
            .collect(),
        x => x.clone(),
    }
}

/// The fact names a rule may match on.
pub const FACTS: &[(&str, &str)] = &[
    ("mac", "the MAC the machine booted from"),
    ("dhcp.giaddr", "the relay agent's address (giaddr)"),
    (
        "dhcp.circuit_id",
        "option 82 circuit-id (text, or 0x and hex)",
    ),
    (
        "dhcp.remote_id",
        "option 82 remote-id (text, or 0x and hex)",
    ),
    (
        "dhcp.vendor_class",
        "option 60, e.g. PXEClient:Arch:00000:UNDI:002001",
    ),
    ("dhcp.arch", "bios, efi-x64, …"),
    ("system.vendor", "DMI system vendor"),
    ("system.product", "DMI product name"),
    ("system.serial", "DMI serial number"),
    ("system.uuid", "DMI system UUID"),
    ("cpu.model", "processor model name"),
    ("cpu.count", "logical processors (number)"),
    ("memory.gib", "memory in GiB, rounded down (number)"),
    ("disks.count", "block devices (number)"),
    ("disks.sata", "SATA disks (number)"),
    ("disks.nvme", "NVMe disks (number)"),
    ("disks.virtio", "virtio disks (number)"),
    ("disk.model", "any disk's model"),
    ("disk.serial", "any disk's serial"),
    ("nics.count", "NICs (number)"),
    ("nic.driver", "any NIC's driver"),
    ("nic.mac", "any NIC's MAC"),
    ("lldp.system_name", "any LLDP neighbour's system name"),
    ("lldp.port_id", "any LLDP neighbour's port ID"),
    (
        "lldp.port_description",
        "any LLDP neighbour's port description",
    ),
    ("lldp.chassis_id", "any LLDP neighbour's chassis ID"),
];

/// Everything a rule can look at for one machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Input {
    pub mac: String,
    #[serde(default)]
    pub dhcp: DhcpFacts,
    #[serde(default)]
    pub hw: Option<HwFacts>,
}

impl Input {
    /// The values of fact `name` (none when the machine did not report it).
    pub fn values(&self, name: &str) -> Vec<String> {
        let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
        let d = &self.dhcp;
        match name {
            "mac" => vec![self.mac.clone()],
            "dhcp.giaddr" => d.giaddr.iter().map(|a| a.to_string()).collect(),
            "dhcp.circuit_id" => one(&d.circuit_id),
            "dhcp.remote_id" => one(&d.remote_id),
            "dhcp.vendor_class" => one(&d.vendor_class),
            "dhcp.arch" => one(&d.arch),
            _ => {
                let Some(h) = &self.hw else {
                    return Vec::new();
                };
                let bus = |b: &str| vec![h.disks.iter().filter(|d| d.bus == b).count().to_string()];
                match name {
                    "system.vendor" => vec![h.system.vendor.clone()],
                    "system.product" => vec![h.system.product.clone()],
                    "system.serial" => vec![h.system.serial.clone()],
                    "system.uuid" => vec![h.system.uuid.clone()],
                    "cpu.model" => vec![h.cpu.model.clone()],
                    "cpu.count" => vec![h.cpu.count.to_string()],
                    "memory.gib" => vec![(h.memory_bytes >> 30).to_string()],
                    "disks.count" => vec![h.disks.len().to_string()],
                    "disks.sata" => bus("sata"),
                    "disks.nvme" => bus("nvme"),
                    "disks.virtio" => bus("virtio"),
                    "disk.model" => h.disks.iter().map(|d| d.model.clone()).collect(),
                    "disk.serial" => h.disks.iter().map(|d| d.serial.clone()).collect(),
                    "nics.count" => vec![h.nics.len().to_string()],
                    "nic.driver" => h.nics.iter().map(|n| n.driver.clone()).collect(),
                    "nic.mac" => h.nics.iter().map(|n| n.mac.clone()).collect(),
                    "lldp.system_name" => h
                        .lldp
                        .iter()
                        .filter_map(|n| n.system_name.clone())
                        .collect(),
                    "lldp.port_id" => h.lldp.iter().map(|n| n.port_id.clone()).collect(),
                    "lldp.port_description" => h
                        .lldp
                        .iter()
                        .filter_map(|n| n.port_description.clone())
                        .collect(),
                    "lldp.chassis_id" => h.lldp.iter().map(|n| n.chassis_id.clone()).collect(),
                    _ => Vec::new(),
                }
            }
        }
    }
}

/// A pattern, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Text(Vec<Piece>),
    Number(Cmp, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Any,
    Capture(String),
}

/// A rule name: ASCII letters, digits, `-` and `_`, 1–63 long (as config names).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_capture(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_pattern(p: &str) -> Result<Pattern, String> {
    let t = p.trim();
    for (op, cmp) in [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
        ("=", Cmp::Eq),
    ] {
        if let Some(n) = t.strip_prefix(op) {
            return n
                .trim()
                .parse()
                .map(|n| Pattern::Number(cmp, n))
                .map_err(|_| format!("`{p}`: a comparison needs a whole number after `{op}`"));
        }
    }
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = p;
    while let Some(c) = rest.chars().next() {
        match c {
            '*' => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Any);
                rest = &rest[1..];
            }
            '{' => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("`{p}`: `{{` without `}}`"))?;
                let name = &rest[1..end];
                if !valid_capture(name) {
                    return Err(format!(
                        "`{p}`: `{{{name}}}` is not a capture name (lowercase letters, digits, `_`)"
                    ));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Capture(name.to_string()));
                rest = &rest[end + 1..];
            }
            '}' => return Err(format!("`{p}`: `}}` without `{{`")),
            c => {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(Pattern::Text(pieces))
}

fn capture_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Matches `s` against `pieces`, filling `caps`; backtracking, bounded by the
/// value and pattern lengths (both short).
fn match_pieces(pieces: &[Piece], s: &str, caps: &mut Vec<(String, String)>) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return s.is_empty();
    };
    match first {
        Piece::Lit(l) => s
            .strip_prefix(l.as_str())
            .is_some_and(|t| match_pieces(rest, t, caps)),
        Piece::Any => {
            let mut ends: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
            ends.push(s.len());
            ends.into_iter().any(|i| match_pieces(rest, &s[i..], caps))
        }
        Piece::Capture(name) => {
            for (i, c) in s.char_indices() {
                if !capture_char(c) {
                    break;
                }
                let end = i + c.len_utf8();
                let mark = caps.len();
                caps.push((name.clone(), s[..end].to_string()));
                if match_pieces(rest, &s[end..], caps) {
                    return true;
                }
                caps.truncate(mark);
            }
            false
        }
    }
}

fn captures_of(p: &Pattern) -> Vec<&str> {
    match p {
        Pattern::Text(ps) => ps
            .iter()
            .filter_map(|x| match x {
                Piece::Capture(n) => Some(n.as_str()),
                _ => None,
            })
            .collect(),
        Pattern::Number(..) => Vec::new(),
    }
}

/// The `{name}`s a template uses, or why it is not one.
fn template_names(t: &str) -> Result<Vec<String>, String> {
    match parse_pattern(t)? {
        Pattern::Text(ps) => {
            if ps.contains(&Piece::Any) {
                return Err(format!("`{t}`: `*` has no meaning in a value"));
            }
            Ok(ps
                .into_iter()
                .filter_map(|x| match x {
                    Piece::Capture(n) => Some(n),
                    _ => None,
                })
                .collect())
        }
        Pattern::Number(..) => Err(format!("`{t}` is a comparison, not a value")),
    }
}

fn fill(t: &str, caps: &[(String, String)]) -> String {
    let mut out = t.to_string();
    for (n, v) in caps {
        out = out.replace(&format!("{{{n}}}"), v);
    }
    out
}

/// Checks rules as the config loads them: names unique, facts known, patterns and
/// templates well formed, every `{name}` in a value captured by the rule's match.
pub fn validate(rules: &[Rule]) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("rules[{i}] ({})", r.name.escape_debug());
        if !valid_name(&r.name) {
            errs.push(format!(
                "{at}: name must be letters, digits, `-` and `_` (1–63)"
            ));
        }
        if !seen.insert(r.name.clone()) {
            errs.push(format!("{at}: a second rule named `{}`", r.name));
        }
        let mut caps: Vec<String> = Vec::new();
        for (fact, pat) in &r.matches {
            if !FACTS.iter().any(|(f, _)| f == fact) {
                errs.push(format!(
                    "{at}: match.\"{}\" is not a fact (known: {})",
                    fact.escape_debug(),
                    FACTS.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
                ));
            }
            match parse_pattern(pat) {
                Ok(p) => caps.extend(captures_of(&p).into_iter().map(str::to_string)),
                Err(e) => errs.push(format!("{at}: match.\"{fact}\": {e}")),
            }
        }
        for (what, t) in [
            ("hostname", Some(&r.hostname)),
            ("failure_domain", r.failure_domain.as_ref()),
            ("group", r.group.as_ref()),
        ] {
            let Some(t) = t else { continue };
            match template_names(t) {
                Ok(names) => {
                    for n in names {
                        if !caps.contains(&n) {
                            errs.push(format!(
                                "{at}: {what} uses `{{{n}}}`, which no pattern of the rule's match captures"
                            ));
                        }
                    }
                }
                Err(e) => errs.push(format!("{at}: {what}: {e}")),
            }
        }
        if let Some(v) = &r.vars {
            if !v.is_object() {
                errs.push(format!("{at}: vars must be a table"));
            }
            let mut names = Vec::new();
            var_names(v, &mut names);
            for n in names {
                if !caps.contains(&n) {
                    errs.push(format!(
                        "{at}: vars use `{{{n}}}`, which no pattern of the rule's match captures"
                    ));
                }
            }
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// What a matching rule assigns.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Assignment {
    pub rule: String,
    pub profile: String,
    pub hostname: String,
    pub failure_domain: Option<String>,
    pub group: Option<String>,
    pub vars: Option<serde_json::Value>,
}

/// The outcome: the first matching rule's assignment (if any) and, for every rule
/// tried, why it matched or not.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub assignment: Option<Assignment>,
    pub trace: Vec<String>,
}

impl Verdict {
    /// One line for a timeline event.
    pub fn summary(&self) -> String {
        match &self.assignment {
            Some(a) => format!(
                "rule `{}` matched: hostname {}, profile {}{}{}",
                a.rule,
                a.hostname,
                a.profile,
                a.failure_domain
                    .as_deref()
                    .map(|f| format!(", failure domain {f}"))
                    .unwrap_or_default(),
                a.group
                    .as_deref()
                    .map(|g| format!(", group {g}"))
                    .unwrap_or_default()
            ),
            None if self.trace.is_empty() => {
                "no rule matched: no rules are configured ([[rules]] in the config)".into()
            }
            None => format!("no rule matched: {}", self.trace.join("; ")),
        }
    }
}

/// Tries `rules` in order on `input`.
pub fn evaluate(rules: &[Rule], input: &Input) -> Verdict {
    let mut trace = Vec::new();
    for r in rules {
        let mut caps = Vec::new();
        let mut why = None;
        for (fact, pat) in &r.matches {
            let Ok(p) = parse_pattern(pat) else {
                why = Some(format!("{fact}: pattern `{pat}` is not valid"));
                break;
            };
            let values = input.values(fact);
            if values.is_empty() {
                why = Some(format!("{fact} is not known for this machine"));
                break;
            }
            let hit = values.iter().find(|v| match &p {
                Pattern::Number(cmp, n) => v.parse::<u64>().is_ok_and(|x| match cmp {
                    Cmp::Ge => x >= *n,
                    Cmp::Gt => x > *n,
                    Cmp::Le => x <= *n,
                    Cmp::Lt => x < *n,
                    Cmp::Eq => x == *n,
                }),
                Pattern::Text(ps) => {
                    let mark = caps.len();
                    let ok = match_pieces(ps, v, &mut caps);
                    if !ok {
                        caps.truncate(mark);
                    }
                    ok
                }
            });
            if hit.is_none() {
                why = Some(format!(
                    "{fact} {} does not match `{pat}`",
                    values
                        .iter()
                        .map(|v| format!("{:?}", v))
                        .collect::<Vec<_>>()
                        .join(" / ")
                ));
                break;
            }
        }
        if let Some(w) = why {
            trace.push(format!("rule `{}`: {w}", r.name));
            continue;
        }
        let hostname = fill(&r.hostname, &caps).to_ascii_lowercase();
        if !crate::facts::is_dns_name(&hostname) {
            trace.push(format!(
                "rule `{}`: matched, but hostname `{}` is not a valid hostname",
                r.name,
                hostname.escape_debug()
            ));
            continue;
        }
        let capstr = caps
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        trace.push(format!(
            "rule `{}`: matched{}",
            r.name,
            if capstr.is_empty() {
                String::new()
            } else {
                format!(" ({capstr})")
            }
        ));
        return Verdict {
            assignment: Some(Assignment {
                rule: r.name.clone(),
                profile: r.profile.clone(),
                hostname,
                failure_domain: r.failure_domain.as_deref().map(|t| fill(t, &caps)),
                group: r.group.as_deref().map(|t| fill(t, &caps)),
                vars: r.vars.as_ref().map(|v| fill_vars(v, &caps)),
            }),
            trace,
        };
    }
    Verdict {
        assignment: None,
        trace,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Disk, Neighbour, Nic};
    use super::*;

    fn rule(name: &str, m: &[(&str, &str)], hostname: &str) -> Rule {
        Rule {
            name: name.into(),
            matches: m
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            profile: "storage-node".into(),
            hostname: hostname.into(),
            failure_domain: Some("rack-{rack}".into()),
            group: Some("rg2".into()),
            vars: None,
        }
    }

    fn input() -> Input {
        let mut hw = HwFacts::default();
        hw.system.product = "Standard PC (Q35 + ICH9, 2009)".into();
        for (bus, model) in [("sata", "QEMU HARDDISK"), ("nvme", "QEMU NVMe Ctrl")] {
            for i in 0..3 {
                hw.disks.push(Disk {
                    name: format!("{bus}{i}"),
                    bus: bus.into(),
                    model: model.into(),
                    ..Disk::default()
                });
            }
        }
        hw.nics = vec![Nic::default(), Nic::default()];
        hw.lldp.push(Neighbour {
            port_id: "swp7".into(),
            system_name: Some("sw-b".into()),
            ..Neighbour::default()
        });
        hw.memory_bytes = 3 << 30;
        Input {
            mac: "52:54:00:15:00:01".into(),
            dhcp: DhcpFacts {
                circuit_id: Some("b-07".into()),
                giaddr: Some("198.51.100.1".parse().unwrap()),
                ..DhcpFacts::default()
            },
            hw: Some(hw),
        }
    }

    #[test]
    fn the_first_matching_rule_names_the_machine_from_its_port() {
        let rules = vec![
            rule("big", &[("disks.count", ">= 12")], "big-{x}"),
            rule(
                "rack-b",
                &[
                    ("dhcp.circuit_id", "{rack}-{port}"),
                    ("disks.nvme", ">= 3"),
                    ("disk.model", "*NVMe*"),
                    ("lldp.system_name", "sw-*"),
                    ("memory.gib", "= 3"),
                ],
                "rack-{rack}-{port}",
            ),
            rule("any", &[], "x"),
        ];
        let v = evaluate(&rules, &input());
        let a = v.assignment.clone().unwrap();
        assert_eq!(a.rule, "rack-b");
        assert_eq!(a.hostname, "rack-b-07");
        assert_eq!(a.failure_domain.as_deref(), Some("rack-b"));
        assert_eq!(a.group.as_deref(), Some("rg2"));
        assert_eq!(v.trace.len(), 2);
        assert!(
            v.trace[0].contains("disks.count \"6\" does not match `>= 12`"),
            "{v:?}"
        );
        assert!(v.trace[1].contains("rack=b, port=07"), "{v:?}");
    }

    #[test]
    fn captures_fill_string_vars() {
        let mut r = rule(
            "r",
            &[("dhcp.circuit_id", "{rack}-0{port}")],
            "n-{rack}-{port}",
        );
        r.vars = Some(serde_json::json!({
            "addresses": {"br-mgmt": "198.51.100.{port}"},
            "members": ["eth*"],
            "n": 3
        }));
        assert!(validate(std::slice::from_ref(&r)).is_ok());
        let a = evaluate(&[r.clone()], &input()).assignment.unwrap();
        assert_eq!(
            a.vars.unwrap(),
            serde_json::json!({"addresses": {"br-mgmt": "198.51.100.7"}, "members": ["eth*"], "n": 3})
        );
        r.vars = Some(serde_json::json!({"addresses": {"br-mgmt": "198.51.100.{slot}"}}));
        let errs = validate(&[r]).unwrap_err();
        assert!(errs[0].contains("vars use `{slot}`"), "{errs:?}");
    }

    #[test]
    fn no_match_says_why_for_every_rule() {
        let rules = vec![rule(
            "rack-c",
            &[("dhcp.circuit_id", "c-{port}")],
            "rack-c-{port}",
        )];
        let mut i = input();
        let v = evaluate(&rules, &i);
        assert_eq!(v.assignment, None);
        assert!(
            v.summary().contains("\"b-07\" does not match `c-{port}`"),
            "{}",
            v.summary()
        );
        i.dhcp.circuit_id = None;
        let v = evaluate(&rules, &i);
        assert!(
            v.summary().contains("dhcp.circuit_id is not known"),
            "{}",
            v.summary()
        );
        assert!(
            evaluate(&[], &i)
                .summary()
                .contains("no rules are configured")
        );
    }

    #[test]
    fn captures_never_carry_shell_or_newlines_into_a_hostname() {
        let rules = vec![rule("r", &[("dhcp.circuit_id", "{port}")], "n-{port}")];
        let mut i = input();
        for hostile in ["$(reboot)", "a\nb", "a b", "x;y"] {
            i.dhcp.circuit_id = Some(hostile.into());
            assert_eq!(evaluate(&rules, &i).assignment, None, "{hostile:?}");
        }
        // A capture may hold dots, which a hostname then refuses if it is malformed.
        i.dhcp.circuit_id = Some("..".into());
        assert_eq!(evaluate(&rules, &i).assignment, None);
    }

    #[test]
    fn broken_rules_are_refused_with_the_reason() {
        let mut bad = rule("r", &[("dhcp.circut_id", "{port")], "n-{slot}");
        bad.vars = Some(serde_json::json!([1]));
        let errs = validate(&[bad.clone(), bad]).unwrap_err();
        let all = errs.join("\n");
        for want in [
            "match.\"dhcp.circut_id\" is not a fact",
            "`{` without `}`",
            "hostname uses `{slot}`",
            "failure_domain uses `{rack}`",
            "vars must be a table",
            "a second rule named `r`",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
        assert!(validate(&[rule("ok", &[("dhcp.circuit_id", "{rack}-*")], "n-{rack}")]).is_ok());
    }
}
