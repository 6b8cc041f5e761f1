//! The groups' SQL: group records in the inventory's `groups` table and membership in
//! `nodes.grp`. Only reads and writes; placement and planning are in `crate::groups`.

use crate::config::GroupConfig;
use crate::facts::Facts;
use crate::groups::{Group, Member, check_placement, member_from};
use crate::inventory::{Inventory, InventoryError};
use crate::node::{NodeState, UnixMs};

use super::db::{DbError, Row, p};
use super::{q, rows};

fn group_from_row(r: &Row) -> Result<Group, DbError> {
    let datasets: String = r.get(5)?;
    Ok(Group {
        name: r.get(0)?,
        min_members: r.get::<i64>(1)? as u32,
        failure_domain: r.get(2)?,
        interval_secs: r.get::<i64>(3)? as u64,
        retention: r.get(4)?,
        datasets: serde_json::from_str(&datasets).unwrap_or_default(),
        replication_network: r.get(6)?,
        version: r.get(7)?,
    })
}

const GROUP_COLS: &str = "name, min_members, failure_domain, interval_secs, retention, datasets, replication_network, version";

/// Creates a group; a name in use is a conflict.
pub fn create(inv: &Inventory, g: &Group, now: UnixMs) -> Result<(), InventoryError> {
    inv.with_conn(|c| {
        let n = c
            .execute(
                "INSERT INTO groups (name, min_members, failure_domain, interval_secs, retention, datasets, replication_network, version, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8) ON CONFLICT(name) DO NOTHING",
                p![g.name, g.min_members, g.failure_domain, g.interval_secs as i64, g.retention, serde_json::to_string(&g.datasets).unwrap_or_default(), g.replication_network, now],
            )
            .map_err(q("creating a group"))?;
        if n == 0 {
            return Err(InventoryError::Conflict(format!("group `{}` already exists", g.name)));
        }
        Ok(())
    })
}

/// Creates or updates the groups the config names (the config wins on its fields).
pub fn sync_config_groups(
    inv: &Inventory,
    groups: &[GroupConfig],
    now: UnixMs,
) -> Result<(), InventoryError> {
    inv.with_conn(|c| {
        for g in groups {
            c.execute(
                "INSERT INTO groups (name, min_members, failure_domain, interval_secs, retention, datasets, replication_network, version, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)
                 ON CONFLICT(name) DO UPDATE SET min_members = excluded.min_members, failure_domain = excluded.failure_domain, interval_secs = excluded.interval_secs,
                   retention = excluded.retention, datasets = excluded.datasets, replication_network = excluded.replication_network,
                   version = groups.version + CASE WHEN (groups.min_members != excluded.min_members OR COALESCE(groups.failure_domain,'') != COALESCE(excluded.failure_domain,'') OR groups.interval_secs != excluded.interval_secs OR groups.retention != excluded.retention OR groups.datasets != excluded.datasets OR COALESCE(groups.replication_network,'') != COALESCE(excluded.replication_network,'')) THEN 1 ELSE 0 END",
                p![g.name, g.min_members, g.failure_domain, g.interval.as_secs() as i64, g.retention, serde_json::to_string(&g.datasets).unwrap_or_default(), g.replication_network, now],
            )
            .map_err(q("applying configured groups"))?;
        }
        Ok(())
    })
}

/// Every group, by name.
pub fn list(inv: &Inventory) -> Result<Vec<Group>, InventoryError> {
    inv.with_conn(|c| {
        c.query(
            &format!("SELECT {GROUP_COLS} FROM groups ORDER BY name"),
            &[],
        )
        .and_then(|all| rows(all, group_from_row))
        .map_err(q("listing groups"))
    })
}

/// The group called `name`.
pub fn get(inv: &Inventory, name: &str) -> Result<Group, InventoryError> {
    inv.with_conn(|c| {
        c.query_opt(
            &format!("SELECT {GROUP_COLS} FROM groups WHERE name = ?1"),
            p![name],
        )
        .and_then(|r| r.as_ref().map(group_from_row).transpose())
        .map_err(q("reading a group"))?
        .ok_or_else(|| InventoryError::NotFound(format!("group `{name}`")))
    })
}

/// Deletes an empty group.
pub fn delete(inv: &Inventory, name: &str) -> Result<(), InventoryError> {
    inv.with_conn(|c| {
        let n: i64 = c
            .query_one("SELECT COUNT(*) FROM nodes WHERE grp = ?1", p![name])
            .and_then(|r| r.get(0))
            .map_err(q("deleting a group"))?;
        if n > 0 {
            return Err(InventoryError::Conflict(format!(
                "group `{name}` still has {n} member(s); remove them first"
            )));
        }
        let d = c
            .execute("DELETE FROM groups WHERE name = ?1", p![name])
            .map_err(q("deleting a group"))?;
        if d == 0 {
            return Err(InventoryError::NotFound(format!("group `{name}`")));
        }
        Ok(())
    })
}

/// A member's row: id, name, state, failure domain, facts JSON, replication key.
type MemberRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The members of a group as placement and planning see them.
pub fn members(inv: &Inventory, group: &Group) -> Result<Vec<Member>, InventoryError> {
    let rows: Vec<MemberRow> = inv.with_conn(|c| {
        c.query("SELECT id, COALESCE(hostname, mac), state, failure_domain, facts, repl_key FROM nodes WHERE grp = ?1 ORDER BY hostname", p![group.name])
            .and_then(|all| rows(all, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))))
            .map_err(q("reading group members"))
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, host, state, fd, facts, key)| {
            let facts: Option<Facts> = facts.and_then(|f| serde_json::from_str(&f).ok());
            let state = state.parse().unwrap_or(NodeState::Failed);
            member_from(
                id,
                &host,
                state,
                fd,
                facts.as_ref(),
                key,
                group.replication_network.as_deref(),
            )
        })
        .collect())
}

/// Puts a node into `group` (checking placement) or takes it out (`None`), bumping the
/// version of every group whose membership changed.
pub fn set_membership(
    inv: &Inventory,
    node_id: i64,
    group: Option<&str>,
) -> Result<(), InventoryError> {
    let (host, state, fd, old): (String, String, Option<String>, Option<String>) = inv.with_conn(|c| {
        c.query_opt("SELECT COALESCE(hostname, mac), state, failure_domain, grp FROM nodes WHERE id = ?1", p![node_id])
            .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).transpose())
            .map_err(q("changing membership"))?
            .ok_or_else(|| InventoryError::NotFound(format!("node {node_id}")))
    })?;
    if old.as_deref() == group {
        return Ok(());
    }
    if let Some(name) = group {
        let g = get(inv, name)?;
        let members = members(inv, &g)?;
        let candidate = Member {
            node_id,
            hostname: host,
            state: state.parse().unwrap_or(NodeState::Failed),
            failure_domain: fd,
            replication_address: None,
            ssh_host_keys: vec![],
            replication_key: None,
        };
        check_placement(&g, &members, &candidate)
            .map_err(|e| InventoryError::Conflict(e.to_string()))?;
    }
    inv.with_conn(|c| {
        let mut tx = c.transaction().map_err(q("changing membership"))?;
        tx.execute(
            "UPDATE nodes SET grp = ?2 WHERE id = ?1",
            p![node_id, group],
        )
        .map_err(q("changing membership"))?;
        for g in [old.as_deref(), group].into_iter().flatten() {
            tx.execute(
                "UPDATE groups SET version = version + 1 WHERE name = ?1",
                p![g],
            )
            .map_err(q("changing membership"))?;
        }
        tx.commit().map_err(q("changing membership"))
    })
}

/// Bumps a group's version (a member's replication data changed).
pub fn touch(inv: &Inventory, name: &str) -> Result<(), InventoryError> {
    inv.with_conn(|c| {
        c.execute(
            "UPDATE groups SET version = version + 1 WHERE name = ?1",
            p![name],
        )
        .map(|_| ())
        .map_err(q("updating a group"))
    })
}
