//! Profiles: a class of machine described once in YAML (`profiles/*.yaml`), with
//! `extends`, validated into typed values before any node can be assigned one.
//!
//! Owns the profile format (`model`), inheritance (here), validation and its messages
//! (`validate`), node-level overrides (`vars`) and the JSON Schema (`schema`). Does not
//! render anything (see `render` and `plan`) and does no network I/O; the `rackseed
//! profile` commands are in `cli::profile`.
//!
//! Every message names the file, the key and the fix:
//! `profiles/storage.yaml: storage.root.raid: raid1 needs 2 disks, found 1`.

pub mod model;
pub mod schema;
pub mod validate;
pub mod vars;

pub use model::Profile;
pub use vars::NodeVars;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A profile problem, naming the file, the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct ProfileError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl ProfileError {
    /// A problem at `key` of `file`.
    pub fn new(file: &str, key: &str, message: impl Into<String>) -> ProfileError {
        ProfileError {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in a set of profiles.
#[derive(Debug, thiserror::Error)]
#[error("{} profile error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ProfileErrors(pub Vec<ProfileError>);

/// A named profile with `extends` applied, that passed validation. Only the catalog
/// makes these, so holding one means the profile is valid.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: String,
    pub file: PathBuf,
    pub profile: Profile,
}

/// All profiles of a directory, each resolved (extends applied) and validated.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    profiles: BTreeMap<String, Arc<Resolved>>,
}

impl Catalog {
    /// Loads every `*.yaml` in `dir`. Any error in any profile fails the whole load,
    /// so a broken profile never reaches a node.
    pub fn load(dir: &Path) -> Result<Catalog, ProfileErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ProfileErrors(vec![ProfileError::new(
                &display(dir),
                "",
                format!("cannot read profile directory ({e}); set [profiles] dir in the config"),
            )])
        })?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_profile_file(p))
            .collect();
        files.sort();
        Catalog::load_files(&files)
    }

    /// Loads the given files. A profile they `extends` that is not among them is looked
    /// up as `<name>.yaml` beside the file that names it.
    pub fn load_files(files: &[PathBuf]) -> Result<Catalog, ProfileErrors> {
        let mut errors = Vec::new();
        let mut raw: BTreeMap<String, RawFile> = BTreeMap::new();
        let mut queue: Vec<PathBuf> = files.to_vec();
        let mut seen: Vec<PathBuf> = Vec::new();
        while let Some(f) = queue.pop() {
            if seen.contains(&f) {
                continue;
            }
            seen.push(f.clone());
            let name = profile_name(&f);
            if let Some(other) = raw.get(&name) {
                errors.push(ProfileError::new(
                    &display(&f),
                    "",
                    format!(
                        "profile `{name}` is also defined by {}; profile names must be unique",
                        display(&other.file)
                    ),
                ));
                continue;
            }
            match parse_file(&f) {
                Ok((profile, value)) => {
                    if let Some(base) = &profile.extends {
                        let sibling = f
                            .parent()
                            .unwrap_or(Path::new("."))
                            .join(format!("{base}.yaml"));
                        if !raw.contains_key(base) && sibling.is_file() && !queue.contains(&sibling)
                        {
                            queue.push(sibling);
                        }
                    }
                    raw.insert(
                        name,
                        RawFile {
                            file: f,
                            profile,
                            value,
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        let mut profiles = BTreeMap::new();
        for (name, rf) in &raw {
            match resolve(name, &raw) {
                Ok(p) => {
                    let mut errs = validate::validate(&display(&rf.file), &p);
                    if errs.is_empty() {
                        profiles.insert(
                            name.clone(),
                            Arc::new(Resolved {
                                name: name.clone(),
                                file: rf.file.clone(),
                                profile: p,
                            }),
                        );
                    } else {
                        errors.append(&mut errs);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Catalog { profiles })
        } else {
            errors.sort_by(|a, b| a.file.cmp(&b.file));
            Err(ProfileErrors(errors))
        }
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Resolved>> {
        self.profiles.get(name).cloned()
    }

    /// Every profile name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// How many profiles are loaded.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// True when no profile is loaded.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// True for `*.yaml` and `*.yml`.
pub fn is_profile_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

/// The profile name of a file: its name without the extension.
pub fn profile_name(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The profile names of `dir` (for messages).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_profile_file(p))
        .map(|p| profile_name(&p))
        .collect();
    v.sort();
    v
}

struct RawFile {
    file: PathBuf,
    profile: Profile,
    /// The file as data, for merging with what it extends.
    value: Value,
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Reads one file into the raw format; unknown keys and wrong types name their key.
pub fn parse_file(path: &Path) -> Result<(Profile, Value), ProfileError> {
    let file = display(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProfileError::new(&file, "", format!("cannot read ({e})")))?;
    parse_str(&text, &file)
}

/// Parses profile text; `file` names it in errors. Returns the typed profile and the
/// same document as data (what `extends` merges).
pub fn parse_str(text: &str, file: &str) -> Result<(Profile, Value), ProfileError> {
    let de = serde_norway::Deserializer::from_str(text);
    let profile: Profile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = e.into_inner().to_string();
        ProfileError::new(file, &key, clean_serde_message(&inner, &key))
    })?;
    let value: Value = serde_norway::from_str(text)
        .map_err(|e| ProfileError::new(file, "", clean_serde_message(&e.to_string(), "")))?;
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    Ok((profile, value))
}

/// serde_norway starts some messages with the path it failed at (which the error
/// already names as its key) and ends them with ` at line L column C` (kept).
fn clean_serde_message(m: &str, key: &str) -> String {
    let m = match m.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() && key.starts_with(path) => {
            rest
        }
        _ => m,
    };
    m.replace(
        "data did not match any variant of untagged enum Any",
        "unexpected value",
    )
}

fn resolve(name: &str, raw: &BTreeMap<String, RawFile>) -> Result<Profile, ProfileError> {
    let mut chain = vec![name.to_string()];
    let rf = raw
        .get(name)
        .ok_or_else(|| ProfileError::new(name, "", "not found"))?;
    let mut layers = vec![rf.value.clone()];
    let mut parent = rf.profile.extends.clone();
    while let Some(base) = parent {
        if chain.contains(&base) {
            return Err(ProfileError::new(
                &display(&rf.file),
                "extends",
                format!("inheritance loop: {} → {base}", chain.join(" → ")),
            ));
        }
        let Some(brf) = raw.get(&base) else {
            return Err(ProfileError::new(
                &display(&rf.file),
                "extends",
                format!(
                    "no profile named `{base}` (profiles: {})",
                    raw.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        chain.push(base.clone());
        parent = brf.profile.extends.clone();
        layers.push(brf.value.clone());
    }
    let mut merged = Value::Object(Default::default());
    for layer in layers.into_iter().rev() {
        merge(&mut merged, layer, "");
    }
    // Each layer parsed on its own, so the merge is well-formed; a failure here would
    // be a merge defect, reported against the child file.
    let mut p: Profile = serde_json::from_value(merged).map_err(|e| {
        ProfileError::new(
            &display(&rf.file),
            "extends",
            format!("cannot combine with the profiles it extends: {e}"),
        )
    })?;
    p.extends = rf.profile.extends.clone();
    Ok(p)
}

/// Lists that add up across `extends` instead of replacing.
const ADDITIVE: &[&str] = &["packages", "ssh_authorized_keys", "kernel_args", "ntp"];

/// Applies `over` on top of `base`: maps merge key by key, lists replace (except the
/// [`ADDITIVE`] top-level ones, which add up without duplicates), values replace.
fn merge(base: &mut Value, over: Value, path: &str) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &child),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if ADDITIVE.contains(&path) => {
            for v in o {
                if !b.contains(&v) {
                    b.push(v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn unknown_key_names_the_key() {
        let e = parse_str("packages: [vim]\nrootpw: x\n", "profiles/a.yaml").unwrap_err();
        assert!(e.to_string().starts_with("profiles/a.yaml: "), "{e}");
        assert!(e.to_string().contains("unknown field `rootpw`"), "{e}");
    }

    #[test]
    fn extends_merges_maps_and_adds_packages() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.yaml",
            "packages: [vim]\ntimezone: Etc/UTC\nstorage:\n  root:\n    raid: none\n    swap: 1G\n",
        );
        let child = write(
            dir.path(),
            "child.yaml",
            "extends: base\npackages: [curl, vim]\nstorage:\n  root:\n    raid: raid1\n",
        );
        // The base is found beside the child.
        let cat = Catalog::load_files(&[child]).unwrap();
        let p = &cat.get("child").unwrap().profile;
        assert_eq!(p.packages, ["vim", "curl"]);
        assert_eq!(p.timezone.as_deref(), Some("Etc/UTC"));
        assert_eq!(p.storage.root.raid, model::RaidLevel::Raid1);
        assert_eq!(p.storage.root.swap, Some(model::Size(1 << 30)));
        assert_eq!(cat.len(), 2);
    }

    #[test]
    fn extends_loops_and_unknown_bases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "extends: b\n");
        write(dir.path(), "b.yaml", "extends: a\n");
        write(dir.path(), "c.yaml", "extends: nope\n");
        let errs = Catalog::load(dir.path()).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.ends_with("a.yaml: extends: inheritance loop: a → b → a")),
            "{text:?}"
        );
        assert!(
            text.iter().any(
                |t| t.ends_with("c.yaml: extends: no profile named `nope` (profiles: a, b, c)")
            ),
            "{text:?}"
        );
    }
}
