//! `rackseed check`: validates the config, installer files, profiles and every template
//! without starting anything. Owns this command's output and exit code.

use super::args::ConfigArgs;
use anyhow::Result;
use std::process::ExitCode;

/// `rackseed check`: everything a start would check, plus rendering every template for
/// every profile with a sample node. Prints each problem; fails if there is any.
pub fn run(args: &ConfigArgs) -> Result<ExitCode> {
    let config = args.load()?;
    let mut problems: Vec<String> = Vec::new();
    println!(
        "config {}: ok (dhcp {:?}, advertise {})",
        config.source, config.dhcp.mode, config.server.advertise
    );
    let inventory = config.inventory_location();
    match crate::inventory::probe(&inventory) {
        Ok(()) => println!("inventory {inventory}: ok"),
        Err(e) => problems.push(crate::error_chain(&e)),
    }
    let shim = config.installer.dir.join("bootnetx64.efi");
    let grub = config.installer.dir.join("grubx64.efi");
    let mut needed = vec![
        ("boot.ipxe_bios", &config.boot.ipxe_bios),
        ("boot.ipxe_efi", &config.boot.ipxe_efi),
        ("boot.ipxe_snponly", &config.boot.ipxe_snponly),
    ];
    if config.boot.efi_binary == crate::config::EfiBinary::Shim {
        needed.push(("boot.efi_binary = \"shim\": installer.dir", &shim));
        needed.push(("boot.efi_binary = \"shim\": installer.dir", &grub));
    }
    for (what, p) in needed {
        if !p.is_file() {
            problems.push(format!(
                "{}: {what}: `{}` does not exist; install Debian's `ipxe` package or fix the path",
                config.source,
                p.display()
            ));
        }
    }
    match crate::state::resolve_installer(&config) {
        Ok(i) => {
            println!(
                "installer {}: {} + {}",
                i.name,
                i.kernel.display(),
                i.initrd.display()
            );
            super::image::check_kernel(&config);
        }
        Err(e) => problems.push(e.to_string()),
    }
    let mirror = match crate::state::resolve_mirror(&config) {
        Ok(m) => {
            println!(
                "mirror: {}://{}{} ({})",
                m.protocol, m.host, m.directory, m.suite
            );
            Some(m)
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let catalog = if config.profiles.dir.is_dir() {
        match crate::profiles::Catalog::load(&config.profiles.dir) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.extend(e.0.iter().map(|x| x.to_string()));
                None
            }
        }
    } else {
        problems.push(format!(
            "{}: profiles.dir: `{}` is not a directory",
            config.source,
            config.profiles.dir.display()
        ));
        None
    };
    if let Some(cat) = &catalog {
        for r in &config.rules {
            if cat.get(&r.profile).is_none() {
                problems.push(format!(
                    "{}: rules: rule `{}` assigns profile `{}`, which is not loaded",
                    config.source, r.name, r.profile
                ));
            }
        }
        if !config.rules.is_empty() {
            println!(
                "rules: {} (dhcp.unknown {:?})",
                config.rules.len(),
                config.dhcp.unknown
            );
        }
    }
    if let (Some(cat), Some(mirror)) = (&catalog, &mirror) {
        let t = crate::render::Templates::embedded();
        for name in cat.names() {
            let Some(p) = cat.get(name) else { continue };
            let found = crate::render::check_rendering(&t, &config, mirror, &p);
            if found.is_empty() {
                println!("profile {name}: ok");
            }
            problems.extend(found);
        }
        if let Some(d) = &config.profiles.default
            && cat.get(d).is_none()
        {
            problems.push(format!(
                "{}: profiles.default: no profile named `{d}`",
                config.source
            ));
        }
    }
    if problems.is_empty() {
        println!("check passed");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("check failed: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}
