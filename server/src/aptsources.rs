//! The host's own APT sources, read to find the Debian mirror rackseed should use.
//!
//! Owns parsing of one-line `sources.list` entries and deb822 `.sources` stanzas. Never
//! invents a mirror: when the host names none, callers must ask the operator for one.

use std::path::Path;

/// One `deb` source: its base URI, suites and components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// Parses a one-line-style `sources.list`, keeping `deb` lines (not `deb-src`).
pub fn parse_sources_list(text: &str) -> Vec<AptSource> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut words = line.split_whitespace().peekable();
            if words.next()? != "deb" {
                return None;
            }
            // Skip an options block like `[arch=amd64 signed-by=...]`.
            if words.peek()?.starts_with('[') {
                for w in words.by_ref() {
                    if w.ends_with(']') {
                        break;
                    }
                }
            }
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(AptSource {
                uri,
                suites: vec![suite],
                components: words.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Parses deb822 `.sources` text, keeping enabled stanzas whose `Types` include `deb`.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut components = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let words = || {
                value
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => uris = words(),
                "suites" => suites = words(),
                "components" => components = words(),
                "enabled" => enabled = !value.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            for uri in uris {
                out.push(AptSource {
                    uri,
                    suites: suites.clone(),
                    components: components.clone(),
                });
            }
        }
    }
    out
}

/// Every `deb` source configured under `root` (normally `/`): `etc/apt/sources.list`,
/// then `etc/apt/sources.list.d/*.list` and `*.sources` in name order.
pub fn host_sources(root: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    let etc = root.join("etc/apt");
    if let Ok(text) = std::fs::read_to_string(etc.join("sources.list")) {
        out.extend(parse_sources_list(&text));
    }
    let mut files: Vec<_> = std::fs::read_dir(etc.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_sources_list(&text)),
            Some("sources") => out.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    out
}

/// The first source that looks like a Debian archive mirror (it carries a main
/// Debian suite, not `-security` or `-updates`), as a base URI without a trailing `/`.
pub fn debian_mirror(sources: &[AptSource]) -> Option<String> {
    const SUITES: [&str; 8] = [
        "bookworm", "trixie", "bullseye", "forky", "stable", "testing", "unstable", "sid",
    ];
    sources
        .iter()
        .find(|s| {
            s.suites
                .iter()
                .any(|suite| SUITES.contains(&suite.as_str()))
                && !s.uri.contains("security")
        })
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_line_sources_with_options() {
        let text = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\ndeb-src http://x/ bookworm main\n";
        let s = parse_sources_list(text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].uri, "http://mirror.example/debian");
        assert_eq!(s[0].components, vec!["main", "contrib"]);
    }

    #[test]
    fn reads_deb822_and_skips_disabled_and_security() {
        let text = "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb deb-src\n# note\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\n";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            debian_mirror(&s).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn no_mirror_when_none_configured() {
        assert_eq!(debian_mirror(&[]), None);
        let other = parse_sources_list("deb https://packages.example/apt cloud-sdk main\n");
        assert_eq!(debian_mirror(&other), None);
    }
}
