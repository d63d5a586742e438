//! Whether the service is ready: start-up finished (every dependency checked, the checkpoint
//! restored), not stopping, and every dependency (Pub/Sub, Redis, BigQuery) up. `/readyz`
//! answers from it and `/metrics` exports it (`firstclick_dependency_up{dependency=...}`,
//! `firstclick_ready`, and the failed calls each retry loop counts,
//! `firstclick_dependency_errors_total`).
//!
//! A dependency is down while at least one *vote* for it is open: every outage that a retry
//! loop is sitting in ([`crate::outage::Outage`] votes when an outage starts and withdraws when
//! it ends or is dropped) and the periodic probe of [`crate::preflight`]. Counting votes rather
//! than keeping one flag lets the worker, the base lane and the probe see the same service fail
//! and recover independently without one of them declaring it up while another still waits.
//!
//! The state is process-wide ([`global`]): one process runs one service, and the retry loops
//! that vote must not need a handle threaded through every call site of the worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A service the pipeline needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dependency {
    /// Topics and subscriptions.
    PubSub,
    /// User names and checkpoints.
    Redis,
    /// The output table.
    BigQuery,
}

impl Dependency {
    /// Every dependency, in the order of the metrics.
    pub(crate) const ALL: [Dependency; 3] =
        [Dependency::PubSub, Dependency::Redis, Dependency::BigQuery];

    /// The label value in the metrics: `pubsub`, `redis`, `bigquery`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Dependency::PubSub => "pubsub",
            Dependency::Redis => "redis",
            Dependency::BigQuery => "bigquery",
        }
    }

    /// The dependency a retry loop's service name belongs to (`"Redis (checkpoint)"` is Redis).
    pub(crate) fn of_service(service: &str) -> Option<Dependency> {
        if service.starts_with("Redis") {
            Some(Dependency::Redis)
        } else if service.starts_with("BigQuery") {
            Some(Dependency::BigQuery)
        } else if service.starts_with("Pub/Sub") {
            Some(Dependency::PubSub)
        } else {
            None
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Readiness and the up/down state of each dependency.
#[derive(Debug)]
pub(crate) struct Health {
    down_votes: [AtomicU64; 3],
    errors: [AtomicU64; 3],
    started: AtomicBool,
    stopping: AtomicBool,
}

static GLOBAL: Health = Health::new();

/// The process's health state.
pub(crate) fn global() -> &'static Health {
    &GLOBAL
}

impl Health {
    /// Starting, every dependency up.
    pub(crate) const fn new() -> Self {
        Health {
            down_votes: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            errors: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// Opens a vote that `dependency` is down.
    pub(crate) fn vote_down(&self, dependency: Dependency) {
        self.down_votes[dependency.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Withdraws a vote opened with [`Health::vote_down`].
    pub(crate) fn withdraw(&self, dependency: Dependency) {
        // Never below zero, even if a caller withdraws twice.
        let _ = self.down_votes[dependency.index()].fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |n| Some(n.saturating_sub(1)),
        );
    }

    /// Counts a failed call to `dependency` that will be retried.
    pub(crate) fn count_error(&self, dependency: Dependency) {
        self.errors[dependency.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed calls to `dependency` since start (`firstclick_dependency_errors_total`).
    pub(crate) fn errors(&self, dependency: Dependency) -> u64 {
        self.errors[dependency.index()].load(Ordering::Relaxed)
    }

    /// True while no vote says `dependency` is down.
    pub(crate) fn is_up(&self, dependency: Dependency) -> bool {
        self.down_votes[dependency.index()].load(Ordering::Relaxed) == 0
    }

    /// Start-up is over: dependencies checked, checkpoint restored, intake running.
    pub(crate) fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// A stop was requested: no longer ready for new work.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready; else why not, for the body of `/readyz`.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("stopping".into());
        }
        if !self.started.load(Ordering::Relaxed) {
            return Err("starting: checking dependencies and restoring the checkpoint".into());
        }
        let down: Vec<&str> = Dependency::ALL
            .iter()
            .filter(|d| !self.is_up(**d))
            .map(|d| d.label())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("down: {}", down.join(", ")))
        }
    }
}

/// One vote of a prober that checks a dependency again and again: open while its last check
/// failed.
#[derive(Debug)]
pub(crate) struct ProbeVote {
    dependency: Dependency,
    open: bool,
}

impl ProbeVote {
    /// No vote yet.
    pub(crate) fn new(dependency: Dependency) -> Self {
        ProbeVote {
            dependency,
            open: false,
        }
    }

    /// The dependency it votes for.
    pub(crate) fn dependency(&self) -> Dependency {
        self.dependency
    }

    /// True while the last check failed.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Records the result of one check in `health`.
    pub(crate) fn record(&mut self, health: &Health, up: bool) {
        match (up, self.open) {
            (false, false) => health.vote_down(self.dependency),
            (true, true) => health.withdraw(self.dependency),
            _ => {}
        }
        self.open = !up;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_started_and_while_a_vote_is_open() {
        let h = Health::new();
        assert!(h.readiness().unwrap_err().starts_with("starting"));
        h.set_started();
        assert_eq!(h.readiness(), Ok(()));
        h.vote_down(Dependency::Redis);
        h.vote_down(Dependency::Redis);
        assert!(!h.is_up(Dependency::Redis));
        assert!(h.is_up(Dependency::BigQuery));
        assert_eq!(h.readiness(), Err("down: redis".into()));
        h.withdraw(Dependency::Redis);
        assert!(!h.is_up(Dependency::Redis), "one vote is still open");
        h.withdraw(Dependency::Redis);
        h.withdraw(Dependency::Redis);
        assert_eq!(h.readiness(), Ok(()));
        h.set_stopping();
        assert_eq!(h.readiness(), Err("stopping".into()));
    }

    #[test]
    fn a_probe_holds_at_most_one_vote() {
        let h = Health::new();
        let mut probe = ProbeVote::new(Dependency::BigQuery);
        probe.record(&h, false);
        probe.record(&h, false);
        assert!(!h.is_up(Dependency::BigQuery));
        probe.record(&h, true);
        assert!(h.is_up(Dependency::BigQuery));
        probe.record(&h, true);
        assert!(h.is_up(Dependency::BigQuery));
    }

    #[test]
    fn service_names_map_to_dependencies() {
        assert_eq!(
            Dependency::of_service("Redis (checkpoint base)"),
            Some(Dependency::Redis)
        );
        assert_eq!(
            Dependency::of_service("BigQuery"),
            Some(Dependency::BigQuery)
        );
        assert_eq!(
            Dependency::of_service("Pub/Sub (dead letters)"),
            Some(Dependency::PubSub)
        );
        assert_eq!(Dependency::of_service("something else"), None);
    }
}
