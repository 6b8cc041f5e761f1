//! Where a node is stuck: given its state, its recent timeline and the limits per
//! step, says whether it has stayed in a step too long, which step, and the likely
//! cause in words a technician can act on.
//!
//! Pure: no clock, no inventory, no I/O. The watcher in `serve` reads the timeline,
//! calls [`stall_of`] and records the `stalled` event it returns.

use crate::node::{Event, NodeState, UnixMs};
use std::time::Duration;

/// How long each step may take before a node counts as stalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallLimits {
    /// From the boot file (DHCP/TFTP) or the iPXE script to the next step.
    pub boot: Duration,
    /// From the installer's kernel and initrd being sent to its preseed request.
    pub installer: Duration,
    /// Silence of an installing node (no event, no syslog line).
    pub install: Duration,
    /// From `installed` (the installer's late_command) to enrollment.
    pub first_boot: Duration,
}

impl Default for StallLimits {
    fn default() -> StallLimits {
        StallLimits {
            boot: Duration::from_secs(3 * 60),
            installer: Duration::from_secs(5 * 60),
            install: Duration::from_secs(20 * 60),
            first_boot: Duration::from_secs(30 * 60),
        }
    }
}

/// A node that stayed in a step past its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The step, as named in the event: `boot-loader`, `kernel`, `installer-network`,
    /// `preseed`, `install`, `first-boot`.
    pub step: &'static str,
    /// When the step began (the last event that moved the node on).
    pub since: UnixMs,
    /// What the technician reads: the step, how long, the likely cause.
    pub message: String,
    /// A `stalled` event for this step is on the timeline already.
    pub reported: bool,
}

/// The event kind of a stall.
pub const STALLED: &str = "stalled";
/// The event kind of an installer question seen in its syslog.
pub const QUESTION: &str = "question";

fn minutes(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    if m == 0 {
        format!("{} s", ms.max(0) / 1000)
    } else if m == 1 {
        "1 min".to_string()
    } else {
        format!("{m} min")
    }
}

/// Event kinds that show a node moving on (everything but our own notes).
fn is_progress(kind: &str) -> bool {
    !matches!(kind, STALLED | QUESTION | "error" | "group")
}

/// Whether a DHCP event is the installer's own request (no PXE/iPXE client class).
fn is_installer_dhcp(e: &Event) -> bool {
    e.kind == "dhcp" && e.message.contains("no network boot")
}

/// Says whether a node in `state`, whose timeline ends with `events` (oldest first,
/// at least everything since its last state change), is stalled at `now`; the stall
/// says whether a `stalled` event after the step began reported it already (a stall
/// is recorded once per step).
pub fn stall_of(
    state: NodeState,
    events: &[Event],
    now: UnixMs,
    limits: &StallLimits,
) -> Option<Stall> {
    let last_progress = events.iter().rev().find(|e| is_progress(&e.kind))?;
    let reported = events
        .iter()
        .any(|e| e.kind == STALLED && e.at >= last_progress.at);
    let idle = now - last_progress.at;
    let over = |d: Duration| idle > i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let question = events
        .iter()
        .rev()
        .find(|e| e.kind == QUESTION && e.at >= last_progress.at - 60_000)
        .map(|e| e.message.clone());
    let stall = |step: &'static str, message: String| Stall {
        step,
        since: last_progress.at,
        message,
        reported,
    };
    match state {
        NodeState::Provisioning => {
            // The last step the node reached in this boot.
            let kernel_sent = events
                .iter()
                .rposition(|e| e.kind == "kernel" || e.kind == "initrd");
            if let Some(i) = kernel_sent {
                let sent = events[i].at;
                let got_address = events[i..].iter().any(is_installer_dhcp);
                if !over(limits.installer) {
                    return None;
                }
                let ago = minutes(now - sent);
                return Some(if got_address {
                    stall(
                        "preseed",
                        format!(
                            "stalled in step preseed: the installer got its address but has not asked for its preseed {ago} after the kernel and initrd were sent; check on the console that it reaches rackseed's HTTP port (server.base_url) and is not waiting at a question{}",
                            question
                                .map(|q| format!(" (it asked `{q}`)"))
                                .unwrap_or_default()
                        ),
                    )
                } else {
                    stall(
                        "installer-network",
                        format!(
                            "stalled in step installer-network: the kernel and initrd were sent {ago} ago and the installer has not asked for its preseed: it is waiting at a question on the console, most often the choice of network interface (a machine with several NICs; rackseed passes BOOTIF and interface=auto unless boot.installer_interface = \"ask\"), or its NIC got no DHCP answer"
                        ),
                    )
                });
            }
            if !over(limits.boot) {
                return None;
            }
            let ago = minutes(idle);
            match last_progress.kind.as_str() {
                "ipxe" => Some(stall(
                    "kernel",
                    format!(
                        "stalled in step kernel: the iPXE script was served {ago} ago and the installer kernel was not fetched; look at the console for an iPXE error (HTTP port 8080 blocked, server.base_url wrong)"
                    ),
                )),
                "grub" => Some(stall(
                    "kernel",
                    format!(
                        "stalled in step kernel: GRUB got its configuration {ago} ago and did not load the installer kernel over TFTP; look at the console for a GRUB error (with Secure Boot on, a kernel that is not signed is refused)"
                    ),
                )),
                "dhcp" | "tftp" | "discovered" => Some(stall(
                    "boot-loader",
                    format!(
                        "stalled in step boot-loader: the boot file was offered {ago} ago and the node has not asked for its iPXE script; check TFTP (port 69) reaches rackseed, the console for a firmware or iPXE error, and that no other DHCP server answers the iPXE request"
                    ),
                )),
                _ => None,
            }
        }
        NodeState::Installing => {
            if !over(limits.install) {
                return None;
            }
            let last_line = events
                .iter()
                .rev()
                .find(|e| e.kind == "syslog")
                .map(|e| e.message.clone());
            let why = match (question, last_line) {
                (Some(q), _) => format!("it is waiting at the question `{q}` on the console"),
                (None, Some(l)) => format!(
                    "it is waiting at a question on the console or a step failed; its last log line was `{l}`"
                ),
                (None, None) => {
                    "it is waiting at a question on the console or lost its network; no installer log line arrived (log_host)".to_string()
                }
            };
            Some(stall(
                "install",
                format!(
                    "stalled in step install: the installer has sent nothing for {}: {why}",
                    minutes(idle)
                ),
            ))
        }
        NodeState::Installed => {
            if !over(limits.first_boot) {
                return None;
            }
            Some(stall(
                "first-boot",
                format!(
                    "stalled in step first-boot: installed {} ago and not enrolled: the node did not boot its disk or its agent cannot reach rackseed; check the console (boot order, root on RAID) and `journalctl -u rackseed-agent` on the node",
                    minutes(idle)
                ),
            ))
        }
        _ => None,
    }
}

/// The question an installer syslog line shows it asking on the console, if any.
///
/// cdebconf logs each question it shows when the kernel command line carries
/// `DEBCONF_DEBUG=developer`; lines look like
/// `debconf (developer): --> INPUT critical netcfg/choose_interface`.
pub fn question_in(line: &str) -> Option<String> {
    let rest = line.split("INPUT ").nth(1)?;
    if !line.contains("debconf") {
        return None;
    }
    let mut words = rest.split_whitespace();
    let prio = words.next()?;
    if !matches!(prio, "critical" | "high" | "medium" | "low") {
        return None;
    }
    let q = words.next()?;
    let ok = q.contains('/')
        && q.len() <= 128
        && q.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.+:".contains(c));
    ok.then(|| q.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: i64, kind: &str, message: &str) -> Event {
        Event {
            id: at,
            node_id: 1,
            at,
            kind: kind.into(),
            message: message.into(),
        }
    }

    const MIN: i64 = 60_000;

    #[test]
    fn kernel_sent_without_installer_dhcp_names_the_interface_question() {
        let l = StallLimits::default();
        let t = [
            ev(0, "state", "ready → provisioning"),
            ev(
                MIN,
                "dhcp",
                "ACK 192.0.2.50 to pxe bios; boot file undionly.kpxe",
            ),
            ev(MIN, "ipxe", "iPXE script served to 192.0.2.50: install"),
            ev(2 * MIN, "kernel", "HTTP linux"),
            ev(2 * MIN, "initrd", "HTTP initrd.gz"),
        ];
        assert_eq!(stall_of(NodeState::Provisioning, &t, 6 * MIN, &l), None);
        let s = stall_of(NodeState::Provisioning, &t, 8 * MIN, &l).unwrap();
        assert_eq!(s.step, "installer-network");
        assert_eq!(s.since, 2 * MIN);
        assert!(s.message.contains("sent 6 min ago"), "{}", s.message);
        assert!(s.message.contains("choice of network interface"));
        assert!(!s.reported);
        // Recorded once: the stall stays, marked as reported.
        let mut t2 = t.to_vec();
        t2.push(ev(8 * MIN, STALLED, &s.message));
        let again = stall_of(NodeState::Provisioning, &t2, 20 * MIN, &l).unwrap();
        assert!(again.reported);
        assert_eq!(again.step, "installer-network");
        // Progress after the stall starts a new step.
        t2.push(ev(21 * MIN, "dhcp", "ACK 192.0.2.50 to no network boot"));
        assert_eq!(
            stall_of(NodeState::Provisioning, &t2, 40 * MIN, &l).map(|s| s.step),
            Some("preseed")
        );
    }

    #[test]
    fn each_step_has_its_limit_and_cause() {
        let l = StallLimits::default();
        let boot = [ev(0, "dhcp", "OFFER to pxe bios; boot file undionly.kpxe")];
        assert_eq!(stall_of(NodeState::Provisioning, &boot, 2 * MIN, &l), None);
        assert_eq!(
            stall_of(NodeState::Provisioning, &boot, 4 * MIN, &l).map(|s| s.step),
            Some("boot-loader")
        );
        let script = [ev(0, "ipxe", "iPXE script served: install")];
        assert_eq!(
            stall_of(NodeState::Provisioning, &script, 4 * MIN, &l).map(|s| s.step),
            Some("kernel")
        );
        let inst = [
            ev(0, "preseed", "preseed served"),
            ev(
                MIN,
                "syslog",
                "main-menu[1]: INFO: Menu item 'anna' selected",
            ),
        ];
        assert_eq!(stall_of(NodeState::Installing, &inst, 20 * MIN, &l), None);
        let s = stall_of(NodeState::Installing, &inst, 22 * MIN, &l).unwrap();
        assert_eq!(s.step, "install");
        assert!(
            s.message.contains("Menu item 'anna' selected"),
            "{}",
            s.message
        );
        let done = [ev(0, "state", "installing → installed")];
        assert_eq!(
            stall_of(NodeState::Installed, &done, 31 * MIN, &l).map(|s| s.step),
            Some("first-boot")
        );
        for st in [NodeState::Enrolled, NodeState::Failed, NodeState::Ready] {
            assert_eq!(stall_of(st, &done, 1000 * MIN, &l), None);
        }
        assert_eq!(stall_of(NodeState::Installing, &[], 1000 * MIN, &l), None);
    }

    #[test]
    fn a_question_in_the_log_is_named() {
        let l = StallLimits::default();
        let t = [
            ev(0, "preseed", "preseed served"),
            ev(MIN, QUESTION, "partman-auto/select_disk"),
        ];
        let s = stall_of(NodeState::Installing, &t, 30 * MIN, &l).unwrap();
        assert!(
            s.message.contains("question `partman-auto/select_disk`"),
            "{}",
            s.message
        );
    }

    #[test]
    fn questions_are_read_from_debconf_debug_lines() {
        assert_eq!(
            question_in("debconf (developer): --> INPUT critical netcfg/choose_interface"),
            Some("netcfg/choose_interface".into())
        );
        assert_eq!(
            question_in("Dec  1 12:00:00 debconf: <-- INPUT high partman-auto/select_disk"),
            Some("partman-auto/select_disk".into())
        );
        assert_eq!(
            question_in("main-menu: INFO: Menu item 'netcfg' selected"),
            None
        );
        assert_eq!(question_in("debconf: INPUT bogus x/y"), None);
        assert_eq!(question_in("debconf: INPUT high $(reboot)/x"), None);
        assert_eq!(question_in("INPUT high netcfg/x"), None);
    }
}
