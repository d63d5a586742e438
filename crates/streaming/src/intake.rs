//! Intake: one task per subscription pulls messages, parses them and hands valid events to the
//! worker with their ack handles. A bad message is published to the dead-letter topic with its
//! reason as attributes, and acknowledged only once the dead-letter topic has it; if that
//! publish fails, the message is nacked and comes back later. Nothing is dropped silently.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use firstclick_model::time::wall_clock;
use firstclick_model::{parse_checkout, parse_click, BadMessage, Checkout, Click, EventKind};
use firstclick_pubsub::{AckHandle, OutgoingMessage, Publisher, ReceivedMessage, Subscription};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A valid event on its way to the worker.
pub(crate) enum Input {
    /// A click, its raw message (for the late topic) and its ack handle.
    Click {
        /// The parsed click.
        click: Click,
        /// The message as received.
        data: Bytes,
        /// Which streaming pull delivered it (the engine keeps a watermark per stream).
        stream: usize,
        /// Acked after the checkpoint that holds the click.
        ack: AckHandle,
    },
    /// A click stream delivered a message that was refused: the stream is alive.
    Alive {
        /// Which streaming pull delivered it.
        stream: usize,
    },
    /// A checkout and its ack handle.
    Checkout {
        /// The parsed checkout.
        checkout: Checkout,
        /// Acked after its row is written and a checkpoint taken.
        ack: AckHandle,
        /// When Pub/Sub accepted it (for the publish → row latency).
        published: Option<std::time::SystemTime>,
    },
}

/// What an intake task needs besides its subscription.
pub(crate) struct IntakeContext {
    /// Which events the subscription carries (clicks or checkouts).
    pub(crate) kind: EventKind,
    /// Where valid events go.
    pub(crate) tx: mpsc::Sender<Input>,
    /// Where bad messages go.
    pub(crate) dead_letter: Arc<Publisher>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Event times further than this ahead of the wall clock are refused, µs.
    pub(crate) max_future_micros: i64,
}

/// Pulls until `stop` is cancelled and the subscription is drained, then hands the subscription
/// back (so the caller can shut it down once every ack handle is settled).
pub(crate) async fn run(
    mut sub: Subscription,
    ctx: IntakeContext,
    stop: CancellationToken,
) -> Subscription {
    let handle = sub.handle();
    let mut stopping = false;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled(), if !stopping => {
                handle.stop();
                stopping = true;
                continue;
            }
            next = sub.next() => next,
        };
        let message = match next {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::error!(error = %e, stream = %ctx.kind, "a streaming pull failed for good; the others go on");
                continue;
            }
        };
        if !handle_message(&ctx, message).await {
            break;
        }
    }
    sub
}

fn too_far_ahead(
    kind: EventKind,
    time: firstclick_model::EventTime,
    max_future: i64,
) -> Option<BadMessage> {
    let ahead = time.as_micros() - wall_clock().as_micros();
    (ahead > max_future).then(|| BadMessage {
        kind,
        field: Some("datetime_occured"),
        reason: format!(
            "field `datetime_occured`: expected an event time at most {} s ahead of the wall \
             clock, found {} ({} s ahead); fix the producer's clock or raise MAX_FUTURE_SECS",
            max_future / 1_000_000,
            time,
            ahead / 1_000_000
        ),
    })
}

/// When the producer published `m`: the router's attribute when it came through a partition
/// topic, Pub/Sub's publish time otherwise.
fn original_publish_time(m: &ReceivedMessage) -> Option<std::time::SystemTime> {
    m.attributes
        .get(crate::router::PUBLISHED_ATTRIBUTE)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|micros| std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros))
        .or(m.publish_time)
}

/// Why a message routed as another event type than this stream's is refused (a partition
/// subscription attached to the wrong partition topic); `None` when it has no such attribute
/// (it came from a producer) or the right one.
fn misrouted(kind: EventKind, attributes: &HashMap<String, String>) -> Option<BadMessage> {
    let said = attributes.get(crate::router::EVENT_TYPE_ATTRIBUTE)?;
    (said != kind.as_str()).then(|| BadMessage {
        kind,
        field: Some(crate::router::EVENT_TYPE_ATTRIBUTE),
        reason: format!(
            "attribute `{}`: expected {kind}, found {said:?}: a {kind} subscription receives \
             another stream's messages; re-create the partition topics and subscriptions with \
             `create-pubsub --partitions P`",
            crate::router::EVENT_TYPE_ATTRIBUTE
        ),
    })
}

/// The worker's input for a valid message, or why it is refused and the message back (boxed:
/// refusals are rare, and the message is large).
fn to_input(
    ctx: &IntakeContext,
    m: ReceivedMessage,
) -> Result<Input, (BadMessage, Box<ReceivedMessage>)> {
    let ahead = |time| too_far_ahead(ctx.kind, time, ctx.max_future_micros);
    let published = original_publish_time(&m);
    let age = published
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_micros() as i64);
    ctx.metrics.received(ctx.kind, age);
    // Counted as received, then refused, as every other bad message is.
    if let Some(bad) = misrouted(ctx.kind, &m.attributes) {
        return Err((bad, Box::new(m)));
    }
    match ctx.kind {
        EventKind::Click => match parse_click(&m.data).map(|click| (ahead(click.time), click)) {
            Ok((None, click)) => Ok(Input::Click {
                click,
                data: m.data,
                stream: m.stream,
                ack: m.ack,
            }),
            Ok((Some(bad), _)) | Err(bad) => Err((bad, Box::new(m))),
        },
        EventKind::Checkout => {
            match parse_checkout(&m.data).map(|checkout| (ahead(checkout.time), checkout)) {
                Ok((None, checkout)) => Ok(Input::Checkout {
                    checkout,
                    ack: m.ack,
                    published,
                }),
                Ok((Some(bad), _)) | Err(bad) => Err((bad, Box::new(m))),
            }
        }
    }
}

/// Returns false when the worker is gone (the service is stopping for good).
async fn handle_message(ctx: &IntakeContext, m: ReceivedMessage) -> bool {
    let input = match to_input(ctx, m) {
        Ok(input) => input,
        Err((bad, m)) => {
            let m = *m;
            ctx.metrics.bad(ctx.kind, bad.field.unwrap_or("malformed"));
            let stream = m.stream;
            // Published and acked on the side: the stream's good messages need not wait for
            // the dead-letter round trip.
            let (publisher, metrics, kind) =
                (ctx.dead_letter.clone(), ctx.metrics.clone(), ctx.kind);
            tokio::spawn(async move {
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
            if ctx.kind == EventKind::Click {
                return ctx.tx.send(Input::Alive { stream }).await.is_ok();
            }
            return true;
        }
    };
    ctx.tx.send(input).await.is_ok()
}

/// Publishes a refused message to the dead-letter topic with its reason as attributes; acks it
/// once the topic has it, nacks it (redelivery) if the publish fails.
pub(crate) async fn dead_letter(
    publisher: &Publisher,
    metrics: &Metrics,
    kind: EventKind,
    bad: &BadMessage,
    data: Bytes,
    message_id: &str,
    ack: AckHandle,
) {
    tracing::warn!(stream = %kind, message_id, reason = %bad.reason, "bad message: dead-lettered");
    let mut msg = OutgoingMessage::new(data)
        .with_attribute("reason", bad.reason.clone())
        .with_attribute("stream", kind.as_str())
        .with_attribute("source_message_id", message_id);
    if let Some(field) = bad.field {
        msg = msg.with_attribute("field", field);
    }
    match publisher.publish(msg).await {
        Ok(_) => {
            metrics.dead_lettered(kind);
            ack.ack();
        }
        Err(e) => {
            tracing::error!(error = %e, message_id, "cannot publish to the dead-letter topic; the message will be redelivered");
            ack.nack();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_message_routed_as_another_event_type_is_refused_with_the_fix() {
        let click = attributes(&[(crate::router::EVENT_TYPE_ATTRIBUTE, "click")]);
        assert!(misrouted(EventKind::Click, &click).is_none());
        let Some(bad) = misrouted(EventKind::Checkout, &click) else {
            panic!("a click on the checkout stream was taken in");
        };
        assert_eq!(bad.kind, EventKind::Checkout);
        assert!(
            bad.reason.contains("expected checkout, found \"click\""),
            "{}",
            bad.reason
        );
        assert!(
            bad.reason.contains("create-pubsub --partitions"),
            "{}",
            bad.reason
        );
        // A producer's message has no such attribute.
        assert!(misrouted(EventKind::Checkout, &attributes(&[("other", "x")])).is_none());
    }
}
