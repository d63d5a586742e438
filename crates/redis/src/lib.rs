//! The Redis connector of firstclick: user names for attributed rows, and user writes for the
//! data generator.
//!
//! Users live in Redis hashes `user_{id}` with fields `user_name` and `password` (the original
//! producers' layout). Only `user_name` is ever read.
//!
//! # Layout
//! - `args`: [`RedisArgs`], the `--redis-*` and `--user-cache-*` flags and their environment
//!   variables; the password is applied to the URL and never printed.
//! - `directory`: [`UserDirectory`], the enricher: cached, batched, pipelined `names` lookups
//!   that fail fast during an outage and recover by themselves; `put_users`; `ping`,
//!   `wait_until_ready`.
//! - `cache`: the bounded TTL cache behind it ([`CacheSettings`]).
//! - `checkpoint`: [`CheckpointStore`], the keys of the incremental checkpoints (meta, changelog,
//!   bases) and the atomicity of each step; fenced writes ([`CheckpointStore::with_fence`]).
//! - `connection`: [`RedisConnection`], one server or a Redis Cluster (`--redis-url` with
//!   several seed URLs, or `--redis-cluster`), and per-node pipelines on a cluster.
//! - [`keys`]: the names of every key of a deployment, per partition and deployment-wide.
//! - `lease`: [`LeaseStore`], the layout, live workers and per-partition leases with fencing
//!   tokens, each step one Lua script on server time; [`Fence`].
//! - `error`: [`RedisError`], with [`RedisError::is_transient`] to decide between retrying and
//!   stopping.
//!
//! The modules are private; what a caller needs is re-exported here.
//!
//! # Tests and measurements
//! The integration tests need a real `redis-server`: `REDIS_URL` names the shared one (they
//! panic when it is unset), and the outage, password and command-counting tests start private
//! `redis-server` children on free ports (binary from `REDIS_SERVER`, default `redis-server`):
//! ```text
//! redis-server --port 6390 --save "" --appendonly no --daemonize yes
//! REDIS_URL=redis://127.0.0.1:6390 cargo test -p firstclick-redis
//! REDIS_URL=redis://127.0.0.1:6390 cargo run --release -p firstclick-redis --example lookup_throughput
//! ```

mod args;
mod cache;
mod checkpoint;
mod connection;
mod directory;
mod error;
pub mod keys;
mod lease;

pub use args::RedisArgs;
pub use cache::CacheSettings;
pub use checkpoint::{CheckpointMeta, CheckpointStore, META_FORMAT};
pub use connection::RedisConnection;
pub use directory::{DirectoryStats, Timeouts, UserDirectory, PUT_BATCH};
pub use error::RedisError;
pub use firstclick_model::UserId;
pub use keys::partition_checkpoint_name;
pub use lease::{Fence, LeaseStore};
