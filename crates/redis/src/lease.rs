//! [`LeaseStore`]: the Redis side of partition ownership (docs/design.md §7): the deployment's
//! recorded layout, the live workers, and one lease with a fencing token per partition; and
//! [`Fence`], what a fenced checkpoint write checks.
//!
//! Every operation that reads and then writes is one Lua script, so it is atomic on the
//! server; where a clock is needed it is the server's (`TIME`, `PX` expiries), so the workers'
//! clocks never matter. The keys are named in [`crate::keys`]: a partition's lease and fence
//! share its checkpoint's hash tag, so the scripts work on a Redis Cluster too.
//!
//! The decisions (how many partitions to hold, when to give one up) are not made here but in
//! `firstclick_partition::lease`; this module only does what it is told and reports what Redis
//! answered.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use redis::Script;

use crate::args::RedisArgs;
use crate::connection::{PerKey, RedisConnection};
use crate::directory::Timeouts;
use crate::error::RedisError;
use crate::keys;

/// Records P unless a layout is recorded already; returns what is recorded.
/// KEYS: layout. ARGV: P.
static RECORD_LAYOUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
",
    )
});

/// Membership: this worker is alive until server time + ttl; members whose time has passed are
/// dropped; returns how many are alive. The key itself expires when its last member would, so
/// a deployment that stopped leaves nothing behind.
/// KEYS: workers. ARGV: worker id, ttl ms.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('ZCARD', KEYS[1])
",
    )
});

/// Takes a free lease with the next token. The token is counted in its own key (not in the
/// lease, which expires), so a new owner's token is always larger than any earlier owner's and
/// a stale owner's fenced writes can never match again.
/// KEYS: lease, fence. ARGV: worker id, ttl ms. Returns the token, or nil when taken.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', token), 'PX', ARGV[2])
return token
",
    )
});

/// Extends the lease if it is still exactly ours (compare-and-set on worker and token).
/// KEYS: lease. ARGV: expected value, ttl ms. Returns 1 or 0.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
});

/// Deletes the lease if it is still exactly ours; another owner's lease is left alone.
/// KEYS: lease. ARGV: expected value. Returns 1 or 0.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});

/// What a fenced write checks before it writes: the lease key of one partition must still
/// hold `"<worker_id> <token>"`. Made by [`LeaseStore::fence`], given to
/// [`crate::CheckpointStore::with_fence`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The partition's checkpoint name (the hash tag of its keys).
    pub checkpoint_name: String,
    /// The partition.
    pub partition: u32,
    /// The token of the lease.
    pub token: u64,
    /// The lease key.
    pub lease_key: String,
    /// The value the lease key must hold.
    pub expected: String,
}

impl Fence {
    /// A fence on the lease of checkpoint `checkpoint_name` held by `worker_id` with `token`.
    pub fn new(checkpoint_name: &str, partition: u32, worker_id: &str, token: u64) -> Self {
        Fence {
            checkpoint_name: checkpoint_name.to_owned(),
            partition,
            token,
            lease_key: keys::lease_key(checkpoint_name),
            expected: lease_value(worker_id, token),
        }
    }

    /// The refusal for a write whose check found `found` in the lease key.
    pub(crate) fn refused(&self, found: &str) -> RedisError {
        RedisError::Fenced {
            partition: self.checkpoint_name.clone(),
            token: self.token,
            lease_key: self.lease_key.clone(),
            found: found.to_owned(),
        }
    }
}

fn lease_value(worker_id: &str, token: u64) -> String {
    format!("{worker_id} {token}")
}

/// The leases of one worker in one deployment. Cheap to share behind an `Arc`; all methods
/// take `&self`.
pub struct LeaseStore {
    conn: RedisConnection,
    addr: String,
    name: String,
    partitions: u32,
    worker_id: String,
    ttl_ms: u64,
    timeouts: Timeouts,
    per_key: PerKey,
}

impl std::fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStore")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .field("worker_id", &self.worker_id)
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

impl LeaseStore {
    /// The leases of deployment `name` (its checkpoint name) with `partitions` partitions, for
    /// worker `worker_id` (unique per process, without spaces), leases and membership lasting
    /// `ttl_ms` without renewal. Does not connect yet; must be called inside a Tokio runtime.
    pub fn new(
        args: &RedisArgs,
        name: impl Into<String>,
        partitions: u32,
        worker_id: impl Into<String>,
        ttl_ms: u64,
    ) -> Result<Self, RedisError> {
        let timeouts = Timeouts::default();
        let (conn, addr) = RedisConnection::from_args(args, &timeouts)?;
        Ok(LeaseStore {
            conn,
            addr,
            name: name.into(),
            partitions: partitions.max(1),
            worker_id: worker_id.into(),
            ttl_ms: ttl_ms.max(1),
            timeouts,
            per_key: PerKey::default(),
        })
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// P.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The lifetime of a lease and of a membership without renewal, ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// The server(s), `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The checkpoint name of partition `p` ([`keys::partition_checkpoint_name`]).
    pub fn partition_name(&self, p: u32) -> String {
        keys::partition_checkpoint_name(&self.name, p, self.partitions)
    }

    /// Records P in the layout key unless one is recorded; a different recorded P is
    /// [`RedisError::LayoutMismatch`].
    pub async fn record_layout(&self) -> Result<(), RedisError> {
        let key = keys::layout_key(&self.name);
        let recorded: String = self
            .bounded(
                RECORD_LAYOUT
                    .key(&key)
                    .arg(self.partitions)
                    .invoke_async(&mut self.conn.clone()),
            )
            .await?;
        let recorded: u32 = recorded
            .trim()
            .parse()
            .map_err(|_| RedisError::Checkpoint {
                key: key.clone(),
                reason: format!(
                    "the layout key holds {recorded:?}, not a number of partitions; delete it to \
                 record {} again",
                    self.partitions
                ),
            })?;
        if recorded != self.partitions {
            return Err(RedisError::LayoutMismatch {
                key,
                recorded,
                configured: self.partitions,
            });
        }
        Ok(())
    }

    /// Deletes the recorded layout (with `streaming state reset`, every worker stopped), so
    /// that the next worker records its P. Returns whether one was recorded.
    pub async fn forget_layout(&self) -> Result<bool, RedisError> {
        let key = keys::layout_key(&self.name);
        let mut conn = self.conn.clone();
        let n: u64 = self
            .bounded(redis::cmd("DEL").arg(&key).query_async(&mut conn))
            .await?;
        Ok(n > 0)
    }

    /// Marks this worker alive for another ttl, drops the members whose time passed, and
    /// returns the number of live workers, this one included.
    pub async fn heartbeat(&self) -> Result<usize, RedisError> {
        let n: u64 = self
            .bounded(
                HEARTBEAT
                    .key(keys::workers_key(&self.name))
                    .arg(&self.worker_id)
                    .arg(self.ttl_ms)
                    .invoke_async(&mut self.conn.clone()),
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Removes this worker from the live workers (on shutdown, after its leases are released).
    pub async fn leave(&self) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(keys::workers_key(&self.name)).arg(&self.worker_id);
        self.bounded(cmd.query_async::<()>(&mut self.conn.clone()))
            .await
    }

    /// The partitions whose lease key does not exist, ascending. One `EXISTS` per partition,
    /// pipelined (per node on a cluster, where the leases are in different slots).
    pub async fn free_partitions(&self) -> Result<Vec<u32>, RedisError> {
        let keys: Vec<String> = (0..self.partitions)
            .map(|p| keys::lease_key(&self.partition_name(p)))
            .collect();
        let cmds: Vec<redis::Cmd> = keys
            .iter()
            .map(|k| {
                let mut c = redis::cmd("EXISTS");
                c.arg(k);
                c
            })
            .collect();
        let replies = self
            .bounded(self.per_key.run(&self.conn, &keys, &cmds))
            .await?;
        let mut free = Vec::new();
        for (p, reply) in (0..self.partitions).zip(replies) {
            match reply {
                redis::Value::Int(0) => free.push(p),
                redis::Value::Int(_) => {}
                redis::Value::ServerError(e) => {
                    return Err(RedisError::from_redis(
                        &self.addr,
                        e.into(),
                        self.timeouts.response,
                    ))
                }
                other => {
                    return Err(RedisError::UnexpectedReply {
                        addr: self.addr.clone(),
                        what: format!("EXISTS {}", keys[p as usize]),
                        expected: "an integer",
                        found: format!("{other:?}"),
                    })
                }
            }
        }
        Ok(free)
    }

    /// Takes partition `p`'s lease if it is free: `Some(token)` (larger than every earlier
    /// token of `p`), or `None` when another worker (or this one) holds it.
    pub async fn acquire(&self, p: u32) -> Result<Option<u64>, RedisError> {
        let name = self.partition_name(p);
        self.bounded(
            ACQUIRE
                .key(keys::lease_key(&name))
                .key(keys::fence_key(&name))
                .arg(&self.worker_id)
                .arg(self.ttl_ms)
                .invoke_async(&mut self.conn.clone()),
        )
        .await
    }

    /// Extends this worker's lease of `p` with `token` by a ttl; false when it is no longer
    /// this worker's (expired, or taken by another).
    pub async fn renew(&self, p: u32, token: u64) -> Result<bool, RedisError> {
        let n: i64 = self
            .bounded(
                RENEW
                    .key(keys::lease_key(&self.partition_name(p)))
                    .arg(lease_value(&self.worker_id, token))
                    .arg(self.ttl_ms)
                    .invoke_async(&mut self.conn.clone()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives back this worker's lease of `p` with `token`; false when it was no longer this
    /// worker's (nothing is deleted then).
    pub async fn release(&self, p: u32, token: u64) -> Result<bool, RedisError> {
        let n: i64 = self
            .bounded(
                RELEASE
                    .key(keys::lease_key(&self.partition_name(p)))
                    .arg(lease_value(&self.worker_id, token))
                    .invoke_async(&mut self.conn.clone()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Who holds partition `p` now: the lease's value `"<worker_id> <token>"`, or `None` when
    /// it is free. For messages (e.g. a standby saying whom it waits for).
    pub async fn holder(&self, p: u32) -> Result<Option<String>, RedisError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(keys::lease_key(&self.partition_name(p)));
        self.bounded(cmd.query_async(&mut self.conn.clone())).await
    }

    /// The fence of this worker's lease of `p` with `token`, for
    /// [`crate::CheckpointStore::with_fence`] on that partition's checkpoint.
    pub fn fence(&self, p: u32, token: u64) -> Fence {
        Fence::new(&self.partition_name(p), p, &self.worker_id, token)
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_names_the_partition_lease_and_value() {
        let f = Fence::new("dep:p3", 3, "w-1", 42);
        assert_eq!(f.lease_key, "firstclick:{dep:p3}:lease");
        assert_eq!(f.expected, "w-1 42");
        let e = f.refused("w-2 43");
        assert!(e.is_fenced());
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(
            msg.contains("lease of partition dep:p3 is gone (token 42)"),
            "{msg}"
        );
        assert!(
            msg.contains("w-2 43") && msg.contains("not writing"),
            "{msg}"
        );
    }

    #[test]
    fn a_layout_mismatch_says_what_to_do() {
        let e = RedisError::LayoutMismatch {
            key: keys::layout_key("dep"),
            recorded: 8,
            configured: 4,
        };
        let msg = e.to_string();
        assert!(msg.contains("PARTITIONS=8"), "{msg}");
        assert!(msg.contains("configured with 4"), "{msg}");
        assert!(!e.is_transient());
    }
}
