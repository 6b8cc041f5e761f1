//! Server configs for the tests: checked-in TOML files in `tests/configs/`, layered.
//!
//! A config starts from a base file ([`LabConfig::lab`], [`LabConfig::proxy`] or
//! [`LabConfig::file`]), takes overlay files over it ([`LabConfig::with`]: tables merge
//! key by key, arrays and scalars replace) and, for the few values only known at run
//! time (temp dirs, computed ranges, mirror URLs), single keys ([`LabConfig::set`],
//! [`LabConfig::remove`], [`LabConfig::in_server_dir`]). A key is a dotted path;
//! a number indexes an array (`dhcp.subnets.0.range`).
//!
//! [`Server::prepare`](crate::Server::prepare) renders it with
//! [`LabConfig::render_in`], which fills `server.data_dir` (the server's temp dir +
//! `/data`) and `profiles.dir` (the workspace's `profiles/`) when no layer sets them.

use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The directory of the checked-in config files.
pub fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

/// A server config built from `tests/configs/` files and a few computed keys.
#[derive(Clone, Debug)]
pub struct LabConfig {
    table: Table,
    /// What it was built from, for messages: `lab.toml + ipxe-on-uefi.toml + …`.
    layers: Vec<String>,
    /// Keys whose value is a path inside the server's temp dir, resolved by `render_in`.
    server_paths: Vec<(String, PathBuf)>,
}

/// One step of a dotted key.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(key: &str) -> Vec<Step<'_>> {
    key.split('.')
        .map(|s| match s.parse::<usize>() {
            Ok(i) => Step::Index(i),
            Err(_) => Step::Key(s),
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Table(_) => "a table",
        Value::Array(_) => "an array",
        _ => "a value",
    }
}

/// Merges `over` into `base`: tables key by key, everything else replaces. `file` and
/// `prefix` name the overlay and the key in messages.
fn merge(base: &mut Table, over: Table, file: &str, prefix: &str) {
    for (k, v) in over {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o, file, &key),
            (Some(old), v) if old.is_table() != v.is_table() => panic!(
                "{file}: key `{key}` is {} but the config below it has {}",
                kind(&v),
                kind(old)
            ),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl LabConfig {
    /// `tests/configs/lab.toml`: authoritative DHCP on the lab bridge.
    pub fn lab() -> LabConfig {
        LabConfig::file("lab")
    }

    /// `tests/configs/lab-proxy.toml`: ProxyDHCP beside a site DHCP server.
    pub fn proxy() -> LabConfig {
        LabConfig::file("lab-proxy")
    }

    /// The base `tests/configs/<name>.toml`. Panics (naming the file) when there is no
    /// such file or it is not TOML.
    pub fn file(name: &str) -> LabConfig {
        let (file, table) = load(name);
        LabConfig {
            table,
            layers: vec![file],
            server_paths: Vec::new(),
        }
    }

    /// Merges the overlay `tests/configs/<name>.toml` over this config: tables merge key
    /// by key, arrays and scalars replace. Panics (naming the file and key) when there is
    /// no such file or it puts a table where this config has a value, or the reverse.
    pub fn with(mut self, name: &str) -> LabConfig {
        let (file, over) = load(name);
        merge(&mut self.table, over, &file, "");
        self.layers.push(file);
        self
    }

    /// Sets the dotted `key` (`boot.efi_binary`, `dhcp.subnets.0.range`), creating
    /// missing tables. Panics (naming the layers and key) when a step is not a table or
    /// an index is out of range.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> LabConfig {
        let value = value.into();
        let at = self.what(key);
        let (last, parent) = self.parent_mut(key, true);
        match (parent, last) {
            (Parent::Table(t), Step::Key(k)) => {
                t.insert(k.to_string(), value);
            }
            (Parent::Array(a), Step::Index(i)) if i < a.len() => a[i] = value,
            (Parent::Array(a), Step::Index(i)) => {
                panic!("{at}: no index {i} in an array of {}", a.len())
            }
            (Parent::Table(_), Step::Index(_)) => panic!("{at}: an index into a table"),
            (Parent::Array(_), Step::Key(_)) => panic!("{at}: a name into an array"),
        }
        self.layers.push(format!("set {key}"));
        self
    }

    /// Removes the dotted `key`. Panics (naming the layers and key) when it is not set.
    pub fn remove(mut self, key: &str) -> LabConfig {
        let at = self.what(key);
        let (last, parent) = self.parent_mut(key, false);
        let removed = match (parent, last) {
            (Parent::Table(t), Step::Key(k)) => t.remove(k).is_some(),
            (Parent::Array(a), Step::Index(i)) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        };
        assert!(removed, "{at}: no such key to remove");
        self.layers.push(format!("remove {key}"));
        self
    }

    /// Sets the dotted `key` to `rel` inside the server's temp dir (resolved when the
    /// harness renders the config for its server, see [`LabConfig::render_in`]).
    pub fn in_server_dir(mut self, key: &str, rel: impl AsRef<Path>) -> LabConfig {
        let rel = rel.as_ref();
        assert!(
            rel.is_relative(),
            "{}: `{}` is not relative to the server's dir",
            self.what(key),
            rel.display()
        );
        // Checks the key now, so that a bad one is reported where it is given.
        self = self.set(key, "");
        self.layers.pop();
        self.layers.push(format!("{key} in the server's dir"));
        self.server_paths.push((key.to_string(), rel.to_path_buf()));
        self
    }

    /// The config as it is layered, without the harness's defaults (for a config file
    /// written outside a [`Server`](crate::Server); panics if it has keys in a server's
    /// dir).
    pub fn render(&self) -> String {
        assert!(
            self.server_paths.is_empty(),
            "{}: has paths in a server's dir; render it with render_in",
            self.layers.join(" + ")
        );
        toml::to_string(&self.table).expect("a TOML table renders")
    }

    /// The config for a server whose temp dir is `dir`: keys set with
    /// [`LabConfig::in_server_dir`] resolved in it, and `server.data_dir` (`dir/data`) and
    /// `profiles.dir` (the workspace's `profiles/`) filled when no layer sets them.
    pub fn render_in(&self, dir: &Path) -> String {
        let mut c = LabConfig {
            server_paths: Vec::new(),
            ..self.clone()
        };
        for (key, rel) in &self.server_paths {
            c = c.set(key, dir.join(rel).display().to_string());
        }
        if c.get("server.data_dir").is_none() {
            c = c.set("server.data_dir", dir.join("data").display().to_string());
        }
        if c.get("profiles.dir").is_none() {
            c = c.set(
                "profiles.dir",
                crate::workspace().join("profiles").display().to_string(),
            );
        }
        c.render()
    }

    /// Writes [`LabConfig::render`] to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.render())?;
        Ok(())
    }

    /// The value at the dotted `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut at: Option<&Value> = None;
        for step in steps(key) {
            at = match (at, step) {
                (None, Step::Key(k)) => self.table.get(k),
                (Some(Value::Table(t)), Step::Key(k)) => t.get(k),
                (Some(Value::Array(a)), Step::Index(i)) => a.get(i),
                _ => None,
            };
            at?;
        }
        at
    }

    /// The files and keys this config was built from, `lab.toml + set boot.efi_binary`.
    pub fn layers(&self) -> String {
        self.layers.join(" + ")
    }

    fn what(&self, key: &str) -> String {
        format!("{}: key `{key}`", self.layers())
    }

    /// The table or array holding the last step of `key`, creating missing tables on
    /// the way when `create`.
    fn parent_mut<'k>(&mut self, key: &'k str, create: bool) -> (Step<'k>, Parent<'_>) {
        let at = self.what(key);
        let mut path = steps(key);
        let last = path.pop().unwrap_or_else(|| panic!("{at}: empty key"));
        let mut cur = Parent::Table(&mut self.table);
        for step in path {
            let next = match (cur, step) {
                (Parent::Table(t), Step::Key(k)) => {
                    if create && !t.contains_key(k) {
                        t.insert(k.to_string(), Value::Table(Table::new()));
                    }
                    t.get_mut(k)
                        .unwrap_or_else(|| panic!("{at}: `{k}` is not set"))
                }
                (Parent::Array(a), Step::Index(i)) => {
                    let n = a.len();
                    a.get_mut(i)
                        .unwrap_or_else(|| panic!("{at}: no index {i} in an array of {n}"))
                }
                (Parent::Table(_), Step::Index(i)) => {
                    panic!("{at}: index {i} is looked up in a table")
                }
                (Parent::Array(_), Step::Key(k)) => {
                    panic!("{at}: `{k}` is looked up in an array")
                }
            };
            cur = match next {
                Value::Table(t) => Parent::Table(t),
                Value::Array(a) => Parent::Array(a),
                _ => panic!("{at}: a step is a value, not a table or an array"),
            };
        }
        (last, cur)
    }
}

/// Where the last step of a key is.
enum Parent<'a> {
    Table(&'a mut Table),
    Array(&'a mut Vec<Value>),
}

/// Reads and parses `tests/configs/<name>.toml`; returns its file name and table.
fn load(name: &str) -> (String, Table) {
    let file = format!("{name}.toml");
    let path = configs_dir().join(&file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        let mut known: Vec<String> = std::fs::read_dir(configs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
            .collect();
        known.sort();
        panic!(
            "no test config `{}` ({e}); tests/configs has: {}",
            path.display(),
            known.join(", ")
        )
    });
    let table = text
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (file, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base files; every other file in tests/configs is an overlay.
    const BASES: &[&str] = &["lab", "lab-proxy", "images", "images-served"];

    fn names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(configs_dir())
            .expect("tests/configs")
            .map(|e| e.expect("a directory entry").file_name())
            .filter_map(|n| n.into_string().ok())
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// What the server's own parser and validator make of `cfg` as the harness renders
    /// it for a server. (Not `rackseed check`: that also needs Debian's ipxe and
    /// netboot installer packages, the profiles rendered against a mirror, and the
    /// files the tests create at run time.)
    fn validate(cfg: &LabConfig) -> rackseed::config::Config {
        let text = cfg.render_in(Path::new("/nonexistent/rackseed-test"));
        rackseed::config::Config::parse_with(&text, &cfg.layers(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_checked_in_config_is_a_valid_server_config() {
        let names = names();
        for base in BASES {
            assert!(names.iter().any(|n| n == base), "no base {base}.toml");
        }
        for name in &names {
            let text = std::fs::read_to_string(configs_dir().join(format!("{name}.toml")))
                .expect("readable");
            assert!(
                text.starts_with("# "),
                "{name}.toml does not start with a comment saying who uses it"
            );
            let cfg = if BASES.contains(&name.as_str()) {
                LabConfig::file(name)
            } else {
                LabConfig::lab().with(name)
            };
            validate(&cfg);
        }
    }

    #[test]
    fn the_lab_bases_are_what_the_tests_expect() {
        let c = validate(&LabConfig::lab());
        assert_eq!(c.dhcp.mode, rackseed::config::DhcpMode::Authoritative);
        assert_eq!(c.dhcp.subnets.len(), 1);
        assert_eq!(c.server.advertise.to_string(), "192.0.2.1");
        assert_eq!(
            c.server.data_dir,
            Path::new("/nonexistent/rackseed-test/data")
        );
        assert_eq!(c.profiles.dir, crate::workspace().join("profiles"));
        let p = validate(&LabConfig::proxy());
        assert_eq!(p.dhcp.mode, rackseed::config::DhcpMode::Proxy);
        assert!(p.dhcp.subnets.is_empty());
    }

    #[test]
    fn overlays_merge_tables_and_replace_arrays_and_values() {
        let c = LabConfig::lab().with("relay-subnet").with("ipxe-on-uefi");
        assert_eq!(
            c.get("dhcp.subnets.1.network").and_then(Value::as_str),
            Some("198.51.100.0/24")
        );
        assert!(c.get("dhcp.subnets.2").is_none());
        // Merged, not replaced: the rest of [dhcp] and [boot] is still there.
        assert_eq!(
            c.get("dhcp.mode").and_then(Value::as_str),
            Some("authoritative")
        );
        assert_eq!(
            c.get("boot.console").and_then(Value::as_str),
            Some("ttyS0,115200n8")
        );
        assert_eq!(
            c.get("boot.efi_binary").and_then(Value::as_str),
            Some("ipxe")
        );
        assert_eq!(
            c.layers(),
            "lab.toml + relay-subnet.toml + ipxe-on-uefi.toml"
        );
    }

    #[test]
    fn set_remove_and_server_dir_keys() {
        let c = LabConfig::lab()
            .set("dhcp.subnets.0.range", "192.0.2.20-192.0.2.250")
            .set("tftp.max_sessions", 2)
            .remove("installer.mirror")
            .in_server_dir("images.store", "store");
        let text = c.render_in(Path::new("/srv/t"));
        let parsed: Table = text.parse().expect("TOML");
        assert_eq!(
            parsed["dhcp"]["subnets"][0]["range"].as_str(),
            Some("192.0.2.20-192.0.2.250")
        );
        assert_eq!(parsed["tftp"]["max_sessions"].as_integer(), Some(2));
        assert!(parsed["installer"].get("mirror").is_none());
        assert_eq!(parsed["images"]["store"].as_str(), Some("/srv/t/store"));
        assert_eq!(parsed["server"]["data_dir"].as_str(), Some("/srv/t/data"));
        // A layer's own data_dir is kept.
        let own = LabConfig::lab().set("server.data_dir", "/elsewhere");
        assert!(
            own.render_in(Path::new("/srv/t"))
                .contains("data_dir = \"/elsewhere\"")
        );
    }

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("should panic");
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn unknown_files_and_bad_keys_are_named() {
        let t = panic_text(|| {
            LabConfig::lab().with("no-such-overlay");
        });
        assert!(
            t.contains("no-such-overlay.toml") && t.contains("ipxe-on-uefi"),
            "{t}"
        );
        let t = panic_text(|| {
            LabConfig::lab().remove("installer.no_such_key");
        });
        assert!(
            t.contains("lab.toml: key `installer.no_such_key`: no such key"),
            "{t}"
        );
        let t = panic_text(|| {
            LabConfig::lab().set("boot.console.speed", 9600);
        });
        assert!(t.contains("key `boot.console.speed`"), "{t}");
        let t = panic_text(|| {
            LabConfig::lab().set("dhcp.subnets.3.range", "x");
        });
        assert!(t.contains("no index 3 in an array of 1"), "{t}");
        // A key the server does not know is refused by its validator, naming the key.
        let bad = LabConfig::lab().set("boot.efi_binry", "ipxe");
        let err = rackseed::config::Config::parse_with(
            &bad.render_in(Path::new("/x")),
            &bad.layers(),
            &|_| None,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("lab.toml + set boot.efi_binry") && err.contains("efi_binry"),
            "{err}"
        );
    }
}
