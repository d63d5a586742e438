//! The Redis connector of firstclick: user names for attributed rows, and user writes for the
//! data generator.
//!
//! Users live in Redis hashes `user_{id}` with fields `user_name` and `password` (the original
//! producers' layout). Only `user_name` is ever read.
//!
//! # Layout
//! - [`args`]: [`RedisArgs`], the `--redis-*` and `--user-cache-*` flags and their environment
//!   variables; the password is applied to the URL and never printed.
//! - [`directory`]: [`UserDirectory`], the enricher: cached, batched, pipelined `names` lookups
//!   that fail fast during an outage and recover by themselves; `put_users`; `wait_until_ready`.
//! - [`cache`]: the bounded TTL cache behind it ([`CacheSettings`]).
//! - [`error`]: [`RedisError`], with [`RedisError::is_transient`] to decide between retrying and
//!   stopping.

pub mod args;
pub mod cache;
pub mod directory;
pub mod error;

pub use args::RedisArgs;
pub use cache::CacheSettings;
pub use directory::{DirectoryStats, Timeouts, UserDirectory};
pub use error::RedisError;
pub use firstclick_model::UserId;
