//! Measures `UserDirectory::names` throughput for batches of 500 ids, with a cold cache (every
//! id fetched from Redis) and a warm one (every id cached), for 1 and 8 concurrent callers.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6390 cargo run --release -p firstclick-redis --example lookup_throughput
//! ```
//! Writes 200,000 users `user_{id}` in a random id range and deletes them at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firstclick_redis::{CacheSettings, RedisArgs, Timeouts, UserDirectory, UserId};

const BATCH: usize = 500;
const USERS: i64 = 200_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("REDIS_URL").map_err(|_| "set REDIS_URL, e.g. redis://127.0.0.1:6390")?;
    let args = RedisArgs {
        redis_url: url,
        ..RedisArgs::default()
    };
    let base: UserId = (1 << 40) + (i64::from(rand::random::<u32>() >> 1) << 20);
    let settings = CacheSettings {
        ttl: Duration::from_secs(600),
        capacity: 1_000_000,
    };
    let new_dir = || {
        UserDirectory::with_settings(args.connection_info()?, settings, Timeouts::default())
            .map(Arc::new)
    };

    let writer = new_dir()?;
    writer.wait_until_ready(Duration::from_secs(5)).await?;
    let users: Vec<_> = (base..base + USERS)
        .map(|id| (id, format!("User Name {id}"), format!("password {id}")))
        .collect();
    let start = Instant::now();
    writer.put_users(&users).await?;
    let took = start.elapsed();
    println!(
        "put_users: {USERS} users in {took:.2?} = {:.0} users/s",
        USERS as f64 / took.as_secs_f64()
    );

    for callers in [1usize, 8] {
        // Cold: a fresh directory, every batch a new slice of ids (each fetched once).
        let dir = new_dir()?;
        dir.wait_until_ready(Duration::from_secs(5)).await?;
        let per_caller = USERS as usize / callers / BATCH;
        let ids_done = run(&dir, callers, per_caller, move |caller, i| {
            let first = base + ((caller * per_caller + i) * BATCH) as i64;
            (first..first + BATCH as i64).collect()
        })
        .await?;
        let cold = ids_done.0 as f64 / ids_done.1.as_secs_f64();
        let stats = dir.stats();
        assert_eq!(stats.cache_hits, 0, "cold run hit the cache");

        // Warm: the same directory, every caller asking batches it already fetched.
        let rounds = 4 * per_caller;
        let ids_done = run(&dir, callers, rounds, move |caller, i| {
            let first = base + ((caller * per_caller + i % per_caller) * BATCH) as i64;
            (first..first + BATCH as i64).collect()
        })
        .await?;
        let warm = ids_done.0 as f64 / ids_done.1.as_secs_f64();
        assert_eq!(dir.stats().lookups, stats.lookups, "warm run went to Redis");
        println!(
            "{callers} caller(s), batches of {BATCH}: cold {cold:.0} lookups/s ({:.2} ms/batch), \
             warm {warm:.0} lookups/s ({:.3} ms/batch)",
            BATCH as f64 * 1e3 / cold * callers as f64,
            BATCH as f64 * 1e3 / warm * callers as f64,
        );
    }

    // Clean up.
    let info = redis::IntoConnectionInfo::into_connection_info(args.redis_url.as_str())?;
    let mut conn = redis::Client::open(info)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = (base..base + USERS)
        .map(firstclick_model::user::redis_key)
        .collect();
    for chunk in keys.chunks(10_000) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<i64>(&mut conn)
            .await?;
    }
    Ok(())
}

/// Runs `rounds` batches on each of `callers` concurrent tasks; returns ids looked up and time.
async fn run(
    dir: &Arc<UserDirectory>,
    callers: usize,
    rounds: usize,
    batch: impl Fn(usize, usize) -> Vec<UserId> + Copy + Send + 'static,
) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut n = 0;
                for i in 0..rounds {
                    let ids = batch(caller, i);
                    let names = dir.names(&ids).await?;
                    assert!(names.values().all(Option::is_some));
                    n += ids.len();
                }
                Ok::<_, firstclick_redis::RedisError>(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total, start.elapsed()))
}
