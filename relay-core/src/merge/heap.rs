//! The merge's two heaps, kept inside the cursors (no allocation, so the
//! kernel uses them too): the *ready* cursors (an event to hand out) by the
//! timestamp of that event, and the *idle* ones (nothing readable) by the
//! time up to which they provably hold nothing. Each is a binary min-heap
//! ordered by (key, cursor index); its k-th entry is stored in cursor k (a
//! heap never holds more entries than there are cursors). Every cursor is
//! in exactly one of them.

/// One of the two heaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Which {
    Ready = 0,
    Idle = 1,
}

const NONE: u32 = u32::MAX;

/// What a cursor holds for the heaps: per heap, its key, its position in
/// that heap (`NONE` if not in it), and the entry stored at the position
/// equal to its own index.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    key: [u64; 2],
    pos: [u32; 2],
    item: [u32; 2],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            key: [0; 2],
            pos: [NONE; 2],
            item: [NONE; 2],
        }
    }
}

/// Access to the slots of a slice of cursors.
pub(super) trait Slotted {
    fn slot(&self) -> &Slot;
    fn slot_mut(&mut self) -> &mut Slot;
}

/// The lengths of the two heaps.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Heaps {
    len: [usize; 2],
}

fn key<T: Slotted>(cs: &[T], w: Which, i: usize) -> u64 {
    cs.get(i).map_or(u64::MAX, |c| c.slot().key[w as usize])
}

fn at<T: Slotted>(cs: &[T], w: Which, k: usize) -> usize {
    cs.get(k)
        .map_or(usize::MAX, |c| c.slot().item[w as usize] as usize)
}

fn place<T: Slotted>(cs: &mut [T], w: Which, k: usize, i: usize) {
    if let Some(c) = cs.get_mut(k) {
        c.slot_mut().item[w as usize] = i as u32;
    }
    if let Some(c) = cs.get_mut(i) {
        c.slot_mut().pos[w as usize] = k as u32;
    }
}

/// Heap `W` (0 ready, 1 idle) for sifting: positions below the heap's
/// length hold cursor indices below `cs.len()` (only `push` puts them
/// there), so indexing cannot fail once the length is checked.
struct View<'s, T, const W: usize> {
    cs: &'s mut [T],
}

impl<T: Slotted, const W: usize> View<'_, T, W> {
    #[inline(always)]
    fn item(&self, k: usize) -> usize {
        self.cs[k].slot().item[W] as usize
    }
    #[inline(always)]
    fn key(&self, i: usize) -> u64 {
        self.cs[i].slot().key[W]
    }
    #[inline(always)]
    fn place(&mut self, k: usize, i: usize) {
        self.cs[k].slot_mut().item[W] = i as u32;
        self.cs[i].slot_mut().pos[W] = k as u32;
    }

    fn sift_up(&mut self, mut k: usize) -> usize {
        let i = self.item(k);
        let ki = self.key(i);
        while k > 0 {
            let p = (k - 1) / 2;
            let j = self.item(p);
            let kj = self.key(j);
            if !(ki < kj || (ki == kj && i < j)) {
                break;
            }
            self.place(k, j);
            k = p;
        }
        self.place(k, i);
        k
    }

    fn sift_down(&mut self, len: usize, mut k: usize) {
        let i = self.item(k);
        let ki = self.key(i);
        loop {
            let l = 2 * k + 1;
            if l >= len {
                break;
            }
            let (mut m, mut jm) = (l, self.item(l));
            let mut km = self.key(jm);
            if l + 1 < len {
                let jr = self.item(l + 1);
                let kr = self.key(jr);
                if kr < km || (kr == km && jr < jm) {
                    (m, jm, km) = (l + 1, jr, kr);
                }
            }
            if !(km < ki || (km == ki && jm < i)) {
                break;
            }
            self.place(k, jm);
            k = m;
        }
        self.place(k, i);
    }
}

impl Heaps {
    /// The cursor at the top of heap `w`.
    pub(super) fn top<T: Slotted>(&self, cs: &[T], w: Which) -> Option<usize> {
        (self.len[w as usize] > 0).then(|| at(cs, w, 0))
    }

    /// Cursor `i`'s key in heap `w`.
    pub(super) fn key<T: Slotted>(cs: &[T], w: Which, i: usize) -> u64 {
        key(cs, w, i)
    }

    /// The smallest key in heap `w` but the top's.
    pub(super) fn second_key<T: Slotted>(&self, cs: &[T], w: Which) -> Option<u64> {
        let len = self.len[w as usize];
        (1..len.min(3)).map(|k| key(cs, w, at(cs, w, k))).min()
    }

    /// Whether cursor `i` is in heap `w`.
    pub(super) fn contains<T: Slotted>(cs: &[T], w: Which, i: usize) -> bool {
        cs.get(i).is_some_and(|c| c.slot().pos[w as usize] != NONE)
    }

    /// Adds cursor `i` to heap `w` with `key`.
    pub(super) fn push<T: Slotted>(&mut self, cs: &mut [T], w: Which, i: usize, key: u64) {
        let Some(c) = cs.get_mut(i) else { return };
        c.slot_mut().key[w as usize] = key;
        let k = self.len[w as usize];
        self.len[w as usize] += 1;
        place(cs, w, k, i);
        self.sift_up(cs, w, k);
    }

    /// Removes cursor `i` from heap `w`.
    pub(super) fn remove<T: Slotted>(&mut self, cs: &mut [T], w: Which, i: usize) {
        let Some(k) = cs.get(i).map(|c| c.slot().pos[w as usize] as usize) else {
            return;
        };
        let len = self.len[w as usize];
        if k >= len {
            return;
        }
        let last = len - 1;
        self.len[w as usize] = last;
        if k != last {
            let j = at(cs, w, last);
            place(cs, w, k, j);
            self.fix(cs, w, k);
        }
        if let Some(c) = cs.get_mut(i) {
            c.slot_mut().pos[w as usize] = NONE;
        }
    }

    /// Gives cursor `i`, in heap `w`, a new key.
    pub(super) fn update<T: Slotted>(&mut self, cs: &mut [T], w: Which, i: usize, key: u64) {
        let Some(c) = cs.get_mut(i) else { return };
        c.slot_mut().key[w as usize] = key;
        let k = c.slot().pos[w as usize] as usize;
        if k < self.len[w as usize] {
            self.fix(cs, w, k);
        }
    }

    fn fix<T: Slotted>(&mut self, cs: &mut [T], w: Which, k: usize) {
        let k = self.sift_up(cs, w, k);
        self.sift_down(cs, w, k);
    }

    fn sift_up<T: Slotted>(&mut self, cs: &mut [T], w: Which, k: usize) -> usize {
        if k >= self.len[w as usize] || self.len[w as usize] > cs.len() {
            return k;
        }
        match w {
            Which::Ready => View::<T, 0> { cs }.sift_up(k),
            Which::Idle => View::<T, 1> { cs }.sift_up(k),
        }
    }

    fn sift_down<T: Slotted>(&mut self, cs: &mut [T], w: Which, k: usize) {
        let len = self.len[w as usize];
        if k >= len || len > cs.len() {
            return;
        }
        match w {
            Which::Ready => View::<T, 0> { cs }.sift_down(len, k),
            Which::Idle => View::<T, 1> { cs }.sift_down(len, k),
        }
    }
}
