//! Profiles: a class of machine described once in YAML (`profiles/*.yaml`), with
//! `extends`, validated into typed values before any node can be assigned one.
//!
//! Owns the profile format, inheritance and validation messages. Does not render
//! anything (see `render`) and does no network I/O.

use serde::{Deserialize, Serialize};
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

/// Every problem found in a set of profiles.
#[derive(Debug, thiserror::Error)]
#[error("{} profile error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ProfileErrors(pub Vec<ProfileError>);

/// The profile file format.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Another profile whose values this one starts from.
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Extra packages to install.
    #[serde(default)]
    pub packages: Vec<String>,
    /// A crypt(3) hash (`$6$…` or `$y$…`), never a plain password.
    #[serde(default)]
    pub root_password_hash: Option<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The redundancy group nodes of this profile join.
    #[serde(default)]
    pub group: Option<String>,
}

/// A named, validated profile with its source file.
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
            ProfileErrors(vec![ProfileError {
                file: dir.display().to_string(),
                key: String::new(),
                message: format!(
                    "cannot read profile directory ({e}); set [profiles] dir in the config"
                ),
            }])
        })?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        Catalog::load_files(&files)
    }

    /// Loads the given files (their `extends` must be among them).
    pub fn load_files(files: &[PathBuf]) -> Result<Catalog, ProfileErrors> {
        let mut errors = Vec::new();
        let mut raw: BTreeMap<String, (PathBuf, Profile)> = BTreeMap::new();
        for f in files {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            match parse_file(f) {
                Ok(p) => {
                    raw.insert(name, (f.clone(), p));
                }
                Err(e) => errors.push(e),
            }
        }
        let mut profiles = BTreeMap::new();
        for (name, (file, _)) in &raw {
            match resolve(name, &raw) {
                Ok(p) => {
                    let mut errs = validate(&display(file), &p);
                    if errs.is_empty() {
                        profiles.insert(
                            name.clone(),
                            Arc::new(Resolved {
                                name: name.clone(),
                                file: file.clone(),
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
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Reads one file into the raw format; unknown keys and wrong types name their key.
pub fn parse_file(path: &Path) -> Result<Profile, ProfileError> {
    let file = display(path);
    let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
        file: file.clone(),
        key: String::new(),
        message: format!("cannot read ({e})"),
    })?;
    parse_str(&text, &file)
}

/// Parses profile text; `file` names it in errors.
pub fn parse_str(text: &str, file: &str) -> Result<Profile, ProfileError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        ProfileError {
            file: file.to_string(),
            key: if key == "." { String::new() } else { key },
            message: inner,
        }
    })
}

fn resolve(
    name: &str,
    raw: &BTreeMap<String, (PathBuf, Profile)>,
) -> Result<Profile, ProfileError> {
    let mut chain = vec![name.to_string()];
    let (file, mut p) = raw.get(name).cloned().ok_or_else(|| ProfileError {
        file: name.into(),
        key: String::new(),
        message: "not found".into(),
    })?;
    let mut parent = p.extends.clone();
    let mut layers = vec![p.clone()];
    while let Some(base) = parent {
        if chain.contains(&base) {
            return Err(ProfileError {
                file: display(&file),
                key: "extends".into(),
                message: format!("inheritance loop: {} → {base}", chain.join(" → ")),
            });
        }
        let Some((_, bp)) = raw.get(&base) else {
            return Err(ProfileError {
                file: display(&file),
                key: "extends".into(),
                message: format!(
                    "no profile named `{base}` (profiles: {})",
                    raw.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        };
        chain.push(base.clone());
        parent = bp.extends.clone();
        layers.push(bp.clone());
    }
    p = Profile::default();
    for layer in layers.into_iter().rev() {
        p = merge(p, layer);
    }
    Ok(p)
}

/// Applies `over` on top of `base`: set values replace, lists of packages and keys add up.
fn merge(base: Profile, over: Profile) -> Profile {
    let mut packages = base.packages;
    for p in over.packages {
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    let mut keys = base.ssh_authorized_keys;
    keys.extend(
        over.ssh_authorized_keys
            .into_iter()
            .filter(|k| !k.is_empty()),
    );
    Profile {
        extends: over.extends,
        description: over.description.or(base.description),
        packages,
        root_password_hash: over.root_password_hash.or(base.root_password_hash),
        ssh_authorized_keys: keys,
        timezone: over.timezone.or(base.timezone),
        group: over.group.or(base.group),
    }
}

fn validate(file: &str, p: &Profile) -> Vec<ProfileError> {
    let mut out = Vec::new();
    let mut err = |key: &str, message: String| {
        out.push(ProfileError {
            file: file.into(),
            key: key.into(),
            message,
        })
    };
    if let Some(h) = &p.root_password_hash
        && !(h.starts_with("$6$") || h.starts_with("$5$") || h.starts_with("$y$") || h == "!")
    {
        err("root_password_hash", "must be a crypt(3) hash ($6$…, $y$…), not a password; make one with `mkpasswd -m sha-512`".into());
    }
    for (i, pkg) in p.packages.iter().enumerate() {
        if pkg.is_empty()
            || !pkg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        {
            err(
                &format!("packages[{i}]"),
                format!("`{pkg}` is not a Debian package name"),
            );
        }
    }
    for (i, k) in p.ssh_authorized_keys.iter().enumerate() {
        if k.lines().count() != 1 || k.split_whitespace().count() < 2 {
            err(
                &format!("ssh_authorized_keys[{i}]"),
                "must be one line: `TYPE BASE64 [COMMENT]`".into(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_the_key() {
        let e = parse_str("packages: [vim]\nrootpw: x\n", "profiles/a.yaml").unwrap_err();
        assert!(e.to_string().starts_with("profiles/a.yaml: "), "{e}");
        assert!(e.to_string().contains("unknown field `rootpw`"), "{e}");
    }

    #[test]
    fn plain_password_is_refused() {
        let p = parse_str("root_password_hash: hunter2\n", "f").unwrap();
        let errs = validate("profiles/a.yaml", &p);
        assert_eq!(
            errs[0].to_string(),
            "profiles/a.yaml: root_password_hash: must be a crypt(3) hash ($6$…, $y$…), not a password; make one with `mkpasswd -m sha-512`"
        );
    }
}
