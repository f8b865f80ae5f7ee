//! Helpers shared by the integration tests (not a test target itself).
#![allow(dead_code)]

use relay_core::{AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams};

/// Owned, zeroed words for a channel of geometry `geo`.
pub fn region(geo: &Geometry) -> Vec<AtomicU64> {
    (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect()
}

pub fn geometry(size: u64, count: u64, cpus: u32) -> Geometry {
    Geometry::new(GeometryParams {
        subbuf_size: size,
        subbuf_count: count,
        cpu_count: cpus,
        page_size: 4096,
    })
    .unwrap()
}

pub fn create(mem: &[AtomicU64], geo: Geometry, overwrite: bool) -> Channel<'_> {
    let flags = if overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    Channel::create(mem, geo, flags, Clock::Counter).unwrap()
}

#[allow(unused_imports)]
pub use relay_core::model::payload;

/// The id in a payload made by [`payload`], checking every byte.
pub fn check_payload(p: &[u8], len_of: impl Fn(u64) -> usize) -> u64 {
    relay_core::model::payload_id(p, |id| Some(len_of(id))).expect("torn or corrupt payload")
}

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
