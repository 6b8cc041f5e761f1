//! `rackseed image fetch|import|list|verify|gc|drivers`, and the kernel/mirror line
//! that `rackseed check` prints.
//!
//! Owns output and exit codes for images; uses `anyhow`. Progress goes to stderr (a bar
//! on a terminal, plain lines otherwise), results to stdout.

use super::args::ImageCmd;
use crate::config::Config;
use crate::images::kernel::KernelCheck;
use crate::images::manifest::Catalog;
use crate::images::release::Keyring;
use crate::images::store::{FileState, ImageManifest, Store};
use crate::images::upstream::{Progress, Upstream};
use crate::images::{ImageError, fetch, import, node_images, partial_dir};
use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

/// Runs an image command.
pub fn run(cmd: ImageCmd, config: &Config) -> Result<ExitCode> {
    let store = Store::open(&config.images.store)?;
    match cmd {
        ImageCmd::Drivers => {
            let installer = crate::state::resolve_installer(config)?;
            let kernel = crate::images::kernel::initrd_kernel_version(&installer.initrd)?;
            if let Some(set) = crate::images::drivers::stored(store.root(), &kernel) {
                println!(
                    "drivers for kernel {kernel}: stored ({}; {})",
                    set.packages.keys().cloned().collect::<Vec<_>>().join(", "),
                    set.verification
                );
                return Ok(ExitCode::SUCCESS);
            }
            let up = upstream(config)?;
            let keyring = Keyring::load(&config.images.keyring)?;
            let set = runtime()?.block_on(crate::images::drivers::fetch_drivers(
                &up,
                &keyring,
                &config.installer.suite,
                "amd64",
                &kernel,
                store.root(),
            ))?;
            println!(
                "drivers for kernel {kernel}: fetched and verified ({}; {})",
                set.packages.keys().cloned().collect::<Vec<_>>().join(", "),
                set.verification
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Fetch { name } => {
            let catalog = Catalog::load(&config.images.manifests)?;
            let def = catalog.get(&name)?.clone();
            let up = upstream(config)?;
            let keyring = Keyring::load(&config.images.keyring)?;
            let progress = Term::new();
            let partial = partial_dir(config);
            let result = runtime()?.block_on(fetch::fetch_image(
                &def, &name, &store, &up, &keyring, &partial, &progress,
            ));
            match result {
                Ok(o) => {
                    print_stored(&o.manifest, &store);
                    print_kernel(&o.kernel);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let not_served = matches!(&e, ImageError::AfterChain { source, .. } if matches!(**source, ImageError::NotServed { .. }));
                    eprintln!("rackseed: {}", crate::error_chain(&e));
                    if not_served && let Some(p) = &def.package {
                        eprintln!(
                            "hint: this mirror does not serve the netboot files; import them from Debian's `{}` package instead: rackseed image import --from {}",
                            p.name,
                            p.dir.display()
                        );
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ImageCmd::Import {
            from,
            name,
            manifest,
            offline,
        } => {
            let from = from.unwrap_or_else(|| config.installer.dir.clone());
            let catalog = Catalog::load(&config.images.manifests)?;
            let def = match (&manifest, catalog.for_package_dir(&from), &name) {
                (Some(m), _, _) => catalog.get(m)?,
                (None, Some(d), _) => d,
                (None, None, Some(n)) => catalog.get(n).with_context(|| {
                    format!("`{}` is not a known package directory; say which manifest describes it with --manifest", from.display())
                })?,
                (None, None, None) => anyhow::bail!(
                    "`{}` is not a known package directory; say which image manifest describes it with --manifest ({})",
                    from.display(),
                    catalog.defs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
            .clone();
            let name = name.unwrap_or_else(|| def.name.clone());
            if !crate::config::valid_name(&name) {
                return Err(ImageError::BadName { name }.into());
            }
            let online = if offline {
                None
            } else {
                Some((upstream(config)?, Keyring::load(&config.images.keyring)?))
            };
            let progress = Term::new();
            let o = runtime()?.block_on(import::import_dir(
                &from,
                &def,
                &name,
                &store,
                online.as_ref().map(|(u, k)| (u, k)),
                &progress,
            ))?;
            print_stored(&o.manifest, &store);
            if !o.manifest.verified {
                eprintln!("warning: {}", o.manifest.verification);
            }
            print_kernel(&o.kernel);
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::List { all, json } => {
            let list = if all {
                store.generations()?
            } else {
                store.list()?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let current: Vec<(String, String)> =
                store.list()?.into_iter().map(|m| (m.name, m.id)).collect();
            println!(
                "{:<20} {:<12} {:<22} {:<16} {:<8} {:<20} ORIGIN",
                "NAME", "ID", "VERSION", "KERNEL", "VERIFIED", "CREATED"
            );
            for m in &list {
                let is_current = current.iter().any(|(n, i)| *n == m.name && *i == m.id);
                println!(
                    "{:<20} {:<12} {:<22} {:<16} {:<8} {:<20} {}{}",
                    m.name,
                    m.id,
                    m.version.as_deref().unwrap_or("-"),
                    m.kernel.as_deref().unwrap_or("-"),
                    if m.verified { "yes" } else { "no" },
                    m.created,
                    m.origin,
                    if is_current || !all {
                        ""
                    } else {
                        " (superseded)"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Verify { name } => {
            let list: Vec<ImageManifest> = match name {
                Some(n) => vec![store.manifest(&n)?],
                None => store.generations()?,
            };
            let mut bad = 0;
            for m in &list {
                for (file, state) in store.verify(m)? {
                    let r = format!("{}@{} {file}", m.name, m.id);
                    match state {
                        FileState::Ok => println!("{r}: ok"),
                        FileState::Missing => {
                            bad += 1;
                            println!(
                                "{r}: MISSING ({})",
                                store.blob_path(&m.files[&file].sha256).display()
                            );
                        }
                        FileState::Corrupt { actual } => {
                            bad += 1;
                            println!(
                                "{r}: CORRUPT (sha256 {actual}, manifest says {}); fetch or import the image again",
                                m.files[&file].sha256
                            );
                        }
                    }
                }
            }
            if bad > 0 {
                eprintln!("verify failed: {bad} file(s) missing or corrupt");
                return Ok(ExitCode::FAILURE);
            }
            println!("{} image generation(s) verified", list.len());
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Gc => {
            let mut keep = node_images(config)?;
            keep.extend(config.installer.image.clone());
            let lock = store.lock()?;
            let r = store.gc(&lock, &keep)?;
            for g in &r.generations {
                println!("removed generation {g}");
            }
            for d in &r.dangling {
                eprintln!(
                    "warning: image `{d}` is referenced by a node or the config but is not in the store"
                );
            }
            println!(
                "gc: {} generation(s), {} file(s) ({} bytes), {} leftover(s) removed; kept {} referenced image(s)",
                r.generations.len(),
                r.blobs,
                r.bytes,
                r.tmp_files,
                keep.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The kernel/mirror check for the installer the config serves, printed for
/// `rackseed check`: a line on stdout when it matches, a warning on stderr otherwise.
pub fn check_kernel(config: &Config) {
    let c = crate::images::check_installer_kernel(config);
    if c.is_warning() {
        eprintln!("warning: {c}");
    } else {
        println!("{c}");
    }
}

fn print_kernel(c: &KernelCheck) {
    if c.is_warning() {
        eprintln!("warning: {c}");
    } else {
        println!("{c}");
    }
}

fn print_stored(m: &ImageManifest, store: &Store) {
    println!(
        "stored {}@{} ({} {}, version {}): {}",
        m.name,
        m.id,
        m.suite,
        m.arch,
        m.version.as_deref().unwrap_or("-"),
        if m.verified {
            "verified"
        } else {
            "NOT verified"
        }
    );
    println!("  {}", m.verification);
    for (name, f) in &m.files {
        println!(
            "  {name:<10} {:>10} bytes  sha256 {}  {}",
            f.size,
            f.sha256,
            store.blob_path(&f.sha256).display()
        );
    }
}

fn upstream(config: &Config) -> Result<Upstream> {
    let mirror = crate::images::upstream_mirror(config, Path::new("/"))?;
    Ok(Upstream::new(&mirror, config.images.proxy.as_deref())?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Progress on stderr: an indicatif bar on a terminal, plain lines otherwise.
struct Term {
    tty: bool,
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Term {
    fn new() -> Term {
        Term {
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Term {
    fn start(&self, file: &str, from: u64, total: Option<u64>) {
        if !self.tty {
            eprintln!(
                "downloading {file}{}{}",
                if from > 0 {
                    format!(" from byte {from}")
                } else {
                    String::new()
                },
                total.map(|t| format!(" ({t} bytes)")).unwrap_or_default()
            );
            return;
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:<10} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_string());
        bar.set_position(from);
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &*self.bar.lock().unwrap_or_else(|p| p.into_inner()) {
            b.inc(n);
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }

    fn note(&self, line: &str) {
        match &*self.bar.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}
