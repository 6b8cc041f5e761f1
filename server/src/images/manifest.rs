//! Image definitions: the TOML files in the repository's `images/` directory (built into
//! the binary) and in `images.manifests` (added or overriding by name). Each says which
//! installer files make an image, where they live under the mirror, and which Debian
//! package carries the same files.
//!
//! Raw serde structs with `deny_unknown_fields` become validated [`ImageDef`]s; nothing
//! else reads these files. No I/O beyond reading the directory.

use super::ImageError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The definitions built into the binary: every file in the repository's `images/`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "bookworm-amd64",
        include_str!("../../../images/bookworm-amd64.toml"),
    ),
    (
        "trixie-amd64",
        include_str!("../../../images/trixie-amd64.toml"),
    ),
];

/// A validated image definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDef {
    /// The file stem; the default name of the stored image.
    pub name: String,
    pub suite: String,
    pub arch: String,
    /// Directory under `dists/<suite>/main/installer-<arch>/current/images/`.
    pub dir: String,
    /// File names in `dir`; always include `linux` and `initrd.gz`.
    pub files: Vec<String>,
    pub package: Option<PackageDef>,
    /// Where it came from, for messages.
    pub source: String,
}

/// The Debian package that carries the same installer files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageDef {
    pub name: String,
    pub dir: PathBuf,
}

impl ImageDef {
    /// The path of `file` under `dists/<suite>/`.
    pub fn dist_path(&self, file: &str) -> String {
        format!(
            "main/installer-{}/current/images/{}/{file}",
            self.arch, self.dir
        )
    }

    /// The key of `file` in the installer's `SHA256SUMS`.
    pub fn sums_key(&self, file: &str) -> String {
        format!("{}/{file}", self.dir)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDef {
    suite: String,
    arch: String,
    dir: String,
    files: Vec<String>,
    package: Option<RawPackage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: String,
    dir: PathBuf,
}

fn word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Parses and validates one definition; `source` names it in errors.
pub fn parse_def(name: &str, text: &str, source: &str) -> Result<ImageDef, ImageError> {
    let err = |message: String| ImageError::Definition {
        path: source.into(),
        message,
    };
    if !crate::config::valid_name(name) {
        return Err(err(format!(
            "`{name}` is not a valid image name (letters, digits, `-`, `_`); rename the file"
        )));
    }
    let raw: RawDef =
        toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
    if !word(&raw.suite) {
        return Err(err(format!(
            "suite: `{}` is not a suite name like bookworm",
            raw.suite
        )));
    }
    if !word(&raw.arch) {
        return Err(err(format!(
            "arch: `{}` is not an architecture like amd64",
            raw.arch
        )));
    }
    let dir = raw.dir.trim_matches('/').to_string();
    if dir.is_empty()
        || dir
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(err(format!(
            "dir: `{}` must be a relative path like netboot/debian-installer/amd64",
            raw.dir
        )));
    }
    for f in &raw.files {
        if f.is_empty() || f.contains('/') || f == "." || f == ".." {
            return Err(err(format!("files: `{f}` must be a file name in dir")));
        }
    }
    for needed in ["linux", "initrd.gz"] {
        if !raw.files.iter().any(|f| f == needed) {
            return Err(err(format!(
                "files: `{needed}` is missing; nodes boot `linux` and `initrd.gz`"
            )));
        }
    }
    let package = match raw.package {
        None => None,
        Some(p) => {
            if !word(&p.name) {
                return Err(err(format!(
                    "package.name: `{}` is not a Debian package name",
                    p.name
                )));
            }
            if !p.dir.is_absolute() {
                return Err(err(format!(
                    "package.dir: `{}` must be an absolute path",
                    p.dir.display()
                )));
            }
            Some(PackageDef {
                name: p.name,
                dir: p.dir,
            })
        }
    };
    Ok(ImageDef {
        name: name.into(),
        suite: raw.suite,
        arch: raw.arch,
        dir,
        files: raw.files,
        package,
        source: source.into(),
    })
}

/// Every known definition by name.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub defs: BTreeMap<String, ImageDef>,
    /// The manifests directory it was loaded from, for messages.
    pub dir: PathBuf,
}

impl Catalog {
    /// The built-in definitions, then every `*.toml` in `dir` (absent is fine), which
    /// adds to or replaces them by file stem.
    pub fn load(dir: &Path) -> Result<Catalog, ImageError> {
        let mut defs = BTreeMap::new();
        for (name, text) in BUILTIN {
            let def = parse_def(name, text, &format!("<built-in images/{name}.toml>"))?;
            defs.insert(def.name.clone(), def);
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Catalog {
                    defs,
                    dir: dir.into(),
                });
            }
            Err(source) => {
                return Err(ImageError::Read {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| ImageError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let def = parse_def(&name, &text, &path.display().to_string())?;
            defs.insert(def.name.clone(), def);
        }
        Ok(Catalog {
            defs,
            dir: dir.into(),
        })
    }

    /// The definition called `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&ImageDef, ImageError> {
        self.defs
            .get(name)
            .ok_or_else(|| ImageError::UnknownDefinition {
                name: name.into(),
                known: self.defs.keys().cloned().collect::<Vec<_>>().join(", "),
                dir: self.dir.display().to_string(),
            })
    }

    /// The definition whose package directory is `dir`.
    pub fn for_package_dir(&self, dir: &Path) -> Option<&ImageDef> {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let want = canon(dir);
        self.defs
            .values()
            .find(|d| d.package.as_ref().is_some_and(|p| canon(&p.dir) == want))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_images_is_built_in_and_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in, "add every images/*.toml to BUILTIN");
        for name in &on_disk {
            let path = dir.join(format!("{name}.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let def = parse_def(name, &text, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                name.starts_with(&def.suite) && name.ends_with(&def.arch),
                "{name}: the name should be <suite>-<arch>"
            );
        }
        let c = Catalog::load(Path::new("/nonexistent")).unwrap();
        let b = c.get("bookworm-amd64").unwrap();
        assert_eq!(
            b.dist_path("linux"),
            "main/installer-amd64/current/images/netboot/debian-installer/amd64/linux"
        );
        assert_eq!(
            c.for_package_dir(Path::new(crate::config::PACKAGE_INSTALLER_DIR))
                .map(|d| d.name.as_str()),
            Some("bookworm-amd64")
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = |t: &str| parse_def("x", t, "images/x.toml").unwrap_err().to_string();
        assert_eq!(
            e("suite = \"bookworm\"\narch = \"amd64\"\ndir = \"netboot\"\nfiles = [\"linux\"]\n"),
            "images/x.toml: files: `initrd.gz` is missing; nodes boot `linux` and `initrd.gz`"
        );
        assert_eq!(
            e(
                "suite = \"bookworm\"\narch = \"amd64\"\ndir = \"../etc\"\nfiles = [\"linux\", \"initrd.gz\"]\n"
            ),
            "images/x.toml: dir: `../etc` must be a relative path like netboot/debian-installer/amd64"
        );
        assert!(e("suite = \"bookworm\"\nsuit = 1\n").contains("unknown field `suit`"));
    }

    #[test]
    fn a_manifests_directory_adds_and_overrides() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("bookworm-arm64.toml"),
            "suite = \"bookworm\"\narch = \"arm64\"\ndir = \"netboot/debian-installer/arm64\"\nfiles = [\"linux\", \"initrd.gz\"]\n",
        )
        .unwrap();
        let c = Catalog::load(d.path()).unwrap();
        assert_eq!(c.get("bookworm-arm64").unwrap().arch, "arm64");
        let e = c.get("sid-amd64").unwrap_err().to_string();
        assert!(
            e.starts_with("no image manifest named `sid-amd64`; known: bookworm-amd64, bookworm-arm64, trixie-amd64."),
            "{e}"
        );
    }
}
