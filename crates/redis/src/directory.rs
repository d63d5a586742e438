//! [`UserDirectory`]: user names from the Redis hashes `user_{id}`, through a small TTL cache,
//! with every cache miss of a call fetched in one pipelined round trip; and bulk writes of users.
//!
//! One [`RedisConnection`] (multiplexed, reconnecting by itself; to one server or a Redis
//! Cluster) is shared by all callers. On a cluster the lookups of one call are pipelined per
//! node (`crate::connection`). Every operation is bounded in time ([`Timeouts`]), so an outage shows up
//! as an error within seconds and the caller can back off and retry; when the server returns, the
//! next calls reconnect without rebuilding anything.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use firstclick_model::user::redis_key;
use firstclick_model::UserId;
use redis::{Cmd, ConnectionInfo, Value};

use crate::args::RedisArgs;
use crate::cache::{CacheSettings, TtlCache};
use crate::connection::{self, PerKey, RedisConnection};
use crate::error::RedisError;

/// The hash field that holds a user's name.
pub(crate) const USER_NAME_FIELD: &str = "user_name";
/// The hash field that holds a user's password. Written by [`UserDirectory::put_users`], never
/// read.
pub(crate) const PASSWORD_FIELD: &str = "password";
/// Users written per pipelined round trip by [`UserDirectory::put_users`].
pub const PUT_BATCH: usize = 1000;

/// Time bounds of every Redis operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Bound on one connection attempt (TCP connect and handshake).
    pub connect: Duration,
    /// Bound on waiting for the replies of one command or pipeline.
    pub response: Duration,
    /// Connection attempts after the first one, with jittered exponential backoff (100 ms,
    /// 200 ms, ... at most 500 ms), before a call fails.
    pub reconnect_retries: usize,
    /// Hard bound on a whole call (`names`, one batch of `put_users`, one `wait_until_ready`
    /// probe), whatever happens inside.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(2),
            reconnect_retries: 2,
            operation: Duration::from_secs(5),
        }
    }
}

/// Counters for metrics. All are totals since the directory was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Distinct ids per call answered from the cache.
    pub cache_hits: u64,
    /// Distinct ids per call that had to be fetched from Redis.
    pub cache_misses: u64,
    /// Entries currently held by the cache (expired ones included until evicted).
    pub cache_entries: u64,
    /// Pipelined lookups sent to Redis (one per `names` call with misses).
    pub lookups: u64,
    /// Operations (lookups and writes) that failed.
    pub errors: u64,
    /// Keys `user_{id}` found holding something other than a hash, answered as `None`.
    pub wrong_type: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    lookups: AtomicU64,
    errors: AtomicU64,
    wrong_type: AtomicU64,
}

/// User names from Redis, cached. Cheap to share behind an `Arc`; all methods take `&self` and
/// concurrent callers share one multiplexed connection.
pub struct UserDirectory {
    conn: RedisConnection,
    per_key: PerKey,
    /// `host:port`, for messages (never the password).
    addr: String,
    timeouts: Timeouts,
    cache: Mutex<TtlCache<Option<String>>>,
    counters: Counters,
}

impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDirectory")
            .field("addr", &self.addr)
            .field("timeouts", &self.timeouts)
            .field("stats", &self.stats())
            .finish()
    }
}

impl UserDirectory {
    /// Builds a directory from the command-line flags, with default [`Timeouts`].
    ///
    /// Does not connect: the connection is opened by the first call (use
    /// [`UserDirectory::wait_until_ready`] to check the server at start-up), so a service can
    /// start while Redis is still down. Must be called inside a Tokio runtime.
    /// With several seed URLs in `--redis-url`, or `--redis-cluster`, it is a Redis Cluster
    /// client.
    pub fn new(args: &RedisArgs) -> Result<Self, RedisError> {
        Self::with_args(args, args.cache_settings(), Timeouts::default())
    }

    /// Like [`UserDirectory::new`], with explicit cache settings and timeouts.
    pub fn with_args(
        args: &RedisArgs,
        cache: CacheSettings,
        timeouts: Timeouts,
    ) -> Result<Self, RedisError> {
        let (conn, addr) = RedisConnection::from_args(args, &timeouts)?;
        Ok(Self::with_connection(conn, addr, cache, timeouts))
    }

    /// Builds a directory on one server from explicit settings. Does not connect (see
    /// [`UserDirectory::new`]).
    pub fn with_settings(
        info: ConnectionInfo,
        cache: CacheSettings,
        timeouts: Timeouts,
    ) -> Result<Self, RedisError> {
        let (conn, addr) = connection::single(info, &timeouts)?;
        Ok(Self::with_connection(conn, addr, cache, timeouts))
    }

    fn with_connection(
        conn: RedisConnection,
        addr: String,
        cache: CacheSettings,
        timeouts: Timeouts,
    ) -> Self {
        UserDirectory {
            conn,
            per_key: PerKey::default(),
            addr,
            timeouts,
            cache: Mutex::new(TtlCache::new(cache)),
            counters: Counters::default(),
        }
    }

    /// Whether this directory talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The names of `ids`: `Some(name)` for users with a `user_name`, `None` for unknown users
    /// and users without that field. Every id of `ids` is a key of the answer.
    ///
    /// Cached answers (including `None`) younger than the TTL are reused; all other ids are
    /// fetched in one pipelined round trip (`HGET user_{id} user_name` each; on a cluster one
    /// pipeline per node, concurrently). On error nothing is cached and the caller should retry later ([`RedisError::is_transient`]).
    pub async fn names(
        &self,
        ids: &[UserId],
    ) -> Result<HashMap<UserId, Option<String>>, RedisError> {
        let mut answer = HashMap::with_capacity(ids.len());
        let mut misses = Vec::new();
        {
            let now = Instant::now();
            let cache = self.lock_cache();
            let mut missed = HashSet::new();
            for &id in ids {
                if answer.contains_key(&id) || missed.contains(&id) {
                    continue;
                }
                match cache.get(id, now) {
                    Some(name) => {
                        answer.insert(id, name);
                    }
                    None => {
                        missed.insert(id);
                        misses.push(id);
                    }
                }
            }
        }
        self.counters
            .hits
            .fetch_add(answer.len() as u64, Ordering::Relaxed);
        self.counters
            .misses
            .fetch_add(misses.len() as u64, Ordering::Relaxed);
        if misses.is_empty() {
            return Ok(answer);
        }

        // Per-command errors come back as values: one odd key must not fail the whole batch.
        let keys: Vec<String> = misses.iter().map(|&id| redis_key(id)).collect();
        let cmds: Vec<Cmd> = keys
            .iter()
            .map(|key| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(key).arg(USER_NAME_FIELD);
                cmd
            })
            .collect();
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let replies = self.run_per_key(&keys, &cmds).await?;
        if replies.len() != misses.len() {
            return Err(self.fail(RedisError::UnexpectedReply {
                addr: self.addr.clone(),
                what: format!("a pipeline of {} HGET", misses.len()),
                expected: "one reply per command",
                found: format!("{} replies", replies.len()),
            }));
        }
        let mut fetched = Vec::with_capacity(misses.len());
        for (&id, reply) in misses.iter().zip(replies) {
            fetched.push((id, self.name_from_reply(id, reply)?));
        }

        let now = Instant::now();
        let mut cache = self.lock_cache();
        for (id, name) in fetched {
            cache.insert(id, name.clone(), now);
            answer.insert(id, name);
        }
        Ok(answer)
    }

    /// Writes users as hashes `user_{id}` with fields `user_name` and `password` (HSET, so other
    /// fields are kept), in pipelined batches of [`PUT_BATCH`]. Cached names of the written ids
    /// are forgotten. On error, earlier batches stay written; writing again is harmless.
    pub async fn put_users(&self, users: &[(UserId, String, String)]) -> Result<(), RedisError> {
        for batch in users.chunks(PUT_BATCH) {
            let keys: Vec<String> = batch.iter().map(|(id, _, _)| redis_key(*id)).collect();
            let cmds: Vec<Cmd> = keys
                .iter()
                .zip(batch)
                .map(|(key, (_, name, password))| {
                    let mut cmd = redis::cmd("HSET");
                    cmd.arg(key)
                        .arg(USER_NAME_FIELD)
                        .arg(name)
                        .arg(PASSWORD_FIELD)
                        .arg(password);
                    cmd
                })
                .collect();
            let replies = self.run_per_key(&keys, &cmds).await?;
            // The first refused HSET (WRONGTYPE, OOM...) fails the batch, as a plain pipeline
            // would.
            if let Some(Value::ServerError(e)) = replies
                .into_iter()
                .find(|r| matches!(r, Value::ServerError(_)))
            {
                return Err(self.fail(RedisError::from_redis(
                    &self.addr,
                    e.into(),
                    self.timeouts.response,
                )));
            }
            let mut cache = self.lock_cache();
            for (id, _, _) in batch {
                cache.remove(*id);
            }
        }
        Ok(())
    }

    /// Sends one `PING`, bounded like every other call ([`Timeouts::operation`]).
    pub async fn ping(&self) -> Result<(), RedisError> {
        let pong = self
            .bounded(self.timeouts.operation, async {
                let mut conn = self.conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError::UnexpectedReply {
                addr: self.addr.clone(),
                what: "PING".into(),
                expected: "PONG",
                found: truncate(&pong),
            })
        }
    }

    /// Reads user `id`'s `user_name` with one `HGET`, past the cache (nothing is cached or
    /// counted): the service's checks use it to see that the user hashes can be read.
    pub async fn read_name_uncached(&self, id: UserId) -> Result<Option<String>, RedisError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(redis_key(id)).arg(USER_NAME_FIELD);
        let reply = self
            .bounded(self.timeouts.operation, async {
                let mut conn = self.conn.clone();
                cmd.query_async::<Value>(&mut conn).await
            })
            .await?;
        self.name_from_reply(id, reply)
    }

    /// Waits until Redis answers `PING`, probing every 100 ms, for at most `timeout`.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), RedisError> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let probe = self.bounded(left.min(self.timeouts.operation), async {
                let mut conn = self.conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await
            });
            let last = match probe.await {
                Ok(pong) if pong == "PONG" => return Ok(()),
                Ok(other) => RedisError::UnexpectedReply {
                    addr: self.addr.clone(),
                    what: "PING".into(),
                    expected: "PONG",
                    found: truncate(&other),
                },
                Err(e) => e,
            };
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() || !last.is_transient() {
                return Err(RedisError::NotReady {
                    addr: self.addr.clone(),
                    waited: start.elapsed(),
                    last: Box::new(last),
                });
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Cache and Redis counters, for metrics.
    pub fn stats(&self) -> DirectoryStats {
        DirectoryStats {
            cache_hits: self.counters.hits.load(Ordering::Relaxed),
            cache_misses: self.counters.misses.load(Ordering::Relaxed),
            cache_entries: self.lock_cache().len() as u64,
            lookups: self.counters.lookups.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            wrong_type: self.counters.wrong_type.load(Ordering::Relaxed),
        }
    }

    /// Sends `cmds` (command `i` touches `keys[i]`) pipelined and returns their replies (errors
    /// of single commands as values), within [`Timeouts::operation`]. A connection found broken
    /// (server restarted since the last call) is retried once on the fresh connection the
    /// manager opens; all commands sent here are idempotent, so a repeat is harmless.
    async fn run_per_key(&self, keys: &[String], cmds: &[Cmd]) -> Result<Vec<Value>, RedisError> {
        let result = self
            .bounded(self.timeouts.operation, async {
                match self.per_key.run(&self.conn, keys, cmds).await {
                    Err(e) if e.is_connection_dropped() => {
                        tracing::debug!(addr = %self.addr, error = %e, "Redis connection lost, retrying once on a new connection");
                        self.per_key.run(&self.conn, keys, cmds).await
                    }
                    other => other,
                }
            })
            .await;
        result.map_err(|e| self.fail(e))
    }

    /// Runs `fut` for at most `limit`, classifying its errors.
    async fn bounded<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisError::from_redis(
                &self.addr,
                e,
                self.timeouts.response,
            )),
            Err(_) => Err(RedisError::Timeout {
                addr: self.addr.clone(),
                timeout: limit,
            }),
        }
    }

    fn fail(&self, e: RedisError) -> RedisError {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        e
    }

    fn name_from_reply(&self, id: UserId, reply: Value) -> Result<Option<String>, RedisError> {
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(match String::from_utf8(bytes) {
                Ok(name) => name,
                Err(e) => {
                    tracing::warn!(key = %redis_key(id), "user_name is not valid UTF-8; invalid bytes replaced");
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                }
            })),
            Value::SimpleString(name) => Ok(Some(name)),
            Value::VerbatimString { text, .. } => Ok(Some(text)),
            Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                // A data problem, not an outage: answer "no name" instead of stalling the stream.
                self.counters.wrong_type.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %redis_key(id), "key is not a hash; user treated as unknown");
                Ok(None)
            }
            Value::ServerError(e) => {
                // LOADING, BUSY, NOAUTH...: the server cannot answer now; fail the whole call.
                let source: redis::RedisError = e.into();
                Err(self.fail(RedisError::from_redis(
                    &self.addr,
                    source,
                    self.timeouts.response,
                )))
            }
            other => Err(self.fail(RedisError::UnexpectedReply {
                addr: self.addr.clone(),
                what: format!("HGET {} {USER_NAME_FIELD}", redis_key(id)),
                expected: "a string or nil",
                found: truncate(&format!("{other:?}")),
            })),
        }
    }

    fn lock_cache(&self) -> MutexGuard<'_, TtlCache<Option<String>>> {
        // The cache holds no invariant a panicking holder could break halfway.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 120;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
