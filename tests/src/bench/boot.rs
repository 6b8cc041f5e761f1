//! Power-on to installer: a real QEMU node (BIOS, virtio NIC with its iPXE ROM, TCG)
//! from power-on until the Debian installer has loaded its preseed and runs its early
//! command: against rackseed (the node `provisioning`, until it is `installing`) and
//! against dnsmasq (DHCP + TFTP) with nginx serving the same iPXE script, installer
//! files, preseed and early script rackseed rendered for the node (until nginx logs
//! the early script's fetch).

use super::refs;
use super::{Better, Net, Opts, Table};
use crate::qemu::{Firmware, Vm, VmSpec};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};

const SERVERS: &[&str] = &["rackseed", "dnsmasq+nginx"];
const MAC: &str = "52:54:00:b0:07:01";
const HOST: &str = "bench-boot1";
/// Each boot's bound (TCG on a loaded 2-core machine).
const LIMIT: Duration = Duration::from_secs(600);

/// What rackseed serves the node, captured once so the reference serves the same.
struct Served {
    script: String,
    /// (path below the URL root, body) of the preseed and the early script.
    files: Vec<(String, Vec<u8>)>,
}

/// The path of `url` on the server (`http://192.0.2.1:8080/a/b?q` → `a/b`).
fn url_path(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    Some(path.split('?').next()?.to_string())
}

/// Starts rackseed with the node, takes the node's address on a lab host, and fetches
/// its iPXE script, preseed and early script as the node would.
fn capture() -> Result<Served> {
    let net = Net::new()?;
    let srv = crate::Server::start(&net.lab, &crate::LabConfig::lab())?;
    srv.add_node(MAC, HOST, "lab-single-disk", &[])?;
    let node = net.lab.node_client(MAC)?;
    let url = format!("http://192.0.2.1:8080/boot/{}.ipxe", MAC.replace(':', "-"));
    let (code, script) = node.curl(&[&url])?;
    if code != 200 {
        bail!("{url}: HTTP {code}");
    }
    let script = String::from_utf8(script)?;
    let (_, _, preseed_url) = super::pxe::script_urls(&script)?;
    let (code, preseed) = node.curl(&[&preseed_url])?;
    if code != 200 {
        bail!("{preseed_url}: HTTP {code}");
    }
    let text = String::from_utf8_lossy(&preseed).to_string();
    let early_url = text
        .lines()
        .find(|l| l.starts_with("d-i preseed/early_command"))
        .and_then(|l| l.split('\'').nth(1))
        .context("the preseed has no early_command URL")?
        .to_string();
    let (code, early) = node.curl(&[&early_url])?;
    if code != 200 {
        bail!("{early_url}: HTTP {code}");
    }
    let mut files = Vec::new();
    for (u, body) in [(&preseed_url, preseed), (&early_url, early)] {
        files.push((url_path(u).context("a URL without a path")?, body));
    }
    Ok(Served { script, files })
}

/// Writes nginx's tree: the installer files, the script and the captured files.
fn write_tree(root: &Path, tree: &refs::Tree, served: &Served) -> Result<()> {
    tree.link_into(root)?;
    std::fs::create_dir_all(root.join("boot"))?;
    std::fs::write(
        root.join(format!("boot/{}.ipxe", MAC.replace(':', "-"))),
        &served.script,
    )?;
    for (path, body) in &served.files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().context("a file at the root")?)?;
        std::fs::write(p, body)?;
    }
    Ok(())
}

/// Boots the VM on the lab's bridge and waits until `reached` says so; the seconds.
fn boot(net: &Net, mut reached: impl FnMut() -> bool) -> Result<f64> {
    let tap = net.lab.tap()?;
    let spec = VmSpec::pxe(HOST, Firmware::Bios, &tap, MAC);
    let started = Instant::now();
    let vm = Vm::start(net.srv(), &spec)?;
    while started.elapsed() < LIMIT {
        if reached() {
            return Ok(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "the node did not reach the installer's early command within {LIMIT:?}; console:\n{}",
        crate::tail(&vm.serial(), 30)
    )
}

/// The power-on to installer scenario.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    super::need("qemu-system-x86_64", "qemu-system-x86")?;
    super::need("dnsmasq", "dnsmasq-base")?;
    super::need("nginx", "nginx")?;
    let _q = crate::qemu::exclusive();
    let served = capture().context("capturing what rackseed serves the node")?;
    let tree = refs::Tree::new()?;
    let mut t = Table::new(
        "Power-on to installer: a QEMU BIOS node (TCG) until the installer runs its early command",
        "s",
        Better::Lower,
        SERVERS,
    );
    let case = "power-on → installing";
    for run in 0..opts.runs {
        for name in opts.order(SERVERS, run) {
            eprintln!(" run {}/{} {name}", run + 1, opts.runs);
            let net = Net::new()?;
            let secs = if name == "rackseed" {
                let srv = crate::Server::start(&net.lab, &crate::LabConfig::lab())?;
                srv.add_node(MAC, HOST, "lab-single-disk", &[])?;
                boot(&net, || {
                    srv.node_state(HOST).is_ok_and(|s| s == "installing")
                })?
            } else {
                let dir = tempfile::Builder::new()
                    .prefix("rackseed-bench-boot")
                    .tempdir()?;
                let root = dir.path().join("root");
                std::fs::create_dir_all(&root)?;
                std::fs::set_permissions(
                    dir.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
                write_tree(&root, &tree, &served)?;
                let access = dir.path().join("access.log");
                let _nginx = refs::nginx_with_log(&net, &root, Some(&access))?;
                let _dnsmasq = refs::dnsmasq_pxe(&net, &root, "http://192.0.2.1:8080")?;
                let early = served.files[1].0.clone();
                boot(&net, || {
                    std::fs::read_to_string(&access).is_ok_and(|l| l.contains(&early))
                })?
            };
            eprintln!("   {name}: {secs:.1} s");
            t.add(case, name, secs);
        }
    }
    Ok(vec![t])
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_paths_drop_the_host_and_query() {
        assert_eq!(
            super::url_path("http://192.0.2.1:8080/install/abc/preseed.cfg").as_deref(),
            Some("install/abc/preseed.cfg")
        );
        assert_eq!(
            super::url_path("http://h/installer/default/linux?mac=1").as_deref(),
            Some("installer/default/linux")
        );
        assert_eq!(super::url_path("nope"), None);
    }
}
