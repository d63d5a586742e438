//! [`PendingCheckouts`]: the checkouts waiting for the watermark, earliest first.
//!
//! A checkout is large (ids, five optional texts, an amount: about 160 bytes), and a binary
//! heap moves its elements at every level it sifts them through. So the heap holds only the
//! ordering key and a slot number (24 bytes), and the checkouts stay put in a slab whose free
//! slots are reused: a pop moves one checkout once, out of its slot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use firstclick_model::{Checkout, EventTime};

/// Checkouts ordered by `(event time, arrival)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct PendingCheckouts {
    /// `(time, arrival sequence, slot)`, least first.
    order: BinaryHeap<Reverse<(EventTime, u64, u32)>>,
    slots: Vec<Option<Checkout>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl PendingCheckouts {
    /// Adds a checkout; among equal times, earlier arrivals come out first.
    pub(crate) fn push(&mut self, checkout: Checkout) {
        let time = checkout.time;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(checkout);
                slot
            }
            None => {
                // More than 4 billion pending checkouts would not fit in memory anyway.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(checkout));
                slot
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push(Reverse((time, seq, slot)));
    }

    /// The earliest pending checkout's event time.
    pub(crate) fn earliest_time(&self) -> Option<EventTime> {
        self.order.peek().map(|Reverse((time, _, _))| *time)
    }

    /// Takes out the earliest checkout.
    pub(crate) fn pop(&mut self) -> Option<Checkout> {
        let Reverse((_, _, slot)) = self.order.pop()?;
        let checkout = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        if self.order.is_empty() {
            // Nothing pending: every slot is free; start the slab (its capacity kept) afresh.
            self.slots.clear();
            self.free.clear();
        }
        checkout
    }

    /// How many are pending.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// The pending checkouts, in arrival order.
    pub(crate) fn in_arrival_order(&self) -> Vec<&Checkout> {
        let mut all: Vec<&(EventTime, u64, u32)> = self.order.iter().map(|r| &r.0).collect();
        all.sort_unstable_by_key(|(_, seq, _)| *seq);
        all.into_iter()
            .filter_map(|(_, _, slot)| self.slots.get(*slot as usize)?.as_ref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(id: &str, secs: i64) -> Checkout {
        let line = format!(
            r#"{{"checkout_id":"{id}","user_id":1,"product_id":"p","datetime_occured":"2026-01-01 00:00:{secs:02}"}}"#
        );
        firstclick_model::parse_checkout(line.as_bytes()).expect("valid checkout")
    }

    #[test]
    fn pops_by_time_then_arrival_and_reuses_slots() {
        let mut p = PendingCheckouts::default();
        p.push(checkout("a", 30));
        p.push(checkout("b", 10));
        p.push(checkout("c", 30));
        assert_eq!(p.earliest_time(), Some(checkout("x", 10).time));
        assert_eq!(p.pop().map(|c| c.checkout_id.to_string()), Some("b".into()));
        p.push(checkout("d", 20));
        assert_eq!(p.slots.len(), 3, "the freed slot is reused");
        let order: Vec<String> = p
            .in_arrival_order()
            .iter()
            .map(|c| c.checkout_id.to_string())
            .collect();
        assert_eq!(order, ["a", "c", "d"]);
        let popped: Vec<String> = std::iter::from_fn(|| p.pop())
            .map(|c| c.checkout_id.to_string())
            .collect();
        assert_eq!(popped, ["d", "a", "c"]);
        assert_eq!(p.len(), 0);
        assert!(p.slots.is_empty());
    }
}
