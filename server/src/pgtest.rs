//! A throwaway PostgreSQL server for tests (the inventory's unit tests and the
//! end-to-end tests): `initdb` and `postgres` from Debian's `postgresql` package on a
//! new directory, listening only on a Unix socket inside it, run as the `postgres`
//! user when the tests run as root (PostgreSQL refuses root). Not used by `serve`.
//!
//! Missing binaries are an error that says to run `./x setup`; a test never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running test server. Dropping it stops the server and removes its directory.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    stopped: bool,
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// The directory of PostgreSQL's server binaries (`/usr/lib/postgresql/<v>/bin`).
pub fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("postgres").is_file())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        "PostgreSQL server binaries not found (/usr/lib/postgresql/<version>/bin/initdb and postgres); run ./x setup, which installs Debian's postgresql package".to_string()
    })
}

impl PgServer {
    /// Starts a server on a new directory and waits (bounded) until it accepts
    /// connections.
    pub fn start() -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = std::env::temp_dir().join(format!(
            "rackseed-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let server = PgServer {
            dir: dir.clone(),
            bin,
            as_postgres,
            stopped: false,
        };
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or("no `postgres` user to run the test server as; run ./x setup")?;
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let data = dir.join("data");
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
        if as_postgres {
            let _ = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .map(|u| nix::unistd::chown(&dir.join("log"), Some(u.uid), Some(u.gid)));
        }
        let mut child = server
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=",
                "-p",
                "5432",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if crate::inventory::db::off_runtime(|| server.connect("postgres").is_ok()) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the test PostgreSQL server exited ({status}): {}",
                    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the test PostgreSQL server did not accept connections within {READY_WITHIN:?}: {}",
                    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The server goes on as the child of `runuser` (or of this process); it is
        // stopped with `pg_ctl`, not through this handle.
        drop(child);
        Ok(server)
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The directory holding the socket (`.s.PGSQL.5432`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` on this server (user `postgres`, trusted over the
    /// socket), as `inventory.url` takes it.
    pub fn url(&self, db: &str) -> String {
        let host: String = self
            .dir
            .display()
            .to_string()
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                b => (b as char).to_string(),
            })
            .collect();
        format!("postgres://postgres@{host}:5432/{db}")
    }

    fn connect(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.dir)
            .port(5432)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        // The blocking client may be called from async tests too.
        crate::inventory::db::off_runtime(|| {
            let mut c = self.connect("postgres").map_err(|e| e.to_string())?;
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .map_err(|e| format!("CREATE DATABASE {name}: {e}"))
        })?;
        Ok(self.url(&name))
    }

    /// Stops the server (fast shutdown) and removes its directory.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-t", "30", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Leaves stopping the server to a watchdog process that does it once this
    /// process has exited (for a server shared by all tests of a binary, which no
    /// destructor stops).
    fn stop_after_exit(&mut self) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate -t 30 -w stop",
                pg_ctl.display(),
                data.display()
            )
        } else {
            format!(
                "'{}' -D '{}' -m immediate -t 30 -w stop",
                pg_ctl.display(),
                data.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the test server's watchdog: {e}"))?;
        self.stopped = true;
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server for every test of this test binary, started at the first call and
/// stopped after the binary exits. Panics (failing the test) when it cannot start.
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    let r = SERVER.get_or_init(|| {
        let mut s = PgServer::start()?;
        s.stop_after_exit()?;
        Ok(s)
    });
    match r {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}
