//! TFTP: the 40 MB installer initrd at blksize 1432/1468 and windowsize 1/8/32 (atftp)
//! and at blksize 1432/1468 with curl (lockstep); the iPXE binaries as a PXE ROM fetches
//! them (curl, blksize 1432, lockstep); a storm of concurrent clients fetching the iPXE
//! binary and one fetching the initrd, counting completed transfers.
//!
//! Against tftpd-hpa, atftpd and dnsmasq, all serving a copy of the same files under the
//! same names. A transfer counts only if the file arrived whole (size checked).

use super::refs::{self, RefServer, Tree};
use super::{Better, INITRD, IPXE, Net, Opts, SERVER_IP, Table};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SERVERS: &[&str] = &["rackseed", "tftpd-hpa", "atftpd", "dnsmasq"];

/// A running server, kept until it is dropped.
pub enum Running {
    Rackseed(crate::Server),
    Ref(RefServer),
}

fn start(net: &Net, name: &str, tree: &Tree) -> Result<Running> {
    Ok(match name {
        "rackseed" => Running::Rackseed(super::start_rackseed(
            net,
            &super::rackseed_config(),
            |_| Ok(()),
        )?),
        "tftpd-hpa" => Running::Ref(refs::tftpd(net, tree.root())?),
        "atftpd" => Running::Ref(refs::atftpd(net, tree.root())?),
        "dnsmasq" => Running::Ref(refs::dnsmasq_tftp(net, tree.root())?),
        other => bail!("unknown TFTP server {other}"),
    })
}

/// A scratch directory in /dev/shm for downloaded files (memory, not disk).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let p = PathBuf::from(format!(
            "/dev/shm/rackseed-bench-{}-{}",
            std::process::id(),
            crate::unique("t")
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
    fn file(&self, n: usize) -> PathBuf {
        self.0.join(format!("f{n}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TFTP client invocation: atftp with options, or curl with a block size.
#[derive(Clone, Debug)]
pub enum Client {
    Atftp { blksize: u16, window: u16 },
    Curl { blksize: u16 },
}

impl Client {
    fn command(&self, net: &Net, remote: &str, local: &Path) -> std::process::Command {
        match self {
            Client::Atftp { blksize, window } => {
                let mut c = refs::client_cmd(net, "atftp");
                c.args(["--option", &format!("blksize {blksize}")]);
                if *window > 1 {
                    c.args(["--option", &format!("windowsize {window}")]);
                }
                c.args(["--tftp-timeout", "1", "-g", "-r", remote, "-l"])
                    .arg(local)
                    .arg(SERVER_IP);
                c
            }
            Client::Curl { blksize } => {
                let mut c = refs::client_cmd(net, "curl");
                c.args([
                    "-s",
                    "-m",
                    "300",
                    "--tftp-blksize",
                    &blksize.to_string(),
                    "-o",
                ])
                .arg(local)
                .arg(format!("tftp://{SERVER_IP}/{remote}"));
                c
            }
        }
    }
}

/// Fetches `remote` once; returns the seconds it took, or `None` if it did not arrive
/// whole within `limit`.
fn fetch(
    net: &Net,
    client: &Client,
    remote: &str,
    size: u64,
    scratch: &Scratch,
    limit: Duration,
) -> Result<Option<f64>> {
    let local = scratch.file(0);
    let _ = std::fs::remove_file(&local);
    let started = Instant::now();
    let mut child = client
        .command(net, remote, &local)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the TFTP client")?;
    let ok = wait_child(&mut child, limit);
    let secs = started.elapsed().as_secs_f64();
    let got = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&local);
    Ok((ok && got == size).then_some(secs))
}

fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The result of a storm: completed transfers and the time the last one took.
pub struct Storm {
    pub completed: usize,
    pub last_secs: f64,
}

/// `n` concurrent clients fetching `remote`, each bounded by `limit`.
fn storm(
    net: &Net,
    client: &Client,
    remote: &str,
    size: u64,
    n: usize,
    limit: Duration,
) -> Result<Storm> {
    let scratch = Scratch::new()?;
    let started = Instant::now();
    let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
    for i in 0..n {
        let c = client
            .command(net, remote, &scratch.file(i))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a TFTP client")?;
        children.push(Some(c));
    }
    let mut ok = vec![false; n];
    let mut last = 0.0f64;
    while children.iter().any(Option::is_some) && started.elapsed() < limit {
        for (i, slot) in children.iter_mut().enumerate() {
            if let Some(c) = slot
                && let Ok(Some(st)) = c.try_wait()
            {
                let got = std::fs::metadata(scratch.file(i))
                    .map(|m| m.len())
                    .unwrap_or(0);
                ok[i] = st.success() && got == size;
                if ok[i] {
                    last = started.elapsed().as_secs_f64();
                }
                let _ = std::fs::remove_file(scratch.file(i));
                *slot = None;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in children.iter_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(Storm {
        completed: ok.iter().filter(|x| **x).count(),
        last_secs: last,
    })
}

/// The TFTP scenario.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    super::need("atftp", "atftp")?;
    super::need("atftpd", "atftpd")?;
    super::need("curl", "curl")?;
    refs::tftpd_hpa()?;
    let tree = Tree::new()?;
    let initrd_size = std::fs::metadata(INITRD)?.len();
    let mb = initrd_size as f64 / 1e6;
    let cases: Vec<(String, Client)> = if opts.quick {
        vec![
            (
                "atftp blksize 1468, windowsize 8".into(),
                Client::Atftp {
                    blksize: 1468,
                    window: 8,
                },
            ),
            ("curl blksize 1432".into(), Client::Curl { blksize: 1432 }),
        ]
    } else {
        let mut v = Vec::new();
        for b in [1432u16, 1468] {
            for w in [1u16, 8, 32] {
                v.push((
                    format!("atftp blksize {b}, windowsize {w}"),
                    Client::Atftp {
                        blksize: b,
                        window: w,
                    },
                ));
            }
        }
        for b in [1432u16, 1468] {
            v.push((format!("curl blksize {b}"), Client::Curl { blksize: b }));
        }
        v
    };
    let (ipxe_n, per_case, storm_small, storm_big, limit) = if opts.quick {
        (2, 1, 20, 10, Duration::from_secs(30))
    } else {
        (5, 3, 200, 100, Duration::from_secs(120))
    };
    let mut thr = Table::new(
        &format!("TFTP: initrd.gz ({mb:.1} MB), one client"),
        "MB/s",
        Better::Higher,
        SERVERS,
    );
    let mut ipxe = Table::new(
        "TFTP: iPXE binaries as a PXE ROM fetches them (curl, blksize 1432, lockstep)",
        "ms per fetch",
        Better::Lower,
        SERVERS,
    );
    let mut storms = Table::new(
        &format!(
            "TFTP storms: transfers completed within {}s",
            limit.as_secs()
        ),
        "completed transfers",
        Better::Higher,
        SERVERS,
    );
    let mut storm_time = Table::new(
        "TFTP storms: time until every transfer completed (the limit if some did not)",
        "s",
        Better::Lower,
        SERVERS,
    );
    let storm_kpxe = format!("{storm_small} clients × undionly.kpxe (atftp blksize 1432)");
    let storm_initrd = format!("{storm_big} clients × initrd.gz (atftp blksize 1432)");
    let scratch = Scratch::new()?;
    let kpxe_size = std::fs::metadata(IPXE[0].1)?.len();
    for run in 0..opts.runs {
        // Every server is up in its own namespaces for the whole run (fresh each run, so
        // sessions a storm left behind do not carry over); each case alternates between
        // them, the order rotating per run, so load from elsewhere hits all alike.
        let mut up = Vec::new();
        for name in opts.order(SERVERS, 0) {
            let net = Net::new()?;
            let server = start(&net, name, &tree)?;
            up.push((name, net, server));
        }
        let mut order: Vec<usize> = (0..up.len()).collect();
        order.rotate_left(run % up.len().max(1));
        eprintln!(" run {}/{}", run + 1, opts.runs);
        for (case, client) in &cases {
            for &i in &order {
                let (name, net, _) = &up[i];
                // Lockstep speed depends on whether client and server share a core, so
                // each run takes the median of a few transfers.
                let mut speeds = Vec::new();
                for _ in 0..per_case {
                    let took = fetch(
                        net,
                        client,
                        "installer/initrd.gz",
                        initrd_size,
                        &scratch,
                        limit,
                    )?;
                    speeds.push(took.map_or(0.0, |s| mb / s));
                }
                let m = super::median(&speeds).unwrap_or(0.0);
                eprintln!("   {name}: {case}: {m:.1} MB/s ({speeds:.1?})");
                thr.add(case, name, m);
            }
        }
        for (file, path) in IPXE {
            let size = std::fs::metadata(path)?.len();
            for &i in &order {
                let (name, net, _) = &up[i];
                let mut times = Vec::new();
                for _ in 0..ipxe_n {
                    if let Some(s) = fetch(
                        net,
                        &Client::Curl { blksize: 1432 },
                        file,
                        size,
                        &scratch,
                        Duration::from_secs(30),
                    )? {
                        times.push(s * 1000.0);
                    }
                }
                if let Some(m) = super::median(&times) {
                    ipxe.add(&format!("{file} ({} kB)", size / 1000), name, m);
                }
            }
        }
        for (label, remote, size, n) in [
            (&storm_kpxe, "undionly.kpxe", kpxe_size, storm_small),
            (&storm_initrd, "installer/initrd.gz", initrd_size, storm_big),
        ] {
            for &i in &order {
                let (name, net, _) = &up[i];
                let s = storm(
                    net,
                    &Client::Atftp {
                        blksize: 1432,
                        window: 1,
                    },
                    remote,
                    size,
                    n,
                    limit,
                )?;
                eprintln!(
                    "   {name}: {label}: {} done, last at {:.1}s",
                    s.completed, s.last_secs
                );
                storms.add(label, name, s.completed as f64);
                // A storm that did not complete counts as taking the whole limit.
                let secs = if s.completed == n {
                    s.last_secs
                } else {
                    limit.as_secs_f64()
                };
                storm_time.add(label, name, secs);
            }
        }
    }
    Ok(vec![thr, ipxe, storms, storm_time])
}
