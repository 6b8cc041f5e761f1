//! `rackseed health`: the Nagios/Icinga plugin. Fetches a running server's facts
//! (`GET /api/health` on the admin listener, with the admin token), judges them with
//! [`crate::health::judge`] against the thresholds of the command line, prints
//! exactly one line on standard output and exits 0 (OK), 1 (WARNING), 2 (CRITICAL)
//! or 3 (UNKNOWN).
//!
//! A server that does not answer (no connection, no answer within `--timeout`, a
//! 5xx answer) is CRITICAL; a check that cannot be made (bad arguments, an unreadable
//! token file, a refused token, an answer that is not the facts) is UNKNOWN. Argument
//! errors are caught before clap's own exit ([`usage_error`]), so they too are one
//! UNKNOWN line and exit 3.

use super::args::HealthArgs;
use super::client::Client;
use crate::health::{self, Facts, Thresholds, Verdict};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// Runs the check and prints its line (or, with `--json`, one line of JSON).
pub fn run(args: &HealthArgs) -> ExitCode {
    let (verdict, facts) = check(args);
    if args.api.json {
        let out = json!({
            "status": verdict.status.word(),
            "exit_code": verdict.status.exit_code(),
            "line": verdict.line,
            "facts": facts,
        });
        println!("{out}");
    } else {
        println!("{}", verdict.line);
    }
    ExitCode::from(verdict.status.exit_code())
}

fn thresholds(args: &HealthArgs) -> Thresholds {
    Thresholds {
        stalled_critical: args.stalled_critical,
        lag_warning_s: args.lag_warning,
        lag_critical_s: args.lag_critical,
        disk_warning_pct: args.disk_warning,
        disk_critical_pct: args.disk_critical,
        cert_warning_days: args.cert_warning,
        cert_critical_days: args.cert_critical,
    }
}

/// The innermost cause of an error: for a refused connection `Connection refused
/// (os error 111)` rather than reqwest's "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The verdict, and the facts when the server sent them.
fn check(args: &HealthArgs) -> (Verdict, Option<Facts>) {
    let t = thresholds(args);
    if let Err(e) = t.check() {
        return (health::unknown(&e), None);
    }
    let limit = Duration::from_secs(args.timeout.max(1));
    let client = match Client::new(&args.api).and_then(|c| c.with_timeout(limit)) {
        Ok(c) => c,
        Err(e) => return (health::unknown(&super::chain(&e)), None),
    };
    let url = client.base().to_string();
    let (status, body) = match client.get_answer("/api/health") {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => {
            let why = format!("no answer within {} s", limit.as_secs());
            return (health::unreachable(&url, &why), None);
        }
        Err(e) => return (health::unreachable(&url, &root_cause(&e)), None),
    };
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        let verdict = match status {
            401 => health::unknown(&format!(
                "rackseed at {url} refused the admin token: {msg} (HTTP 401); pass --token or --token-file (RACKSEED_TOKEN_FILE)"
            )),
            404 => health::unknown(&format!(
                "rackseed at {url} has no /api/health (HTTP 404): is it an older version, or not rackseed's admin listener (server.admin)?"
            )),
            s if s >= 500 => health::unreachable(&url, &format!("{msg} (HTTP {s})")),
            s => health::unknown(&format!(
                "rackseed at {url} refused the check: {msg} (HTTP {s})"
            )),
        };
        return (verdict, None);
    }
    match serde_json::from_str::<Facts>(&body) {
        Ok(f) => (health::judge(&f, &t), Some(f)),
        Err(e) => (
            health::unknown(&format!(
                "rackseed at {url} answered /api/health with something that is not its health facts ({e}); are the command and the server the same version? (rackseed --version)"
            )),
            None,
        ),
    }
}

/// Whether the command line `args` (program name first) runs `rackseed health`:
/// its first word after the global `--log`/`--log-format` options.
pub fn is_health_command(args: &[OsString]) -> bool {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--log" || a == "--log-format" {
            it.next();
        } else if !a.starts_with('-') {
            return a == "health";
        }
    }
    false
}

/// What a command-line error does: for `rackseed health`, one UNKNOWN line on
/// standard output and exit 3 (a plugin's exit 2 would read as CRITICAL); help and
/// version requests, and every other command, as clap does it.
pub fn usage_error(e: clap::Error, args: &[OsString]) -> ExitCode {
    use clap::error::ErrorKind;
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if shown || !is_health_command(args) {
        e.exit();
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let v = health::unknown(&format!("{first}; see `rackseed health --help`"));
    println!("{}", v.line);
    ExitCode::from(v.status.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_health_command_is_found_after_global_options() {
        assert!(is_health_command(&os(&["rackseed", "health", "--x"])));
        assert!(is_health_command(&os(&[
            "rackseed", "--log", "debug", "health"
        ])));
        assert!(is_health_command(&os(&[
            "rackseed",
            "--log-format=json",
            "health"
        ])));
        assert!(!is_health_command(&os(&[
            "rackseed", "node", "show", "health"
        ])));
        assert!(!is_health_command(&os(&[
            "rackseed", "--log", "health", "node"
        ])));
        assert!(!is_health_command(&os(&["rackseed"])));
    }

    #[test]
    fn defaults_are_the_documented_thresholds() {
        let Command::Health(args) = Cli::try_parse_from(["rackseed", "health"]).unwrap().command
        else {
            panic!("not the health command");
        };
        let t = thresholds(&args);
        assert_eq!(t, Thresholds::default());
        assert_eq!(args.timeout, 8);
        assert_eq!(args.api.url, "http://127.0.0.1:8081");
    }

    /// Every `command[…]=` line of the NRPE example (and the README's copy of it)
    /// is a valid `rackseed health` command line.
    #[test]
    fn the_nrpe_example_is_a_valid_health_command() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = std::fs::read_to_string(root.join("examples/nrpe-rackseed.cfg")).unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let mut n = 0;
        for line in example.lines().chain(readme.lines()) {
            let Some((_, cmd)) = line.trim().split_once("]=") else {
                continue;
            };
            if !line.trim().starts_with("command[") {
                continue;
            }
            // `sudo -u rackseed /usr/bin/rackseed health …`: from the program on.
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| w.ends_with("/rackseed"))
                .unwrap_or_else(|| panic!("no rackseed program in {line}"));
            let cli = Cli::try_parse_from(&words[at..]).unwrap_or_else(|e| panic!("{line}: {e}"));
            let Command::Health(args) = cli.command else {
                panic!("{line}: not `rackseed health`");
            };
            thresholds(&args)
                .check()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            n += 1;
        }
        assert!(
            n >= 2,
            "expected the NRPE command in the example and the README, found {n}"
        );
        assert!(
            example.contains("define command"),
            "no Nagios command definition"
        );
    }
}
