//! A bounded table of the heaviest products: weighted Space-Saving with batch eviction.
//!
//! Exact top products need every product's sum, and a replay can see millions of products (the
//! generator makes a new product for every story). The table holds at most twice its capacity:
//! when full, it keeps the `capacity` largest estimates and raises its floor to the largest
//! estimate it dropped. A product that comes (back) in starts at the floor plus its weight and
//! remembers the floor as its error. Then, for every product in the table,
//! `estimate - error <= true sum <= estimate`, and every product whose true sum exceeds the
//! floor is in the table. With a floor of 0 nothing was ever dropped and the sums are exact.
//! Eviction sorts once per `capacity` new products, so an insert costs O(log capacity)
//! amortised.

use std::collections::HashMap;

use firstclick_model::Id;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    estimate: i128,
    error: i128,
}

/// See the module documentation. Weights are billionths (`Decimal9` units).
#[derive(Clone, Debug)]
pub(crate) struct TopTable {
    entries: HashMap<Id, Entry>,
    capacity: usize,
    floor: i128,
}

/// One product of [`TopTable::top`]: its id, its estimated sum and the error bound of that
/// estimate (0: exact).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Heavy {
    pub(crate) product: Id,
    pub(crate) estimate: i128,
    pub(crate) error: i128,
}

impl TopTable {
    /// A table that keeps at least `capacity` products (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TopTable {
            entries: HashMap::with_capacity(2 * capacity + 1),
            capacity,
            floor: 0,
        }
    }

    /// Adds `weight` to `product`.
    pub(crate) fn add(&mut self, product: &Id, weight: i128) {
        if let Some(e) = self.entries.get_mut(product) {
            e.estimate += weight;
            return;
        }
        self.entries.insert(
            product.clone(),
            Entry {
                estimate: self.floor + weight,
                error: self.floor,
            },
        );
        if self.entries.len() >= 2 * self.capacity {
            self.evict();
        }
    }

    fn evict(&mut self) {
        let mut all: Vec<(Id, Entry)> = self.entries.drain().collect();
        // Largest estimate first; ties by id, so the result does not depend on hash order.
        all.sort_unstable_by(|a, b| b.1.estimate.cmp(&a.1.estimate).then(a.0.cmp(&b.0)));
        for (_, e) in all.iter().skip(self.capacity) {
            self.floor = self.floor.max(e.estimate);
        }
        all.truncate(self.capacity);
        self.entries.extend(all);
    }

    /// The `n` largest estimates, largest first (ties: the smaller id).
    pub(crate) fn top(&self, n: usize) -> Vec<Heavy> {
        let mut all: Vec<Heavy> = self
            .entries
            .iter()
            .map(|(id, e)| Heavy {
                product: id.clone(),
                estimate: e.estimate,
                error: e.error,
            })
            .collect();
        all.sort_unstable_by(|a, b| {
            b.estimate
                .cmp(&a.estimate)
                .then_with(|| a.product.cmp(&b.product))
        });
        all.truncate(n);
        all
    }

    /// The largest estimate ever dropped; 0 while the sums are exact.
    #[cfg(test)]
    pub(crate) fn floor(&self) -> i128 {
        self.floor
    }

    /// Products held now (at most twice the capacity).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity() {
        let mut t = TopTable::new(10);
        for (p, w) in [("a", 5), ("b", 7), ("a", 4), ("c", 1)] {
            t.add(&Id::new(p), w);
        }
        let top = t.top(2);
        assert_eq!(t.floor(), 0);
        assert_eq!(top[0].product, Id::new("a"));
        assert_eq!((top[0].estimate, top[0].error), (9, 0));
        assert_eq!((top[1].estimate, top[1].error), (7, 0));
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn bounded_and_keeps_the_heavy_products_with_true_bounds() {
        let mut t = TopTable::new(8);
        let mut truth: HashMap<String, i128> = HashMap::new();
        // Three heavy products among 5,000 light ones, interleaved.
        for i in 0..5_000u32 {
            let light = format!("light-{i}");
            t.add(&Id::new(&light), 1 + i128::from(i % 3));
            *truth.entry(light).or_default() += 1 + i128::from(i % 3);
            if i % 10 == 0 {
                for (h, w) in [("heavy-1", 50), ("heavy-2", 30), ("heavy-3", 20)] {
                    t.add(&Id::new(h), w);
                    *truth.entry(h.to_string()).or_default() += w;
                }
            }
            assert!(t.len() < 16, "table grew to {}", t.len());
        }
        assert!(t.floor() > 0);
        let top = t.top(3);
        let names: Vec<String> = top.iter().map(|h| h.product.to_string()).collect();
        assert_eq!(names, ["heavy-1", "heavy-2", "heavy-3"]);
        for h in t.top(16) {
            let real = truth[&h.product.to_string()];
            assert!(h.estimate >= real, "{h:?} below {real}");
            assert!(h.estimate - h.error <= real, "{h:?} vs {real}");
        }
    }
}
