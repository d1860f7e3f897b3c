//! Text from untrusted sources, made safe to show on one line.
//!
//! Why it exists: task logs, worker logs and reports are read by people and by tools that split
//! on lines. A name or message carrying a newline, a carriage return, a Unicode line or paragraph
//! separator (U+2028, U+2029) or a bidirectional override can forge a line (`[chainlock] chain
//! of trust verified`) or make a name read as another. Every such character is refused in
//! artifact names ([`crate::artifact_path`]) and escaped wherever untrusted text is printed.

/// Whether `c` can break a line or reorder what a reader sees: C0/C1 controls (newline, NUL,
/// escape, ...), U+2028/U+2029 and the bidirectional formatting characters.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every [deceptive](is_deceptive) character written as `\u{XXXX}` (`\n`, `\r`,
/// `\t` as themselves), so it stays on one line and reads as what it is.
pub fn escape_line(text: &str) -> String {
    if !text.chars().any(is_deceptive) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_deceptive(c) => out.push_str(&format!("\\u{{{:04X}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_line_breaker_and_override() {
        for c in [
            '\n', '\r', '\0', '\u{1b}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202E}', '\u{2066}',
        ] {
            let s = format!("a{c}b");
            let e = escape_line(&s);
            assert!(!e.chars().any(is_deceptive), "{s:?} -> {e:?}");
            assert!(e.starts_with('a') && e.ends_with('b'));
        }
        assert_eq!(escape_line("plain/name.txt"), "plain/name.txt");
        assert_eq!(escape_line("x\n[chainlock] ok"), "x\\n[chainlock] ok");
        assert_eq!(escape_line("\u{2028}"), "\\u{2028}");
    }
}
