//! Arbitrary sequences of reserve / commit / nested write / flush / read in
//! both modes and with both writer flavours, checked against the sequential
//! model: same answers, same records in the same order, every record
//! delivered once or counted lost once.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_core::model::{check, Config, Op};
use relay_core::Mode;

#[derive(Arbitrary, Debug)]
enum FuzzOp {
    Begin { len: u16, discard: bool },
    Finish,
    Write { len: u16 },
    Flush,
    Read { in_place: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    overwrite: bool,
    local: bool,
    size_shift: u8,
    count: u8,
    ops: Vec<FuzzOp>,
}

fuzz_target!(|input: Input| {
    let config = Config {
        mode: if input.overwrite {
            Mode::Overwrite
        } else {
            Mode::NoOverwrite
        },
        subbuf_size: 128 << (input.size_shift % 4),
        subbuf_count: 2 + u64::from(input.count % 7),
        local: input.local,
        max_nesting: 4,
    };
    let ops: Vec<Op> = input
        .ops
        .iter()
        .take(4096)
        .map(|op| match *op {
            FuzzOp::Begin { len, discard } => Op::Begin {
                len: (len % 1200).into(),
                discard,
            },
            FuzzOp::Finish => Op::Finish,
            FuzzOp::Write { len } => Op::Write {
                len: (len % 1200).into(),
            },
            FuzzOp::Flush => Op::Flush,
            FuzzOp::Read { in_place } => Op::Read { in_place },
        })
        .collect();
    check(config, &ops);
});
