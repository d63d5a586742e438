//! The shutdown signal: the first SIGTERM or SIGINT asks for a graceful stop (stop pulling,
//! finish in-flight work, flush, checkpoint, exit 0); when that has not finished within the
//! grace period (`--shutdown-grace-secs`), or at a second signal, the stop is forced: retry
//! loops waiting for a service that is down give up. Nothing unwritten was acknowledged, so a
//! forced stop loses nothing; its messages are redelivered (docs/design.md §4.6).
//!
//! The grace period counts from the first signal and should end before the platform's own
//! (Kubernetes: 30 s, docker-compose here: 60 s) so that the process exits by itself instead of
//! being killed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The two levels of stop.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    /// Graceful: stop taking new messages.
    pub(crate) graceful: CancellationToken,
    /// Forced: give up waiting for services that are down.
    pub(crate) forced: CancellationToken,
}

impl Shutdown {
    /// Starts a task that turns signals into the two tokens; `grace` after the first signal the
    /// stop is forced by itself.
    pub(crate) fn listen(grace: Duration) -> std::io::Result<Self> {
        let s = Shutdown::default();
        let (graceful, forced) = (s.graceful.clone(), s.forced.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            for level in 0.. {
                tokio::select! {
                    _ = term.recv() => {}
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                }
                if level == 0 {
                    tracing::info!(
                        grace_secs = grace.as_secs_f64(),
                        "stop requested: finishing in-flight work, then checkpointing; the stop \
                         is forced after the grace period or at a second signal"
                    );
                    crate::health::global().set_stopping();
                    graceful.cancel();
                    force_after(grace, forced.clone());
                } else {
                    tracing::warn!("second stop request: giving up on services that are down");
                    forced.cancel();
                    return;
                }
            }
        });
        Ok(s)
    }
}

/// How long a step of the shutdown (sending the subscriptions' pending acks) may still take
/// once the stop is forced.
const AFTER_FORCED: Duration = Duration::from_secs(3);

/// Runs `fut` to its end, or until [`AFTER_FORCED`] after `forced` is cancelled; `None` then.
pub(crate) async fn unless_forced<T>(
    forced: &CancellationToken,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let give_up = async {
        forced.cancelled().await;
        tokio::time::sleep(AFTER_FORCED).await;
    };
    tokio::select! {
        v = fut => Some(v),
        _ = give_up => None,
    }
}

/// How the worker's end becomes the service's: an error after the stop was forced is the
/// forced stop itself (a retry loop gave up on a service that is down). Nothing unwritten was
/// acknowledged, so nothing acknowledged is lost: logged with the number of messages left
/// unacknowledged (Pub/Sub redelivers them), and the service exits 0. `Ok(true)` after a clean
/// stop, `Ok(false)` after a forced one.
pub(crate) fn after_worker(
    result: anyhow::Result<()>,
    forced: &CancellationToken,
    unacked: u64,
) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if forced.is_cancelled() => {
            tracing::warn!(
                unacknowledged = unacked,
                reason = %format!("{e:#}"),
                "stop forced while a service was down: {unacked} received messages were left \
                 unacknowledged and will be redelivered; nothing acknowledged is lost"
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Cancels `forced` once `grace` has passed, unless it is cancelled before.
fn force_after(grace: Duration, forced: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = forced.cancelled() => {}
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace_secs = grace.as_secs_f64(),
                    "grace period over: forcing the stop, giving up on services that are down \
                     (nothing unwritten is acknowledged; it will be redelivered)"
                );
                forced.cancel();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_error_after_a_forced_stop_counts_as_a_stop() {
        let forced = CancellationToken::new();
        assert!(after_worker(Err(anyhow::anyhow!("Redis down")), &forced, 3).is_err());
        assert!(after_worker(Ok(()), &forced, 0).is_ok_and(|clean| clean));
        forced.cancel();
        let stopped = after_worker(Err(anyhow::anyhow!("Redis down")), &forced, 3);
        assert!(stopped.is_ok_and(|clean| !clean));
    }

    #[tokio::test]
    async fn a_shutdown_step_gets_a_short_while_after_the_forced_stop() {
        let forced = CancellationToken::new();
        forced.cancel();
        let never = std::future::pending::<()>();
        let started = std::time::Instant::now();
        assert_eq!(unless_forced(&forced, never).await, None);
        assert!(started.elapsed() >= AFTER_FORCED);
        assert_eq!(unless_forced(&forced, async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn the_stop_is_forced_when_the_grace_period_ends() {
        let forced = CancellationToken::new();
        force_after(Duration::from_millis(300), forced.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !forced.is_cancelled(),
            "forced before the grace period ended"
        );
        tokio::time::timeout(Duration::from_secs(5), forced.cancelled())
            .await
            .expect("forced after the grace period");
    }
}
