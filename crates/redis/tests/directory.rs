//! `UserDirectory` against the redis-server of `REDIS_URL`: writes and lookups round-trip, the
//! cache answers repeated and unknown ids, expires, and odd data does not break a batch.
//! Every test works in its own random id range.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use firstclick_model::user::redis_key;
use firstclick_model::UserId;
use firstclick_redis::{RedisArgs, UserDirectory};

#[tokio::test]
async fn put_then_names_round_trip() {
    let url = redis_url();
    let dir = directory(&url, Duration::from_secs(60));
    dir.wait_until_ready(Duration::from_secs(5)).await.unwrap();
    let base = unique_base_id();
    let names = [
        "Ann Smith",
        "Zoë Åström-Ñúñez",
        "李小龙",
        "Ольга 🙂",
        "",
        "tab\there \"quoted\" \\ back",
    ];
    let users: Vec<(UserId, String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (base + i as i64, n.to_string(), format!("pw-{i}")))
        .collect();
    dir.put_users(&users).await.unwrap();

    let unknown = [base + 100, base + 101];
    let mut ids: Vec<UserId> = users.iter().map(|u| u.0).collect();
    ids.extend(unknown);
    ids.push(base); // duplicates are answered once
    let got = dir.names(&ids).await.unwrap();

    let mut want: HashMap<UserId, Option<String>> = users
        .iter()
        .map(|(id, n, _)| (*id, Some(n.clone())))
        .collect();
    want.extend(unknown.iter().map(|&id| (id, None)));
    assert_eq!(got, want);

    // The password was written next to the name (and is not part of any answer).
    let mut conn = raw(&url).await;
    let pw: String = redis::cmd("HGET")
        .arg(redis_key(base + 2))
        .arg("password")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pw, "pw-2");
    assert!(got.values().flatten().all(|n| !n.starts_with("pw-")));
    let stats = dir.stats();
    assert_eq!((stats.cache_misses, stats.lookups), (8, 1), "{stats:?}");
    delete_users(&mut conn, ids).await;
}

#[tokio::test]
async fn missing_user_name_field_is_none_and_unknown_users_are_cached() {
    let url = redis_url();
    let dir = directory(&url, Duration::from_secs(60));
    let base = unique_base_id();
    let mut conn = raw(&url).await;
    // A user hash with a password but no user_name.
    redis::cmd("HSET")
        .arg(redis_key(base))
        .arg("password")
        .arg("x")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    let ids = [base, base + 1];
    let got = dir.names(&ids).await.unwrap();
    assert_eq!(got, HashMap::from([(base, None), (base + 1, None)]));
    let before = dir.stats();

    // Asked again: both answered from the cache, no second lookup.
    let again = dir.names(&ids).await.unwrap();
    assert_eq!(again, got);
    let after = dir.stats();
    assert_eq!(
        after.lookups, before.lookups,
        "unknown users must not hit Redis again"
    );
    assert_eq!(after.cache_hits, before.cache_hits + 2);
    assert_eq!(after.cache_misses, before.cache_misses);
    delete_users(&mut conn, ids).await;
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_none_and_does_not_fail_the_batch() {
    let url = redis_url();
    let dir = directory(&url, Duration::from_secs(60));
    let base = unique_base_id();
    let mut conn = raw(&url).await;
    redis::cmd("SET")
        .arg(redis_key(base))
        .arg("not a hash")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    dir.put_users(&[(base + 1, "Bo".into(), "pw".into())])
        .await
        .unwrap();
    let got = dir.names(&[base, base + 1]).await.unwrap();
    assert_eq!(
        got,
        HashMap::from([(base, None), (base + 1, Some("Bo".into()))])
    );
    assert_eq!(dir.stats().wrong_type, 1);
    delete_users(&mut conn, [base, base + 1]).await;
}

#[tokio::test]
async fn cached_names_expire_after_the_ttl_and_are_refetched() {
    let url = redis_url();
    let dir = directory(&url, Duration::from_secs(2));
    let base = unique_base_id();
    let mut conn = raw(&url).await;
    dir.put_users(&[(base, "old".into(), "pw".into())])
        .await
        .unwrap();
    assert_eq!(
        dir.names(&[base]).await.unwrap()[&base].as_deref(),
        Some("old")
    );

    // Renamed behind the directory's back: the cache still answers the old name...
    redis::cmd("HSET")
        .arg(redis_key(base))
        .arg("user_name")
        .arg("new")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        dir.names(&[base]).await.unwrap()[&base].as_deref(),
        Some("old")
    );
    assert_eq!(dir.stats().lookups, 1);

    // ...until the TTL has passed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        dir.names(&[base]).await.unwrap()[&base].as_deref(),
        Some("new")
    );
    let stats = dir.stats();
    assert_eq!(
        (stats.lookups, stats.cache_hits, stats.cache_misses),
        (2, 1, 2)
    );
    delete_users(&mut conn, [base]).await;
}

#[tokio::test]
async fn put_users_writes_in_batches_and_forgets_cached_names() {
    let url = redis_url();
    let dir = directory(&url, Duration::from_secs(60));
    let base = unique_base_id();
    let ids: Vec<UserId> = (base..base + 2_500).collect();
    // Cached as unknown first...
    let before = dir.names(&ids).await.unwrap();
    assert!(before.values().all(Option::is_none));
    // ...then written (three batches): the cache must not hide the new names.
    let users: Vec<_> = ids
        .iter()
        .map(|&id| (id, format!("user {id}"), format!("secret {id}")))
        .collect();
    dir.put_users(&users).await.unwrap();
    let after = dir.names(&ids).await.unwrap();
    assert_eq!(after.len(), ids.len());
    for id in &ids {
        assert_eq!(after[id], Some(format!("user {id}")));
    }
    let mut conn = raw(&url).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(ids.iter().map(|&id| redis_key(id)).collect::<Vec<_>>())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 2_500);
    delete_users(&mut conn, ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_directory() {
    let url = redis_url();
    let dir = Arc::new(directory(&url, Duration::from_secs(60)));
    let base = unique_base_id();
    let users: Vec<_> = (0..4_250)
        .map(|i| (base + i, format!("n{i}"), "pw".to_string()))
        .collect();
    dir.put_users(&users).await.unwrap();

    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let dir = dir.clone();
            tokio::spawn(async move {
                // Overlapping slices: some ids are asked by two tasks at once.
                let ids: Vec<UserId> = (0..500).map(|i| base + t * 250 + i).collect();
                let got = dir.names(&ids).await.unwrap();
                for id in ids {
                    assert_eq!(got[&id], Some(format!("n{}", id - base)));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(dir.stats().errors, 0);
    let mut conn = raw(&url).await;
    delete_users(&mut conn, users.iter().map(|u| u.0)).await;
}

#[tokio::test]
async fn the_directory_is_built_from_the_flags() {
    let url = redis_url();
    let args = RedisArgs {
        redis_url: url.clone(),
        user_cache_ttl_secs: 60,
        user_cache_capacity: 10,
        ..RedisArgs::default()
    };
    let dir = UserDirectory::new(&args).unwrap();
    dir.wait_until_ready(Duration::from_secs(5)).await.unwrap();
    let base = unique_base_id();
    let ids: Vec<UserId> = (base..base + 50).collect();
    dir.names(&ids).await.unwrap();
    assert_eq!(dir.stats().cache_entries, 10, "capacity bounds the cache");
}
