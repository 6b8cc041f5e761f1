//! The render check behind `rackseed check` and `rackseed profile check`: every install
//! file of a profile rendered for a sample node with BIOS and UEFI, its partman recipes
//! checked against the installer's grammar and its preseed read as the installer reads
//! it. Pure: problems are returned, never printed.

use crate::config::Config;
use crate::plan::{Firmware, sample_node};
use crate::profiles::Resolved;
use crate::render::{self, MirrorCtx, Templates, debconf, partman};

/// Renders every install file of `profile` for a sample node with each firmware and
/// checks the results: the partman recipes against the installer's grammar, the
/// preseed as the installer reads it. Returns the problems found.
pub fn check_rendering(
    t: &Templates,
    config: &Config,
    mirror: &MirrorCtx,
    profile: &Resolved,
) -> Vec<String> {
    let mut problems = Vec::new();
    for firmware in [Firmware::Bios, Firmware::Uefi] {
        let node = sample_node(
            &profile.name,
            firmware,
            crate::profiles::vars::sample(&profile.profile),
        );
        let what = format!("profile {} ({})", profile.name, firmware.as_str());
        let ctx = match render::node_ctx(config, &node, profile, mirror.clone(), "TOKEN") {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{what}: {}", crate::error_chain(&e)));
                continue;
            }
        };
        let files = match render::install_files(t, &ctx) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("{what}: {}", crate::error_chain(&e)));
                continue;
            }
        };
        let recipe = partman::expert_recipe(&ctx.plan.root, firmware);
        let parsed = match partman::check_expert_recipe(&recipe.one_line()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{what}: partman-auto/expert_recipe: {e}"));
                continue;
            }
        };
        if !ctx.partman.raid_arrays.is_empty() {
            let disks: Vec<String> = (0..ctx.plan.root.disks)
                .map(|i| format!("/dev/sd{}", char::from(b'a' + (i % 26) as u8)))
                .collect();
            let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
            let raid = partman::raid_recipe(&ctx.partman.raid_arrays, &disks);
            match partman::check_raid_recipe(&raid) {
                Ok(entries) => {
                    if let Err(e) = partman::check_raid_against_recipe(&parsed, &entries, &disks) {
                        problems.push(format!("{what}: partman-auto-raid/recipe: {e}"));
                    }
                }
                Err(e) => problems.push(format!("{what}: partman-auto-raid/recipe: {e}")),
            }
        }
        if let Some((_, preseed)) = files.iter().find(|(n, _)| *n == "preseed.cfg") {
            match debconf::parse(preseed) {
                Ok(sel) => {
                    for l in debconf::lint(&sel) {
                        problems.push(format!("{what}: preseed.cfg: {l}"));
                    }
                    let held = debconf::values(&sel);
                    let got = held
                        .iter()
                        .find(|(q, _)| q == "partman-auto/expert_recipe")
                        .map(|(_, v)| v.as_str());
                    if got != Some(recipe.one_line().as_str()) {
                        problems.push(format!(
                            "{what}: preseed.cfg: the installer would read partman-auto/expert_recipe as {got:?}, not the recipe rackseed made"
                        ));
                    }
                }
                Err(e) => problems.push(format!("{what}: preseed.cfg: {e}")),
            }
        }
    }
    problems
}
