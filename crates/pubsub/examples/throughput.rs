//! Measures publish and pull+ack rates against the Pub/Sub emulator at `PUBSUB_EMULATOR_HOST`.
//!
//! `cargo run --release -p firstclick-pubsub --example throughput -- [MESSAGES] [STREAMS,...]`
//! (defaults: 100000 messages of ~300 bytes, streams 1,4,8). One fresh topic, one fresh
//! subscription per stream count; every subscription receives every message.

use std::time::{Duration, Instant};

use firstclick_pubsub::{
    Admin, Connection, OutgoingMessage, Publisher, SubscribeOptions, Subscription,
};

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .map_err(|_| "set PUBSUB_EMULATOR_HOST=HOST:PORT of a running Pub/Sub emulator")?;
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let stream_counts: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,4,8".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;

    let conn = Connection::emulator(&host, "firstclick-bench")?;
    conn.probe_emulator().await?;
    let admin = Admin::new(&conn).await?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let topic = format!("bench-{nanos}");
    admin.ensure_topic(&topic).await?;
    let mut subs = Vec::new();
    for s in &stream_counts {
        let sub = format!("{topic}-s{s}");
        admin
            .ensure_subscription(&sub, &topic, Duration::from_secs(60))
            .await?;
        subs.push((*s, sub));
    }

    let payload = format!(
        "{{\"click_id\":\"{}\",\"user_id\":17,\"product_id\":\"{}\",\"product\":\"Widget\",\
         \"price\":12.5,\"url\":\"https://shop.example/p/1\",\"user_agent\":\"Mozilla/5.0 (X11; \
         Linux x86_64)\",\"ip_address\":\"10.1.2.3\",\"datetime_occured\":\"2024-05-01 \
         12:00:00.000\"}}",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7", "a1b2c3d4-0000-4000-8000-000000000001"
    );
    let publisher = Publisher::new(&conn, &topic).await?;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let confirmed = publisher
        .publish_all(
            (0..n).map(|i| {
                OutgoingMessage::new(payload.clone()).with_attribute("seq", i.to_string())
            }),
            10_000,
        )
        .await?;
    let (secs, cpu) = (
        t0.elapsed().as_secs_f64(),
        (cpu_time() - cpu0).as_secs_f64(),
    );
    println!(
        "publish: {confirmed} msgs ({} bytes each) in {secs:.2}s = {:.0} msg/s, client CPU {:.0}% of a core",
        payload.len(),
        confirmed as f64 / secs,
        100.0 * cpu / secs
    );

    for (streams, sub) in subs {
        let mut s = Subscription::start(
            &conn,
            &sub,
            SubscribeOptions {
                streams,
                max_outstanding_messages: 10_000,
                ..SubscribeOptions::default()
            },
        )
        .await?;
        let (cpu0, t0) = (cpu_time(), Instant::now());
        let mut got = 0_usize;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
                Ok(Some(Ok(m))) => {
                    m.ack.ack();
                    got += 1;
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) => return Err("subscription ended".into()),
                Err(_) => return Err(format!("stalled after {got} of {n}").into()),
            }
        }
        let (secs, cpu) = (
            t0.elapsed().as_secs_f64(),
            (cpu_time() - cpu0).as_secs_f64(),
        );
        s.shutdown().await;
        println!(
            "pull+ack, {streams} stream(s): {got} msgs in {secs:.2}s = {:.0} msg/s, client CPU {:.0}% of a core",
            got as f64 / secs,
            100.0 * cpu / secs
        );
        admin.delete_subscription(&sub).await?;
    }
    admin.delete_topic(&topic).await?;
    Ok(())
}
