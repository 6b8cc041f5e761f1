//! Counters exposed at `/metrics` in the Prometheus text format.
//!
//! Owns the counter set and its rendering; every part increments its own counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter rackseed keeps.
#[derive(Default, Debug)]
pub struct Metrics {
    pub dhcp_received: Counter,
    pub dhcp_sent: Counter,
    pub dhcp_dropped: Counter,
    pub dhcp_nak: Counter,
    pub dhcp_malformed: Counter,
    pub dhcp_discover_limited: Counter,
    pub tftp_transfers: Counter,
    pub tftp_refused: Counter,
    pub tftp_bytes: Counter,
    pub http_requests: Counter,
    pub http_connections_refused: Counter,
    pub syslog_lines: Counter,
    pub syslog_unattributed: Counter,
    pub stalls: Counter,
    pub token_refused: Counter,
    pub console_login_refused: Counter,
}

impl Metrics {
    /// The Prometheus exposition text, with node counts per state appended.
    pub fn render(&self, nodes_by_state: &[(String, i64)], tftp_active: usize) -> String {
        let mut out = String::new();
        let mut c = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP rackseed_{name} {help}\n# TYPE rackseed_{name} counter\nrackseed_{name} {v}"
            );
        };
        c(
            "dhcp_received_total",
            "DHCP packets received",
            self.dhcp_received.get(),
        );
        c("dhcp_sent_total", "DHCP replies sent", self.dhcp_sent.get());
        c(
            "dhcp_dropped_total",
            "DHCP packets dropped as malformed or unusable",
            self.dhcp_dropped.get(),
        );
        c(
            "dhcp_discover_limited_total",
            "unknown machines not recorded as discovered nodes because dhcp.discover_max or dhcp.discover_per_minute was reached",
            self.dhcp_discover_limited.get(),
        );
        c(
            "dhcp_malformed_total",
            "DHCP packets dropped before decoding: an option past the end or of the wrong length",
            self.dhcp_malformed.get(),
        );
        c("dhcp_nak_total", "DHCPNAKs sent", self.dhcp_nak.get());
        c(
            "tftp_transfers_total",
            "TFTP read requests accepted",
            self.tftp_transfers.get(),
        );
        c(
            "tftp_refused_total",
            "TFTP requests refused",
            self.tftp_refused.get(),
        );
        c(
            "tftp_bytes_total",
            "TFTP payload bytes sent",
            self.tftp_bytes.get(),
        );
        c(
            "http_requests_total",
            "HTTP requests served",
            self.http_requests.get(),
        );
        c(
            "syslog_lines_total",
            "installer syslog lines received",
            self.syslog_lines.get(),
        );
        c(
            "http_connections_refused_total",
            "HTTP connections closed at once because server.max_connections were open",
            self.http_connections_refused.get(),
        );
        c(
            "syslog_unattributed_total",
            "syslog lines from addresses of no known node",
            self.syslog_unattributed.get(),
        );
        c(
            "node_stalls_total",
            "stalled events: a node stayed in a step past its limit",
            self.stalls.get(),
        );
        c(
            "token_refused_total",
            "requests with a node's token refused because they came from another address",
            self.token_refused.get(),
        );
        c(
            "console_login_refused_total",
            "console logins refused: wrong user name or password",
            self.console_login_refused.get(),
        );
        let _ = writeln!(
            out,
            "# HELP rackseed_tftp_sessions Active TFTP transfers\n# TYPE rackseed_tftp_sessions gauge\nrackseed_tftp_sessions {tftp_active}"
        );
        let _ = writeln!(
            out,
            "# HELP rackseed_nodes Nodes per state\n# TYPE rackseed_nodes gauge"
        );
        for (state, n) in nodes_by_state {
            let _ = writeln!(out, "rackseed_nodes{{state=\"{state}\"}} {n}");
        }
        out
    }
}
