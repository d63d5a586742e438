//! [`Generator`]: product stories planned in event time, emitted in arrival order.
//!
//! A story is one user's interest in one new product: a click, then with the repeat probability
//! another click and a checkout, again and again. Stories start at random (exponential gaps) at
//! the configured rate; their events are planned ahead in event time. Each planned event, when
//! its time comes, is given an arrival key `time + jitter` with `0 <= jitter <= disorder`, and
//! is emitted once no event still to come can have a smaller key. So any event arrives at most
//! `disorder` behind an event emitted before it, and with no disorder the output is in event
//! order. Everything comes from one seeded ChaCha stream: same seed, same bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::GeneratorConfig;
use crate::content::{self, CheckoutJson, ClickJson};
use firstclick_model::{EventKind, EventTime, UserRecord};

const MS: i64 = 1000;
const SECOND: i64 = 1_000_000;

/// A user, as written to Redis or to the users file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The id clicks and checkouts carry.
    pub id: i64,
    /// The name copied into output rows.
    pub user_name: String,
    /// Stored as the original did; never read by the pipeline.
    pub password: String,
}

impl User {
    /// The users-file record (without the password).
    pub fn record(&self) -> UserRecord {
        UserRecord {
            id: self.id,
            user_name: self.user_name.clone(),
        }
    }
}

/// One message in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// Which stream it belongs to.
    pub kind: EventKind,
    /// The JSON message (no newline).
    pub line: String,
    /// Its event time (for a malformed message, the time of the event it was sent after).
    pub time: EventTime,
    /// A second copy of an event already emitted.
    pub duplicate: bool,
    /// A message the pipeline must refuse.
    pub malformed: bool,
}

/// What was generated so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    /// Distinct clicks.
    pub clicks: u64,
    /// Distinct checkouts.
    pub checkouts: u64,
    /// Duplicate copies sent.
    pub duplicates: u64,
    /// Malformed messages sent.
    pub malformed: u64,
    /// Stories whose checkout comes after the lookback.
    pub stale_stories: u64,
    /// Checkouts without any click.
    pub organic_checkouts: u64,
    /// Stories of users not in the users set.
    pub unknown_user_stories: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Planned {
    time: i64,
    seq: u64,
    kind_is_click: bool,
    line: String,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    key: i64,
    seq: u64,
    event: ArrivalEvent,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ArrivalEvent {
    kind_is_click: bool,
    line: String,
    time: i64,
    duplicate: bool,
    malformed: bool,
}

/// The event generator; iterate it for [`GeneratedEvent`]s.
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    users: Vec<User>,
    next_story: i64,
    planned: BinaryHeap<Reverse<Planned>>,
    arrivals: BinaryHeap<Reverse<Arrival>>,
    clicks_planned: u64,
    seq: u64,
    stats: GeneratorStats,
}

impl Generator {
    /// A generator for `config`; users are drawn at once from their own seeded stream.
    pub fn new(config: GeneratorConfig) -> Self {
        let mut user_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_0f05_e125);
        let users = (1..=i64::from(config.users))
            .map(|id| User {
                id,
                user_name: content::name(&mut user_rng),
                password: content::password(&mut user_rng),
            })
            .collect();
        Generator {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            next_story: config.start.as_micros(),
            users,
            planned: BinaryHeap::new(),
            arrivals: BinaryHeap::new(),
            clicks_planned: 0,
            seq: 0,
            stats: GeneratorStats::default(),
            config,
        }
    }

    /// The users the events refer to (ids 1..=N).
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Counts of what was generated so far.
    pub fn stats(&self) -> GeneratorStats {
        self.stats
    }

    fn budget_left(&self) -> bool {
        self.config
            .clicks
            .is_none_or(|max| self.clicks_planned < max)
    }

    fn seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn gap(&mut self, min_ms: i64, max_ms: i64) -> i64 {
        self.rng.random_range(min_ms..=max_ms) * MS
    }

    /// Plans the events of one story starting at `self.next_story`.
    fn plan_story(&mut self) {
        let start = self.next_story;
        let cfg = self.config.clone();
        let unknown = self.rng.random_bool(cfg.unknown_user_rate);
        let user_id = if unknown || self.users.is_empty() {
            self.stats.unknown_user_stories += 1;
            i64::from(cfg.users) + 1 + self.rng.random_range(0..1000)
        } else {
            self.rng.random_range(1..=i64::from(cfg.users))
        };
        let product_id = content::uuid(&mut self.rng);
        let (product, price) = content::product(&mut self.rng);
        let user_agent = content::user_agent(&mut self.rng);
        let ip = content::ip(&mut self.rng);
        let address = content::address(&mut self.rng);
        let url = format!("https://shop.example/products/{product_id}");
        let session = Session {
            user_id,
            product_id: &product_id,
            product: &product,
            price,
            url: &url,
            user_agent: &user_agent,
            ip: &ip,
            address: &address,
        };
        let mut t = start;
        self.plan_click(&session, t);
        if self.rng.random_bool(cfg.stale_click_rate) {
            self.stats.stale_stories += 1;
            t += (cfg.stale_after_secs as i64) * SECOND + self.gap(1, 600_000);
            self.plan_checkout(&session, t);
        } else {
            while self.budget_left() && self.rng.random_bool(cfg.repeat_probability) {
                t += self.gap(500, 30_000);
                self.plan_click(&session, t);
                t += self.gap(500, 30_000);
                self.plan_checkout(&session, t);
            }
        }
        if self.rng.random_bool(cfg.organic_rate) {
            self.stats.organic_checkouts += 1;
            let other_product = content::uuid(&mut self.rng);
            let organic = Session {
                product_id: &other_product,
                ..session
            };
            let at = start + self.gap(0, 60_000);
            self.plan_checkout(&organic, at);
        }
        // Stories start as a Poisson process; with repeat probability p a story has 1/(1-p)
        // clicks on average, so stories start at rate * (1-p) to give `event_rate` clicks/s.
        let stories_per_sec = cfg.event_rate * (1.0 - cfg.repeat_probability.min(0.99));
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let gap_micros = (-u.ln() / stories_per_sec * SECOND as f64).max(1000.0);
        self.next_story += (gap_micros as i64 / MS).max(1) * MS;
    }

    fn plan_click(&mut self, s: &Session<'_>, t: i64) {
        self.clicks_planned += 1;
        self.stats.clicks += 1;
        let click_id = content::uuid(&mut self.rng);
        let time = content::timestamp(EventTime::from_micros(t), self.config.timestamp_format);
        let line = serde_json::to_string(&ClickJson {
            click_id: &click_id,
            user_id: s.user_id,
            product_id: s.product_id,
            product: s.product,
            price: s.price,
            url: s.url,
            user_agent: s.user_agent,
            ip_address: s.ip,
            datetime_occured: &time,
        })
        .unwrap_or_default();
        let seq = self.seq();
        self.planned.push(Reverse(Planned {
            time: t,
            seq,
            kind_is_click: true,
            line,
        }));
    }

    fn plan_checkout(&mut self, s: &Session<'_>, t: i64) {
        self.stats.checkouts += 1;
        let checkout_id = content::uuid(&mut self.rng);
        let time = content::timestamp(EventTime::from_micros(t), self.config.timestamp_format);
        let quantity = self.rng.random_range(1..=3u32);
        let line = serde_json::to_string(&CheckoutJson {
            checkout_id: &checkout_id,
            user_id: s.user_id,
            product_id: s.product_id,
            payment_method: content::payment_method(&mut self.rng),
            total_amount: (s.price * f64::from(quantity) * 100.0).round() / 100.0,
            shipping_address: s.address,
            billing_address: s.address,
            user_agent: s.user_agent,
            ip_address: s.ip,
            datetime_occured: &time,
        })
        .unwrap_or_default();
        let seq = self.seq();
        self.planned.push(Reverse(Planned {
            time: t,
            seq,
            kind_is_click: false,
            line,
        }));
    }

    fn jitter(&mut self) -> i64 {
        let max_ms = (self.config.disorder_secs * 1000.0) as i64;
        if max_ms == 0 {
            0
        } else {
            self.gap(0, max_ms)
        }
    }

    fn arrive(&mut self, time: i64, event: ArrivalEvent) {
        let key = time + self.jitter();
        let seq = self.seq();
        self.arrivals.push(Reverse(Arrival { key, seq, event }));
    }

    /// Turns the next planned event into arrivals (itself, maybe a duplicate, maybe junk).
    fn release(&mut self, p: Planned) {
        self.arrive(
            p.time,
            ArrivalEvent {
                kind_is_click: p.kind_is_click,
                line: p.line.clone(),
                time: p.time,
                duplicate: false,
                malformed: false,
            },
        );
        if self.rng.random_bool(self.config.duplicate_rate) {
            self.stats.duplicates += 1;
            self.arrive(
                p.time,
                ArrivalEvent {
                    kind_is_click: p.kind_is_click,
                    line: p.line,
                    time: p.time,
                    duplicate: true,
                    malformed: false,
                },
            );
        }
        if self.rng.random_bool(self.config.malformed_rate) {
            self.stats.malformed += 1;
            let valid =
                content::timestamp(EventTime::from_micros(p.time), self.config.timestamp_format);
            let line = content::malformed(&mut self.rng, p.kind_is_click, &valid);
            self.arrive(
                p.time,
                ArrivalEvent {
                    kind_is_click: p.kind_is_click,
                    line,
                    time: p.time,
                    duplicate: false,
                    malformed: true,
                },
            );
        }
    }
}

#[derive(Clone, Copy)]
struct Session<'a> {
    user_id: i64,
    product_id: &'a str,
    product: &'a str,
    price: f64,
    url: &'a str,
    user_agent: &'a str,
    ip: &'a str,
    address: &'a str,
}

impl Iterator for Generator {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        loop {
            let next_planned = self.planned.peek().map(|p| p.0.time);
            let next_story = self.budget_left().then_some(self.next_story);
            let frontier = match (next_planned, next_story) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(top) = self.arrivals.peek() {
                if frontier.is_none_or(|f| top.0.key <= f) {
                    let a = self.arrivals.pop()?.0;
                    return Some(GeneratedEvent {
                        kind: if a.event.kind_is_click {
                            EventKind::Click
                        } else {
                            EventKind::Checkout
                        },
                        line: a.event.line,
                        time: EventTime::from_micros(a.event.time),
                        duplicate: a.event.duplicate,
                        malformed: a.event.malformed,
                    });
                }
            }
            match (next_planned, next_story) {
                (None, None) => return None,
                (Some(p), Some(s)) if s < p => self.plan_story(),
                (None, Some(_)) => self.plan_story(),
                _ => {
                    if let Some(Reverse(p)) = self.planned.pop() {
                        self.release(p);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstclick_model::{parse_checkout, parse_click};

    fn config() -> GeneratorConfig {
        GeneratorConfig {
            clicks: Some(2_000),
            disorder_secs: 10.0,
            duplicate_rate: 0.05,
            stale_click_rate: 0.05,
            organic_rate: 0.05,
            unknown_user_rate: 0.05,
            malformed_rate: 0.02,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a: Vec<_> = Generator::new(config()).collect();
        let b: Vec<_> = Generator::new(config()).collect();
        let c: Vec<_> = Generator::new(GeneratorConfig {
            seed: 7,
            ..config()
        })
        .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn events_parse_and_disorder_stays_within_the_bound_per_stream() {
        let g = Generator::new(config());
        let users = g.users().len() as i64;
        let mut max_seen = [i64::MIN, i64::MIN];
        let mut clicks = 0;
        let mut known = 0;
        let mut total = 0;
        for e in g {
            if e.malformed {
                let bad = match e.kind {
                    EventKind::Click => parse_click(e.line.as_bytes()).err(),
                    EventKind::Checkout => parse_checkout(e.line.as_bytes()).err(),
                };
                assert!(bad.is_some(), "malformed line accepted: {}", e.line);
                continue;
            }
            let (t, user, slot) = match e.kind {
                EventKind::Click => {
                    let c = parse_click(e.line.as_bytes()).expect("valid click");
                    if !e.duplicate {
                        clicks += 1;
                    }
                    (c.time, c.user_id, 0)
                }
                EventKind::Checkout => {
                    let c = parse_checkout(e.line.as_bytes()).expect("valid checkout");
                    (c.time, c.user_id, 1)
                }
            };
            assert_eq!(t, e.time);
            total += 1;
            if (1..=users).contains(&user) {
                known += 1;
            }
            let m = &mut max_seen[slot];
            assert!(
                t.as_micros() >= m.saturating_sub(10_000_000),
                "disorder beyond 10 s: {} after {}",
                t.as_micros(),
                m
            );
            *m = (*m).max(t.as_micros());
        }
        assert_eq!(clicks, 2_000);
        assert!(
            known > total * 8 / 10,
            "{known} of {total} events have known users"
        );
        assert!(known < total, "some users are unknown");
    }
}
