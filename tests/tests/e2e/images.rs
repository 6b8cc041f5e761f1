//! Installer images, through the real `rackseed image …` commands:
//!
//! - against a fixture mirror served in-process on 127.0.0.1 and signed with a key made
//!   by real `gpg` for the test: a good image is stored; a bad signature, a `Release`
//!   whose SHA256SUMS hash does not match, a file that does not match SHA256SUMS, a
//!   truncated download and a mirror that disappears mid-download are each refused and
//!   leave the store exactly as it was (every file and its hash compared); interrupted
//!   downloads resume with `Range`; the upstream proxy is used; gc keeps what nodes and
//!   the config reference;
//! - against the real Debian archive (the mirror of this host's APT sources): the local
//!   installer package verifies through the signed `InRelease` → `SHA256SUMS` chain, and
//!   `fetch` verifies the chain, then reports that the netboot files are not served;
//! - offline: importing the local package works with no network, recorded as unverified.
//!
//! The real-archive tests fail, not skip, when the archive cannot be reached.

use anyhow::{Context, Result, bail};
use rackseed::images::cpio::newc_archive;
use rackseed::images::sha256_hex;
use rackseed_tests::{Lab, LabConfig, Server, rackseed_bin};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PACKAGE_DIR: &str = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64";
const PACKAGE: &str = "debian-installer-12-netboot-amd64";
const IMAGES: &str = "dists/bookworm/main/installer-amd64/current/images";
const NETBOOT: &str = "netboot/debian-installer/amd64";
const MIRROR_KERNEL: &str = "6.1.0-50-amd64";

// ---------- a fixture HTTP mirror ----------

/// What the fixture mirror does wrong for one path.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Sends headers for the whole file but closes the connection at this byte.
    Truncate(u64),
    /// Sends up to this byte, then closes every connection and stops listening.
    Vanish(u64),
}

#[derive(Default)]
struct MirrorState {
    faults: HashMap<String, Fault>,
    /// Request targets as received, with their `Range` header.
    requests: Vec<(String, Option<String>)>,
    gone: bool,
}

/// A static HTTP/1.1 file server over `root` on 127.0.0.1 with injectable faults. It
/// also accepts proxy requests (absolute-form targets).
struct Mirror {
    addr: SocketAddr,
    state: Arc<Mutex<MirrorState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Mirror {
    fn start(root: &Path) -> Result<Mirror> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(MirrorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, root) = (state.clone(), stop.clone(), root.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !sp.load(Ordering::SeqCst) && !st.lock().expect("mirror state").gone {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (st, root) = (st.clone(), root.clone());
                        conns.push(std::thread::spawn(move || {
                            let _ = serve_one(sock, &root, &st);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(Mirror {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        format!("http://{}/debian", self.addr)
    }

    fn fault(&self, path_suffix: &str, f: Fault) {
        self.state
            .lock()
            .expect("mirror state")
            .faults
            .insert(path_suffix.into(), f);
    }

    fn clear_faults(&self) {
        self.state.lock().expect("mirror state").faults.clear();
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().expect("mirror state").requests.clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(sock: TcpStream, root: &Path, state: &Mutex<MirrorState>) -> Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => target.clone(),
    };
    let fault = {
        let mut s = state.lock().expect("mirror state");
        s.requests.push((target.clone(), range.clone()));
        s.faults
            .iter()
            .find(|(k, _)| path.ends_with(k.as_str()))
            .map(|(_, f)| *f)
    };
    let mut out = sock;
    let file = root.join(path.trim_start_matches('/'));
    let Ok(body) = std::fs::read(&file) else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let len = body.len() as u64;
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<u64>().ok());
    let start = match start {
        Some(s) if s >= len => {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(s) => {
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - s
            )?;
            s
        }
        None => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            0
        }
    };
    let end = match fault {
        Some(Fault::Truncate(at) | Fault::Vanish(at)) => at.clamp(start, len),
        None => len,
    };
    out.write_all(&body[start as usize..end as usize])?;
    out.flush()?;
    if let Some(Fault::Vanish(_)) = fault {
        state.lock().expect("mirror state").gone = true;
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
    Ok(())
}

// ---------- a test signing key ----------

/// A GnuPG home with one fresh ed25519 signing key; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
    fingerprint: String,
}

impl Gpg {
    fn new(uid: &str) -> Result<Gpg> {
        let home = tempfile::Builder::new().prefix("rsgpg").tempdir()?;
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let mut g = Gpg {
            home,
            fingerprint: String::new(),
        };
        g.gpg(&["--quick-gen-key", uid, "ed25519", "sign", "never"])?;
        let listing = g.gpg(&["--with-colons", "--list-keys"])?;
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .context("gpg listed no fingerprint")?;
        g.fingerprint = fingerprint;
        Ok(g)
    }

    fn gpg(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .context("gpg is needed for the image tests (apt-get install gpg)")?;
        if !out.status.success() {
            bail!("gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sign(&self, release: &Path) -> Result<()> {
        let dir = release.parent().context("release has a parent")?;
        let (r, inr, gpg) = (
            release.display().to_string(),
            dir.join("InRelease"),
            dir.join("Release.gpg"),
        );
        self.gpg(&[
            "--digest-algo",
            "SHA256",
            "--clearsign",
            "-o",
            &inr.display().to_string(),
            &r,
        ])?;
        self.gpg(&[
            "--digest-algo",
            "SHA256",
            "--armor",
            "--detach-sign",
            "-o",
            &gpg.display().to_string(),
            &r,
        ])?;
        Ok(())
    }

    fn export(&self, to: &Path) -> Result<()> {
        self.gpg(&["--export", "-o", &to.display().to_string()])?;
        Ok(())
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .status();
    }
}

// ---------- fixtures ----------

/// Deterministic filler bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip to memory");
    gz.finish().expect("gzip to memory")
}

/// An installer initrd: two gzip members, the second holding `lib/modules/<kernel>`
/// and incompressible filler so downloads take several reads.
fn initrd(kernel: &str) -> Vec<u8> {
    let filler = noise(600_000, 7);
    let mut out = gzip(&newc_archive(&[
        (".", 0o040755, b""),
        ("init", 0o100755, b"#!/bin/sh\n"),
    ]));
    out.extend(gzip(&newc_archive(&[
        ("lib", 0o040755, b""),
        ("lib/modules", 0o040755, b""),
        (&format!("lib/modules/{kernel}"), 0o040755, b""),
        (&format!("lib/modules/{kernel}/modules.dep"), 0o100644, b""),
        ("firmware.bin", 0o100644, &filler),
    ])));
    out
}

/// Output of one `rackseed` run.
#[derive(Debug)]
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn rackseed(config: &Path, args: &[&str]) -> Result<Out> {
    let started = Instant::now();
    let out = Command::new(rackseed_bin())
        .arg("image")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RACKSEED_DATA_DIR")
        .output()?;
    eprintln!("rackseed image {args:?}: {:.1?}", started.elapsed());
    Ok(Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Every file (with its hash) and directory under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, sha256_hex(&std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A signed fixture mirror of bookworm's installer with a test keyring and a config.
struct Fixture {
    dir: tempfile::TempDir,
    gpg: Gpg,
    mirror: Mirror,
    linux: Vec<u8>,
    initrd: Vec<u8>,
}

impl Fixture {
    fn new(kernel: &str) -> Result<Fixture> {
        let dir = tempfile::Builder::new().prefix("rsimg").tempdir()?;
        let gpg = Gpg::new("rackseed test archive <archive@example.invalid>")?;
        gpg.export(&dir.path().join("keyring.gpg"))?;
        let mirror = Mirror::start(&dir.path().join("www"))?;
        let f = Fixture {
            linux: noise(1_500_000, 3),
            initrd: initrd(kernel),
            dir,
            gpg,
            mirror,
        };
        f.write("debian/dists/bookworm/main/debian-installer/binary-amd64/Packages.gz", &gzip(format!(
            "Package: kernel-image-{MIRROR_KERNEL}-di\nVersion: 6.1.176-1\nKernel-Version: {MIRROR_KERNEL}\n\nPackage: nic-modules-{MIRROR_KERNEL}-di\nKernel-Version: {MIRROR_KERNEL}\n"
        ).as_bytes()))?;
        f.write(&format!("debian/{IMAGES}/{NETBOOT}/linux"), &f.linux)?;
        f.write(&format!("debian/{IMAGES}/{NETBOOT}/initrd.gz"), &f.initrd)?;
        f.write_sums()?;
        f.write_release()?;
        f.write_config(&f.fixture_config())?;
        Ok(f)
    }

    fn www(&self, rel: &str) -> PathBuf {
        self.dir.path().join("www").join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.www(rel);
        std::fs::create_dir_all(p.parent().context("parent")?)?;
        std::fs::write(p, bytes)?;
        Ok(())
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.www(rel))?)
    }

    fn write_sums(&self) -> Result<()> {
        let mut sums = String::from(
            "0000000000000000000000000000000000000000000000000000000000000000  ./netboot/netboot.tar.gz\n",
        );
        for f in ["initrd.gz", "linux"] {
            let data = self.read(&format!("debian/{IMAGES}/{NETBOOT}/{f}"))?;
            sums.push_str(&format!("{}  ./{NETBOOT}/{f}\n", sha256_hex(&data)));
        }
        self.write(&format!("debian/{IMAGES}/SHA256SUMS"), sums.as_bytes())
    }

    /// Writes `Release` over the current SHA256SUMS and Packages.gz, and signs it.
    fn write_release(&self) -> Result<()> {
        let mut r = String::from(
            "Origin: Debian\nLabel: Debian\nSuite: oldstable\nVersion: 12.99\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n",
        );
        for p in [
            "main/installer-amd64/current/images/SHA256SUMS",
            "main/debian-installer/binary-amd64/Packages.gz",
        ] {
            let data = self.read(&format!("debian/dists/bookworm/{p}"))?;
            r.push_str(&format!(" {} {:>8} {p}\n", sha256_hex(&data), data.len()));
        }
        let path = self.www("debian/dists/bookworm/Release");
        std::fs::write(&path, r)?;
        self.gpg.sign(&path)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn store(&self) -> PathBuf {
        self.data().join("images")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("rackseed.toml")
    }

    /// The config with `mirror`: the images base with data, keyring, manifests and
    /// profiles in the fixture dir.
    fn config_with(&self, mirror: &str) -> LabConfig {
        let d = self.dir.path();
        let at = |rel: &str| d.join(rel).display().to_string();
        LabConfig::file("images")
            .set("server.data_dir", at("data"))
            .set("installer.mirror", mirror)
            .set("images.keyring", at("keyring.gpg"))
            .set("images.manifests", at("manifests"))
            .set("profiles.dir", at("profiles"))
    }

    /// The config with the fixture mirror.
    fn fixture_config(&self) -> LabConfig {
        self.config_with(&self.mirror.url())
    }

    fn write_config(&self, config: &LabConfig) -> Result<()> {
        config.write(&self.config())
    }

    fn image(&self, args: &[&str]) -> Result<Out> {
        rackseed(&self.config(), args)
    }

    /// Fetches `bookworm-amd64` successfully; returns the stored manifest.
    fn fetch_good(&self) -> Result<serde_json::Value> {
        let out = self.image(&["fetch", "bookworm-amd64"])?;
        if !out.ok {
            bail!("fetch failed: {}", out.all());
        }
        manifest(&self.store(), "bookworm-amd64")
    }

    /// Runs a fetch that must fail, checks the error and that the store is unchanged.
    fn refused(&self, needle: &str) -> Result<Out> {
        let before = snapshot(&self.store());
        let out = self.image(&["fetch", "bookworm-amd64"])?;
        eprintln!("{}", out.stderr.trim_end());
        assert!(!out.ok, "fetch should fail: {}", out.all());
        assert!(
            out.stderr.contains(needle),
            "expected `{needle}` in:\n{}",
            out.stderr
        );
        assert_eq!(
            snapshot(&self.store()),
            before,
            "the store changed after a refused fetch"
        );
        Ok(out)
    }
}

fn manifest(store: &Path, reference: &str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(store.join(format!("images/{reference}.json")))
        .with_context(|| format!("no manifest for {reference} in {}", store.display()))?;
    Ok(serde_json::from_str(&text)?)
}

// ---------- fixture mirror ----------

#[test]
fn fetch_stores_a_verified_image_from_a_signed_mirror() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    let out = f.image(&["fetch", "bookworm-amd64"])?;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "installer kernel {MIRROR_KERNEL} matches kernel-image-{MIRROR_KERNEL}-di"
        )),
        "{}",
        out.all()
    );
    assert!(!out.stderr.contains("warning:"), "{}", out.stderr);
    let m = manifest(&f.store(), "bookworm-amd64")?;
    assert_eq!(m["verified"], true);
    assert_eq!(m["suite"], "bookworm");
    assert_eq!(m["arch"], "amd64");
    assert_eq!(m["version"], "12.99");
    assert_eq!(m["kernel"], MIRROR_KERNEL);
    assert_eq!(
        m["verification"],
        format!(
            "InRelease signed by {} → main/installer-amd64/current/images/SHA256SUMS → files",
            f.gpg.fingerprint
        )
    );
    assert!(
        m["created"].as_str().is_some_and(|c| c.starts_with("20")),
        "{m}"
    );
    for (name, data) in [("linux", &f.linux), ("initrd.gz", &f.initrd)] {
        let file = &m["files"][name];
        assert_eq!(file["sha256"], sha256_hex(data));
        assert_eq!(file["size"], data.len() as u64);
        assert_eq!(
            file["source"],
            format!("{}/{IMAGES}/{NETBOOT}/{name}", f.mirror.url())
        );
        let blob = f.store().join("blobs/sha256").join(sha256_hex(data));
        assert_eq!(&std::fs::read(blob)?, data);
    }
    let id = m["id"].as_str().context("id")?;
    assert_eq!(manifest(&f.store(), &format!("bookworm-amd64@{id}"))?, m);
    let list = f.image(&["list"])?;
    assert!(
        list.ok && list.stdout.contains("bookworm-amd64") && list.stdout.contains(id),
        "{}",
        list.all()
    );
    let verify = f.image(&["verify", "bookworm-amd64"])?;
    assert!(verify.ok, "{}", verify.all());
    // Nothing partial is left behind.
    assert_eq!(
        std::fs::read_dir(f.data().join("image-downloads"))?.count(),
        0
    );
    assert_eq!(std::fs::read_dir(f.store().join("tmp"))?.count(), 0);
    Ok(())
}

#[test]
fn fetch_uses_release_gpg_when_there_is_no_inrelease() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    std::fs::remove_file(f.www("debian/dists/bookworm/InRelease"))?;
    let m = f.fetch_good()?;
    assert!(m["verification"].as_str().is_some_and(|v| v.starts_with(&format!("Release.gpg signed by {}", f.gpg.fingerprint))), "{m}");
    Ok(())
}

#[test]
fn fetch_refuses_a_bad_signature_and_leaves_the_store_alone() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    f.fetch_good()?;
    let inrelease = f.www("debian/dists/bookworm/InRelease");
    let good = std::fs::read_to_string(&inrelease)?;

    // Signed text changed after signing.
    std::fs::write(&inrelease, good.replace("Version: 12.99", "Version: 12.98"))?;
    f.refused(
        "is not correctly signed: the signature does not verify: the signed text was changed",
    )?;

    // Signed by a key that is not in the keyring.
    let stranger = Gpg::new("stranger <stranger@example.invalid>")?;
    stranger.sign(&f.www("debian/dists/bookworm/Release"))?;
    let out = f.refused(&format!(
        "signed by {}, none of which is in the keyring",
        stranger.fingerprint
    ))?;
    assert!(
        out.stderr.contains("InRelease` is not correctly signed"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn fetch_refuses_sha256sums_that_the_signed_release_does_not_vouch_for() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    f.fetch_good()?;
    let sums = format!("debian/{IMAGES}/SHA256SUMS");
    let good = f.read(&sums)?;
    // Same size, one hash changed (pointing `linux` at other bytes).
    let mut swapped = good.clone();
    let at = swapped.len() - 80;
    swapped[at] = if swapped[at] == b'0' { b'1' } else { b'0' };
    f.write(&sums, &swapped)?;
    let out = f.refused(
        "SHA256SUMS` does not match the signed chain: the signed Release expected sha256",
    )?;
    assert!(
        out.stderr
            .contains(&format!("{} bytes, got sha256", good.len())),
        "{}",
        out.stderr
    );
    // An added line.
    let mut longer = good.clone();
    longer.extend_from_slice(
        b"1111111111111111111111111111111111111111111111111111111111111111  ./extra\n",
    );
    f.write(&sums, &longer)?;
    let out = f.refused(
        "SHA256SUMS` does not match the signed chain: the signed Release expected sha256",
    )?;
    assert!(
        out.stderr
            .contains(&format!("got more than {} bytes", good.len())),
        "{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn fetch_refuses_a_file_that_does_not_match_sha256sums() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    f.fetch_good()?;
    let mut evil = f.linux.clone();
    evil[1000] ^= 0xff;
    f.write(&format!("debian/{IMAGES}/{NETBOOT}/linux"), &evil)?;
    let out = f.refused("/linux` does not match the signed chain: SHA256SUMS expected sha256")?;
    assert!(
        out.stderr.contains("the mirror is broken or tampered with"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was stored"), "{}", out.stderr);
    // A file that failed verification is not kept for a resume either.
    assert_eq!(
        std::fs::read_dir(f.data().join("image-downloads"))?.count(),
        0
    );
    Ok(())
}

#[test]
fn fetch_refuses_a_truncated_download_then_resumes_it() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    f.fetch_good()?;
    // A newer installer on the mirror, whose initrd download is always cut short.
    let newer = initrd("6.1.0-51-amd64");
    f.write(&format!("debian/{IMAGES}/{NETBOOT}/initrd.gz"), &newer)?;
    f.write_sums()?;
    f.write_release()?;
    f.mirror.fault("/initrd.gz", Fault::Truncate(300_000));
    let out = f.refused("/initrd.gz` stopped at 300000 of")?;
    assert!(
        out.stderr
            .contains("the partial file is kept and the next fetch resumes it"),
        "{}",
        out.stderr
    );
    // Every retry asked to resume where the file ended.
    let ranges: Vec<_> = f
        .mirror
        .requests()
        .into_iter()
        .filter(|(t, _)| t.ends_with("/initrd.gz"))
        .filter_map(|(_, r)| r)
        .collect();
    assert!(ranges.iter().any(|r| r == "bytes=300000-"), "{ranges:?}");

    f.mirror.clear_faults();
    let m = f.fetch_good()?;
    assert_eq!(m["files"]["initrd.gz"]["sha256"], sha256_hex(&newer));
    assert_eq!(m["kernel"], "6.1.0-51-amd64");
    let last = f
        .mirror
        .requests()
        .into_iter()
        .rev()
        .find(|(t, _)| t.ends_with("/initrd.gz"))
        .context("initrd request")?;
    assert_eq!(
        last.1.as_deref(),
        Some("bytes=300000-"),
        "the fetch did not resume"
    );
    Ok(())
}

#[test]
fn fetch_refuses_when_the_mirror_disappears_then_resumes_elsewhere() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    f.fetch_good()?;
    let mut newer = f.linux.clone();
    newer.extend_from_slice(b"a newer kernel");
    f.write(&format!("debian/{IMAGES}/{NETBOOT}/linux"), &newer)?;
    f.write_sums()?;
    f.write_release()?;
    f.mirror.fault("/linux", Fault::Vanish(700_000));
    let out = f.refused("/linux` stopped at 700000 of")?;
    assert!(
        out.stderr.contains("cannot reach") || out.stderr.contains("error sending request"),
        "{}",
        out.stderr
    );

    // The same files from another mirror: the download resumes where it stopped.
    let other = Mirror::start(&f.dir.path().join("www"))?;
    f.write_config(&f.config_with(&other.url()))?;
    let m = f.fetch_good()?;
    assert_eq!(m["files"]["linux"]["sha256"], sha256_hex(&newer));
    let linux: Vec<_> = other
        .requests()
        .into_iter()
        .filter(|(t, _)| t.ends_with("/linux"))
        .collect();
    assert_eq!(linux.len(), 1, "{linux:?}");
    assert_eq!(linux[0].1.as_deref(), Some("bytes=700000-"));
    Ok(())
}

#[test]
fn fetch_goes_through_the_configured_upstream_proxy() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    // `.invalid` never resolves: only the proxy can answer.
    f.write_config(
        &f.config_with("http://mirror.invalid/debian")
            .set("images.proxy", format!("http://{}", f.mirror.addr)),
    )?;
    let m = f.fetch_good()?;
    assert_eq!(m["verified"], true);
    let targets: Vec<String> = f.mirror.requests().into_iter().map(|(t, _)| t).collect();
    assert!(
        targets
            .iter()
            .all(|t| t.starts_with("http://mirror.invalid/debian/dists/bookworm/")),
        "{targets:?}"
    );
    assert!(
        targets.iter().any(|t| t.ends_with("/InRelease")),
        "{targets:?}"
    );
    Ok(())
}

#[test]
fn kernel_mismatch_is_warned_by_fetch_and_check() -> Result<()> {
    let f = Fixture::new("6.1.0-1-amd64")?;
    let out = f.image(&["fetch", "bookworm-amd64"])?;
    assert!(
        out.ok,
        "a kernel mismatch is a warning, not an error: {}",
        out.all()
    );
    let warning = format!(
        "warning: installer kernel 6.1.0-1-amd64 has no kernel-image-6.1.0-1-amd64-di in {}/dists/bookworm/main/debian-installer/binary-amd64/Packages.gz (it has: {MIRROR_KERNEL}); the installer will stop with \"no kernel modules were found\". Fetch the current installer for bookworm (`rackseed image fetch bookworm-amd64`)",
        f.mirror.url()
    );
    assert!(out.stderr.contains(&warning), "{}", out.stderr);

    f.write_config(&f.fixture_config().with("installer-image-bookworm"))?;
    let check = Command::new(rackseed_bin())
        .args(["check", "--config"])
        .arg(f.config())
        .output()?;
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(&warning), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains("kernel")),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn gc_keeps_generations_that_nodes_and_the_config_reference() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(&src)?;
    let mut ids = Vec::new();
    for i in 0..4u8 {
        std::fs::write(
            src.join("linux"),
            [b"kernel ".as_slice(), &[b'0' + i]].concat(),
        )?;
        std::fs::write(src.join("initrd.gz"), initrd(&format!("6.1.0-{i}-amd64")))?;
        let out = f.image(&[
            "import",
            "--from",
            &src.display().to_string(),
            "--name",
            "lab",
            "--manifest",
            "bookworm-amd64",
            "--offline",
        ])?;
        assert!(out.ok, "{}", out.all());
        ids.push(
            manifest(&f.store(), "lab")?["id"]
                .as_str()
                .context("id")?
                .to_string(),
        );
    }
    // A node installed from generation 0; the config pins generation 1; 3 is current.
    let inv = rackseed::inventory::Inventory::open(&f.data().join("inventory.db"))?;
    let node = rackseed::inventory::NewNode {
        mac: Some("52:54:00:00:00:01".parse()?),
        hostname: "n1".into(),
        profile: "p".into(),
        ip: None,
        provision: false,
        group: None,
        failure_domain: None,
        vars: serde_json::Value::Null,
    };
    inv.add_node(
        &node,
        Duration::from_secs(60),
        rackseed::inventory::now_ms(),
    )?;
    let pinned0 = format!("lab@{}", ids[0]);
    inv.with_conn(|c| {
        c.execute(
            "UPDATE nodes SET image = ?1",
            &[rackseed::inventory::db::Value::Text(pinned0.clone())],
        )
        .map_err(|source| rackseed::inventory::InventoryError::Query {
            doing: "test",
            source,
        })
    })?;
    drop(inv);
    f.write_config(
        &f.fixture_config()
            .set("installer.image", format!("lab@{}", ids[1])),
    )?;
    std::fs::write(f.store().join("tmp/leftover"), b"x")?;

    let out = f.image(&["gc"])?;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stdout
            .contains(&format!("removed generation lab@{}", ids[2])),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("gc: 1 generation(s), 2 file(s)"),
        "{}",
        out.stdout
    );
    for keep in [&ids[0], &ids[1], &ids[3]] {
        let v = f.image(&["verify", &format!("lab@{keep}")])?;
        assert!(v.ok, "{}", v.all());
    }
    assert!(
        !f.store()
            .join(format!("images/lab@{}.json", ids[2]))
            .exists()
    );
    assert_eq!(manifest(&f.store(), "lab")?["id"], ids[3].as_str());
    assert_eq!(
        std::fs::read_dir(f.store().join("blobs/sha256"))?.count(),
        6
    );
    assert_eq!(std::fs::read_dir(f.store().join("tmp"))?.count(), 0);
    Ok(())
}

#[test]
fn import_is_checked_against_the_signed_chain_when_the_mirror_answers() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("linux"), &f.linux)?;
    std::fs::write(src.join("initrd.gz"), &f.initrd)?;
    let from = src.display().to_string();
    let import = |name: &str| {
        f.image(&[
            "import",
            "--from",
            &from,
            "--manifest",
            "bookworm-amd64",
            "--name",
            name,
        ])
    };

    // The same files as the mirror's: verified through the chain.
    let out = import("same")?;
    assert!(out.ok, "{}", out.all());
    let m = manifest(&f.store(), "same")?;
    assert_eq!(m["verified"], true);
    assert_eq!(
        m["verification"],
        format!(
            "InRelease signed by {} → main/installer-amd64/current/images/SHA256SUMS → files",
            f.gpg.fingerprint
        )
    );
    assert!(m["version"].is_null(), "no package owns a temp dir: {m}");

    // Other files (an older or newer installer): stored, recorded as not verified.
    std::fs::write(src.join("linux"), b"another kernel")?;
    let out = import("other")?;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stderr
            .contains("warning: not verified: `linux` (sha256 "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("differs from the archive's signed SHA256SUMS"),
        "{}",
        out.stderr
    );
    assert_eq!(manifest(&f.store(), "other")?["verified"], false);

    // A mirror that answers with a broken chain is refused, not ignored.
    let inrelease = f.www("debian/dists/bookworm/InRelease");
    let good = std::fs::read_to_string(&inrelease)?;
    std::fs::write(
        &inrelease,
        good.replace("Codename: bookworm", "Codename: bookworn"),
    )?;
    let before = snapshot(&f.store());
    let out = import("tampered")?;
    assert!(!out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("is not correctly signed"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&f.store()), before);
    Ok(())
}

// ---------- the local package, offline ----------

#[test]
fn import_of_the_local_package_works_without_network() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    // Port 9 (discard) on loopback: nothing listens, every connection is refused.
    f.write_config(&f.config_with("http://127.0.0.1:9/debian"))?;
    let out = f.image(&["import", "--from", PACKAGE_DIR])?;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stderr
            .contains("warning: not verified: the mirror was unreachable"),
        "{}",
        out.stderr
    );
    let m = manifest(&f.store(), "bookworm-amd64")?;
    assert_eq!(m["verified"], false);
    assert_eq!(m["version"], package_version()?);
    assert_eq!(m["definition"], "bookworm-amd64");
    assert!(
        m["origin"].as_str().is_some_and(|o| o.contains(PACKAGE)),
        "{m}"
    );
    for name in ["linux", "initrd.gz"] {
        let local = std::fs::read(Path::new(PACKAGE_DIR).join(name))?;
        assert_eq!(m["files"][name]["sha256"], sha256_hex(&local));
        assert_eq!(m["files"][name]["source"], format!("{PACKAGE_DIR}/{name}"));
    }
    Ok(())
}

#[test]
fn an_imported_image_is_what_nodes_are_served() -> Result<()> {
    let f = Fixture::new(MIRROR_KERNEL)?;
    f.write_config(&f.config_with("http://127.0.0.1:9/debian"))?;
    let out = f.image(&[
        "import",
        "--from",
        PACKAGE_DIR,
        "--name",
        "served",
        "--offline",
    ])?;
    assert!(out.ok, "{}", out.all());
    std::fs::create_dir_all(f.dir.path().join("profiles"))?;
    let lab = Lab::new()?;
    let config = LabConfig::file("images-served")
        .set("images.store", f.store().display().to_string())
        .set(
            "profiles.dir",
            f.dir.path().join("profiles").display().to_string(),
        );
    let srv = Server::start(&lab, &config)?;
    for name in ["linux", "initrd.gz"] {
        let (code, body) =
            srv.curl(&[&format!("http://192.0.2.1:8080/installer/served/{name}")])?;
        assert_eq!(code, 200, "{name}");
        assert_eq!(
            sha256_hex(&body),
            sha256_hex(&std::fs::read(Path::new(PACKAGE_DIR).join(name))?),
            "{name}"
        );
    }
    Ok(())
}

// ---------- the real Debian archive ----------

fn package_version() -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", PACKAGE])
        .output()?;
    if !out.status.success() {
        bail!("{PACKAGE} is not installed (apt-get install {PACKAGE})");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A config that uses the host's APT sources and the Debian archive keyring, with
/// `overlay` (a tests/configs file) over it when given.
fn real_config(dir: &Path, overlay: Option<&str>) -> Result<PathBuf> {
    let mirror =
        rackseed::aptsources::debian_mirror(&rackseed::aptsources::host_sources(Path::new("/")))
            .context("this host's APT sources name no Debian mirror")?;
    eprintln!("real archive: {mirror} (from this host's APT sources)");
    let path = dir.join("rackseed.toml");
    let mut config = LabConfig::file("images")
        .set("server.data_dir", dir.join("data").display().to_string())
        .set(
            "images.manifests",
            dir.join("manifests").display().to_string(),
        );
    if let Some(o) = overlay {
        config = config.with(o);
    }
    config.write(&path)?;
    Ok(path)
}

#[test]
fn real_archive_verifies_the_local_package_import() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("rsimg").tempdir()?;
    let config = real_config(dir.path(), None)?;
    let out = rackseed(&config, &["import", "--from", PACKAGE_DIR])?;
    assert!(out.ok, "{}", out.all());
    let m = manifest(&dir.path().join("data/images"), "bookworm-amd64")?;
    assert_eq!(
        m["verified"],
        true,
        "the local package should match the archive's signed SHA256SUMS:\n{}",
        out.all()
    );
    let how = m["verification"].as_str().context("verification")?;
    let signer = how
        .strip_prefix("InRelease signed by ")
        .and_then(|r| r.split(' ').next())
        .context(how.to_string())?;
    let keyring = Command::new("gpg")
        .args([
            "--no-default-keyring",
            "--keyring",
            "/usr/share/keyrings/debian-archive-keyring.gpg",
            "--with-colons",
            "--list-keys",
        ])
        .output()?;
    assert!(
        String::from_utf8_lossy(&keyring.stdout).contains(&format!("fpr:::::::::{signer}:")),
        "{signer} is not in the Debian archive keyring"
    );
    assert!(
        how.ends_with("→ main/installer-amd64/current/images/SHA256SUMS → files"),
        "{how}"
    );
    assert_eq!(m["version"], package_version()?);
    // The kernel/mirror check finds the installer's kernel in the real Packages index.
    let kernel = m["kernel"].as_str().context("kernel")?;
    assert!(
        out.stdout.contains(&format!(
            "installer kernel {kernel} matches kernel-image-{kernel}-di in "
        )),
        "{}",
        out.all()
    );
    // And `rackseed check` serving that image does not warn about it.
    real_config(dir.path(), Some("installer-image-bookworm"))?;
    let check = Command::new(rackseed_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
    );
    assert!(
        stdout.contains(&format!("installer kernel {kernel} matches")),
        "{stdout}{stderr}"
    );
    assert!(!stderr.contains("kernel"), "{stderr}");
    Ok(())
}

#[test]
fn real_archive_fetch_verifies_the_chain_then_reports_the_missing_files() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("rsimg").tempdir()?;
    let config = real_config(dir.path(), None)?;
    let store = dir.path().join("data/images");
    rackseed::images::Store::open(&store)?;
    let before = snapshot(&store);
    let out = rackseed(&config, &["fetch", "bookworm-amd64"])?;
    assert!(!out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("InRelease: InRelease signed by "),
        "the chain was not verified:\n{}",
        out.all()
    );
    assert!(
        out.stderr
            .contains("SHA256SUMS: matches the signed Release"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr
            .contains("image `bookworm-amd64`: the signed chain verified (InRelease signed by "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("nothing was stored: the mirror does not serve `"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("/{IMAGES}/{NETBOOT}/linux` (HTTP 404)")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("rackseed image import --from {PACKAGE_DIR}")),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&store), before, "a failed fetch changed the store");
    Ok(())
}
