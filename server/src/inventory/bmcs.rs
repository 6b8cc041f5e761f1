//! Each node's BMC (see [`crate::power`]): the record, and the password only as the
//! bytes `power::vault` sealed.

use super::*;
use crate::power::{Bmc, Protocol};

/// A `bmcs` row: protocol, address, user, sealed password, system, insecure TLS.
type BmcRow = (String, String, String, Vec<u8>, Option<String>, bool);

impl Inventory {
    /// Sets (or replaces) node `id`'s BMC with its sealed password.
    pub fn set_bmc(&self, id: i64, bmc: &Bmc, sealed: &[u8], now: UnixMs) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO bmcs (node_id, protocol, address, username, password, system, insecure_tls, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(node_id) DO UPDATE SET protocol = ?2, address = ?3, username = ?4,
                   password = ?5, system = ?6, insecure_tls = ?7, updated_at = ?8",
                p![
                    id,
                    bmc.protocol.as_str(),
                    bmc.address,
                    bmc.username,
                    sealed,
                    bmc.system,
                    bmc.insecure_tls,
                    now
                ],
            )
            .map_err(q("storing a BMC"))?;
            Ok(())
        })
    }

    /// Node `id`'s BMC and its sealed password.
    pub fn bmc(&self, id: i64) -> Result<Option<(Bmc, Vec<u8>)>> {
        let row: Option<BmcRow> = self.read(|c| {
            c.query_opt(
                "SELECT protocol, address, username, password, system, insecure_tls FROM bmcs WHERE node_id = ?1",
                p![id],
            )
            .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))).transpose())
            .map_err(q("reading a BMC"))
        })?;
        Ok(
            row.and_then(|(p, address, username, sealed, system, insecure_tls)| {
                let protocol: Protocol = p.parse().ok()?;
                Some((
                    Bmc {
                        protocol,
                        address,
                        username,
                        system,
                        insecure_tls,
                    },
                    sealed,
                ))
            }),
        )
    }

    /// Removes node `id`'s BMC.
    pub fn delete_bmc(&self, id: i64) -> Result<()> {
        self.with(|c| {
            let n = c
                .execute("DELETE FROM bmcs WHERE node_id = ?1", p![id])
                .map_err(q("removing a BMC"))?;
            if n == 0 {
                return Err(InventoryError::NotFound(format!("a BMC of node {id}")));
            }
            Ok(())
        })
    }
}
