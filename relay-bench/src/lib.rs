//! The kernel's writers as C models (`c/relay.c`, `c/ringbuf.c`, written
//! from Linux 6.12.117's source), behind safe wrappers, for the native
//! benchmark `benches/writers.rs` that runs them next to relay-core's
//! writer in one binary.
//!
//! Each wrapper owns its memory and its C struct, allocated once and never
//! moved, so the pointers the C side keeps stay valid.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::c_void;
use std::ptr::NonNull;

/// The most CPUs a relay model has (`struct model_rchan`'s `buf` array).
pub const MAX_CPUS: u32 = 64;

/// Bytes of `struct model_rchan_buf` (one cache line): over-allocated.
const RCHAN_BUF_BYTES: usize = 128;
/// Bytes of `struct model_rchan` (4 words, 64 pointers): over-allocated.
const RCHAN_BYTES: usize = 1024;
/// `struct model_ringbuf` fits one page, and its data follows that page.
const PAGE: usize = 4096;

mod ffi {
    use std::ffi::c_void;

    extern "C" {
        pub fn model_relay_open(
            chan: *mut c_void,
            bufs: *mut c_void,
            padding: *mut usize,
            mem: *mut c_void,
            n_cpus: u32,
            subbuf_size: usize,
            n_subbufs: usize,
        );
        pub fn model_relay_write(chan: *mut c_void, cpu: u32, data: *const c_void, len: usize);
        pub fn model_relay_reserve_ts(chan: *mut c_void, cpu: u32, data: *const c_void, len: usize);
        pub fn model_ringbuf_init(rb: *mut c_void, data: *mut u8, size: u64);
        pub fn model_bpf_ringbuf_output(
            rb: *mut c_void,
            data: *const c_void,
            size: u64,
            flags: u64,
        ) -> i32;
        pub fn model_ringbuf_consume_all(rb: *mut c_void);
    }
}

/// Zeroed memory of `layout` that frees itself.
struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Block {
    fn new(size: usize, align: usize) -> Block {
        let layout = Layout::from_size_align(size.max(1), align).expect("benchmark layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Block { ptr, layout }
    }

    fn ptr(&self) -> *mut c_void {
        self.ptr.as_ptr().cast()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: a `Block` is plain memory; who may touch it concurrently is
// decided by the model that uses it (below).
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

/// A relay channel (`relay_open()` with flight-recorder callbacks):
/// `cpus` buffers of `n_subbufs` x `subbuf_size` bytes.
pub struct RelayModel {
    chan: Block,
    _bufs: Block,
    _padding: Block,
    _mem: Block,
    cpus: u32,
}

impl RelayModel {
    /// Panics if `cpus` is 0 or above [`MAX_CPUS`].
    pub fn new(cpus: u32, subbuf_size: usize, n_subbufs: usize) -> RelayModel {
        assert!((1..=MAX_CPUS).contains(&cpus), "cpus: 1 to {MAX_CPUS}");
        let n = cpus as usize;
        let chan = Block::new(RCHAN_BYTES, 64);
        let bufs = Block::new(RCHAN_BUF_BYTES * n, 64);
        let padding = Block::new(8 * n * n_subbufs, 8);
        let mem = Block::new(n * n_subbufs * subbuf_size, PAGE);
        // SAFETY: every block is at least as large as the C side uses:
        // the channel and buffer structs are over-allocated (above),
        // `padding` has `cpus * n_subbufs` words and `mem` the buffers.
        unsafe {
            ffi::model_relay_open(
                chan.ptr(),
                bufs.ptr(),
                padding.ptr().cast(),
                mem.ptr(),
                cpus,
                subbuf_size,
                n_subbufs,
            )
        };
        RelayModel {
            chan,
            _bufs: bufs,
            _padding: padding,
            _mem: mem,
            cpus,
        }
    }

    /// A handle that writes `cpu`'s buffer, for one thread.
    pub fn cpu(&mut self, cpu: u32) -> RelayCpu<'_> {
        assert!(cpu < self.cpus, "cpu: below {}", self.cpus);
        RelayCpu {
            chan: self.chan.ptr(),
            cpu,
            _model: std::marker::PhantomData,
        }
    }

    /// Handles for every CPU at once, one per thread.
    pub fn cpus(&mut self) -> Vec<RelayCpu<'_>> {
        let chan = self.chan.ptr();
        (0..self.cpus)
            .map(|cpu| RelayCpu {
                chan,
                cpu,
                _model: std::marker::PhantomData,
            })
            .collect()
    }
}

/// One CPU's buffer of a [`RelayModel`]. Not `Clone`: one writer per
/// buffer, as `local_irq_save` guarantees in the kernel.
pub struct RelayCpu<'m> {
    chan: *mut c_void,
    cpu: u32,
    _model: std::marker::PhantomData<&'m mut RelayModel>,
}

// SAFETY: the handle only writes its own CPU's `rchan_buf` (and the
// channel's `last_toobig`, which the benchmark never triggers).
unsafe impl Send for RelayCpu<'_> {}

impl RelayCpu<'_> {
    /// `relay_write(chan, data, len)`.
    #[inline]
    pub fn relay_write(&mut self, data: &[u8]) {
        // SAFETY: `chan` is a live channel (borrowed from the model), `cpu`
        // one of its buffers, written by this handle only; `data` is valid
        // for its length. Records larger than a sub-buffer are refused.
        unsafe { ffi::model_relay_write(self.chan, self.cpu, data.as_ptr().cast(), data.len()) }
    }

    /// `relay_reserve(chan, 16 + len)`, a 16-byte header with an rdtsc
    /// timestamp, and the payload.
    #[inline]
    pub fn relay_reserve_ts(&mut self, data: &[u8]) {
        // SAFETY: as in `relay_write`.
        unsafe {
            ffi::model_relay_reserve_ts(self.chan, self.cpu, data.as_ptr().cast(), data.len())
        }
    }
}

/// A BPF ring buffer of `size` bytes (a power of two) shared by every
/// thread, its producer position behind a spinlock.
pub struct RingbufModel {
    block: Block,
}

// SAFETY: the C model synchronizes producers with its spinlock and
// atomics, as the kernel does.
unsafe impl Sync for RingbufModel {}

impl RingbufModel {
    /// Panics unless `size` is a power of two of at least a page.
    pub fn new(size: usize) -> RingbufModel {
        assert!(
            size.is_power_of_two() && size >= PAGE,
            "size: a power of two, at least a page"
        );
        // The struct's page, the data, and slack for one wrapping record.
        let block = Block::new(PAGE + size + size, PAGE);
        // SAFETY: the struct fits its page; the data (`size` bytes plus
        // `size` of slack, so a record that wraps stays in the block) starts
        // a page after it, as `bpf_ringbuf_restore_from_rec` needs.
        unsafe {
            let data = block.ptr.as_ptr().add(PAGE);
            ffi::model_ringbuf_init(block.ptr(), data, size as u64)
        };
        RingbufModel { block }
    }

    /// `bpf_ringbuf_output(rb, data, len, 0)`; when the ring is full, the
    /// benchmark's consumer takes everything and the record is retried.
    #[inline]
    pub fn output(&self, data: &[u8]) {
        // SAFETY: the ring buffer is live; `data` is valid for its length,
        // which the model refuses if it exceeds the ring.
        unsafe {
            if ffi::model_bpf_ringbuf_output(
                self.block.ptr(),
                data.as_ptr().cast(),
                data.len() as u64,
                0,
            ) != 0
            {
                ffi::model_ringbuf_consume_all(self.block.ptr());
            }
        }
    }
}
