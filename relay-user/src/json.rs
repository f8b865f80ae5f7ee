//! JSON string literals: the one escaper behind all of relay's JSON (the
//! CLI's events, blktrace events, Chrome trace files), so every output
//! escapes the same bytes the same way.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The escape of `c` inside a JSON string, if it needs one: `"` and `\`,
/// newline, tab and carriage return by their short forms, other control
/// characters and DEL as `\u00XX` (written into `buf`).
fn escape(c: char, buf: &mut [u8; 6]) -> Option<&str> {
    match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '\n' => Some("\\n"),
        '\t' => Some("\\t"),
        '\r' => Some("\\r"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let v = c as usize;
            *buf = *b"\\u0000";
            buf[4] = HEX[v >> 4];
            buf[5] = HEX[v & 15];
            core::str::from_utf8(buf).ok()
        }
        _ => None,
    }
}

/// Appends `bytes` as a JSON string literal, quoted, invalid UTF-8
/// replaced by U+FFFD.
pub fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut buf = [0; 6];
    for c in String::from_utf8_lossy(bytes).chars() {
        match escape(c, &mut buf) {
            Some(e) => out.extend_from_slice(e.as_bytes()),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}

/// Appends `text` as a JSON string literal, quoted.
pub fn push_str(out: &mut String, text: &str) {
    out.push('"');
    let mut buf = [0; 6];
    for c in text.chars() {
        match escape(c, &mut buf) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte below 0x80 alone, and invalid UTF-8: what a JSON parser
    /// reads back is the text (or U+FFFD), and both forms agree.
    #[test]
    fn escapes_read_back_as_the_text() {
        for b in 0u8..0x80 {
            let mut v = Vec::new();
            push_string(&mut v, &[b]);
            let mut s = String::new();
            push_str(&mut s, std::str::from_utf8(&[b]).unwrap());
            assert_eq!(v, s.as_bytes(), "byte {b:#x}");
            let text = std::str::from_utf8(&v).unwrap();
            let inner = &text[1..text.len() - 1];
            let back = match inner.strip_prefix("\\u00") {
                Some(hex) => char::from(u8::from_str_radix(hex, 16).unwrap()),
                None => match inner {
                    "\\\"" => '"',
                    "\\\\" => '\\',
                    "\\n" => '\n',
                    "\\t" => '\t',
                    "\\r" => '\r',
                    plain => {
                        assert_eq!(plain.len(), 1, "byte {b:#x} as {plain}");
                        assert!((0x20..0x7f).contains(&b), "byte {b:#x} unescaped");
                        plain.chars().next().unwrap()
                    }
                },
            };
            assert_eq!(back, char::from(b));
        }
        let mut v = Vec::new();
        push_string(&mut v, b"a\xffz\xc3\xa9");
        assert_eq!(v, "\"a\u{fffd}z\u{e9}\"".as_bytes());
    }
}
