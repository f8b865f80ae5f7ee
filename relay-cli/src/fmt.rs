//! Formatting records at memory speed: into a reused byte buffer, with
//! lookup tables, no allocation per record.

/// "00" to "99", for two digits at a time.
pub(crate) const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal. Below 10,000 (CPUs, types, lengths) from the
/// pairs table, a copy of constant size; above, its digits into a fixed
/// array, which goes into `out` whole before the length is cut back.
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    let pair = |v: u64| {
        let i = v as usize * 2;
        [PAIRS[i], PAIRS[i + 1]]
    };
    if n < 10 {
        out.push(b'0' + n as u8);
    } else if n < 100 {
        out.extend_from_slice(&pair(n));
    } else if n < 1000 {
        let [a, b] = pair(n % 100);
        out.extend_from_slice(&[b'0' + (n / 100) as u8, a, b]);
    } else if n < 10_000 {
        let ([a, b], [c, d]) = (pair(n / 100), pair(n % 100));
        out.extend_from_slice(&[a, b, c, d]);
    } else {
        push_u64_long(out, n);
    }
}

/// [`push_u64`] from 10,000 up.
#[cold]
fn push_u64_long(out: &mut Vec<u8>, mut n: u64) {
    let digits = n.ilog10() as usize + 1;
    let mut buf = [0u8; 20];
    let mut i = digits;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        buf[..2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        buf[0] = b'0' + n as u8;
    }
    let start = out.len();
    out.extend_from_slice(&buf);
    out.truncate(start + digits);
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

/// Appends `bytes` as lowercase hex, two digits per byte: sixteen bytes
/// at a time into a buffer of 32 digits at fixed offsets, which goes into
/// `out` in one copy of constant size.
pub(crate) fn push_hex(out: &mut Vec<u8>, mut bytes: &[u8]) {
    while let Some((block, rest)) = bytes.split_first_chunk::<16>() {
        let mut buf = [[0u8; 2]; 16];
        for (d, &b) in buf.iter_mut().zip(block) {
            *d = HEX_PAIRS[usize::from(b)];
        }
        out.extend_from_slice(buf.as_flattened());
        bytes = rest;
    }
    for &b in bytes {
        out.extend_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// Whether `escape_default` prints `b` as itself: printable ASCII other
/// than the quotes and the backslash.
const fn is_plain(b: u8) -> bool {
    (b.wrapping_sub(0x20) < 0x5f) & (b != b'"') & (b != b'\'') & (b != b'\\')
}

/// Whether every byte of `block` prints as itself. Its four tests go
/// into four accumulators, so the loop becomes four vector compares (one
/// accumulator gets shuffled into something much slower).
fn all_plain(block: &[u8; 16]) -> bool {
    let (mut range, mut quote, mut apostrophe, mut backslash) = (0u8, 0u8, 0u8, 0u8);
    for &b in block {
        range |= u8::from(b.wrapping_sub(0x20) >= 0x5f);
        quote |= u8::from(b == b'"');
        apostrophe |= u8::from(b == b'\'');
        backslash |= u8::from(b == b'\\');
    }
    range | quote | apostrophe | backslash == 0
}

/// The index of the first byte of `bytes` that `push_escaped` escapes:
/// sixteen bytes at a time while none does, then byte by byte.
fn first_escaped(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(block) = bytes.get(at..).and_then(|rest| rest.first_chunk::<16>()) {
        if !all_plain(block) {
            break;
        }
        at += 16;
    }
    bytes[at..]
        .iter()
        .position(|&b| !is_plain(b))
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

/// Every escape fits the four bytes each store writes.
const _: () = {
    let mut b = 0;
    while b < 256 {
        assert!(ESCAPES[b] >> 32 >= 1 && ESCAPES[b] >> 32 <= 4);
        b += 1;
    }
};

/// Whether every byte of `block` escapes to `\xNN` (four bytes): neither
/// printable ASCII nor a tab, carriage return or line feed. As
/// [`all_plain`], one accumulator a test.
fn all_hex(block: &[u8; 16]) -> bool {
    let (mut printable, mut tab, mut cr, mut lf) = (0u8, 0u8, 0u8, 0u8);
    for &b in block {
        printable |= u8::from(b.wrapping_sub(0x20) < 0x5f);
        tab |= u8::from(b == b'\t');
        cr |= u8::from(b == b'\r');
        lf |= u8::from(b == b'\n');
    }
    printable | tab | cr | lf == 0
}

/// Appends the escapes of up to 16 bytes: into a small buffer, a byte at
/// a time through `ESCAPES` (one load, four bytes stored, of which the
/// escape's length count); the buffer goes into `out` whole (a copy of
/// constant size) and the length is cut back to what was written.
fn push_escaped_block(out: &mut Vec<u8>, block: &[u8]) {
    let mut buf = [0u8; 4 * 16 + 4];
    let mut at = 0usize;
    for &b in block.iter().take(16) {
        let e = ESCAPES[usize::from(b)];
        // At most 4 * 15 before the last byte: the mask changes nothing,
        // it shows the compiler that the store is in bounds.
        let a = at & 63;
        buf[a..a + 4].copy_from_slice(&(e as u32).to_le_bytes());
        at = a + (e >> 32) as usize;
    }
    let start = out.len();
    out.extend_from_slice(&buf[..64]);
    out.truncate(start + at);
}

/// Appends `bytes` escaped as `std::ascii::escape_default` escapes each
/// byte: printable ASCII as is, `\t \r \n \\ \' \"`, anything else `\xNN`.
/// Up to the first byte that needs escaping, sixteen bytes at a time;
/// from there, sixteen at a time: a block of bytes that all escape to
/// `\xNN` (binary data) at fixed offsets, four bytes each, others through
/// [`push_escaped_block`].
pub(crate) fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let Some(first) = first_escaped(bytes) else {
        out.extend_from_slice(bytes);
        return;
    };
    let (plain, mut rest) = bytes.split_at(first);
    if !plain.is_empty() {
        out.extend_from_slice(plain);
    }
    while let Some((block, tail)) = rest.split_first_chunk::<16>() {
        if all_hex(block) {
            let start = out.len();
            out.extend_from_slice(&[0; 4 * 16]);
            if let Some(escapes) = out[start..].first_chunk_mut::<{ 4 * 16 }>() {
                for (escape, &b) in escapes.chunks_exact_mut(4).zip(block) {
                    escape.copy_from_slice(&(ESCAPES[usize::from(b)] as u32).to_le_bytes());
                }
            }
        } else {
            push_escaped_block(out, block);
        }
        rest = tail;
    }
    if !rest.is_empty() {
        push_escaped_block(out, rest);
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
    fn escapes_every_length_and_block_boundary() {
        let std = |bytes: &[u8]| -> Vec<u8> {
            bytes
                .iter()
                .flat_map(|&b| std::ascii::escape_default(b))
                .collect()
        };
        // Plain, hex-escaped and short escapes, in blocks that are all one
        // kind or change kind at every offset.
        for n in 0..=70usize {
            for kinds in [&b"a"[..], b"\x07", b"\n", b"a\xff", b"\"\x00", b"ab\tc\x80"] {
                for change in 0..=n {
                    let bytes: Vec<u8> = (0..n)
                        .map(|i| {
                            if i < change {
                                b'p'
                            } else {
                                kinds[i % kinds.len()]
                            }
                        })
                        .collect();
                    let mut out = b"<".to_vec();
                    push_escaped(&mut out, &bytes);
                    assert_eq!(out[1..], std(&bytes), "{n} bytes, {kinds:?} from {change}");
                }
            }
        }
    }

    #[test]
    fn decimal_at_every_digit_count() {
        let mut n = 1u64;
        for _ in 0..20 {
            for v in [n - 1, n, n + 1, n.saturating_mul(9)] {
                let mut out = b"x".to_vec();
                push_u64(&mut out, v);
                assert_eq!(out, format!("x{v}").as_bytes());
            }
            n = n.saturating_mul(10);
        }
        let mut out = Vec::new();
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string().as_bytes());
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
