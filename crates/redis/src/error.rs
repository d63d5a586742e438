//! [`RedisError`]: every way a Redis lookup or write can fail, with enough context to act on.
//!
//! Messages never contain the Redis password: addresses are printed as `host:port` and URLs are
//! redacted before they are stored in an error.

use std::time::Duration;

/// A failed Redis operation.
///
/// [`RedisError::is_transient`] tells a caller whether to retry with backoff (keeping its
/// messages unacknowledged) or to stop and report a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// `--redis-url` could not be parsed.
    #[error(
        "invalid Redis URL {url:?}: {source}; expected redis://[user[:password]@]host[:port][/db] \
         (or rediss://, redis+unix://); fix --redis-url / REDIS_URL"
    )]
    InvalidUrl {
        /// The URL as given, with any password replaced by `***`.
        url: String,
        /// Why the redis crate refused it.
        #[source]
        source: redis::RedisError,
    },

    /// A connection could not be built because no Tokio runtime is running.
    #[error(
        "the Redis connection must be created inside a Tokio runtime, but none is running; \
         create the UserDirectory from async code (e.g. under #[tokio::main])"
    )]
    NoRuntime,

    /// Redis could not be reached, or the connection broke (server down, restarting, network).
    #[error(
        "Redis at {addr} is unavailable: {source}; the connection is re-established \
         automatically, retry with backoff"
    )]
    Unavailable {
        /// `host:port` of the server.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: redis::RedisError,
    },

    /// Redis did not answer in time (server overloaded, paused, or a network black hole).
    #[error(
        "Redis at {addr} did not answer within {timeout:?}; it may be overloaded or unreachable, \
         retry with backoff"
    )]
    Timeout {
        /// `host:port` of the server.
        addr: String,
        /// The bound that was exceeded.
        timeout: Duration,
    },

    /// Redis refused the credentials, or requires credentials that were not given.
    #[error(
        "Redis at {addr} refused authentication: {source}; check --redis-password / \
         REDIS_PASSWORD or the password in REDIS_URL"
    )]
    Auth {
        /// `host:port` of the server.
        addr: String,
        /// The server's answer.
        #[source]
        source: redis::RedisError,
    },

    /// Redis answered a command with an error (e.g. `LOADING` while it reads its dump file).
    #[error("Redis at {addr} refused the command: {source}")]
    Command {
        /// `host:port` of the server.
        addr: String,
        /// The server's answer.
        #[source]
        source: redis::RedisError,
    },

    /// Redis answered with a reply of a shape the command cannot produce.
    #[error(
        "unexpected reply from Redis at {addr} for {what}: expected {expected}, found {found}"
    )]
    UnexpectedReply {
        /// `host:port` of the server.
        addr: String,
        /// Which command or key the reply belonged to.
        what: String,
        /// What the command should return.
        expected: &'static str,
        /// What came back (debug form, truncated).
        found: String,
    },

    /// The checkpoint's keys do not fit together (or were written by another format).
    #[error(
        "the checkpoint under {key} cannot be used: {reason}. See `streaming state inspect`; \
         `streaming state reset --yes` starts afresh (unacknowledged messages are redelivered)"
    )]
    Checkpoint {
        /// The checkpoint's key prefix.
        key: String,
        /// What does not fit.
        reason: String,
    },

    /// The deployment's recorded number of partitions differs from this worker's.
    #[error(
        "this deployment's partition layout in Redis ({key}) records {recorded} partitions, but \
         this worker is configured with {configured}; start every worker with \
         PARTITIONS={recorded}, or reset the deployment's state (its checkpoints and {key}) to \
         change the layout"
    )]
    LayoutMismatch {
        /// The layout key.
        key: String,
        /// P as recorded in Redis.
        recorded: u32,
        /// P this worker was started with.
        configured: u32,
    },

    /// A fenced write was refused: the lease it was fenced by is no longer this worker's.
    #[error(
        "this worker's lease of partition {partition} is gone (token {token}): another worker \
         owns it now ({lease_key} holds {found}); not writing"
    )]
    Fenced {
        /// The partition's checkpoint name (e.g. `NAME:p3`).
        partition: String,
        /// The fencing token this worker held.
        token: u64,
        /// The lease key that was checked.
        lease_key: String,
        /// What the lease key holds now (`nothing` when it expired).
        found: String,
    },

    /// [`crate::UserDirectory::wait_until_ready`] gave up.
    #[error("Redis at {addr} was not ready after {waited:?}; last error: {last}")]
    NotReady {
        /// `host:port` of the server.
        addr: String,
        /// How long it was waited for.
        waited: Duration,
        /// The last failure seen.
        #[source]
        last: Box<RedisError>,
    },
}

impl RedisError {
    /// True when retrying later may succeed without changing the configuration: the server is
    /// down, slow, restarting or loading its data. False for a bad URL, refused credentials or a
    /// missing runtime.
    pub fn is_transient(&self) -> bool {
        match self {
            RedisError::Unavailable { .. }
            | RedisError::Timeout { .. }
            | RedisError::UnexpectedReply { .. } => true,
            RedisError::Command { source, .. } => {
                !matches!(source.retry_method(), redis::RetryMethod::NoRetry)
            }
            RedisError::NotReady { last, .. } => last.is_transient(),
            RedisError::InvalidUrl { .. }
            | RedisError::NoRuntime
            | RedisError::Auth { .. }
            | RedisError::Checkpoint { .. }
            | RedisError::LayoutMismatch { .. }
            | RedisError::Fenced { .. } => false,
        }
    }

    /// True when a fenced write was refused ([`RedisError::Fenced`]): the partition has another
    /// owner; stop it without writing anything more.
    pub fn is_fenced(&self) -> bool {
        matches!(self, RedisError::Fenced { .. })
    }

    /// Classifies an error of the redis crate for the server at `addr`.
    pub(crate) fn from_redis(addr: &str, source: redis::RedisError, timeout: Duration) -> Self {
        let addr = addr.to_owned();
        if source.is_timeout() {
            RedisError::Timeout { addr, timeout }
        } else if source.is_io_error() || source.is_connection_dropped() {
            RedisError::Unavailable { addr, source }
        } else if matches!(source.kind(), redis::ErrorKind::AuthenticationFailed)
            || source.code() == Some("NOAUTH")
            || source.code() == Some("WRONGPASS")
        {
            RedisError::Auth { addr, source }
        } else {
            RedisError::Command { addr, source }
        }
    }
}
