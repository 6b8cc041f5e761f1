//! The node state machine of DESIGN.md, enforced here and nowhere else.
//!
//! Owns which state follows which event. Does not touch the database: the inventory
//! calls [`next_state`] inside the transaction that stores the result.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a node is on its path from power-on to group membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Seen on the network (PXE DHCP) but not assigned a profile by anyone.
    Discovered,
    /// Booted into the inventory mode and reported its hardware; no rule assigned it.
    Commissioned,
    /// Known (hostname, profile) but not to be installed yet.
    Ready,
    /// Will be installed on its next network boot.
    Provisioning,
    /// The installer has loaded its preseed and run `early_command`.
    Installing,
    /// The installer has run `late_command`; the node boots from disk.
    Installed,
    /// The agent enrolled with facts matching the plan.
    Enrolled,
    /// A step failed; the reason is kept with the node.
    Failed,
}

impl NodeState {
    /// Every state, in path order.
    pub const ALL: [NodeState; 8] = [
        NodeState::Discovered,
        NodeState::Commissioned,
        NodeState::Ready,
        NodeState::Provisioning,
        NodeState::Installing,
        NodeState::Installed,
        NodeState::Enrolled,
        NodeState::Failed,
    ];

    /// The lowercase name used in the API, the database and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Discovered => "discovered",
            NodeState::Commissioned => "commissioned",
            NodeState::Ready => "ready",
            NodeState::Provisioning => "provisioning",
            NodeState::Installing => "installing",
            NodeState::Installed => "installed",
            NodeState::Enrolled => "enrolled",
            NodeState::Failed => "failed",
        }
    }

    /// True while an install token may be used to fetch the preseed and scripts.
    pub fn serves_installer(self) -> bool {
        matches!(self, NodeState::Provisioning | NodeState::Installing)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown node state `{s}`"))
    }
}

/// Something that happened to a node and may move it to another state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// An operator assigned hostname and profile; `provision` says whether to install now.
    Assign { provision: bool },
    /// An operator asked a `ready` node to be installed.
    Provision,
    /// The inventory boot reported the machine's hardware.
    Commission,
    /// The installer ran `early_command`.
    EarlyCommand,
    /// The installer ran `late_command`.
    LateCommand,
    /// The agent's facts matched the plan.
    Enroll,
    /// A step failed.
    Fail { reason: String },
    /// An operator asked for a fresh install.
    Reprovision,
}

impl Transition {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Transition::Assign { .. } => "assign",
            Transition::Provision => "provision",
            Transition::Commission => "commission",
            Transition::EarlyCommand => "early_command",
            Transition::LateCommand => "late_command",
            Transition::Enroll => "enroll",
            Transition::Fail { .. } => "fail",
            Transition::Reprovision => "reprovision",
        }
    }
}

/// A transition that the state machine does not allow from the node's state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {transition} a node that is {from}{hint}")]
pub struct TransitionError {
    pub from: NodeState,
    pub transition: &'static str,
    pub hint: &'static str,
}

/// The state a node in `from` moves to on `t`, or why it may not.
pub fn next_state(from: NodeState, t: &Transition) -> Result<NodeState, TransitionError> {
    use NodeState::*;
    let refuse = |hint: &'static str| TransitionError {
        from,
        transition: t.name(),
        hint,
    };
    match (t, from) {
        (Transition::Assign { provision }, Discovered | Commissioned | Ready) => {
            Ok(if *provision { Provisioning } else { Ready })
        }
        (Transition::Assign { .. }, _) => Err(refuse(" (it is already assigned; use reprovision)")),
        (Transition::Commission, Discovered | Commissioned) => Ok(Commissioned),
        (Transition::Commission, _) => Err(refuse(
            " (only discovered machines are commissioned; delete the node to start over)",
        )),
        (Transition::Provision, Ready) => Ok(Provisioning),
        (Transition::Provision, Provisioning) => Ok(Provisioning),
        (Transition::Provision, _) => Err(refuse(
            " (only ready nodes can be provisioned; use reprovision)",
        )),
        // An installer that restarts runs early_command again.
        (Transition::EarlyCommand, Provisioning | Installing) => Ok(Installing),
        (Transition::EarlyCommand, _) => Err(refuse("")),
        (Transition::LateCommand, Installing) => Ok(Installed),
        (Transition::LateCommand, _) => {
            Err(refuse(" (late_command arrives only after early_command)"))
        }
        (Transition::Enroll, Installed) => Ok(Enrolled),
        (Transition::Enroll, _) => Err(refuse(" (only installed nodes enroll)")),
        (Transition::Fail { .. }, Discovered | Commissioned) => Err(refuse(" (assign it first)")),
        (Transition::Fail { .. }, _) => Ok(Failed),
        (Transition::Reprovision, Discovered | Commissioned) => {
            Err(refuse(" (assign a hostname and profile first)"))
        }
        (Transition::Reprovision, _) => Ok(Provisioning),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    #[test]
    fn the_happy_path_reaches_enrolled() {
        let mut s = Discovered;
        for t in [
            Transition::Assign { provision: true },
            Transition::EarlyCommand,
            Transition::LateCommand,
            Transition::Enroll,
        ] {
            s = next_state(s, &t).unwrap();
        }
        assert_eq!(s, Enrolled);
    }

    #[test]
    fn assign_without_provision_holds_in_ready() {
        assert_eq!(
            next_state(Discovered, &Transition::Assign { provision: false }),
            Ok(Ready)
        );
        assert_eq!(next_state(Ready, &Transition::Provision), Ok(Provisioning));
    }

    #[test]
    fn out_of_order_installer_events_are_refused() {
        let e = next_state(Provisioning, &Transition::LateCommand).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot late_command a node that is provisioning (late_command arrives only after early_command)"
        );
        assert!(next_state(Installed, &Transition::EarlyCommand).is_err());
        assert!(next_state(Enrolled, &Transition::Enroll).is_err());
        assert!(next_state(Installing, &Transition::Enroll).is_err());
    }

    #[test]
    fn reprovision_and_fail_from_any_assigned_state() {
        for s in [Ready, Provisioning, Installing, Installed, Enrolled, Failed] {
            assert_eq!(next_state(s, &Transition::Reprovision), Ok(Provisioning));
            assert_eq!(
                next_state(s, &Transition::Fail { reason: "x".into() }),
                Ok(Failed)
            );
        }
        assert!(next_state(Discovered, &Transition::Reprovision).is_err());
    }

    #[test]
    fn commissioning_reports_then_a_rule_or_an_operator_assigns() {
        assert_eq!(
            next_state(Discovered, &Transition::Commission),
            Ok(Commissioned)
        );
        assert_eq!(
            next_state(Commissioned, &Transition::Commission),
            Ok(Commissioned)
        );
        assert_eq!(
            next_state(Commissioned, &Transition::Assign { provision: true }),
            Ok(Provisioning)
        );
        for s in [Ready, Provisioning, Installing, Installed, Enrolled, Failed] {
            assert!(next_state(s, &Transition::Commission).is_err(), "{s}");
        }
        assert!(next_state(Commissioned, &Transition::Reprovision).is_err());
        assert!(next_state(Commissioned, &Transition::Fail { reason: "x".into() }).is_err());
    }

    #[test]
    fn early_command_repeats_while_installing() {
        assert_eq!(
            next_state(Installing, &Transition::EarlyCommand),
            Ok(Installing)
        );
    }

    #[test]
    fn names_round_trip() {
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>(), Ok(s));
        }
    }
}
