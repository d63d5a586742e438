//! The checkpoint store against a real Redis (`REDIS_URL`).

mod common;

use firstclick_redis::{CheckpointStore, RedisArgs};

fn store(key: &str) -> CheckpointStore {
    let args = RedisArgs {
        redis_url: common::redis_url(),
        ..RedisArgs::default()
    };
    CheckpointStore::new(&args, key).expect("store builds")
}

#[tokio::test]
async fn save_load_overwrite_clear() {
    let key = format!("firstclick:test:checkpoint:{}", rand::random::<u64>());
    let s = store(&key);
    assert_eq!(s.load().await.expect("load"), None);
    s.save(b"first").await.expect("save");
    assert_eq!(
        s.load().await.expect("load").as_deref(),
        Some(&b"first"[..])
    );
    // Megabytes, binary, replaced whole.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    s.save(&big).await.expect("save big");
    assert_eq!(s.load().await.expect("load big"), Some(big));
    s.clear().await.expect("clear");
    assert_eq!(s.load().await.expect("load"), None);
}

#[tokio::test]
async fn a_down_server_is_a_transient_error() {
    let args = RedisArgs {
        redis_url: "redis://127.0.0.1:1".into(),
        ..RedisArgs::default()
    };
    let s = CheckpointStore::new(&args, "k").expect("builds without connecting");
    let e = s.save(b"x").await.expect_err("nothing listens on port 1");
    assert!(e.is_transient(), "{e}");
}
