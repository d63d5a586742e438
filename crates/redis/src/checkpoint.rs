//! [`CheckpointStore`]: the streaming engine's checkpoints, one Redis string per pipeline.
//!
//! A checkpoint is written whole with `SET` (atomic: a reader sees the old or the new one, never
//! a mix) and read back with `GET` at start-up. Its bytes are opaque here; the streaming service
//! decides the encoding. Writes are bounded in time like every other call of this crate, with a
//! longer response bound because a checkpoint can be megabytes.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::args::RedisArgs;
use crate::directory::{connection_manager, Timeouts};
use crate::error::RedisError;

/// Reads and writes the checkpoint of one pipeline under one key.
pub struct CheckpointStore {
    conn: ConnectionManager,
    addr: String,
    key: String,
    timeouts: Timeouts,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("addr", &self.addr)
            .field("key", &self.key)
            .finish()
    }
}

impl CheckpointStore {
    /// A store for `key` on the server the flags name. Does not connect yet.
    pub fn new(args: &RedisArgs, key: impl Into<String>) -> Result<Self, RedisError> {
        let timeouts = Timeouts {
            response: Duration::from_secs(30),
            operation: Duration::from_secs(60),
            ..Timeouts::default()
        };
        let (conn, addr) = connection_manager(args.connection_info()?, &timeouts)?;
        Ok(CheckpointStore {
            conn,
            addr,
            key: key.into(),
            timeouts,
        })
    }

    /// The key the checkpoint lives under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the checkpoint with `bytes`.
    pub async fn save(&self, bytes: &[u8]) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key).arg(bytes);
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    /// The last checkpoint written, if any.
    pub async fn load(&self) -> Result<Option<Vec<u8>>, RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(&self.key);
        self.bounded(cmd.query_async::<Option<Vec<u8>>>(&mut conn))
            .await
    }

    /// Deletes the checkpoint (a fresh start).
    pub async fn clear(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&self.key);
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let start = Instant::now();
        match tokio::time::timeout(self.timeouts.operation, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisError::from_redis(
                &self.addr,
                e,
                self.timeouts.response,
            )),
            Err(_) => Err(RedisError::Timeout {
                addr: self.addr.clone(),
                timeout: start.elapsed(),
            }),
        }
    }
}
