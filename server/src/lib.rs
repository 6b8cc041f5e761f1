//! rackseed: a bare-metal provisioning appliance in one binary.
//!
//! Module map (data flows one way: sockets → decode → decision → encode → sockets).
//! Layers, lowest first: leaf types, decisions, I/O, then the top (`serve`, the commands). A
//! module imports only from its own layer or below, decisions use no I/O crate, and no
//! imports form a cycle; `tests/layers.py` checks this (docs/ARCHITECTURE.md, section 3).
//!
//! | module        | layer    | owns |
//! |---------------|----------|------|
//! | `config`      | leaf     | the TOML file, validated into typed config |
//! | `mac`         | leaf     | the MAC address type |
//! | `node`        | leaf     | the node record, timeline entries, lease rows, `UnixMs` |
//! | `bootfiles`   | leaf     | the names of the boot files in the TFTP tree |
//! | `mirror`      | leaf     | a Debian mirror URI split as the installer wants it |
//! | `chunks`      | leaf     | reusable read buffers of whole-file responses |
//! | `sshkey`      | leaf     | SSH public keys as a parsed type |
//! | `metrics`     | leaf     | counters, gauges and step histograms (prometheus-client), OpenMetrics text |
//! | `netif`       | leaf     | this host's interfaces, for the default advertise address |
//! | `aptsources`  | leaf     | the host's APT sources, for the default mirror |
//! | `dhcp`        | decision | classification, lease table, discovery limit, decisions, the lease journal's format (pure); `dhcp::server` and `dhcp::store` (the journal on disk) are I/O |
//! | `identity`    | decision | whether a caller is the node its token belongs to |
//! | `facts`       | decision | the facts format and its parsers |
//! | `stall`       | decision | where a node is stuck: step limits and likely causes |
//! | `profiles`    | decision | the profile format, inheritance, validation, node vars |
//! | `plan`        | decision | the expected state of an installed node (`plan.json`), from profile + node; the sample node of previews and checks |
//! | `render`      | decision | templates: iPXE scripts, kernel command line, preseed, node scripts, partman recipes; escaping per output language; the render check of a profile |
//! | `groups`      | decision | placement, replication ring, member views, replication health (`groups::health`); their SQL is `inventory::groups` |
//! | `health`      | decision | the monitoring check's verdict: conditions, thresholds, the Nagios line and exit code |
//! | `enroll`      | decision | enrollment: the token judgement, the node's plan, the decision, refusal reasons |
//! | `accounts`    | decision | console accounts: roles, password hashes, session and CSRF secrets, `authorize` |
//! | `console`     | decision | what the console shows: overview rows, durations, redacted previews |
//! | `power`       | decision | BMC records, the steps of a power request, IPMI and Redfish answers parsed (pure); `power::driver` runs ipmitool and Redfish HTTP, `power::vault` seals passwords |
//! | `commission`  | decision | hardware facts of an inventory boot, option 82 and LLDP parsed, the rules that assign a commissioned machine (pure) |
//! | `backup`      | decision | what a backup carries, its manifest and archive format, the judgement of an archive before a restore (pure); `backup::store` takes the snapshot and writes and restores files |
//! | `durable`     | I/O      | atomic file writes |
//! | `inventory`   | I/O      | SQLite (default) or PostgreSQL (`inventory::db`, one connection type) behind read and write connections, one file per job (`schema`, `nodes`, `tokens`, `leases`, `events`, `groups`, `users`); `inventory::state` is the state machine (pure) |
//! | `events`      | I/O      | the batched timeline writer and change signal |
//! | `ca`          | I/O      | rackseed's CA: server and node certificates |
//! | `images`      | I/O      | installer images: signed-chain fetch, package import, content-addressed store, kernel/mirror check |
//! | `tftp`        | I/O      | the request loop and a thread per transfer (from `workers`); `tftp::wire` (packets, options) and `tftp::tree` (names, path checks, session cap) are pure |
//! | `syslog`      | I/O      | the installer log receiver; `syslog::line` parses and holds lines |
//! | `workers`     | I/O      | a pool of threads for blocking transfers (TFTP transfers, HTTP `sendfile`), each kept for the next job |
//! | `http`        | I/O      | node-facing routes, installer events, the admin API and event stream, the console's pages (`http::ui`), the agents' mTLS listener |
//! | `state`       | I/O      | the shared `AppState` and start-up checks |
//! | `fuzzing`     | top      | fuzz targets over the parsers, shared by `cargo test` and `cargo fuzz` |
//! | `pgtest`      | top      | a throwaway PostgreSQL server for the tests (unit and end-to-end) |
//! | `serve`       | top      | binding listeners and running every part |
//! | `cli`         | top      | the command line (`cli/`): clap definitions (`args`), the REST client (`client`), one file per command group; nothing outside it imports it, and only it uses clap |
//! | `agent`       | top      | the node side: `rackseed agent`, collecting facts, replication |
//!
//! `fuzz` (test builds only) mutates checked-in seeds for the parsers' tests.

pub mod accounts;
pub mod agent;
pub mod aptsources;
pub mod backup;
pub mod bootfiles;
pub mod ca;
pub mod chunks;
pub mod cli;
pub mod commission;
pub mod config;
pub mod console;
pub mod dhcp;
pub mod durable;
pub mod enroll;
pub mod events;
pub mod facts;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod fuzzing;
pub mod groups;
pub mod health;
pub mod http;
pub mod identity;
pub mod images;
pub mod inventory;
pub mod mac;
pub mod metrics;
pub mod mirror;
pub mod netif;
pub mod node;
pub mod pgtest;
pub mod plan;
pub mod power;
pub mod profiles;
pub mod render;
pub mod serve;
pub mod sshkey;
pub mod stall;
pub mod state;
pub mod syslog;
pub mod tftp;
pub mod workers;

/// An error and its sources on one line: `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
