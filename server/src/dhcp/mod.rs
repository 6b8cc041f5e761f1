//! DHCP: leases, PXE classification, authoritative and ProxyDHCP modes, relays.
//!
//! `classify` reads packets into typed requests, `decide` turns them into outcomes,
//! `leases` keeps the address book, `limit` bounds discovery, `report` says what an exchange
//! puts on the node's timeline, `server` owns the sockets. Only `server` does I/O.

pub mod classify;
pub mod decide;
pub mod leases;
pub mod limit;
pub mod report;
pub mod server;

pub use classify::{Arch, BootClient, Request, classify};
pub use decide::{BootFile, Destination, Outcome};
pub use leases::LeaseTable;
