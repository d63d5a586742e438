//! Scale-out against real servers, each test on the single redis-server (`REDIS_URL`) AND on a
//! 3-master Redis Cluster (`REDIS_CLUSTER_URL`, comma-separated seeds; `scripts/dev-up
//! redis-cluster` starts one): user lookups across slots, the checkpoint round trip, leases
//! (acquire, renew, release, expiry, tokens), heartbeats, the layout, and fenced writes.
//! Both variables must be set: these tests must not pass without a server.

mod common;

use std::time::{Duration, Instant};

use firstclick_model::UserId;
use firstclick_redis::{
    keys, partition_checkpoint_name, CacheSettings, CheckpointStore, LeaseStore, RedisArgs,
    RedisConnection, RedisError, Timeouts, UserDirectory,
};

/// The two deployments under test: ("single", args) and ("cluster", args).
fn targets() -> Vec<(&'static str, RedisArgs)> {
    let cluster = std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_URL is not set. These tests need a Redis Cluster too: \
             scripts/dev-up redis-cluster && source .dev/env"
        )
    });
    vec![
        (
            "single",
            RedisArgs {
                redis_url: common::redis_url(),
                ..RedisArgs::default()
            },
        ),
        (
            "cluster",
            RedisArgs {
                redis_url: cluster,
                ..RedisArgs::default()
            },
        ),
    ]
}

fn unique(what: &str) -> String {
    format!("test:{what}:{}", rand::random::<u64>())
}

/// Deletes `keys` one command each (they may be in different slots).
async fn delete(args: &RedisArgs, keys: impl IntoIterator<Item = String>) {
    let (mut conn, _) = RedisConnection::from_args(args, &Timeouts::default()).expect("conn");
    for key in keys {
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<i64>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("DEL {key}: {e}"));
    }
}

/// Every key of deployment `name` with `partitions` partitions (bases up to 3).
fn deployment_keys(name: &str, partitions: u32) -> Vec<String> {
    let mut all = vec![keys::workers_key(name), keys::layout_key(name)];
    for p in 0..partitions {
        let n = partition_checkpoint_name(name, p, partitions);
        all.extend([
            keys::lease_key(&n),
            keys::fence_key(&n),
            keys::meta_key(&n),
            keys::log_key(&n),
        ]);
        all.extend((0..=3).map(|g| keys::base_key(&n, g)));
    }
    all
}

#[tokio::test]
async fn user_lookups_span_slots_and_nodes() {
    for (target, args) in targets() {
        let dir = UserDirectory::with_args(
            &args,
            CacheSettings {
                ttl: Duration::from_secs(60),
                capacity: 1_000_000,
            },
            Timeouts::default(),
        )
        .expect("directory");
        assert_eq!(dir.is_cluster(), target == "cluster");
        let base = common::unique_base_id();
        let ids: Vec<UserId> = (base..base + 10_000).collect();
        let users: Vec<_> = ids
            .iter()
            .step_by(2)
            .map(|&id| (id, format!("name {id}"), "pw".to_string()))
            .collect();
        dir.put_users(&users).await.expect("put_users");
        // One key of the wrong type among them answers None, not an error.
        let odd = base + 10_001;
        let (mut conn, _) = RedisConnection::from_args(&args, &Timeouts::default()).unwrap();
        redis::cmd("SET")
            .arg(firstclick_model::user::redis_key(odd))
            .arg("x")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let mut asked = ids.clone();
        asked.push(odd);

        let start = Instant::now();
        let got = dir.names(&asked).await.expect("names");
        let cold = start.elapsed();
        eprintln!("{target}: 10,001 cold HGET lookups in one names() call: {cold:?}");
        assert_eq!(got.len(), 10_001, "{target}");
        for (i, id) in ids.iter().enumerate() {
            let want = (i % 2 == 0).then(|| format!("name {id}"));
            assert_eq!(got[id], want, "{target}: id {id}");
        }
        assert_eq!(got[&odd], None, "{target}");
        assert_eq!(dir.stats().wrong_type, 1, "{target}");
        assert_eq!(dir.stats().lookups, 1, "{target}");
        dir.ping().await.expect("ping");

        delete(
            &args,
            asked
                .iter()
                .map(|&id| firstclick_model::user::redis_key(id)),
        )
        .await;
    }
}

#[tokio::test]
async fn a_cluster_batch_is_one_pipeline_per_node() {
    let (_, args) = targets().pop().expect("cluster");
    let dir = UserDirectory::new(&args).expect("directory");
    let base = common::unique_base_id();
    let ids: Vec<UserId> = (base..base + 3_000).collect();
    let users: Vec<_> = ids
        .iter()
        .map(|&id| (id, format!("n{id}"), "pw".to_string()))
        .collect();
    dir.put_users(&users).await.expect("put_users");
    // Each node's socket reads: pipelined, 1,000 HGETs arrive in a handful of buffers; one by
    // one they would be about 1,000 reads per node.
    let seeds = args.seed_urls();
    let mut conns = Vec::new();
    for url in &seeds {
        conns.push(common::raw(url).await);
    }
    let mut before = Vec::new();
    for c in &mut conns {
        before.push(common::stat(c, "total_reads_processed").await);
    }
    let got = dir.names(&ids).await.expect("names");
    assert_eq!(got.len(), 3_000);
    assert!(got.values().all(Option::is_some));
    for (i, c) in conns.iter_mut().enumerate() {
        let reads = common::stat(c, "total_reads_processed").await - before[i];
        eprintln!(
            "cluster node {}: {reads} socket reads for its share of 3,000 HGET",
            seeds[i]
        );
        assert!(
            reads < 100,
            "node {}: {reads} reads, not pipelined",
            seeds[i]
        );
    }
    delete(
        &args,
        ids.iter().map(|&id| firstclick_model::user::redis_key(id)),
    )
    .await;
}

#[tokio::test]
async fn checkpoint_round_trip() {
    for (target, args) in targets() {
        let s = CheckpointStore::new(&args, unique("ckpt")).expect("store");
        s.init().await.expect("init");
        assert_eq!(
            s.append_log(&[b"d0".to_vec(), b"d1".to_vec(), b"d2".to_vec()])
                .await
                .expect("append_log"),
            3,
            "{target}"
        );
        s.drop_base(1).await.expect("drop_base");
        s.append_base(1, b"p0").await.expect("append_base");
        s.commit_base(1, 2, 1, 2, 99).await.expect("commit_base");
        let meta = s.meta().await.expect("meta").expect("exists");
        assert_eq!(
            (meta.generation, meta.log_head_seq, meta.base_written_ms),
            (1, 2, 99),
            "{target}"
        );
        assert_eq!(
            s.read_log(0, 10).await.expect("read"),
            vec![b"d2".to_vec()],
            "{target}"
        );
        assert_eq!(
            s.read_base(1, 0, 10).await.expect("read"),
            vec![b"p0".to_vec()]
        );
        assert_eq!(
            s.reset().await.expect("reset"),
            3,
            "{target}: meta, log, base 1"
        );
        assert_eq!(s.meta().await.expect("meta"), None, "{target}");
    }
}

#[tokio::test]
async fn leases_acquire_renew_release_and_expire() {
    for (target, args) in targets() {
        let name = unique("lease");
        let a = LeaseStore::new(&args, &name, 4, "worker-a", 300).expect("store");
        let b = LeaseStore::new(&args, &name, 4, "worker-b", 300).expect("store");
        assert_eq!(
            a.free_partitions().await.unwrap(),
            vec![0, 1, 2, 3],
            "{target}"
        );

        let t1 = a.acquire(2).await.unwrap().expect("free lease taken");
        assert_eq!(b.acquire(2).await.unwrap(), None, "{target}: held by a");
        assert_eq!(
            a.acquire(2).await.unwrap(),
            None,
            "{target}: a holds it already"
        );
        assert_eq!(
            a.free_partitions().await.unwrap(),
            vec![0, 1, 3],
            "{target}"
        );
        assert_eq!(
            a.holder(2).await.unwrap().as_deref(),
            Some(format!("worker-a {t1}").as_str())
        );

        // Renewals keep it alive past the ttl; b's renew of a's token is refused.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            assert!(a.renew(2, t1).await.unwrap(), "{target}");
        }
        assert!(!b.renew(2, t1).await.unwrap(), "{target}: not b's lease");
        assert!(!a.renew(2, t1 + 1).await.unwrap(), "{target}: wrong token");
        assert_eq!(b.acquire(2).await.unwrap(), None, "{target}: renewed");

        // Release: only the owner's token releases.
        assert!(!b.release(2, t1).await.unwrap(), "{target}");
        assert!(a.release(2, t1).await.unwrap(), "{target}");
        assert!(
            !a.release(2, t1).await.unwrap(),
            "{target}: already released"
        );
        let t2 = b.acquire(2).await.unwrap().expect("released lease taken");
        assert!(t2 > t1, "{target}: tokens only grow ({t1} then {t2})");

        // Expiry: b stops renewing; after the ttl a takes over with a larger token.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!b.renew(2, t2).await.unwrap(), "{target}: expired");
        assert_eq!(a.free_partitions().await.unwrap(), vec![0, 1, 2, 3]);
        let t3 = a.acquire(2).await.unwrap().expect("expired lease taken");
        assert!(t3 > t2, "{target}: {t2} then {t3}");
        delete(&args, deployment_keys(&name, 4)).await;
    }
}

#[tokio::test]
async fn heartbeats_count_live_workers() {
    for (target, args) in targets() {
        let name = unique("workers");
        let a = LeaseStore::new(&args, &name, 2, "worker-a", 300).expect("store");
        let b = LeaseStore::new(&args, &name, 2, "worker-b", 300).expect("store");
        assert_eq!(a.heartbeat().await.unwrap(), 1, "{target}");
        assert_eq!(b.heartbeat().await.unwrap(), 2, "{target}");
        assert_eq!(a.heartbeat().await.unwrap(), 2, "{target}");
        // b stops; a keeps beating; after b's ttl only a is left.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            a.heartbeat().await.unwrap();
        }
        assert_eq!(a.heartbeat().await.unwrap(), 1, "{target}: b expired");
        assert_eq!(b.heartbeat().await.unwrap(), 2, "{target}: b is back");
        b.leave().await.unwrap();
        assert_eq!(a.heartbeat().await.unwrap(), 1, "{target}: b left");
        // With nobody beating, the key itself goes away.
        a.leave().await.unwrap();
        let (mut conn, _) = RedisConnection::from_args(&args, &Timeouts::default()).unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(keys::workers_key(&name))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0, "{target}: empty set removed");
        delete(&args, deployment_keys(&name, 2)).await;
    }
}

#[tokio::test]
async fn a_different_layout_is_refused() {
    for (target, args) in targets() {
        let name = unique("layout");
        let eight = LeaseStore::new(&args, &name, 8, "w1", 1000).expect("store");
        eight.record_layout().await.expect("first records");
        eight.record_layout().await.expect("same P again");
        let four = LeaseStore::new(&args, &name, 4, "w2", 1000).expect("store");
        let err = four.record_layout().await.unwrap_err();
        match &err {
            RedisError::LayoutMismatch {
                recorded,
                configured,
                ..
            } => assert_eq!((*recorded, *configured), (8, 4), "{target}"),
            other => panic!("{target}: expected LayoutMismatch, got {other:?}"),
        }
        assert!(!err.is_transient());
        assert!(err.to_string().contains("PARTITIONS=8"), "{err}");
        delete(&args, deployment_keys(&name, 8)).await;
    }
}

#[tokio::test]
async fn a_stale_owner_writes_nothing() {
    for (target, args) in targets() {
        let name = unique("fence");
        let p = 1;
        let a = LeaseStore::new(&args, &name, 3, "worker-a", 300).expect("store");
        let b = LeaseStore::new(&args, &name, 3, "worker-b", 300).expect("store");
        let ckpt = a.partition_name(p);
        assert_eq!(ckpt, format!("{name}:p1"));

        let ta = a.acquire(p).await.unwrap().expect("a takes p");
        let store_a = CheckpointStore::new(&args, &ckpt)
            .unwrap()
            .with_fence(a.fence(p, ta));
        store_a.init().await.expect("a owns p: init passes");
        assert_eq!(store_a.append_log(&[b"a0".to_vec()]).await.unwrap(), 1);
        store_a.append_base(1, b"a-piece").await.expect("a's piece");

        // a pauses past its lease; b takes over.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let tb = b.acquire(p).await.unwrap().expect("b takes over");
        assert!(tb > ta, "{target}");
        let store_b = CheckpointStore::new(&args, &ckpt)
            .unwrap()
            .with_fence(b.fence(p, tb));

        // a wakes up: every write is refused and writes nothing.
        let refused = [
            store_a.append_log(&[b"stale".to_vec()]).await.map(|_| ()),
            store_a.append_base(1, b"stale").await,
            store_a.commit_base(1, 1, 1, 5, 7).await,
            store_a.drop_base(1).await,
            store_a.init().await,
            store_a.reset().await.map(|_| ()),
        ];
        for (i, r) in refused.into_iter().enumerate() {
            let e = r.expect_err("a stale write passed");
            assert!(e.is_fenced(), "{target}: write {i}: {e}");
            assert!(!e.is_transient(), "{target}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("lease of partition {ckpt} is gone (token {ta})")),
                "{msg}"
            );
            assert!(msg.contains(&format!("worker-b {tb}")), "{msg}");
        }
        assert_eq!(
            store_b.log_len().await.unwrap(),
            1,
            "{target}: nothing appended"
        );
        assert_eq!(
            store_b.base_len(1).await.unwrap(),
            1,
            "{target}: base untouched"
        );
        assert_eq!(store_b.meta().await.unwrap().unwrap().generation, 0);

        // b's fenced writes pass.
        assert_eq!(
            store_b
                .append_log(&[b"b0".to_vec(), b"b1".to_vec()])
                .await
                .unwrap(),
            3
        );
        store_b.drop_base(1).await.unwrap();
        store_b.append_base(1, b"b-piece").await.unwrap();
        store_b.commit_base(1, 2, 1, 7, 11).await.unwrap();
        let meta = store_b.meta().await.unwrap().unwrap();
        assert_eq!((meta.generation, meta.log_head_seq), (1, 2), "{target}");
        assert_eq!(store_b.read_log(0, 10).await.unwrap(), vec![b"b1".to_vec()]);
        assert_eq!(
            store_b.read_base(1, 0, 10).await.unwrap(),
            vec![b"b-piece".to_vec()]
        );

        // A lease that merely expired (nobody took it) refuses too: the fence needs the value.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let e = store_b.append_log(&[b"late".to_vec()]).await.unwrap_err();
        assert!(e.is_fenced(), "{target}: {e}");
        assert!(e.to_string().contains("holds nothing"), "{e}");

        // A fence of another partition is refused before anything is sent.
        let wrong = CheckpointStore::new(&args, &ckpt)
            .unwrap()
            .with_fence(b.fence(0, tb));
        let e = wrong.append_log(&[b"x".to_vec()]).await.unwrap_err();
        assert!(matches!(e, RedisError::Checkpoint { .. }), "{e}");
        // Still only b1 (the commit trimmed b0): neither refused write landed.
        assert_eq!(store_b.log_len().await.unwrap(), 1);

        // Unfenced, the store writes as before.
        let plain = CheckpointStore::new(&args, &ckpt).unwrap();
        assert_eq!(plain.append_log(&[b"p".to_vec()]).await.unwrap(), 2);
        plain.reset().await.unwrap();
        delete(&args, deployment_keys(&name, 3)).await;
    }
}

#[tokio::test]
async fn many_and_large_elements_pass_a_fence() {
    for (target, args) in targets() {
        let name = unique("fence-big");
        let leases = LeaseStore::new(&args, &name, 1, "w", 10_000).expect("store");
        let token = leases.acquire(0).await.unwrap().expect("free");
        // P = 1: the partition's checkpoint keeps the deployment's own name.
        assert_eq!(leases.partition_name(0), name);
        let s = CheckpointStore::new(&args, &name)
            .unwrap()
            .with_fence(leases.fence(0, token));
        // More elements than Lua's unpack() takes at once, and one of 5 MB.
        let many: Vec<Vec<u8>> = (0..2_500u32).map(|i| i.to_le_bytes().to_vec()).collect();
        assert_eq!(s.append_log(&many).await.unwrap(), 2_500, "{target}");
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            s.append_log(std::slice::from_ref(&big)).await.unwrap(),
            2_501
        );
        assert_eq!(
            s.read_log(2_499, 1).await.unwrap(),
            vec![many[2_499].clone()]
        );
        assert_eq!(s.read_log(2_500, 1).await.unwrap(), vec![big]);
        assert_eq!(
            s.reset().await.unwrap(),
            1,
            "{target}: only the log existed"
        );
        assert!(leases.release(0, token).await.unwrap());
        delete(&args, deployment_keys(&name, 1)).await;
    }
}
