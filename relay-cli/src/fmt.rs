//! Formatting records at memory speed: into a reused byte buffer, with
//! lookup tables, no allocation per record.

/// "00" to "99", for two digits at a time.
pub(crate) const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    if n < 100 {
        let pair = n as usize * 2;
        out.extend_from_slice(&PAIRS[pair..pair + 2]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [HEX[b >> 4], HEX[b & 15]];
        b += 1;
    }
    t
};

/// Appends `bytes` as lowercase hex, two digits per byte: eight bytes at
/// a time into sixteen digits at fixed offsets (no per-byte index math).
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    let dst = &mut out[start..];
    let mut chunks = bytes.chunks_exact(8);
    let mut dsts = dst.chunks_exact_mut(16);
    for (src, d) in (&mut chunks).zip(&mut dsts) {
        for (i, &b) in src.iter().enumerate() {
            d[2 * i..2 * i + 2].copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
    }
    let tail = dsts.into_remainder();
    for (d, &b) in tail.chunks_exact_mut(2).zip(chunks.remainder()) {
        d.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// The index of the first byte of `bytes` that `push_escaped` escapes:
/// eight bytes at a time while none does (bit tricks on a `u64`), then
/// byte by byte.
fn first_escaped(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether some byte of `x` is below `n` (n <= 128) / above `n` (n < 128).
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH != 0;
    let above = |x: u64, n: u64| (x.wrapping_add(ONES * (127 - n)) | x) & HIGH != 0;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if below(x, 0x20)
            || above(x, 0x7e)
            || zero(x ^ (ONES * u64::from(b'"')))
            || zero(x ^ (ONES * u64::from(b'\'')))
            || zero(x ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| escaped_len(b) != 1)
        .map(|i| at + i)
}

/// Each byte escaped as `std::ascii::escape_default` escapes it: the
/// escape's bytes, padded to four, in the low 32 bits (first byte lowest),
/// and how many of them count in the bits above.
const ESCAPES: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let (e, len): ([u8; 4], u64) = match b as u8 {
            b'\t' => (*b"\\t  ", 2),
            b'\r' => (*b"\\r  ", 2),
            b'\n' => (*b"\\n  ", 2),
            b'\\' | b'\'' | b'"' => ([b'\\', b as u8, 0, 0], 2),
            0x20..=0x7e => ([b as u8, 0, 0, 0], 1),
            _ => ([b'\\', b'x', HEX[b >> 4], HEX[b & 15]], 4),
        };
        t[b] = u32::from_le_bytes(e) as u64 | len << 32;
        b += 1;
    }
    t
};

/// How many bytes `b` escapes to.
fn escaped_len(b: u8) -> usize {
    (ESCAPES[usize::from(b)] >> 32) as usize
}

/// Appends `bytes` escaped as `std::ascii::escape_default` escapes each
/// byte: printable ASCII as is, `\t \r \n \\ \' \"`, anything else `\xNN`.
/// Up to the first byte that needs escaping, eight bytes at a time; from
/// there, a byte at a time through `ESCAPES`: one load, and four bytes
/// stored (of which the escape's length count) into a stack buffer whose
/// bounds the compiler can see.
pub(crate) fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let Some(first) = first_escaped(bytes) else {
        out.extend_from_slice(bytes);
        return;
    };
    let (plain, rest) = bytes.split_at(first);
    out.extend_from_slice(plain);
    let mut buf = [0u8; 4 * 64 + 4];
    for chunk in rest.chunks(64) {
        let mut at = 0usize;
        for &b in chunk {
            let e = ESCAPES[usize::from(b)];
            // At most 4 * 63 before the last byte: the clamp only shows
            // the compiler that the store is in bounds.
            let a = at.min(4 * 64);
            buf[a..a + 4].copy_from_slice(&(e as u32).to_le_bytes());
            at = a + (e >> 32) as usize;
        }
        out.extend_from_slice(&buf[..at.min(buf.len())]);
    }
}

/// How payload bytes print (`relay cat --payload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Payload {
    /// Printable ASCII as is, other bytes escaped as Rust's
    /// `escape_default` escapes them (`\n`, `\"`, `\xNN`): lossless.
    Text,
    /// Two lowercase hex digits a byte.
    Hex,
    /// Base64 (RFC 4648, standard alphabet, padded).
    Base64,
}

impl Payload {
    /// The JSON field that carries the payload in this form.
    pub(crate) fn json_field(self) -> &'static str {
        match self {
            Payload::Text => "payload_text",
            Payload::Hex => "payload_hex",
            Payload::Base64 => "payload_base64",
        }
    }

    /// Appends `bytes` in this form, for a text line.
    pub(crate) fn push(self, out: &mut Vec<u8>, bytes: &[u8]) {
        match self {
            Payload::Text => push_escaped(out, bytes),
            Payload::Hex => push_hex(out, bytes),
            Payload::Base64 => push_base64(out, bytes),
        }
    }

    /// Appends `,"payload_…":"…"`: `bytes` in this form as a JSON field.
    /// Text is the text line's escaping, quoted once more for JSON (its
    /// `\` and `"`): a JSON decoder gives back exactly what text prints.
    pub(crate) fn push_json_field(self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(self.json_field().as_bytes());
        out.extend_from_slice(b"\":\"");
        let start = out.len();
        self.push(out, bytes);
        if self == Payload::Text && out[start..].iter().any(|&b| b == b'\\' || b == b'"') {
            let escaped = out.split_off(start);
            for b in escaped {
                if b == b'\\' || b == b'"' {
                    out.push(b'\\');
                }
                out.push(b);
            }
        }
        out.push(b'"');
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `bytes` in base64 (RFC 4648, standard alphabet, `=` padding).
pub(crate) fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let sextet = |v: u32, shift: u32| BASE64[((v >> shift) & 63) as usize];
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let v = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend_from_slice(&[sextet(v, 18), sextet(v, 12), sextet(v, 6), sextet(v, 0)]);
    }
    match *chunks.remainder() {
        [a] => {
            let v = u32::from(a) << 16;
            out.extend_from_slice(&[sextet(v, 18), sextet(v, 12), b'=', b'=']);
        }
        [a, b] => {
            let v = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[sextet(v, 18), sextet(v, 12), sextet(v, 6), b'=']);
        }
        _ => {}
    }
}

/// `bytes` as a JSON string, quoted (invalid UTF-8 replaced; control
/// characters escaped).
pub(crate) fn push_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 4648, section 10.
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            push_base64(&mut out, input.as_bytes());
            assert_eq!(out, want.as_bytes(), "{input:?}");
        }
        let mut out = Vec::new();
        push_base64(&mut out, &[0xff, 0xfe, 0x00]);
        assert_eq!(out, b"//4A");
    }

    #[test]
    fn payload_json_fields_quote_the_text_escapes() {
        let field = |p: Payload, bytes: &[u8]| {
            let mut out = Vec::new();
            p.push_json_field(&mut out, bytes);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            field(Payload::Hex, b"a\"\x01"),
            r#","payload_hex":"612201""#
        );
        assert_eq!(
            field(Payload::Base64, b"foo"),
            r#","payload_base64":"Zm9v""#
        );
        assert_eq!(field(Payload::Text, b"plain"), r#","payload_text":"plain""#);
        // Text prints a\"\x01\\ ; JSON quotes its backslashes and quote.
        assert_eq!(
            field(Payload::Text, b"a\"\x01\\"),
            r#","payload_text":"a\\\"\\x01\\\\""#
        );
    }

    #[test]
    fn hex_matches_format_at_every_length() {
        let bytes: Vec<u8> = (0..40u32).map(|i| (i * 97 + 13) as u8).collect();
        for n in 0..=bytes.len() {
            let mut out = b"x".to_vec();
            push_hex(&mut out, &bytes[..n]);
            let want: String = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(out, format!("x{want}").as_bytes(), "{n} bytes");
        }
    }

    #[test]
    fn matches_the_standard_formatting() {
        let all: Vec<u8> = (0..=255u8).chain(*b"plain \"quoted\" 'x' \\ end").collect();
        let mut out = Vec::new();
        push_escaped(&mut out, &all);
        let std: String = all
            .iter()
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect();
        assert_eq!(String::from_utf8(out).unwrap(), std);
        // Plain bytes first, then escaped ones; and none escaped.
        for input in [
            &b"abcdefghijklmnopq\x07\x00 tail"[..],
            b"just plain text, long enough",
        ] {
            let mut out = b"prefix ".to_vec();
            push_escaped(&mut out, input);
            let std: String = input
                .iter()
                .flat_map(|&b| std::ascii::escape_default(b))
                .map(char::from)
                .collect();
            assert_eq!(String::from_utf8(out).unwrap(), format!("prefix {std}"));
        }
        let mut out = Vec::new();
        push_hex(&mut out, &all);
        let std: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), std);
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }
}
