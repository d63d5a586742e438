//! The Pub/Sub pass-through of the tests (tests/common/pubsub_proxy.rs, docs/design.md §8): a
//! subscriber process that is SIGKILLed while it holds unacknowledged messages must get them
//! redelivered to the next subscriber of the SAME subscription, once their leases expire, with
//! none lost to the emulator's leaked streaming pulls.
//!
//! Two subscriptions of one topic are read side by side, one through the proxy and one directly
//! (the comparison the proxy exists for); only the proxy's side is asserted, the direct side's
//! figure is printed. The subscriber that is killed is this test binary run again as a child
//! (`holder_process`, ignored unless started by the test), so that it dies like the service
//! does: without a word to the server.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use firstclick_cli::GcpArgs;
use firstclick_pubsub::{
    Admin, Connection, OutgoingMessage, PubSubArgs, Publisher, SubscribeOptions, Subscription,
};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;
use common::{env, pubsub_proxy};

const MESSAGES: usize = 1_000;
const ACK_DEADLINE: Duration = Duration::from_secs(10);
/// How long the second subscriber listens after the kill.
const WINDOW: Duration = Duration::from_secs(30);
/// Set for the child: the subscription it holds messages of.
const CHILD_ENV: &str = "PROXY_TEST_HOLD_SUBSCRIPTION";

async fn connect(host: &str) -> Connection {
    let gcp = GcpArgs {
        project_id: "test-project".into(),
        credentials: None,
    };
    let args = PubSubArgs {
        emulator_host: Some(host.to_string()),
        ..PubSubArgs::default()
    };
    Connection::connect(&gcp, &args).await.expect("Pub/Sub")
}

fn options() -> SubscribeOptions {
    SubscribeOptions {
        streams: 2,
        ack_deadline: ACK_DEADLINE,
        ..SubscribeOptions::default()
    }
}

/// The child: subscribes at `PUBSUB_EMULATOR_HOST`, prints every payload it receives, acks
/// none, and waits to be killed.
#[tokio::test]
#[ignore = "a helper process that a_killed_subscribers_messages_come_back starts"]
async fn holder_process() {
    let Ok(subscription) = std::env::var(CHILD_ENV) else {
        return;
    };
    firstclick_pubsub::install_crypto_provider();
    let conn = connect(&env("PUBSUB_EMULATOR_HOST")).await;
    let mut sub = Subscription::start(&conn, &subscription, options())
        .await
        .expect("subscription");
    let mut held = Vec::new();
    while let Some(m) = sub.next().await {
        let m = m.expect("message");
        println!("held {}", String::from_utf8_lossy(&m.data));
        held.push(m);
    }
}

/// A child holding every message of `subscription`, read through `host`.
struct Holder {
    child: tokio::process::Child,
    held: HashSet<String>,
}

impl Holder {
    /// Starts the child and waits (a minute at most) until it holds all [`MESSAGES`].
    async fn start(host: &str, subscription: &str) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["holder_process", "--exact", "--ignored", "--nocapture"])
            .env("PUBSUB_EMULATOR_HOST", host)
            .env(CHILD_ENV, subscription)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("child starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut held = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while held.len() < MESSAGES {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{subscription}: child holds {} messages after 60 s",
                        held.len()
                    )
                })
                .expect("child's stdout");
            let Some(line) = line else {
                panic!("{subscription}: child ended holding {}", held.len())
            };
            if let Some(payload) = line.strip_prefix("held ") {
                held.insert(payload.to_string());
            }
        }
        Self { child, held }
    }

    /// SIGKILL.
    async fn kill(&mut self) {
        self.child.kill().await.expect("kill the child");
    }
}

/// What a new subscriber received in the [`WINDOW`] after the kill.
struct Redelivery {
    distinct: HashSet<String>,
    /// Seconds from the kill to the first message.
    first: Option<f64>,
    /// Seconds from the kill until every message had come.
    all: Option<f64>,
}

/// Receives (and acks) on `subscription` until every message came or the window closed.
async fn receive(conn: &Connection, subscription: &str, killed: Instant) -> Redelivery {
    let mut sub = Subscription::start(conn, subscription, options())
        .await
        .expect("second subscriber");
    let mut got = Redelivery {
        distinct: HashSet::new(),
        first: None,
        all: None,
    };
    let end = killed + WINDOW;
    while got.distinct.len() < MESSAGES {
        let Ok(Some(m)) = tokio::time::timeout_at(end.into(), sub.next()).await else {
            break;
        };
        let m = m.expect("message");
        got.first.get_or_insert(killed.elapsed().as_secs_f64());
        got.distinct
            .insert(String::from_utf8_lossy(&m.data).into_owned());
        m.ack.ack();
    }
    if got.distinct.len() == MESSAGES {
        got.all = Some(killed.elapsed().as_secs_f64());
    }
    sub.shutdown().await;
    got
}

fn secs(t: Option<f64>) -> String {
    t.map_or_else(|| "never".into(), |t| format!("{t:.1} s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscribers_messages_come_back() {
    firstclick_pubsub::install_crypto_provider();
    let emulator = env("PUBSUB_EMULATOR_HOST");
    let proxy = pubsub_proxy::start(&emulator);
    let proxy_host = proxy.host();
    let (direct, proxied) = (connect(&emulator).await, connect(&proxy_host).await);
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let topic = format!("proxy-{suffix}");
    let (via_proxy, via_direct) = (format!("proxy-{suffix}-p"), format!("proxy-{suffix}-d"));
    let admin = Admin::new(&direct).await.expect("admin");
    admin.ensure_topic(&topic).await.expect("topic");
    for sub in [&via_proxy, &via_direct] {
        admin
            .ensure_subscription(sub, &topic, ACK_DEADLINE)
            .await
            .expect("subscription");
    }
    let publisher = Publisher::new(&direct, &topic).await.expect("publisher");
    let published = publisher
        .publish_all(
            (0..MESSAGES).map(|i| OutgoingMessage::new(format!("m{i}"))),
            500,
        )
        .await
        .expect("published");
    assert_eq!(published as usize, MESSAGES);

    // Each child holds every message, unacknowledged, leases extended; then both die at once.
    let (mut through_proxy, mut straight) = tokio::join!(
        Holder::start(&proxy_host, &via_proxy),
        Holder::start(&emulator, &via_direct)
    );
    let half_closed_before = proxy.half_closed();
    through_proxy.kill().await;
    straight.kill().await;
    let killed = Instant::now();
    // The proxy notices at once (the connection closes); two seconds are plenty.
    while proxy.half_closed() == half_closed_before && killed.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let child_half_closed = proxy.half_closed() - half_closed_before;

    // The next subscriber of each subscription; both through the proxy, so that their own
    // clean stop does not leave a stream behind either.
    let (again, again_direct) = tokio::join!(
        receive(&proxied, &via_proxy, killed),
        receive(&proxied, &via_direct, killed)
    );
    let report = format!(
        "pubsub proxy test: {MESSAGES} messages held by a killed subscriber, ack deadline {} s. \
         Through the proxy: {} back within {} s (first after {}, all after {}), the killed \
         child's {child_half_closed} streams half-closed ({} in all, {} then ended by the \
         emulator). Direct: {} back (first after {}, all after {})",
        ACK_DEADLINE.as_secs(),
        again.distinct.len(),
        WINDOW.as_secs(),
        secs(again.first),
        secs(again.all),
        proxy.half_closed(),
        proxy.drained(),
        again_direct.distinct.len(),
        secs(again_direct.first),
        secs(again_direct.all),
    );
    println!("{report}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pubsub_proxy.report"),
        &report,
    );
    // Every half-closed stream, the killed child's and the second subscribers', must have been
    // ended by the emulator (each drain is bounded by DRAIN_TIMEOUT).
    let drain_deadline = Instant::now() + pubsub_proxy::DRAIN_TIMEOUT;
    while proxy.drained() < proxy.half_closed() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (half_closed, drained) = (proxy.half_closed(), proxy.drained());
    // The emulator's leaked threads stop with their subscriptions.
    for sub in [&via_proxy, &via_direct] {
        let _ = admin.delete_subscription(sub).await;
    }
    let _ = admin.delete_topic(&topic).await;

    assert_eq!(through_proxy.held.len(), MESSAGES);
    assert!(
        drained >= half_closed,
        "the emulator ended only {drained} of {half_closed} half-closed streams"
    );
    assert!(
        child_half_closed > 0,
        "the proxy half-closed none of the killed child's streams"
    );
    let missing: Vec<&String> = through_proxy.held.difference(&again.distinct).collect();
    assert!(
        missing.is_empty(),
        "{} of the killed child's messages did not come back through the proxy within {} s \
         (e.g. {:?})",
        missing.len(),
        WINDOW.as_secs(),
        &missing[..missing.len().min(5)]
    );
}
