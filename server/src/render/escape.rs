//! Escaping by construction: every `{{ value }}` in a template is written in the
//! output language of that template, or the render fails.
//!
//! Pure. A template's language follows from its name ([`Lang::of`]). A value that went
//! through one of the language's quoting filters (`shquote`, `grubquote`, `ipxetext`,
//! `debconf`, `heredoc`, and `comment` for text in a `#` comment) is written as the filter made it; any other value is written
//! only if every character is in [`PLAIN`], the characters that mean nothing in any of
//! the languages (no quote, `$`, backtick, backslash, `;`, `&`, `|`, `#`, bracket, glob
//! or control character), so identifiers, addresses, URLs and numbers pass and a value
//! carrying a newline or shell never reaches a script unquoted. minijinja's `safe`
//! filter is removed from the template environment, so no template can opt out.

/// The output language of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// POSIX sh (`*.sh`).
    Sh,
    /// iPXE script (`*.ipxe`).
    Ipxe,
    /// GRUB script (`*.grub`, `grub.cfg`).
    Grub,
    /// A debconf preseed (`preseed.cfg`); its `*_command` values are run by sh.
    Preseed,
}

impl Lang {
    /// The language of template `name`, if it has one.
    pub fn of(name: &str) -> Option<Lang> {
        if name.ends_with(".sh") {
            Some(Lang::Sh)
        } else if name.ends_with(".ipxe") {
            Some(Lang::Ipxe)
        } else if name.ends_with(".grub") || name == "grub.cfg" {
            Some(Lang::Grub)
        } else if name == "preseed.cfg" {
            Some(Lang::Preseed)
        } else {
            None
        }
    }

    /// The auto-escape tag minijinja carries for this language.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Sh => "sh",
            Lang::Ipxe => "ipxe",
            Lang::Grub => "grub",
            Lang::Preseed => "preseed",
        }
    }

    /// The language with auto-escape tag `tag`.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        [Lang::Sh, Lang::Ipxe, Lang::Grub, Lang::Preseed]
            .into_iter()
            .find(|l| l.tag() == tag)
    }

    /// The filter that quotes a value for this language.
    pub fn quoting_filter(self) -> &'static str {
        match self {
            Lang::Sh => "shquote",
            Lang::Ipxe => "ipxetext",
            Lang::Grub => "grubquote",
            Lang::Preseed => "debconf",
        }
    }
}

/// Characters a value may carry unquoted in every language: letters, digits and
/// `` ._:/@+=,%- `` and space.
pub const PLAIN: &str = " ._:/@+=,%-";

/// The first character of `v` that may not appear unquoted, if any.
pub fn unplain(v: &str) -> Option<char> {
    v.chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || PLAIN.contains(c)))
}

/// Why a value was refused by the writer of language `lang`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "value {value:?} carries {ch:?}, which a {lang:?} template writes only through its `{filter}` filter"
    )]
    Unquoted {
        lang: Lang,
        value: String,
        ch: char,
        filter: &'static str,
    },
    #[error("value {value:?} carries control character {ch:?}; a debconf value is one line")]
    Control { value: String, ch: char },
    #[error("value {value:?} ends in a backslash, which would join the next preseed line to it")]
    TrailingBackslash { value: String },
    #[error("here-document body has a line `{delimiter}`, which would end it early")]
    Delimiter { delimiter: String },
    #[error("here-document body carries control character {ch:?}")]
    BodyControl { ch: char },
}

fn short(v: &str) -> String {
    v.chars().take(80).collect()
}

/// `v` as an unquoted value in `lang`, or why not.
pub fn plain(lang: Lang, v: &str) -> Result<&str, Refused> {
    match unplain(v) {
        None => Ok(v),
        Some(ch) => Err(Refused::Unquoted {
            lang,
            value: short(v),
            ch,
            filter: lang.quoting_filter(),
        }),
    }
}

/// Quotes a value for POSIX sh: `'…'` with embedded quotes escaped (nothing inside
/// expands; a newline stays inside the quotes).
pub fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Quotes a value for GRUB's script language: `'…'` (no expansion inside), embedded
/// quotes closed and escaped as in sh; control characters (newlines) become `?`, so a
/// value never starts another command.
pub fn grub_quote(v: &str) -> String {
    let clean: String = v
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("'{}'", clean.replace('\'', r"'\''"))
}

/// A value as literal text in an iPXE script line (`echo`, comments): iPXE has no
/// quoting, so every character outside a plain set (letters, digits, space and
/// `` .,:/@()+=_-'"`!?<>[]*%~ ``) becomes `?`. `$` (setting expansion), `|` and `&` (command
/// operators), `\`, `;`, `#` and every control character (a newline would start a new
/// command) never pass.
pub fn ipxe_text(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .,:/@()+=_-'\"`!?<>[]*%~".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A value inside a `#` comment line (sh, iPXE, GRUB, preseed): every control character
/// becomes `?`, so the value cannot end the comment and start a command.
pub fn comment_text(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A value in a systemd unit setting that is free text (`Description=`): control
/// characters become `?` (a newline would start another setting) and `%` is doubled
/// (systemd expands `%` specifiers).
pub fn unit_text(v: &str) -> String {
    comment_text(v).replace('%', "%%")
}

/// A value for a debconf line that only debconf reads (a password hash, a partman
/// recipe): anything but a control character, except that a line may end in `\` and
/// go on on the next (the installer joins them into one value); the value itself may
/// not end in `\`.
pub fn debconf_value(v: &str) -> Result<&str, Refused> {
    let mut prev = ' ';
    for ch in v.chars() {
        if ch == '\n' && prev == '\\' {
            prev = ch;
            continue;
        }
        if ch.is_control() {
            return Err(Refused::Control {
                value: short(v),
                ch,
            });
        }
        prev = ch;
    }
    if v.trim_end_matches([' ', '\t']).ends_with('\\') {
        return Err(Refused::TrailingBackslash { value: short(v) });
    }
    Ok(v)
}

/// `body` as the body of a quoted here-document (`<<'DELIM'`): sh reads it literally,
/// so only a line equal to the delimiter (which would end it and run the rest) and
/// control characters other than newline and tab are refused.
pub fn heredoc<'a>(body: &'a str, delimiter: &str) -> Result<&'a str, Refused> {
    if let Some(ch) = body
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Refused::BodyControl { ch });
    }
    if body.lines().any(|l| l == delimiter) {
        return Err(Refused::Delimiter {
            delimiter: delimiter.into(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_follow_template_names() {
        assert_eq!(Lang::of("late.sh"), Some(Lang::Sh));
        assert_eq!(Lang::of("install.ipxe"), Some(Lang::Ipxe));
        assert_eq!(Lang::of("local.grub"), Some(Lang::Grub));
        assert_eq!(Lang::of("grub.cfg"), Some(Lang::Grub));
        assert_eq!(Lang::of("preseed.cfg"), Some(Lang::Preseed));
        assert_eq!(Lang::of("plan.json"), None);
        for l in [Lang::Sh, Lang::Ipxe, Lang::Grub, Lang::Preseed] {
            assert_eq!(Lang::from_tag(l.tag()), Some(l));
        }
    }

    #[test]
    fn plain_values_pass_and_everything_else_names_its_character() {
        assert_eq!(
            plain(Lang::Sh, "http://192.0.2.1:8080/install/a-b_c/events"),
            Ok("http://192.0.2.1:8080/install/a-b_c/events")
        );
        let e = plain(Lang::Sh, "x'y").unwrap_err();
        assert!(e.to_string().contains("`shquote`"), "{e}");
        assert!(matches!(e, Refused::Unquoted { ch: '\'', .. }));
    }

    #[test]
    fn debconf_values_stay_one_value() {
        assert!(debconf_value("$6$salt$hash").is_ok());
        assert!(debconf_value("a \\\n b").is_ok());
        assert!(debconf_value("a\nd-i x string y").is_err());
        assert!(debconf_value("a\\").is_err());
        assert!(debconf_value("a\\  ").is_err());
    }

    #[test]
    fn heredoc_bodies_cannot_end_early() {
        assert!(heredoc("ssh-ed25519 AAAA x\n", "KEYS").is_ok());
        assert!(heredoc("x\nKEYS\nreboot\n", "KEYS").is_err());
        assert!(heredoc("x\0", "KEYS").is_err());
        assert!(heredoc("x KEYS", "KEYS").is_ok());
    }

    #[test]
    fn comments_stay_one_line() {
        assert_eq!(comment_text("ata-*\nreboot"), "ata-*?reboot");
    }
}
