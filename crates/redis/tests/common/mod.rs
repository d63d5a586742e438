//! Helpers shared by the integration tests: the server under test (`REDIS_URL`), private
//! `redis-server` processes for tests that count commands or cause outages, unique id ranges, and
//! a raw connection to look behind the directory's back.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firstclick_model::user::redis_key;
use firstclick_model::UserId;
use firstclick_redis::{CacheSettings, RedisArgs, Timeouts, UserDirectory};
use redis::aio::MultiplexedConnection;
use redis::IntoConnectionInfo;

/// The Redis server under test, from `REDIS_URL`. Panics when unset: these tests must not pass
/// silently without a server.
pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL is not set. These tests need a real redis-server, e.g.\n  \
             redis-server --port 6390 --save \"\" --appendonly no --daemonize yes\n  \
             REDIS_URL=redis://127.0.0.1:6390 cargo test -p firstclick-redis"
        )
    })
}

/// A base id no other test run uses: ids `base..base + 1_000_000` are this test's own.
pub(crate) fn unique_base_id() -> UserId {
    // 2^31 ranges of 2^20 ids, far above the ids the data generator writes.
    (1i64 << 40) + (i64::from(rand::random::<u32>() >> 1) << 20)
}

/// A directory on `url` with the given TTL and default timeouts.
pub(crate) fn directory(url: &str, ttl: Duration) -> UserDirectory {
    let args = RedisArgs {
        redis_url: url.to_owned(),
        ..RedisArgs::default()
    };
    UserDirectory::with_settings(
        args.connection_info().expect("test URL parses"),
        CacheSettings {
            ttl,
            capacity: 1_000_000,
        },
        Timeouts::default(),
    )
    .expect("directory builds")
}

/// A plain connection to `url`, to write or inspect data behind the directory's back.
pub(crate) async fn raw(url: &str) -> MultiplexedConnection {
    let info = url.into_connection_info().expect("test URL parses");
    redis::Client::open(info)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"))
}

/// Deletes the keys of `ids`.
pub(crate) async fn delete_users(
    conn: &mut MultiplexedConnection,
    ids: impl IntoIterator<Item = UserId>,
) {
    let keys: Vec<String> = ids.into_iter().map(redis_key).collect();
    for chunk in keys.chunks(1000) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<i64>(conn)
            .await
            .expect("DEL");
    }
}

/// The `field: value` lines of `INFO section`.
pub(crate) async fn info(
    conn: &mut MultiplexedConnection,
    section: &str,
) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// A number from `INFO stats`.
pub(crate) async fn stat(conn: &mut MultiplexedConnection, field: &str) -> u64 {
    let stats = info(conn, "stats").await;
    stats
        .get(field)
        .unwrap_or_else(|| panic!("INFO stats has no {field}"))
        .parse()
        .expect("numeric stat")
}

/// Calls of `command` so far, from `INFO commandstats` (0 if never called).
pub(crate) async fn command_calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let stats = info(conn, "commandstats").await;
    stats
        .get(&format!("cmdstat_{command}"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .map(|n| n.parse().expect("numeric calls"))
        .unwrap_or(0)
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A private `redis-server` child process (binary from `REDIS_SERVER`, default `redis-server`),
/// killed when dropped.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a fresh port and waits until it accepts connections.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut server = RedisServer {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with empty data.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} (set REDIS_SERVER to the redis-server binary): {e}")
            });
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not accept connections within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to the server process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server cannot die of SIGKILL any slower, but make sure it is not stopped.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}
