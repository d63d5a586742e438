//! Publishing to one topic: [`Publisher::publish`] for a single message (a dead letter, a late
//! click) and [`Publisher::publish_all`] for bulk loads (the data generator), which keeps many
//! publishes in flight so the client can fill large batches.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use google_cloud_pubsub::model::Message;

use crate::admin::Admin;
use crate::connection::Connection;
use crate::error::PubSubError;

/// A message to publish: payload and attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The payload.
    pub data: Bytes,
    /// String attributes (e.g. `reason` on a dead letter).
    pub attributes: HashMap<String, String>,
}

impl OutgoingMessage {
    /// A message with this payload and no attributes.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            attributes: HashMap::new(),
        }
    }

    /// Adds (or replaces) an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// Client-side batching: a batch is sent when any threshold is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherOptions {
    /// Messages per publish request (Pub/Sub allows at most 1000).
    pub max_batch_messages: u32,
    /// Bytes per publish request (Pub/Sub allows at most 10 MB).
    pub max_batch_bytes: u32,
    /// How long a message may wait for its batch to fill.
    pub max_batch_delay: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            max_batch_messages: 1000,
            max_batch_bytes: 5_000_000,
            max_batch_delay: Duration::from_millis(10),
        }
    }
}

/// Publishes to one topic; cheap to clone (clones share the batching background task).
#[derive(Clone, Debug)]
pub struct Publisher {
    inner: google_cloud_pubsub::client::Publisher,
    topic: Arc<str>,
}

impl Publisher {
    /// A publisher for topic `topic` (an id) with default batching. Checks that the topic exists,
    /// so a missing topic or bad credentials fail here rather than on every message.
    pub async fn new(conn: &Connection, topic: &str) -> Result<Self, PubSubError> {
        Self::with_options(conn, topic, PublisherOptions::default()).await
    }

    /// Like [`Publisher::new`], with explicit batching options.
    pub async fn with_options(
        conn: &Connection,
        topic: &str,
        options: PublisherOptions,
    ) -> Result<Self, PubSubError> {
        crate::args::validate_id("topic", topic)?;
        Admin::new(conn).await?.check_topic(topic).await?;
        let name = conn.topic_path(topic);
        let inner = conn
            .base_publisher()
            .await?
            .publisher(name.clone())
            .set_message_count_threshold(options.max_batch_messages.clamp(1, 1000))
            .set_byte_threshold(options.max_batch_bytes.clamp(1, 10_000_000))
            .set_delay_threshold(options.max_batch_delay)
            .build();
        Ok(Self {
            inner,
            topic: name.into(),
        })
    }

    /// The topic's full resource name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one message. The returned future resolves to the server-assigned message id once
    /// the server has the message; the message is sent even if the future is dropped.
    pub fn publish(&self, message: OutgoingMessage) -> PublishFuture {
        let msg = Message::new()
            .set_data(message.data)
            .set_attributes(message.attributes);
        PublishFuture {
            inner: self.inner.publish(msg),
            topic: self.topic.clone(),
        }
    }

    /// Publishes every message of `messages` (consumed lazily), keeping up to `max_in_flight`
    /// unconfirmed at once, and returns how many the server confirmed. Stops at the first
    /// failure; messages already queued then may still be sent.
    pub async fn publish_all<I>(
        &self,
        messages: I,
        max_in_flight: usize,
    ) -> Result<u64, PubSubError>
    where
        I: IntoIterator<Item = OutgoingMessage>,
    {
        let max_in_flight = max_in_flight.max(1);
        let mut in_flight = FuturesUnordered::new();
        let mut confirmed = 0_u64;
        for message in messages {
            if in_flight.len() >= max_in_flight {
                if let Some(result) = in_flight.next().await {
                    let _id: String = result?;
                    confirmed += 1;
                }
            }
            in_flight.push(self.publish(message));
        }
        while let Some(result) = in_flight.next().await {
            let _id: String = result?;
            confirmed += 1;
        }
        Ok(confirmed)
    }

    /// Sends every queued message now and waits until each has succeeded or failed.
    pub async fn flush(&self) {
        self.inner.flush().await;
    }
}

/// Resolves to the message id once the server has the message.
#[must_use = "a publish can fail; await the future to know"]
pub struct PublishFuture {
    inner: google_cloud_pubsub::publisher::PublishFuture,
    topic: Arc<str>,
}

impl std::fmt::Debug for PublishFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishFuture")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Future for PublishFuture {
    type Output = Result<String, PubSubError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll(cx).map(|r| {
            r.map_err(|cause| PubSubError::Publish {
                topic: this.topic.to_string(),
                cause,
            })
        })
    }
}
