//! Partitioning for the Debian installer: the `partman-auto/expert_recipe` and
//! `partman-auto-raid/recipe` values rackseed generates from a root plan, and a checker
//! of both grammars as the installer documents them (debian-installer
//! `doc/devel/partman-auto-recipe.txt` and `partman-auto-raid-recipe.txt`).
//!
//! Pure: strings in, strings or errors out. Disk names are only known on the node, so
//! the RAID recipe is built there by `disks.sh` from [`RaidArray`]s; [`raid_recipe`]
//! builds the same string here for previews and tests.

use crate::plan::{Firmware, RootPlan};
use crate::profiles::model::RaidLevel;
use serde::Serialize;

/// The name of rackseed's expert recipe.
pub const RECIPE_NAME: &str = "rackseed-root";

/// One partition of an expert recipe: limits, parted file system, specifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartSpec {
    pub min: String,
    pub priority: String,
    pub max: String,
    pub fs: String,
    /// `(name, contents)`; `name` keeps a leading `$` for internal specifiers.
    pub specifiers: Vec<(String, String)>,
}

impl PartSpec {
    fn fixed(mib: u64, fs: &str, specifiers: &[(&str, &str)]) -> PartSpec {
        PartSpec {
            min: mib.to_string(),
            priority: mib.to_string(),
            max: mib.to_string(),
            fs: fs.into(),
            specifiers: specifiers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    /// The partition as recipe text, ending in ` .`.
    pub fn text(&self) -> String {
        let mut s = format!("{} {} {} {}", self.min, self.priority, self.max, self.fs);
        for (name, contents) in &self.specifiers {
            if contents.is_empty() {
                s.push_str(&format!(" {name}{{ }}"));
            } else {
                s.push_str(&format!(" {name}{{ {contents} }}"));
            }
        }
        s.push_str(" .");
        s
    }

    /// The value of specifier `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.specifiers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
    }
}

/// An expert recipe: a name and its partitions, in disk order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertRecipe {
    pub name: String,
    /// `::` (debconf name) or `:` (simple name).
    pub colons: usize,
    pub partitions: Vec<PartSpec>,
}

impl ExpertRecipe {
    /// The recipe on one line, as the installer holds it after reading the preseed.
    pub fn one_line(&self) -> String {
        self.parts().join(" ")
    }

    /// The recipe as preseed continuation lines (each but the last ends in ` \`),
    /// indented; joined by the installer into exactly [`ExpertRecipe::one_line`].
    pub fn preseed_lines(&self, indent: &str) -> String {
        let parts = self.parts();
        let mut out = String::new();
        for (i, p) in parts.iter().enumerate() {
            let pad = if i == 0 {
                indent.to_string()
            } else {
                format!("{indent}    ")
            };
            out.push_str(&pad);
            out.push_str(p);
            if i + 1 < parts.len() {
                out.push_str(" \\\n");
            }
        }
        out
    }

    fn parts(&self) -> Vec<String> {
        let mut v = vec![format!("{} {}", self.name, ":".repeat(self.colons))];
        v.extend(self.partitions.iter().map(PartSpec::text));
        v
    }
}

/// One md array of the RAID recipe: level, file system, mount point and which
/// partition number of every root disk is a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RaidArray {
    pub level: u32,
    pub fstype: String,
    pub mountpoint: String,
    pub partition: u32,
}

/// The partitioning rackseed renders for a root plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partitioning {
    /// `raid` or `regular` (`partman-auto/method`).
    pub method: String,
    pub recipe_name: String,
    /// The expert recipe for the plan's firmware, as preseed continuation lines.
    pub expert_recipe: String,
    /// The same recipe on one line, for each firmware (the node picks the one it
    /// booted with).
    pub recipe_bios: String,
    pub recipe_uefi: String,
    /// md arrays (empty without RAID), in the order partman creates them (md0, md1).
    pub raid_arrays: Vec<RaidArray>,
}

/// The expert recipe of `root` for `firmware`: partition 1 is the BIOS boot partition
/// or the EFI system partition (one per disk, never on md), 2 is root, 3 is swap.
pub fn expert_recipe(root: &RootPlan, firmware: Firmware) -> ExpertRecipe {
    let mut parts = Vec::new();
    parts.push(match firmware {
        Firmware::Bios => PartSpec::fixed(1, "free", &[("$bios_boot", ""), ("method", "biosgrub")]),
        Firmware::Uefi => PartSpec {
            min: "538".into(),
            priority: "538".into(),
            max: "1075".into(),
            fs: "free".into(),
            specifiers: vec![
                ("$iflabel".into(), "gpt".into()),
                ("$reusemethod".into(), String::new()),
                ("method".into(), "efi".into()),
                ("format".into(), String::new()),
            ],
        },
    });
    let min = root.min_size_bytes >> 20;
    let grow = |fs: &str, specifiers: Vec<(String, String)>| PartSpec {
        min: min.to_string(),
        priority: (min + 100_000).to_string(),
        max: "-1".into(),
        fs: fs.into(),
        specifiers,
    };
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    if root.raid == RaidLevel::None {
        parts.push(grow(
            "xfs",
            vec![
                s("$primary", ""),
                s("method", "format"),
                s("format", ""),
                s("use_filesystem", ""),
                s("filesystem", "xfs"),
                s("mountpoint", "/"),
            ],
        ));
        if let Some(sw) = root.swap_bytes {
            parts.push(PartSpec::fixed(
                sw >> 20,
                "linux-swap",
                &[("$primary", ""), ("method", "swap"), ("format", "")],
            ));
        }
    } else {
        parts.push(grow("raid", vec![s("$primary", ""), s("method", "raid")]));
        if let Some(sw) = root.swap_bytes {
            parts.push(PartSpec::fixed(
                sw >> 20,
                "raid",
                &[("$primary", ""), ("method", "raid")],
            ));
        }
    }
    ExpertRecipe {
        name: RECIPE_NAME.into(),
        colons: 2,
        partitions: parts,
    }
}

/// The md arrays of `root` (none without RAID).
pub fn raid_arrays(root: &RootPlan) -> Vec<RaidArray> {
    let Some(level) = root.raid.md_level() else {
        return Vec::new();
    };
    let mut v = vec![RaidArray {
        level,
        fstype: root.filesystem.to_string(),
        mountpoint: "/".into(),
        partition: 2,
    }];
    if root.swap_bytes.is_some() {
        v.push(RaidArray {
            level,
            fstype: "swap".into(),
            mountpoint: "-".into(),
            partition: 3,
        });
    }
    v
}

/// Everything the templates need about partitioning.
pub fn partitioning(root: &RootPlan, firmware: Firmware) -> Partitioning {
    let recipe = expert_recipe(root, firmware);
    Partitioning {
        method: if root.raid == RaidLevel::None {
            "regular".into()
        } else {
            "raid".into()
        },
        recipe_name: recipe.name.clone(),
        expert_recipe: recipe.preseed_lines("    "),
        recipe_bios: expert_recipe(root, Firmware::Bios).one_line(),
        recipe_uefi: expert_recipe(root, Firmware::Uefi).one_line(),
        raid_arrays: raid_arrays(root),
    }
}

/// The device of partition `n` of `disk` (`/dev/sda` → `/dev/sda2`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p2`).
pub fn partition_device(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// The `partman-auto-raid/recipe` value for `arrays` over `disks` (as the node builds
/// it in `disks.sh`).
pub fn raid_recipe(arrays: &[RaidArray], disks: &[&str]) -> String {
    arrays
        .iter()
        .map(|a| {
            let members: Vec<String> = disks
                .iter()
                .map(|d| partition_device(d, a.partition))
                .collect();
            format!(
                "{} {} 0 {} {} {} .",
                a.level,
                disks.len(),
                a.fstype,
                a.mountpoint,
                members.join("#")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A recipe that does not follow the installer's grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct RecipeError {
    /// Which part: `header`, `partition 2`, `array 1`, …
    pub what: String,
    pub message: String,
}

fn rerr(what: impl Into<String>, message: impl Into<String>) -> RecipeError {
    RecipeError {
        what: what.into(),
        message: message.into(),
    }
}

/// Internal and type specifiers partman-auto knows (`$name{ }`).
const INTERNAL: &[&str] = &[
    "$primary",
    "$logical",
    "$bootable",
    "$default_filesystem",
    "$lvmok",
    "$defaultignore",
    "$lvmignore",
    "$iflabel",
    "$reusemethod",
    "$bios_boot",
    "$gptonly",
];

/// Partition methods partman knows.
const METHODS: &[&str] = &[
    "format", "swap", "keep", "raid", "lvm", "crypto", "efi", "biosgrub", "newworld", "prep",
];

/// Normalizes white space as partman-auto does: newlines and tabs become spaces, runs
/// of spaces become one.
fn normalize(text: &str) -> Vec<String> {
    text.split([' ', '\t', '\n', '\r'])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn valid_size(tok: &str, allow_unlimited: bool) -> bool {
    if allow_unlimited && tok == "-1" {
        return true;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(p) = tok.strip_suffix('%') {
        return match p.split_once('+') {
            Some((n, pct)) => digits(n) && digits(pct),
            None => digits(p),
        };
    }
    digits(tok)
}

/// Parses and checks an expert recipe (`<header> <partition>…`).
pub fn check_expert_recipe(text: &str) -> Result<ExpertRecipe, RecipeError> {
    let toks = normalize(text);
    let colon = toks
        .iter()
        .position(|t| t == ":" || t == "::")
        .ok_or_else(|| rerr("header", "no `<name> :` or `<template> ::` header"))?;
    if colon == 0 {
        return Err(rerr("header", "the recipe has no name before the colon"));
    }
    let name = toks[..colon].join(" ");
    let colons = toks[colon].len();
    let mut partitions = Vec::new();
    let mut i = colon + 1;
    while i < toks.len() {
        let n = partitions.len() + 1;
        let what = format!("partition {n}");
        if i + 4 > toks.len() {
            return Err(rerr(
                what,
                "needs `<min> <priority> <max> <parted fs>` then specifiers and `.`",
            ));
        }
        let (min, prio, max, fs) = (&toks[i], &toks[i + 1], &toks[i + 2], &toks[i + 3]);
        for (label, tok, unlimited) in [
            ("minimal size", min, false),
            ("priority", prio, false),
            ("maximal size", max, true),
        ] {
            if !valid_size(tok, unlimited) {
                return Err(rerr(
                    &what,
                    format!(
                        "{label} `{tok}` is not a size (MB, `N%`, `N+M%`{})",
                        if unlimited { " or -1" } else { "" }
                    ),
                ));
            }
        }
        if fs.contains(['{', '}']) || fs == "." {
            return Err(rerr(&what, format!("`{fs}` is not a parted file system")));
        }
        i += 4;
        let mut specifiers = Vec::new();
        loop {
            let Some(tok) = toks.get(i) else {
                return Err(rerr(&what, "does not end with ` .`"));
            };
            if tok == "." {
                i += 1;
                break;
            }
            if tok == "{" || tok.starts_with('{') {
                return Err(rerr(
                    &what,
                    "a space before `{`; write `name{ contents }` with no space before the brace",
                ));
            }
            let Some(sname) = tok.strip_suffix('{') else {
                if toks.get(i + 1).is_some_and(|t| t.starts_with('{')) {
                    return Err(rerr(
                        &what,
                        "a space before `{`; write `name{ contents }` with no space before the brace",
                    ));
                }
                if tok.contains('{') {
                    return Err(rerr(
                        &what,
                        format!(
                            "`{tok}`: put a space after `{{` and before `}}`, as in `method{{ format }}`"
                        ),
                    ));
                }
                return Err(rerr(
                    &what,
                    format!(
                        "`{tok}` is not a specifier (`name{{ contents }}`) or the closing ` .`"
                    ),
                ));
            };
            if sname.is_empty() || sname.contains(['{', '}']) {
                return Err(rerr(&what, format!("`{tok}` has no specifier name")));
            }
            if sname.starts_with('$') && !INTERNAL.contains(&sname) {
                return Err(rerr(
                    &what,
                    format!(
                        "unknown internal specifier `{sname}{{ }}` (known: {})",
                        INTERNAL.join(", ")
                    ),
                ));
            }
            i += 1;
            let mut contents = Vec::new();
            loop {
                let Some(t) = toks.get(i) else {
                    return Err(rerr(
                        &what,
                        format!("`{sname}{{` is never closed with ` }}`"),
                    ));
                };
                i += 1;
                if t == "}" {
                    break;
                }
                if t.contains(['{', '}']) || t == "." {
                    return Err(rerr(
                        &what,
                        format!("`{sname}{{` is never closed with ` }}` before `{t}`"),
                    ));
                }
                contents.push(t.clone());
            }
            specifiers.push((sname.to_string(), contents.join(" ")));
        }
        if specifiers.is_empty() {
            return Err(rerr(&what, "has no specifiers"));
        }
        let part = PartSpec {
            min: min.clone(),
            priority: prio.clone(),
            max: max.clone(),
            fs: fs.clone(),
            specifiers,
        };
        check_partition(&what, &part)?;
        partitions.push(part);
    }
    if partitions.is_empty() {
        return Err(rerr("recipe", "has no partitions"));
    }
    if !partitions.iter().any(|p| p.max == "-1") {
        return Err(rerr(
            "recipe",
            "no partition may grow (maximal size -1), so partman cannot use the free space",
        ));
    }
    Ok(ExpertRecipe {
        name,
        colons,
        partitions,
    })
}

fn check_partition(what: &str, p: &PartSpec) -> Result<(), RecipeError> {
    if let (Ok(min), Ok(max)) = (p.min.parse::<i64>(), p.max.parse::<i64>())
        && max != -1
        && max < min
    {
        return Err(rerr(
            what,
            format!("maximal size {max} is below minimal size {min}"),
        ));
    }
    let method = p
        .get("method")
        .ok_or_else(|| rerr(what, "has no `method{ … }`"))?;
    if !METHODS.contains(&method) {
        return Err(rerr(
            what,
            format!("unknown method `{method}` (known: {})", METHODS.join(", ")),
        ));
    }
    match method {
        "format" => {
            for need in ["format", "use_filesystem", "filesystem", "mountpoint"] {
                if p.get(need).is_none() {
                    return Err(rerr(
                        what,
                        format!("`method{{ format }}` needs `{need}{{ … }}` too"),
                    ));
                }
            }
            let mp = p.get("mountpoint").unwrap_or_default();
            if !mp.starts_with('/') {
                return Err(rerr(
                    what,
                    format!("mount point `{mp}` is not an absolute path"),
                ));
            }
            if p.get("filesystem").unwrap_or_default().is_empty() {
                return Err(rerr(what, "`filesystem{ }` names no file system"));
            }
        }
        "swap" if p.get("format").is_none() => {
            return Err(rerr(what, "`method{ swap }` needs `format{ }` too"));
        }
        "raid" | "biosgrub" | "efi" if p.get("mountpoint").is_some() => {
            return Err(rerr(
                what,
                format!("a `{method}` partition has no mount point"),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// One entry of a RAID recipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaidEntry {
    pub level: u32,
    pub devcount: u32,
    pub sparecount: u32,
    pub fstype: String,
    pub mountpoint: String,
    pub devices: Vec<String>,
    pub spares: Vec<String>,
}

/// Parses and checks a `partman-auto-raid/recipe` value:
/// `<raidtype> <devcount> <sparecount> <fstype> <mountpoint> <devices> [<sparedevices>] [<extra-args>] .`…
pub fn check_raid_recipe(text: &str) -> Result<Vec<RaidEntry>, RecipeError> {
    let toks = normalize(text);
    if toks.is_empty() {
        return Err(rerr("recipe", "is empty"));
    }
    if toks.last().map(String::as_str) != Some(".") {
        return Err(rerr("recipe", "does not end with ` .`"));
    }
    let mut out = Vec::new();
    for (k, entry) in toks.split(|t| t == ".").enumerate() {
        if k == toks.iter().filter(|t| *t == ".").count() {
            break; // the empty tail after the last `.`
        }
        let what = format!("array {}", k + 1);
        if entry.len() < 6 || entry.len() > 8 {
            return Err(rerr(
                &what,
                format!(
                    "has {} fields; needs `<raidtype> <devcount> <sparecount> <fstype> <mountpoint> <devices> [<sparedevices>] [<extra-args>]`",
                    entry.len()
                ),
            ));
        }
        let level: u32 = entry[0]
            .parse()
            .ok()
            .filter(|l| [0, 1, 5, 6, 10].contains(l))
            .ok_or_else(|| {
                rerr(
                    &what,
                    format!("RAID type `{}` is not 0, 1, 5, 6 or 10", entry[0]),
                )
            })?;
        let devcount: u32 = entry[1].parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            rerr(
                &what,
                format!("device count `{}` is not a positive number", entry[1]),
            )
        })?;
        let sparecount: u32 = entry[2]
            .parse()
            .map_err(|_| rerr(&what, format!("spare count `{}` is not a number", entry[2])))?;
        let fstype = entry[3].clone();
        let mountpoint = entry[4].clone();
        let no_mount = fstype == "swap" || fstype == "lvm";
        if no_mount && mountpoint != "-" {
            return Err(rerr(
                &what,
                format!("a {fstype} array takes `-` as mount point, not `{mountpoint}`"),
            ));
        }
        if !no_mount && !mountpoint.starts_with('/') {
            return Err(rerr(
                &what,
                format!("mount point `{mountpoint}` is not an absolute path"),
            ));
        }
        let list = |s: &str| -> Vec<String> {
            s.split('#')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        };
        let devices = list(&entry[5]);
        for d in &devices {
            if !(d.starts_with("/dev/") || d == "missing") {
                return Err(rerr(
                    &what,
                    format!("device `{d}` is not a /dev path or `missing`"),
                ));
            }
        }
        if devices.len() as u32 != devcount {
            return Err(rerr(
                &what,
                format!(
                    "device count is {devcount} but {} devices are listed",
                    devices.len()
                ),
            ));
        }
        let min = match level {
            0 => 1,
            1 | 10 => 2,
            5 => 3,
            _ => 4,
        };
        if devcount < min {
            return Err(rerr(
                &what,
                format!("RAID{level} needs at least {min} devices, found {devcount}"),
            ));
        }
        let spares = entry.get(6).map(|s| list(s)).unwrap_or_default();
        if spares.len() as u32 != sparecount {
            return Err(rerr(
                &what,
                format!(
                    "spare count is {sparecount} but {} spares are listed",
                    spares.len()
                ),
            ));
        }
        if let Some(d) = devices.iter().find(|d| spares.contains(d)) {
            return Err(rerr(&what, format!("{d} is both a device and a spare")));
        }
        out.push(RaidEntry {
            level,
            devcount,
            sparecount,
            fstype,
            mountpoint,
            devices,
            spares,
        });
    }
    let mut all: Vec<&String> = out
        .iter()
        .flat_map(|e| e.devices.iter())
        .filter(|d| *d != "missing")
        .collect();
    all.sort();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(rerr("recipe", format!("{} is in two arrays", w[0])));
    }
    Ok(out)
}

/// Checks that every RAID member is a `method{ raid }` partition of the expert recipe
/// on one of `disks`, and every raid partition is used.
pub fn check_raid_against_recipe(
    recipe: &ExpertRecipe,
    raid: &[RaidEntry],
    disks: &[&str],
) -> Result<(), RecipeError> {
    let raid_parts: Vec<u32> = recipe
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.get("method") == Some("raid"))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    let mut used = Vec::new();
    for (k, e) in raid.iter().enumerate() {
        for d in &e.devices {
            let found = disks.iter().find_map(|disk| {
                raid_parts
                    .iter()
                    .find(|n| partition_device(disk, **n) == *d)
                    .copied()
            });
            match found {
                Some(n) => used.push(n),
                None => {
                    return Err(rerr(
                        format!("array {}", k + 1),
                        format!(
                            "{d} is not a raid partition of the recipe on {} (raid partitions: {:?})",
                            disks.join(" "),
                            raid_parts
                        ),
                    ));
                }
            }
        }
    }
    if let Some(n) = raid_parts.iter().find(|n| !used.contains(n)) {
        return Err(rerr(
            format!("partition {n}"),
            "is a raid partition that no array uses",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DiskRule;
    use crate::profiles::model::RootFilesystem;

    fn root(raid: RaidLevel, swap: Option<u64>) -> RootPlan {
        RootPlan {
            raid,
            disks: raid.min_disks(),
            filesystem: RootFilesystem::Xfs,
            md_device: None,
            swap_bytes: swap,
            min_size_bytes: 8 << 30,
            selection: DiskRule::default(),
        }
    }

    #[test]
    fn our_recipes_pass_the_grammar_for_every_layout() {
        for raid in [RaidLevel::Raid1, RaidLevel::Raid10, RaidLevel::None] {
            for swap in [None, Some(2u64 << 30)] {
                for fw in [Firmware::Bios, Firmware::Uefi] {
                    let r = root(raid, swap);
                    let rec = expert_recipe(&r, fw);
                    let parsed = check_expert_recipe(&rec.one_line()).unwrap_or_else(|e| {
                        panic!("{raid} {swap:?} {fw:?}: {e}\n{}", rec.one_line())
                    });
                    assert_eq!(parsed, rec, "round trip");
                    let multi =
                        check_expert_recipe(&rec.preseed_lines("  ").replace(" \\\n", "\n"));
                    assert_eq!(multi.unwrap(), rec);
                    let arrays = raid_arrays(&r);
                    if raid == RaidLevel::None {
                        assert!(arrays.is_empty());
                        continue;
                    }
                    let disks: Vec<String> = (0..r.disks)
                        .map(|i| format!("/dev/sd{}", (b'a' + i as u8) as char))
                        .collect();
                    let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
                    let text = raid_recipe(&arrays, &disks);
                    let entries =
                        check_raid_recipe(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                    check_raid_against_recipe(&rec, &entries, &disks).unwrap();
                }
            }
        }
    }

    #[test]
    fn raid_recipe_text_and_nvme_partitions() {
        let r = root(RaidLevel::Raid1, Some(1 << 30));
        assert_eq!(
            raid_recipe(&raid_arrays(&r), &["/dev/nvme0n1", "/dev/nvme1n1"]),
            "1 2 0 xfs / /dev/nvme0n1p2#/dev/nvme1n1p2 . 1 2 0 swap - /dev/nvme0n1p3#/dev/nvme1n1p3 ."
        );
        assert_eq!(
            expert_recipe(&r, Firmware::Bios).one_line(),
            "rackseed-root :: 1 1 1 free $bios_boot{ } method{ biosgrub } . 8192 108192 -1 raid $primary{ } method{ raid } . 1024 1024 1024 raid $primary{ } method{ raid } ."
        );
    }

    #[test]
    fn malformed_expert_recipes_are_rejected() {
        let cases = [
            (
                "500 10000 -1 ext4 method{ format } .",
                "header: no `<name> :` or `<template> ::` header",
            ),
            (
                "r :: 500 10000 -1 ext4 method{ format } format{ } use_filesystem{ } filesystem{ ext4 } mountpoint{ / }",
                "partition 1: does not end with ` .`",
            ),
            (
                "r :: 500 10000 -1 ext4 method {format} .",
                "partition 1: a space before `{`; write `name{ contents }` with no space before the brace",
            ),
            (
                "r :: 500 10000 -1 ext4 method{format} .",
                "partition 1: `method{format}`: put a space after `{` and before `}`, as in `method{ format }`",
            ),
            (
                "r :: big 10000 -1 ext4 method{ swap } format{ } .",
                "partition 1: minimal size `big` is not a size (MB, `N%`, `N+M%`)",
            ),
            (
                "r :: 500 10000 -1 ext4 method{ format } format{ } .",
                "partition 1: `method{ format }` needs `use_filesystem{ … }` too",
            ),
            (
                "r :: 500 10000 -1 ext4 method{ wipe } .",
                "partition 1: unknown method `wipe` (known: format, swap, keep, raid, lvm, crypto, efi, biosgrub, newworld, prep)",
            ),
            (
                "r :: 500 10000 -1 raid $primry{ } method{ raid } .",
                "partition 1: unknown internal specifier `$primry{ }` (known: $primary, $logical, $bootable, $default_filesystem, $lvmok, $defaultignore, $lvmignore, $iflabel, $reusemethod, $bios_boot, $gptonly)",
            ),
            (
                "r :: 500 10000 1000 raid method{ raid } .",
                "recipe: no partition may grow (maximal size -1), so partman cannot use the free space",
            ),
            (
                "r :: 500 10000 100 raid method{ raid } . 1 1 -1 raid method{ raid } .",
                "partition 1: maximal size 100 is below minimal size 500",
            ),
            (
                "r :: 500 10000 -1 raid method{ raid .",
                "partition 1: `method{` is never closed with ` }` before `.`",
            ),
            ("r ::", "recipe: has no partitions"),
            (
                "r :: 1 1 1 free method{ biosgrub } . 500",
                "partition 2: needs `<min> <priority> <max> <parted fs>` then specifiers and `.`",
            ),
        ];
        for (text, want) in cases {
            let got = check_expert_recipe(text).expect_err(text).to_string();
            assert_eq!(got, want, "for {text}");
        }
    }

    #[test]
    fn malformed_raid_recipes_are_rejected() {
        let cases = [
            ("", "recipe: is empty"),
            (
                "1 2 0 xfs / /dev/sda2#/dev/sdb2",
                "recipe: does not end with ` .`",
            ),
            (
                "4 2 0 xfs / /dev/sda2#/dev/sdb2 .",
                "array 1: RAID type `4` is not 0, 1, 5, 6 or 10",
            ),
            (
                "1 2 0 xfs / /dev/sda2 .",
                "array 1: device count is 2 but 1 devices are listed",
            ),
            (
                "1 1 0 xfs / /dev/sda2 .",
                "array 1: RAID1 needs at least 2 devices, found 1",
            ),
            (
                "1 2 0 xfs root /dev/sda2#/dev/sdb2 .",
                "array 1: mount point `root` is not an absolute path",
            ),
            (
                "1 2 0 swap /swap /dev/sda3#/dev/sdb3 .",
                "array 1: a swap array takes `-` as mount point, not `/swap`",
            ),
            (
                "1 2 1 xfs / /dev/sda2#/dev/sdb2 .",
                "array 1: spare count is 1 but 0 spares are listed",
            ),
            (
                "1 2 0 xfs / sda2#sdb2 .",
                "array 1: device `sda2` is not a /dev path or `missing`",
            ),
            (
                "1 2 0 xfs / .",
                "array 1: has 5 fields; needs `<raidtype> <devcount> <sparecount> <fstype> <mountpoint> <devices> [<sparedevices>] [<extra-args>]`",
            ),
            (
                "1 2 0 xfs / /dev/sda2#/dev/sdb2 . 1 2 0 swap - /dev/sda2#/dev/sdc2 .",
                "recipe: /dev/sda2 is in two arrays",
            ),
        ];
        for (text, want) in cases {
            let got = check_raid_recipe(text).expect_err(text).to_string();
            assert_eq!(got, want, "for {text}");
        }
        // Accepted forms from the installer's documentation.
        check_raid_recipe("1 2 0 ext3 / /dev/sda1#/dev/sdb1 . 1 2 0 swap - /dev/sda5#/dev/sdb5 .")
            .unwrap();
        check_raid_recipe(
            "10 4 1 xfs / /dev/sda2#/dev/sdb2#/dev/sdc2#/dev/sdd2 /dev/sde2 --layout#o2 .",
        )
        .unwrap();
        check_raid_recipe("1 2 0 lvm - /dev/sda5#missing .").unwrap();
    }

    #[test]
    fn raid_members_must_be_raid_partitions() {
        let r = root(RaidLevel::Raid1, None);
        let rec = expert_recipe(&r, Firmware::Uefi);
        let entries = check_raid_recipe("1 2 0 xfs / /dev/sda1#/dev/sdb1 .").unwrap();
        let e = check_raid_against_recipe(&rec, &entries, &["/dev/sda", "/dev/sdb"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "array 1: /dev/sda1 is not a raid partition of the recipe on /dev/sda /dev/sdb (raid partitions: [2])"
        );
    }
}
