//! The installer log receiver: UDP syslog lines (the installer's `log_host`), stored in
//! the timeline of the node that sent them, matched by source address.
//!
//! `parse_line` is pure; `run` owns the socket. Lines from an address no node is known
//! by yet are held briefly (bounded) and attributed when the address becomes known.

use crate::state::AppState;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Longest line kept; the rest is cut.
pub const MAX_LINE: usize = 1024;

/// One received line.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// RFC 5424 severity (0 emergency … 7 debug), when a `<PRI>` was present.
    pub severity: Option<u8>,
    pub text: String,
}

/// Parses an RFC 3164 style datagram: optional `<PRI>`, then the text. Control
/// characters are dropped, the text is cut to [`MAX_LINE`]. Empty lines give `None`.
pub fn parse_line(bytes: &[u8]) -> Option<Line> {
    let s = String::from_utf8_lossy(bytes);
    let (severity, rest) = match s.strip_prefix('<').and_then(|r| r.split_once('>')) {
        Some((pri, rest))
            if !pri.is_empty() && pri.len() <= 3 && pri.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (
                pri.parse::<u16>()
                    .ok()
                    .filter(|p| *p <= 191)
                    .map(|p| (p % 8) as u8),
                rest,
            )
        }
        _ => (None, s.as_ref()),
    };
    let text: String = rest
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .take(MAX_LINE)
        .collect();
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(Line { severity, text })
}

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
        match state.node_for_ip(from.ip()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_priority_and_text() {
        assert_eq!(
            parse_line(b"<13>Nov 22 12:00:01 main-menu[243]: INFO: Menu item 'netcfg' selected"),
            Some(Line {
                severity: Some(5),
                text: "Nov 22 12:00:01 main-menu[243]: INFO: Menu item 'netcfg' selected".into()
            })
        );
        assert_eq!(parse_line(b"no priority").unwrap().severity, None);
        assert_eq!(parse_line(b"<999>x").unwrap().severity, None);
    }

    #[test]
    fn hostile_lines_are_cleaned_and_cut() {
        let l = parse_line(b"<11>evil\x1b[2J\x00text\n").unwrap();
        assert_eq!(l.text, "evil[2Jtext");
        let long = vec![b'a'; 5000];
        assert_eq!(parse_line(&long).unwrap().text.len(), MAX_LINE);
        assert_eq!(parse_line(b"<13>   \n"), None);
        assert!(parse_line(&[0xff, 0xfe, b'x']).is_some());
    }
}
