//! The installer log receiver: UDP syslog lines (the installer's `log_host`), stored in
//! the timeline of the node that sent them, matched by source address.
//!
//! `run` owns the socket; [`line`] parses datagrams and holds lines (pure). Lines from
//! an address no node is known by yet are held briefly (bounded) and attributed when
//! the address becomes known.

pub mod line;

use crate::state::AppState;
pub use line::{
    HOLD_ADDRS, HOLD_LINE_BYTES, HOLD_LINES, HOLD_MS, Hold, Line, MAX_LINE, parse_line,
};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Receives syslog datagrams on an already-bound socket until `cancel` fires.
pub async fn run(state: Arc<AppState>, socket: UdpSocket, cancel: CancellationToken) {
    info!(addr = ?socket.local_addr().ok(), "syslog listening");
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r { Ok(x) => x, Err(e) => { debug!(error = %crate::error_chain(&e), "syslog receive failed"); continue; } },
        };
        let Some(line) = parse_line(&buf[..len]) else {
            continue;
        };
        state.metrics.syslog_lines.inc();
        let std::net::IpAddr::V4(ip) = from.ip() else {
            continue;
        };
        match state.node_for_ip_async(from.ip()).await {
            Some(id) => {
                if let Some(q) = crate::stall::question_in(&line.text) {
                    state.events.emit(id, crate::stall::QUESTION, q);
                }
                state.events.emit(id, "syslog", line.text)
            }
            None => {
                state.metrics.syslog_unattributed.inc();
                state.hold_syslog(ip, line.text);
            }
        }
    }
}
