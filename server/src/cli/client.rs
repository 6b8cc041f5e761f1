//! The REST client of the commands that talk to a running server (`node …`,
//! `group …`): the base URL, the admin token, and decoding the one JSON error shape
//! (`{"error": …}`) into a one-line message with the HTTP status.

use super::args::ApiArgs;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::time::Duration;

/// A blocking client for the admin API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for the server `api` names.
    pub fn new(api: &ApiArgs) -> Result<Client> {
        let token = match &api.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(&api.token_file)
                .with_context(|| {
                    format!(
                        "cannot read admin token `{}`; pass --token or --token-file",
                        api.token_file.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()?;
        Ok(Client {
            base: api.url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("cannot reach rackseed at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        if text.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text).context("server sent invalid JSON")
        }
    }

    /// The client with `limit` on each whole request instead of 90 s.
    pub fn with_timeout(mut self, limit: Duration) -> Result<Client> {
        self.http = reqwest::blocking::Client::builder()
            .timeout(limit)
            .build()?;
        Ok(self)
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path` as (HTTP status, body), for a caller that judges the status itself;
    /// an error means there was no answer (no connection, a timeout).
    pub fn get_answer(&self, path: &str) -> reqwest::Result<(u16, String)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()?;
        let status = resp.status().as_u16();
        Ok((status, resp.text()?))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }
    /// A Server-Sent Events stream at `path`: its lines, read as they arrive, until
    /// the server ends it or `limit` (the whole request) passes.
    pub fn stream(
        &self,
        path: &str,
        limit: Option<Duration>,
    ) -> Result<std::io::Lines<std::io::BufReader<reqwest::blocking::Response>>> {
        use std::io::BufRead;
        let mut b = reqwest::blocking::Client::builder();
        b = match limit {
            Some(t) => b.timeout(t),
            None => b.timeout(None),
        };
        let resp = b
            .build()?
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream")
            .send()
            .with_context(|| format!("cannot reach rackseed at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(std::io::BufReader::new(resp).lines())
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
    }
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }
}

/// `s` percent-encoded for one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
