//! The overwrite policy: when a writer may open a sub-buffer, and what
//! happens to the sub-buffer that occupied its slot.
//!
//! These are pure functions of values the writer loaded; the writer module
//! does the atomics. Keeping them here lets the unit tests, the differential
//! model and the fuzzer check the policy directly.

use bitflags::bitflags;

use crate::format::Seal;

bitflags! {
    /// Per-channel flags, stored in the channel header.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ChannelFlags: u64 {
        /// Flight-recorder mode: when every sub-buffer is full, the writer
        /// reclaims the oldest sealed one (counting its records as lost to
        /// overwrite) instead of dropping the new record (like BPF_F_OVERWRITE).
        const OVERWRITE = 1;
    }
}

/// What a writer does when every sub-buffer is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Drop the new record and count it as lost because full.
    NoOverwrite,
    /// Reclaim the oldest sealed sub-buffer; its unread records count as lost
    /// to overwrite.
    Overwrite,
}

impl From<ChannelFlags> for Mode {
    fn from(flags: ChannelFlags) -> Mode {
        if flags.contains(ChannelFlags::OVERWRITE) {
            Mode::Overwrite
        } else {
            Mode::NoOverwrite
        }
    }
}

/// The seal word a slot must hold for sub-buffer `target` to open in it:
/// the previous occupant `target - count`, sealed, or nothing on the first lap.
#[inline]
pub fn required_seal(target: u64, count: u32) -> Seal {
    match target.checked_sub(count.into()) {
        Some(previous) => Seal::Sealed(previous),
        None => Seal::Empty,
    }
}

/// Whether sub-buffer `target` may open, given its slot's seal and the
/// consumer position `consumed` (hostile: any value).
///
/// - The slot's previous occupant must be sealed. If it is not, a writer that
///   was interrupted while writing into it still holds a reservation there
///   (the buffer lapped during a nested write), or another context is opening
///   the slot right now; in both cases the new record is dropped.
/// - Without overwrite, the reader must have consumed the previous occupant:
///   `target - consumed < count`. A consumer position ahead of `target` is a
///   lie and counts as full, so the writer never relies on it.
#[inline]
pub fn may_open(mode: Mode, target: u64, count: u32, seal: Seal, consumed: u64) -> bool {
    if seal != required_seal(target, count) {
        return false;
    }
    match mode {
        Mode::Overwrite => true,
        Mode::NoOverwrite => target.wrapping_sub(consumed) < u64::from(count),
    }
}

/// When the writer reclaims sealed sub-buffer `previous` and the consumer is
/// at `consumed`: the position to push the consumer to if `previous` is unread
/// (its records are then lost to overwrite), or `None` if a reader already
/// consumed it. Positions compare with wrapping distance, so a hostile value
/// cannot make the writer count the same sub-buffer twice in one reclaim.
#[inline]
pub fn reclaim_push(previous: u64, consumed: u64) -> Option<u64> {
    // `consumed <= previous` in wrapping order.
    if previous.wrapping_sub(consumed) < 1 << 63 {
        Some(previous.wrapping_add(1))
    } else {
        None
    }
}

/// How many times the writer retries moving a consumer position that keeps
/// changing under it. Only a hostile reader changes it that often; the bound
/// keeps an NMI writer from spinning on memory userspace controls.
pub const RECLAIM_ATTEMPTS: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lap_needs_empty_slots() {
        assert!(may_open(Mode::NoOverwrite, 0, 4, Seal::Empty, 0));
        assert!(may_open(Mode::NoOverwrite, 3, 4, Seal::Empty, 0));
        assert!(!may_open(Mode::NoOverwrite, 3, 4, Seal::Opening(3), 0));
        assert!(!may_open(Mode::Overwrite, 3, 4, Seal::Opening(3), 0));
    }

    #[test]
    fn no_overwrite_waits_for_the_reader() {
        // Slot of 4 held sealed 0; reader still at 0: full.
        assert!(!may_open(Mode::NoOverwrite, 4, 4, Seal::Sealed(0), 0));
        assert!(may_open(Mode::NoOverwrite, 4, 4, Seal::Sealed(0), 1));
        // Hostile consumer positions: ahead of the writer, or absurdly behind.
        assert!(!may_open(Mode::NoOverwrite, 4, 4, Seal::Sealed(0), 5));
        assert!(!may_open(
            Mode::NoOverwrite,
            4,
            4,
            Seal::Sealed(0),
            u64::MAX
        ));
    }

    #[test]
    fn overwrite_needs_only_a_sealed_occupant() {
        assert!(may_open(Mode::Overwrite, 4, 4, Seal::Sealed(0), 0));
        assert!(!may_open(Mode::Overwrite, 4, 4, Seal::Opening(0), 0));
        assert!(!may_open(Mode::Overwrite, 8, 4, Seal::Sealed(0), 0));
    }

    #[test]
    fn reclaim_pushes_only_unread() {
        assert_eq!(reclaim_push(4, 4), Some(5));
        assert_eq!(reclaim_push(4, 0), Some(5));
        assert_eq!(reclaim_push(4, 5), None);
        assert_eq!(reclaim_push(4, u64::MAX), Some(5));
        assert_eq!(reclaim_push(u64::MAX, 0), None);
    }

    #[test]
    fn mode_from_flags() {
        assert_eq!(Mode::from(ChannelFlags::empty()), Mode::NoOverwrite);
        assert_eq!(Mode::from(ChannelFlags::OVERWRITE), Mode::Overwrite);
    }
}
