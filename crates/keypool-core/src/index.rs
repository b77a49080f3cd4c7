//! The eligibility index: which keys can serve now, in selection order.
//!
//! A key is in the index exactly when it can be selected. Ordered strategies
//! keep an indexed binary min-heap of `(class, score, secondary, slot)`: the
//! top is the answer, updates are `O(log n)`, and each member costs 16 bytes.
//! Power-of-two-choices keeps a dense vector per class for `O(1)` sampling.

// Indices here are kept in range by the heap's own invariants (every position
// stored in `pos` points into `items`); a bad index would be a bug in this
// module, never the result of input, and the tests below exercise every path.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;

const ABSENT: u32 = u32::MAX;

/// A heap item packed into one `u128`, so comparison is one integer compare:
/// class (16 bits) | primary score (64) | secondary score (16, saturating) | slot (32).
/// Equal scores tie-break on the slot, so the order is total and deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Item(u128);

impl Item {
    fn new(slot: u32, class: u16, primary: u64, secondary: u32) -> Self {
        let secondary = u128::from(secondary.min(u32::from(u16::MAX)));
        Item(
            (u128::from(class) << 112)
                | (u128::from(primary) << 48)
                | (secondary << 32)
                | u128::from(slot),
        )
    }

    fn slot(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }

    #[cfg(test)]
    fn class(self) -> u16 {
        (self.0 >> 112) as u16
    }
}

/// An indexed binary min-heap over slots.
#[derive(Debug, Default)]
pub(crate) struct Heap {
    items: Vec<Item>,
    /// Position of each slot's item in `items`, or `ABSENT`.
    pos: Vec<u32>,
}

impl Heap {
    fn set_pos(&mut self, i: usize) {
        if let Some(item) = self.items.get(i) {
            let slot = item.slot() as usize;
            if slot >= self.pos.len() {
                self.pos.resize(slot + 1, ABSENT);
            }
            self.pos[slot] = i as u32;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.items[i] < self.items[parent] {
                self.items.swap(i, parent);
                self.set_pos(i);
                i = parent;
            } else {
                break;
            }
        }
        self.set_pos(i);
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.items.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.items[l] < self.items[m] {
                m = l;
            }
            if r < n && self.items[r] < self.items[m] {
                m = r;
            }
            if m == i {
                break;
            }
            self.items.swap(i, m);
            self.set_pos(i);
            i = m;
        }
        self.set_pos(i);
    }

    fn insert(&mut self, item: Item) {
        self.items.push(item);
        self.sift_up(self.items.len() - 1);
    }

    fn remove(&mut self, slot: u32) -> bool {
        let Some(&p) = self.pos.get(slot as usize) else {
            return false;
        };
        if p == ABSENT {
            return false;
        }
        let p = p as usize;
        self.pos[slot as usize] = ABSENT;
        let last = self.items.len() - 1;
        if p != last {
            self.items.swap(p, last);
            self.items.pop();
            self.sift_down(p);
            self.sift_up(p);
        } else {
            self.items.pop();
        }
        true
    }

    /// The best item whose slot `skip` rejects not, exploring at most the
    /// rejected items' children: `O(k log k)` for `k` rejections.
    fn best(&self, mut skip: impl FnMut(u32) -> bool) -> Option<Item> {
        let first = *self.items.first()?;
        if !skip(first.slot()) {
            return Some(first);
        }
        let mut frontier = std::collections::BinaryHeap::new();
        let push_children = |frontier: &mut std::collections::BinaryHeap<_>, i: usize| {
            for c in [2 * i + 1, 2 * i + 2] {
                if let Some(item) = self.items.get(c) {
                    frontier.push(std::cmp::Reverse((*item, c)));
                }
            }
        };
        push_children(&mut frontier, 0);
        while let Some(std::cmp::Reverse((item, i))) = frontier.pop() {
            if !skip(item.slot()) {
                return Some(item);
            }
            push_children(&mut frontier, i);
        }
        None
    }
}

/// Dense per-class vectors for sampling.
#[derive(Debug, Default)]
pub(crate) struct Dense {
    classes: BTreeMap<u16, Vec<u32>>,
    /// For each slot: its class and its position in that class's vector.
    pos: Vec<(u16, u32)>,
}

impl Dense {
    fn insert(&mut self, slot: u32, class: u16) {
        let members = self.classes.entry(class).or_default();
        members.push(slot);
        let at = (members.len() - 1) as u32;
        let s = slot as usize;
        if s >= self.pos.len() {
            self.pos.resize(s + 1, (0, ABSENT));
        }
        self.pos[s] = (class, at);
    }

    fn remove(&mut self, slot: u32) -> bool {
        let Some(&(class, at)) = self.pos.get(slot as usize) else {
            return false;
        };
        if at == ABSENT {
            return false;
        }
        self.pos[slot as usize] = (0, ABSENT);
        let Some(members) = self.classes.get_mut(&class) else {
            return false;
        };
        members.swap_remove(at as usize);
        if let Some(&moved) = members.get(at as usize) {
            self.pos[moved as usize] = (class, at);
        }
        if members.is_empty() {
            self.classes.remove(&class);
        }
        true
    }
}

/// The index for the configured strategy.
#[derive(Debug)]
pub(crate) enum Index {
    Heap(Heap),
    Dense(Dense),
}

impl Index {
    pub(crate) fn contains(&self, slot: u32) -> bool {
        match self {
            Index::Heap(h) => h.pos.get(slot as usize).is_some_and(|&p| p != ABSENT),
            Index::Dense(d) => d.pos.get(slot as usize).is_some_and(|&(_, p)| p != ABSENT),
        }
    }

    pub(crate) fn insert(&mut self, slot: u32, class: u16, primary: u64, secondary: u32) {
        debug_assert!(!self.contains(slot));
        match self {
            Index::Heap(h) => h.insert(Item::new(slot, class, primary, secondary)),
            Index::Dense(d) => d.insert(slot, class),
        }
    }

    pub(crate) fn remove(&mut self, slot: u32) -> bool {
        match self {
            Index::Heap(h) => h.remove(slot),
            Index::Dense(d) => d.remove(slot),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Index::Heap(h) => h.items.len(),
            Index::Dense(d) => d.classes.values().map(Vec::len).sum(),
        }
    }

    /// For the heap: the best slot not skipped.
    pub(crate) fn heap_best(&self, skip: impl FnMut(u32) -> bool) -> Option<u32> {
        match self {
            Index::Heap(h) => h.best(skip).map(Item::slot),
            Index::Dense(_) => None,
        }
    }

    /// For dense: the members of each class, best class first.
    pub(crate) fn dense_classes(&self) -> impl Iterator<Item = &[u32]> {
        let classes = match self {
            Index::Dense(d) => Some(d.classes.values().map(Vec::as_slice)),
            Index::Heap(_) => None,
        };
        classes.into_iter().flatten()
    }

    /// The class of the best member.
    #[cfg(test)]
    fn class_of_top(&self) -> Option<u16> {
        match self {
            Index::Heap(h) => h.items.first().map(|i| i.class()),
            Index::Dense(d) => d.classes.keys().next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut Heap) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(item) = h.items.first().copied() {
            out.push(item.slot());
            assert!(h.remove(item.slot()));
        }
        out
    }

    #[test]
    fn heap_orders_by_class_then_score_then_slot() {
        let mut h = Heap::default();
        h.insert(Item::new(0, 1, 0, 0));
        h.insert(Item::new(1, 0, 50, 0));
        h.insert(Item::new(2, 0, 10, 5));
        h.insert(Item::new(3, 0, 10, 1));
        h.insert(Item::new(4, 0, 10, 1));
        assert_eq!(drain(&mut h), vec![3, 4, 2, 1, 0]);
    }

    #[test]
    fn heap_remove_from_middle_keeps_order() {
        let mut h = Heap::default();
        for s in 0..100u32 {
            h.insert(Item::new(s, 0, u64::from((s * 37) % 100), 0));
        }
        for s in (0..100).step_by(3) {
            assert!(h.remove(s));
            assert!(!h.remove(s));
        }
        let order = drain(&mut h);
        let scores: Vec<u32> = order.iter().map(|s| (s * 37) % 100).collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(order.len(), 100 - 34);
    }

    #[test]
    fn heap_best_skips_excluded() {
        let mut h = Heap::default();
        for s in 0..50u32 {
            h.insert(Item::new(s, 0, u64::from(s), 0));
        }
        assert_eq!(h.best(|s| s < 7).map(Item::slot), Some(7));
        assert_eq!(h.best(|_| true), None);
    }

    #[test]
    fn dense_classes_and_swap_remove() {
        let mut idx = Index::Dense(Dense::default());
        idx.insert(0, 2, 0, 0);
        idx.insert(1, 1, 0, 0);
        idx.insert(2, 1, 0, 0);
        assert_eq!(idx.class_of_top(), Some(1));
        assert!(idx.remove(1));
        assert!(idx.contains(2));
        assert!(!idx.contains(1));
        assert_eq!(idx.dense_classes().next(), Some(&[2u32][..]));
        assert!(idx.remove(2));
        assert_eq!(idx.class_of_top(), Some(2));
        assert_eq!(idx.len(), 1);
    }
}
