//! The Vagrant lab: the Vagrantfile is valid for vagrant with the libvirt provider
//! (Debian's `vagrant` and `vagrant-libvirt`). Running it needs KVM and a mirror that
//! serves installer components, which this machine does not have.

use anyhow::Result;
use rackseed_tests::{run, workspace};
use std::process::Command;

#[test]
fn vagrantfile_validates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        workspace().join("Vagrantfile"),
        dir.path().join("Vagrantfile"),
    )?;
    let out = run(Command::new("vagrant")
        .arg("validate")
        .env("VAGRANT_CWD", dir.path())
        .env("VAGRANT_HOME", dir.path().join("home"))
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .env("VAGRANT_CHECKPOINT_DISABLE", "1"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Vagrantfile validated successfully"),
        "{text}"
    );
    // A broken Vagrantfile is reported (the check can fail).
    std::fs::write(
        dir.path().join("Vagrantfile"),
        "Vagrant.configure(\"2\") do |c|\n  c.vm.define \"x\" do |x|\n    x.vm.provider :libvirt do |lv|\n      lv.memroy = 1024\n    end\n  end\nend\n",
    )?;
    let bad = Command::new("vagrant")
        .arg("validate")
        .env("VAGRANT_CWD", dir.path())
        .env("VAGRANT_HOME", dir.path().join("home"))
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .output()?;
    assert!(!bad.status.success(), "an invalid Vagrantfile validated");
    Ok(())
}
