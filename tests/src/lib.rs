//! The rackseed test harness: network namespaces joined by a bridge, the real
//! `rackseed` binary started inside them, real clients, and QEMU nodes.
//!
//! Every namespace, process and VM is owned by a guard that removes or kills it on
//! drop; every wait is bounded. Addresses come from 192.0.2.0/24, 198.51.100.0/24 and
//! 203.0.113.0/24 only.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod bench;
pub mod bmc;
pub mod browser;
pub mod config;
pub mod qemu;

pub use config::LabConfig;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `rackseed` binary built next to the running test (same profile), or
/// `$RACKSEED_BIN`.
pub fn rackseed_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RACKSEED_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(3) {
        let cand = dir.join("rackseed");
        if cand.is_file() {
            return cand;
        }
    }
    panic!(
        "the rackseed binary is not built next to {}; run `cargo build -p rackseed` (the README's test command does)",
        exe.display()
    );
}

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

/// Runs a shell line, failing on a non-zero exit.
pub fn sh(line: &str) -> Result<String> {
    let out = run(Command::new("sh").arg("-c").arg(line))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Polls `f` every `every` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name (interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A network namespace, deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> …`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a shell line inside the namespace; fails on non-zero exit.
    pub fn sh(&self, line: &str) -> Result<String> {
        let out = run(self.cmd("sh").arg("-c").arg(line))?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Runs a shell line inside the namespace and returns (success, stdout+stderr).
    pub fn try_sh(&self, line: &str) -> (bool, String) {
        match self.cmd("sh").arg("-c").arg(line).output() {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (false, e.to_string()),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A provisioning network: a server namespace with bridge `br0` at 192.0.2.1/24, and
/// client namespaces or QEMU taps attached to it.
pub struct Lab {
    pub srv: Netns,
    pub clients: Vec<Netns>,
}

impl Lab {
    /// The server side of a new lab.
    pub fn new() -> Result<Lab> {
        let srv = Netns::new("rs")?;
        srv.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        srv.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"])?;
        srv.ip(&["link", "set", "br0", "up"])?;
        Ok(Lab {
            srv,
            clients: Vec::new(),
        })
    }

    /// A client namespace with a veth on `br0`, named `eth0` inside, with `mac`;
    /// optionally a static address (`192.0.2.50/24`).
    pub fn client(&mut self, mac: &str, addr: Option<&str>) -> Result<&Netns> {
        let ns = self.host(mac, addr)?;
        self.clients.push(ns);
        Ok(self.clients.last().expect("just pushed"))
    }

    /// Like [`Lab::client`], owned by the caller (removed from the LAN on drop).
    pub fn host(&self, mac: &str, addr: Option<&str>) -> Result<Netns> {
        let ns = Netns::new("rc")?;
        let outer = unique("v");
        self.srv.ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        self.srv
            .ip(&["link", "set", &outer, "master", "br0", "up"])?;
        ns.ip(&["link", "set", "eth0", "address", mac])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        if let Some(a) = addr {
            ns.ip(&["addr", "add", a, "dev", "eth0"])?;
        }
        Ok(ns)
    }

    /// A machine on the provisioning LAN that is the node with `mac` as rackseed knows
    /// it: a namespace whose `eth0` has `mac` and the address rackseed's DHCP leases to
    /// it (a real udhcpc exchange). Only such a machine gets a node's install script,
    /// preseed and scripts, as a real installer would. Dropping it removes it from the
    /// LAN (so a VM with the same MAC can boot afterwards).
    pub fn node_client(&self, mac: &str) -> Result<NodeClient> {
        self.leased_client(mac, "")
    }

    /// Like [`Lab::node_client`], asking for its lease as a BIOS PXE ROM does (option
    /// 60 `PXEClient:…`), so that an unknown MAC is recorded as a network-booting
    /// machine.
    pub fn pxe_client(&self, mac: &str) -> Result<NodeClient> {
        self.leased_client(mac, "-V PXEClient:Arch:00000:UNDI:002001")
    }

    fn leased_client(&self, mac: &str, udhcpc_args: &str) -> Result<NodeClient> {
        let ns = self.host(mac, None)?;
        // udhcpc's default script would rewrite the host's /etc/resolv.conf: take the
        // address from its output instead.
        let out = ns.sh(&format!(
            "udhcpc -f -q -n -t 8 -T 2 -i eth0 -s /bin/true {udhcpc_args} 2>&1"
        ))?;
        let ip = out
            .lines()
            .find_map(|l| l.split("lease of ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| anyhow::anyhow!("udhcpc as {mac} got no lease: {out}"))?
            .to_string();
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        Ok(NodeClient { ns, ip })
    }

    /// A tap device on `br0` in the server namespace, for a QEMU NIC.
    pub fn tap(&self) -> Result<String> {
        let name = unique("tap");
        self.srv.ip(&["tuntap", "add", &name, "mode", "tap"])?;
        self.srv
            .ip(&["link", "set", &name, "master", "br0", "up"])?;
        Ok(name)
    }
}

/// A node's machine on the lab's LAN (see [`Lab::node_client`]).
pub struct NodeClient {
    pub ns: Netns,
    /// The address rackseed leased to it.
    pub ip: String,
}

impl NodeClient {
    /// `curl` from the node's address; returns (HTTP status, body).
    pub fn curl(&self, args: &[&str]) -> Result<(u16, Vec<u8>)> {
        curl_in(&self.ns.name, args)
    }

    /// The node's install token, from the install script rackseed serves it.
    pub fn install_token(&self, mac: &str) -> Result<String> {
        let (code, script) = self.curl(&[&format!(
            "http://192.0.2.1:8080/boot/{}.ipxe",
            mac.replace(':', "-")
        )])?;
        let script = String::from_utf8_lossy(&script).to_string();
        script
            .split("/install/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no install URL in the script (HTTP {code}): {script}"))
    }
}

/// `curl` inside namespace `ns`; returns (HTTP status, body).
pub fn curl_in(ns: &str, args: &[&str]) -> Result<(u16, Vec<u8>)> {
    let out = run(Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-m",
            "30",
            "-w",
            "\n%{http_code}",
        ])
        .args(args))?;
    let mut body = out.stdout;
    let pos = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code: u16 = String::from_utf8_lossy(&body[pos + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(pos);
    Ok((code, body))
}

/// The admin API as a lab server's namespace reaches it (its default listener).
pub const ADMIN: &str = "http://127.0.0.1:8081";

/// Counter `rackseed_<name>` in a `/metrics` text (0 when absent).
pub fn metric_in(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rackseed_{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A running `rackseed serve` inside a lab's server namespace.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ns: String,
    pub log: PathBuf,
    pub token: String,
    /// The `--log` filter the server is started with.
    pub log_filter: String,
    /// `--log-format` when set.
    pub log_format: Option<String>,
    /// Environment variables the server is started with.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Server {
    /// Writes `config` into a fresh temp dir (rendered for it, see
    /// [`LabConfig::render_in`]), starts the server in `lab` and waits until `/healthz`
    /// answers.
    pub fn start(lab: &Lab, config: &LabConfig) -> Result<Server> {
        let mut s = Server::prepare(lab, config)?;
        s.spawn()?;
        Ok(s)
    }

    /// Like [`Server::start`] without starting: for steps that must run before (such
    /// as importing an installer image into the data directory).
    pub fn prepare(lab: &Lab, config: &LabConfig) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("rackseed-test").tempdir()?;
        let config_path = dir.path().join("rackseed.toml");
        fs::write(&config_path, config.render_in(dir.path()))
            .with_context(|| format!("cannot write the config ({})", config.layers()))?;
        Ok(Server {
            log: dir.path().join("rackseed.log"),
            config: config_path,
            ns: lab.srv.name.clone(),
            token: String::new(),
            log_filter: "rackseed=debug,info".into(),
            log_format: None,
            env: Vec::new(),
            dir,
            child: None,
        })
    }

    /// Starts the prepared server and waits until `/healthz` answers.
    pub fn spawn(&mut self) -> Result<()> {
        self.spawn_polling(Duration::from_millis(100)).map(|_| ())
    }

    /// Starts the prepared server, polls `/healthz` every `every` and returns how long
    /// it took to answer (start-up time, at the resolution of `every`).
    pub fn spawn_polling(&mut self, every: Duration) -> Result<Duration> {
        let started = Instant::now();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(rackseed_bin())
            .args(["--log", &self.log_filter]);
        if let Some(f) = &self.log_format {
            cmd.args(["--log-format", f]);
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start rackseed")?;
        self.child = Some(child);
        let ns = self.ns.clone();
        let log_path = self.log.clone();
        wait_for("rackseed /healthz", Duration::from_secs(30), every, || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow!(
                    "rackseed exited ({status}): {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                )));
            }
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "curl",
                    "-sf",
                    "-m",
                    "2",
                    "http://192.0.2.1:8080/healthz",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Ok(()))
        })??;
        let took = started.elapsed();
        self.token = fs::read_to_string(self.dir.path().join("data/admin.token"))?
            .trim()
            .to_string();
        Ok(took)
    }

    /// The server process id (`ip netns exec` execs the binary), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the binary, so the child pid is rackseed's.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the server to exit by itself and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let c = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("the server is not running"))?;
        let status = wait_for(
            "rackseed to exit",
            timeout,
            Duration::from_millis(100),
            || c.try_wait().ok().flatten(),
        )?;
        self.child = None;
        Ok(status)
    }

    /// Kills the server at once (SIGKILL), as a power cut or the OOM killer would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts again with the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed or closed) and starts
    /// it again on the same data directory.
    pub fn crash_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the rackseed CLI in the server namespace against this server.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(rackseed_bin())
            .args(args)
            .env("RACKSEED_URL", ADMIN)
            .env("RACKSEED_TOKEN", &self.token))?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Runs the rackseed CLI like [`Server::cli`] with `input` on its standard input;
    /// returns (exit success, stdout and stderr), failing only if it cannot run.
    pub fn cli_input(&self, args: &[&str], input: &str) -> Result<(bool, String)> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(rackseed_bin())
            .args(args)
            .env("RACKSEED_URL", ADMIN)
            .env("RACKSEED_TOKEN", &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run rackseed")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// `curl` inside the server namespace; returns (HTTP status, body).
    pub fn curl(&self, args: &[&str]) -> Result<(u16, Vec<u8>)> {
        curl_in(&self.ns, args)
    }

    /// An admin API GET as JSON.
    pub fn api(&self, path: &str) -> Result<Value> {
        let auth = format!("Authorization: Bearer {}", self.token);
        let (code, body) = self.curl(&["-H", &auth, &format!("{ADMIN}{path}")])?;
        if code != 200 {
            bail!(
                "GET {path}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// An admin API POST with a JSON body; returns (status, JSON).
    pub fn api_post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let auth = format!("Authorization: Bearer {}", self.token);
        let data = body.to_string();
        let (code, out) = self.curl(&[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            &data,
            &format!("{ADMIN}{path}"),
        ])?;
        Ok((code, serde_json::from_slice(&out).unwrap_or(Value::Null)))
    }

    /// Adds a node through the CLI.
    pub fn add_node(&self, mac: &str, hostname: &str, profile: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec![
            "node",
            "add",
            "--mac",
            mac,
            "--hostname",
            hostname,
            "--profile",
            profile,
        ];
        args.extend_from_slice(extra);
        self.cli(&args).map(|_| ())
    }

    /// A node's state.
    pub fn node_state(&self, key: &str) -> Result<String> {
        Ok(self.api(&format!("/api/nodes/{key}"))?["state"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// A node's timeline as (kind, message) pairs.
    pub fn timeline(&self, key: &str) -> Result<Vec<(String, String)>> {
        let v = self.api(&format!("/api/nodes/{key}/events?limit=5000"))?;
        Ok(v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// Waits until a node is in `state` (polling the API), failing early if it fails.
    pub fn wait_state(&self, key: &str, state: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("node {key} to be {state}"),
            timeout,
            Duration::from_secs(1),
            || match self.node_state(key) {
                Ok(s) if s == state => Some(Ok(())),
                Ok(s) if s == "failed" && state != "failed" => {
                    let reason = self
                        .api(&format!("/api/nodes/{key}"))
                        .map(|v| v["state_reason"].to_string())
                        .unwrap_or_default();
                    Some(Err(anyhow!("node {key} failed: {reason}")))
                }
                _ => None,
            },
        )?
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- rackseed log ({}) ----\n{}",
                self.log.display(),
                tail(&self.log_text(), 200)
            );
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Asserts that `kinds` occur in `timeline` in this order (other events may sit between).
pub fn assert_in_order(timeline: &[(String, String)], kinds: &[&str]) {
    let mut pos = 0;
    for k in kinds {
        match timeline[pos..].iter().position(|(kind, _)| kind == k) {
            Some(i) => pos += i + 1,
            None => panic!(
                "timeline lacks `{k}` after position {pos}; expected order {kinds:?}; timeline:\n{}",
                timeline
                    .iter()
                    .map(|(k, m)| format!("  {k:<14} {m}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

/// Writes `text` to a new file in `dir`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    let mut f = fs::File::create(&p)?;
    f.write_all(text.as_bytes())?;
    Ok(p)
}

static NODE_IMAGE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// The first-boot node image (Debian 12, RAID1 + XFS root, ZFS), built once by
/// `tests/node-image/build.sh` and cached by the hash of its inputs.
pub fn node_image() -> Result<PathBuf> {
    let mut guard = NODE_IMAGE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let started = Instant::now();
    let script = workspace().join("tests/node-image/build.sh");
    let out = Command::new("timeout")
        .args(["--kill-after=30", "2400"])
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !path.join("DONE").is_file() {
        bail!("{} printed no image directory: {stdout}", script.display());
    }
    eprintln!(
        "node image {} ready in {:.0?}",
        path.display(),
        started.elapsed()
    );
    *guard = Some(path.clone());
    Ok(path)
}

/// A first-boot test node: the node image's two RAID1 root disks (copy-on-write
/// overlays), `data_disks` blank 1 GiB disks, one tap per MAC, direct kernel boot with
/// `rackseed.preseed=<url>` so the image's shim runs the preseed's late_command.
pub fn node_vm(
    lab: &Lab,
    image: &Path,
    name: &str,
    macs: &[&str],
    data_disks: usize,
    preseed_url: &str,
) -> Result<(qemu::Vm, tempfile::TempDir)> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("node-{name}-"))
        .tempdir_in("/var/tmp")?;
    let mut disks = Vec::new();
    for (i, root) in ["root-a.qcow2", "root-b.qcow2"].iter().enumerate() {
        let p = dir.path().join(format!("root{i}.qcow2"));
        qemu::qcow2(&p, "", Some(&image.join(root)))?;
        disks.push(qemu::Disk::new(
            p,
            qemu::DiskBus::Virtio,
            &format!("rsdisk{i}"),
        ));
    }
    for i in 0..data_disks {
        let p = dir.path().join(format!("data{i}.qcow2"));
        qemu::qcow2(&p, "1G", None)?;
        disks.push(qemu::Disk::new(
            p,
            qemu::DiskBus::Virtio,
            &format!("rsdisk{}", i + 2),
        ));
    }
    let mut nics = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        nics.push(qemu::Nic {
            tap: lab.tap()?,
            mac: mac.to_string(),
            model: qemu::NicModel::Virtio,
            boot: i == 0,
        });
    }
    let cmdline = fs::read_to_string(image.join("kernel-cmdline"))?;
    let spec = qemu::VmSpec {
        name: name.to_string(),
        memory_mb: 1536,
        cpus: 1,
        firmware: qemu::Firmware::Bios,
        nics,
        disks,
        kernel: Some((
            image.join("vmlinuz"),
            image.join("initrd.img"),
            format!("{} rackseed.preseed={preseed_url}", cmdline.trim()),
        )),
        uuid: None,
        serial: None,
        vars: None,
        ipv4_pxe_only: false,
    };
    Ok((qemu::Vm::start(&lab.srv, &spec)?, dir))
}
