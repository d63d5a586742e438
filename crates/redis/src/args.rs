//! [`RedisArgs`]: the Redis flags of every firstclick binary, and how they become connection
//! information and cache settings. The password is never printed: `Debug` and error messages
//! redact it.

use std::fmt;
use std::time::Duration;

use clap::Args;
use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::cache::CacheSettings;
use crate::error::RedisError;

/// Where Redis is and how the user-name cache behaves.
#[derive(Args, Clone)]
pub struct RedisArgs {
    /// Redis server URL: `redis://[user[:password]@]host[:port][/db]`. For a Redis Cluster, a
    /// comma-separated list of seed nodes (`redis://h1:7001,redis://h2:7002`).
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Redis password, used when the URL carries none. Never logged.
    #[arg(
        long = "redis-password",
        env = "REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,

    /// Connect as a Redis Cluster client even with one seed URL (implied by several).
    #[arg(
        long = "redis-cluster",
        env = "REDIS_CLUSTER",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub redis_cluster: bool,

    /// How long a looked-up user name (or its absence) is reused before Redis is asked again.
    #[arg(
        long = "user-cache-ttl-secs",
        env = "USER_CACHE_TTL_SECS",
        default_value_t = 60
    )]
    pub user_cache_ttl_secs: u64,

    /// Most user names kept in the cache; the oldest are dropped first. 0 disables the cache.
    #[arg(
        long = "user-cache-capacity",
        env = "USER_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub user_cache_capacity: usize,
}

impl Default for RedisArgs {
    fn default() -> Self {
        RedisArgs {
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_password: None,
            redis_cluster: false,
            user_cache_ttl_secs: 60,
            user_cache_capacity: 100_000,
        }
    }
}

impl fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_url", &redact_url(&self.redis_url))
            .field(
                "redis_password",
                &self.redis_password.as_ref().map(|_| "<redacted>"),
            )
            .field("redis_cluster", &self.redis_cluster)
            .field("user_cache_ttl_secs", &self.user_cache_ttl_secs)
            .field("user_cache_capacity", &self.user_cache_capacity)
            .finish()
    }
}

impl RedisArgs {
    /// The seed URLs of `--redis-url`: the comma-separated parts, trimmed, empty ones skipped.
    pub fn seed_urls(&self) -> Vec<&str> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Whether to connect as a Redis Cluster client: `--redis-cluster`, or more than one seed
    /// URL.
    pub fn is_cluster(&self) -> bool {
        self.redis_cluster || self.seed_urls().len() > 1
    }

    /// Parses `--redis-url` (a single server) and applies `--redis-password` when the URL has
    /// no password of its own (a password in the URL wins). An empty `--redis-password` counts
    /// as none. A list of seed URLs is refused here: use [`RedisArgs::connection_infos`].
    pub fn connection_info(&self) -> Result<ConnectionInfo, RedisError> {
        let seeds = self.seed_urls();
        if seeds.len() > 1 {
            return Err(RedisError::InvalidUrl {
                url: redact_url(&self.redis_url),
                source: redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a list of seed URLs names a Redis Cluster, not one server",
                )),
            });
        }
        self.parse_one(seeds.first().copied().unwrap_or(""))
    }

    /// Every seed URL of `--redis-url`, parsed, each with `--redis-password` applied like
    /// [`RedisArgs::connection_info`] does (so the password and TLS scheme apply to every node).
    pub fn connection_infos(&self) -> Result<Vec<ConnectionInfo>, RedisError> {
        let seeds = self.seed_urls();
        if seeds.is_empty() {
            return Err(RedisError::InvalidUrl {
                url: redact_url(&self.redis_url),
                source: redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "no URL given",
                )),
            });
        }
        seeds.into_iter().map(|u| self.parse_one(u)).collect()
    }

    fn parse_one(&self, url: &str) -> Result<ConnectionInfo, RedisError> {
        let info = url
            .into_connection_info()
            .map_err(|source| RedisError::InvalidUrl {
                url: redact_url(url),
                source,
            })?;
        let password = self.redis_password.as_deref().filter(|p| !p.is_empty());
        match password {
            Some(password) if info.redis_settings().password().is_none() => {
                let settings = info.redis_settings().clone().set_password(password);
                Ok(info.set_redis_settings(settings))
            }
            _ => Ok(info),
        }
    }

    /// The cache settings from `--user-cache-ttl-secs` and `--user-cache-capacity`.
    pub fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(self.user_cache_ttl_secs),
            capacity: self.user_cache_capacity,
        }
    }

    /// `--redis-url` with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.redis_url)
    }
}

/// Replaces the password of `scheme://user:password@host...` (or `scheme://:password@host`) by
/// `***`. A lone `scheme://name@host` is redacted as well, in case the name is a secret. A
/// comma-separated list of seed URLs is redacted URL by URL.
pub(crate) fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_one).collect::<Vec<_>>().join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        None => "",
    };
    format!("{}{}:***{}", &url[..scheme_end], user, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisArgs,
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        // The environment of the test run may set REDIS_URL; only check what it cannot change.
        if std::env::var_os("REDIS_URL").is_none() {
            assert_eq!(cli.redis.redis_url, "redis://127.0.0.1:6379");
        }
        if std::env::var_os("USER_CACHE_TTL_SECS").is_none() {
            assert_eq!(cli.redis.user_cache_ttl_secs, 60);
        }
        if std::env::var_os("USER_CACHE_CAPACITY").is_none() {
            assert_eq!(cli.redis.user_cache_capacity, 100_000);
        }
    }

    #[test]
    fn flags_are_parsed() {
        let cli = Cli::try_parse_from([
            "x",
            "--redis-url",
            "redis://10.0.0.1:7000/2",
            "--redis-password",
            "s3cret",
            "--user-cache-ttl-secs",
            "5",
            "--user-cache-capacity",
            "10",
        ])
        .unwrap();
        assert_eq!(cli.redis.redis_url, "redis://10.0.0.1:7000/2");
        assert_eq!(cli.redis.redis_password.as_deref(), Some("s3cret"));
        let cache = cli.redis.cache_settings();
        assert_eq!(cache.ttl, Duration::from_secs(5));
        assert_eq!(cache.capacity, 10);
        let info = cli.redis.connection_info().unwrap();
        assert_eq!(info.addr().to_string(), "10.0.0.1:7000");
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
    }

    #[test]
    fn password_flag_applies_only_when_the_url_has_none() {
        let args = RedisArgs {
            redis_url: "redis://:fromurl@127.0.0.1:6379".into(),
            redis_password: Some("fromflag".into()),
            ..RedisArgs::default()
        };
        let info = args.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("fromurl"));

        let args = RedisArgs {
            redis_password: Some(String::new()),
            ..RedisArgs::default()
        };
        assert_eq!(
            args.connection_info().unwrap().redis_settings().password(),
            None
        );
    }

    #[test]
    fn password_is_never_printed() {
        let args = RedisArgs {
            redis_url: "redis://alice:urlsecret@127.0.0.1:6379".into(),
            redis_password: Some("flagsecret".into()),
            ..RedisArgs::default()
        };
        let debug = format!("{args:?}");
        assert!(!debug.contains("urlsecret"), "{debug}");
        assert!(!debug.contains("flagsecret"), "{debug}");
        assert!(
            debug.contains("redis://alice:***@127.0.0.1:6379"),
            "{debug}"
        );
        let info = args.connection_info().unwrap();
        let debug = format!("{info:?}");
        assert!(!debug.contains("urlsecret"), "{debug}");
    }

    #[test]
    fn redaction_covers_the_url_forms() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("redis://u:p@w@h:1"), "redis://u:***@h:1");
        assert_eq!(redact_url("rediss://pw@h"), "rediss://:***@h");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("redis://:a@h1:1,redis://:b@h2:2"),
            "redis://:***@h1:1,redis://:***@h2:2"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_leaking_the_password() {
        let args = RedisArgs {
            redis_url: "http://:topsecret@127.0.0.1:6379".into(),
            ..RedisArgs::default()
        };
        let err = args.connection_info().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RedisError::InvalidUrl { .. }), "{msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(msg.contains("REDIS_URL"), "{msg}");
    }

    #[test]
    fn seed_lists_mean_a_cluster_and_each_node_gets_the_password() {
        let args = RedisArgs {
            redis_url: "redis://127.0.0.1:7001, redis://127.0.0.1:7002,".into(),
            redis_password: Some("pw".into()),
            ..RedisArgs::default()
        };
        assert!(args.is_cluster());
        assert_eq!(
            args.seed_urls(),
            ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]
        );
        let infos = args.connection_infos().unwrap();
        assert_eq!(infos.len(), 2);
        for info in &infos {
            assert_eq!(info.redis_settings().password(), Some("pw"));
        }
        assert_eq!(infos[1].addr().to_string(), "127.0.0.1:7002");
        let err = args.connection_info().unwrap_err();
        assert!(err.to_string().contains("Cluster"), "{err}");

        let one = RedisArgs::default();
        assert!(!one.is_cluster());
        let forced = RedisArgs {
            redis_cluster: true,
            ..RedisArgs::default()
        };
        assert!(forced.is_cluster());
        let cli = Cli::try_parse_from(["x", "--redis-cluster"]).unwrap();
        assert!(cli.redis.redis_cluster);
        let cli = Cli::try_parse_from(["x", "--redis-cluster", "false"]).unwrap();
        assert!(!cli.redis.redis_cluster);
    }
}
