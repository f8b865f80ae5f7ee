//! The byte stream `read()` returns, as `relay cat -` and `relay verify -`
//! take it from anywhere: arbitrary bytes decode to frames or to a clean
//! error, never a panic or an out-of-bounds read, and every frame decoded
//! re-encodes to the same bytes. Checked payloads likewise: `check` never
//! panics, and what `fill` writes always checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::checked;
use relay_core::frames::{decode, encode, Frame};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
            Ok(Some((frame, n))) => {
                assert!(n >= 24 && n % 8 == 0 && at + n <= data.len());
                // A record or loss frame re-encodes to the bytes it came
                // from (up to the padding, which the decoder ignores).
                if let Some(e) = frame.event() {
                    let mut out = vec![0u8; n];
                    let m = encode(&e, &mut out).expect("fits: same size");
                    assert_eq!(m, n);
                    let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
                    assert_eq!(out[..len], data[at..at + len]);
                }
                if let Frame::Record { record, .. } = frame {
                    let _ = checked::check(record.payload);
                }
                at += n;
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Whatever the input says, a filled payload checks.
    if data.len() >= 13 {
        let cpu = u32::from_le_bytes(data[0..4].try_into().unwrap());
        let seq = u64::from_le_bytes(data[4..12].try_into().unwrap());
        let source = u32::from(data[12]) % checked::SOURCES as u32;
        let mut buf = data[13..].to_vec();
        if checked::fill(&mut buf, cpu, source, seq) {
            let c = checked::check(&buf).expect("filled payloads check");
            assert_eq!((c.cpu, c.seq, c.source), (cpu, seq, source));
        }
    }
});
