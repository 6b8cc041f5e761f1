//! `rackseed backup` and `rackseed restore`: output and exit codes; the work is
//! [`crate::backup::store`]'s.

use super::args::ConfigArgs;
use crate::backup::SchemaStep;
use crate::backup::store::{self, Locations};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// The `[inventory] url` of the config file, when it names one. The config format has
/// no such key yet (a PostgreSQL inventory is not built), so this is read before the
/// config is validated: an operator who sets it is told why a backup cannot be made,
/// rather than that the key is unknown.
fn inventory_url(args: &ConfigArgs) -> Option<String> {
    let text = std::fs::read_to_string(args.config.as_ref()?).ok()?;
    let table: toml::Table = text.parse().ok()?;
    Some(table.get("inventory")?.get("url")?.as_str()?.to_string())
}

fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// `rackseed backup --out FILE`.
pub fn backup(args: &ConfigArgs, out: &Path) -> Result<ExitCode> {
    crate::backup::inventory_kind_for(inventory_url(args).as_deref())?;
    let config = args.load()?;
    let loc = Locations::of(&config);
    let w = store::backup(&loc, out, crate::node::now_ms())
        .with_context(|| format!("backup of `{}` failed", loc.data_dir.display()))?;
    let images = w
        .manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("images/images/"))
        .count();
    println!(
        "wrote {}: {} files, {} (inventory schema {}, {} lease writes from the journal, {} image manifests with their files)",
        out.display(),
        w.files,
        size(w.bytes),
        w.schema,
        w.journal_writes,
        images
    );
    println!(
        "it holds the CA key and the admin token (mode 0600): keep it where only root reads it"
    );
    Ok(ExitCode::SUCCESS)
}

/// `rackseed restore FILE [--force]`.
pub fn restore(args: &ConfigArgs, file: &Path, force: bool) -> Result<ExitCode> {
    crate::backup::inventory_kind_for(inventory_url(args).as_deref())?;
    let config = args.load()?;
    let loc = Locations::of(&config);
    let r = store::restore(&loc, file, force)?;
    println!(
        "restored {} (taken {} by rackseed {}) into {}: {} files, {}",
        file.display(),
        r.manifest.created,
        r.manifest.rackseed,
        loc.data_dir.display(),
        r.files,
        size(r.bytes)
    );
    if !r.replaced.is_empty() {
        println!("replaced: {}", r.replaced.join(", "));
    }
    match r.step {
        SchemaStep::Same => {}
        SchemaStep::Migrate { from, to } => println!(
            "the inventory has schema version {from}: rackseed migrates it to {to} when it starts"
        ),
    }
    println!("start rackseed (systemctl start rackseed)");
    Ok(ExitCode::SUCCESS)
}
