//! Redfish: the URLs, request bodies and the parsers of a service's answers
//! (`ComputerSystem` power state, `Boot` override and its allowed values, the
//! `ComputerSystem.Reset` action). Pure; `power::driver` sends the requests.

use super::{BootOverride, PowerError, PowerState, Step};
use serde_json::{Value, json};

/// The service's base URL (`https://host[:port]`, or `http://` where a BMC serves only
/// that), without a trailing slash.
pub fn base_url(address: &str) -> Result<String, String> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "Redfish address `{}` must start with https:// (or http://)",
                address.escape_debug()
            )
        })?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "Redfish address `{}` must be only scheme, host and port (the service root /redfish/v1 is added)",
            address.escape_debug()
        ));
    }
    super::ipmi::target(hostport.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| e.replace("BMC address", "Redfish address"))?;
    Ok(address.trim_end_matches('/').to_string())
}

/// A system's path, `/redfish/v1/Systems/<id>`.
pub fn system_path(path: &str) -> Result<(), String> {
    let id = path.strip_prefix("/redfish/v1/Systems/").unwrap_or("");
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '%'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Redfish system `{}` is not a path /redfish/v1/Systems/<id>",
            path.escape_debug()
        ))
    }
}

/// The systems a `/redfish/v1/Systems` collection lists.
pub fn members(collection: &Value) -> Result<Vec<String>, String> {
    let m = collection
        .get("Members")
        .and_then(Value::as_array)
        .ok_or("the Systems collection has no `Members` list")?;
    let paths: Vec<String> = m
        .iter()
        .filter_map(|x| x.get("@odata.id").and_then(Value::as_str))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    for p in &paths {
        system_path(p)?;
    }
    Ok(paths)
}

/// What rackseed reads from a `ComputerSystem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    pub power: PowerState,
    pub boot: BootOverride,
    /// `Boot.BootSourceOverrideTarget@Redfish.AllowableValues`, when listed.
    pub allowed_targets: Option<Vec<String>>,
    /// The `ComputerSystem.Reset` action's target.
    pub reset_uri: String,
    /// `ResetType@Redfish.AllowableValues`, when listed.
    pub reset_types: Option<Vec<String>>,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// A `ComputerSystem` resource, read.
pub fn parse_system(v: &Value) -> Result<System, String> {
    let power = match v.get("PowerState").and_then(Value::as_str) {
        Some("On") | Some("PoweringOff") => PowerState::On,
        Some("Off") | Some("PoweringOn") => PowerState::Off,
        Some(other) => return Err(format!("unknown PowerState `{}`", other.escape_debug())),
        None => return Err("the system has no PowerState".into()),
    };
    let boot = v.get("Boot");
    let target = boot
        .and_then(|b| b.get("BootSourceOverrideTarget"))
        .and_then(Value::as_str)
        .unwrap_or("None")
        .to_string();
    let enabled = boot
        .and_then(|b| b.get("BootSourceOverrideEnabled"))
        .and_then(Value::as_str)
        .unwrap_or("Disabled");
    let reset = v
        .pointer("/Actions/#ComputerSystem.Reset")
        .ok_or("the system has no ComputerSystem.Reset action")?;
    let reset_uri = reset
        .get("target")
        .and_then(Value::as_str)
        .ok_or("the ComputerSystem.Reset action has no target")?;
    if !reset_uri.starts_with("/redfish/v1/") || reset_uri.contains("..") {
        return Err(format!(
            "the Reset action's target `{}` is not under /redfish/v1/",
            reset_uri.escape_debug()
        ));
    }
    Ok(System {
        power,
        boot: BootOverride {
            enabled: enabled != "Disabled" && target != "None",
            once: enabled == "Once",
            target,
        },
        allowed_targets: strings(
            boot.and_then(|b| b.get("BootSourceOverrideTarget@Redfish.AllowableValues")),
        ),
        reset_uri: reset_uri.to_string(),
        reset_types: strings(reset.get("ResetType@Redfish.AllowableValues")),
    })
}

/// The body of the PATCH that asks for a one-time network boot.
pub fn pxe_once_body(uefi: bool) -> Value {
    let mut boot = json!({
        "BootSourceOverrideTarget": "Pxe",
        "BootSourceOverrideEnabled": "Once",
    });
    if uefi {
        boot["BootSourceOverrideMode"] = json!("UEFI");
    }
    json!({ "Boot": boot })
}

/// The `ResetType` for a power step, from the ones the system allows (the first of
/// each preference list that it allows, or the first choice when it lists none).
pub fn reset_type(step: Step, allowed: Option<&[String]>) -> Option<&'static str> {
    let prefs: &[&'static str] = match step {
        Step::PowerOn => &["On", "ForceOn"],
        Step::PowerOff => &["ForceOff", "GracefulShutdown"],
        Step::Reset => &["ForceRestart", "PowerCycle", "GracefulRestart"],
        _ => return None,
    };
    match allowed {
        None => prefs.first().copied(),
        Some(a) => prefs.iter().copied().find(|p| a.iter().any(|x| x == p)),
    }
}

/// A Redfish error response's message (`error.message`, or the first extended
/// message), shortened.
pub fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let m = v
        .pointer("/error/@Message.ExtendedInfo/0/Message")
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    let m: String = m.chars().filter(|c| !c.is_control()).take(300).collect();
    if m.is_empty() { "no message".into() } else { m }
}

/// What an HTTP status other than success means for request `what`.
pub fn failure(bmc: &str, what: &str, status: u16, body: &str) -> PowerError {
    let detail = format!("HTTP {status}: {}", error_message(body));
    match status {
        401 | 403 => PowerError::Auth {
            bmc: bmc.into(),
            detail,
        },
        _ => PowerError::Refused {
            bmc: bmc.into(),
            what: what.into(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(power: &str, target: &str, enabled: &str) -> Value {
        json!({
            "PowerState": power,
            "Boot": {
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": enabled,
                "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd", "Cd"]
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/n1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "ForceRestart"]
            }}
        })
    }

    #[test]
    fn a_system_is_read_with_its_override_and_reset_action() {
        let s = parse_system(&system("On", "Pxe", "Once")).unwrap();
        assert_eq!(s.power, PowerState::On);
        assert!(s.boot.is_pxe_once());
        assert_eq!(s.allowed_targets.as_deref().unwrap().len(), 3);
        assert_eq!(
            reset_type(Step::Reset, s.reset_types.as_deref()),
            Some("ForceRestart")
        );
        assert_eq!(
            reset_type(Step::PowerOn, Some(&["ForceOn".into()])),
            Some("ForceOn")
        );
        assert_eq!(reset_type(Step::PowerOff, Some(&[])), None);
        let c = parse_system(&system("Off", "Pxe", "Continuous")).unwrap();
        assert!(!c.boot.is_pxe_once());
        let none = parse_system(&system("Off", "None", "Disabled")).unwrap();
        assert!(!none.boot.enabled);
        let mut bad = system("On", "Pxe", "Once");
        bad["Actions"]["#ComputerSystem.Reset"]["target"] = json!("http://evil/x");
        assert!(parse_system(&bad).is_err());
        assert!(parse_system(&json!({"PowerState": "Sideways"})).is_err());
        assert!(parse_system(&json!({})).is_err());
    }

    #[test]
    fn addresses_and_members_are_checked() {
        assert_eq!(
            base_url("https://192.0.2.51:8000/").unwrap(),
            "https://192.0.2.51:8000"
        );
        for bad in [
            "192.0.2.51",
            "https://",
            "https://h/x",
            "https://u@h",
            "https://h:0",
            "https://h;x",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        let m = members(&json!({"Members": [{"@odata.id": "/redfish/v1/Systems/abc-1"}]})).unwrap();
        assert_eq!(m, ["/redfish/v1/Systems/abc-1"]);
        assert!(members(&json!({"Members": [{"@odata.id": "/etc/passwd"}]})).is_err());
        assert!(members(&json!({})).is_err());
    }

    #[test]
    fn errors_name_the_service_message() {
        let body = r#"{"error":{"code":"Base.1.0.GeneralError","message":"Boot source override target Cd is not supported"}}"#;
        let e = failure("https://192.0.2.51", "boot override", 400, body);
        assert!(e.to_string().contains("not supported"), "{e}");
        assert!(matches!(
            failure("b", "x", 401, ""),
            PowerError::Auth { .. }
        ));
        assert_eq!(
            pxe_once_body(false)["Boot"]["BootSourceOverrideEnabled"],
            "Once"
        );
    }
}
