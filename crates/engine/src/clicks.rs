//! The click store: live clicks grouped by `(user_id, product_id)`, in a fixed number of shards.
//!
//! Per click it keeps only the event time and the click id ([`ClickRef`], 32 bytes); a key with a
//! single click (most of them) keeps it inline without a heap allocation. The key is the pair
//! itself, never a concatenated string, so user 1 / product 23 and user 12 / product 3 stay apart.
//!
//! Why shards: a checkpoint's base snapshot is taken from the live store one shard at a time
//! while the worker goes on (see `firstclick-delivery`), so no single step has to walk millions
//! of clicks, and a growing table doubles one shard at a time instead of the whole store.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use firstclick_model::{ClickRef, EventTime, Id, UserId};

/// Number of shards of the click store and of the remembered checkout ids.
pub const STATE_SHARDS: usize = 128;

type FixedState = foldhash::fast::FixedState;

/// The shard of a hashable key. Uses bits 32..39 of the same hash the tables use: the tables
/// take their bucket from the low bits and their control byte from the top 7, so a shard does
/// not end up with keys that all collide in one of them.
pub(crate) fn shard_of<K: Hash>(key: &K) -> usize {
    ((FixedState::default().hash_one(key) >> 32) as usize) % STATE_SHARDS
}

/// The grouping key of clicks and checkouts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClickKey {
    /// The user.
    pub user_id: UserId,
    /// The product.
    pub product_id: Id,
}

/// The clicks of one key, inline while there is just one.
#[derive(Clone, Debug)]
pub(crate) enum ClickList {
    One(ClickRef),
    Many(Vec<ClickRef>),
}

impl ClickList {
    pub(crate) fn as_slice(&self) -> &[ClickRef] {
        match self {
            ClickList::One(c) => std::slice::from_ref(c),
            ClickList::Many(v) => v,
        }
    }
}

/// What happened to a click handed to [`ClickStore::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    Duplicate,
}

/// All live clicks.
#[derive(Clone, Debug)]
pub struct ClickStore {
    shards: Vec<HashMap<ClickKey, ClickList, FixedState>>,
    len: usize,
}

impl Default for ClickStore {
    fn default() -> Self {
        ClickStore {
            shards: (0..STATE_SHARDS).map(|_| HashMap::default()).collect(),
            len: 0,
        }
    }
}

impl ClickStore {
    /// Number of stored clicks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no click is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct `(user, product)` keys.
    pub fn keys(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Bytes of heap the store holds, measured from its allocations (table buckets, lists and
    /// the text of non-UUID ids).
    pub fn heap_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(ClickKey, ClickList)>() + 1;
        let mut bytes = self.shards.capacity() * std::mem::size_of::<HashMap<(), ()>>();
        for shard in &self.shards {
            bytes += shard.capacity() * bucket;
            for (key, list) in shard {
                bytes += id_heap(&key.product_id);
                if let ClickList::Many(v) = list {
                    bytes += v.capacity() * std::mem::size_of::<ClickRef>();
                }
                bytes += list
                    .as_slice()
                    .iter()
                    .map(|c| id_heap(&c.click_id))
                    .sum::<usize>();
            }
        }
        bytes
    }

    /// Stores `click` unless a click of the same id is stored for the key (one older than
    /// `horizon`, swept but not evicted yet, does not count).
    pub(crate) fn insert(
        &mut self,
        key: ClickKey,
        click: ClickRef,
        horizon: Option<EventTime>,
    ) -> Inserted {
        use std::collections::hash_map::Entry;
        let shard = shard_of(&key);
        match self.shards[shard].entry(key) {
            Entry::Vacant(v) => {
                v.insert(ClickList::One(click));
            }
            Entry::Occupied(mut o) => {
                let list = o.get_mut();
                if list
                    .as_slice()
                    .iter()
                    .any(|c| c.click_id == click.click_id && horizon.is_none_or(|h| c.time >= h))
                {
                    return Inserted::Duplicate;
                }
                match list {
                    ClickList::One(first) => {
                        let first = first.clone();
                        *list = ClickList::Many(vec![first, click]);
                    }
                    ClickList::Many(v) => v.push(click),
                }
            }
        }
        self.len += 1;
        Inserted::New
    }

    /// The window of a checkout of `key` at `at`, into `window` (cleared first, so that the
    /// engine reuses one vector for every checkout): the clicks with
    /// `at - lookback <= time <= at`, sorted by `(time, click_id)` (duplicates are never
    /// stored). Clicks older than `horizon` (swept, not yet evicted) never count.
    pub fn window(
        &self,
        key: &ClickKey,
        at: EventTime,
        lookback_micros: i64,
        horizon: Option<EventTime>,
        window: &mut Vec<ClickRef>,
    ) {
        window.clear();
        let Some(list) = self.shards[shard_of(key)].get(key) else {
            return;
        };
        let from = at.offset(-lookback_micros);
        let from = horizon.map_or(from, |h| from.max(h));
        window.extend(
            list.as_slice()
                .iter()
                .filter(|c| c.time >= from && c.time <= at)
                .cloned(),
        );
        window.sort_by(order);
    }

    /// Drops every click older than `horizon`; returns how many were dropped.
    pub(crate) fn evict_before(&mut self, horizon: EventTime) -> usize {
        (0..STATE_SHARDS)
            .map(|s| self.evict_shard_before(s, horizon))
            .sum()
    }

    /// Drops the clicks of shard `shard` older than `horizon`; returns how many were dropped.
    pub(crate) fn evict_shard_before(&mut self, shard: usize, horizon: EventTime) -> usize {
        let mut dropped = 0;
        if let Some(shard) = self.shards.get_mut(shard) {
            shard.retain(|_, list| match list {
                ClickList::One(c) => {
                    if c.time < horizon {
                        dropped += 1;
                        false
                    } else {
                        true
                    }
                }
                ClickList::Many(v) => {
                    let before = v.len();
                    v.retain(|c| c.time >= horizon);
                    dropped += before - v.len();
                    match v.len() {
                        0 => false,
                        1 => {
                            if let Some(c) = v.pop() {
                                *list = ClickList::One(c);
                            }
                            true
                        }
                        _ => true,
                    }
                }
            });
            if shard.capacity() > 64 && shard.len() * 4 < shard.capacity() {
                shard.shrink_to_fit();
            }
        }
        self.len -= dropped;
        dropped
    }

    /// Every stored click with its key, shard by shard.
    pub fn iter(&self) -> impl Iterator<Item = (&ClickKey, &ClickRef)> {
        (0..STATE_SHARDS).flat_map(|s| self.shard(s))
    }

    /// The clicks of shard `shard` (`0..STATE_SHARDS`; an empty iterator beyond), grouped by key.
    pub fn shard_keys(&self, shard: usize) -> impl Iterator<Item = (&ClickKey, &[ClickRef])> {
        self.shards
            .get(shard)
            .into_iter()
            .flat_map(|s| s.iter().map(|(k, l)| (k, l.as_slice())))
    }

    /// The clicks of shard `shard`, one by one.
    pub fn shard(&self, shard: usize) -> impl Iterator<Item = (&ClickKey, &ClickRef)> {
        self.shard_keys(shard)
            .flat_map(|(k, list)| list.iter().map(move |c| (k, c)))
    }

    /// Number of clicks in shard `shard`.
    pub fn shard_len(&self, shard: usize) -> usize {
        self.shard_keys(shard).map(|(_, l)| l.len()).sum()
    }

    /// Number of keys in shard `shard`.
    pub fn shard_key_count(&self, shard: usize) -> usize {
        self.shards.get(shard).map_or(0, HashMap::len)
    }

    /// Makes room for `keys` more keys in shard `shard`.
    pub(crate) fn reserve(&mut self, shard: usize, keys: usize) {
        if let Some(s) = self.shards.get_mut(shard) {
            s.reserve(keys);
        }
    }
}

fn order(a: &ClickRef, b: &ClickRef) -> std::cmp::Ordering {
    (a.time, &a.click_id).cmp(&(b.time, &b.click_id))
}

fn id_heap(id: &Id) -> usize {
    match id {
        Id::Uuid(_) => 0,
        Id::Text(t) => t.len(),
    }
}

/// Checkout ids remembered for de-duplication, with their event times, in the same shards.
#[derive(Clone, Debug)]
pub struct SeenCheckouts {
    shards: Vec<HashMap<Id, EventTime, FixedState>>,
}

impl Default for SeenCheckouts {
    fn default() -> Self {
        SeenCheckouts {
            shards: (0..STATE_SHARDS).map(|_| HashMap::default()).collect(),
        }
    }
}

impl SeenCheckouts {
    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// Whether `id` is remembered (an id older than `horizon`, swept but not evicted yet, is
    /// not).
    pub fn contains(&self, id: &Id, horizon: Option<EventTime>) -> bool {
        self.shards[shard_of(id)]
            .get(id)
            .is_some_and(|t| horizon.is_none_or(|h| *t >= h))
    }

    /// Remembers `id`; false when it already was (see [`SeenCheckouts::contains`]).
    pub(crate) fn insert(&mut self, id: Id, time: EventTime, horizon: Option<EventTime>) -> bool {
        let shard = &mut self.shards[shard_of(&id)];
        match shard.insert(id, time) {
            None => true,
            Some(old) => horizon.is_some_and(|h| old < h),
        }
    }

    /// Number of ids in shard `shard`.
    pub fn shard_count(&self, shard: usize) -> usize {
        self.shards.get(shard).map_or(0, HashMap::len)
    }

    /// Makes room for `ids` more ids in shard `shard`.
    pub(crate) fn reserve(&mut self, shard: usize, ids: usize) {
        if let Some(s) = self.shards.get_mut(shard) {
            s.reserve(ids);
        }
    }

    /// Forgets the ids older than `horizon`.
    pub(crate) fn evict_before(&mut self, horizon: EventTime) {
        for s in 0..STATE_SHARDS {
            self.evict_shard_before(s, horizon);
        }
    }

    /// Forgets the ids of shard `shard` older than `horizon`.
    pub(crate) fn evict_shard_before(&mut self, shard: usize, horizon: EventTime) {
        if let Some(shard) = self.shards.get_mut(shard) {
            shard.retain(|_, t| *t >= horizon);
            if shard.capacity() > 64 && shard.len() * 4 < shard.capacity() {
                shard.shrink_to_fit();
            }
        }
    }

    /// Every remembered id with its event time.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &EventTime)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    /// The ids of shard `shard` (`0..STATE_SHARDS`; an empty iterator beyond).
    pub fn shard(&self, shard: usize) -> impl Iterator<Item = (&Id, &EventTime)> {
        self.shards.get(shard).into_iter().flat_map(HashMap::iter)
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        eprintln!(
            "Id {} ClickRef {} ClickKey {} ClickList {} bucket {}",
            std::mem::size_of::<firstclick_model::Id>(),
            std::mem::size_of::<super::ClickRef>(),
            std::mem::size_of::<super::ClickKey>(),
            std::mem::size_of::<super::ClickList>(),
            std::mem::size_of::<(super::ClickKey, super::ClickList)>()
        );
    }
}
