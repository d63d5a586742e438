//! The small user-name cache: a map with one time-to-live for every entry and a bounded number
//! of entries. Absent users are cached too (as `None`).
//!
//! Every entry lives for the same TTL, so insertion order is expiry order: a queue of
//! `(id, inserted_at)` in insertion order gives both expiry and eviction (oldest first) in
//! amortised O(1), without a timer. Time is passed in, so the logic is tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use firstclick_model::UserId;

/// How long entries live and how many are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Time after which an entry is no longer used. Zero disables caching.
    pub ttl: Duration,
    /// Most entries kept; the oldest are dropped first. Zero disables caching.
    pub capacity: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(60),
            capacity: 100_000,
        }
    }
}

struct Entry<V> {
    value: V,
    inserted: Instant,
}

/// A bounded map from user id to a value (a name or its absence) that forgets entries after a
/// fixed TTL.
pub(crate) struct TtlCache<V> {
    settings: CacheSettings,
    map: HashMap<UserId, Entry<V>>,
    /// Insertion order. May hold records of entries that were since replaced or removed; those
    /// are recognised by their `inserted` time not matching the map's and skipped.
    order: VecDeque<(UserId, Instant)>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(settings: CacheSettings) -> Self {
        TtlCache {
            settings,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.capacity > 0 && !self.settings.ttl.is_zero()
    }

    /// The value cached for `id`, if it is younger than the TTL at `now`.
    pub(crate) fn get(&self, id: UserId, now: Instant) -> Option<V> {
        let entry = self.map.get(&id)?;
        (now.saturating_duration_since(entry.inserted) < self.settings.ttl)
            .then(|| entry.value.clone())
    }

    /// Caches `value` for `id` as of `now`, dropping expired entries and, past capacity, the
    /// oldest ones.
    pub(crate) fn insert(&mut self, id: UserId, value: V, now: Instant) {
        if !self.enabled() {
            return;
        }
        self.map.insert(
            id,
            Entry {
                value,
                inserted: now,
            },
        );
        self.order.push_back((id, now));
        self.evict(now);
    }

    /// Forgets `id` (e.g. after it was written).
    pub(crate) fn remove(&mut self, id: UserId) {
        // Its record in `order` becomes stale and is skipped when it reaches the front.
        self.map.remove(&id);
    }

    /// Number of entries held, expired or not.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn evict(&mut self, now: Instant) {
        while let Some(&(id, inserted)) = self.order.front() {
            let current = self.map.get(&id).is_some_and(|e| e.inserted == inserted);
            let expired = now.saturating_duration_since(inserted) >= self.settings.ttl;
            let over = self.map.len() > self.settings.capacity;
            if !current {
                self.order.pop_front();
            } else if expired || over {
                self.order.pop_front();
                self.map.remove(&id);
            } else {
                break;
            }
        }
        // Stale records behind a live front record (an id re-inserted while its previous record
        // was still young) are bounded by the number of inserts per TTL; compact if they pile up.
        if self.order.len() > 2 * self.settings.capacity.max(1024) {
            let map = &self.map;
            self.order
                .retain(|(id, inserted)| map.get(id).is_some_and(|e| e.inserted == *inserted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64, capacity: usize) -> TtlCache<Option<String>> {
        TtlCache::new(CacheSettings {
            ttl: Duration::from_millis(ttl_ms),
            capacity,
        })
    }

    #[test]
    fn entries_live_exactly_for_the_ttl() {
        let t0 = Instant::now();
        let mut c = cache(1000, 10);
        c.insert(1, Some("ann".into()), t0);
        c.insert(2, None, t0);
        assert_eq!(c.get(1, t0), Some(Some("ann".into())));
        assert_eq!(c.get(2, t0), Some(None), "absent users are cached too");
        assert_eq!(c.get(3, t0), None);
        let almost = t0 + Duration::from_millis(999);
        assert_eq!(c.get(1, almost), Some(Some("ann".into())));
        let later = t0 + Duration::from_millis(1000);
        assert_eq!(c.get(1, later), None);
        assert_eq!(c.get(2, later), None);
        c.insert(3, None, later);
        assert_eq!(c.len(), 1, "expired entries are dropped on insert");
    }

    #[test]
    fn capacity_drops_the_oldest_first() {
        let t0 = Instant::now();
        let mut c = cache(60_000, 3);
        for id in 0..10 {
            c.insert(
                id,
                Some(id.to_string()),
                t0 + Duration::from_millis(id as u64),
            );
        }
        assert_eq!(c.len(), 3);
        let now = t0 + Duration::from_millis(20);
        assert_eq!(c.get(6, now), None);
        for id in 7..10 {
            assert_eq!(c.get(id, now), Some(Some(id.to_string())));
        }
    }

    #[test]
    fn refreshing_an_entry_restarts_its_ttl_and_stale_records_are_skipped() {
        let t0 = Instant::now();
        let mut c = cache(100, 2);
        c.insert(1, Some("old".into()), t0);
        c.insert(2, None, t0 + Duration::from_millis(10));
        c.insert(1, Some("new".into()), t0 + Duration::from_millis(50));
        // The stale record of 1 (t0) is at the front; capacity 2 must not evict 2 or the new 1.
        assert_eq!(c.len(), 2);
        let t = t0 + Duration::from_millis(120);
        assert_eq!(c.get(1, t), Some(Some("new".into())));
        assert_eq!(c.get(2, t), None, "2 expired at t0+110ms");
    }

    #[test]
    fn removed_entries_are_gone_and_do_not_break_eviction() {
        let t0 = Instant::now();
        let mut c = cache(1000, 2);
        c.insert(1, None, t0);
        c.remove(1);
        assert_eq!(c.get(1, t0), None);
        c.insert(2, None, t0);
        c.insert(3, None, t0);
        assert_eq!(c.len(), 2);
        assert!(c.get(2, t0).is_some() && c.get(3, t0).is_some());
    }

    #[test]
    fn zero_ttl_or_capacity_disables_caching() {
        let t0 = Instant::now();
        for mut c in [cache(0, 10), cache(1000, 0)] {
            c.insert(1, None, t0);
            assert_eq!(c.get(1, t0), None);
            assert_eq!(c.len(), 0);
        }
    }

    #[test]
    fn the_order_queue_stays_bounded_under_churn() {
        let t0 = Instant::now();
        let mut c = cache(60_000, 10);
        for i in 0..100_000u64 {
            c.insert((i % 7) as i64, None, t0 + Duration::from_micros(i));
        }
        assert!(c.len() <= 10);
        assert!(c.order.len() <= 2 * 1024 + 1, "{}", c.order.len());
    }
}
