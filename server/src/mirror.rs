//! The Debian mirror an installer uses, split from its URI the way d-i's `mirror/*`
//! questions want it. Pure parsing; profiles validate mirror URLs with it and render
//! places it in the preseed.

use serde::Serialize;

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
