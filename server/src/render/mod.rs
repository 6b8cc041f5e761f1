//! Rendering: node + profile → iPXE scripts, preseed and the scripts the installer runs.
//!
//! Owns the template set (minijinja; the files in `preseed/`, embedded in the binary
//! and overridable from a directory) and the context each template sees. Does no I/O
//! besides reading an override directory once.

use crate::inventory::{Node, NodeState};
use crate::profiles::Resolved;
use serde::Serialize;
use std::path::Path;

/// A template that failed to load or render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template `{name}` failed to render")]
    Render {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("cannot read template override directory `{dir}`")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no install file named `{0}`")]
    UnknownFile(String),
}

/// The embedded templates: (name, source).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "install.ipxe",
        include_str!("../../../preseed/install.ipxe.j2"),
    ),
    ("local.ipxe", include_str!("../../../preseed/local.ipxe.j2")),
    ("wait.ipxe", include_str!("../../../preseed/wait.ipxe.j2")),
    ("chain.ipxe", include_str!("../../../preseed/chain.ipxe.j2")),
    (
        "preseed.cfg",
        include_str!("../../../preseed/preseed.cfg.j2"),
    ),
    ("early.sh", include_str!("../../../preseed/early.sh.j2")),
    ("late.sh", include_str!("../../../preseed/late.sh.j2")),
];

/// The files an installing node fetches with its token, by name.
pub const INSTALL_FILES: &[&str] = &["preseed.cfg", "early.sh", "late.sh"];

/// The compiled template set.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// The templates built into the binary.
    pub fn embedded() -> Templates {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_keep_trailing_newline(true);
        env.add_filter("shquote", shquote);
        for (name, src) in EMBEDDED {
            // Embedded templates are checked by tests; a syntax error is a build defect.
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("embedded template {name}: {e}"));
        }
        Templates { env }
    }

    /// The embedded templates with any `<name>.j2` in `dir` replacing its namesake.
    pub fn with_overrides(dir: &Path) -> Result<Templates, RenderError> {
        let mut t = Templates::embedded();
        let entries = std::fs::read_dir(dir).map_err(|source| RenderError::Dir {
            dir: dir.display().to_string(),
            source,
        })?;
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".j2"))
            else {
                continue;
            };
            let src = std::fs::read_to_string(&path).map_err(|source| RenderError::Dir {
                dir: path.display().to_string(),
                source,
            })?;
            t.env
                .add_template_owned(name.to_string(), src)
                .map_err(|source| RenderError::Render {
                    name: name.to_string(),
                    source,
                })?;
        }
        Ok(t)
    }

    /// Renders template `name` with `ctx`.
    pub fn render<S: Serialize>(&self, name: &str, ctx: &S) -> Result<String, RenderError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|source| RenderError::Render {
                name: name.into(),
                source,
            })?;
        tmpl.render(ctx).map_err(|source| RenderError::Render {
            name: name.into(),
            source,
        })
    }
}

/// Quotes a value for POSIX sh: `'…'` with embedded quotes escaped.
fn shquote(v: String) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// What templates know of the node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCtx {
    pub id: i64,
    pub mac: String,
    pub mac_hyphen: String,
    pub hostname: String,
    pub domain: String,
    pub fqdn: String,
    pub display_name: String,
    pub profile: String,
    pub ip: Option<String>,
    pub state: String,
    pub group: Option<String>,
}

impl NodeCtx {
    /// The context for `node`, in `domain`.
    pub fn new(node: &Node, domain: &str) -> NodeCtx {
        let hostname = node.hostname.clone().unwrap_or_else(|| node.display_name());
        let (short, dom) = match hostname.split_once('.') {
            Some((h, d)) => (h.to_string(), d.to_string()),
            None => (hostname.clone(), domain.to_string()),
        };
        NodeCtx {
            id: node.id,
            mac: node.mac.to_string(),
            mac_hyphen: node.mac.hyphenated(),
            fqdn: if dom.is_empty() {
                short.clone()
            } else {
                format!("{short}.{dom}")
            },
            hostname: short,
            domain: dom,
            display_name: node.display_name(),
            profile: node.profile.clone().unwrap_or_default(),
            ip: node.ip.map(|i| i.to_string()),
            state: node.state.to_string(),
            group: node.group.clone(),
        }
    }
}

/// The Debian mirror as the installer's `mirror/*` questions want it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MirrorCtx {
    pub protocol: String,
    pub host: String,
    pub directory: String,
    pub suite: String,
    pub proxy: String,
}

impl MirrorCtx {
    /// Splits a mirror URI like `http://host[:port]/debian`.
    pub fn from_uri(uri: &str, suite: &str, proxy: Option<&str>) -> Option<MirrorCtx> {
        let (protocol, rest) = uri.split_once("://")?;
        if protocol != "http" && protocol != "https" {
            return None;
        }
        let (host, dir) = match rest.split_once('/') {
            Some((h, d)) => (h, format!("/{}", d.trim_end_matches('/'))),
            None => (rest, "/".to_string()),
        };
        if host.is_empty() {
            return None;
        }
        Some(MirrorCtx {
            protocol: protocol.into(),
            host: host.into(),
            directory: if dir == "/" { "/".into() } else { dir },
            suite: suite.into(),
            proxy: proxy.unwrap_or("").into(),
        })
    }
}

/// URLs an installing node uses, all carrying its install token.
#[derive(Clone, Debug, Serialize)]
pub struct UrlsCtx {
    pub base: String,
    pub preseed: String,
    pub early: String,
    pub late: String,
    pub events: String,
    pub files: String,
}

impl UrlsCtx {
    /// The URLs for `token` under `base`.
    pub fn new(base: &str, token: &str) -> UrlsCtx {
        let files = format!("{base}/install/{token}");
        UrlsCtx {
            base: base.into(),
            preseed: format!("{files}/preseed.cfg"),
            early: format!("{files}/early.sh"),
            late: format!("{files}/late.sh"),
            events: format!("{files}/events"),
            files,
        }
    }
}

/// Everything the install-file templates see.
#[derive(Clone, Debug, Serialize)]
pub struct InstallCtx {
    pub node: NodeCtx,
    pub profile: serde_json::Value,
    pub mirror: MirrorCtx,
    pub urls: UrlsCtx,
}

impl InstallCtx {
    /// Builds the context; the profile is exposed as plain data.
    pub fn new(node: NodeCtx, profile: &Resolved, mirror: MirrorCtx, urls: UrlsCtx) -> InstallCtx {
        let profile = serde_json::to_value(&profile.profile).unwrap_or(serde_json::Value::Null);
        InstallCtx {
            node,
            profile,
            mirror,
            urls,
        }
    }
}

/// Renders one of [`INSTALL_FILES`].
pub fn install_file(t: &Templates, name: &str, ctx: &InstallCtx) -> Result<String, RenderError> {
    if !INSTALL_FILES.contains(&name) {
        return Err(RenderError::UnknownFile(name.into()));
    }
    t.render(name, ctx)
}

/// Inputs of the per-node iPXE script.
pub struct ScriptInputs<'a> {
    pub base_url: &'a str,
    pub kernel_url: String,
    pub initrd_url: String,
    pub kernel_args: String,
    pub retry_secs: u64,
}

/// The iPXE script for a MAC: install for `provisioning` nodes, local disk for
/// `installed`/`enrolled`, a wait-and-retry message for everything else.
pub fn ipxe_script(
    t: &Templates,
    mac: &str,
    node: Option<&Node>,
    inputs: &ScriptInputs<'_>,
) -> Result<String, RenderError> {
    let script_url = format!("{}/boot/{}.ipxe", inputs.base_url, mac.replace(':', "-"));
    let wait = |reason: &str, hint: &str| {
        t.render(
            "wait.ipxe",
            &minijinja::context! { mac, reason, hint, retry_secs => inputs.retry_secs, script_url => &script_url },
        )
    };
    let Some(node) = node else {
        return wait(
            "is not known to rackseed",
            "add it with `rackseed node add --mac <MAC> --hostname <NAME> --profile <PROFILE>`",
        );
    };
    let nctx = NodeCtx::new(node, "");
    match node.state {
        NodeState::Provisioning => t.render(
            "install.ipxe",
            &minijinja::context! {
                node => nctx,
                kernel_url => &inputs.kernel_url,
                initrd_url => &inputs.initrd_url,
                kernel_args => &inputs.kernel_args,
                retry_secs => inputs.retry_secs,
                script_url => &script_url,
            },
        ),
        NodeState::Installed | NodeState::Enrolled => {
            t.render("local.ipxe", &minijinja::context! { node => nctx })
        }
        NodeState::Discovered => wait(
            "was discovered and waits for a profile",
            "assign it with `rackseed node add --mac <MAC> --hostname <NAME> --profile <PROFILE>`",
        ),
        NodeState::Ready => wait(
            "is ready but not scheduled for install",
            "start it with `rackseed node provision <NODE>`",
        ),
        NodeState::Installing => wait(
            "is already installing; a second boot of the installer was refused",
            "reprovision it with `rackseed node reprovision <NODE>` to start over",
        ),
        NodeState::Failed => wait(
            &format!(
                "failed: {}",
                node.state_reason.as_deref().unwrap_or("no reason recorded")
            ),
            "fix the cause and run `rackseed node reprovision <NODE>`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_uri_splits() {
        let m =
            MirrorCtx::from_uri("http://mirror.example:8080/debian/", "bookworm", None).unwrap();
        assert_eq!(
            (m.host.as_str(), m.directory.as_str()),
            ("mirror.example:8080", "/debian")
        );
        assert!(MirrorCtx::from_uri("ftp://x/debian", "bookworm", None).is_none());
        assert!(MirrorCtx::from_uri("http:///debian", "bookworm", None).is_none());
    }

    #[test]
    fn every_embedded_template_compiles() {
        let t = Templates::embedded();
        for (name, _) in EMBEDDED {
            assert!(t.env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn shquote_escapes() {
        assert_eq!(shquote("a'b".into()), r"'a'\''b'");
    }
}
