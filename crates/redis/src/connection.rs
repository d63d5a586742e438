//! [`RedisConnection`]: the one connection type behind [`crate::UserDirectory`],
//! [`crate::CheckpointStore`] and [`crate::LeaseStore`], to a single server or to a Redis
//! Cluster, and how commands on many keys are sent to a cluster.
//!
//! Both kinds are multiplexed, cheap to clone, connect lazily (a service may start while Redis
//! is down) and reconnect by themselves, bounded by the same [`Timeouts`]: a single server
//! through a [`ConnectionManager`], a cluster through the redis crate's [`ClusterConnection`]
//! (which follows `MOVED`/`ASK` redirections and refreshes its slot map by itself).
//!
//! **Pipelines on a cluster.** The redis crate (1.8) sends a pipeline to one node, chosen by
//! its first keyed command, and refuses one whose commands fall into different slots
//! ("Received crossed slots in pipeline"). A batch of `HGET user_{id}` touches thousands of
//! slots, so [`PerKey`] groups the commands by the *node* that owns each key's slot (from
//! `CLUSTER SLOTS`, cached), sends one pipeline per node concurrently, and puts the replies
//! back in order: a batch costs one round trip per master, not one per key. When the cached
//! map is stale (a slot moved), the node answers `MOVED`; the map is then read again and the
//! batch retried once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use crate::args::RedisArgs;
use crate::directory::Timeouts;
use crate::error::RedisError;

/// A connection to one Redis server or to a Redis Cluster. Clones share the connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (`--redis-url` with one URL and no `--redis-cluster`).
    Single(ConnectionManager),
    /// A Redis Cluster, found from the seed URLs.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Single(_) => "RedisConnection::Single",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConnection {
    /// The connection the flags name: a cluster with several seed URLs or `--redis-cluster`,
    /// else one server. Returns it with the address(es) for messages (`host:port`, comma
    /// separated for a cluster; never the password). Does not connect; must be called inside
    /// a Tokio runtime.
    pub fn from_args(
        args: &RedisArgs,
        timeouts: &Timeouts,
    ) -> Result<(RedisConnection, String), RedisError> {
        if args.is_cluster() {
            cluster(args.connection_infos()?, timeouts)
        } else {
            single(args.connection_info()?, timeouts)
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }
}

/// A lazily connecting, self-reconnecting connection to one server, bounded by `timeouts`, and
/// the server's `host:port` for messages. Must be called inside a Tokio runtime.
pub(crate) fn single(
    info: ConnectionInfo,
    timeouts: &Timeouts,
) -> Result<(RedisConnection, String), RedisError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(RedisError::NoRuntime);
    }
    let addr = info.addr().to_string();
    let client = redis::Client::open(info).map_err(|source| RedisError::InvalidUrl {
        url: addr.clone(),
        source,
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response))
        .set_number_of_retries(timeouts.reconnect_retries)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| RedisError::from_redis(&addr, e, timeouts.connect))?;
    Ok((RedisConnection::Single(conn), addr))
}

/// A lazily connecting cluster connection from seed nodes (each already carrying the password
/// and TLS scheme of the flags), with the same bounds as [`single`].
pub(crate) fn cluster(
    seeds: Vec<ConnectionInfo>,
    timeouts: &Timeouts,
) -> Result<(RedisConnection, String), RedisError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(RedisError::NoRuntime);
    }
    let addr = seeds
        .iter()
        .map(|i| i.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let client = ClusterClientBuilder::new(seeds)
        .connection_timeout(timeouts.connect)
        .response_timeout(timeouts.response)
        .retries(u32::try_from(timeouts.reconnect_retries).unwrap_or(u32::MAX))
        .min_retry_wait(100)
        .max_retry_wait(500)
        .build()
        .map_err(|source| RedisError::InvalidUrl {
            url: addr.clone(),
            source,
        })?;
    let config = ClusterConfig::new()
        .set_connection_timeout(timeouts.connect)
        .set_response_timeout(timeouts.response);
    let conn = client.get_pending_async_connection_with_config(config);
    Ok((RedisConnection::Cluster(conn), addr))
}

/// Which node serves which slots, from `CLUSTER SLOTS`: `(first, last, "host:port")`, sorted.
type SlotMap = Vec<(u16, u16, String)>;

/// Sends commands that each touch one key: one pipeline on a single server; on a cluster, one
/// pipeline per node owning some of the keys (see the module documentation). Holds the
/// cached slot map.
#[derive(Default)]
pub(crate) struct PerKey {
    slots: Mutex<Option<Arc<SlotMap>>>,
}

impl PerKey {
    /// Runs `cmds` (command `i` touches `keys[i]` only) and returns one reply per command, in
    /// order. Errors of single commands come back as [`Value::ServerError`] replies, as with
    /// `Pipeline::ignore_errors`.
    pub(crate) async fn run(
        &self,
        conn: &RedisConnection,
        keys: &[String],
        cmds: &[Cmd],
    ) -> RedisResult<Vec<Value>> {
        debug_assert_eq!(keys.len(), cmds.len());
        match conn {
            RedisConnection::Single(_) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for c in cmds {
                    pipe.add_command(c.clone());
                }
                let mut conn = conn.clone();
                pipe.query_async(&mut conn).await
            }
            RedisConnection::Cluster(cluster) => {
                match self.run_cluster(cluster, keys, cmds).await {
                    Err(e) if is_redirect(&e) => {
                        // A slot moved since the map was read: read it again, retry once.
                        tracing::debug!(error = %e, "slot map stale; reading CLUSTER SLOTS again");
                        self.forget();
                        self.run_cluster(cluster, keys, cmds).await
                    }
                    other => other,
                }
            }
        }
    }

    fn forget(&self) {
        *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn slot_map(&self, conn: &ClusterConnection) -> RedisResult<Arc<SlotMap>> {
        if let Some(map) = self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(map);
        }
        let mut conn = conn.clone();
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        let map = Arc::new(parse_cluster_slots(reply)?);
        *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = Some(map.clone());
        Ok(map)
    }

    async fn run_cluster(
        &self,
        conn: &ClusterConnection,
        keys: &[String],
        cmds: &[Cmd],
    ) -> RedisResult<Vec<Value>> {
        let map = self.slot_map(conn).await?;
        // Node -> (slot of its first key, indices of its commands). A slot no range covers
        // (a cluster being resharded) becomes a group of its own, routed by the slot.
        let mut groups: BTreeMap<String, (u16, Vec<usize>)> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            let slot = slot_of(key);
            let node = node_of(&map, slot)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("slot {slot}"));
            groups.entry(node).or_insert((slot, Vec::new())).1.push(i);
        }
        let sends = groups.into_values().map(|(slot, indices)| {
            let mut conn = conn.clone();
            let mut pipe = redis::pipe();
            for &i in &indices {
                pipe.add_command(cmds[i].clone());
            }
            async move {
                let n = indices.len();
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                let replies = conn.route_pipeline(pipe, 0, n, route).await?;
                Ok::<_, redis::RedisError>((indices, replies))
            }
        });
        let answers = futures::future::try_join_all(sends).await?;
        let mut out = vec![Value::Nil; keys.len()];
        for (indices, replies) in answers {
            if replies.len() != indices.len() {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "a node answered a pipeline with another number of replies",
                    format!("{} commands, {} replies", indices.len(), replies.len()),
                )));
            }
            for (i, reply) in indices.into_iter().zip(replies) {
                if let Value::ServerError(e) = &reply {
                    if matches!(e.code(), "MOVED" | "ASK") {
                        return Err(e.clone().into());
                    }
                }
                out[i] = reply;
            }
        }
        Ok(out)
    }
}

fn is_redirect(e: &redis::RedisError) -> bool {
    matches!(
        e.retry_method(),
        redis::RetryMethod::MovedRedirect | redis::RetryMethod::AskRedirect
    ) || matches!(e.code(), Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN"))
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty), or of the whole key, mod 16384. The redis crate
/// computes the same but does not expose the number.
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(bytes)) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn node_of(map: &SlotMap, slot: u16) -> Option<&str> {
    let i = map.partition_point(|(_, last, _)| *last < slot);
    map.get(i)
        .filter(|(first, _, _)| *first <= slot)
        .map(|(_, _, node)| node.as_str())
}

/// Parses `CLUSTER SLOTS`: `[[first, last, [host, port, id, ...], replicas...], ...]`.
fn parse_cluster_slots(reply: Value) -> RedisResult<SlotMap> {
    let bad = |what: &str| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected CLUSTER SLOTS reply",
            what.to_owned(),
        ))
    };
    let Value::Array(ranges) = reply else {
        return Err(bad("not an array"));
    };
    let mut map = SlotMap::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad("a range is not an array"));
        };
        let num = |v: &Value| match v {
            Value::Int(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(first), Some(last)) = (fields.first().and_then(num), fields.get(1).and_then(num))
        else {
            return Err(bad("a range without its first and last slot"));
        };
        let Some(Value::Array(master)) = fields.get(2) else {
            return Err(bad("a range without its master"));
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad("a master without its host")),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad("a master without its port"));
        };
        map.push((first, last, format!("{host}:{port}")));
    }
    map.sort();
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_cluster_specs() {
        // Values from the Redis Cluster specification and redis-cli's CLUSTER KEYSLOT.
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(
            slot_of("firstclick:{n:p3}:meta"),
            slot_of("firstclick:{n:p3}:lease")
        );
    }

    #[test]
    fn a_slot_finds_its_node() {
        let map: SlotMap = vec![
            (0, 5460, "a:1".into()),
            (5461, 10922, "b:2".into()),
            (10923, 16000, "c:3".into()),
        ];
        assert_eq!(node_of(&map, 0), Some("a:1"));
        assert_eq!(node_of(&map, 5460), Some("a:1"));
        assert_eq!(node_of(&map, 5461), Some("b:2"));
        assert_eq!(node_of(&map, 16000), Some("c:3"));
        assert_eq!(node_of(&map, 16001), None);
    }
}
