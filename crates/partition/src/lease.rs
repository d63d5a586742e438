//! Which partitions one worker owns: fair shares and the lease state machine, sans I/O.
//!
//! Leases live in Redis (one key per partition, `SET NX PX`, the value naming the worker and a
//! fencing token that only grows); the async shell does the Redis calls and feeds the answers
//! in, with the time, and [`Leases::plan`] says what to do next. Nothing here reads a clock or
//! talks to Redis, so takeover, pauses and joins are tested with a fake clock.
//!
//! One round, every [`LeaseConfig::renew_every_ms`]:
//! 1. the shell renews each lease this worker holds (a compare-and-set on the value), reads
//!    which leases are free and which workers are alive, and calls [`Leases::plan`] with that
//!    [`Round`];
//! 2. the plan's [`Action`]s: `Lost` (renew refused, or the lease may have expired while this
//!    worker was not looking: stop that partition now, write nothing more), `Release` (more than
//!    the fair share: stop that partition gracefully, checkpoint, then give the lease back),
//!    `Acquire` (try to take a free one);
//! 3. the shell reports each outcome: [`Leases::acquired`], [`Leases::released`].
//!
//! **Fair share.** With W live workers, each takes at most `ceil(P / W)` partitions, so the
//! partitions always fit (W × ceil(P/W) ≥ P) and a partition moves only when its owner holds
//! more than the share: a worker joining takes partitions others hand back, a worker that dies
//! leaves its leases to expire and the others, whose share grew, take them. With P = 1 the
//! second worker's share is 1 too, but the lease is taken: it waits as a hot standby.
//!
//! **Safety.** A lease is trusted locally only until `last renewal + ttl − margin`: a worker
//! paused past that (SIGSTOP, a long GC-like stall, a partition from Redis) gives the partition
//! up at its next round without asking. Writes in between are refused by Redis itself: every
//! checkpoint write compares the lease's value with the token (the fencing of docs/design.md
//! §7), so correctness does not depend on clocks; the local expiry only stops wasted work.

use std::collections::BTreeMap;

use crate::Partition;

/// Timings of the leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Partitions in the layout (P).
    pub partitions: u32,
    /// Lifetime of a lease (and of a worker's membership) without a renewal, ms.
    pub ttl_ms: u64,
    /// How often the shell runs a round, ms (a third of the ttl or less).
    pub renew_every_ms: u64,
    /// A lease is trusted locally until `renewal + ttl - margin`, ms.
    pub margin_ms: u64,
}

impl LeaseConfig {
    /// P partitions, leases of `ttl_ms`, renewed every third of it, trusted until a fifth of
    /// it before expiry.
    pub fn new(partitions: u32, ttl_ms: u64) -> Self {
        LeaseConfig {
            partitions: partitions.max(1),
            ttl_ms,
            renew_every_ms: (ttl_ms / 3).max(1),
            margin_ms: ttl_ms / 5,
        }
    }
}

/// The largest number of partitions one of `workers` live workers may hold: `ceil(P / W)`.
pub fn fair_share(partitions: u32, workers: usize) -> usize {
    let w = workers.max(1);
    (partitions as usize).div_ceil(w)
}

/// A partition this worker holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The fencing token its lease carries.
    pub token: u64,
    /// When the last renewal that Redis confirmed was sent, ms.
    pub renewed_at: u64,
    /// Being handed back (stopping gracefully); not renewed as a keeper, not counted in the
    /// share.
    pub releasing: bool,
}

/// What the shell learnt from Redis in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// When the round's calls were sent, ms (the earliest moment the answers describe).
    pub now_ms: u64,
    /// Live workers (their memberships not expired), this one included.
    pub live_workers: usize,
    /// For each held partition the shell tried to renew: whether Redis confirmed it.
    pub renewed: Vec<(Partition, bool)>,
    /// Partitions whose lease key does not exist.
    pub free: Vec<Partition>,
}

/// What to do after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The lease is gone (or can no longer be trusted): stop the partition now, drop its
    /// state unwritten; its messages come back to the next owner.
    Lost(Partition),
    /// More than the fair share: stop the partition gracefully (checkpoint, acks), then give
    /// its lease back ([`Leases::released`]).
    Release(Partition),
    /// Try to take this free partition; report with [`Leases::acquired`].
    Acquire(Partition),
}

/// The partitions one worker holds and the decisions about them; see the module
/// documentation.
#[derive(Clone, Debug)]
pub struct Leases {
    config: LeaseConfig,
    /// Orders free partitions for this worker, so that workers starting together try
    /// different ones first.
    seed: u64,
    held: BTreeMap<Partition, Held>,
}

impl Leases {
    /// A worker holding nothing yet; `worker_id` spreads its first choices.
    pub fn new(config: LeaseConfig, worker_id: &str) -> Self {
        let seed = worker_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Leases {
            config,
            seed,
            held: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The partitions held, with their tokens (releasing ones included).
    pub fn held(&self) -> &BTreeMap<Partition, Held> {
        &self.held
    }

    /// The partitions the shell should renew this round.
    pub fn to_renew(&self) -> Vec<(Partition, u64)> {
        self.held.iter().map(|(p, h)| (*p, h.token)).collect()
    }

    /// The token of `partition` if this worker holds it.
    pub fn token(&self, partition: Partition) -> Option<u64> {
        self.held.get(&partition).map(|h| h.token)
    }

    /// Decides from one round's answers; see the module documentation.
    pub fn plan(&mut self, round: &Round) -> Vec<Action> {
        let mut actions = Vec::new();
        let trust = self.config.ttl_ms.saturating_sub(self.config.margin_ms);
        // Renewals first: a refused one is lost; a confirmed one is trusted anew.
        for (p, ok) in &round.renewed {
            let Some(h) = self.held.get_mut(p) else {
                continue;
            };
            if *ok {
                h.renewed_at = round.now_ms;
            } else {
                self.held.remove(p);
                actions.push(Action::Lost(*p));
            }
        }
        // A lease not confirmed for too long may belong to someone else by now.
        let stale: Vec<Partition> = self
            .held
            .iter()
            .filter(|(_, h)| round.now_ms.saturating_sub(h.renewed_at) >= trust)
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.held.remove(&p);
            actions.push(Action::Lost(p));
        }

        let share = fair_share(self.config.partitions, round.live_workers);
        let keeping: Vec<Partition> = self
            .held
            .iter()
            .filter(|(_, h)| !h.releasing)
            .map(|(p, _)| *p)
            .collect();
        if keeping.len() > share {
            // Hand back the highest-numbered ones beyond the share.
            for p in keeping.iter().rev().take(keeping.len() - share) {
                if let Some(h) = self.held.get_mut(p) {
                    h.releasing = true;
                }
                actions.push(Action::Release(*p));
            }
        } else if keeping.len() < share && self.releasing_count() == 0 {
            let mut free: Vec<Partition> = round
                .free
                .iter()
                .copied()
                .filter(|p| *p < self.config.partitions && !self.held.contains_key(p))
                .collect();
            free.sort_by_key(|p| (self.preference(*p), *p));
            free.dedup();
            for p in free.into_iter().take(share - keeping.len()) {
                actions.push(Action::Acquire(p));
            }
        }
        actions
    }

    fn releasing_count(&self) -> usize {
        self.held.values().filter(|h| h.releasing).count()
    }

    /// This worker's order of preference among partitions.
    fn preference(&self, p: Partition) -> u64 {
        let mut z = self.seed ^ u64::from(p).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 29)
    }

    /// The shell's answer to [`Action::Acquire`]: `Some(token)` if Redis gave the lease (the
    /// `SET NX` was sent at `now_ms`), `None` if another worker was faster.
    pub fn acquired(&mut self, partition: Partition, token: Option<u64>, now_ms: u64) {
        if let Some(token) = token {
            self.held.insert(
                partition,
                Held {
                    token,
                    renewed_at: now_ms,
                    releasing: false,
                },
            );
        }
    }

    /// The partition was handed back (its lease deleted) or given up: no longer held.
    pub fn released(&mut self, partition: Partition) {
        self.held.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Redis' lease keys, as the shell sees them: value (worker, token) and expiry.
    #[derive(Default)]
    struct FakeRedis {
        leases: HashMap<Partition, (String, u64, u64)>,
        fence: HashMap<Partition, u64>,
        members: HashMap<String, u64>,
    }

    impl FakeRedis {
        fn expire(&mut self, now: u64) {
            self.leases.retain(|_, (_, _, exp)| *exp > now);
            self.members.retain(|_, exp| *exp > now);
        }
    }

    /// One worker: its state machine and what it runs.
    struct Worker {
        id: String,
        leases: Leases,
        running: Vec<Partition>,
    }

    impl Worker {
        fn new(id: &str, p: u32) -> Self {
            Worker {
                id: id.into(),
                leases: Leases::new(LeaseConfig::new(p, 9_000), id),
                running: Vec::new(),
            }
        }

        /// A round as the shell runs it, against `redis` at `now`; graceful releases finish
        /// within the round.
        fn round(&mut self, redis: &mut FakeRedis, now: u64) -> Vec<Action> {
            redis.expire(now);
            let ttl = self.leases.config().ttl_ms;
            redis.members.insert(self.id.clone(), now + ttl);
            let renewed = self
                .leases
                .to_renew()
                .into_iter()
                .map(|(p, token)| {
                    let ok = match redis.leases.get_mut(&p) {
                        Some((w, t, exp)) if *w == self.id && *t == token => {
                            *exp = now + ttl;
                            true
                        }
                        _ => false,
                    };
                    (p, ok)
                })
                .collect();
            let free = (0..self.leases.config().partitions)
                .filter(|p| !redis.leases.contains_key(p))
                .collect();
            let round = Round {
                now_ms: now,
                live_workers: redis.members.len(),
                renewed,
                free,
            };
            let actions = self.leases.plan(&round);
            for a in &actions {
                match *a {
                    Action::Lost(p) => self.running.retain(|r| *r != p),
                    Action::Release(p) => {
                        self.running.retain(|r| *r != p);
                        if redis.leases.get(&p).is_some_and(|(w, _, _)| *w == self.id) {
                            redis.leases.remove(&p);
                        }
                        self.leases.released(p);
                    }
                    Action::Acquire(p) => {
                        let token = if redis.leases.contains_key(&p) {
                            None
                        } else {
                            let t = redis.fence.entry(p).or_insert(0);
                            *t += 1;
                            redis.leases.insert(p, (self.id.clone(), *t, now + ttl));
                            Some(*t)
                        };
                        self.leases.acquired(p, token, now);
                        if token.is_some() {
                            self.running.push(p);
                        }
                    }
                }
            }
            actions
        }

        /// Whether a write fenced by the token of `p` would pass in `redis` now.
        fn can_write(&self, redis: &FakeRedis, p: Partition) -> bool {
            let Some(token) = self.leases.token(p) else {
                return false;
            };
            redis
                .leases
                .get(&p)
                .is_some_and(|(w, t, _)| *w == self.id && *t == token)
        }
    }

    /// Every partition owned by exactly one of `workers`, none by two.
    fn assert_exclusive(workers: &[&Worker], p: u32) {
        let mut owners: HashMap<Partition, Vec<&str>> = HashMap::new();
        for w in workers {
            for r in &w.running {
                owners.entry(*r).or_default().push(&w.id);
            }
        }
        for part in 0..p {
            let o = owners.get(&part).cloned().unwrap_or_default();
            assert!(o.len() <= 1, "partition {part} run by {o:?}");
        }
    }

    #[test]
    fn fair_shares_always_fit() {
        for p in 1..40u32 {
            for w in 1..12usize {
                assert!(fair_share(p, w) * w >= p as usize);
                assert!(fair_share(p, w) <= (p as usize).div_ceil(w));
            }
        }
        assert_eq!(fair_share(8, 3), 3);
        assert_eq!(fair_share(1, 2), 1);
    }

    #[test]
    fn three_workers_split_eight_partitions_and_a_fourth_joins() {
        let mut redis = FakeRedis::default();
        let mut ws: Vec<Worker> = ["a", "b", "c"]
            .iter()
            .map(|id| Worker::new(id, 8))
            .collect();
        let mut now = 0;
        for _ in 0..6 {
            for w in &mut ws {
                w.round(&mut redis, now);
            }
            now += 3_000;
        }
        let counts: Vec<usize> = ws.iter().map(|w| w.running.len()).collect();
        assert_eq!(counts.iter().sum::<usize>(), 8, "{counts:?}");
        assert!(counts.iter().all(|c| *c <= 3 && *c >= 2), "{counts:?}");
        assert_exclusive(&ws.iter().collect::<Vec<_>>(), 8);

        ws.push(Worker::new("d", 8));
        for _ in 0..6 {
            for w in &mut ws {
                w.round(&mut redis, now);
            }
            assert_exclusive(&ws.iter().collect::<Vec<_>>(), 8);
            now += 3_000;
        }
        let counts: Vec<usize> = ws.iter().map(|w| w.running.len()).collect();
        assert_eq!(counts, vec![2, 2, 2, 2], "a joining worker gets its share");
    }

    #[test]
    fn a_dead_workers_partitions_are_taken_over_after_the_ttl() {
        let mut redis = FakeRedis::default();
        let mut ws: Vec<Worker> = ["a", "b", "c"]
            .iter()
            .map(|id| Worker::new(id, 8))
            .collect();
        let mut now = 0;
        for _ in 0..6 {
            for w in &mut ws {
                w.round(&mut redis, now);
            }
            now += 3_000;
        }
        let dead = ws.remove(1);
        let orphaned = dead.running.clone();
        assert!(!orphaned.is_empty());
        // Before the ttl the orphans stay leased: nobody else may take them.
        let killed_at = now;
        while now < killed_at + 24_000 {
            for w in &mut ws {
                w.round(&mut redis, now);
            }
            if now < killed_at + 6_000 {
                for w in &ws {
                    assert!(orphaned.iter().all(|p| !w.running.contains(p)));
                }
            }
            now += 3_000;
        }
        let counts: Vec<usize> = ws.iter().map(|w| w.running.len()).collect();
        assert_eq!(counts, vec![4, 4], "the survivors hold all 8: {counts:?}");
        assert_exclusive(&ws.iter().collect::<Vec<_>>(), 8);
    }

    #[test]
    fn a_paused_worker_loses_its_partitions_and_its_writes_are_fenced() {
        let mut redis = FakeRedis::default();
        let mut a = Worker::new("a", 4);
        let mut b = Worker::new("b", 4);
        let mut now = 0;
        for _ in 0..4 {
            a.round(&mut redis, now);
            b.round(&mut redis, now);
            now += 3_000;
        }
        assert_eq!(a.running.len() + b.running.len(), 4);
        let paused: Vec<Partition> = a.running.clone();
        // `a` stops for 30 s; `b` takes everything over.
        let resume = now + 30_000;
        while now < resume {
            b.round(&mut redis, now);
            now += 3_000;
        }
        assert_eq!(b.running.len(), 4);
        // Waking up, before its next round, `a` still thinks it holds them, but every write
        // it tries is refused by the fence.
        for p in &paused {
            assert!(a.leases.token(*p).is_some());
            assert!(
                !a.can_write(&redis, *p),
                "stale write to partition {p} passed"
            );
        }
        // Its next round gives them up without a write.
        let actions = a.round(&mut redis, now);
        for p in &paused {
            assert!(actions.contains(&Action::Lost(*p)), "{actions:?}");
        }
        assert!(a.running.is_empty());
        for p in 0..4 {
            assert!(b.can_write(&redis, p));
        }
    }

    #[test]
    fn with_one_partition_the_second_worker_stands_by() {
        let mut redis = FakeRedis::default();
        let mut a = Worker::new("a", 1);
        let mut b = Worker::new("b", 1);
        let mut now = 0;
        for _ in 0..5 {
            a.round(&mut redis, now);
            b.round(&mut redis, now);
            now += 3_000;
        }
        assert_eq!((a.running.len(), b.running.len()), (1, 0));
        // The owner dies: the standby takes over once the lease expires.
        let died = now;
        while b.running.is_empty() {
            b.round(&mut redis, now);
            now += 1_000;
            assert!(now < died + 15_000, "no takeover");
        }
        assert!(now >= died + 6_000, "taken over before the lease expired");
    }

    #[test]
    fn a_lease_not_renewed_in_time_is_given_up() {
        let mut l = Leases::new(LeaseConfig::new(2, 10_000), "a");
        l.acquired(0, Some(7), 1_000);
        // Redis unreachable: no renewals confirmed.
        let round = |now| Round {
            now_ms: now,
            live_workers: 1,
            renewed: vec![],
            free: vec![],
        };
        assert!(l.plan(&round(8_000)).is_empty());
        assert_eq!(l.plan(&round(9_000)), vec![Action::Lost(0)]);
        assert!(l.held().is_empty());
    }
}
