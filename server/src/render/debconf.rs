//! Reading a preseed file the way the Debian installer does (`debconf-set-selections`
//! of the installer's `preseed` package), so rackseed knows exactly which value every
//! question will hold after the installer loads a rendered preseed.
//!
//! Pure. The installer's reader differs from the Perl `debconf-set-selections` of an
//! installed system: it drops only lines that *start* with `#`, joins a line ending in
//! `\` to the next with one space (leading blanks of the next line removed), and
//! strips every blank between the type and the value.

/// One `owner question type value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub owner: String,
    pub question: String,
    pub kind: String,
    pub value: String,
}

/// A line the installer would refuse (it stops the install with "Error parsing
/// preconfiguration file").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("preseed line {line}: {message}")]
pub struct PreseedError {
    pub line: usize,
    pub message: String,
}

fn split_first(s: &str) -> Option<(&str, &str)> {
    let i = s.find(char::is_whitespace)?;
    Some((&s[..i], s[i..].trim_start()))
}

/// Parses `text` as the installer does; later lines for a question win, as in the
/// installer, but every line is returned in order.
pub fn parse(text: &str) -> Result<Vec<Selection>, PreseedError> {
    let mut out = Vec::new();
    let mut multiline = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.replace('\r', "");
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let line = raw.trim_start();
        if let Some(head) = line.strip_suffix('\\') {
            if multiline.is_empty() {
                start = i + 1;
            } else {
                multiline.push(' ');
            }
            multiline.push_str(head.trim_end());
            continue;
        }
        let (line, lineno) = if multiline.is_empty() {
            (line.to_string(), i + 1)
        } else {
            let joined = format!("{multiline} {line}");
            multiline.clear();
            (joined, start)
        };
        let err = |m: &str| PreseedError {
            line: lineno,
            message: m.into(),
        };
        let (owner, rest) =
            split_first(&line).ok_or_else(|| err("unable to determine template owner"))?;
        let (question, rest) =
            split_first(rest).ok_or_else(|| err("unable to determine template name"))?;
        let (kind, value) = match split_first(rest) {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if !rest.is_empty() => (rest.to_string(), String::new()),
            None => return Err(err("unable to determine template type")),
        };
        out.push(Selection {
            owner: owner.into(),
            question: question.into(),
            kind,
            value,
        });
    }
    if !multiline.is_empty() {
        return Err(PreseedError {
            line: start,
            message: "the last line ends in `\\` (the installer drops it)".into(),
        });
    }
    Ok(out)
}

/// The value each question holds after the preseed is loaded (last line wins), in
/// first-seen order.
pub fn values(selections: &[Selection]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in selections {
        if s.kind == "seen" {
            continue;
        }
        match out.iter_mut().find(|(q, _)| *q == s.question) {
            Some(slot) => slot.1 = s.value.clone(),
            None => out.push((s.question.clone(), s.value.clone())),
        }
    }
    out
}

/// Lines the installer reads differently from what their author likely meant.
pub fn lint(selections: &[Selection]) -> Vec<String> {
    let mut out = Vec::new();
    for s in selections {
        if s.owner.starts_with('#') {
            out.push(format!(
                "`#` on an indented line is not a comment to the installer (question `{}`)",
                s.question
            ));
        } else if s.value.contains(['*', '?', '[']) {
            out.push(format!(
                "{}: `*`, `?` or `[` in a value may be expanded by the installer's shell reader",
                s.question
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_join_with_one_space() {
        let sel = parse(
            "# c\nd-i a/b string \\\n    x  y \\\n\t z\nd-i c/d note\nd-i e/f  string   v  \n",
        )
        .unwrap();
        assert_eq!(sel[0].value, "x  y z");
        assert_eq!((sel[1].kind.as_str(), sel[1].value.as_str()), ("note", ""));
        assert_eq!(sel[2].value, "v  ");
    }

    #[test]
    fn lint_finds_what_the_installer_misreads() {
        let sel = parse("  # indented comment line\nd-i a/b string x*y\n").unwrap();
        let problems = lint(&sel);
        assert_eq!(
            problems,
            [
                "`#` on an indented line is not a comment to the installer (question `indented`)",
                "a/b: `*`, `?` or `[` in a value may be expanded by the installer's shell reader"
            ]
        );
    }

    #[test]
    fn an_indented_comment_of_one_word_stops_the_installer() {
        assert_eq!(
            parse("d-i a/b string 1\n  # note\n")
                .unwrap_err()
                .to_string(),
            "preseed line 2: unable to determine template name"
        );
    }

    #[test]
    fn last_value_wins() {
        let sel = parse("d-i a/b string 1\nd-i a/b seen false\nd-i a/b string 2\n").unwrap();
        assert_eq!(values(&sel), [("a/b".to_string(), "2".to_string())]);
    }
}
