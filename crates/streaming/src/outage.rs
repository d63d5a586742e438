//! Retrying a call to a service that may be down, with exponential backoff, logging each
//! outage once when it starts and once when it ends (never once per message).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

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
    backoff: Duration,
    down_since: Option<Instant>,
    attempts: u64,
}

impl Outage {
    /// No outage yet.
    pub(crate) fn new(service: &'static str) -> Self {
        Outage {
            service,
            backoff: FIRST_BACKOFF,
            down_since: None,
            attempts: 0,
        }
    }

    /// Records a failed attempt; logs the first one of an outage.
    pub(crate) fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.attempts += 1;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
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
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
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
