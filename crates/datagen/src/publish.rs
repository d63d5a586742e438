//! The cloud output of the generator: users into Redis (`user_{id}` hashes), clicks and
//! checkouts onto their Pub/Sub topics, at a chosen rate, with many publishes in flight.

use std::time::{Duration, Instant};

use firstclick_model::EventKind;
use firstclick_pubsub::{Connection, OutgoingMessage, PubSubError, Publisher};
use firstclick_redis::UserDirectory;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::generator::{Generator, GeneratorStats};

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Redis refused the users.
    #[error("cannot write users to Redis: {0}")]
    Redis(#[from] firstclick_redis::RedisError),
    /// Pub/Sub refused a message or a topic.
    #[error("cannot publish: {0}")]
    PubSub(#[from] PubSubError),
}

/// Where and how fast to publish.
pub struct PublishTarget<'a> {
    /// Pub/Sub.
    pub conn: &'a Connection,
    /// Topic of the clicks.
    pub click_topic: &'a str,
    /// Topic of the checkouts.
    pub checkout_topic: &'a str,
    /// Users go here.
    pub users: &'a UserDirectory,
    /// Messages per second; 0 for as fast as the service takes them.
    pub rate: f64,
    /// Publishes in flight at most.
    pub max_in_flight: usize,
}

/// Writes the users, then publishes every event of `generator` (forever if it is unbounded),
/// calling `progress` with the number of messages published so far about every 1,000.
pub async fn publish(
    mut generator: Generator,
    target: PublishTarget<'_>,
    mut progress: impl FnMut(u64),
) -> Result<(GeneratorStats, u64), PublishError> {
    let users: Vec<(i64, String, String)> = generator
        .users()
        .iter()
        .map(|u| (u.id, u.user_name.clone(), u.password.clone()))
        .collect();
    target.users.put_users(&users).await?;
    tracing::info!(users = users.len(), "users written to Redis");
    let clicks = Publisher::new(target.conn, target.click_topic).await?;
    let checkouts = Publisher::new(target.conn, target.checkout_topic).await?;
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent: u64 = 0;
    let mut confirmed: u64 = 0;
    for event in generator.by_ref() {
        if target.rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / target.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        while in_flight.len() >= target.max_in_flight.max(1) {
            if let Some(r) = in_flight.next().await {
                let _id: String = r?;
                confirmed += 1;
            }
        }
        let publisher = match event.kind {
            EventKind::Click => &clicks,
            EventKind::Checkout => &checkouts,
        };
        in_flight.push(publisher.publish(OutgoingMessage::new(event.line.into_bytes())));
        sent += 1;
        if sent.is_multiple_of(1000) {
            progress(sent);
        }
    }
    while let Some(r) = in_flight.next().await {
        let _id: String = r?;
        confirmed += 1;
    }
    progress(sent);
    Ok((generator.stats(), confirmed))
}
