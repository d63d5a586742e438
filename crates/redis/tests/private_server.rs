//! Tests that need a redis-server of their own (started here as a child process): counting the
//! server's commands and reads without other tests' traffic, killing and pausing the server,
//! and requiring a password.

mod common;

use std::time::{Duration, Instant};

use common::*;
use firstclick_model::UserId;
use firstclick_redis::{RedisArgs, RedisError, UserDirectory};

/// Longest a call may take to report an outage.
const FAIL_FAST: Duration = Duration::from_secs(6);

#[tokio::test]
async fn ten_thousand_ids_cost_one_round_trip_and_a_warm_cache_costs_none() {
    let server = RedisServer::start(&[]);
    let url = server.url();
    let dir = directory(&url, Duration::from_secs(60));
    let base = unique_base_id();
    let ids: Vec<UserId> = (base..base + 10_000).collect();
    // Half of them exist.
    let users: Vec<_> = ids
        .iter()
        .step_by(2)
        .map(|&id| (id, format!("name {id}"), "pw".to_string()))
        .collect();
    dir.put_users(&users).await.unwrap();
    let mut conn = raw(&url).await;

    // What inspecting costs by itself, so it can be subtracted.
    let c0 = stat(&mut conn, "total_commands_processed").await;
    let c1 = stat(&mut conn, "total_commands_processed").await;
    let info_cost = c1 - c0;

    let hget0 = command_calls(&mut conn, "hget").await;
    let reads0 = stat(&mut conn, "total_reads_processed").await;
    let got = dir.names(&ids).await.unwrap();
    let reads1 = stat(&mut conn, "total_reads_processed").await;
    let hget1 = command_calls(&mut conn, "hget").await;

    assert_eq!(got.len(), 10_000);
    for (i, id) in ids.iter().enumerate() {
        let want = (i % 2 == 0).then(|| format!("name {id}"));
        assert_eq!(got[id], want, "id {id}");
    }
    assert_eq!(
        hget1 - hget0,
        10_000,
        "exactly one HGET per id, nothing else"
    );
    // Sent one by one, 10,000 HGETs are 10,000 socket reads on the server; pipelined they arrive
    // in a few dozen buffers (16 KiB each). The two INFO calls add their own reads.
    let reads = reads1 - reads0;
    eprintln!("server socket reads for 10,000 pipelined HGET: {reads}");
    assert!(
        reads < 200,
        "{reads} server reads: the lookups were not pipelined"
    );
    assert_eq!(dir.stats().lookups, 1);

    // Warm: the same ids again cost zero Redis commands.
    let before = stat(&mut conn, "total_commands_processed").await;
    let again = dir.names(&ids).await.unwrap();
    let after = stat(&mut conn, "total_commands_processed").await;
    assert_eq!(again, got);
    assert_eq!(
        after - before,
        info_cost,
        "a warm call sent commands to Redis"
    );
    let stats = dir.stats();
    assert_eq!(
        (stats.cache_hits, stats.cache_misses, stats.lookups),
        (10_000, 10_000, 1)
    );
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_same_directory_recovers() {
    let mut server = RedisServer::start(&[]);
    let url = server.url();
    let dir = directory(&url, Duration::from_secs(60));
    dir.wait_until_ready(Duration::from_secs(5)).await.unwrap();
    let base = unique_base_id();
    dir.put_users(&[(base, "Ann".into(), "pw".into())])
        .await
        .unwrap();
    assert_eq!(
        dir.names(&[base]).await.unwrap()[&base].as_deref(),
        Some("Ann")
    );

    server.kill();

    // Uncached ids: a clear, transient error within seconds, on every call during the outage.
    for attempt in 0..3 {
        let start = Instant::now();
        let err = dir.names(&[base + 1 + attempt]).await.unwrap_err();
        let took = start.elapsed();
        eprintln!("outage call {attempt}: {took:?}: {err}");
        assert!(took < FAIL_FAST, "took {took:?} to report the outage");
        assert!(err.is_transient(), "{err}");
        assert!(
            matches!(
                err,
                RedisError::Unavailable { .. } | RedisError::Timeout { .. }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("127.0.0.1:{}", server.port)),
            "{err}"
        );
    }
    let start = Instant::now();
    assert!(dir
        .put_users(&[(base + 9, "x".into(), "y".into())])
        .await
        .is_err());
    assert!(start.elapsed() < FAIL_FAST);
    // Cached names are still answered.
    assert_eq!(
        dir.names(&[base]).await.unwrap()[&base].as_deref(),
        Some("Ann")
    );

    // Back on the same port (empty, no persistence): the same directory works again.
    server.restart();
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match dir.put_users(&[(base + 5, "Bo".into(), "pw".into())]).await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no recovery 10 s after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!(
        "recovered after {attempts} attempt(s), {:?}",
        start.elapsed()
    );
    let got = dir.names(&[base + 5, base + 6]).await.unwrap();
    assert_eq!(got[&(base + 5)].as_deref(), Some("Bo"));
    assert_eq!(got[&(base + 6)], None);
    // The first call after the restart found the old connection dead and retried on a new
    // one within the same call.
    assert_eq!(
        attempts, 1,
        "the directory needed {attempts} calls to recover"
    );
    assert!(dir.stats().errors >= 4);

    // A restart between two calls (the connection looks fine until it is used) costs no error.
    server.kill();
    server.restart();
    dir.put_users(&[(base + 7, "Cy".into(), "pw".into())])
        .await
        .unwrap();
    let got = dir.names(&[base + 7]).await.unwrap();
    assert_eq!(got[&(base + 7)].as_deref(), Some("Cy"));
}

#[tokio::test]
async fn a_frozen_server_times_out_and_answers_again_when_it_resumes() {
    let server = RedisServer::start(&[]);
    let url = server.url();
    let dir = directory(&url, Duration::from_secs(60));
    dir.wait_until_ready(Duration::from_secs(5)).await.unwrap();
    let base = unique_base_id();
    dir.put_users(&[(base, "Ann".into(), "pw".into())])
        .await
        .unwrap();

    server.signal("STOP");
    let start = Instant::now();
    let err = dir.names(&[base]).await.unwrap_err();
    let took = start.elapsed();
    eprintln!("frozen server: {took:?}: {err}");
    server.signal("CONT");
    assert!(
        took < FAIL_FAST,
        "took {took:?} to give up on a frozen server"
    );
    assert!(matches!(err, RedisError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());

    // The late replies of the timed-out call must not be mistaken for the next call's.
    let got = dir.names(&[base, base + 1]).await.unwrap();
    assert_eq!(got[&base].as_deref(), Some("Ann"));
    assert_eq!(got[&(base + 1)], None);
}

#[tokio::test]
async fn wait_until_ready_gives_up_after_its_timeout() {
    let port = free_port();
    let dir = directory(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_secs(60),
    );
    let start = Instant::now();
    let err = dir
        .wait_until_ready(Duration::from_millis(1500))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, RedisError::NotReady { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn the_password_flag_is_used_and_a_wrong_one_is_a_clear_error() {
    let server = RedisServer::start(&["--requirepass", "p@ss w0rd"]);
    let base = unique_base_id();

    let args = RedisArgs {
        redis_url: server.url(),
        redis_password: Some("p@ss w0rd".into()),
        ..RedisArgs::default()
    };
    let dir = UserDirectory::new(&args).unwrap();
    dir.wait_until_ready(Duration::from_secs(5)).await.unwrap();
    dir.put_users(&[(base, "Ann".into(), "pw".into())])
        .await
        .unwrap();
    assert_eq!(
        dir.names(&[base]).await.unwrap()[&base].as_deref(),
        Some("Ann")
    );

    for password in [Some("wrong"), None] {
        let args = RedisArgs {
            redis_url: server.url(),
            redis_password: password.map(Into::into),
            ..RedisArgs::default()
        };
        let dir = UserDirectory::new(&args).unwrap();
        let start = Instant::now();
        let err = dir.names(&[base]).await.unwrap_err();
        assert!(start.elapsed() < FAIL_FAST);
        let msg = err.to_string();
        eprintln!("password {password:?}: {msg}");
        assert!(matches!(err, RedisError::Auth { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(msg.contains("REDIS_PASSWORD"), "{msg}");
        assert!(!msg.contains("p@ss w0rd"), "{msg}");
        let err = dir
            .wait_until_ready(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, RedisError::NotReady { .. }), "{err:?}");
    }
}
