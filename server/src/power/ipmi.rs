//! IPMI over LAN through `ipmitool -I lanplus`: the arguments of each step and the
//! parsers of what ipmitool prints. Pure; `power::driver` runs the tool, with the
//! password in its environment (`-E`, `IPMI_PASSWORD`), never on its command line.

use super::{BootOverride, PowerError, PowerState, Step};

/// The RMCP port when an address names none.
pub const DEFAULT_PORT: u16 = 623;

/// `host` or `host:port` as (host, port); the host is an IPv4 address or a DNS name.
pub fn target(address: &str) -> Result<(String, u16), String> {
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!(
                    "BMC address `{}`: `{}` is not a port (1-65535)",
                    address.escape_debug(),
                    p.escape_debug()
                )
            })?;
            (h, port)
        }
        None => (address, DEFAULT_PORT),
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !name_ok {
        return Err(format!(
            "BMC address `{}` is not an IPv4 address or host name (with an optional :port)",
            address.escape_debug()
        ));
    }
    Ok((host.to_string(), port))
}

/// The ipmitool arguments for `step` (session options first): `uefi` asks the
/// firmware for an EFI network boot.
pub fn args(host: &str, port: u16, user: &str, step: Step, uefi: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "-I",
        "lanplus",
        "-H",
        host,
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-E",
        "-C",
        "3",
        "-R",
        "2",
        "-N",
        "2",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cmd: &[&str] = match step {
        Step::ReadPower => &["chassis", "power", "status"],
        Step::PowerOn => &["chassis", "power", "on"],
        Step::PowerOff => &["chassis", "power", "off"],
        Step::Reset => &["chassis", "power", "reset"],
        Step::SetPxeOnce if uefi => &["chassis", "bootdev", "pxe", "options=efiboot"],
        Step::SetPxeOnce => &["chassis", "bootdev", "pxe"],
        Step::CheckPxeOnce => &["chassis", "bootparam", "get", "5"],
    };
    a.extend(cmd.iter().map(|s| s.to_string()));
    a
}

/// `Chassis Power is on|off`.
pub fn parse_power(out: &str) -> Result<PowerState, String> {
    for line in out.lines() {
        if let Some(v) = line.trim().strip_prefix("Chassis Power is ") {
            return match v.trim() {
                "on" => Ok(PowerState::On),
                "off" => Ok(PowerState::Off),
                other => Err(format!("unknown power state `{}`", other.escape_debug())),
            };
        }
    }
    Err("no `Chassis Power is …` line".into())
}

/// The boot flags (boot option parameter 5) from `chassis bootparam get 5`, read from
/// its `Boot parameter data:` bytes (IPMI v2.0 table 28-14): byte 1 bit 7 valid,
/// bit 6 persistent; byte 2 bits 5:2 the device. A forced device counts as an
/// override even with the valid bit clear: some BMCs (OpenIPMI's among them) keep the
/// device and not the bit.
pub fn parse_boot_flags(out: &str) -> Result<BootOverride, String> {
    let hex = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Boot parameter data:"))
        .map(str::trim)
        .ok_or("no `Boot parameter data:` line")?;
    let bytes = hex::decode(hex.get(..4).unwrap_or(hex))
        .map_err(|_| format!("boot parameter data `{}` is not hex", hex.escape_debug()))?;
    let [b1, b2] = bytes[..] else {
        return Err(format!(
            "boot parameter data `{}` is shorter than 2 bytes",
            hex.escape_debug()
        ));
    };
    let target = match (b2 >> 2) & 0x0f {
        0x0 => "none",
        0x1 => "pxe",
        0x2 => "disk",
        0x3 => "safe",
        0x4 => "diag",
        0x5 => "cdrom",
        0x6 => "bios",
        0xf => "floppy",
        _ => "other",
    };
    Ok(BootOverride {
        target: target.into(),
        once: b1 & 0x40 == 0,
        enabled: b1 & 0x80 != 0 || target != "none",
    })
}

/// What a failed ipmitool run means, from its output. ipmitool says
/// `Unable to establish IPMI v2 / RMCP+ session` both for a BMC that never answered
/// and for one that refused the login; the RAKP lines before it tell them apart.
pub fn failure(bmc: &str, what: &str, output: &str) -> PowerError {
    let lower = output.to_ascii_lowercase();
    let detail = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ");
    let detail: String = detail.chars().take(300).collect();
    let auth = [
        "rakp 2 hmac is invalid",
        "unauthorized name",
        "invalid session id",
        "rakp 4 message has invalid integrity",
        "invalid role",
        "insufficient privilege",
        "unauthorized role",
    ];
    if auth.iter().any(|a| lower.contains(a)) {
        return PowerError::Auth {
            bmc: bmc.into(),
            detail,
        };
    }
    let silent = [
        "unable to establish ipmi v2",
        "no response from remote controller",
        "get auth capabilities error",
        "unable to establish lan session",
        "address lookup",
        "no route to host",
        "connection refused",
    ];
    if silent.iter().any(|a| lower.contains(a)) {
        return PowerError::Unreachable {
            bmc: bmc.into(),
            detail,
        };
    }
    PowerError::Refused {
        bmc: bmc.into(),
        what: what.into(),
        detail: if detail.is_empty() {
            "ipmitool failed and printed nothing".into()
        } else {
            detail
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_an_optional_port_and_nothing_else() {
        assert_eq!(target("192.0.2.50").unwrap(), ("192.0.2.50".into(), 623));
        assert_eq!(
            target("bmc-7.example:6230").unwrap(),
            ("bmc-7.example".into(), 6230)
        );
        for bad in [
            "", ":623", "-oProxy", "a b", "x:0", "x:70000", "x;reboot", "$(id)",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_never_goes_on_the_command_line() {
        let a = args("192.0.2.50", 623, "admin", Step::SetPxeOnce, true);
        assert_eq!(
            a[..9],
            [
                "-I",
                "lanplus",
                "-H",
                "192.0.2.50",
                "-p",
                "623",
                "-U",
                "admin",
                "-E"
            ]
        );
        assert!(
            a.windows(2).any(|w| w == ["-C", "3"]),
            "cipher suite 3 without a lookup"
        );
        assert_eq!(
            a[a.len() - 4..],
            ["chassis", "bootdev", "pxe", "options=efiboot"]
        );
        assert!(!a.iter().any(|x| x == "-P"));
    }

    #[test]
    fn power_and_boot_flags_are_read_from_ipmitool_output() {
        assert_eq!(parse_power("Chassis Power is on\n"), Ok(PowerState::On));
        assert_eq!(parse_power("Chassis Power is off"), Ok(PowerState::Off));
        assert!(parse_power("Chassis Power is maybe").is_err());
        assert!(parse_power("").is_err());
        let once = "Boot parameter version: 1\nBoot parameter 5 is valid/unlocked\nBoot parameter data: 8004000000\n Boot Flags :\n   - Boot Flag Valid\n";
        let o = parse_boot_flags(once).unwrap();
        assert!(o.is_pxe_once(), "{o:?}");
        let always = "Boot parameter data: c004000000";
        assert!(!parse_boot_flags(always).unwrap().is_pxe_once());
        let disk = parse_boot_flags("Boot parameter data: 8008000000").unwrap();
        assert_eq!(disk.target, "disk");
        let kept = parse_boot_flags("Boot parameter data: 0004000000").unwrap();
        assert!(kept.is_pxe_once(), "device kept without the valid bit");
        let cleared = parse_boot_flags("Boot parameter data: 0000000000").unwrap();
        assert!(!cleared.enabled);
        assert!(parse_boot_flags("Boot parameter data: zz").is_err());
        assert!(parse_boot_flags("Boot parameter data: 8").is_err());
        assert!(parse_boot_flags("nothing").is_err());
    }

    #[test]
    fn failures_are_told_apart_by_what_ipmitool_printed() {
        let auth =
            "Error: RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        assert!(matches!(failure("b", "x", auth), PowerError::Auth { .. }));
        let name = "RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session";
        assert!(matches!(failure("b", "x", name), PowerError::Auth { .. }));
        let gone = "Error: Unable to establish IPMI v2 / RMCP+ session\n";
        assert!(matches!(
            failure("b", "x", gone),
            PowerError::Unreachable { .. }
        ));
        let other =
            "Set Chassis Power Control to Cycle failed: Command not supported in present state";
        match failure("b", "power cycle", other) {
            PowerError::Refused { detail, .. } => assert!(detail.contains("not supported")),
            e => panic!("{e:?}"),
        }
    }
}
