//! rackseed: a bare-metal provisioning appliance in one binary.
//!
//! Module map (data flows one way: sockets → decode → decision → encode → sockets):
//!
//! | module      | owns |
//! |-------------|------|
//! | `config`    | the TOML file, validated into typed config |
//! | `mac`, `netif`, `aptsources`, `sshkey`, `durable` | small shared types, host facts, atomic file writes |
//! | `inventory` | SQLite: nodes, timeline events, tokens, leases; the state machine |
//! | `events`    | the batched timeline writer and change signal |
//! | `dhcp`      | classification, lease table, decisions (pure) and the socket loops |
//! | `tftp`      | the read-only virtual tree and the async-tftp handler |
//! | `http`      | node-facing routes, installer events, the admin API |
//! | `identity`  | whether a caller is the node its token belongs to (pure) |
//! | `syslog`    | installer log lines per node |
//! | `render`    | templates: iPXE scripts, preseed, installer and node scripts, partman recipes; the render check of a profile |
//! | `profiles`  | the profile format, inheritance, validation, node vars |
//! | `plan`      | the expected state of an installed node (`plan.json`), from profile + node; the sample node of previews and checks |
//! | `images`    | installer images: signed-chain fetch, package import, content-addressed store, kernel/mirror check |
//! | `stall`     | where a node is stuck: step limits and likely causes (pure) |
//! | `state`     | the shared `AppState` and start-up checks |
//! | `serve`     | binding listeners and running every part |
//! | `cli`       | the command line (`cli/`): clap definitions (`args`), the REST client (`client`), one file per command group (`serve`, `check`, `node`, `group`, `agent`, `image`, `profile`); nothing outside it imports it, and only it uses clap |

pub mod agent;
pub mod aptsources;
pub mod ca;
pub mod cli;
pub mod config;
pub mod dhcp;
pub mod durable;
pub mod enroll;
pub mod events;
pub mod facts;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod fuzzing;
pub mod groups;
pub mod http;
pub mod identity;
pub mod images;
pub mod inventory;
pub mod mac;
pub mod metrics;
pub mod netif;
pub mod plan;
pub mod profiles;
pub mod render;
pub mod serve;
pub mod sshkey;
pub mod stall;
pub mod state;
pub mod syslog;
pub mod tftp;

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
