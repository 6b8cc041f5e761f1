//! How many unknown machines may become `discovered` nodes: a total cap and a rate per
//! minute (pure). A flood of random MACs on the provisioning LAN then fills neither the
//! inventory nor the timeline; it is counted and warned about instead.

use crate::node::UnixMs;

/// The discovery budget.
#[derive(Clone, Debug)]
pub struct DiscoveryLimit {
    max_total: usize,
    per_minute: usize,
    /// Discovered nodes in the inventory (as of start, plus those admitted since).
    total: usize,
    window_start: UnixMs,
    in_window: usize,
}

/// Why a machine was not admitted as a discovered node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// `dhcp.discover_max` discovered nodes exist.
    Total,
    /// `dhcp.discover_per_minute` were admitted in the last minute.
    Rate,
}

impl DiscoveryLimit {
    /// A budget with `existing` discovered nodes already stored.
    pub fn new(max_total: usize, per_minute: usize, existing: usize) -> DiscoveryLimit {
        DiscoveryLimit {
            max_total,
            per_minute,
            total: existing,
            window_start: 0,
            in_window: 0,
        }
    }

    /// Admits one new discovered node at `now`, or says which limit stops it.
    pub fn admit(&mut self, now: UnixMs) -> Result<(), Limited> {
        if self.total >= self.max_total {
            return Err(Limited::Total);
        }
        if now - self.window_start >= 60_000 {
            self.window_start = now;
            self.in_window = 0;
        }
        if self.in_window >= self.per_minute {
            return Err(Limited::Rate);
        }
        self.in_window += 1;
        self.total += 1;
        Ok(())
    }

    /// A discovered node was deleted or given a profile: room for another.
    pub fn release(&mut self) {
        self.total = self.total.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_total_both_hold() {
        let mut l = DiscoveryLimit::new(5, 2, 1);
        assert_eq!(l.admit(1_000), Ok(()));
        assert_eq!(l.admit(2_000), Ok(()));
        assert_eq!(l.admit(3_000), Err(Limited::Rate));
        assert_eq!(l.admit(61_000), Ok(()), "a new minute");
        assert_eq!(l.admit(62_000), Ok(()));
        assert_eq!(
            l.admit(121_000),
            Err(Limited::Total),
            "1 stored + 4 admitted"
        );
        l.release();
        assert_eq!(l.admit(121_500), Ok(()));
    }
}
