//! The inventory on PostgreSQL: the real `rackseed serve` with `inventory.url` set to a
//! throwaway PostgreSQL server (`rackseed::pgtest`, started and removed by the test)
//! hands leases to a real DHCP client, stores them in PostgreSQL and keeps them across
//! a crash.

use anyhow::Result;
use rackseed::inventory::{Inventory, InventoryLocation, PostgresUrl};
use rackseed_tests::{Lab, LabConfig, Server, wait_for};
use std::time::Duration;

use super::protocol::udhcpc;

#[test]
fn rackseed_on_postgres_hands_out_a_lease_stored_in_postgres() -> Result<()> {
    let pg = rackseed::pgtest::PgServer::start().map_err(anyhow::Error::msg)?;
    let url = pg.create_database().map_err(anyhow::Error::msg)?;
    // A password in the URL (the socket trusts the user; it is never asked for) must
    // not reach the log.
    let url = url.replacen("postgres@", "postgres:hunter2@", 1);
    let mut lab = Lab::new()?;
    let mut srv = Server::start(&lab, &LabConfig::lab().set("inventory.url", url.clone()))?;
    let mac = "52:54:00:31:00:01";
    let c = lab.client(mac, None)?.name.clone();
    fn client<'a>(lab: &'a Lab, name: &str) -> &'a rackseed_tests::Netns {
        lab.clients.iter().find(|x| x.name == name).expect("client")
    }
    let ip = udhcpc(client(&lab, &c), None)?;
    assert!(ip.starts_with("192.0.2.1"), "{ip} outside the pool");

    // The DHCP writer stores the lease off the reply path: wait (bounded) until the
    // row is in PostgreSQL, read through a second inventory on the same database.
    let other = Inventory::open_at(&InventoryLocation::Postgres(
        PostgresUrl::parse(&url).map_err(anyhow::Error::msg)?,
    ))?;
    let row = wait_for(
        "the lease row in PostgreSQL",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            other
                .load_leases()
                .ok()?
                .into_iter()
                .find(|l| l.ip.to_string() == ip)
        },
    )?;
    assert_eq!(row.mac.map(|m| m.to_string()).as_deref(), Some(mac));
    assert_eq!(row.state, "bound");

    // After a crash the address stays this client's (leases come back from the journal
    // and PostgreSQL), and the server says where its inventory is without the password.
    srv.crash_restart()?;
    assert_eq!(udhcpc(client(&lab, &c), Some(&ip))?, ip);
    let log = srv.log_text();
    assert!(
        log.contains("inventory opened"),
        "{}",
        rackseed_tests::tail(&log, 20)
    );
    assert!(!log.contains("hunter2"), "the password reached the log");
    // `rackseed check` connects to it too (and shows the URL without the password).
    let check = std::process::Command::new(rackseed_tests::rackseed_bin())
        .args(["check", "--config"])
        .arg(&srv.config)
        .output()?;
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("inventory postgres://postgres:***@") && out.contains(": ok"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    let leases = srv.api("/api/leases")?;
    assert!(leases.to_string().contains(&ip), "{leases}");
    drop(srv);
    drop(pg);
    Ok(())
}

/// Two rackseed servers on one PostgreSQL inventory: another server (a second
/// inventory on the same database, through the same claim its journal thread makes)
/// binds the first pool address after this server loaded its address book. This
/// server then offers that address to a new client, but its claim loses: no ACK
/// leaves for it, the client's retry is refused, and it ends with another address;
/// the other server's row stays.
#[test]
fn an_address_another_rackseed_bound_is_not_acked_again() -> Result<()> {
    let pg = rackseed::pgtest::PgServer::start().map_err(anyhow::Error::msg)?;
    let url = pg.create_database().map_err(anyhow::Error::msg)?;
    let mut lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab().set("inventory.url", url.clone()))?;
    let other = Inventory::open_at(&InventoryLocation::Postgres(
        PostgresUrl::parse(&url).map_err(anyhow::Error::msg)?,
    ))?;
    let now = rackseed::inventory::now_ms();
    let held = rackseed::inventory::LeaseRow {
        ip: "192.0.2.100".parse()?,
        mac: Some("52:54:00:32:00:99".parse()?),
        state: "bound".into(),
        expires_at: now + 3_600_000,
        hostname: None,
    };
    assert!(other.claim_lease(&held, now)?);
    let c = lab.client("52:54:00:32:00:01", None)?.name.clone();
    fn client<'a>(lab: &'a Lab, name: &str) -> &'a rackseed_tests::Netns {
        lab.clients.iter().find(|x| x.name == name).expect("client")
    }
    let ip = udhcpc(client(&lab, &c), None)?;
    assert_ne!(
        ip, "192.0.2.100",
        "an address another server holds was acked"
    );
    assert!(ip.starts_with("192.0.2.1"), "{ip}");
    let log = srv.log_text();
    assert!(
        log.contains("address held by another rackseed on the same inventory"),
        "{}",
        rackseed_tests::tail(&log, 30)
    );
    let rows = wait_for(
        "the client's lease row in PostgreSQL",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let rows = other.load_leases().ok()?;
            rows.iter().any(|l| l.ip.to_string() == ip).then_some(rows)
        },
    )?;
    let row = rows.iter().find(|l| l.ip == held.ip).expect("held row");
    assert_eq!(row, &held, "the other server's binding stays");
    drop(srv);
    drop(pg);
    Ok(())
}
