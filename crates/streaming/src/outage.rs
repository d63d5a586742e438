//! Retrying a call to a service that may be down, with exponential backoff and jitter, logging
//! each outage once when it starts and once when it ends (never once per message).
//!
//! The backoff doubles from 100 ms to at most 5 s; each wait is drawn uniformly from the upper
//! half of the current step ("equal jitter", [`jittered`]), so that processes (or the worker and
//! its base lane) that lost a service at the same moment do not retry in lock-step, while a
//! wait is never shorter than half the step. An outage also votes its service down in
//! [`crate::health`] while it lasts, which `/readyz` and the `firstclick_dependency_up` gauges
//! show.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::health::{self, Dependency};

/// The first wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a retried call gave up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GaveUp<E: std::fmt::Display> {
    /// The error is not one that waiting fixes.
    #[error("{service}: {error}")]
    Permanent {
        /// Which service.
        service: &'static str,
        /// The error.
        error: E,
    },
    /// A forced stop arrived while the service was still down.
    #[error("{service} still down when asked to stop: {error}")]
    Stopped {
        /// Which service.
        service: &'static str,
        /// The last error.
        error: E,
    },
}

/// Tracks one outage of one service: logs when it starts and when it ends, and waits with
/// exponential backoff in between.
pub(crate) struct Outage {
    service: &'static str,
    dependency: Option<Dependency>,
    backoff: Duration,
    down_since: Option<Instant>,
    attempts: u64,
}

/// A wait drawn uniformly from `[step / 2, step]`.
pub(crate) fn jittered(step: Duration, rng: &mut impl Rng) -> Duration {
    let half = step / 2;
    let spread = (step - half).as_micros() as u64;
    half + Duration::from_micros(rng.random_range(0..=spread))
}

/// The step after `step`: doubled, at most [`MAX_BACKOFF`].
pub(crate) fn next_step(step: Duration) -> Duration {
    (step * 2).min(MAX_BACKOFF)
}

impl Outage {
    /// No outage yet.
    pub(crate) fn new(service: &'static str) -> Self {
        Outage {
            service,
            dependency: Dependency::of_service(service),
            backoff: FIRST_BACKOFF,
            down_since: None,
            attempts: 0,
        }
    }

    /// Records a failed attempt; logs the first one of an outage.
    pub(crate) fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.attempts += 1;
        if let Some(d) = self.dependency {
            health::global().count_error(d);
        }
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            if let Some(d) = self.dependency {
                health::global().vote_down(d);
            }
            tracing::warn!(
                service = self.service,
                %error,
                "{} unavailable; holding messages unacknowledged and retrying with backoff",
                self.service
            );
        }
    }

    /// Records a success; logs the end of an outage if there was one.
    pub(crate) fn recovered(&mut self) {
        if let Some(since) = self.down_since.take() {
            if let Some(d) = self.dependency {
                health::global().withdraw(d);
            }
            tracing::warn!(
                service = self.service,
                outage_secs = since.elapsed().as_secs_f64(),
                attempts = self.attempts,
                "{} is back",
                self.service
            );
        }
        self.backoff = FIRST_BACKOFF;
        self.attempts = 0;
    }

    /// Waits before the next attempt; false when `stop` was cancelled instead.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let wait = jittered(self.backoff, &mut rand::rng());
        self.backoff = next_step(self.backoff);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

impl Drop for Outage {
    /// An outage given up on (a forced stop, a permanent error) no longer votes.
    fn drop(&mut self) {
        if let (Some(_), Some(d)) = (self.down_since, self.dependency) {
            health::global().withdraw(d);
        }
    }
}

/// Calls `op` until it succeeds, waiting with exponential backoff while `is_transient` says the
/// error may pass. Returns early when `stop` is cancelled during an outage.
pub(crate) async fn retry<T, E, F, Fut>(
    service: &'static str,
    stop: &CancellationToken,
    is_transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, GaveUp<E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut outage = Outage::new(service);
    loop {
        match op().await {
            Ok(v) => {
                outage.recovered();
                return Ok(v);
            }
            Err(error) if !is_transient(&error) => {
                return Err(GaveUp::Permanent { service, error })
            }
            Err(error) => {
                outage.failed(&error);
                if !outage.wait(stop).await {
                    return Err(GaveUp::Stopped { service, error });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_from_100_ms_to_at_most_5_s() {
        let mut step = FIRST_BACKOFF;
        let mut steps = vec![step];
        for _ in 0..10 {
            step = next_step(step);
            steps.push(step);
        }
        let ms: Vec<u128> = steps.iter().map(|s| s.as_millis()).collect();
        assert_eq!(
            ms,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn jittered_waits_stay_in_the_upper_half_of_the_step_and_vary() {
        let mut rng = rand::rng();
        for step in [FIRST_BACKOFF, Duration::from_millis(1600), MAX_BACKOFF] {
            let waits: Vec<Duration> = (0..2000).map(|_| jittered(step, &mut rng)).collect();
            for w in &waits {
                assert!(
                    *w >= step / 2 && *w <= step,
                    "{w:?} outside [{:?}, {step:?}]",
                    step / 2
                );
            }
            let (min, max) = (waits.iter().min(), waits.iter().max());
            let (Some(min), Some(max)) = (min, max) else {
                panic!("no waits drawn");
            };
            // 2000 uniform draws cover most of the range: no lock-step.
            assert!(*max - *min > step / 4, "{min:?}..{max:?} for step {step:?}");
        }
        assert_eq!(jittered(Duration::ZERO, &mut rng), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_outage_votes_its_service_down_until_it_ends_or_is_dropped() {
        // "BigQuery (unit test)" maps to BigQuery; no other test of this binary votes for it.
        let h = health::global();
        let mut outage = Outage::new("BigQuery (unit test)");
        outage.failed(&"connection refused");
        outage.failed(&"connection refused");
        assert!(!h.is_up(Dependency::BigQuery));
        outage.recovered();
        assert!(h.is_up(Dependency::BigQuery));
        outage.failed(&"connection refused");
        assert!(!h.is_up(Dependency::BigQuery));
        drop(outage);
        assert!(h.is_up(Dependency::BigQuery));
    }

    #[tokio::test]
    async fn a_stop_ends_the_retries() {
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });
        let started = Instant::now();
        // A service with no health vote: runner's tests watch Pub/Sub's.
        let result: Result<(), GaveUp<&str>> = retry(
            "a service (unit test)",
            &stop,
            |_| true,
            || async { Err("down") },
        )
        .await;
        assert!(matches!(result, Err(GaveUp::Stopped { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
