//! Arbitrary sizes, counts and CPU counts: no overflow anywhere, and every
//! accepted geometry satisfies the documented invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::geometry::{
    DEFAULT_SUBBUF_COUNT, MAX_CPUS, MAX_PAGE_SIZE, MAX_SUBBUF_COUNT, MAX_SUBBUF_SIZE,
    MAX_TOTAL_SIZE, MIN_PAGE_SIZE, MIN_SUBBUF_COUNT, MIN_SUBBUF_SIZE,
};
use relay_core::{Geometry, GeometryParams};

fuzz_target!(|p: (u64, u64, u32, u32)| {
    let params = GeometryParams {
        subbuf_size: p.0,
        subbuf_count: p.1,
        cpu_count: p.2,
        page_size: p.3,
    };
    let g = match Geometry::new(params) {
        Ok(g) => g,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let size = u64::from(g.subbuf_size());
    let count = u64::from(g.subbuf_count());
    let cpus = u64::from(g.cpu_count());
    let page = u64::from(g.page_size());
    assert!(
        size.is_power_of_two() && (MIN_SUBBUF_SIZE..=MAX_SUBBUF_SIZE).contains(&g.subbuf_size())
    );
    assert_eq!(size, p.0);
    assert_eq!(1u64 << g.subbuf_shift(), size);
    assert!((MIN_SUBBUF_COUNT..=MAX_SUBBUF_COUNT).contains(&g.subbuf_count()));
    assert_eq!(
        count,
        if p.1 == 0 {
            DEFAULT_SUBBUF_COUNT.into()
        } else {
            p.1
        }
    );
    assert!((1..=MAX_CPUS).contains(&g.cpu_count()));
    assert!(page.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&g.page_size()));
    // Regions are page-aligned, ordered, disjoint and inside the total.
    for off in [
        g.producer_offset(),
        g.consumer_offset(),
        g.data_offset(),
        g.data_stride(),
        g.total_size(),
    ] {
        assert_eq!(off % page, 0);
    }
    assert!(g.producer_offset() >= 128);
    assert!(g.producer_offset() + cpus * g.producer_stride() <= g.consumer_offset());
    assert!(g.consumer_offset() + cpus * g.consumer_stride() <= g.data_offset());
    assert!(g.data_stride() >= size * count);
    assert_eq!(g.data_offset() + cpus * g.data_stride(), g.total_size());
    assert!(g.total_size() <= MAX_TOTAL_SIZE);
    assert!(u64::from(g.max_payload()) + 88 == size);
    // The parameters round-trip.
    assert_eq!(Geometry::new(g.params()), Ok(g));
});
