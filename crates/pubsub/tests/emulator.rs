//! Integration tests against the real Pub/Sub emulator at `PUBSUB_EMULATOR_HOST`.
//!
//! Each test uses fresh topic and subscription names (the emulator keeps leasing messages to
//! cancelled pulls, so names are never reused) and deletes them at the end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use firstclick_cli::GcpArgs;
use firstclick_pubsub::{
    ensure_topology, Admin, Connection, OutgoingMessage, PubSubArgs, PubSubError, Publisher,
    ReceivedMessage, ResourceOutcome, SubscribeOptions, Subscription, Topology,
};

const PROJECT: &str = "firstclick-test";
/// The shortest ack deadline Pub/Sub allows; tests that wait for redelivery use it.
const SHORT_DEADLINE: Duration = Duration::from_secs(10);

fn emulator_host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "PUBSUB_EMULATOR_HOST is not set: start the Pub/Sub emulator (e.g. \
             cloud-pubsub-emulator --host=127.0.0.1 --port=8185) and export \
             PUBSUB_EMULATOR_HOST=127.0.0.1:8185"
        )
    })
}

fn conn() -> Connection {
    Connection::emulator(&emulator_host(), PROJECT).expect("valid emulator address")
}

/// A name no other test (or earlier run) has used.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh topic with one subscription on it (ack deadline `deadline`).
struct Fixture {
    admin: Admin,
    topic: String,
    subscription: String,
}

impl Fixture {
    async fn new(prefix: &str, deadline: Duration) -> Self {
        let admin = Admin::new(&conn()).await.expect("admin clients");
        let topic = unique(prefix);
        let subscription = format!("{topic}-sub");
        assert_eq!(
            admin.ensure_topic(&topic).await.unwrap(),
            ResourceOutcome::Created
        );
        assert_eq!(
            admin
                .ensure_subscription(&subscription, &topic, deadline)
                .await
                .unwrap(),
            ResourceOutcome::Created
        );
        Self {
            admin,
            topic,
            subscription,
        }
    }

    async fn publisher(&self) -> Publisher {
        Publisher::new(self.admin.connection(), &self.topic)
            .await
            .expect("publisher")
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Subscription {
        Subscription::start(self.admin.connection(), &self.subscription, options)
            .await
            .expect("subscription")
    }

    async fn cleanup(self) {
        self.admin
            .delete_subscription(&self.subscription)
            .await
            .unwrap();
        self.admin.delete_topic(&self.topic).await.unwrap();
    }
}

fn short_options(streams: usize) -> SubscribeOptions {
    SubscribeOptions {
        streams,
        ack_deadline: SHORT_DEADLINE,
        ..SubscribeOptions::default()
    }
}

/// Receives until `n` messages arrived; panics after `limit`.
async fn receive_n(sub: &mut Subscription, n: usize, limit: Duration) -> Vec<ReceivedMessage> {
    let mut got = Vec::with_capacity(n);
    let deadline = Instant::now() + limit;
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(m))) => got.push(m),
            Ok(Some(Err(e))) => panic!("stream error: {e}"),
            Ok(None) => panic!("subscription ended after {} of {n} messages", got.len()),
            Err(_) => panic!("only {} of {n} messages within {limit:?}", got.len()),
        }
    }
    got
}

/// Everything that arrives within `window` (acked on arrival).
async fn receive_for(sub: &mut Subscription, window: Duration) -> Vec<(bytes::Bytes, String)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(m))) => {
                got.push((m.data.clone(), m.message_id.clone()));
                m.ack.ack();
            }
            Ok(Some(Err(e))) => panic!("stream error: {e}"),
            Ok(None) | Err(_) => return got,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_idempotent_and_reports_what_it_created() {
    let base = unique("topo");
    let args = PubSubArgs {
        emulator_host: Some(emulator_host()),
        click_topic: format!("{base}-clicks"),
        checkout_topic: format!("{base}-checkouts"),
        click_subscription: None,
        checkout_subscription: Some(format!("{base}-checkouts-pipeline")),
        dead_letter_topic: format!("{base}-dead"),
        late_topic: format!("{base}-late"),
        ..PubSubArgs::default()
    };
    let gcp = GcpArgs {
        project_id: PROJECT.into(),
        credentials: None,
    };

    let first = ensure_topology(&gcp, &args).await.expect("first run");
    assert_eq!(first.resources.len(), 8);
    assert_eq!(first.created().count(), 8, "{first:?}");
    let names: HashSet<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    for expected in [
        format!("projects/{PROJECT}/topics/{base}-clicks"),
        format!("projects/{PROJECT}/subscriptions/{base}-clicks"),
        format!("projects/{PROJECT}/subscriptions/{base}-checkouts-pipeline"),
        format!("projects/{PROJECT}/subscriptions/{base}-dead"),
        format!("projects/{PROJECT}/subscriptions/{base}-late"),
    ] {
        assert!(
            names.contains(expected.as_str()),
            "{expected} missing: {names:?}"
        );
    }

    let second = ensure_topology(&gcp, &args).await.expect("second run");
    assert_eq!(second.existing().count(), 8, "{second:?}");
    assert_eq!(
        first.resources.iter().map(|r| &r.name).collect::<Vec<_>>(),
        second.resources.iter().map(|r| &r.name).collect::<Vec<_>>()
    );

    // The created subscriptions are usable, on the right topics.
    let conn = conn();
    let admin = Admin::new(&conn).await.unwrap();
    admin
        .check_subscription(&format!("{base}-checkouts-pipeline"))
        .await
        .unwrap();

    // A subscription name already taken on another topic is reported, not silently reused.
    let mut clash = args.clone();
    clash.click_topic = format!("{base}-other");
    clash.click_subscription = Some(format!("{base}-clicks"));
    let err = ensure_topology(&gcp, &clash).await.unwrap_err();
    assert!(
        matches!(err, PubSubError::SubscriptionConflict { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("topics/{base}-clicks")), "{text}");
    assert!(text.contains(&format!("topics/{base}-other")), "{text}");

    let t: Topology = clash.topology();
    for (s, _) in t.subscriptions() {
        admin.delete_subscription(s).await.unwrap();
    }
    admin
        .delete_subscription(&format!("{base}-checkouts-pipeline"))
        .await
        .unwrap();
    for topic in t.topics() {
        admin.delete_topic(topic).await.unwrap();
    }
    admin.delete_topic(&format!("{base}-clicks")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_are_clear_and_fast() {
    // Nothing listens on port 1.
    let gcp = GcpArgs {
        project_id: PROJECT.into(),
        credentials: None,
    };
    let args = PubSubArgs {
        emulator_host: Some("127.0.0.1:1".into()),
        ..PubSubArgs::default()
    };
    let started = Instant::now();
    let err = ensure_topology(&gcp, &args).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, PubSubError::EmulatorUnreachable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let conn = conn();
    let missing = unique("missing");
    let err = Subscription::start(&conn, &missing, SubscribeOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PubSubError::NotFound {
                kind: "subscription",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("create-pubsub"), "{err}");

    let err = Publisher::new(&conn, &missing).await.unwrap_err();
    assert!(
        matches!(err, PubSubError::NotFound { kind: "topic", .. }),
        "{err}"
    );

    let admin = Admin::new(&conn).await.unwrap();
    let err = admin
        .ensure_subscription(&missing, &missing, SHORT_DEADLINE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PubSubError::NotFound { kind: "topic", .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_n_receive_exactly_n_then_nothing_is_redelivered() {
    const N: usize = 500;
    let fx = Fixture::new("roundtrip", SHORT_DEADLINE).await;
    let publisher = fx.publisher().await;
    let sent: Vec<OutgoingMessage> = (0..N)
        .map(|i| {
            let m = OutgoingMessage::new(format!("{{\"seq\":{i}}}"))
                .with_attribute("seq", i.to_string());
            if i % 7 == 0 {
                m.with_attribute("reason", format!("bad message {i}"))
            } else {
                m
            }
        })
        .collect();
    let confirmed = publisher.publish_all(sent.clone(), 200).await.unwrap();
    assert_eq!(confirmed, N as u64);

    let mut sub = fx.subscribe(short_options(2)).await;
    let got = receive_n(&mut sub, N, Duration::from_secs(20)).await;

    let by_seq: BTreeMap<usize, &ReceivedMessage> = got
        .iter()
        .map(|m| (m.attributes["seq"].parse::<usize>().unwrap(), m))
        .collect();
    assert_eq!(by_seq.len(), N, "duplicates among the first {N}");
    for (i, want) in sent.iter().enumerate() {
        let m = by_seq[&i];
        assert_eq!(m.data, want.data);
        assert_eq!(m.attributes, want.attributes);
        assert!(m.publish_time.is_some());
        assert!(!m.message_id.is_empty());
    }
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), N);

    for m in got {
        m.ack.ack();
    }
    // Unacked messages would come back once their 10 s lease ran out.
    let again = receive_for(&mut sub, SHORT_DEADLINE + Duration::from_secs(3)).await;
    assert!(again.is_empty(), "redelivered after ack: {again:?}");
    sub.shutdown().await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_and_dropped_messages_are_redelivered() {
    let fx = Fixture::new("nack", SHORT_DEADLINE).await;
    let publisher = fx.publisher().await;
    publisher
        .publish(OutgoingMessage::new("nack me"))
        .await
        .unwrap();
    publisher
        .publish(OutgoingMessage::new("drop me"))
        .await
        .unwrap();

    let mut sub = fx.subscribe(short_options(1)).await;
    let first = receive_n(&mut sub, 2, Duration::from_secs(10)).await;
    let mut ids = HashMap::new();
    for m in first {
        ids.insert(m.data.clone(), m.message_id.clone());
        if m.data == "nack me" {
            m.ack.nack();
        } else {
            drop(m); // dropping the handle nacks
        }
    }
    // Well before the 10 s deadline: the nacks made them available at once.
    let again = receive_n(&mut sub, 2, Duration::from_secs(5)).await;
    for m in again {
        assert_eq!(ids[&m.data], m.message_id, "same message redelivered");
        m.ack.ack();
    }
    sub.shutdown().await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_acked_after_its_deadline_is_not_redelivered() {
    let fx = Fixture::new("lease", SHORT_DEADLINE).await;
    fx.publisher()
        .await
        .publish(OutgoingMessage::new("slow work"))
        .await
        .unwrap();
    let mut sub = fx.subscribe(short_options(1)).await;
    let mut got = receive_n(&mut sub, 1, Duration::from_secs(10)).await;
    let held = got.pop().unwrap();

    // Hold it for 1.5 deadlines from another task, keep pulling meanwhile: without lease
    // extension it would come back on this same stream after 10 s.
    let worker = tokio::spawn(async move {
        tokio::time::sleep(SHORT_DEADLINE + Duration::from_secs(5)).await;
        held.ack.ack();
    });
    let during = receive_for(&mut sub, SHORT_DEADLINE + Duration::from_secs(5)).await;
    assert!(during.is_empty(), "redelivered while held: {during:?}");
    worker.await.unwrap();
    let after = receive_for(&mut sub, Duration::from_secs(3)).await;
    assert!(after.is_empty(), "redelivered after a late ack: {after:?}");
    sub.shutdown().await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_handed_out_messages_and_sends_their_acks() {
    const N: usize = 50;
    const TAKEN: usize = 10;
    let fx = Fixture::new("shutdown", SHORT_DEADLINE).await;
    let publisher = fx.publisher().await;
    let confirmed = publisher
        .publish_all((0..N).map(|i| OutgoingMessage::new(format!("m{i}"))), 100)
        .await
        .unwrap();
    assert_eq!(confirmed, N as u64);

    let mut sub = fx.subscribe(short_options(1)).await;
    let taken = receive_n(&mut sub, TAKEN, Duration::from_secs(10)).await;
    let taken_data: HashSet<bytes::Bytes> = taken.iter().map(|m| m.data.clone()).collect();
    // A second consumer, open before the first one stops, to see what comes back.
    let mut other = fx.subscribe(short_options(1)).await;

    // Another task acks them a second from now; shutdown must wait for it and send the acks.
    let worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for m in taken {
            m.ack.ack();
        }
    });
    let started = Instant::now();
    sub.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "shutdown returned before the handed-out messages were acked: {:?}",
        started.elapsed()
    );
    worker.await.unwrap();

    // The 10 acked ones must not come back, not even after their 10 s lease would have ended.
    // The other 40 were never handed out: shutdown nacked them. They come back, but the
    // emulator keeps a thread per cancelled pull that also leases messages, so the second
    // consumer may see only some of them.
    let again = receive_for(&mut other, SHORT_DEADLINE + Duration::from_secs(3)).await;
    let again_data: HashSet<bytes::Bytes> = again.iter().map(|(d, _)| d.clone()).collect();
    assert!(
        again_data.is_disjoint(&taken_data),
        "acked before shutdown, redelivered: {:?}",
        again_data.intersection(&taken_data).collect::<Vec<_>>()
    );
    assert!(again_data.len() <= N - TAKEN, "{again_data:?}");
    other.shutdown().await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_hands_out_the_buffer_then_ends() {
    const N: usize = 30;
    let fx = Fixture::new("stop", SHORT_DEADLINE).await;
    let publisher = fx.publisher().await;
    publisher
        .publish_all((0..N).map(|i| OutgoingMessage::new(format!("s{i}"))), 100)
        .await
        .unwrap();
    let mut sub = fx.subscribe(short_options(2)).await;
    let first = receive_n(&mut sub, 1, Duration::from_secs(10)).await;
    let handle = sub.handle();
    assert!(!handle.is_stopped());
    handle.stop();
    assert!(handle.is_stopped());
    tokio::time::timeout(Duration::from_secs(1), handle.stopped())
        .await
        .expect("stopped() resolves after stop()");

    // next() ends (None) by itself once the buffer is drained; nothing new is pulled.
    let mut drained = first.len();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = sub.next().await {
            item.unwrap().ack.ack();
            drained += 1;
        }
    })
    .await;
    assert!(end.is_ok(), "next() did not end after stop()");
    assert!(drained <= N, "{drained}");
    for m in first {
        m.ack.ack();
    }
    tokio::time::timeout(Duration::from_secs(10), sub.shutdown())
        .await
        .expect("shutdown after stop completes");
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_bounds_unacked_messages() {
    const N: usize = 200;
    const LIMIT: u32 = 20;
    let fx = Fixture::new("flow", SHORT_DEADLINE).await;
    fx.publisher()
        .await
        .publish_all((0..N).map(|i| OutgoingMessage::new(format!("f{i}"))), 200)
        .await
        .unwrap();
    let mut sub = fx
        .subscribe(SubscribeOptions {
            max_outstanding_messages: LIMIT,
            ..short_options(1)
        })
        .await;
    // Take what comes in 3 s without acking anything.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(item)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        sub.next(),
    )
    .await
    {
        held.push(item.unwrap());
    }
    // The emulator ignores the limit sent with the stream; the client enforces it.
    assert_eq!(
        held.len(),
        LIMIT as usize,
        "unacked messages handed out with a limit of {LIMIT}"
    );
    // Acking makes room for more: another full window arrives.
    for m in held.drain(..) {
        m.ack.ack();
    }
    let more = receive_n(&mut sub, LIMIT as usize, Duration::from_secs(5)).await;
    for m in more {
        m.ack.ack();
    }
    sub.shutdown().await;
    fx.cleanup().await;
}
