//! [`CheckpointStore`]: where the streaming worker's incremental checkpoints live in Redis
//! (docs/design.md §6).
//!
//! Three kinds of keys, all hash-tagged by the checkpoint's name so that they share one slot of
//! a Redis Cluster (multi-key scripts need that):
//! - `firstclick:{NAME}:meta`, a hash: format version, the current base's generation, the
//!   sequence number of the changelog's first element (`log_head_seq`) and of the first one a
//!   restore replays over the base (`base_from_seq`), the base's size and when it was written.
//! - `firstclick:{NAME}:log`, a list: the changelog, one delta per element, appended with
//!   `RPUSH` (one atomic call per checkpoint).
//! - `firstclick:{NAME}:base:GEN`, a list: the pieces of base `GEN`, appended while the worker
//!   goes on; switched in by one Lua script that updates `meta` and trims the changelog.
//!
//! **Fencing.** A store made [`CheckpointStore::with_fence`] (the partition's lease, from
//! [`crate::LeaseStore::fence`]) runs every write as one Lua script that first compares the
//! lease key (same hash slot) with the value of this worker's lease and refuses with
//! [`RedisError::Fenced`] when it differs, so a worker that lost its lease (paused past it)
//! can never write into the new owner's checkpoint, whatever the clocks say. The check and the
//! write are one atomic script: no other write can come between. Reads are not fenced, and a
//! store without a fence writes as before, without scripts or extra round trips.
//!
//! The element bytes are opaque here (`firstclick-checkpoint` owns the format); this module
//! owns the keys and the atomicity of each step. Calls are bounded in time like every other
//! call of this crate, with a longer response bound because elements can be megabytes.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;

use crate::args::RedisArgs;
use crate::connection::RedisConnection;
use crate::directory::Timeouts;
use crate::error::RedisError;
use crate::keys;
use crate::lease::Fence;

/// The checkpoint format version recorded in `meta` (the elements carry it too).
pub const META_FORMAT: u16 = 2;

/// Makes `meta` point at a new base and drops the changelog before it, atomically.
/// KEYS: meta, log. ARGV: generation, base_from_seq, pieces, bytes, written_ms.
const COMMIT_BASE: &str = r#"
local head = tonumber(redis.call('HGET', KEYS[1], 'log_head_seq') or '0')
local from = tonumber(ARGV[2])
if from > head then
  redis.call('LTRIM', KEYS[2], from - head, -1)
  head = from
end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'base_from_seq', ARGV[2],
  'log_head_seq', head, 'base_pieces', ARGV[3], 'base_bytes', ARGV[4],
  'base_written_ms', ARGV[5])
return head
"#;

// The fenced writes. Each starts with the same check: KEYS[1] is the partition's lease, ARGV[1]
// the value it must hold ("<worker> <token>"); otherwise the script writes nothing and fails
// with `FENCED <what the lease holds>`, turned into RedisError::Fenced. The rest of each script
// is the write the unfenced store sends as a plain command, with KEYS and ARGV shifted by one.

/// The check every fenced script starts with.
const FENCE_CHECK: &str = r"
local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. (lease or 'nothing'))
end
";

/// HSETNX meta format V. KEYS: lease, meta. ARGV: expected, format.
static FENCED_INIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE_CHECK}return redis.call('HSETNX', KEYS[2], 'format', ARGV[2])"
    ))
});

/// RPUSH list elements...; returns the new length. In chunks of 1000 arguments, below Lua's
/// limit on unpack(); the script is atomic all the same. KEYS: lease, list. ARGV: expected,
/// elements...
static FENCED_RPUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE_CHECK}
local len = redis.call('LLEN', KEYS[2])
for i = 2, #ARGV, 1000 do
  len = redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return len"
    ))
});

/// UNLINK keys...; returns how many existed. KEYS: lease, keys... ARGV: expected.
static FENCED_UNLINK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE_CHECK}
local n = 0
for i = 2, #KEYS, 1000 do
  n = n + redis.call('UNLINK', unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
return n"
    ))
});

/// COMMIT_BASE behind the check. KEYS: lease, meta, log. ARGV: expected, then COMMIT_BASE's.
static FENCED_COMMIT_BASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE_CHECK}
local head = tonumber(redis.call('HGET', KEYS[2], 'log_head_seq') or '0')
local from = tonumber(ARGV[3])
if from > head then
  redis.call('LTRIM', KEYS[3], from - head, -1)
  head = from
end
redis.call('HSET', KEYS[2], 'generation', ARGV[2], 'base_from_seq', ARGV[3],
  'log_head_seq', head, 'base_pieces', ARGV[4], 'base_bytes', ARGV[5],
  'base_written_ms', ARGV[6])
return head"
    ))
});

/// What `meta` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Format version.
    pub format: u16,
    /// The current base (0: none yet).
    pub generation: u64,
    /// Sequence number of the changelog's first element.
    pub log_head_seq: u64,
    /// Sequence number of the first changelog element a restore replays.
    pub base_from_seq: u64,
    /// Pieces of the current base.
    pub base_pieces: u64,
    /// Bytes of the current base.
    pub base_bytes: u64,
    /// When the current base was committed, ms since the Unix epoch (0: never).
    pub base_written_ms: u64,
}

/// Reads and writes the checkpoint of one pipeline.
pub struct CheckpointStore {
    conn: RedisConnection,
    addr: String,
    name: String,
    timeouts: Timeouts,
    fence: Option<Fence>,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("fence", &self.fence)
            .finish()
    }
}

impl CheckpointStore {
    /// A store for the checkpoint named `name` on the server (or cluster) the flags name,
    /// unfenced. Does not connect yet.
    pub fn new(args: &RedisArgs, name: impl Into<String>) -> Result<Self, RedisError> {
        let timeouts = Timeouts {
            response: Duration::from_secs(30),
            operation: Duration::from_secs(60),
            ..Timeouts::default()
        };
        let (conn, addr) = RedisConnection::from_args(args, &timeouts)?;
        Ok(CheckpointStore {
            conn,
            addr,
            name: name.into(),
            timeouts,
            fence: None,
        })
    }

    /// The same store with every write fenced by `fence` (see the module documentation). The
    /// fence must be of this checkpoint's partition (`fence.checkpoint_name == self.name()`);
    /// writes through a fence of another partition are refused with
    /// [`RedisError::Checkpoint`].
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The fence of this store's writes, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// The checkpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The key of `meta`.
    pub fn meta_key(&self) -> String {
        keys::meta_key(&self.name)
    }

    /// The key of the changelog.
    pub fn log_key(&self) -> String {
        keys::log_key(&self.name)
    }

    /// The key of base `generation`.
    pub fn base_key(&self, generation: u64) -> String {
        keys::base_key(&self.name, generation)
    }

    fn broken(&self, reason: impl Into<String>) -> RedisError {
        RedisError::Checkpoint {
            key: keys::checkpoint_prefix(&self.name),
            reason: reason.into(),
        }
    }

    /// The fence to check before a write, if any; a fence of another partition is refused.
    fn write_fence(&self) -> Result<Option<&Fence>, RedisError> {
        match &self.fence {
            Some(f) if f.checkpoint_name != self.name => Err(self.broken(format!(
                "a write was fenced by the lease of {:?}, not of this checkpoint; the worker \
                 built the store with the wrong partition's fence",
                f.checkpoint_name
            ))),
            other => Ok(other.as_ref()),
        }
    }

    /// Runs a fenced script: KEYS = [lease, `keys`...], ARGV = [expected, `args`...].
    async fn fenced<T: redis::FromRedisValue>(
        &self,
        fence: &Fence,
        script: &Script,
        keys: &[String],
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        let mut inv = script.key(&fence.lease_key);
        for k in keys {
            inv.key(k);
        }
        inv.arg(&fence.expected);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        match self.bounded(inv.invoke_async(&mut conn)).await {
            Err(RedisError::Command { source, .. }) if source.code() == Some("FENCED") => {
                Err(fence.refused(source.detail().unwrap_or("nothing")))
            }
            other => other,
        }
    }

    /// What `meta` says; `None` when there is no checkpoint. A changelog without `meta`, or a
    /// `meta` of another format, is an error that says what to do.
    pub async fn meta(&self) -> Result<Option<CheckpointMeta>, RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.meta_key());
        let fields: HashMap<String, String> = self.bounded(cmd.query_async(&mut conn)).await?;
        if fields.is_empty() {
            if self.log_len().await? > 0 {
                return Err(self.broken(format!(
                    "the changelog {} exists but {} does not",
                    self.log_key(),
                    self.meta_key()
                )));
            }
            return Ok(None);
        }
        let num = |name: &str| -> Result<u64, RedisError> {
            match fields.get(name) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| {
                    self.broken(format!(
                        "field {name} of {} is {v:?}, not a number",
                        self.meta_key()
                    ))
                }),
            }
        };
        let format = num("format")?;
        if format != u64::from(META_FORMAT) {
            return Err(self.broken(format!(
                "it was written in format version {format}; this build reads version {META_FORMAT}"
            )));
        }
        Ok(Some(CheckpointMeta {
            format: META_FORMAT,
            generation: num("generation")?,
            log_head_seq: num("log_head_seq")?,
            base_from_seq: num("base_from_seq")?,
            base_pieces: num("base_pieces")?,
            base_bytes: num("base_bytes")?,
            base_written_ms: num("base_written_ms")?,
        }))
    }

    /// Creates `meta` for an empty checkpoint (when there is none).
    pub async fn init(&self) -> Result<(), RedisError> {
        if let Some(f) = self.write_fence()? {
            let format = META_FORMAT.to_string();
            return self
                .fenced::<()>(f, &FENCED_INIT, &[self.meta_key()], &[format.as_bytes()])
                .await;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(self.meta_key()).arg("format").arg(META_FORMAT);
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    /// Number of elements in the changelog.
    pub async fn log_len(&self) -> Result<u64, RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("LLEN");
        cmd.arg(self.log_key());
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Number of pieces stored under base `generation`.
    pub async fn base_len(&self, generation: u64) -> Result<u64, RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("LLEN");
        cmd.arg(self.base_key(generation));
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Appends delta elements to the changelog in one atomic call; returns its new length.
    pub async fn append_log(&self, elements: &[Vec<u8>]) -> Result<u64, RedisError> {
        if elements.is_empty() {
            return self.log_len().await;
        }
        if let Some(f) = self.write_fence()? {
            let args: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
            return self
                .fenced(f, &FENCED_RPUSH, &[self.log_key()], &args)
                .await;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(self.log_key());
        for e in elements {
            cmd.arg(e.as_slice());
        }
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Elements `from..from + count` of the changelog (fewer at its end).
    pub async fn read_log(&self, from: u64, count: u64) -> Result<Vec<Vec<u8>>, RedisError> {
        self.range(self.log_key(), from, count).await
    }

    /// Pieces `from..from + count` of base `generation`.
    pub async fn read_base(
        &self,
        generation: u64,
        from: u64,
        count: u64,
    ) -> Result<Vec<Vec<u8>>, RedisError> {
        self.range(self.base_key(generation), from, count).await
    }

    async fn range(&self, key: String, from: u64, count: u64) -> Result<Vec<Vec<u8>>, RedisError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(key).arg(from).arg(from + count - 1);
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Deletes base `generation` (what an interrupted attempt left, or a replaced base).
    /// `UNLINK` frees a large base in the background, without stalling the server.
    pub async fn drop_base(&self, generation: u64) -> Result<(), RedisError> {
        if let Some(f) = self.write_fence()? {
            return self
                .fenced::<()>(f, &FENCED_UNLINK, &[self.base_key(generation)], &[])
                .await;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(self.base_key(generation));
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    /// Appends a piece to base `generation`.
    pub async fn append_base(&self, generation: u64, piece: &[u8]) -> Result<(), RedisError> {
        if let Some(f) = self.write_fence()? {
            return self
                .fenced::<()>(f, &FENCED_RPUSH, &[self.base_key(generation)], &[piece])
                .await;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(self.base_key(generation)).arg(piece);
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    /// Makes base `generation` the current one, replayed from changelog element
    /// `base_from_seq` on, and drops the changelog before it, in one atomic script.
    pub async fn commit_base(
        &self,
        generation: u64,
        base_from_seq: u64,
        pieces: u64,
        bytes: u64,
        written_ms: u64,
    ) -> Result<(), RedisError> {
        if let Some(f) = self.write_fence()? {
            let args =
                [generation, base_from_seq, pieces, bytes, written_ms].map(|n| n.to_string());
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            return self
                .fenced::<()>(
                    f,
                    &FENCED_COMMIT_BASE,
                    &[self.meta_key(), self.log_key()],
                    &args,
                )
                .await;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COMMIT_BASE)
            .arg(2)
            .arg(self.meta_key())
            .arg(self.log_key())
            .arg(generation)
            .arg(base_from_seq)
            .arg(pieces)
            .arg(bytes)
            .arg(written_ms);
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    /// Deletes the whole checkpoint: `meta`, the changelog and every base generation up to
    /// the current one and the one after (an interrupted attempt). Returns the keys deleted.
    pub async fn reset(&self) -> Result<u64, RedisError> {
        let generation = match self.meta().await {
            Ok(meta) => meta.map_or(0, |m| m.generation),
            // A checkpoint of another format is reset too; its bases are found by number.
            Err(RedisError::Checkpoint { .. }) => 0,
            Err(e) => return Err(e),
        };
        if let Some(f) = self.write_fence()? {
            let mut keys = vec![self.meta_key(), self.log_key()];
            keys.extend((0..=generation + 1).map(|g| self.base_key(g)));
            return self.fenced(f, &FENCED_UNLINK, &keys, &[]).await;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(self.meta_key()).arg(self.log_key());
        for g in 0..=generation + 1 {
            cmd.arg(self.base_key(g));
        }
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Whether a plain string key `key` exists (a version-1 checkpoint, one JSON string).
    pub async fn string_exists(&self, key: &str) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        let n: u64 = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(n > 0)
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
