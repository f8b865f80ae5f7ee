//! Differential test: long random sequences of writes (some nested inside an
//! unfinished write, as an interrupt would), flushes and reads, run against
//! relay-core and against the sequential model in `relay_core::model`.
//! Every writer answer, every delivered record and every counter must agree,
//! and at the end every record is delivered exactly once or counted lost once.

mod common;

use common::Rng;
use relay_core::model::{check, Config, Op, Summary};
use relay_core::Mode;

fn pick_len(rng: &mut Rng, max: usize) -> usize {
    match rng.below(20) {
        0 => max,
        1 => max + 1 + rng.below(64) as usize,
        2 => 0,
        3..=5 => rng.below(max as u64 + 1) as usize,
        _ => 8 + rng.below(40) as usize,
    }
}

fn ops(seed: u64, n: usize, max_payload: usize) -> Vec<Op> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|_| match rng.below(100) {
            0..=14 => Op::Begin {
                len: pick_len(&mut rng, max_payload),
                discard: rng.below(10) == 0,
            },
            15..=29 => Op::Finish,
            30..=79 => Op::Write {
                len: pick_len(&mut rng, max_payload),
            },
            80..=84 => Op::Flush,
            _ => Op::Read {
                in_place: rng.below(2) == 0,
            },
        })
        .collect()
}

/// Runs many seeds over several geometries, both writer flavours, and sums
/// what they exercised so that the test cannot pass vacuously.
fn sweep(mode: Mode, salt: u64) -> Summary {
    let mut total = Summary::default();
    for seed in 0..600 {
        for &(size, count) in &[(128u64, 2u64), (256, 3), (512, 4), (256, 8)] {
            let config = Config {
                mode,
                subbuf_size: size,
                subbuf_count: count,
                local: seed % 2 == 1,
                max_nesting: 3,
            };
            let s = check(config, &ops(seed * salt + size, 400, size as usize - 88));
            total.accepted += s.accepted;
            total.delivered += s.delivered;
            total.lost.full += s.lost.full;
            total.lost.too_big += s.lost.too_big;
            total.lost.overwrite += s.lost.overwrite;
        }
    }
    total
}

#[test]
fn no_overwrite_matches_model() {
    let s = sweep(Mode::NoOverwrite, 7);
    assert!(
        s.lost.full > 1000 && s.lost.too_big > 1000 && s.delivered > 100_000,
        "{s:?}"
    );
    assert_eq!(s.lost.overwrite, 0);
}

#[test]
fn overwrite_matches_model() {
    let s = sweep(Mode::Overwrite, 13);
    // `full` happens in overwrite mode too: the next slot is still held by an
    // unfinished (interrupted) write.
    assert!(
        s.lost.overwrite > 1000 && s.lost.full > 100 && s.delivered > 100_000,
        "{s:?}"
    );
}

#[test]
fn long_sequences() {
    for (seed, mode) in [(1, Mode::NoOverwrite), (2, Mode::Overwrite)] {
        for local in [false, true] {
            let config = Config {
                mode,
                subbuf_size: 1024,
                subbuf_count: 5,
                local,
                max_nesting: 3,
            };
            check(config, &ops(seed, 200_000, 1024 - 88));
        }
    }
}
