//! This host's network interfaces, read when the operator did not say which address
//! nodes should use.
//!
//! Owns the choice of a default advertise address. Reads interface addresses and the
//! kernel routing table; changes nothing.

use std::net::Ipv4Addr;

/// IPv4 addresses of one interface, in the order the kernel lists them.
pub fn ipv4_addresses(iface: &str) -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
        })
        .collect()
}

/// The interface holding the IPv4 default route, from `/proc/net/route` text.
pub fn default_route_interface(proc_net_route: &str) -> Option<String> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.len() > 2 && cols[1] == "00000000").then(|| cols[0].to_string())
    })
}

/// The address nodes most likely reach us on: the first IPv4 address of the first DHCP
/// interface, else of the default-route interface.
pub fn detect_advertise(dhcp_interfaces: &[String]) -> Option<Ipv4Addr> {
    let iface = match dhcp_interfaces.first() {
        Some(i) => i.clone(),
        None => default_route_interface(&std::fs::read_to_string("/proc/net/route").ok()?)?,
    };
    ipv4_addresses(&iface).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_default_route_interface() {
        let t = "Iface\tDestination\tGateway\tFlags\nbr0\t0002000C\t00000000\t0001\neth0\t00000000\t010200C0\t0003\n";
        assert_eq!(default_route_interface(t).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn loopback_has_an_address() {
        assert!(ipv4_addresses("lo").contains(&Ipv4Addr::LOCALHOST));
    }
}
