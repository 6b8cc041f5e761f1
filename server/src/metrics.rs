//! Metrics exposed at `/metrics` in the Prometheus (OpenMetrics) text format, kept
//! with the `prometheus-client` library.
//!
//! Owns the metric set, its registry and rendering; every part increments its own
//! counters; the step histograms are observed where a node moves on
//! ([`Metrics::observe_step`]); the gauges are set when `/metrics` is read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A monotonically increasing counter (the library's, registered once).
#[derive(Clone, Debug, Default)]
pub struct Counter(prometheus_client::metrics::counter::Counter<u64>);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// The label of a step histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: String,
}

/// The label of a per-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// The labels of a group member's gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabel {
    pub group: String,
    pub node: String,
}

/// The steps whose durations are kept as histograms.
pub mod step {
    /// The node's first DHCP request of an install to the installer fetching its preseed.
    pub const DHCP_TO_PRESEED: &str = "dhcp_to_preseed";
    /// early_command (`installing`) to late_command (`installed`).
    pub const INSTALL: &str = "install";
    /// `installed` (late_command) to enrolled (first boot and enrollment).
    pub const FIRST_BOOT: &str = "first_boot_to_enrolled";
}

fn step_histogram() -> Histogram {
    // 10 s … about 5.7 h.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        10.0, 2.0, 12,
    ))
}

/// Every metric rackseed keeps.
#[derive(Debug)]
pub struct Metrics {
    pub dhcp_received: Counter,
    pub dhcp_sent: Counter,
    pub dhcp_dropped: Counter,
    pub dhcp_nak: Counter,
    pub dhcp_malformed: Counter,
    pub dhcp_discover_limited: Counter,
    pub dhcp_journal_flushes: Counter,
    pub dhcp_journal_resets: Counter,
    pub tftp_transfers: Counter,
    pub tftp_refused: Counter,
    pub tftp_bytes: Counter,
    pub http_requests: Counter,
    pub http_connections_refused: Counter,
    pub http_sendfile_bytes: Counter,
    pub syslog_lines: Counter,
    pub syslog_unattributed: Counter,
    pub stalls: Counter,
    pub token_refused: Counter,
    pub console_login_refused: Counter,
    pub replication_lag_alarms: Counter,
    /// Seconds per step of an install, by step ([`step`]).
    pub step_seconds: Family<StepLabel, Histogram, fn() -> Histogram>,
    nodes: Family<StateLabel, Gauge>,
    replication_lag: Family<MemberLabel, Gauge>,
    stalled: Gauge,
    tftp_sessions: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut m = Metrics {
            dhcp_received: Counter::default(),
            dhcp_sent: Counter::default(),
            dhcp_dropped: Counter::default(),
            dhcp_nak: Counter::default(),
            dhcp_malformed: Counter::default(),
            dhcp_discover_limited: Counter::default(),
            dhcp_journal_flushes: Counter::default(),
            dhcp_journal_resets: Counter::default(),
            tftp_transfers: Counter::default(),
            tftp_refused: Counter::default(),
            tftp_bytes: Counter::default(),
            http_requests: Counter::default(),
            http_connections_refused: Counter::default(),
            http_sendfile_bytes: Counter::default(),
            syslog_lines: Counter::default(),
            syslog_unattributed: Counter::default(),
            stalls: Counter::default(),
            token_refused: Counter::default(),
            console_login_refused: Counter::default(),
            replication_lag_alarms: Counter::default(),
            step_seconds: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            nodes: Family::default(),
            replication_lag: Family::default(),
            stalled: Gauge::default(),
            tftp_sessions: Gauge::default(),
            registry: Registry::with_prefix("rackseed"),
        };
        let mut r = Registry::with_prefix("rackseed");
        r.register(
            "dhcp_received",
            "DHCP packets received",
            m.dhcp_received.0.clone(),
        );
        r.register("dhcp_sent", "DHCP replies sent", m.dhcp_sent.0.clone());
        r.register(
            "dhcp_dropped",
            "DHCP packets dropped as malformed or unusable",
            m.dhcp_dropped.0.clone(),
        );
        r.register("dhcp_discover_limited", "unknown machines not recorded as discovered nodes because dhcp.discover_max or dhcp.discover_per_minute was reached", m.dhcp_discover_limited.0.clone());
        r.register(
            "dhcp_malformed",
            "DHCP packets dropped before decoding: an option past the end or of the wrong length",
            m.dhcp_malformed.0.clone(),
        );
        r.register("dhcp_nak", "DHCPNAKs sent", m.dhcp_nak.0.clone());
        r.register(
            "dhcp_journal_flushes",
            "lease journal group commits (one write and one flush each; ACKs per flush = rackseed_dhcp_sent / this, under load)",
            m.dhcp_journal_flushes.0.clone(),
        );
        r.register(
            "dhcp_journal_resets",
            "lease journal switches to its other half (its records are all in the inventory)",
            m.dhcp_journal_resets.0.clone(),
        );
        r.register(
            "tftp_transfers",
            "TFTP read requests accepted",
            m.tftp_transfers.0.clone(),
        );
        r.register(
            "tftp_refused",
            "TFTP requests refused",
            m.tftp_refused.0.clone(),
        );
        r.register(
            "tftp_bytes",
            "TFTP payload bytes sent",
            m.tftp_bytes.0.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests served",
            m.http_requests.0.clone(),
        );
        r.register(
            "http_sendfile_bytes",
            "HTTP body bytes sent with sendfile (whole installer files, iPXE binaries, drivers)",
            m.http_sendfile_bytes.0.clone(),
        );
        r.register(
            "syslog_lines",
            "installer syslog lines received",
            m.syslog_lines.0.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed at once because server.max_connections were open",
            m.http_connections_refused.0.clone(),
        );
        r.register(
            "syslog_unattributed",
            "syslog lines from addresses of no known node",
            m.syslog_unattributed.0.clone(),
        );
        r.register(
            "node_stalls",
            "stalled events: a node stayed in a step past its limit",
            m.stalls.0.clone(),
        );
        r.register(
            "token_refused",
            "requests with a node's token refused because they came from another address",
            m.token_refused.0.clone(),
        );
        r.register(
            "console_login_refused",
            "console logins refused: wrong user name or password",
            m.console_login_refused.0.clone(),
        );
        r.register(
            "replication_lag_alarms",
            "replication lag alarms raised: a group member's last successful replication is older than two intervals",
            m.replication_lag_alarms.0.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "seconds since each group member's last successful replication (or since it joined)",
            m.replication_lag.clone(),
        );
        r.register(
            "step_seconds",
            "seconds a node took for a step of its install: dhcp_to_preseed, install (early_command to late_command), first_boot_to_enrolled",
            m.step_seconds.clone(),
        );
        r.register("nodes", "Nodes per state", m.nodes.clone());
        r.register(
            "nodes_stalled",
            "Nodes stalled in a step now",
            m.stalled.clone(),
        );
        r.register(
            "tftp_sessions",
            "Active TFTP transfers",
            m.tftp_sessions.clone(),
        );
        m.registry = r;
        m
    }
}

impl Metrics {
    /// Records that a node took `seconds` for `step` (one of [`step`]).
    pub fn observe_step(&self, step: &str, seconds: f64) {
        self.step_seconds
            .get_or_create(&StepLabel { step: step.into() })
            .observe(seconds.max(0.0));
    }

    /// Sets each group member's replication lag (group, node, seconds); members no
    /// longer listed are dropped.
    pub fn set_replication_lag(&self, lags: &[(String, String, i64)]) {
        self.replication_lag.clear();
        for (group, node, secs) in lags {
            self.replication_lag
                .get_or_create(&MemberLabel {
                    group: group.clone(),
                    node: node.clone(),
                })
                .set(*secs);
        }
    }

    /// The exposition text, with the node counts per state, the stalled nodes and the
    /// active TFTP transfers as of now.
    pub fn render(
        &self,
        nodes_by_state: &[(String, i64)],
        stalled: usize,
        tftp_active: usize,
    ) -> String {
        // Every state is listed, at 0 when no node is in it.
        for s in crate::node::NodeState::ALL {
            let n = nodes_by_state
                .iter()
                .find(|(k, _)| k == s.as_str())
                .map_or(0, |(_, n)| *n);
            self.nodes
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n);
        }
        for step in [step::DHCP_TO_PRESEED, step::INSTALL, step::FIRST_BOOT] {
            let _ = self
                .step_seconds
                .get_or_create(&StepLabel { step: step.into() });
        }
        self.stalled.set(i64::try_from(stalled).unwrap_or(i64::MAX));
        self.tftp_sessions
            .set(i64::try_from(tftp_active).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_counters_gauges_and_step_histograms() {
        let m = Metrics::default();
        m.dhcp_received.inc();
        m.tftp_bytes.add(512);
        m.observe_step(step::INSTALL, 600.0);
        m.set_replication_lag(&[("rg1".into(), "node1".into(), 120)]);
        let text = m.render(&[("installing".into(), 3)], 1, 2);
        for want in [
            "# TYPE rackseed_dhcp_received counter",
            "rackseed_dhcp_received_total 1",
            "rackseed_tftp_bytes_total 512",
            "rackseed_nodes{state=\"installing\"} 3",
            "rackseed_nodes{state=\"enrolled\"} 0",
            "rackseed_nodes_stalled 1",
            "rackseed_replication_lag_seconds{group=\"rg1\",node=\"node1\"} 120",
            "rackseed_tftp_sessions 2",
            "# TYPE rackseed_step_seconds histogram",
            "rackseed_step_seconds_count{step=\"install\"} 1",
            "rackseed_step_seconds_sum{step=\"install\"} 600.0",
            "rackseed_step_seconds_bucket{le=\"640.0\",step=\"install\"} 1",
            "rackseed_step_seconds_count{step=\"dhcp_to_preseed\"} 0",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
