//! Power control of a node through its BMC: IPMI over LAN (RMCP+, `lanplus`) and
//! Redfish. Power on, off, cycle and status, and a one-time network boot that is read
//! back from the BMC before the machine is powered, so a refused override is reported
//! instead of booting the disk.
//!
//! Owns the BMC record's shape (address, user, which protocol), what a power request
//! does step by step ([`steps`]), and the parsers of what BMCs answer (`ipmi`,
//! `redfish`, pure). The I/O (running `ipmitool`, HTTP to a Redfish service) is
//! `power::driver`; the password is sealed at rest by `power::vault`.

pub mod driver;
pub mod ipmi;
pub mod redfish;
pub mod vault;

use serde::{Deserialize, Serialize};
use std::fmt;

/// How rackseed talks to a BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IPMI v2.0 over LAN (RMCP+), as `ipmitool -I lanplus` speaks it.
    Ipmi,
    /// DMTF Redfish over HTTPS (or HTTP where the BMC serves it).
    Redfish,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish => "redfish",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Protocol::Ipmi => "IPMI",
            Protocol::Redfish => "Redfish",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ipmi" => Ok(Protocol::Ipmi),
            "redfish" => Ok(Protocol::Redfish),
            _ => Err(format!(
                "unknown BMC protocol `{}` (ipmi, redfish)",
                s.escape_debug()
            )),
        }
    }
}

/// A node's BMC as stored and shown: never with its password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bmc {
    pub protocol: Protocol,
    /// IPMI: `host` or `host:port` (623 by default). Redfish: the service's base URL,
    /// `https://host[:port]`.
    pub address: String,
    pub username: String,
    /// Redfish: the system's path (`/redfish/v1/Systems/<id>`); the only system of the
    /// service when unset.
    pub system: Option<String>,
    /// Redfish over HTTPS: accept a certificate no CA vouches for (most BMCs ship a
    /// self-signed one).
    pub insecure_tls: bool,
}

/// A BMC with its password, for a driver.
#[derive(Clone)]
pub struct Credentials {
    pub bmc: Bmc,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("bmc", &self.bmc)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Longest accepted address, user name, password or system path.
pub const MAX_FIELD: usize = 256;

/// A checked BMC record, or what is wrong with it (naming the field and the fix).
pub fn validate(bmc: &Bmc, password: &str) -> Result<(), String> {
    let printable = |name: &str, v: &str, empty_ok: bool| -> Result<(), String> {
        if v.is_empty() && !empty_ok {
            return Err(format!("BMC {name} is empty; give one"));
        }
        if v.len() > MAX_FIELD {
            return Err(format!("BMC {name} is longer than {MAX_FIELD} bytes"));
        }
        if v.chars().any(|c| c.is_control()) {
            return Err(format!(
                "BMC {name} `{}` holds a control character (a newline?); give it on one line",
                v.escape_debug()
            ));
        }
        Ok(())
    };
    printable("address", &bmc.address, false)?;
    printable("user name", &bmc.username, false)?;
    printable("password", password, false)?;
    match bmc.protocol {
        Protocol::Ipmi => {
            ipmi::target(&bmc.address)?;
            if password.len() > 20 {
                return Err(
                    "IPMI passwords are at most 20 bytes (IPMI v2.0, section 13.31); shorten it on the BMC and here"
                        .into(),
                );
            }
            if bmc.username.len() > 16 {
                return Err("IPMI user names are at most 16 bytes".into());
            }
            if bmc.system.is_some() {
                return Err("`system` is a Redfish setting; an IPMI BMC has one system".into());
            }
        }
        Protocol::Redfish => {
            redfish::base_url(&bmc.address)?;
            if let Some(s) = &bmc.system {
                printable("system", s, false)?;
                redfish::system_path(s)?;
            }
        }
    }
    Ok(())
}

/// What an operator asks of a node's power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    On,
    Off,
    Cycle,
    Status,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Cycle => "cycle",
            Action::Status => "status",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Action::On),
            "off" => Ok(Action::Off),
            "cycle" => Ok(Action::Cycle),
            "status" => Ok(Action::Status),
            _ => Err(format!(
                "unknown power action `{}` (on, off, cycle, status)",
                s.escape_debug()
            )),
        }
    }
}

/// Whether the machine is on, as its BMC says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

/// One thing a driver does against the BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the power state.
    ReadPower,
    /// Ask for a one-time network (PXE) boot on the next start.
    SetPxeOnce,
    /// Read the boot override back; anything but a one-time network boot is a refusal.
    CheckPxeOnce,
    PowerOn,
    PowerOff,
    /// A hard reset of a machine that is on.
    Reset,
}

/// The steps of `action` on a machine whose power is `now`, with a one-time network
/// boot first when `pxe`: an override that does not read back stops before any power
/// change; `cycle` of a machine that is off powers it on; `on` of one that is on and
/// `off` of one that is off change nothing. Every request ends by reading the power.
pub fn steps(action: Action, now: PowerState, pxe: bool) -> Vec<Step> {
    let mut s = Vec::new();
    let powers_up = matches!(action, Action::On | Action::Cycle);
    if pxe && powers_up {
        s.extend([Step::SetPxeOnce, Step::CheckPxeOnce]);
    }
    match (action, now) {
        (Action::On, PowerState::Off) | (Action::Cycle, PowerState::Off) => s.push(Step::PowerOn),
        (Action::Cycle, PowerState::On) => s.push(Step::Reset),
        (Action::Off, PowerState::On) => s.push(Step::PowerOff),
        _ => {}
    }
    s.push(Step::ReadPower);
    s
}

/// The boot override a BMC reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootOverride {
    /// e.g. `pxe`, `disk`, `none` (IPMI), or Redfish's `Pxe`, `Hdd`, `None`.
    pub target: String,
    /// Whether it applies to the next boot only.
    pub once: bool,
    /// Whether an override is in force at all.
    pub enabled: bool,
}

impl BootOverride {
    /// True for a one-time network boot.
    pub fn is_pxe_once(&self) -> bool {
        self.is_pxe() && self.once
    }

    /// True for a network boot override, once or on every boot. Either serves: a
    /// node that keeps booting from the network gets rackseed's script, which sends an
    /// installed node to its disk.
    pub fn is_pxe(&self) -> bool {
        self.enabled && self.target.eq_ignore_ascii_case("pxe")
    }
}

impl fmt::Display for BootOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.enabled {
            return write!(f, "no override ({})", self.target);
        }
        let when = if self.once { "once" } else { "every boot" };
        write!(f, "{} {when}", self.target)
    }
}

/// Why a power request failed: each names the BMC and what to do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PowerError {
    #[error(
        "{bmc}: the BMC refused the user name or password ({detail}); set the right ones with `rackseed node bmc set`"
    )]
    Auth { bmc: String, detail: String },
    #[error(
        "{bmc}: the BMC did not answer ({detail}); check its address, that it is on the management network, and that rackseed can reach it"
    )]
    Unreachable { bmc: String, detail: String },
    #[error(
        "{bmc}: the network boot override was refused: asked for PXE once, the BMC reports {got}; the machine was left as it was (set network boot in its firmware or BMC)"
    )]
    OverrideRefused { bmc: String, got: String },
    #[error("{bmc}: the BMC refused `{what}`: {detail}")]
    Refused {
        bmc: String,
        what: String,
        detail: String,
    },
    #[error("{bmc}: cannot read the BMC's answer to `{what}`: {detail}")]
    Protocol {
        bmc: String,
        what: String,
        detail: String,
    },
    #[error("cannot run `ipmitool` ({0}); install Debian's `ipmitool` package")]
    NoTool(String),
}

impl PowerError {
    /// The JSON error code of the admin API for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            PowerError::Auth { .. } => "bmc_auth",
            PowerError::Unreachable { .. } => "bmc_unreachable",
            PowerError::OverrideRefused { .. } => "bmc_override_refused",
            PowerError::Refused { .. } => "bmc_refused",
            PowerError::Protocol { .. } => "bmc_protocol",
            PowerError::NoTool(_) => "bmc_tool",
        }
    }
}

/// What a finished power request did, for the timeline and the caller.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    pub action: Action,
    /// The power state the BMC reports at the end.
    pub power: PowerState,
    /// The override read back, when one was set.
    pub boot_override: Option<BootOverride>,
    /// What was done, in order (`power on`, `reset`, …).
    pub done: Vec<String>,
}

impl Report {
    /// One line for the node's timeline.
    pub fn summary(&self, bmc: &Bmc) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.boot_override {
            parts.push(format!("network boot override set and read back ({o})"));
        }
        parts.extend(self.done.iter().cloned());
        let did = if parts.is_empty() {
            String::new()
        } else {
            format!("{}; ", parts.join(", "))
        };
        format!(
            "power {} over {} ({}): {did}the BMC reports power {}",
            self.action.as_str(),
            bmc.protocol.title(),
            bmc.address,
            self.power.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipmi() -> Bmc {
        Bmc {
            protocol: Protocol::Ipmi,
            address: "192.0.2.50:623".into(),
            username: "admin".into(),
            system: None,
            insecure_tls: false,
        }
    }

    #[test]
    fn a_network_boot_is_checked_before_any_power_change() {
        assert_eq!(
            steps(Action::Cycle, PowerState::On, true),
            [
                Step::SetPxeOnce,
                Step::CheckPxeOnce,
                Step::Reset,
                Step::ReadPower
            ]
        );
        assert_eq!(
            steps(Action::Cycle, PowerState::Off, true),
            [
                Step::SetPxeOnce,
                Step::CheckPxeOnce,
                Step::PowerOn,
                Step::ReadPower
            ]
        );
        assert_eq!(steps(Action::On, PowerState::On, false), [Step::ReadPower]);
        assert_eq!(steps(Action::Off, PowerState::Off, true), [Step::ReadPower]);
        assert_eq!(
            steps(Action::Off, PowerState::On, true),
            [Step::PowerOff, Step::ReadPower]
        );
        assert_eq!(
            steps(Action::Status, PowerState::On, true),
            [Step::ReadPower]
        );
    }

    #[test]
    fn bmc_records_are_checked_field_by_field() {
        assert!(validate(&ipmi(), "secret").is_ok());
        let e = validate(&ipmi(), "pa\nss").unwrap_err();
        assert!(e.contains("control character"), "{e}");
        let mut b = ipmi();
        b.address = "192.0.2.50:99999".into();
        assert!(validate(&b, "x").unwrap_err().contains("port"));
        b.address = "bmc;reboot".into();
        assert!(validate(&b, "x").is_err());
        let e = validate(&ipmi(), &"x".repeat(21)).unwrap_err();
        assert!(e.contains("20 bytes"), "{e}");
        let r = Bmc {
            protocol: Protocol::Redfish,
            address: "ftp://192.0.2.51".into(),
            ..ipmi()
        };
        assert!(validate(&r, "x").unwrap_err().contains("https://"));
        let ok = Bmc {
            address: "https://192.0.2.51:8443".into(),
            system: Some("/redfish/v1/Systems/node1".into()),
            ..r
        };
        assert!(validate(&ok, "x").is_ok());
    }

    #[test]
    fn overrides_other_than_pxe_once_are_not_taken_for_one() {
        let o = |t: &str, once, enabled| BootOverride {
            target: t.into(),
            once,
            enabled,
        };
        assert!(o("pxe", true, true).is_pxe_once());
        assert!(o("Pxe", true, true).is_pxe_once());
        assert!(!o("Pxe", false, true).is_pxe_once());
        assert!(o("Pxe", false, true).is_pxe(), "every boot serves too");
        assert!(!o("Hdd", true, true).is_pxe());
        assert!(!o("Hdd", true, true).is_pxe_once());
        assert!(!o("Pxe", true, false).is_pxe_once());
        assert_eq!(o("Pxe", false, true).to_string(), "Pxe every boot");
    }
}
