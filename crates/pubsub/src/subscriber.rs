//! Receiving from one subscription: [`Subscription`] runs N concurrent streaming pulls (the
//! emulator serves ~2,000 msg/s per stream) and hands out [`ReceivedMessage`]s, each with an
//! [`AckHandle`] that may be acked or nacked later, from any task.
//!
//! # Shape
//!
//! ```text
//! stream 1 ─ pump task ─┐
//! stream 2 ─ pump task ─┼─► bounded mpsc ─► Subscription::next()
//! stream N ─ pump task ─┘
//! ```
//!
//! Each stream is the official client's `MessageStream`; it keeps the leases of handed-out
//! messages extended (every 3 s, by `ack_deadline`, up to `max_lease`) until they are acked or
//! nacked, batches acks, and re-opens itself after transient errors.
//!
//! # Flow control
//!
//! The limits are sent to the server with each stream (split evenly), which Google Cloud
//! honours but the emulator ignores. So they are also enforced here, across all streams: every
//! handed-out or buffered message holds a share of two semaphores (messages, bytes) until it is
//! acked, nacked or dropped. At the limit the pumps stop reading their streams; what the
//! client already received waits, still leased, inside the stream.
//!
//! # Shutdown
//!
//! - [`SubscriptionHandle::stop`] (from any task, or a signal handler) stops pulling: each
//!   stream is stopped through its shutdown token, never by dropping a pending `next()`.
//!   Messages already buffered are still returned by [`Subscription::next`], which then
//!   returns `None`. Handed-out messages can still be acked.
//! - [`Subscription::shutdown`] stops, nacks the buffered messages nobody took, and waits until
//!   every handed-out [`AckHandle`] has been acked, nacked or dropped and the acks have been
//!   sent. Do not hold an `AckHandle` in the task that awaits it.
//! - Dropping a `Subscription` stops it without waiting.
//!
//! A typical consumer:
//!
//! ```no_run
//! # async fn run(conn: firstclick_pubsub::Connection) -> Result<(), firstclick_pubsub::PubSubError> {
//! use firstclick_pubsub::{Subscription, SubscribeOptions};
//! let mut sub = Subscription::start(&conn, "clicks", SubscribeOptions::default()).await?;
//! let handle = sub.handle(); // give a clone to the signal handler: handle.stop()
//! while let Some(msg) = sub.next().await {
//!     let msg = msg?;
//!     // ... process msg.data, keep msg.ack until it is safe, then:
//!     msg.ack.ack();
//! }
//! sub.shutdown().await; // flushes pending acks
//! # drop(handle); Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior, ShutdownToken};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::admin::Admin;
use crate::args::PubSubArgs;
use crate::connection::Connection;
use crate::error::PubSubError;

/// Streaming-pull settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Concurrent streaming pulls (at least 1).
    pub streams: usize,
    /// Flow control: messages handed out or buffered but not yet acked or nacked, across all
    /// streams.
    pub max_outstanding_messages: u32,
    /// Flow control: payload and attribute bytes of those messages (at most `u32::MAX`).
    pub max_outstanding_bytes: u64,
    /// How far each lease extension pushes a message's deadline (10-600 s); also the stream's
    /// ack deadline. A crashed consumer's messages come back after at most this long.
    pub ack_deadline: Duration,
    /// How long a handed-out message is kept leased at most; after that it may be redelivered.
    pub max_lease: Duration,
    /// Messages buffered between the pulls and `next()`.
    pub buffer: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            streams: 4,
            max_outstanding_messages: 4000,
            max_outstanding_bytes: 400 * 1024 * 1024,
            ack_deadline: Duration::from_secs(60),
            max_lease: Duration::from_secs(3600),
            buffer: 1000,
        }
    }
}

impl SubscribeOptions {
    /// The defaults, with the stream count and flow control from the flags.
    pub fn from_args(args: &PubSubArgs) -> Self {
        Self {
            streams: usize::from(args.streams),
            max_outstanding_messages: args.max_outstanding_messages,
            ack_deadline: Duration::from_secs(u64::from(args.ack_deadline_secs)),
            ..Self::default()
        }
    }
}

/// Acks or nacks one received message; `Send`, so it can travel to the task that finishes the
/// work. Dropping it without acking nacks the message (it is redelivered).
#[derive(Debug)]
pub struct AckHandle {
    handler: Handler,
    /// This message's share of the flow-control limits, released with the handle.
    _permit: FlowPermit,
}

impl AckHandle {
    /// Acknowledges the message: it will not be redelivered (best effort, at-least-once).
    pub fn ack(self) {
        self.handler.ack();
    }

    /// Rejects the message: the service redelivers it, possibly to another consumer.
    pub fn nack(self) {
        self.handler.nack();
    }
}

/// A message as received, with its ack handle.
#[derive(Debug)]
pub struct ReceivedMessage {
    /// The payload.
    pub data: Bytes,
    /// The attributes.
    pub attributes: HashMap<String, String>,
    /// Server-assigned id, unique within the topic.
    pub message_id: String,
    /// When the server accepted the message.
    pub publish_time: Option<SystemTime>,
    /// Ordering key, empty if none.
    pub ordering_key: String,
    /// Delivery attempt, counted only on subscriptions with a dead-letter policy.
    pub delivery_attempt: Option<i32>,
    /// Which of the subscription's streaming pulls delivered it (0..streams). Messages of one
    /// stream arrive roughly in publish order, across streams they interleave arbitrarily: an
    /// event-time watermark should be kept per stream (the minimum over streams is safe).
    pub stream: usize,
    /// Ack or nack this, now or later; moving it elsewhere is fine.
    pub ack: AckHandle,
}

impl ReceivedMessage {
    fn new(message: Message, handler: Handler, permit: FlowPermit, stream: usize) -> Self {
        let delivery_attempt = handler.delivery_attempt();
        Self {
            data: message.data,
            attributes: message.attributes,
            message_id: message.message_id,
            publish_time: message
                .publish_time
                .and_then(|t| SystemTime::try_from(t).ok()),
            ordering_key: message.ordering_key,
            delivery_attempt,
            stream,
            ack: AckHandle {
                handler,
                _permit: permit,
            },
        }
    }
}

type Item = Result<ReceivedMessage, PubSubError>;

/// Client-side flow control shared by the streams of one subscription.
#[derive(Clone, Debug)]
struct FlowControl {
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
}

/// One message's share of the limits.
#[derive(Debug)]
struct FlowPermit {
    _messages: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl FlowControl {
    fn new(max_messages: u32, max_bytes: u64) -> Self {
        // acquire_many takes a u32: bytes are counted in units that keep the total below that.
        let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1);
        Self {
            messages: Arc::new(Semaphore::new(max_messages.max(1) as usize)),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            max_bytes,
        }
    }

    /// Waits for room for one message of `size` bytes (a message larger than the whole byte
    /// limit waits for all of it). The semaphores are never closed, so this cannot fail.
    async fn acquire(&self, size: usize) -> Option<FlowPermit> {
        let size = u32::try_from(size)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_bytes);
        let messages = self.messages.clone().acquire_owned().await.ok()?;
        let bytes = self.bytes.clone().acquire_many_owned(size).await.ok()?;
        Some(FlowPermit {
            _messages: messages,
            _bytes: bytes,
        })
    }
}

/// Stops a running [`Subscription`] from any task; cheap to clone.
#[derive(Clone, Debug)]
pub struct SubscriptionHandle {
    stop: CancellationToken,
}

impl SubscriptionHandle {
    /// Stops pulling. Buffered messages are still handed out by `next()`, which then returns
    /// `None`; handed-out messages can still be acked. Idempotent.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether `stop` was called (or the subscription dropped or shut down).
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once the subscription is stopping.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }
}

/// N streaming pulls on one subscription, merged into one sequence of messages.
#[derive(Debug)]
pub struct Subscription {
    name: String,
    rx: mpsc::Receiver<Item>,
    handle: SubscriptionHandle,
    tokens: Vec<ShutdownToken>,
    tasks: Vec<JoinHandle<()>>,
    _stop_on_drop: DropGuard,
}

impl Subscription {
    /// Checks that subscription `subscription` (an id) exists, then opens `options.streams`
    /// streaming pulls on it. Fails fast if the subscription is missing or Pub/Sub unreachable.
    pub async fn start(
        conn: &Connection,
        subscription: &str,
        options: SubscribeOptions,
    ) -> Result<Self, PubSubError> {
        crate::args::validate_id("subscription", subscription)?;
        Admin::new(conn)
            .await?
            .check_subscription(subscription)
            .await?;
        let name = conn.subscription_path(subscription);
        let streams = options.streams.max(1);
        let client = conn.subscriber(streams).await?;
        let per_stream = |total: u64| total.div_ceil(streams as u64).max(1);
        let (tx, rx) = mpsc::channel(options.buffer.max(1));
        let stop = CancellationToken::new();
        let flow = FlowControl::new(
            options.max_outstanding_messages,
            options.max_outstanding_bytes,
        );
        let mut tokens = Vec::with_capacity(streams);
        let mut tasks = Vec::with_capacity(2 * streams);
        for index in 0..streams {
            let stream = client
                .subscribe(name.clone())
                .set_max_outstanding_messages(per_stream(u64::from(
                    options.max_outstanding_messages,
                )) as i64)
                .set_max_outstanding_bytes(
                    per_stream(options.max_outstanding_bytes).min(i64::MAX as u64) as i64,
                )
                .set_max_lease_extension(options.ack_deadline)
                .set_max_lease(options.max_lease)
                .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
                .build();
            let token = stream.shutdown_token();
            tokens.push(token.clone());
            // Stops the stream through its token when we are asked to stop.
            let stopper = stop.clone();
            tasks.push(tokio::spawn(async move {
                stopper.cancelled().await;
                token.shutdown().await;
            }));
            tasks.push(tokio::spawn(pump(
                index,
                stream,
                tx.clone(),
                stop.clone(),
                flow.clone(),
                name.clone(),
            )));
        }
        tracing::info!(subscription = %name, streams, "subscribed");
        Ok(Self {
            name,
            rx,
            handle: SubscriptionHandle { stop: stop.clone() },
            tokens,
            tasks,
            _stop_on_drop: stop.drop_guard(),
        })
    }

    /// The subscription's full resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next message, or a permanent error of one stream (the others go on; transient
    /// errors are retried inside). `None` once stopped and drained, or when every stream has
    /// ended. Cancel-safe: use it in `tokio::select!` next to a shutdown signal.
    pub async fn next(&mut self) -> Option<Result<ReceivedMessage, PubSubError>> {
        self.rx.recv().await
    }

    /// A handle to stop this subscription from another task.
    pub fn handle(&self) -> SubscriptionHandle {
        self.handle.clone()
    }

    /// Stops pulling, nacks the buffered messages not yet handed out, and waits until every
    /// handed-out message has been acked, nacked or dropped and pending acks are sent.
    pub async fn shutdown(mut self) {
        self.handle.stop();
        self.rx.close();
        let mut nacked = 0_usize;
        while let Ok(item) = self.rx.try_recv() {
            nacked += usize::from(item.is_ok());
            drop(item);
        }
        for token in &self.tokens {
            token.shutdown().await;
        }
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::warn!(subscription = %self.name, error = %e, "subscriber task failed");
            }
        }
        tracing::info!(subscription = %self.name, nacked_unread = nacked, "subscription shut down");
    }
}

/// Moves messages from one stream into the shared channel until stopped, the receiver is
/// gone, or the stream ends.
async fn pump(
    index: usize,
    mut stream: MessageStream,
    tx: mpsc::Sender<Item>,
    stop: CancellationToken,
    flow: FlowControl,
    name: String,
) {
    // `next()` returns `None` as soon as the stream's shutdown token fires (see `start`).
    while let Some(result) = stream.next().await {
        let item = match result {
            Ok((message, handler)) => {
                let size = message.data.len()
                    + message
                        .attributes
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>();
                let permit = tokio::select! {
                    biased;
                    // Not handed out: dropping the handler nacks it.
                    _ = stop.cancelled() => break,
                    permit = flow.acquire(size) => permit,
                };
                let Some(permit) = permit else { break };
                Ok(ReceivedMessage::new(message, handler, permit, index))
            }
            Err(cause) => {
                tracing::error!(subscription = %name, error = %cause, "streaming pull failed");
                Err(PubSubError::Stream {
                    subscription: name.clone(),
                    cause,
                })
            }
        };
        tokio::select! {
            biased;
            // Not handed out: dropping it nacks it.
            _ = stop.cancelled() => break,
            sent = tx.send(item) => if sent.is_err() { break },
        }
    }
}
