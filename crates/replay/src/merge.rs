//! Merging the click and checkout files into one arrival order.
//!
//! The next event is whichever file's next line has the smaller event time, clicks first on a
//! tie; each file keeps its own order. A bad line has no trustworthy time, so it is handed out
//! as soon as it is at the head of its file.

use crossbeam_channel::Receiver;
use firstclick_model::EventKind;

use crate::source::Item;

struct Side {
    rx: Receiver<Vec<Item>>,
    batch: std::vec::IntoIter<Item>,
    head: Option<Item>,
    done: bool,
}

impl Side {
    fn new(rx: Receiver<Vec<Item>>) -> Self {
        Side {
            rx,
            batch: Vec::new().into_iter(),
            head: None,
            done: false,
        }
    }

    fn fill(&mut self) {
        while self.head.is_none() && !self.done {
            match self.batch.next() {
                Some(item) => self.head = Some(item),
                None => match self.rx.recv() {
                    Ok(b) => self.batch = b.into_iter(),
                    Err(_) => self.done = true,
                },
            }
        }
    }

    fn time(&self) -> Option<i64> {
        match &self.head {
            Some(Item::Click(c)) => Some(c.time.as_micros()),
            Some(Item::Checkout(c)) => Some(c.time.as_micros()),
            _ => None,
        }
    }
}

/// The merged stream of two parsed files.
pub(crate) struct Merge {
    clicks: Side,
    checkouts: Side,
}

impl Merge {
    /// Merges the batches of a click file and a checkout file.
    pub(crate) fn new(clicks: Receiver<Vec<Item>>, checkouts: Receiver<Vec<Item>>) -> Self {
        Merge {
            clicks: Side::new(clicks),
            checkouts: Side::new(checkouts),
        }
    }
}

impl Iterator for Merge {
    type Item = (EventKind, Item);

    fn next(&mut self) -> Option<(EventKind, Item)> {
        self.clicks.fill();
        self.checkouts.fill();
        let take_click = match (&self.clicks.head, &self.checkouts.head) {
            (None, None) => return None,
            (Some(Item::Bad { .. }), _) => true,
            (_, Some(Item::Bad { .. })) => false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(_), Some(_)) => self.clicks.time() <= self.checkouts.time(),
        };
        if take_click {
            self.clicks.head.take().map(|i| (EventKind::Click, i))
        } else {
            self.checkouts.head.take().map(|i| (EventKind::Checkout, i))
        }
    }
}
