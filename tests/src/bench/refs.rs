//! The reference servers (dnsmasq, Kea, tftpd-hpa, atftpd, nginx), each started in the
//! foreground inside a bench namespace with its own config, data and logs in a temp
//! directory. Nothing uses the system's instances or their config files. Settings are
//! Debian's defaults except where a namespace needs a path, an address or a user, and
//! the few tunings named in BENCHMARKS.md (dnsmasq `no-ping`, nginx `access_log off`).

use super::{INITRD, IPXE, KERNEL, Net, Proc, SERVER_IP};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A reference server and its temp directory.
pub struct RefServer {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

/// The files every server serves, under the same names: the iPXE binaries at the top,
/// `installer/{linux,initrd.gz}` (TFTP names) and `installer/default/{linux,initrd.gz}`
/// (rackseed's HTTP names), plus per-node files a scenario adds.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    /// Copies the files into a new world-readable directory (dnsmasq reads as any user).
    pub fn new() -> Result<Tree> {
        let dir = tempfile::Builder::new()
            .prefix("rackseed-bench-tree")
            .tempdir()?;
        let root = dir.path();
        chmod(root, 0o755)?;
        for (name, src) in IPXE {
            std::fs::copy(src, root.join(name))
                .with_context(|| format!("cannot copy {src} (install the `ipxe` package)"))?;
        }
        for sub in ["installer", "installer/default"] {
            std::fs::create_dir_all(root.join(sub))?;
            chmod(&root.join(sub), 0o755)?;
        }
        std::fs::copy(KERNEL, root.join("installer/linux")).with_context(|| {
            format!("cannot copy {KERNEL} (install `debian-installer-12-netboot-amd64`)")
        })?;
        std::fs::copy(INITRD, root.join("installer/initrd.gz"))
            .with_context(|| format!("cannot copy {INITRD}"))?;
        std::fs::hard_link(
            root.join("installer/linux"),
            root.join("installer/default/linux"),
        )?;
        std::fs::hard_link(
            root.join("installer/initrd.gz"),
            root.join("installer/default/initrd.gz"),
        )?;
        Ok(Tree { dir })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Hard-links the iPXE binaries and `installer/default/{linux,initrd.gz}` into
    /// `root`, the tree an HTTP reference serves.
    pub fn link_into(&self, root: &Path) -> Result<()> {
        for (name, _) in IPXE {
            std::fs::hard_link(self.root().join(name), root.join(name))?;
        }
        std::fs::create_dir_all(root.join("installer/default"))?;
        for f in ["linux", "initrd.gz"] {
            let at = Path::new("installer/default").join(f);
            std::fs::hard_link(self.root().join(&at), root.join(&at))?;
        }
        Ok(())
    }
}

fn chmod(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix(prefix).tempdir()?;
    chmod(d.path(), 0o755)?;
    Ok(d)
}

/// tftpd-hpa's `in.tftpd`: on PATH, or unpacked by `./x bench` into
/// `target/bench-tools` (the package conflicts with atftpd, so it is not installed).
pub fn tftpd_hpa() -> Result<PathBuf> {
    // atftpd installs its own /usr/sbin/in.tftpd, so ask each candidate who it is.
    for p in [
        crate::workspace().join("target/bench-tools/tftpd-hpa/usr/sbin/in.tftpd"),
        PathBuf::from("/usr/sbin/in.tftpd"),
    ] {
        if p.is_file() && super::version_of(&p.display().to_string(), &["-V"]).contains("tftp-hpa")
        {
            return Ok(p);
        }
    }
    bail!(
        "tftpd-hpa's in.tftpd is missing: `./x bench` unpacks it into target/bench-tools (apt-get download tftpd-hpa)"
    )
}

/// Waits until a UDP or TCP port is bound in the server namespace (`ss`), bounded.
pub fn wait_port(net: &Net, proto: &str, port: u16, proc: &mut Proc, log: &Path) -> Result<()> {
    let flag = if proto == "tcp" { "-ltn" } else { "-lun" };
    let started = Instant::now();
    loop {
        proc.check_running(log)?;
        let (_, out) = net.srv().try_sh(&format!("ss -H {flag} 'sport = :{port}'"));
        if !out.trim().is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{} did not bind {proto} port {port} in 20 s", proc.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// dnsmasq as a DHCP server for relayed clients in 198.51.100.0/24 (perfdhcp), with a
/// lease file.
pub fn dnsmasq_dhcp(net: &Net) -> Result<RefServer> {
    let dir = tempdir("bench-dnsmasq")?;
    let d = dir.path();
    let log = d.join("dnsmasq.log");
    let mut cmd = net.srv().cmd("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--interface=br0",
        "--user=root",
        "--dhcp-authoritative",
        "--no-ping",
        "--dhcp-range=198.51.100.10,198.51.100.250,255.255.255.0,1h",
        "--dhcp-option=3,198.51.100.1",
        "--dhcp-option=6,192.0.2.1",
        "--dhcp-boot=undionly.kpxe,,192.0.2.1",
    ])
    .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
    .arg(format!("--pid-file={}", d.join("pid").display()));
    let mut proc = Proc::spawn("dnsmasq", &mut cmd, &log)?;
    wait_port(net, "udp", 67, &mut proc, &log)?;
    Ok(RefServer { proc, dir, log })
}

/// Kea DHCPv4 with a persisted memfile lease database, for relayed clients in
/// 198.51.100.0/24. `threads` > 0 turns on Kea's multi-threading with that pool size.
pub fn kea(net: &Net, threads: usize) -> Result<RefServer> {
    let dir = tempdir("bench-kea")?;
    let d = dir.path();
    let log = d.join("kea.out");
    let mt = if threads > 0 {
        format!(
            r#""multi-threading": {{ "enable-multi-threading": true, "thread-pool-size": {threads}, "packet-queue-size": 64 }},"#
        )
    } else {
        r#""multi-threading": { "enable-multi-threading": false },"#.to_string()
    };
    let conf = format!(
        r#"{{ "Dhcp4": {{
  "interfaces-config": {{ "interfaces": [ "br0" ], "dhcp-socket-type": "udp" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 3600 }},
  {mt}
  "valid-lifetime": 3600,
  "renew-timer": 1800,
  "rebind-timer": 3150,
  "subnet4": [
    {{ "id": 1, "subnet": "198.51.100.0/24",
      "pools": [ {{ "pool": "198.51.100.10 - 198.51.100.250" }} ],
      "next-server": "192.0.2.1", "boot-file-name": "undionly.kpxe",
      "option-data": [ {{ "name": "routers", "data": "198.51.100.1" }},
                       {{ "name": "domain-name-servers", "data": "192.0.2.1" }} ] }}
  ],
  "loggers": [ {{ "name": "kea-dhcp4", "output_options": [ {{ "output": "{klog}" }} ], "severity": "WARN" }} ]
}} }}"#,
        leases = d.join("leases.csv").display(),
        klog = d.join("kea.log").display(),
    );
    let cfg = d.join("kea-dhcp4.conf");
    std::fs::write(&cfg, conf)?;
    let mut cmd = net.srv().cmd("kea-dhcp4");
    cmd.arg("-c")
        .arg(&cfg)
        .env("KEA_PIDFILE_DIR", d)
        .env("KEA_LOCKFILE_DIR", d);
    let mut proc = Proc::spawn("kea-dhcp4", &mut cmd, &log)?;
    wait_port(net, "udp", 67, &mut proc, &log)?;
    Ok(RefServer { proc, dir, log })
}

/// tftpd-hpa serving `root` (chrooted, as root so it can read the bench's files).
pub fn tftpd(net: &Net, root: &Path) -> Result<RefServer> {
    let dir = tempdir("bench-tftpd")?;
    let log = dir.path().join("tftpd.log");
    let mut cmd = net.srv().cmd(tftpd_hpa()?);
    cmd.args([
        "-L",
        "-l",
        "-a",
        &format!("{SERVER_IP}:69"),
        "-s",
        "-u",
        "root",
    ])
    .arg(root);
    let mut proc = Proc::spawn("tftpd-hpa", &mut cmd, &log)?;
    wait_port(net, "udp", 69, &mut proc, &log)?;
    Ok(RefServer { proc, dir, log })
}

/// atftpd in standalone mode (its default thread limit of 100 kept).
pub fn atftpd(net: &Net, root: &Path) -> Result<RefServer> {
    let dir = tempdir("bench-atftpd")?;
    let d = dir.path();
    let log = d.join("atftpd.out");
    let mut cmd = net.srv().cmd("atftpd");
    cmd.args([
        "--daemon",
        "--no-fork",
        "--port",
        "69",
        "--bind-address",
        SERVER_IP,
        "--user",
        "root",
        "--group",
        "root",
        "--verbose=1",
    ])
    .arg(format!("--logfile={}", d.join("atftpd.log").display()))
    .arg(format!("--pidfile={}", d.join("pid").display()))
    .arg(root);
    let mut proc = Proc::spawn("atftpd", &mut cmd, &log)?;
    wait_port(net, "udp", 69, &mut proc, &log)?;
    Ok(RefServer { proc, dir, log })
}

/// dnsmasq as a TFTP server only (its default session limit of 50 kept).
pub fn dnsmasq_tftp(net: &Net, root: &Path) -> Result<RefServer> {
    dnsmasq_with(net, root, &[])
}

/// dnsmasq for the boot storm: DHCP on br0 (192.0.2.20–250), PXE firmware gets
/// undionly.kpxe over TFTP, iPXE (user class `iPXE`) gets its per-MAC script from nginx.
pub fn dnsmasq_pxe(net: &Net, root: &Path, http_base: &str) -> Result<RefServer> {
    dnsmasq_with(
        net,
        root,
        &[
            "--dhcp-authoritative".into(),
            "--no-ping".into(),
            "--dhcp-range=192.0.2.20,192.0.2.250,255.255.255.0,1h".into(),
            "--dhcp-option=3,192.0.2.1".into(),
            "--dhcp-option=6,192.0.2.1".into(),
            "--dhcp-userclass=set:ipxe,iPXE".into(),
            "--dhcp-boot=tag:!ipxe,undionly.kpxe,,192.0.2.1".into(),
            format!("--dhcp-boot=tag:ipxe,{http_base}/boot/${{mac:hexhyp}}.ipxe"),
        ],
    )
}

fn dnsmasq_with(net: &Net, root: &Path, extra: &[String]) -> Result<RefServer> {
    let dir = tempdir("bench-dnsmasq")?;
    let d = dir.path();
    let log = d.join("dnsmasq.log");
    let mut cmd = net.srv().cmd("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--interface=br0",
        "--user=root",
        "--enable-tftp",
    ])
    .arg(format!("--tftp-root={}", root.display()))
    .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
    .arg(format!("--pid-file={}", d.join("pid").display()))
    .args(extra);
    let mut proc = Proc::spawn("dnsmasq", &mut cmd, &log)?;
    wait_port(net, "udp", 69, &mut proc, &log)?;
    Ok(RefServer { proc, dir, log })
}

/// nginx with sendfile serving `root` on 192.0.2.1:8080, access log off.
pub fn nginx(net: &Net, root: &Path) -> Result<RefServer> {
    nginx_with_log(net, root, None)
}

/// [`nginx`], writing its access log to `access` when given.
pub fn nginx_with_log(net: &Net, root: &Path, access: Option<&Path>) -> Result<RefServer> {
    let dir = tempdir("bench-nginx")?;
    let d = dir.path();
    let log = d.join("nginx.out");
    let p = |n: &str| d.join(n).display().to_string();
    let conf = format!(
        "user root;\nworker_processes auto;\npid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n  access_log {access};\n  default_type application/octet-stream;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  server {{\n    listen {SERVER_IP}:8080;\n    root {root};\n  }}\n}}\n",
        pid = p("nginx.pid"),
        err = p("error.log"),
        t = d.display(),
        root = root.display(),
        access = access.map_or("off".to_string(), |a| a.display().to_string()),
    );
    let cfg = d.join("nginx.conf");
    std::fs::write(&cfg, conf)?;
    let mut cmd = net.srv().cmd("nginx");
    cmd.arg("-c")
        .arg(&cfg)
        .arg("-p")
        .arg(d)
        .args(["-g", "daemon off;"]);
    let mut proc = Proc::spawn("nginx", &mut cmd, &log)?;
    wait_port(net, "tcp", 8080, &mut proc, &log)?;
    Ok(RefServer { proc, dir, log })
}

/// Runs a shell line in the client namespace with a hard time limit; returns
/// (success, output).
pub fn client_sh(net: &Net, line: &str, limit: Duration) -> (bool, String) {
    let secs = limit.as_secs().max(1);
    net.client().try_sh(&format!(
        "timeout --kill-after=5 {secs} sh -c '{}'",
        line.replace('\'', r"'\''")
    ))
}

/// Runs a command in the client namespace and returns its stdout, failing on error.
pub fn client_out(net: &Net, args: &[&str]) -> Result<String> {
    let out = crate::run(net.client().cmd(args[0]).args(&args[1..]))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `Command` for a program in the client namespace.
pub fn client_cmd(net: &Net, program: &str) -> Command {
    net.client().cmd(program)
}
