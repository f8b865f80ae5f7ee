//! The merge's two tournament trees: the *ready* cursors (an event to hand
//! out) by the timestamp of that event, and the *idle* ones (nothing
//! readable) by the time up to which they provably hold nothing. Every
//! cursor is in exactly one of them.
//!
//! Each is a winner tree: an inner node holds the smaller of its two
//! children, so the root is the minimum; a key changes in `log2(N)` steps
//! of one sibling each, whichever cursor it belongs to; and the runner-up
//! is the smallest sibling along the winner's path. Entries are ordered by
//! (key, cursor index); a cursor not in a tree sorts after every cursor in
//! it.
//!
//! Layout: each tree is a perfect binary tree over `P` leaves, `P` the
//! cursor count rounded up to a power of two (the spare leaves hold
//! absent entries). Nodes `1..P` are inner, `P..2P` leaves (cursor `i`'s
//! at `P + i`), node `p`'s children are `2p` and `2p + 1`. Both trees live
//! in one caller-provided array of [`Node`]s, `2P` a tree (node 0 unused):
//! 16 bytes a node, so a step up a tree is one load of a sibling and one
//! store, in a few kilobytes that stay in the cache. Every index is masked
//! by `2P - 1` into a tree of exactly `2P` nodes, so the compiler proves
//! each access in bounds: no checks, no panics. The one path taken once a
//! record, a key's change (`Trees::set`), walks by byte offsets without
//! masks, branch-free, where its SAFETY comment proves them in bounds.

/// A node's size, a power of two (sibling and parent offsets are bit
/// operations on it, see `Trees::set`).
const NODE: usize = core::mem::size_of::<Node>();
const _: () = assert!(NODE.is_power_of_two());

/// One of the two trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Which {
    Ready = 0,
    Idle = 1,
}

/// The tag bit of a cursor that is not in the tree.
const ABSENT: u32 = 1 << 31;

/// A cursor and its key, `key << 32 | tag`, so one integer comparison
/// orders by (key, cursor). The tag is the cursor index, with `ABSENT` set
/// (and the key `u64::MAX`) when the cursor is not in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry(u128);

impl Entry {
    fn present(key: u64, i: usize) -> Self {
        Entry(u128::from(key) << 32 | u128::from(i as u32 & !ABSENT))
    }

    fn absent(i: usize) -> Self {
        Entry(u128::from(u64::MAX) << 32 | u128::from(i as u32 | ABSENT))
    }

    fn key(self) -> Option<u64> {
        (self.0 as u32 & ABSENT == 0).then_some((self.0 >> 32) as u64)
    }

    fn cursor(self) -> Option<usize> {
        let tag = self.0 as u32;
        (tag & ABSENT == 0).then_some(tag as usize)
    }
}

/// A node of one of the merger's trees (see [`crate::merge::Merger::new`]):
/// a cursor and its key, 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(Entry);

impl Default for Node {
    fn default() -> Self {
        Node(Entry::absent(0))
    }
}

/// How many [`Node`]s a [`crate::merge::Merger`] of `cursors` cursors
/// needs: four per cursor, the count rounded up to a power of two (16
/// bytes each: 16 KiB at 256 CPUs).
pub const fn nodes_for(cursors: usize) -> usize {
    match cursors.checked_next_power_of_two() {
        Some(p) => p.saturating_mul(4),
        None => usize::MAX,
    }
}

/// The most cursors the trees can order (tags hold 31 bits of index: far
/// more cursors than memory could hold).
pub(super) const MAX_CURSORS: usize = ABSENT as usize;

/// Both trees over `n` cursors, in `nodes` (at least [`nodes_for`]`(n)`):
/// `2P` nodes each.
pub(super) struct Trees<'t> {
    ready: &'t mut [Node],
    idle: &'t mut [Node],
    n: usize,
    /// `P - 1`; each tree is exactly `2P` nodes long.
    mask: usize,
}

/// Tree node `q` of `t`, whose length is a power of two (or zero): the
/// index is masked by the length, which the compiler sees, so the access
/// needs no check.
#[inline(always)]
fn get(t: &[Node], q: usize) -> Entry {
    let mask = t.len().wrapping_sub(1);
    t.get(q & mask).map_or(Entry::absent(0), |p| p.0)
}

#[inline(always)]
fn put(t: &mut [Node], q: usize, e: Entry) {
    let mask = t.len().wrapping_sub(1);
    if let Some(p) = t.get_mut(q & mask) {
        p.0 = e;
    }
}

impl<'t> Trees<'t> {
    /// The trees in `nodes` over `n` cursors; over none if `nodes` is too
    /// short or `n` too large (which [`crate::merge::Merger::new`] rules
    /// out).
    pub(super) fn of(nodes: &'t mut [Node], n: usize) -> Self {
        let fits = nodes.len() >= nodes_for(n) && n <= MAX_CURSORS;
        let (n, size) = if fits { (n, nodes_for(n) / 2) } else { (0, 2) };
        let (ready, idle) = match nodes.get_mut(..2 * size) {
            Some(both) if fits => both.split_at_mut(size),
            _ => (&mut [][..], &mut [][..]),
        };
        Trees {
            ready,
            idle,
            n,
            mask: size / 2 - 1,
        }
    }

    /// Sets up both trees: every cursor idle with key `idle_key`, none
    /// ready.
    pub(super) fn init(&mut self, idle_key: u64) {
        let (n, mask) = (self.n, self.mask);
        let leaves = mask + 1;
        for w in [Which::Ready, Which::Idle] {
            let t = self.tree(w);
            for i in 0..leaves {
                let e = match w {
                    Which::Idle if i < n => Entry::present(idle_key, i),
                    _ => Entry::absent(i),
                };
                put(t, leaves + i, e);
            }
            for p in (1..leaves).rev() {
                let m = get(t, 2 * p).min(get(t, 2 * p + 1));
                put(t, p, m);
            }
        }
    }

    /// Tree `w`'s nodes: `2 * (mask + 1)`, or none.
    #[inline(always)]
    fn tree(&mut self, w: Which) -> &mut [Node] {
        match w {
            Which::Ready => self.ready,
            Which::Idle => self.idle,
        }
    }

    #[inline(always)]
    fn tree_ref(&self, w: Which) -> &[Node] {
        match w {
            Which::Ready => self.ready,
            Which::Idle => self.idle,
        }
    }

    /// The cursor with the smallest key in tree `w`.
    #[inline]
    pub(super) fn top(&self, w: Which) -> Option<usize> {
        get(self.tree_ref(w), 1).cursor()
    }

    /// The cursor with the smallest key in tree `w`, and that key.
    #[inline]
    pub(super) fn top_entry(&self, w: Which) -> Option<(usize, u64)> {
        let e = get(self.tree_ref(w), 1);
        Some((e.cursor()?, e.key()?))
    }

    /// Cursor `i`'s key in tree `w` (`u64::MAX` if not in it).
    #[inline]
    pub(super) fn key(&self, w: Which, i: usize) -> u64 {
        if i >= self.n {
            return u64::MAX;
        }
        let leaf = self.mask + 1 + i;
        get(self.tree_ref(w), leaf).key().unwrap_or(u64::MAX)
    }

    /// The cursor with the smallest key in tree `w` but the top's (the
    /// runner-up), and that key.
    pub(super) fn second(&self, w: Which) -> Option<(usize, u64)> {
        let (t, mask) = (self.tree_ref(w), self.mask);
        let mut q = mask + 1 + self.top(w)?;
        let mut best = Entry::absent(0);
        while q > 1 {
            best = best.min(get(t, q ^ 1));
            q >>= 1;
        }
        Some((best.cursor()?, best.key()?))
    }

    /// Whether cursor `i` is in tree `w`.
    #[inline]
    pub(super) fn contains(&self, w: Which, i: usize) -> bool {
        i < self.n && get(self.tree_ref(w), self.mask + 1 + i).key().is_some()
    }

    /// Sets cursor `i`'s entry in tree `w` and fixes its path to the root:
    /// at each level the new minimum of the two siblings, of which one is
    /// the value just written.
    #[inline]
    fn set(&mut self, w: Which, i: usize, e: Entry) {
        let (n, mask) = (self.n, self.mask);
        if i >= n {
            return;
        }
        let t = self.tree(w);
        if t.len() != 2 * (mask + 1) {
            return; // `Trees::of` made none: no cursors
        }
        let base = t.as_mut_ptr().cast::<u8>();
        // Node `q` is at byte `q * NODE`; its sibling's offset differs in
        // one bit, its parent's is half, rounded down to a node.
        // Below `2P * NODE <= 2^36` (`P <= 2^31`, `MAX_CURSORS`): no wrap.
        let mut at = (mask + 1 + i).wrapping_mul(NODE);
        let (mut lo, mut hi) = (e.0 as u64, (e.0 >> 64) as u64);
        // SAFETY: `base` is the start of `t`'s `2P` nodes (`P = mask + 1`,
        // tested above), which `t` borrows mutably, so node `q` is the
        // `Node` at byte `q * NODE` (a slice's stride), aligned. Every
        // offset used is of a node in `1..2P`: `at` starts at node
        // `P + i < 2P` (`i < n <= P`) and only moves to a node's parent
        // while above node 1 (`NODE` is a power of two, so halving and
        // rounding down to a multiple of it is the parent's), and a node
        // `2..2P` with its lowest bit flipped stays below `2P` (a power of
        // two). Unchecked, as the path taken once a record: a level is a
        // sibling's load, a comparison, two conditional moves and a store.
        unsafe {
            base.add(at).cast::<Node>().write(Node(e));
            while at > NODE {
                let s = base.add(at ^ NODE).cast::<Node>().read().0 .0;
                let (slo, shi) = (s as u64, (s >> 64) as u64);
                let lt = s < (u128::from(hi) << 64 | u128::from(lo));
                // Which sibling wins is as good as random when CPUs take
                // turns: conditional moves, not a branch that mispredicts.
                lo = core::hint::select_unpredictable(lt, slo, lo);
                hi = core::hint::select_unpredictable(lt, shi, hi);
                at = (at >> 1) & !(NODE - 1);
                base.add(at)
                    .cast::<Node>()
                    .write(Node(Entry(u128::from(hi) << 64 | u128::from(lo))));
            }
        }
    }

    /// Adds cursor `i` to tree `w` with `key` (or gives it that key).
    #[inline]
    pub(super) fn push(&mut self, w: Which, i: usize, key: u64) {
        self.set(w, i, Entry::present(key, i));
    }

    /// Removes cursor `i` from tree `w`.
    pub(super) fn remove(&mut self, w: Which, i: usize) {
        self.set(w, i, Entry::absent(i));
    }

    /// Gives cursor `i`, if in tree `w`, a new key.
    pub(super) fn update(&mut self, w: Which, i: usize, key: u64) {
        if self.contains(w, i) {
            self.set(w, i, Entry::present(key, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Against a plain model (`keys[i]` = ready key): random pushes,
    /// removals and updates, every size up to 40.
    #[test]
    fn trees_agree_with_a_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for n in 1..40usize {
            let mut nodes = std::vec![Node::default(); nodes_for(n)];
            let mut t = Trees::of(&mut nodes, n);
            t.init(5);
            let mut model: Vec<Option<u64>> = std::vec![None; n];
            for _ in 0..400 {
                let i = rnd(n as u64) as usize;
                match rnd(3) {
                    0 => {
                        let k = rnd(8);
                        t.push(Which::Ready, i, k);
                        t.remove(Which::Idle, i);
                        model[i] = Some(k);
                    }
                    1 => {
                        t.remove(Which::Ready, i);
                        t.push(Which::Idle, i, 5);
                        model[i] = None;
                    }
                    _ => {
                        let k = rnd(8);
                        t.update(Which::Ready, i, k);
                        if model[i].is_some() {
                            model[i] = Some(k);
                        }
                    }
                }
                let mut sorted: Vec<(u64, usize)> = model
                    .iter()
                    .enumerate()
                    .filter_map(|(i, k)| k.map(|k| (k, i)))
                    .collect();
                sorted.sort();
                assert_eq!(t.top(Which::Ready), sorted.first().map(|e| e.1));
                assert_eq!(t.second(Which::Ready), sorted.get(1).map(|&(k, i)| (i, k)));
                for (j, k) in model.iter().enumerate() {
                    assert_eq!(t.contains(Which::Ready, j), k.is_some());
                    assert_eq!(t.contains(Which::Idle, j), k.is_none());
                }
                let idle = model.iter().position(Option::is_none);
                assert_eq!(t.top(Which::Idle), idle);
            }
        }
    }
}
