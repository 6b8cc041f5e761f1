//! One table of hostile values pushed through every output language rackseed writes:
//! iPXE, GRUB, POSIX sh (scripts and here-documents), the preseed, ifupdown (through
//! the profile and node vars it is built from), `authorized_keys`, `known_hosts`,
//! sanoid's config, `replicate.sh` and systemd units. For each sink the test checks the
//! rendered text: the value is refused with an error naming it, or written so that the
//! language reads back exactly one value (sh and the installer's preseed reader are run
//! for real), never a second command or line.

use super::*;
use crate::agent::replication;
use std::process::Command;

/// The hostile values: line breaks, quotes, command substitution, backticks, NUL,
/// other control characters, expansion syntax of each language and a very long value.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "a\nreboot",
        "a\r\nchain http://192.0.2.66/x",
        "it's",
        "x\"y",
        "$(reboot)",
        "`id`",
        "${root-password}",
        "a; reboot",
        "a && reboot || x",
        "a | sh",
        "\0",
        "a\u{1b}[2J",
        "a\\",
        "KEYS",
        "# comment",
        "%n%H",
        "\u{e9}t\u{e9}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(70_000));
    v
}

fn render_one(name: &str, src: &str, value: &str) -> Result<String, String> {
    let mut t = Templates::embedded();
    t.env
        .add_template_owned(name.to_string(), src.to_string())
        .map_err(|e| e.to_string())?;
    t.render(name, &minijinja::context! { v => value })
        .map_err(|e| crate::error_chain(&e))
}

/// Runs `script` with `sh` (read from standard input) and returns its standard output.
fn sh(script: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script written");
    let out = child.wait_with_output().expect("sh ends");
    assert!(out.status.success(), "{script:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_unquoted_value_is_refused_in_every_language() {
    for (name, filter) in [
        ("t.sh", "shquote"),
        ("t.ipxe", "ipxetext"),
        ("t.grub", "grubquote"),
        ("preseed.cfg", "debconf"),
    ] {
        for bad in hostile() {
            if escape::unplain(&bad).is_none() {
                // A long run of letters is plain: it is written as it is.
                assert_eq!(render_one(name, "{{ v }}", &bad).as_deref(), Ok(&*bad));
                continue;
            }
            let e = render_one(name, "x {{ v }}", &bad).unwrap_err();
            assert!(e.contains(&format!("`{filter}`")), "{name} {bad:?}: {e}");
        }
    }
}

#[test]
fn the_safe_filter_is_not_available_to_templates() {
    let e = render_one("t.sh", "{{ v | safe }}", "$(reboot)").unwrap_err();
    assert!(e.contains("safe"), "{e}");
}

#[test]
fn sh_quoted_values_read_back_as_one_word_under_a_real_shell() {
    for bad in hostile() {
        let body = render_one("t.sh", "x={{ v | shquote }}\nprintf '%s' \"$x\"\n", &bad)
            .expect("quoting never refuses");
        if bad.contains('\0') {
            // sh cannot hold a NUL; the quoted text still holds nothing to run.
            assert_eq!(body, "x='\0'\nprintf '%s' \"$x\"\n");
            continue;
        }
        assert_eq!(sh(&body), bad, "{body:?}");
    }
}

#[test]
fn heredoc_bodies_refuse_their_delimiter_and_control_characters() {
    let src = "cat <<'KEYS'\n{{ v | heredoc(\"KEYS\") }}\nKEYS\n";
    for bad in hostile() {
        match render_one("t.sh", src, &bad) {
            Ok(body) => {
                assert!(!bad.contains('\0') && !bad.contains('\u{1b}') && !bad.contains('\r'));
                assert_eq!(sh(&body), format!("{bad}\n"), "{body:?}");
            }
            Err(e) => assert!(
                bad == "KEYS" || bad.chars().any(|c| c.is_control() && c != '\n'),
                "{bad:?}: {e}"
            ),
        }
    }
    assert!(render_one("t.sh", src, "x\nKEYS\nreboot").is_err());
}

#[test]
fn ipxe_and_grub_values_stay_on_their_line_and_expand_nothing() {
    for bad in hostile() {
        let ipxe = render_one("t.ipxe", "echo {{ v | ipxetext }}\n", &bad).unwrap();
        assert_eq!(ipxe.lines().count(), 1, "{ipxe:?}");
        assert!(
            !ipxe.contains(['$', '&', '|', ';', '#', '\\', '\0']),
            "{ipxe:?}"
        );
        let grub = render_one("t.grub", "echo {{ v | grubquote }}\n", &bad).unwrap();
        assert_eq!(grub.lines().count(), 1, "{grub:?}");
        // Inside GRUB's single quotes nothing expands; every quote in the value is
        // closed, escaped and reopened, as in sh, so sh reads it back the same way.
        if !bad.chars().any(char::is_control) {
            assert_eq!(
                sh(&format!("printf '%s' {}", &grub[5..grub.len() - 1])),
                bad
            );
        }
        for comment in ["t.sh", "t.ipxe", "t.grub", "preseed.cfg"] {
            let c = render_one(comment, "# {{ v | comment }}\n", &bad).unwrap();
            assert_eq!(c.lines().count(), 1, "{comment} {c:?}");
        }
    }
}

#[test]
fn preseed_values_read_back_as_one_debconf_value_or_are_refused() {
    for bad in hostile() {
        match render_one("preseed.cfg", "d-i x/y string {{ v | debconf }}\n", &bad) {
            Ok(text) => {
                let sel = debconf::parse(&text).expect("the installer reads it");
                assert_eq!(sel.len(), 1, "{bad:?}: {text:?}");
                assert_eq!(sel[0].value, bad.trim(), "{text:?}");
            }
            Err(e) => assert!(
                bad.chars().any(char::is_control) || bad.ends_with('\\'),
                "{bad:?}: {e}"
            ),
        }
    }
}

/// ifupdown's files are built from the profile's network section and the node's vars,
/// which must be parsed types: a hostile interface name or address stops the profile
/// or the plan with an error, so it never reaches `/etc/network/interfaces`.
#[test]
fn ifupdown_values_are_parsed_before_they_are_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let base = std::fs::read_to_string(root.join("dc-base.yaml")).unwrap();
    let pair = std::fs::read_to_string(root.join("hypervisor-pair.yaml")).unwrap();
    let dir = std::env::temp_dir().join(format!("rackseed-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for bad in hostile() {
        if escape::unplain(&bad).is_none() && bad.len() < 16 {
            continue; // `KEYS` is a fine interface name
        }
        let quoted = serde_json::to_string(&bad).unwrap();
        std::fs::write(dir.join("dc-base.yaml"), &base).unwrap();
        std::fs::write(
            dir.join("hypervisor-pair.yaml"),
            pair.replace("name: br-guest-a", &format!("name: {quoted}")),
        )
        .unwrap();
        let e = crate::profiles::Catalog::load(&dir).err();
        assert!(e.is_some(), "interface name {bad:?} was accepted");
    }
    std::fs::write(dir.join("hypervisor-pair.yaml"), &pair).unwrap();
    let cat = crate::profiles::Catalog::load(&dir).unwrap();
    let p = cat.get("hypervisor-pair").unwrap();
    let cfg = crate::config::Config::parse_with(
        "[server]\nadvertise = \"192.0.2.1\"\n[dhcp]\nmode = \"authoritative\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.199\"\n",
        "test.toml",
        &|_| None,
    )
    .unwrap();
    let mirror = MirrorCtx::from_uri("http://mirror.example/debian", "bookworm", None).unwrap();
    for bad in hostile() {
        let mut n = crate::plan::sample_node(
            "hypervisor-pair",
            crate::plan::Firmware::Bios,
            serde_json::json!({"addresses": {"br-mgmt": bad, "br-repl": "203.0.113.21"}}),
        );
        n.ip = Some(std::net::Ipv4Addr::new(192, 0, 2, 50));
        assert!(
            node_ctx(&cfg, &n, &p, mirror.clone(), "T").is_err(),
            "address {bad:?} was accepted"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn ed25519(n: u8) -> String {
    crate::sshkey::tests::ed25519(n)
}

use crate::agent::replication::tests::view;

/// Every file the agent writes from a group view, with `bad` in every field a peer or
/// the group can carry.
fn agent_files(bad: &str) -> Vec<(&'static str, String)> {
    let mut v = view();
    v.group.name = bad.into();
    v.group.retention = format!("hourly={bad}");
    v.group.datasets = vec![bad.into(), format!("tank/{bad}")];
    v.me = bad.into();
    v.peers[0].hostname = bad.into();
    v.peers[0].ssh_host_keys.push(bad.into());
    v.peers[0]
        .ssh_host_keys
        .push(format!("{} {bad}", ed25519(5)));
    v.replication.accept_from[0].hostname = bad.into();
    v.replication.pushes[0].target = format!("tank/replicas/{bad}");
    let (service, timer) = replication::render_units(&v);
    vec![
        ("authorized_keys", replication::render_authorized_keys(&v)),
        ("known_hosts", replication::render_known_hosts(&v)),
        ("sanoid.conf", replication::render_sanoid(&v)),
        ("replicate.sh", replication::render_replicate(&v)),
        ("rackseed-replicate.service", service),
        ("rackseed-replicate.timer", timer),
    ]
}

#[test]
fn agent_files_hold_no_hostile_line_and_no_unquoted_value() {
    let clean: Vec<(&str, usize)> = agent_files("x")
        .iter()
        .map(|(n, t)| (*n, t.lines().count()))
        .collect();
    for bad in hostile() {
        for ((name, text), (_, clean_lines)) in agent_files(&bad).into_iter().zip(&clean) {
            assert!(
                !text.contains(['\0', '\r', '\u{1b}']),
                "{name} {bad:?}: {text:?}"
            );
            assert!(
                text.lines().count() <= *clean_lines,
                "{name} {bad:?} added a line: {text}"
            );
            match name {
                "authorized_keys" => {
                    let want = if crate::facts::is_dns_name(&bad) {
                        format!(
                            "restrict,from=\"203.0.113.12\" {} rackseed-repl:{bad}\n",
                            ed25519(12)
                        )
                    } else {
                        String::new() // a hostile hostname drops the key
                    };
                    assert_eq!(text, want, "{bad:?}");
                }
                "known_hosts" => {
                    for l in text.lines() {
                        let key = l.strip_prefix("203.0.113.12 ").unwrap_or("");
                        assert!(key == ed25519(2) || key == ed25519(5), "{bad:?}: {l}");
                    }
                }
                "sanoid.conf" => {
                    for l in text.lines().filter(|l| l.starts_with('[')) {
                        let section = &l[1..l.len() - 1];
                        assert!(
                            section.starts_with("template_")
                                || crate::config::valid_dataset(section),
                            "{bad:?}: section {l}"
                        );
                    }
                    assert!(!text.contains(&format!("= {bad}")), "{text}");
                }
                "replicate.sh" => {
                    let script = text.replace("syncoid ", "printf '%s\\n' ");
                    let out = sh(&script);
                    let args: Vec<&str> = out.lines().collect();
                    let target = format!("tank/replicas/{bad}");
                    if !crate::config::valid_dataset(&target) {
                        assert!(!text.contains("syncoid"), "{bad:?}: {text}");
                    } else {
                        assert_eq!(
                            args.last().copied(),
                            Some(format!("root@203.0.113.12:tank/replicas/{bad}").as_str()),
                            "{script}"
                        );
                    }
                }
                "rackseed-replicate.service" => {
                    assert_eq!(text, agent_files("x")[4].1, "a unit holds no value")
                }
                _ => {
                    for l in text.lines() {
                        assert!(
                            l.is_empty() || l.starts_with('[') || l.contains('='),
                            "{bad:?}: {l}"
                        );
                    }
                    assert!(!text.replace("%%", "").contains('%'), "a specifier: {text}");
                }
            }
        }
    }
}

#[test]
fn node_hostnames_and_enrollment_facts_refuse_hostile_values_on_arrival() {
    for bad in hostile() {
        if escape::unplain(&bad).is_none() && bad.len() < 64 {
            continue; // `KEYS` is a fine hostname
        }
        assert!(
            !crate::inventory::valid_hostname(&bad),
            "hostname {bad:?} accepted"
        );
        if escape::unplain(&bad).is_none() && bad.len() < 64 {
            continue; // `KEYS` is a fine hostname
        }
        let mut f = crate::facts::tests::sound_facts();
        f.hostname = bad.clone();
        assert!(crate::facts::check_untrusted(&f, None).is_err(), "{bad:?}");
    }
}
