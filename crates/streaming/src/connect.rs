//! Opening Pub/Sub subscriptions and publishers after the start-up checks, while Pub/Sub may
//! not answer: a call that gets no answer within the connection's timeout is an outage that is
//! waited out (logged once, voted in `/readyz`, through [`crate::outage::retry`]), not a failure
//! of the process; an answer that waiting does not change (a missing subscription or topic, an
//! invalid name) fails at once with what to run. A stop ends the wait: `Ok(None)`.
//!
//! Why after the checks too: a takeover subscribes when things are slow (another worker was
//! just paused, the emulator is busy), and the routers and publishers open right after the
//! checks, which may have been Pub/Sub's last answer for a while.

use anyhow::Context;
use firstclick_pubsub::{Connection, PubSubError, Publisher, SubscribeOptions, Subscription};
use tokio_util::sync::CancellationToken;

use crate::outage::GaveUp;

/// Subscribes to `subscription`, retrying while Pub/Sub does not answer. `None` when `stop`
/// came first: nothing was pulled, so nothing is owed. `Err` only for what waiting does not
/// fix (the subscription is missing, its name is invalid).
pub(crate) async fn subscribe(
    conn: &Connection,
    subscription: &str,
    options: &SubscribeOptions,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Subscription>> {
    let start = || Subscription::start(conn, subscription, options.clone());
    opened(
        crate::outage::retry(
            "Pub/Sub (subscribing)",
            stop,
            PubSubError::is_transient,
            start,
        )
        .await,
        &format!("subscribing to {subscription}"),
        || format!("cannot subscribe to {subscription} (run create-pubsub first)"),
    )
}

/// Opens a publisher to `topic`, retrying while Pub/Sub does not answer. `None` when `stop`
/// came first. `Err` only for what waiting does not fix (the topic is missing, its name is
/// invalid): it says `what` the topic is ("the dead-letter topic") and the `fix` ("run
/// create-pubsub first").
pub(crate) async fn publisher(
    conn: &Connection,
    topic: &str,
    what: &str,
    fix: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Publisher>> {
    let open = || Publisher::new(conn, topic);
    opened(
        crate::outage::retry(
            "Pub/Sub (opening a topic)",
            stop,
            PubSubError::is_transient,
            open,
        )
        .await,
        &format!("opening {what} {topic}"),
        || format!("cannot open {what} {topic} ({fix})"),
    )
}

/// What a retried call (`doing` what) ended with: the value, `None` after a stop (logged), or
/// the error that waiting does not fix, in the words of `context`.
fn opened<T>(
    outcome: Result<T, GaveUp<PubSubError>>,
    doing: &str,
    context: impl FnOnce() -> String,
) -> anyhow::Result<Option<T>> {
    match outcome {
        Ok(v) => Ok(Some(v)),
        Err(GaveUp::Stopped { error, .. }) => {
            tracing::info!(reason = %error, "stopped while {doing}");
            Ok(None)
        }
        Err(GaveUp::Permanent { error, .. }) => {
            Err(anyhow::Error::new(error)).with_context(context)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A Pub/Sub address that takes connections and never answers: what a takeover saw when
    /// the emulator was too busy to answer within the timeout.
    async fn silent_pubsub() -> (tokio::task::JoinHandle<()>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let host = listener.local_addr().expect("its address").to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (task, host)
    }

    /// Runs `call` against a Pub/Sub that never answers, stops it after 1.5 s, and checks
    /// that it waited (retrying, with the outage in `/readyz` meanwhile) and ended with
    /// `Ok(None)`: not a failure of the worker, and nothing pulled.
    async fn waits_out_silence<T, F, Fut>(call: F)
    where
        F: FnOnce(Connection, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        let (server, host) = silent_pubsub().await;
        let conn = Connection::emulator(&host, "test-project")
            .expect("a valid address")
            .with_timeout(Duration::from_millis(200));
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let started = std::time::Instant::now();
        let watcher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // No other test of this binary votes for Pub/Sub (outage.rs's use a service
            // without a vote, and this module's waits run one after the other).
            let up_while_waiting = crate::health::global().is_up(crate::health::Dependency::PubSub);
            stopper.cancel();
            up_while_waiting
        });
        let outcome = call(conn, stop).await;
        let up_while_waiting = watcher.await.expect("the watcher ran");
        assert!(!up_while_waiting, "the outage did not show in /readyz");
        assert!(
            crate::health::global().is_up(crate::health::Dependency::PubSub),
            "the outage's vote outlived the wait"
        );
        assert!(
            matches!(outcome, Ok(None)),
            "{:?}",
            outcome.map(|s| s.is_some())
        );
        // Several 200 ms attempts fit in the 1.5 s before the stop: it retried, not gave up.
        assert!(
            started.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }

    #[tokio::test]
    async fn subscribes_and_topics_that_get_no_answer_are_retried_until_the_stop() {
        // What a takeover saw when the emulator was too busy to answer within the timeout.
        waits_out_silence(|conn, stop| async move {
            subscribe(&conn, "clicks-p3", &SubscribeOptions::default(), &stop).await
        })
        .await;
        // What a router or the dead-letter publisher sees right after the start-up checks.
        waits_out_silence(|conn, stop| async move {
            publisher(&conn, "clicks-p3", "the partition topic", "run it", &stop).await
        })
        .await;
    }

    #[tokio::test]
    async fn a_bad_subscription_name_is_not_retried() {
        let (server, host) = silent_pubsub().await;
        let conn = Connection::emulator(&host, "test-project").expect("a valid address");
        let stop = CancellationToken::new();
        let outcome = subscribe(&conn, "a b", &SubscribeOptions::default(), &stop).await;
        let Err(e) = outcome else {
            panic!("an invalid subscription id was taken");
        };
        assert!(
            format!("{e:#}").contains("cannot subscribe to a b"),
            "{e:#}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_bad_topic_name_is_not_retried() {
        let (server, host) = silent_pubsub().await;
        let conn = Connection::emulator(&host, "test-project").expect("a valid address");
        let stop = CancellationToken::new();
        let outcome = publisher(&conn, "a b", "the late-clicks topic", "fix it", &stop).await;
        let Err(e) = outcome else {
            panic!("an invalid topic id was taken");
        };
        assert!(
            format!("{e:#}").contains("cannot open the late-clicks topic a b (fix it)"),
            "{e:#}"
        );
        server.abort();
    }
}
