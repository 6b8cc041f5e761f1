//! The address book of authoritative mode: which address each MAC holds, which are
//! offered, declined or reserved, and which are free.
//!
//! Pure and in memory; time is passed in. The DHCP server loads it from the inventory
//! at start and persists the [`LeaseWrite`]s it returns before answering.

use crate::config::Subnet;
use crate::mac::MacAddr;
use crate::node::{LeaseRow, LeaseWrite, UnixMs};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Where an address stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Offered in an OFFER, held briefly; never persisted.
    Offered,
    /// Acknowledged; persisted.
    Bound,
    /// A client said the address is in use by someone else; held back, persisted.
    Declined,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
        }
    }
}

/// One address in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub state: LeaseState,
    pub expires_at: UnixMs,
    pub hostname: Option<String>,
}

impl Lease {
    fn row(&self) -> LeaseRow {
        LeaseRow {
            ip: self.ip,
            mac: self.mac,
            state: self.state.as_str().into(),
            expires_at: self.expires_at,
            hostname: self.hostname.clone(),
        }
    }
}

/// Why no address could be chosen.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("subnet {0} has no free address in its pool")]
    Exhausted(String),
    #[error("subnet {0} has no pool and this MAC has no reservation in it")]
    NoPool(String),
}

/// The in-memory lease table.
#[derive(Default, Debug)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
    reserved_by_mac: HashMap<MacAddr, Ipv4Addr>,
    reserved_by_ip: HashMap<Ipv4Addr, MacAddr>,
    cursors: HashMap<Ipv4Addr, u32>,
}

impl LeaseTable {
    /// A table holding the persisted leases.
    pub fn from_rows(rows: Vec<LeaseRow>) -> LeaseTable {
        let mut t = LeaseTable::default();
        for r in rows {
            let state = match r.state.as_str() {
                "bound" => LeaseState::Bound,
                "declined" => LeaseState::Declined,
                _ => continue,
            };
            if let Some(mac) = r.mac {
                t.by_mac.insert(mac, r.ip);
            }
            t.by_ip.insert(
                r.ip,
                Lease {
                    ip: r.ip,
                    mac: r.mac,
                    state,
                    expires_at: r.expires_at,
                    hostname: r.hostname,
                },
            );
        }
        t
    }

    /// Replaces the set of fixed addresses (nodes with an `ip`).
    pub fn set_reservations(&mut self, list: impl IntoIterator<Item = (MacAddr, Ipv4Addr)>) {
        self.reserved_by_mac.clear();
        self.reserved_by_ip.clear();
        for (m, ip) in list {
            self.reserved_by_mac.insert(m, ip);
            self.reserved_by_ip.insert(ip, m);
        }
    }

    /// The lease a MAC holds (any state, possibly expired).
    pub fn lease_of(&self, mac: MacAddr) -> Option<&Lease> {
        self.by_mac.get(&mac).and_then(|ip| self.by_ip.get(ip))
    }

    /// The lease on an address.
    pub fn lease_at(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The MAC that holds `ip` in an unexpired bound lease (for attributing TFTP/HTTP/syslog traffic).
    pub fn holder_of(&self, ip: Ipv4Addr, now: UnixMs) -> Option<MacAddr> {
        self.by_ip
            .get(&ip)
            .filter(|l| l.state == LeaseState::Bound && l.expires_at > now)
            .and_then(|l| l.mac)
    }

    /// Every lease held (any state).
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }

    /// Number of leases held (any state).
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// True when no address is held.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// The reserved address of `mac`, if it lies in `subnet`.
    pub fn reservation(&self, mac: MacAddr, subnet: &Subnet) -> Option<Ipv4Addr> {
        self.reserved_by_mac
            .get(&mac)
            .copied()
            .filter(|ip| subnet.network.contains(ip))
    }

    /// True if `ip` may be given to `mac` now: inside the subnet, not the network or
    /// broadcast address, not reserved for another MAC, not held by another MAC.
    pub fn available_to(&self, ip: Ipv4Addr, mac: MacAddr, subnet: &Subnet, now: UnixMs) -> bool {
        if !subnet.network.contains(&ip)
            || ip == subnet.network.network()
            || ip == subnet.network.broadcast()
        {
            return false;
        }
        if self.reserved_by_ip.get(&ip).is_some_and(|m| *m != mac) {
            return false;
        }
        match self.by_ip.get(&ip) {
            None => true,
            Some(l) if l.mac == Some(mac) => l.state != LeaseState::Declined || l.expires_at <= now,
            Some(l) => l.expires_at <= now,
        }
    }

    fn in_pool(ip: Ipv4Addr, subnet: &Subnet) -> bool {
        subnet.range.is_some_and(|(a, b)| ip >= a && ip <= b)
    }

    /// Chooses an address for `mac` in `subnet`: its reservation, else the address it
    /// already holds, else the one it asks for if free, else the next free pool address.
    pub fn pick(
        &mut self,
        mac: MacAddr,
        subnet: &Subnet,
        requested: Option<Ipv4Addr>,
        now: UnixMs,
    ) -> Result<Ipv4Addr, PickError> {
        if let Some(ip) = self.reservation(mac, subnet) {
            return Ok(ip);
        }
        if let Some(l) = self.lease_of(mac)
            && Self::in_pool(l.ip, subnet)
            && self.available_to(l.ip, mac, subnet, now)
        {
            return Ok(l.ip);
        }
        if let Some(ip) = requested
            && Self::in_pool(ip, subnet)
            && self.available_to(ip, mac, subnet, now)
        {
            return Ok(ip);
        }
        let Some((first, last)) = subnet.range else {
            return Err(PickError::NoPool(subnet.network.to_string()));
        };
        let (first, last) = (u32::from(first), u32::from(last));
        let size = last - first + 1;
        let key = subnet.network.network();
        let start = self.cursors.get(&key).copied().unwrap_or(0) % size;
        for i in 0..size {
            let off = (start + i) % size;
            let ip = Ipv4Addr::from(first + off);
            if self.available_to(ip, mac, subnet, now) {
                self.cursors.insert(key, (off + 1) % size);
                return Ok(ip);
            }
        }
        Err(PickError::Exhausted(subnet.network.to_string()))
    }

    fn put(&mut self, lease: Lease) {
        if let Some(mac) = lease.mac {
            if let Some(old) = self.by_mac.insert(mac, lease.ip)
                && old != lease.ip
            {
                self.by_ip.remove(&old);
            }
        }
        if let Some(prev) = self.by_ip.insert(lease.ip, lease.clone())
            && let Some(pm) = prev.mac
            && Some(pm) != lease.mac
            && self.by_mac.get(&pm) == Some(&lease.ip)
        {
            self.by_mac.remove(&pm);
        }
    }

    /// Holds `ip` for `mac` until `until` (an OFFER). Not persisted.
    pub fn offer(&mut self, mac: MacAddr, ip: Ipv4Addr, until: UnixMs) {
        if let Some(l) = self.lease_of(mac)
            && l.ip == ip
            && l.state == LeaseState::Bound
            && l.expires_at > until
        {
            return; // keep the longer bound lease
        }
        self.put(Lease {
            ip,
            mac: Some(mac),
            state: LeaseState::Offered,
            expires_at: until,
            hostname: None,
        });
    }

    /// Binds `ip` to `mac` until `until` (an ACK) and returns what to persist.
    pub fn bind(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        until: UnixMs,
        hostname: Option<String>,
    ) -> LeaseWrite {
        let lease = Lease {
            ip,
            mac: Some(mac),
            state: LeaseState::Bound,
            expires_at: until,
            hostname,
        };
        let row = lease.row();
        self.put(lease);
        LeaseWrite::Upsert(row)
    }

    /// Frees the lease `mac` holds on `ip` (a RELEASE). `None` if it holds no such lease.
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> Option<LeaseWrite> {
        if self.by_mac.get(&mac) != Some(&ip) {
            return None;
        }
        self.by_mac.remove(&mac);
        self.by_ip.remove(&ip);
        Some(LeaseWrite::Delete(ip))
    }

    /// Drops an unacknowledged offer (the client chose another server).
    pub fn forget_offer(&mut self, mac: MacAddr) {
        if let Some(l) = self.lease_of(mac)
            && l.state == LeaseState::Offered
        {
            let ip = l.ip;
            self.by_mac.remove(&mac);
            self.by_ip.remove(&ip);
        }
    }

    /// Another rackseed on the same PostgreSQL inventory holds `ip` (this server's
    /// claim of it for `mac` was refused): `mac` loses it, and it is not offered again
    /// before `until`. Not persisted (the database row is the other server's).
    pub fn held_elsewhere(&mut self, mac: MacAddr, ip: Ipv4Addr, until: UnixMs) {
        if self.by_mac.get(&mac) == Some(&ip) {
            self.by_mac.remove(&mac);
        }
        self.by_ip.insert(
            ip,
            Lease {
                ip,
                mac: None,
                state: LeaseState::Declined,
                expires_at: until,
                hostname: None,
            },
        );
    }

    /// Marks `ip` unusable until `until` (a DECLINE from `mac`). `None` if `mac` was
    /// not given `ip` by us (a forged DECLINE cannot take addresses away).
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, until: UnixMs) -> Option<LeaseWrite> {
        if self.by_mac.get(&mac) != Some(&ip) {
            return None;
        }
        self.by_mac.remove(&mac);
        let lease = Lease {
            ip,
            mac: None,
            state: LeaseState::Declined,
            expires_at: until,
            hostname: None,
        };
        let row = lease.row();
        self.by_ip.insert(ip, lease);
        Some(LeaseWrite::Upsert(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(range: Option<(u8, u8)>) -> Subnet {
        Subnet {
            network: "192.0.2.0/24".parse().unwrap(),
            interface: Some("br0".into()),
            range: range.map(|(a, b)| (Ipv4Addr::new(192, 0, 2, a), Ipv4Addr::new(192, 0, 2, b))),
            router: None,
            dns: vec![],
            domain: None,
            lease_time: None,
        }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, n)
    }

    #[test]
    fn allocates_distinct_addresses_then_exhausts() {
        let s = subnet(Some((10, 12)));
        let mut t = LeaseTable::default();
        let mut got = vec![];
        for n in 1..=3 {
            let a = t.pick(mac(n), &s, None, 0).unwrap();
            t.offer(mac(n), a, 1000);
            got.push(a);
        }
        got.sort();
        assert_eq!(got, vec![ip(10), ip(11), ip(12)]);
        assert_eq!(
            t.pick(mac(9), &s, None, 0),
            Err(PickError::Exhausted("192.0.2.0/24".into()))
        );
        // Offers lapse: the address is free again after `until`.
        assert!(t.pick(mac(9), &s, None, 1000).is_ok());
    }

    #[test]
    fn same_mac_keeps_its_address_and_renews() {
        let s = subnet(Some((10, 20)));
        let mut t = LeaseTable::default();
        let a = t.pick(mac(1), &s, None, 0).unwrap();
        t.bind(mac(1), a, 5000, None);
        assert_eq!(t.pick(mac(1), &s, None, 100), Ok(a));
        // Even after expiry, if nobody took it.
        assert_eq!(t.pick(mac(1), &s, None, 9000), Ok(a));
    }

    #[test]
    fn requested_address_is_honoured_when_free() {
        let s = subnet(Some((10, 20)));
        let mut t = LeaseTable::default();
        assert_eq!(t.pick(mac(1), &s, Some(ip(15)), 0), Ok(ip(15)));
        t.bind(mac(1), ip(15), 5000, None);
        assert_ne!(t.pick(mac(2), &s, Some(ip(15)), 0), Ok(ip(15)));
        assert_ne!(
            t.pick(mac(2), &s, Some(ip(200)), 0),
            Ok(ip(200)),
            "outside the pool"
        );
    }

    #[test]
    fn reservations_win_and_are_never_pooled() {
        let s = subnet(Some((10, 10)));
        let mut t = LeaseTable::default();
        t.set_reservations([(mac(7), ip(10)), (mac(8), ip(50))]);
        assert_eq!(
            t.pick(mac(8), &s, None, 0),
            Ok(ip(50)),
            "reservation outside the pool"
        );
        assert_eq!(
            t.pick(mac(1), &s, None, 0),
            Err(PickError::Exhausted("192.0.2.0/24".into()))
        );
        assert_eq!(t.pick(mac(7), &s, None, 0), Ok(ip(10)));
        assert_eq!(subnet(None).range, None);
        assert_eq!(
            t.pick(mac(1), &subnet(None), None, 0),
            Err(PickError::NoPool("192.0.2.0/24".into()))
        );
    }

    #[test]
    fn release_frees_and_moves_on() {
        let s = subnet(Some((10, 11)));
        let mut t = LeaseTable::default();
        t.bind(mac(1), ip(10), 5000, None);
        assert_eq!(
            t.release(mac(2), ip(10)),
            None,
            "someone else cannot release it"
        );
        assert_eq!(t.release(mac(1), ip(10)), Some(LeaseWrite::Delete(ip(10))));
        assert!(t.available_to(ip(10), mac(3), &s, 0));
    }

    #[test]
    fn declined_address_is_held_back() {
        let s = subnet(Some((10, 11)));
        let mut t = LeaseTable::default();
        t.bind(mac(1), ip(10), 5000, None);
        assert!(t.decline(mac(2), ip(10), 9000).is_none(), "forged decline");
        assert!(t.decline(mac(1), ip(10), 9000).is_some());
        assert_eq!(t.pick(mac(1), &s, None, 100), Ok(ip(11)));
        assert!(t.available_to(ip(10), mac(3), &s, 9000));
    }

    #[test]
    fn survives_a_restart_through_rows() {
        let mut t = LeaseTable::default();
        let w = t.bind(mac(1), ip(10), 5000, Some("web1".into()));
        let LeaseWrite::Upsert(row) = w else { panic!() };
        let t2 = LeaseTable::from_rows(vec![row]);
        assert_eq!(t2.lease_of(mac(1)).unwrap().ip, ip(10));
        assert_eq!(t2.holder_of(ip(10), 100), Some(mac(1)));
        assert_eq!(t2.holder_of(ip(10), 5000), None, "expired");
    }

    #[test]
    fn moving_a_mac_frees_its_old_address() {
        let s = subnet(Some((10, 12)));
        let mut t = LeaseTable::default();
        t.bind(mac(1), ip(10), 5000, None);
        t.bind(mac(1), ip(11), 5000, None);
        assert!(t.lease_at(ip(10)).is_none());
        assert!(t.available_to(ip(10), mac(2), &s, 0));
    }
}
