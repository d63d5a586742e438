//! What the service benchmarks (`latency`, `scale_out`) share: the services' addresses, their
//! flags, and the clean-up of the users they write into the shared Redis.
#![allow(dead_code)]

/// A service address from the environment; panics with what to run when it is unset.
pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/dev-up and `source .dev/env` first")
    })
}

/// The value after `name` on the command line, or `default`.
pub(crate) fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

/// Deletes users 1..=n from the Redis at `url`: the tests that share REDIS_URL count on ids
/// above their own users being unknown.
pub(crate) async fn forget_users(url: &str, n: u32) {
    let client = redis::Client::open(url).expect("REDIS_URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let keys: Vec<String> = (1..=n).map(|i| format!("user_{i}")).collect();
    for chunk in keys.chunks(1_000) {
        let _: i64 = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .expect("DEL users");
    }
}
