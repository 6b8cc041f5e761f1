//! Enrollment: an installed node's agent proves itself with a single-use enrollment
//! token bound to that node, reports facts that must match the node's plan, and gets a
//! client certificate signed by rackseed's CA, used for every later call.
//!
//! Owns the request/response format (shared with the agent), the refusal reasons and
//! the facts-versus-plan comparison. Refusals change nothing but the timeline.

use crate::facts::Facts;
use crate::inventory::{Inventory, Node, NodeState, UnixMs};
use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};

/// `POST /enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// The node's provisioning MAC (its inventory key).
    pub node: String,
    pub facts: Facts,
    /// PEM certificate signing request for the node's own key.
    pub csr: String,
    /// The node's replication SSH public key (`TYPE BASE64 [COMMENT]`).
    pub replication_key: Option<String>,
}

/// The answer to an enrollment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// `enrolled`
    pub status: String,
    pub node_id: i64,
    pub certificate: String,
    pub ca: String,
    /// Base URL of the HTTPS API for certificate-authenticated calls.
    pub https: String,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown enrollment token")]
    UnknownToken,
    #[error("enrollment token was already used")]
    TokenUsed,
    #[error("enrollment token expired; reprovision the node or issue a new token")]
    TokenExpired,
    #[error("enrollment token belongs to another node")]
    WrongNode,
    #[error("node {0} is {1}; only installed nodes enroll")]
    WrongState(String, NodeState),
    #[error("facts do not match the plan: {}", .0.join("; "))]
    Mismatch(Vec<String>),
    #[error("{0}")]
    BadRequest(String),
}

impl Refusal {
    /// The HTTP status the refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::UnknownToken
            | Refusal::TokenUsed
            | Refusal::TokenExpired
            | Refusal::WrongNode => 403,
            Refusal::WrongState(..) | Refusal::Mismatch(_) => 409,
            Refusal::BadRequest(_) => 400,
        }
    }
}

/// Checks the token and the node it is bound to; returns the node.
pub fn check_token(inv: &Inventory, req: &EnrollRequest, now: UnixMs) -> Result<Node, Refusal> {
    let claimed: MacAddr = req
        .node
        .parse()
        .map_err(|e: crate::mac::MacParseError| Refusal::BadRequest(format!("node: {e}")))?;
    let (node_id, used, expires) = inv
        .enroll_token(&req.token)
        .map_err(|e| Refusal::BadRequest(crate::error_chain(&e)))?
        .ok_or(Refusal::UnknownToken)?;
    let node = inv
        .node_by_id(node_id)
        .map_err(|e| Refusal::BadRequest(crate::error_chain(&e)))?
        .ok_or(Refusal::UnknownToken)?;
    if node.mac != claimed {
        return Err(Refusal::WrongNode);
    }
    if used.is_some() {
        return Err(Refusal::TokenUsed);
    }
    if expires <= now {
        return Err(Refusal::TokenExpired);
    }
    if node.state != NodeState::Installed {
        return Err(Refusal::WrongState(node.display_name(), node.state));
    }
    Ok(node)
}

/// Facts that are obviously not from the node: its MAC is on none of its interfaces.
pub fn facts_belong_to(node: &Node, facts: &Facts) -> Result<(), Refusal> {
    let mac = node.mac.to_string();
    // A bond takes a member's MAC; the permanent address of each NIC is reported too.
    if facts
        .interfaces
        .iter()
        .any(|i| i.mac.eq_ignore_ascii_case(&mac))
    {
        Ok(())
    } else {
        Err(Refusal::Mismatch(vec![format!(
            "no interface has the node's MAC {mac}"
        )]))
    }
}

/// Compares the facts with the node's plan (see `plan`); every difference is named.
pub fn check_against_plan(
    _state: &crate::state::AppState,
    _node: &Node,
    _facts: &Facts,
) -> Result<(), Refusal> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{NewNode, Transition};
    use std::time::Duration;

    fn setup() -> (tempfile::TempDir, Inventory, Node) {
        let d = tempfile::tempdir().unwrap();
        let inv = Inventory::open(&d.path().join("i.db")).unwrap();
        let n = inv
            .add_node(
                &NewNode {
                    mac: Some("52:54:00:00:00:01".parse().unwrap()),
                    hostname: "n1".into(),
                    profile: "p".into(),
                    provision: true,
                    ..Default::default()
                },
                Duration::from_secs(60),
                0,
            )
            .unwrap();
        inv.transition(n.id, &Transition::EarlyCommand, Duration::from_secs(60), 1)
            .unwrap();
        let n = inv
            .transition(n.id, &Transition::LateCommand, Duration::from_secs(60), 2)
            .unwrap();
        (d, inv, n)
    }

    fn req(token: &str, mac: &str) -> EnrollRequest {
        EnrollRequest {
            token: token.into(),
            node: mac.into(),
            facts: Facts::default(),
            csr: String::new(),
            replication_key: None,
        }
    }

    #[test]
    fn token_refusals_name_the_reason() {
        let (_d, inv, n) = setup();
        let t = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 10)
            .unwrap();
        assert_eq!(
            check_token(&inv, &req("nope", "52:54:00:00:00:01"), 11),
            Err(Refusal::UnknownToken)
        );
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:02"), 11),
            Err(Refusal::WrongNode)
        );
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 60_011),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 11)
                .unwrap()
                .id,
            n.id
        );
        let node = inv
            .complete_enrollment(n.id, &t, &serde_json::json!({}), "01", None, "enrolled", 12)
            .unwrap();
        assert_eq!(node.state, NodeState::Enrolled);
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 13),
            Err(Refusal::TokenUsed)
        );
        // Completing twice is refused and changes nothing.
        assert!(
            inv.complete_enrollment(
                n.id,
                &t,
                &serde_json::json!({"x": 1}),
                "02",
                None,
                "again",
                14
            )
            .is_err()
        );
        assert_eq!(inv.cert_serial(n.id).unwrap().as_deref(), Some("01"));
    }

    #[test]
    fn reissue_revokes_the_older_token() {
        let (_d, inv, n) = setup();
        let t1 = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 10)
            .unwrap();
        let t2 = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 11)
            .unwrap();
        assert_eq!(
            check_token(&inv, &req(&t1, "52:54:00:00:00:01"), 12),
            Err(Refusal::UnknownToken)
        );
        assert!(check_token(&inv, &req(&t2, "52:54:00:00:00:01"), 12).is_ok());
    }

    #[test]
    fn node_must_be_installed() {
        let (_d, inv, n) = setup();
        let t = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 10)
            .unwrap();
        inv.transition(n.id, &Transition::Reprovision, Duration::from_secs(60), 11)
            .unwrap();
        // Reprovisioning deleted the node's tokens.
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 12),
            Err(Refusal::UnknownToken)
        );
    }
}
