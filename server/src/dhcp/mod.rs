//! DHCP: leases, PXE classification, authoritative and ProxyDHCP modes, relays.
//!
//! `classify` reads packets into typed requests, `decide` turns them into outcomes,
//! `leases` keeps the address book, `limit` bounds discovery, `report` says what an exchange
//! puts on the node's timeline, `journal` is the lease journal's format, `store` keeps
//! the journal on disk, `server` owns the sockets. Only `server` and `store` do I/O.

pub mod classify;
pub mod decide;
pub mod journal;
pub mod leases;
pub mod limit;
pub mod report;
pub mod server;
pub mod store;

pub use classify::{Arch, BootClient, Request, classify};
pub use decide::{BootFile, Destination, Outcome};
pub use leases::LeaseTable;
