//! The click store: live clicks grouped by `(user_id, product_id)`.
//!
//! Per click it keeps only the event time and the click id (32 bytes); a key with a single click
//! (most of them) keeps it inline without a heap allocation. The key is the pair itself, never a
//! concatenated string, so user 1 / product 23 and user 12 / product 3 stay apart.

use std::collections::HashMap;

use firstclick_model::{AttributionModel, ClickRef, EventTime, Id, UserId};

/// The grouping key of clicks and checkouts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClickKey {
    /// The user.
    pub user_id: UserId,
    /// The product.
    pub product_id: Id,
}

/// One stored click.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredClick {
    pub(crate) time: EventTime,
    pub(crate) click_id: Id,
}

/// The clicks of one key, inline while there is just one.
#[derive(Clone, Debug)]
pub(crate) enum ClickList {
    One(StoredClick),
    Many(Vec<StoredClick>),
}

impl ClickList {
    pub(crate) fn as_slice(&self) -> &[StoredClick] {
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
#[derive(Clone, Debug, Default)]
pub struct ClickStore {
    by_key: HashMap<ClickKey, ClickList, foldhash::fast::FixedState>,
    len: usize,
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
        self.by_key.len()
    }

    /// Bytes of heap the store holds, measured from its allocations (table buckets, lists and
    /// the text of non-UUID ids).
    pub fn heap_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(ClickKey, ClickList)>() + 1;
        let mut bytes = self.by_key.capacity() * bucket;
        for (key, list) in &self.by_key {
            bytes += id_heap(&key.product_id);
            if let ClickList::Many(v) = list {
                bytes += v.capacity() * std::mem::size_of::<StoredClick>();
            }
            bytes += list
                .as_slice()
                .iter()
                .map(|c| id_heap(&c.click_id))
                .sum::<usize>();
        }
        bytes
    }

    pub(crate) fn insert(&mut self, key: ClickKey, click: StoredClick) -> Inserted {
        use std::collections::hash_map::Entry;
        match self.by_key.entry(key) {
            Entry::Vacant(v) => {
                v.insert(ClickList::One(click));
            }
            Entry::Occupied(mut o) => {
                let list = o.get_mut();
                if list.as_slice().iter().any(|c| c.click_id == click.click_id) {
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

    /// The click credited by `model` for a checkout of `key` at `at`: among the clicks with
    /// `at - lookback <= time <= at`, the smallest (first click) or largest (last click) by
    /// `(time, click_id)`.
    pub fn attribute(
        &self,
        key: &ClickKey,
        at: EventTime,
        lookback_micros: i64,
        model: AttributionModel,
    ) -> Option<ClickRef> {
        let list = self.by_key.get(key)?;
        let from = at.offset(-lookback_micros);
        let in_window = list
            .as_slice()
            .iter()
            .filter(|c| c.time >= from && c.time <= at);
        let best = match model {
            AttributionModel::FirstClick => in_window.min_by(|a, b| order(a, b)),
            AttributionModel::LastClick => in_window.max_by(|a, b| order(a, b)),
        }?;
        Some(ClickRef {
            click_id: best.click_id.clone(),
            time: best.time,
        })
    }

    /// Drops every click older than `horizon`; returns how many were dropped.
    pub(crate) fn evict_before(&mut self, horizon: EventTime) -> usize {
        let mut dropped = 0;
        self.by_key.retain(|_, list| match list {
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
                        let only = v.pop();
                        if let Some(c) = only {
                            *list = ClickList::One(c);
                        }
                        true
                    }
                    _ => true,
                }
            }
        });
        self.len -= dropped;
        if self.by_key.capacity() > 64 && self.by_key.len() * 4 < self.by_key.capacity() {
            self.by_key.shrink_to_fit();
        }
        dropped
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ClickKey, &StoredClick)> {
        self.by_key
            .iter()
            .flat_map(|(k, list)| list.as_slice().iter().map(move |c| (k, c)))
    }
}

fn order(a: &StoredClick, b: &StoredClick) -> std::cmp::Ordering {
    (a.time, &a.click_id).cmp(&(b.time, &b.click_id))
}

fn id_heap(id: &Id) -> usize {
    match id {
        Id::Uuid(_) => 0,
        Id::Text(t) => t.len(),
    }
}
