//! Power requests carried out: `ipmitool` for IPMI, HTTP for Redfish. Blocking: call
//! from a blocking thread. Each step is bounded in time; the order of steps is
//! [`super::steps`].

use super::{
    Action, BootOverride, Credentials, PowerError, PowerState, Protocol, Report, Step, ipmi,
    redfish,
};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one BMC request may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait, after a power change, for the BMC to report it.
const SETTLE: Duration = Duration::from_secs(20);

/// Carries out `action` (with a one-time network boot first when `pxe`; `uefi` asks
/// for an EFI network boot).
pub fn run(
    creds: &Credentials,
    action: Action,
    pxe: bool,
    uefi: bool,
) -> Result<Report, PowerError> {
    let mut bmc: Box<dyn Driver> = match creds.bmc.protocol {
        Protocol::Ipmi => Box::new(Ipmi::new(creds)?),
        Protocol::Redfish => Box::new(Redfish::new(creds)?),
    };
    let now = bmc.power()?;
    let mut report = Report {
        action,
        power: now,
        boot_override: None,
        done: Vec::new(),
    };
    let mut expect = None;
    for step in super::steps(action, now, pxe) {
        match step {
            Step::ReadPower => {
                report.power = bmc.power()?;
                if let Some(want) = expect {
                    let t = Instant::now();
                    while report.power != want && t.elapsed() < SETTLE {
                        std::thread::sleep(Duration::from_millis(500));
                        report.power = bmc.power()?;
                    }
                }
            }
            Step::SetPxeOnce => bmc.set_pxe_once(uefi)?,
            Step::CheckPxeOnce => {
                let got = bmc.boot_override()?;
                if !got.is_pxe() {
                    return Err(PowerError::OverrideRefused {
                        bmc: creds.bmc.address.clone(),
                        got: got.to_string(),
                    });
                }
                report.boot_override = Some(got);
            }
            Step::PowerOn => {
                bmc.power_step(step)?;
                report.done.push("power on".into());
                expect = Some(PowerState::On);
            }
            Step::PowerOff => {
                bmc.power_step(step)?;
                report.done.push("power off".into());
                expect = Some(PowerState::Off);
            }
            Step::Reset => {
                bmc.power_step(step)?;
                report.done.push("reset".into());
                expect = Some(PowerState::On);
            }
        }
    }
    Ok(report)
}

trait Driver {
    fn power(&mut self) -> Result<PowerState, PowerError>;
    fn set_pxe_once(&mut self, uefi: bool) -> Result<(), PowerError>;
    fn boot_override(&mut self) -> Result<BootOverride, PowerError>;
    fn power_step(&mut self, step: Step) -> Result<(), PowerError>;
}

struct Ipmi {
    host: String,
    port: u16,
    user: String,
    password: String,
    name: String,
}

impl Ipmi {
    fn new(c: &Credentials) -> Result<Ipmi, PowerError> {
        let (host, port) = ipmi::target(&c.bmc.address).map_err(|e| PowerError::Refused {
            bmc: c.bmc.address.clone(),
            what: "address".into(),
            detail: e,
        })?;
        Ok(Ipmi {
            host,
            port,
            user: c.bmc.username.clone(),
            password: c.password.clone(),
            name: format!("IPMI BMC {}", c.bmc.address),
        })
    }

    fn tool(&self, step: Step, uefi: bool) -> Result<String, PowerError> {
        let what = step_name(step);
        let mut child = Command::new("ipmitool")
            .args(ipmi::args(&self.host, self.port, &self.user, step, uefi))
            .env("IPMI_PASSWORD", &self.password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PowerError::NoTool(e.to_string()))?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = (&mut out).take(1 << 16).read_to_end(&mut s);
            s
        });
        let ereader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = (&mut err).take(1 << 16).read_to_end(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() > STEP_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(PowerError::Unreachable {
                        bmc: self.name.clone(),
                        detail: format!("no answer to `{what}` in {} s", STEP_TIMEOUT.as_secs()),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(25)),
                Err(e) => return Err(PowerError::NoTool(e.to_string())),
            }
        };
        let stdout = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&ereader.join().unwrap_or_default()).into_owned();
        if status.success() {
            Ok(stdout)
        } else {
            Err(ipmi::failure(
                &self.name,
                what,
                &format!("{stderr}\n{stdout}"),
            ))
        }
    }

    fn unreadable(&self, what: &str, detail: String) -> PowerError {
        PowerError::Protocol {
            bmc: self.name.clone(),
            what: what.into(),
            detail,
        }
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::ReadPower => "power status",
        Step::PowerOn => "power on",
        Step::PowerOff => "power off",
        Step::Reset => "power reset",
        Step::SetPxeOnce => "one-time network boot",
        Step::CheckPxeOnce => "read back the boot override",
    }
}

impl Driver for Ipmi {
    fn power(&mut self) -> Result<PowerState, PowerError> {
        let out = self.tool(Step::ReadPower, false)?;
        ipmi::parse_power(&out).map_err(|e| self.unreadable("power status", e))
    }
    fn set_pxe_once(&mut self, uefi: bool) -> Result<(), PowerError> {
        self.tool(Step::SetPxeOnce, uefi).map(|_| ())
    }
    fn boot_override(&mut self) -> Result<BootOverride, PowerError> {
        let out = self.tool(Step::CheckPxeOnce, false)?;
        ipmi::parse_boot_flags(&out).map_err(|e| self.unreadable("boot override", e))
    }
    fn power_step(&mut self, step: Step) -> Result<(), PowerError> {
        self.tool(step, false).map(|_| ())
    }
}

struct Redfish {
    base: String,
    system: Option<String>,
    user: String,
    password: String,
    client: reqwest::blocking::Client,
    name: String,
    /// The system as last read.
    seen: Option<redfish::System>,
}

impl Redfish {
    fn new(c: &Credentials) -> Result<Redfish, PowerError> {
        let name = format!("Redfish service {}", c.bmc.address);
        let base = redfish::base_url(&c.bmc.address).map_err(|e| PowerError::Refused {
            bmc: name.clone(),
            what: "address".into(),
            detail: e,
        })?;
        let client = reqwest::blocking::Client::builder()
            .timeout(STEP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(c.bmc.insecure_tls)
            .build()
            .map_err(|e| PowerError::Protocol {
                bmc: name.clone(),
                what: "HTTP client".into(),
                detail: crate::error_chain(&e),
            })?;
        Ok(Redfish {
            base,
            system: c.bmc.system.clone(),
            user: c.bmc.username.clone(),
            password: c.password.clone(),
            client,
            name,
            seen: None,
        })
    }

    fn send(
        &self,
        what: &str,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<serde_json::Value, PowerError> {
        let resp = req
            .basic_auth(&self.user, Some(&self.password))
            .header("Accept", "application/json")
            .send()
            .map_err(|e| PowerError::Unreachable {
                bmc: self.name.clone(),
                detail: crate::error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let mut body = String::new();
        let _ = resp.take(1 << 20).read_to_string(&mut body);
        if !(200..300).contains(&status) {
            return Err(redfish::failure(&self.name, what, status, &body));
        }
        if body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&body).map_err(|e| PowerError::Protocol {
            bmc: self.name.clone(),
            what: what.into(),
            detail: format!("not JSON: {e}"),
        })
    }

    fn get(&self, what: &str, path: &str) -> Result<serde_json::Value, PowerError> {
        self.send(what, self.client.get(format!("{}{path}", self.base)))
    }

    fn system_path(&mut self) -> Result<String, PowerError> {
        if let Some(s) = &self.system {
            return Ok(s.clone());
        }
        let c = self.get("list systems", "/redfish/v1/Systems")?;
        let m = redfish::members(&c).map_err(|e| PowerError::Protocol {
            bmc: self.name.clone(),
            what: "list systems".into(),
            detail: e,
        })?;
        match &m[..] {
            [one] => {
                self.system = Some(one.clone());
                Ok(one.clone())
            }
            [] => Err(PowerError::Refused {
                bmc: self.name.clone(),
                what: "list systems".into(),
                detail: "the service lists no system".into(),
            }),
            many => Err(PowerError::Refused {
                bmc: self.name.clone(),
                what: "list systems".into(),
                detail: format!(
                    "the service lists {} systems ({}); name one with `--system`",
                    many.len(),
                    many.join(", ")
                ),
            }),
        }
    }

    fn read(&mut self) -> Result<redfish::System, PowerError> {
        let path = self.system_path()?;
        let v = self.get("read the system", &path)?;
        let s = redfish::parse_system(&v).map_err(|e| PowerError::Protocol {
            bmc: self.name.clone(),
            what: "read the system".into(),
            detail: e,
        })?;
        self.seen = Some(s.clone());
        Ok(s)
    }
}

impl Driver for Redfish {
    fn power(&mut self) -> Result<PowerState, PowerError> {
        Ok(self.read()?.power)
    }
    fn set_pxe_once(&mut self, uefi: bool) -> Result<(), PowerError> {
        let s = match &self.seen {
            Some(s) => s.clone(),
            None => self.read()?,
        };
        if let Some(allowed) = &s.allowed_targets
            && !allowed.iter().any(|t| t == "Pxe")
        {
            return Err(PowerError::OverrideRefused {
                bmc: self.name.clone(),
                got: format!("that it allows only {} as boot targets", allowed.join(", ")),
            });
        }
        let path = self.system_path()?;
        let body = redfish::pxe_once_body(uefi);
        self.send(
            "set a one-time network boot",
            self.client
                .patch(format!("{}{path}", self.base))
                .json(&body),
        )
        .map_err(|e| match e {
            PowerError::Refused { bmc, detail, .. } => PowerError::OverrideRefused {
                bmc,
                got: format!("a refusal ({detail})"),
            },
            e => e,
        })
        .map(|_| ())
    }
    fn boot_override(&mut self) -> Result<BootOverride, PowerError> {
        Ok(self.read()?.boot)
    }
    fn power_step(&mut self, step: Step) -> Result<(), PowerError> {
        let s = match &self.seen {
            Some(s) => s.clone(),
            None => self.read()?,
        };
        let Some(kind) = redfish::reset_type(step, s.reset_types.as_deref()) else {
            return Err(PowerError::Refused {
                bmc: self.name.clone(),
                what: step_name(step).into(),
                detail: format!(
                    "the system allows only the reset types {}",
                    s.reset_types.unwrap_or_default().join(", ")
                ),
            });
        };
        self.send(
            step_name(step),
            self.client
                .post(format!("{}{}", self.base, s.reset_uri))
                .json(&serde_json::json!({ "ResetType": kind })),
        )
        .map(|_| ())
    }
}
