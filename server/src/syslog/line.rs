//! Installer log lines as data: one datagram parsed into a line (`parse_line`), and
//! the bounded hold of lines from addresses not yet known (`Hold`). Pure: no socket,
//! no clock (the time is passed in), no shared state; the receiver in `syslog` calls it.

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

/// Lines from addresses no node is known by yet, held until a lease or a fetch names
/// the node (then they join its timeline) or until they are [`HOLD_MS`] old. Pure.
///
/// Bounded whatever is sent: at most [`HOLD_ADDRS`] addresses (a new address finds
/// room only when an address's lines have all expired), [`HOLD_LINES`] lines each
/// (the oldest go), each cut to [`HOLD_LINE_BYTES`] — under 13 MiB in all.
#[derive(Default)]
pub struct Hold {
    by_addr:
        std::collections::HashMap<std::net::Ipv4Addr, std::collections::VecDeque<(i64, String)>>,
    dropped: u64,
}

/// How long unattributed lines are held, in milliseconds.
pub const HOLD_MS: i64 = 5 * 60 * 1000;
/// Lines held per address.
pub const HOLD_LINES: usize = 100;
/// Addresses held at once.
pub const HOLD_ADDRS: usize = 256;
/// Bytes kept of each held line.
pub const HOLD_LINE_BYTES: usize = 512;

impl Hold {
    /// Holds `text` from `ip` at `now` (ms); a line from a new address when every
    /// address slot holds live lines is dropped (and counted).
    pub fn push(&mut self, ip: std::net::Ipv4Addr, mut text: String, now: i64) {
        if self.by_addr.len() >= HOLD_ADDRS && !self.by_addr.contains_key(&ip) {
            self.by_addr
                .retain(|_, q| q.back().is_some_and(|(at, _)| now - *at < HOLD_MS));
            if self.by_addr.len() >= HOLD_ADDRS {
                self.dropped += 1;
                return;
            }
        }
        if text.len() > HOLD_LINE_BYTES {
            let mut cut = HOLD_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let q = self.by_addr.entry(ip).or_default();
        if q.len() >= HOLD_LINES {
            q.pop_front();
        }
        q.push_back((now, text));
    }

    /// The live lines held for `ip`, oldest first; they are no longer held.
    pub fn take(&mut self, ip: std::net::Ipv4Addr, now: i64) -> Vec<String> {
        self.by_addr
            .remove(&ip)
            .map(|q| {
                q.into_iter()
                    .filter(|(at, _)| now - at < HOLD_MS)
                    .map(|(_, t)| t)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes of text held.
    pub fn bytes(&self) -> usize {
        self.by_addr
            .values()
            .flat_map(|q| q.iter().map(|(_, t)| t.len()))
            .sum()
    }

    /// Lines dropped because every address slot was taken.
    pub fn dropped(&self) -> u64 {
        self.dropped
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
    }

    /// A flood from many addresses, each sending many long lines, stays inside the cap;
    /// the lines of an address that later names its node are still there.
    #[test]
    fn a_syslog_flood_is_held_within_its_memory_cap() {
        let mut h = Hold::default();
        let node: std::net::Ipv4Addr = "192.0.2.50".parse().unwrap();
        h.push(node, "first".into(), 0);
        let long = "x".repeat(MAX_LINE);
        for a in 0..2000u32 {
            let ip = std::net::Ipv4Addr::from(0xC633_6400 + a); // 198.51.100.0 + a
            for _ in 0..150 {
                h.push(ip, long.clone(), 1000);
            }
        }
        assert!(
            h.bytes() <= HOLD_ADDRS * HOLD_LINES * HOLD_LINE_BYTES,
            "{}",
            h.bytes()
        );
        assert!(h.dropped() > 0);
        assert_eq!(h.take(node, 2000), vec!["first".to_string()]);
        assert_eq!(h.take(node, 2000), Vec::<String>::new());
        // Once the flood's lines are old, new addresses find room again.
        let late: std::net::Ipv4Addr = "203.0.113.9".parse().unwrap();
        h.push(late, "é".repeat(400), 1000 + HOLD_MS);
        let got = h.take(late, 1000 + HOLD_MS);
        assert_eq!(got.len(), 1);
        assert!(got[0].len() <= HOLD_LINE_BYTES && got[0].starts_with('é'));
        assert!(parse_line(&[0xff, 0xfe, b'x']).is_some());
    }
}
