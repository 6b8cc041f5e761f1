//! A real headless Chromium for the console tests: Debian's `chromium` driven over
//! WebDriver (`chromium-driver`) by `tests/browser.py` (Debian's `python3-selenium`),
//! run inside a network namespace so it reaches the server's admin listener on
//! 127.0.0.1 there. One JSON command per line; see the script for the commands.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// A running browser; dropped, it quits (and its process group is killed).
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    _home: tempfile::TempDir,
    /// Where screenshots go (the test output directory).
    pub out: PathBuf,
}

/// The directory tests write screenshots and other artefacts to:
/// `$RACKSEED_TEST_OUT`, else `target/test-output`.
pub fn test_output(name: &str) -> Result<PathBuf> {
    let base = std::env::var_os("RACKSEED_TEST_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/test-output"));
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl Browser {
    /// Starts Chromium inside network namespace `ns`; screenshots go to `out`.
    pub fn start(ns: &str, out: &Path) -> Result<Browser> {
        for p in [
            "/usr/bin/chromium",
            "/usr/bin/chromedriver",
            "/usr/bin/python3",
        ] {
            if !Path::new(p).exists() {
                bail!(
                    "{p} is missing: run ./x setup (it installs chromium, chromium-driver and python3-selenium)"
                );
            }
        }
        let home = tempfile::Builder::new()
            .prefix("rackseed-browser")
            .tempdir()?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/python3"])
            .arg(crate::workspace().join("tests/browser.py"))
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_CACHE_HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the browser driver")?;
        let stdin = child.stdin.take().context("browser stdin")?;
        let stdout = child.stdout.take().context("browser stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut b = Browser {
            child,
            stdin,
            lines,
            _home: home,
            out: out.to_path_buf(),
        };
        let version = b.answer(Duration::from_secs(60))?;
        eprintln!("browser: Chromium {}", version.as_str().unwrap_or("?"));
        Ok(b)
    }

    fn answer(&mut self, timeout: Duration) -> Result<Value> {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                bail!("the browser did not answer within {timeout:?}")
            }
            Err(RecvTimeoutError::Disconnected) => bail!("the browser driver exited"),
        };
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("bad answer from the browser driver: {line}"))?;
        if v["ok"] == json!(true) {
            Ok(v["value"].clone())
        } else {
            Err(anyhow!(
                "{}",
                v["error"].as_str().unwrap_or("browser error")
            ))
        }
    }

    /// Sends one command and waits for its answer (commands that wait get their own
    /// timeout plus a margin).
    pub fn cmd(&mut self, c: Value) -> Result<Value> {
        let wait = c["timeout"].as_f64().unwrap_or(0.0);
        writeln!(self.stdin, "{c}")?;
        self.stdin.flush()?;
        self.answer(Duration::from_secs_f64(wait + 60.0))
            .with_context(|| format!("browser: {c}"))
    }

    pub fn get(&mut self, url: &str) -> Result<()> {
        self.cmd(json!({"op": "get", "url": url})).map(drop)
    }
    /// Waits until `css` exists and its text contains `text`; returns the text.
    pub fn wait_text(&mut self, css: &str, text: &str, secs: u64) -> Result<String> {
        let v = self.cmd(json!({"op": "wait", "css": css, "text": text, "timeout": secs}))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
    /// Loads `url` again every 3 s until `css` holds `text` (for pages that are not
    /// live); returns the text.
    pub fn wait_reloading(
        &mut self,
        url: &str,
        css: &str,
        text: &str,
        secs: u64,
    ) -> Result<String> {
        let start = std::time::Instant::now();
        loop {
            self.get(url)?;
            let t = self.text(css)?;
            if t.contains(text) {
                return Ok(t);
            }
            if start.elapsed() > Duration::from_secs(secs) {
                bail!("{url}: {css} did not show {text:?} within {secs} s; it shows {t:?}");
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    pub fn text(&mut self, css: &str) -> Result<String> {
        let v = self.cmd(json!({"op": "text", "css": css}))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
    pub fn attr(&mut self, css: &str, name: &str) -> Result<String> {
        let v = self.cmd(json!({"op": "attr", "css": css, "name": name}))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
    pub fn type_in(&mut self, css: &str, text: &str) -> Result<()> {
        self.cmd(json!({"op": "type", "css": css, "text": text}))
            .map(drop)
    }
    pub fn click(&mut self, css: &str) -> Result<()> {
        self.cmd(json!({"op": "click", "css": css})).map(drop)
    }
    /// Accepts the `confirm()` dialog that is open (or opens within 5 s).
    pub fn accept(&mut self) -> Result<()> {
        self.cmd(json!({"op": "accept"})).map(drop)
    }
    pub fn js(&mut self, script: &str) -> Result<Value> {
        self.cmd(json!({"op": "js", "script": script}))
    }
    pub fn url(&mut self) -> Result<String> {
        let v = self.cmd(json!({"op": "url"}))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
    /// Saves a screenshot as `<out>/<name>.png`; returns its path.
    pub fn screenshot(&mut self, name: &str) -> Result<PathBuf> {
        let p = self.out.join(format!("{name}.png"));
        self.cmd(json!({"op": "screenshot", "path": p}))?;
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if size < 1000 {
            bail!("screenshot {} is {size} bytes", p.display());
        }
        eprintln!("screenshot: {}", p.display());
        Ok(p)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Chromium and chromedriver share the driver's process group.
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}
