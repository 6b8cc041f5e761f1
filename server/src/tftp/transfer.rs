//! One TFTP read transfer, on its own thread and its own socket connected to the
//! client: blocking sends and receives, so the kernel wakes the transfer the moment an
//! ACK arrives, and the next window is read from the file while the current one is in
//! flight (read-ahead), so a window never waits on the file.
//!
//! Owns the retransmission loop; the packet formats and which blocks an ACK covers are
//! in [`super::wire`].

use super::FileReader;
use super::wire::{self, Reply, Terms};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tracing::debug;

/// Sends of one window (or OACK) before the client counts as gone.
pub const MAX_SENDS: u32 = 9;

/// How a transfer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Complete,
    /// The client sent an ERROR (a PXE ROM that only wanted the size does).
    ClientError(u16, String),
    /// No ACK after [`MAX_SENDS`] sends of the same window.
    TimedOut,
}

/// Runs the transfer of `reader` to `peer` from `socket` (bound, not yet connected)
/// under `terms`; `timeout` is the wait for each ACK.
pub fn run(
    socket: UdpSocket,
    peer: SocketAddr,
    reader: &mut FileReader,
    terms: &Terms,
    timeout: Duration,
) -> io::Result<End> {
    socket.connect(peer)?;
    socket.set_read_timeout(Some(timeout))?;
    let mut t = Transfer {
        socket,
        blksize: usize::from(terms.blksize),
        window: u64::from(terms.windowsize),
        timeout,
        read_timeout: timeout,
        ready: VecDeque::new(),
        spare: Vec::new(),
        next_index: 1,
        read_all: false,
        base: 1,
    };
    // Read the first window before answering: the client's first wait is not on the file.
    t.fill(reader, t.window)?;
    if let Some(oack) = &terms.oack
        && let Err(end) = t.until_acked(
            |t, _| t.socket.send(oack).map(drop),
            |ack| (ack == 0).then_some(0),
        )?
    {
        return Ok(end);
    }
    loop {
        if t.ready.is_empty() {
            reader.delivered = reader.size;
            return Ok(End::Complete);
        }
        let in_flight = t.window.min(t.ready.len() as u64);
        let base = t.base;
        let send = |t: &mut Transfer, attempt: u32| {
            t.send_window(in_flight)?;
            if attempt == 1 {
                // Read-ahead: the next window while this one is in flight.
                t.fill(reader, 2 * t.window)?;
            }
            Ok(())
        };
        let acked = match t.until_acked(send, |ack| wire::acked(base, in_flight, ack))? {
            Ok(n) => n,
            Err(end) => return Ok(end),
        };
        for _ in 0..acked {
            if let Some(p) = t.ready.pop_front() {
                t.spare.push(p);
            }
        }
        t.base += acked;
        reader.delivered = ((t.base - 1) * t.blksize as u64).min(reader.size);
    }
}

struct Transfer {
    socket: UdpSocket,
    blksize: usize,
    window: u64,
    timeout: Duration,
    /// The receive timeout the socket has now.
    read_timeout: Duration,
    /// Encoded DATA packets from block `base` on, read ahead.
    ready: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// The index of the next block to read.
    next_index: u64,
    /// Whether the last block (the first shorter than `blksize`) has been read.
    read_all: bool,
    /// The first block not yet acknowledged.
    base: u64,
}

impl Transfer {
    /// Reads blocks until `ready` holds `want` of them or the file is read.
    fn fill(&mut self, reader: &mut FileReader, want: u64) -> io::Result<()> {
        while (self.ready.len() as u64) < want && !self.read_all {
            let mut p = self.spare.pop().unwrap_or_default();
            wire::data_header(self.next_index, &mut p);
            p.resize(4 + self.blksize, 0);
            let off = (self.next_index - 1) * self.blksize as u64;
            let n = reader.read_at(&mut p[4..], off)?;
            p.truncate(4 + n);
            self.read_all = n < self.blksize;
            self.ready.push_back(p);
            self.next_index += 1;
        }
        Ok(())
    }

    /// Sends the first `in_flight` blocks of `ready`.
    fn send_window(&self, in_flight: u64) -> io::Result<()> {
        for p in self.ready.iter().take(in_flight as usize) {
            self.socket.send(p)?;
        }
        Ok(())
    }

    /// Sends with `send` (given the attempt, from 1) and waits for an ACK `covers`
    /// accepts, resending after each timeout: how many blocks it acknowledged, or how
    /// the transfer ended (the client's ERROR, or [`MAX_SENDS`] sends unanswered).
    fn until_acked(
        &mut self,
        mut send: impl FnMut(&mut Self, u32) -> io::Result<()>,
        covers: impl Fn(u16) -> Option<u64>,
    ) -> io::Result<Result<u64, End>> {
        for attempt in 1..=MAX_SENDS {
            send(self, attempt)?;
            if let Some(answer) = self.wait_ack(&covers)? {
                return Ok(answer);
            }
            debug!(block = self.base, attempt, "tftp resend after a timeout");
        }
        Ok(Err(End::TimedOut))
    }

    /// Receives until an ACK `covers` accepts (`Some(Ok)`), the client's ERROR
    /// (`Some(Err)`), or the timeout passes (`None`). Duplicate ACKs and stray
    /// datagrams do not restart the timeout.
    fn wait_ack(
        &mut self,
        covers: impl Fn(u16) -> Option<u64>,
    ) -> io::Result<Option<Result<u64, End>>> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 516];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // The socket keeps its timeout between calls: set only when it changes
            // (after a stray datagram), not once per ACK.
            let want = if left + Duration::from_millis(2) >= self.timeout {
                self.timeout
            } else {
                left
            };
            if want != self.read_timeout {
                self.socket.set_read_timeout(Some(want))?;
                self.read_timeout = want;
            }
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                // The client's port is closed (ICMP unreachable): it is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Ok(Some(Err(End::ClientError(0, "port unreachable".into()))));
                }
                Err(e) => return Err(e),
            };
            match wire::parse_reply(&buf[..n]) {
                Reply::Ack(a) => {
                    if let Some(k) = covers(a) {
                        return Ok(Some(Ok(k)));
                    }
                }
                Reply::Error(code, msg) => {
                    return Ok(Some(Err(End::ClientError(code, msg))));
                }
                Reply::Other => {}
            }
        }
    }
}
