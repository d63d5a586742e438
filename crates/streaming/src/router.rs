//! The router of a partitioned deployment (P > 1): a stateless stage in every worker that pulls
//! the original clicks or checkouts subscription, finds each message's partition from its user
//! (`firstclick_partition::partition_of`), publishes the message unchanged to that partition's
//! topic with its event type and original publish time as attributes, and acknowledges the
//! original only once that publish succeeded (a failed publish nacks it: redelivered, routed
//! again).
//!
//! The message is parsed as the engine will parse it, so the partition is the engine's view of
//! the user and a message the engine would refuse is dead-lettered here, once, and never
//! reaches a partition. Several workers route the same subscriptions side by side: Pub/Sub
//! splits the messages between them, and the router keeps nothing between messages.
//! docs/design.md §7.

use std::sync::Arc;

use firstclick_model::{parse_checkout, parse_click, EventKind, UserId};
use firstclick_partition::partition_of;
use firstclick_pubsub::{OutgoingMessage, Publisher, ReceivedMessage, Subscription};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::intake::dead_letter;
use crate::metrics::Metrics;

/// The attribute carrying the original message's publish time, µs since the Unix epoch, so the
/// publish → row latency counts from the producer's publish, not the router's.
pub(crate) const PUBLISHED_ATTRIBUTE: &str = "firstclick_published_micros";

/// The attribute carrying the message's event type (`click` or `checkout`), so that a partition
/// subscription wired to the wrong topic refuses what it gets with that reason (the intake
/// checks it) instead of failing to parse it.
pub(crate) const EVENT_TYPE_ATTRIBUTE: &str = "firstclick_event_type";

/// Publishes in flight per router at most; the subscription's flow control bounds it too.
const MAX_IN_FLIGHT: usize = 2_000;

/// What one router task needs.
pub(crate) struct Router {
    /// Which events the subscription carries.
    pub(crate) kind: EventKind,
    /// One publisher per partition topic of that kind, indexed by partition.
    pub(crate) partitions: Arc<Vec<Publisher>>,
    /// Where refused messages go.
    pub(crate) dead_letter: Arc<Publisher>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
}

impl Router {
    /// The user of a message, as the engine reads it; `Err` with why it is refused.
    fn user_of(&self, data: &[u8]) -> Result<UserId, firstclick_model::BadMessage> {
        match self.kind {
            EventKind::Click => parse_click(data).map(|c| c.user_id),
            EventKind::Checkout => parse_checkout(data).map(|c| c.user_id),
        }
    }

    /// Routes until `stop` is cancelled and every publish in flight has settled; returns the
    /// subscription for its shutdown.
    pub(crate) async fn run(self, mut sub: Subscription, stop: CancellationToken) -> Subscription {
        let handle = sub.handle();
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut stopping = false;
        loop {
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let next = tokio::select! {
                _ = stop.cancelled(), if !stopping => {
                    handle.stop();
                    stopping = true;
                    continue;
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                next = sub.next() => next,
            };
            let message = match next {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::error!(error = %e, stream = %self.kind, "router: a streaming pull failed for good; the others go on");
                    continue;
                }
            };
            self.route(message, &mut in_flight);
        }
        while in_flight.join_next().await.is_some() {}
        sub
    }

    fn route(&self, m: ReceivedMessage, in_flight: &mut JoinSet<()>) {
        self.metrics.routed(self.kind);
        let user = match self.user_of(&m.data) {
            Ok(user) => user,
            Err(bad) => {
                self.metrics
                    .bad(self.kind, bad.field.unwrap_or("malformed"));
                let (publisher, metrics, kind) =
                    (self.dead_letter.clone(), self.metrics.clone(), self.kind);
                in_flight.spawn(async move {
                    dead_letter(
                        &publisher,
                        &metrics,
                        kind,
                        &bad,
                        m.data,
                        &m.message_id,
                        m.ack,
                    )
                    .await;
                });
                return;
            }
        };
        let p = partition_of(user, self.partitions.len() as u32) as usize;
        tracing::trace!(message_id = %m.message_id, kind = %self.kind, user, partition = p, "routing");
        let mut out = OutgoingMessage::new(m.data);
        for (k, v) in m.attributes {
            out = out.with_attribute(k, v);
        }
        out = out.with_attribute(EVENT_TYPE_ATTRIBUTE, self.kind.as_str());
        if let Some(t) = m
            .publish_time
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            out = out.with_attribute(PUBLISHED_ATTRIBUTE, t.as_micros().to_string());
        }
        let publish = self.partitions[p].publish(out);
        let (ack, message_id) = (m.ack, m.message_id);
        in_flight.spawn(async move {
            match publish.await {
                Ok(_) => {
                    tracing::trace!(message_id, partition = p, "routed");
                    ack.ack();
                }
                Err(e) => {
                    tracing::warn!(error = %e, message_id, partition = p, "router: cannot publish to the partition topic; the message will be redelivered");
                    ack.nack();
                }
            }
        });
    }
}
