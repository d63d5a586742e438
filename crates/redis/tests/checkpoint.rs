//! The checkpoint store against a real Redis (`REDIS_URL`): the changelog, bases, the atomic
//! commit that switches bases and trims the changelog, reset, and what a foreign `meta` gives.

mod common;

use firstclick_redis::{CheckpointMeta, CheckpointStore, RedisArgs, RedisError, META_FORMAT};

fn store(name: &str) -> CheckpointStore {
    let args = RedisArgs {
        redis_url: common::redis_url(),
        ..RedisArgs::default()
    };
    CheckpointStore::new(&args, name).expect("store builds")
}

#[tokio::test]
async fn changelog_bases_commit_and_reset() {
    let s = store(&format!("test:{}", rand::random::<u64>()));
    assert_eq!(s.meta().await.expect("meta"), None);
    s.init().await.expect("init");
    let meta = s.meta().await.expect("meta").expect("created");
    assert_eq!(meta.format, META_FORMAT);
    assert_eq!(meta.generation, 0);
    // Deltas 0..5; a binary element of megabytes among them.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        s.append_log(&[b"d0".to_vec(), b"d1".to_vec()])
            .await
            .expect("rpush"),
        2
    );
    assert_eq!(
        s.append_log(std::slice::from_ref(&big))
            .await
            .expect("rpush"),
        3
    );
    assert_eq!(
        s.append_log(&[b"d3".to_vec(), b"d4".to_vec()])
            .await
            .expect("rpush"),
        5
    );
    // A base replayed from seq 3 on.
    s.drop_base(1).await.expect("fresh base");
    s.append_base(1, b"p0").await.expect("piece");
    s.append_base(1, b"p1").await.expect("piece");
    assert_eq!(s.base_len(1).await.expect("llen"), 2);
    s.commit_base(1, 3, 2, 4, 1234).await.expect("commit");
    let meta = s.meta().await.expect("meta").expect("meta");
    assert_eq!(
        meta,
        CheckpointMeta {
            format: META_FORMAT,
            generation: 1,
            log_head_seq: 3,
            base_from_seq: 3,
            base_pieces: 2,
            base_bytes: 4,
            base_written_ms: 1234,
        }
    );
    assert_eq!(
        s.log_len().await.expect("llen"),
        2,
        "deltas before 3 trimmed"
    );
    assert_eq!(
        s.read_log(0, 10).await.expect("lrange"),
        vec![b"d3".to_vec(), b"d4".to_vec()]
    );
    assert_eq!(
        s.read_base(1, 0, 16).await.expect("lrange"),
        vec![b"p0".to_vec(), b"p1".to_vec()]
    );
    // A second commit trims relative to the new head.
    s.append_log(&[b"d5".to_vec()]).await.expect("rpush");
    s.append_base(2, b"q0").await.expect("piece");
    s.commit_base(2, 5, 1, 2, 5678).await.expect("commit");
    assert_eq!(
        s.read_log(0, 10).await.expect("lrange"),
        vec![b"d5".to_vec()]
    );
    s.drop_base(1).await.expect("drop old");
    assert_eq!(s.base_len(1).await.expect("llen"), 0);
    let deleted = s.reset().await.expect("reset");
    assert_eq!(deleted, 3, "meta, log, base 2");
    assert_eq!(s.meta().await.expect("meta"), None);
    assert_eq!(s.log_len().await.expect("llen"), 0);
}

#[tokio::test]
async fn a_changelog_without_meta_or_another_format_is_refused() {
    let s = store(&format!("test:{}", rand::random::<u64>()));
    s.append_log(&[b"d0".to_vec()]).await.expect("rpush");
    let e = s.meta().await.expect_err("log without meta");
    assert!(matches!(e, RedisError::Checkpoint { .. }), "{e}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("state reset --yes"), "{e}");
    s.reset().await.expect("reset");
    // A meta of a future format.
    let mut conn = redis::Client::open(common::redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("HSET")
        .arg(s.meta_key())
        .arg("format")
        .arg(9)
        .query_async::<()>(&mut conn)
        .await
        .expect("hset");
    let e = s.meta().await.expect_err("format 9");
    assert!(e.to_string().contains("format version 9"), "{e}");
    assert_eq!(s.reset().await.expect("reset of a foreign meta"), 1);
}

#[tokio::test]
async fn a_down_server_is_a_transient_error() {
    let args = RedisArgs {
        redis_url: "redis://127.0.0.1:1".into(),
        ..RedisArgs::default()
    };
    let s = CheckpointStore::new(&args, "k").expect("builds without connecting");
    let e = s
        .append_log(&[b"x".to_vec()])
        .await
        .expect_err("nothing listens on port 1");
    assert!(e.is_transient(), "{e}");
}
