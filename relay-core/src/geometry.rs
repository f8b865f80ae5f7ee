//! Geometry: how big the sub-buffers are, how many there are per CPU, how
//! many CPUs, and where every region of a channel lies.
//!
//! The parameters mirror the BPF relay map of the proposal this project grew
//! from: the sub-buffer size (`max_entries`) and the sub-buffer count taken from
//! a 64-bit field whose upper half must be zero, 0 meaning the default 8
//! (`map_extra`). Every size and offset is computed with checked arithmetic; a
//! rejected geometry is a [`GeometryError`] naming the parameter and the rule.

use crate::format::{
    CHANNEL_HEADER_SIZE, CONSUMER_STRIDE, PRODUCER_FIXED_WORDS, RECORD_HEADER_SIZE,
    SUBBUF_HEADER_SIZE,
};

/// Sub-buffer count used when the 64-bit count field is 0.
pub const DEFAULT_SUBBUF_COUNT: u32 = 8;
/// Smallest sub-buffer: the smallest power of two that holds a sub-buffer
/// header and one empty record.
pub const MIN_SUBBUF_SIZE: u32 = 128;
/// Largest sub-buffer (1 GiB): committed bytes and records of one sub-buffer
/// must fit the 32- and 31-bit fields of the commit word.
pub const MAX_SUBBUF_SIZE: u32 = 1 << 30;
/// Fewest sub-buffers per CPU: a writer must be able to fill one while the
/// reader holds another.
pub const MIN_SUBBUF_COUNT: u32 = 2;
/// Most sub-buffers per CPU.
pub const MAX_SUBBUF_COUNT: u32 = 1 << 20;
/// Most CPUs in one channel (Linux's largest `NR_CPUS`).
pub const MAX_CPUS: u32 = 8192;
/// Smallest region alignment. Real channels use the system page size; the
/// loom models use smaller "pages" to keep the models small.
pub const MIN_PAGE_SIZE: u32 = 64;
/// Largest region alignment (64 KiB pages).
pub const MAX_PAGE_SIZE: u32 = 1 << 16;
/// Largest channel, in bytes (1 TiB): keeps every offset far from overflow.
pub const MAX_TOTAL_SIZE: u64 = 1 << 40;

const _: () = assert!(MIN_SUBBUF_SIZE as usize >= SUBBUF_HEADER_SIZE + RECORD_HEADER_SIZE);
const _: () = assert!(MIN_SUBBUF_SIZE.is_power_of_two());

/// The parameters of a channel, as a caller passes them (unvalidated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeometryParams {
    /// Bytes per sub-buffer: a power of two in
    /// [`MIN_SUBBUF_SIZE`]..=[`MAX_SUBBUF_SIZE`].
    pub subbuf_size: u64,
    /// Sub-buffers per CPU, from a 64-bit field: the upper 32 bits must be zero,
    /// 0 means [`DEFAULT_SUBBUF_COUNT`]; otherwise in
    /// [`MIN_SUBBUF_COUNT`]..=[`MAX_SUBBUF_COUNT`].
    pub subbuf_count: u64,
    /// Number of per-CPU buffers, 1..=[`MAX_CPUS`].
    pub cpu_count: u32,
    /// Alignment of every region, a power of two in
    /// [`MIN_PAGE_SIZE`]..=[`MAX_PAGE_SIZE`]; the system page size for a channel
    /// that is mapped with different protections per region.
    pub page_size: u32,
}

/// A parameter of [`GeometryParams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `subbuf_size`.
    SubbufSize,
    /// `subbuf_count`.
    SubbufCount,
    /// `cpu_count`.
    CpuCount,
    /// `page_size`.
    PageSize,
    /// The total size that the other parameters imply.
    TotalSize,
}

impl Param {
    /// The parameter's name as the API and the file format spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Param::SubbufSize => "subbuf_size",
            Param::SubbufCount => "subbuf_count",
            Param::CpuCount => "cpu_count",
            Param::PageSize => "page_size",
            Param::TotalSize => "total_size",
        }
    }
}

/// The rule a parameter broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Must be a power of two.
    PowerOfTwo,
    /// Must be at least this.
    AtLeast(u64),
    /// Must be at most this.
    AtMost(u64),
    /// The upper 32 bits of the 64-bit field must be zero.
    UpperBitsZero,
}

/// A rejected geometry: which parameter, which rule, and the value given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeometryError {
    /// The parameter at fault.
    pub param: Param,
    /// The rule it broke.
    pub rule: Rule,
    /// The value that was passed (or computed, for [`Param::TotalSize`]).
    pub value: u64,
}

impl core::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = self.param.name();
        let value = self.value;
        match self.rule {
            Rule::PowerOfTwo => write!(f, "{name}: must be a power of two (got {value})"),
            Rule::AtLeast(min) => write!(f, "{name}: must be at least {min} (got {value})"),
            Rule::AtMost(max) => write!(f, "{name}: must be at most {max} (got {value})"),
            Rule::UpperBitsZero => {
                write!(f, "{name}: upper 32 bits must be zero (got {value:#x})")
            }
        }
    }
}

/// A validated geometry with the layout it implies. All fields are derived
/// from the four parameters; a reader recomputes them and compares them with
/// what a channel header claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    subbuf_size: u32,
    subbuf_shift: u32,
    subbuf_count: u32,
    cpu_count: u32,
    page_size: u32,
    producer_offset: u64,
    producer_stride: u64,
    consumer_offset: u64,
    data_offset: u64,
    data_stride: u64,
    total_size: u64,
}

fn err(param: Param, rule: Rule, value: u64) -> GeometryError {
    GeometryError { param, rule, value }
}

fn check_range(param: Param, value: u64, min: u64, max: u64) -> Result<(), GeometryError> {
    if value < min {
        return Err(err(param, Rule::AtLeast(min), value));
    }
    if value > max {
        return Err(err(param, Rule::AtMost(max), value));
    }
    Ok(())
}

/// `value` rounded up to a multiple of `align` (a power of two), or `None` on
/// overflow.
pub(crate) const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

impl Geometry {
    /// Validates `params` and computes the layout.
    pub fn new(params: GeometryParams) -> Result<Self, GeometryError> {
        let GeometryParams {
            subbuf_size,
            subbuf_count,
            cpu_count,
            page_size,
        } = params;
        let total_err = |value| err(Param::TotalSize, Rule::AtMost(MAX_TOTAL_SIZE), value);

        check_range(
            Param::SubbufSize,
            subbuf_size,
            MIN_SUBBUF_SIZE.into(),
            MAX_SUBBUF_SIZE.into(),
        )?;
        if !subbuf_size.is_power_of_two() {
            return Err(err(Param::SubbufSize, Rule::PowerOfTwo, subbuf_size));
        }
        if subbuf_count >> 32 != 0 {
            return Err(err(Param::SubbufCount, Rule::UpperBitsZero, subbuf_count));
        }
        let subbuf_count = if subbuf_count == 0 {
            u64::from(DEFAULT_SUBBUF_COUNT)
        } else {
            subbuf_count
        };
        check_range(
            Param::SubbufCount,
            subbuf_count,
            MIN_SUBBUF_COUNT.into(),
            MAX_SUBBUF_COUNT.into(),
        )?;
        check_range(Param::CpuCount, cpu_count.into(), 1, MAX_CPUS.into())?;
        check_range(
            Param::PageSize,
            page_size.into(),
            MIN_PAGE_SIZE.into(),
            MAX_PAGE_SIZE.into(),
        )?;
        if !page_size.is_power_of_two() {
            return Err(err(Param::PageSize, Rule::PowerOfTwo, page_size.into()));
        }

        let page = u64::from(page_size);
        let cpus = u64::from(cpu_count);
        // Producer state: fixed words, then the commit and seal arrays, each
        // padded to whole cache lines so readers polling seals do not share a
        // line with writers' commits.
        let slot_words = align_up(subbuf_count, 8).ok_or(total_err(u64::MAX))?;
        let producer_stride = (PRODUCER_FIXED_WORDS as u64 + 2 * slot_words) * 8;
        // The channel header owns the first page(s).
        let producer_offset =
            align_up(CHANNEL_HEADER_SIZE as u64, page).ok_or(total_err(u64::MAX))?;
        let producer_len = producer_stride
            .checked_mul(cpus)
            .and_then(|v| align_up(v, page));
        let consumer_offset = producer_len.and_then(|len| producer_offset.checked_add(len));
        let consumer_len = align_up(CONSUMER_STRIDE as u64 * cpus, page);
        let data_offset = consumer_offset
            .zip(consumer_len)
            .and_then(|(o, l)| o.checked_add(l));
        let data_stride = subbuf_size
            .checked_mul(subbuf_count)
            .and_then(|v| align_up(v, page));
        let total_size = data_stride
            .and_then(|s| s.checked_mul(cpus))
            .zip(data_offset)
            .and_then(|(len, off)| off.checked_add(len));
        let (Some(consumer_offset), Some(data_offset), Some(data_stride), Some(total_size)) =
            (consumer_offset, data_offset, data_stride, total_size)
        else {
            return Err(total_err(u64::MAX));
        };
        if total_size > MAX_TOTAL_SIZE {
            return Err(total_err(total_size));
        }
        Ok(Geometry {
            // The casts are lossless: every value was range-checked above.
            subbuf_size: subbuf_size as u32,
            subbuf_shift: subbuf_size.trailing_zeros(),
            subbuf_count: subbuf_count as u32,
            cpu_count,
            page_size,
            producer_offset,
            producer_stride,
            consumer_offset,
            data_offset,
            data_stride,
            total_size,
        })
    }

    /// The parameters this geometry was built from (count resolved: never 0).
    pub fn params(&self) -> GeometryParams {
        GeometryParams {
            subbuf_size: self.subbuf_size.into(),
            subbuf_count: self.subbuf_count.into(),
            cpu_count: self.cpu_count,
            page_size: self.page_size,
        }
    }

    /// Bytes per sub-buffer.
    pub fn subbuf_size(&self) -> u32 {
        self.subbuf_size
    }
    /// log2 of [`Self::subbuf_size`].
    pub fn subbuf_shift(&self) -> u32 {
        self.subbuf_shift
    }
    /// Sub-buffers per CPU.
    pub fn subbuf_count(&self) -> u32 {
        self.subbuf_count
    }
    /// Number of per-CPU buffers.
    pub fn cpu_count(&self) -> u32 {
        self.cpu_count
    }
    /// Region alignment.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }
    /// Byte offset of CPU 0's producer state.
    pub fn producer_offset(&self) -> u64 {
        self.producer_offset
    }
    /// Bytes between two CPUs' producer states.
    pub fn producer_stride(&self) -> u64 {
        self.producer_stride
    }
    /// Byte offset of CPU 0's consumer state: the only region readers write.
    pub fn consumer_offset(&self) -> u64 {
        self.consumer_offset
    }
    /// Bytes between two CPUs' consumer states.
    pub fn consumer_stride(&self) -> u64 {
        CONSUMER_STRIDE as u64
    }
    /// Byte offset of CPU 0's data.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
    /// Bytes between two CPUs' data (the sub-buffers, rounded up to a page).
    pub fn data_stride(&self) -> u64 {
        self.data_stride
    }
    /// Bytes of the whole channel.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }
    /// Largest payload one record can carry: a sub-buffer minus its header and
    /// one record header.
    pub fn max_payload(&self) -> u32 {
        self.subbuf_size - (SUBBUF_HEADER_SIZE + RECORD_HEADER_SIZE) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(size: u64, count: u64, cpus: u32) -> GeometryParams {
        GeometryParams {
            subbuf_size: size,
            subbuf_count: count,
            cpu_count: cpus,
            page_size: 4096,
        }
    }

    #[test]
    fn count_zero_means_default() {
        let g = Geometry::new(params(4096, 0, 2)).unwrap();
        assert_eq!(g.subbuf_count(), DEFAULT_SUBBUF_COUNT);
    }

    #[test]
    fn count_upper_bits_rejected() {
        let e = Geometry::new(params(4096, 1 << 32 | 8, 2)).unwrap_err();
        assert_eq!((e.param, e.rule), (Param::SubbufCount, Rule::UpperBitsZero));
        assert_eq!(
            format!("{e}"),
            "subbuf_count: upper 32 bits must be zero (got 0x100000008)"
        );
    }

    #[test]
    fn size_boundaries() {
        assert!(Geometry::new(params(MIN_SUBBUF_SIZE.into(), 2, 1)).is_ok());
        let e = Geometry::new(params(u64::from(MIN_SUBBUF_SIZE) / 2, 2, 1)).unwrap_err();
        assert_eq!((e.param, e.rule), (Param::SubbufSize, Rule::AtLeast(128)));
        let e = Geometry::new(params(192, 2, 1)).unwrap_err();
        assert_eq!((e.param, e.rule), (Param::SubbufSize, Rule::PowerOfTwo));
        assert_eq!(
            format!("{e}"),
            "subbuf_size: must be a power of two (got 192)"
        );
        let e = Geometry::new(params(u64::from(MAX_SUBBUF_SIZE) * 2, 2, 1)).unwrap_err();
        assert_eq!(
            (e.param, e.rule),
            (Param::SubbufSize, Rule::AtMost(MAX_SUBBUF_SIZE.into()))
        );
        assert!(Geometry::new(params(MAX_SUBBUF_SIZE.into(), 2, 1)).is_ok());
        let e = Geometry::new(params(u64::MAX, 2, 1)).unwrap_err();
        assert_eq!(e.param, Param::SubbufSize);
    }

    #[test]
    fn count_and_cpu_boundaries() {
        let e = Geometry::new(params(4096, 1, 1)).unwrap_err();
        assert_eq!((e.param, e.rule), (Param::SubbufCount, Rule::AtLeast(2)));
        let e = Geometry::new(params(4096, u64::from(MAX_SUBBUF_COUNT) + 1, 1)).unwrap_err();
        assert_eq!(e.param, Param::SubbufCount);
        let e = Geometry::new(params(4096, 2, 0)).unwrap_err();
        assert_eq!((e.param, e.rule), (Param::CpuCount, Rule::AtLeast(1)));
        let e = Geometry::new(params(4096, 2, MAX_CPUS + 1)).unwrap_err();
        assert_eq!(e.param, Param::CpuCount);
        assert!(Geometry::new(params(128, 2, MAX_CPUS)).is_ok());
    }

    #[test]
    fn page_size_rules() {
        let mut p = params(4096, 2, 1);
        p.page_size = 3000;
        assert_eq!(Geometry::new(p).unwrap_err().rule, Rule::PowerOfTwo);
        p.page_size = 32;
        assert_eq!(Geometry::new(p).unwrap_err().rule, Rule::AtLeast(64));
        p.page_size = 1 << 17;
        assert_eq!(Geometry::new(p).unwrap_err().rule, Rule::AtMost(1 << 16));
    }

    #[test]
    fn small_pages_still_leave_room_for_the_header() {
        let mut p = params(128, 2, 1);
        p.page_size = 64;
        let g = Geometry::new(p).unwrap();
        assert_eq!(g.producer_offset(), 128);
        assert_eq!(g.consumer_offset(), 128 + 256);
        assert_eq!(g.data_offset(), 128 + 256 + 128);
        assert_eq!(g.total_size(), 128 + 256 + 128 + 256);
    }

    #[test]
    fn total_size_limit() {
        // 1 GiB x 2^20 sub-buffers x 8192 CPUs is far past 1 TiB.
        let e = Geometry::new(params(
            MAX_SUBBUF_SIZE.into(),
            MAX_SUBBUF_COUNT.into(),
            MAX_CPUS,
        ))
        .unwrap_err();
        assert_eq!(e.param, Param::TotalSize);
        let e = Geometry::new(params(MAX_SUBBUF_SIZE.into(), 1024, 1)).unwrap_err();
        assert_eq!(
            (e.param, e.rule),
            (Param::TotalSize, Rule::AtMost(MAX_TOTAL_SIZE))
        );
        assert!(e.value > MAX_TOTAL_SIZE);
    }

    #[test]
    fn layout_is_page_aligned_and_disjoint() {
        let g = Geometry::new(params(4096, 8, 4)).unwrap();
        assert_eq!(g.producer_offset(), 4096);
        assert_eq!(g.producer_stride(), (16 + 2 * 8) * 8);
        assert_eq!(g.consumer_offset(), 8192);
        assert_eq!(g.data_offset(), 12288);
        assert_eq!(g.data_stride(), 8 * 4096);
        assert_eq!(g.total_size(), 12288 + 4 * 8 * 4096);
        assert_eq!(g.max_payload(), 4096 - 72 - 16);
        // Odd counts: the data stride is rounded up to a page.
        let g = Geometry::new(params(128, 3, 3)).unwrap();
        assert_eq!(g.data_stride(), 4096);
        assert_eq!(g.producer_stride(), (16 + 2 * 8) * 8);
        for off in [
            g.producer_offset(),
            g.consumer_offset(),
            g.data_offset(),
            g.total_size(),
        ] {
            assert_eq!(off % 4096, 0);
        }
        assert!(g.producer_offset() + 3 * g.producer_stride() <= g.consumer_offset());
        assert!(g.consumer_offset() + 3 * g.consumer_stride() <= g.data_offset());
    }
}
