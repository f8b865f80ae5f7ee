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

/// A payload carrying `id` and bytes derived from it, `len` bytes long.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect();
    let n = len.min(8);
    p[..n].copy_from_slice(&id.to_le_bytes()[..n]);
    p
}

/// The id in a payload made by [`payload`], checking every byte.
pub fn check_payload(p: &[u8], len_of: impl Fn(u64) -> usize) -> u64 {
    assert!(
        p.len() >= 8,
        "payload too short to carry an id: {}",
        p.len()
    );
    let id = u64::from_le_bytes(p[..8].try_into().unwrap());
    assert_eq!(
        p,
        &payload(id, len_of(id))[..],
        "torn or corrupt payload for id {id}"
    );
    id
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
