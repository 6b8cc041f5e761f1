//! The Debian package: built by `packaging/build-deb.sh`, installed with dpkg into a
//! Debian 12 system booted by systemd-nspawn (systemd as PID 1 inside), started by its
//! unit, checked by `systemd-analyze verify`, restarted with its inventory kept.

use anyhow::{Context, Result, bail};
use rackseed_tests::{Netns, run, wait_for, workspace};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Packages of the container: systemd to run the unit, and what the package depends on.
const ROOTFS_PACKAGES: &str = "systemd,systemd-sysv,dbus,curl,ca-certificates,adduser,init-system-helpers,ipxe,debian-installer-12-netboot-amd64";

fn cache_root() -> PathBuf {
    std::env::var_os("RACKSEED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rackseed-tests"))
}

/// A Debian 12 root file system made by debootstrap from this host's mirror, cached
/// by its package list and mirror.
fn rootfs() -> Result<PathBuf> {
    let mirror =
        rackseed::aptsources::debian_mirror(&rackseed::aptsources::host_sources(Path::new("/")))
            .context("this host's APT sources name no Debian mirror for debootstrap")?;
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(format!("bookworm\n{mirror}\n{ROOTFS_PACKAGES}\n"));
        hex::encode(&h.finalize()[..8])
    };
    let dir = cache_root().join("nspawn-rootfs").join(key);
    if dir.join("DONE").is_file() {
        return Ok(dir);
    }
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(tmp.parent().context("cache dir")?)?;
    eprintln!("package test: debootstrap of a bookworm container from {mirror}");
    run(Command::new("timeout")
        .args(["1200", "debootstrap", "--variant=minbase"])
        .arg(format!("--include={ROOTFS_PACKAGES}"))
        .args(["bookworm"])
        .arg(&tmp)
        .arg(&mirror))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    fs::write(dir.join("DONE"), "")?;
    Ok(dir)
}

/// A booted container; powered off and removed on drop.
struct Container {
    child: Child,
    root: tempfile::TempDir,
    leader: u32,
}

impl Container {
    fn boot(rootfs: &Path, ns: &Netns) -> Result<Container> {
        let root = tempfile::Builder::new()
            .prefix("rackseed-pkg-")
            .tempdir_in("/var/tmp")?;
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", rootfs.display()))
            .arg(root.path()))?;
        // nspawn keeps its mount propagation directory here; systemd is not PID 1 on
        // the host, so nothing else creates it.
        fs::create_dir_all("/run/systemd/nspawn")?;
        let child = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(root.path())
            .args(["--register=no", "--keep-unit", "--console=pipe", "-q"])
            .arg(format!("--network-namespace-path=/run/netns/{}", ns.name))
            .arg("-b")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start systemd-nspawn (Debian's systemd-container)")?;
        let pid = child.id();
        let mut c = Container {
            child,
            root,
            leader: 0,
        };
        c.leader = wait_for(
            "the container's init",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let kids = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
                kids.split_whitespace().next()?.parse::<u32>().ok()
            },
        )?;
        wait_for(
            "systemd in the container",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || {
                let (_, out) = c.sh("systemctl is-system-running || true").ok()?;
                let s = out.trim().to_string();
                (s == "running" || s == "degraded").then_some(())
            },
        )?;
        Ok(c)
    }

    /// Runs a shell line inside the container: (success, stdout+stderr).
    fn sh(&self, line: &str) -> Result<(bool, String)> {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.leader.to_string())
            .args([
                "-a",
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "sh",
                "-c",
                line,
            ])
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    fn must(&self, line: &str) -> Result<String> {
        let (ok, out) = self.sh(line)?;
        if !ok {
            bail!("in the container, `{line}` failed:\n{out}");
        }
        Ok(out)
    }

    fn wait_healthy(&self) -> Result<()> {
        wait_for(
            "rackseed.service /healthz",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || {
                self.sh("curl -sf -m 2 http://127.0.0.1:8080/healthz")
                    .ok()
                    .filter(|(ok, _)| *ok)
                    .map(|_| ())
            },
        )
        .with_context(|| {
            self.sh("systemctl status --no-pager rackseed; journalctl --no-pager -u rackseed | tail -n 40")
                .map(|(_, o)| o)
                .unwrap_or_default()
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.sh("systemctl poweroff");
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_debian_package_installs_and_runs_under_systemd() -> Result<()> {
    let script = workspace().join("packaging/build-deb.sh");
    // The debug build the test run already has; `./x deb` packages a release build.
    let out = run(Command::new(&script)
        .arg("--binary")
        .arg(rackseed_tests::rackseed_bin()))?;
    let deb = workspace().join(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    assert!(
        deb.is_file(),
        "build-deb.sh printed no package: {}",
        deb.display()
    );
    let listing = String::from_utf8(run(Command::new("dpkg-deb").arg("-c").arg(&deb))?.stdout)?;
    for f in [
        "./usr/bin/rackseed",
        "./lib/systemd/system/rackseed.service",
        "./etc/rackseed/rackseed.toml",
        "./etc/rackseed/profiles/storage-node.yaml",
        "./usr/share/doc/rackseed/ARCHITECTURE.md",
    ] {
        assert!(
            listing.contains(f),
            "{f} missing from the package:\n{listing}"
        );
    }
    let info = String::from_utf8(run(Command::new("dpkg-deb").arg("-I").arg(&deb))?.stdout)?;
    assert!(
        info.contains("Depends: libc6 (>= 2.34), adduser, ipxe, debian-installer-12-netboot-amd64"),
        "{info}"
    );
    let conffiles = String::from_utf8(
        run(Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"))?
        .stdout,
    )?;
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/rackseed/rackseed.toml"),
        "{conffiles}"
    );

    let rootfs = rootfs()?;
    // The container's network: one address on the documentation range and a default
    // route, so the embedded defaults find their advertise address as on a real host.
    let ns = Netns::new("rspkg")?;
    ns.sh("ip link add prov0 type veth peer name prov1 && ip addr add 192.0.2.1/24 dev prov0 && ip link set prov1 up && ip link set prov0 up && ip link set lo up && ip route add default via 192.0.2.254 dev prov0 onlink")?;
    let c = Container::boot(&rootfs, &ns)?;
    fs::copy(&deb, c.root.path().join("root/rackseed.deb"))?;
    let installed = c.must("dpkg -i /root/rackseed.deb 2>&1")?;
    eprintln!("{installed}");
    c.wait_healthy()?;

    // The unit as systemd reads it, and what it runs as.
    let verify = c.must("systemd-analyze verify /lib/systemd/system/rackseed.service 2>&1")?;
    assert!(
        !verify.contains("rackseed.service:"),
        "systemd-analyze verify complains:\n{verify}"
    );
    let props = c.must(
        "systemctl show -p User -p Restart -p LimitNOFILE -p AmbientCapabilities -p ActiveState -p UnitFileState rackseed",
    )?;
    for want in [
        "User=rackseed",
        "Restart=on-failure",
        "LimitNOFILE=65536",
        "ActiveState=active",
        "UnitFileState=enabled",
    ] {
        assert!(props.contains(want), "{want} not in:\n{props}");
    }
    assert!(props.contains("cap_net_bind_service"), "{props}");
    let owner = c.must("stat -c %U /var/lib/rackseed/admin.token /var/lib/rackseed")?;
    assert_eq!(
        owner.split_whitespace().collect::<Vec<_>>(),
        ["rackseed", "rackseed"]
    );
    let user = c.must("stat -c %U /proc/$(systemctl show -p MainPID --value rackseed)")?;
    assert_eq!(user.trim(), "rackseed", "the service runs as {user}");

    // The inventory survives a stop and start.
    c.must("rackseed node add --mac 52:54:00:42:00:01 --hostname pkg1 --profile lab-single-disk")?;
    c.must("systemctl stop rackseed")?;
    assert!(
        !c.sh("curl -sf -m 2 http://127.0.0.1:8080/healthz")?.0,
        "still answering after stop"
    );
    c.must("systemctl start rackseed")?;
    c.wait_healthy()?;
    let show = c.must("rackseed node show pkg1")?;
    assert!(show.starts_with("pkg1 (52:54:00:42:00:01)"), "{show}");
    assert!(show.contains("profile       lab-single-disk"), "{show}");
    let json = c.must("rackseed node show pkg1 --json")?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["hostname"], "pkg1");
    // A crash is restarted by systemd (Restart=on-failure).
    let before = c.must("systemctl show -p MainPID --value rackseed")?;
    c.must("kill -9 $(systemctl show -p MainPID --value rackseed)")?;
    wait_for(
        "a restarted rackseed",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let now = c.sh("systemctl show -p MainPID --value rackseed").ok()?.1;
            (now.trim() != before.trim() && now.trim() != "0").then_some(())
        },
    )?;
    c.wait_healthy()?;
    // journald holds plain text: no colour escapes.
    let journal = c.must("journalctl --no-pager -o cat -u rackseed")?;
    assert!(journal.contains("rackseed ready"), "{journal}");
    assert!(
        !journal.contains('\u{1b}'),
        "escape sequences in the journal:\n{journal}"
    );
    // Removing the package stops the service and keeps the state.
    c.must("dpkg -r rackseed")?;
    assert!(!c.sh("curl -sf -m 2 http://127.0.0.1:8080/healthz")?.0);
    c.must("test -s /var/lib/rackseed/admin.token")?;
    Ok(())
}
