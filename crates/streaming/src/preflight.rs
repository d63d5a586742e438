//! Start-up checks: before anything is consumed or restored, `streaming run` checks every
//! dependency and refuses to start, with exit code [`EXIT_CONFIG`] (78, `EX_CONFIG`) and a
//! message that names the setting to fix, when one of them is not as configured:
//! - Pub/Sub answers, both subscriptions and the dead-letter and late topics exist
//!   (`create-pubsub` makes them);
//! - Redis answers `PING` and the checkpoint's `meta` can be read (`REDIS_URL`,
//!   `REDIS_PASSWORD`);
//! - BigQuery answers and the output table exists with firstclick's schema (the comparison of
//!   `create-bq-table`, [`BigQuery::check_table`]).
//!
//! The three run side by side under one time budget (`--startup-timeout-secs`, default 30 s).
//! Each attempt is bounded by a few seconds; a dependency that does not answer yet (still
//! starting, as in `docker compose up`) is asked again with jittered backoff until the budget
//! is spent, while an answer that waiting cannot change (a missing table, refused credentials)
//! fails at once. Every failure is reported, not only the first. A stop signal ends the checks
//! at once.
//!
//! After start-up the same checks, one attempt each, run every [`PROBE_INTERVAL`] ([`Probes`])
//! and vote in [`crate::health`], so `/readyz` and `firstclick_dependency_up` show an outage
//! even while no message needs the service that is down.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, EnsureError};
use firstclick_pubsub::{Admin, Connection, PubSubError};
use firstclick_redis::{CheckpointStore, RedisError, UserDirectory};
use tokio_util::sync::CancellationToken;

use crate::health::{self, Dependency, ProbeVote};
use crate::outage::{jittered, next_step};
use crate::run::RunArgs;
use crate::sink::WriteApi;

/// Exit code of a configuration error (BSD `sysexits.h` `EX_CONFIG`): a start-up check failed
/// or a setting cannot be used. Fix the configuration; restarting alone will not help.
pub(crate) const EXIT_CONFIG: u8 = 78;

/// Longest single attempt of one check.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Bound of one probe after start-up.
const PROBE_ATTEMPT: Duration = Duration::from_secs(3);
/// How often the dependencies are probed after start-up.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// One setting that does not work: what was checked, what was expected and found, what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// What was checked, with the settings it comes from.
    pub(crate) what: String,
    /// What it should be.
    pub(crate) expected: String,
    /// What it is.
    pub(crate) found: String,
    /// What to change.
    pub(crate) fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found: {}. Fix: {}",
            self.what, self.expected, self.found, self.fix
        )
    }
}

/// The configuration cannot work; the process exits with [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
pub(crate) struct ConfigError {
    /// Every problem found.
    pub(crate) problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "configuration error: {one}"),
            many => {
                write!(f, "configuration error: {} problems", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl ConfigError {
    /// One problem.
    pub(crate) fn one(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl fmt::Display,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError {
            problems: vec![Problem {
                what: what.into(),
                expected: expected.into(),
                found: found.to_string(),
                fix: fix.into(),
            }],
        }
    }
}

/// The exit code for an error that ends the process: [`EXIT_CONFIG`] for a configuration
/// error, 1 for anything else.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<ConfigError>()) {
        EXIT_CONFIG
    } else {
        1
    }
}

/// A failed attempt: the problem it shows, and whether asking again may help.
struct Failed {
    problem: Problem,
    transient: bool,
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` passes (each attempt
/// bounded by [`ATTEMPT`] and the time left; an attempt that runs out of time is reported as
/// `slow` with what was found filled in). Logs the first transient failure once.
async fn until_ready<T, F, Fut>(
    name: &str,
    slow: &Problem,
    deadline: Instant,
    started: Instant,
    mut attempt: F,
) -> Result<T, Problem>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, Failed>>,
{
    let mut step = Duration::from_millis(200);
    let mut attempts = 0u32;
    loop {
        let bound = ATTEMPT.min(deadline.saturating_duration_since(Instant::now()));
        attempts += 1;
        let failed = match tokio::time::timeout(bound, attempt(bound)).await {
            Ok(Ok(v)) => {
                if attempts > 1 {
                    tracing::info!(
                        check = name,
                        attempts,
                        waited_secs = started.elapsed().as_secs_f64(),
                        "{name} answers now"
                    );
                }
                return Ok(v);
            }
            Ok(Err(f)) => f,
            Err(_) => Failed {
                problem: Problem {
                    found: format!("no answer within {bound:.1?}"),
                    ..slow.clone()
                },
                transient: true,
            },
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if !failed.transient || left.is_zero() {
            let mut problem = failed.problem;
            if failed.transient {
                problem.found = format!(
                    "{} (still failing after {attempts} attempts in {:.1} s; the budget is \
                     --startup-timeout-secs / STARTUP_TIMEOUT_SECS)",
                    problem.found,
                    started.elapsed().as_secs_f64()
                );
            }
            return Err(problem);
        }
        if attempts == 1 {
            tracing::warn!(
                check = name,
                error = %failed.problem.found,
                "{name} does not answer yet; asking again until the start-up budget is spent"
            );
        }
        tokio::time::sleep(jittered(step, &mut rand::rng()).min(left)).await;
        step = next_step(step);
    }
}

/// What the checks built and the service goes on with.
pub(crate) struct Checked {
    /// The Pub/Sub connection.
    pub(crate) conn: Connection,
    /// The BigQuery client of the output table.
    pub(crate) bigquery: BigQuery,
    /// The clients for the periodic probes.
    pub(crate) probes: Probes,
}

/// Checks every dependency under the budget of `--startup-timeout-secs`. `Ok(None)` when `stop`
/// was cancelled first; [`ConfigError`] listing every problem otherwise.
pub(crate) async fn check(
    args: &RunArgs,
    users: Arc<UserDirectory>,
    store: Arc<CheckpointStore>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Checked>> {
    let budget = Duration::from_secs(args.lifecycle.startup_timeout_secs.max(1));
    let started = Instant::now();
    let deadline = started + budget;
    tracing::info!(
        budget_secs = budget.as_secs(),
        "checking Pub/Sub, Redis and BigQuery"
    );
    let checks = async {
        tokio::join!(
            check_pubsub(args, deadline, started),
            check_redis(args, &users, &store, deadline, started),
            check_bigquery(args, deadline, started),
        )
    };
    let (pubsub, redis, bigquery) = tokio::select! {
        _ = stop.cancelled() => return Ok(None),
        results = checks => results,
    };
    let mut problems = Vec::new();
    let pubsub = pubsub.map_err(|p| problems.extend(p)).ok();
    let redis = redis.map_err(|p| problems.push(p)).ok();
    let bigquery = bigquery.map_err(|p| problems.push(p)).ok();
    match (pubsub, redis, bigquery) {
        (Some((conn, admin)), Some(()), Some(bigquery)) => {
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "start-up checks passed: Pub/Sub, Redis and BigQuery answer, the topology and \
                 the table are as expected"
            );
            let probes = Probes {
                admin,
                click_subscription: args.pubsub.topology().click_subscription,
                bigquery: bigquery.clone(),
                touches: args.engine.models.any_multi_touch(),
                users,
                store,
            };
            Ok(Some(Checked {
                conn,
                bigquery,
                probes,
            }))
        }
        _ => Err(ConfigError { problems }.into()),
    }
}

fn pubsub_transient(e: &PubSubError) -> bool {
    matches!(
        e,
        PubSubError::Unreachable { .. }
            | PubSubError::Timeout { .. }
            | PubSubError::EmulatorUnreachable { .. }
    )
}

fn pubsub_where(args: &RunArgs) -> String {
    match args.pubsub.emulator_host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => {
            format!("the Pub/Sub emulator at {h} (PUBSUB_EMULATOR_HOST)")
        }
        _ => format!("Pub/Sub on Google Cloud (project {})", args.gcp.project_id),
    }
}

/// Pub/Sub answers; both subscriptions and the dead-letter and late topics exist.
async fn check_pubsub(
    args: &RunArgs,
    deadline: Instant,
    started: Instant,
) -> Result<(Connection, Admin), Vec<Problem>> {
    let topology = args.pubsub.topology();
    let place = pubsub_where(args);
    if let Err(e) = topology.validate() {
        return Err(vec![Problem {
            what: "the Pub/Sub topic and subscription names".into(),
            expected: "valid Pub/Sub ids".into(),
            found: e.to_string(),
            fix: "fix CLICK_TOPIC, CHECKOUT_TOPIC, CLICK_SUBSCRIPTION, CHECKOUT_SUBSCRIPTION, \
                  DEAD_LETTER_TOPIC or LATE_TOPIC"
                .into(),
        }]);
    }
    let reach_fix = match args.pubsub.emulator_host.as_deref() {
        Some(_) => "start the Pub/Sub emulator there, or fix PUBSUB_EMULATOR_HOST",
        None => {
            "check the network and the credentials (GOOGLE_APPLICATION_CREDENTIALS), or set \
             PUBSUB_EMULATOR_HOST to use the emulator"
        }
    };
    let unreachable = |e: PubSubError| Failed {
        transient: pubsub_transient(&e),
        problem: Problem {
            what: place.clone(),
            expected: "Pub/Sub to answer".into(),
            found: e.to_string(),
            fix: reach_fix.into(),
        },
    };
    let slow = Problem {
        what: place.clone(),
        expected: "Pub/Sub to answer".into(),
        found: String::new(),
        fix: reach_fix.into(),
    };
    let (conn, admin) = until_ready("Pub/Sub", &slow, deadline, started, |bound| {
        let (unreachable, topology) = (&unreachable, &topology);
        async move {
            let conn = Connection::connect(&args.gcp, &args.pubsub)
                .await
                .map_err(unreachable)?
                .with_timeout(bound);
            let admin = Admin::new(&conn).await.map_err(unreachable)?;
            // One call that reaches the server, so "answers" means answers.
            match admin.check_topic(&topology.click_topic).await {
                Ok(()) | Err(PubSubError::NotFound { .. }) => Ok((conn, admin)),
                Err(e) => Err(unreachable(e)),
            }
        }
    })
    .await
    .map_err(|p| vec![p])?;

    let needed: [(&str, &str, &str, &str); 4] = [
        (
            "subscription",
            &topology.click_subscription,
            "CLICK_SUBSCRIPTION",
            "default: CLICK_TOPIC",
        ),
        (
            "subscription",
            &topology.checkout_subscription,
            "CHECKOUT_SUBSCRIPTION",
            "default: CHECKOUT_TOPIC",
        ),
        (
            "topic",
            &topology.dead_letter_topic,
            "DEAD_LETTER_TOPIC",
            "",
        ),
        ("topic", &topology.late_topic, "LATE_TOPIC", ""),
    ];
    let mut problems = Vec::new();
    for (kind, id, setting, note) in needed {
        let missing = Problem {
            what: format!(
                "Pub/Sub {kind} {id:?} ({setting}{}) on {place}",
                if note.is_empty() {
                    String::new()
                } else {
                    format!(", {note}")
                }
            ),
            expected: format!("an existing {kind}"),
            found: String::new(),
            fix: format!(
                "run create-pubsub with the same PROJECT_ID and topic/subscription settings, or \
                 fix {setting}"
            ),
        };
        let name = format!("Pub/Sub {kind} {id}");
        let found = until_ready(&name, &missing, deadline, started, |_| {
            let (admin, missing) = (&admin, &missing);
            async move {
                let result = match kind {
                    "subscription" => admin.check_subscription(id).await,
                    _ => admin.check_topic(id).await,
                };
                result.map_err(|e| Failed {
                    transient: pubsub_transient(&e),
                    problem: Problem {
                        found: match &e {
                            PubSubError::NotFound { name, .. } => format!("no {kind} {name}"),
                            e => e.to_string(),
                        },
                        ..missing.clone()
                    },
                })
            }
        })
        .await;
        if let Err(p) = found {
            problems.push(p);
        }
    }
    if problems.is_empty() {
        Ok((conn, admin))
    } else {
        Err(problems)
    }
}

fn redis_problem(args: &RunArgs, what: &str, e: Option<&RedisError>) -> Failed {
    let fix = match e {
        Some(RedisError::Auth { .. }) => "fix REDIS_PASSWORD or the password in REDIS_URL",
        Some(RedisError::Checkpoint { .. }) => {
            "see `streaming state inspect`; `streaming state reset --yes` starts afresh, or \
             choose another CHECKPOINT_KEY"
        }
        _ => "start Redis there, or fix REDIS_URL (and REDIS_PASSWORD)",
    };
    Failed {
        transient: e.is_none_or(RedisError::is_transient),
        problem: Problem {
            what: format!("Redis at {} (REDIS_URL)", args.redis.redacted_url()),
            expected: what.to_string(),
            found: e.map(ToString::to_string).unwrap_or_default(),
            fix: fix.into(),
        },
    }
}

/// Redis answers `PING` (the user directory's connection) and the checkpoint's `meta` can be
/// read (the checkpoint store's connection; a checkpoint of another format is refused here).
async fn check_redis(
    args: &RunArgs,
    users: &UserDirectory,
    store: &CheckpointStore,
    deadline: Instant,
    started: Instant,
) -> Result<(), Problem> {
    let slow = redis_problem(args, "an answer to PING", None).problem;
    until_ready("Redis", &slow, deadline, started, |_| async move {
        users
            .ping()
            .await
            .map_err(|e| redis_problem(args, "an answer to PING", Some(&e)))?;
        store
            .meta()
            .await
            .map_err(|e| redis_problem(args, "a readable checkpoint", Some(&e)))?;
        Ok(())
    })
    .await
}

fn bigquery_where(args: &RunArgs) -> String {
    match &args.bigquery.emulator_host {
        Some(h) => format!("the BigQuery emulator at {h} (BIGQUERY_EMULATOR_HOST)"),
        None => "BigQuery on Google Cloud".to_string(),
    }
}

/// BigQuery answers and the output table exists with firstclick's schema.
async fn check_bigquery(
    args: &RunArgs,
    deadline: Instant,
    started: Instant,
) -> Result<BigQuery, Problem> {
    let table = format!(
        "{}.{}.{}",
        args.gcp.project_id, args.bigquery.dataset, args.bigquery.table
    );
    let bq = BigQuery::connect(&args.gcp, &args.bigquery)
        .await
        .map_err(|e| Problem {
            what: format!("the BigQuery client for {table}"),
            expected: "usable settings".into(),
            found: e.to_string(),
            fix: "fix PROJECT_ID, BQ_DATASET, BQ_TABLE, BIGQUERY_EMULATOR_HOST or \
                  GOOGLE_APPLICATION_CREDENTIALS"
                .into(),
        })?;
    let place = bigquery_where(args);
    let bq = &bq;
    let touches = args.engine.models.any_multi_touch();
    let slow = Problem {
        found: String::new(),
        ..bigquery_problem(None, &table, &place, args.bigquery.emulator_host.is_some())
    };
    let notes = until_ready("BigQuery", &slow, deadline, started, |_| async {
        bq.check_table(touches).await.map_err(|e| Failed {
            transient: e.is_transient(),
            problem: bigquery_problem(
                Some(&e),
                &table,
                &place,
                args.bigquery.emulator_host.is_some(),
            ),
        })
    })
    .await?;
    for note in notes {
        tracing::warn!(table = %table, "{note}");
    }
    if args.service.write_api == WriteApi::StorageWrite {
        check_storage_write(args, deadline, started).await?;
    }
    Ok(bq.clone())
}

/// `--bigquery-write-api storage-write`: this build writes through the emulator's gRPC port
/// only; it must take connections.
async fn check_storage_write(
    args: &RunArgs,
    deadline: Instant,
    started: Instant,
) -> Result<(), Problem> {
    let Some(address) = args.bigquery.emulator_grpc_address() else {
        return Err(Problem {
            what: "BIGQUERY_WRITE_API".into(),
            expected: "a write path this build can use".into(),
            found: "storage-write on Google Cloud (this build writes through the emulator's \
                    gRPC port only)"
                .into(),
            fix: "set BIGQUERY_WRITE_API=insert-all on Google Cloud".into(),
        });
    };
    let problem = |found: String| Problem {
        what: "the BigQuery emulator's gRPC (Storage Write) endpoint".into(),
        expected: format!("connections on {address}"),
        found,
        fix: "fix BIGQUERY_EMULATOR_GRPC_HOST (default: the REST host, port 9060), or set \
              BIGQUERY_WRITE_API=insert-all"
            .into(),
    };
    let slow = problem(String::new());
    until_ready(
        "BigQuery (Storage Write)",
        &slow,
        deadline,
        started,
        |_| async {
            tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(drop)
                .map_err(|e| Failed {
                    problem: problem(e.to_string()),
                    transient: true,
                })
        },
    )
    .await
}

fn bigquery_problem(e: Option<&EnsureError>, table: &str, place: &str, emulator: bool) -> Problem {
    let (expected, fix) = match e {
        Some(EnsureError::NotFound { .. }) => (
            "the output table".to_string(),
            "run create-bq-table with the same settings, or fix PROJECT_ID / BQ_DATASET / \
             BQ_TABLE"
                .to_string(),
        ),
        Some(EnsureError::SchemaMismatch { .. } | EnsureError::WrongKind { .. }) => (
            "a table with firstclick's schema (create-bq-table makes one)".to_string(),
            "migrate or drop the table and run create-bq-table, or point BQ_TABLE at another \
             name"
                .to_string(),
        ),
        _ if emulator => (
            "BigQuery to answer".to_string(),
            "start the BigQuery emulator there, or fix BIGQUERY_EMULATOR_HOST".to_string(),
        ),
        _ => (
            "BigQuery to answer".to_string(),
            "check the network, PROJECT_ID and the credentials \
             (GOOGLE_APPLICATION_CREDENTIALS)"
                .to_string(),
        ),
    };
    Problem {
        what: format!("table {table} (BQ_DATASET, BQ_TABLE) on {place}"),
        expected,
        found: match e {
            Some(EnsureError::NotFound { kind, name }) => format!("no {kind} {name}"),
            Some(e) => e.to_string(),
            None => String::new(),
        },
        fix,
    }
}

/// The dependencies' clients, for probing them after start-up.
pub(crate) struct Probes {
    admin: Admin,
    click_subscription: String,
    bigquery: BigQuery,
    /// Whether the touches table is needed (a multi-touch model runs).
    touches: bool,
    users: Arc<UserDirectory>,
    store: Arc<CheckpointStore>,
}

impl Probes {
    /// Probes every dependency once per [`PROBE_INTERVAL`] until `stop`, voting in
    /// [`crate::health`]; logs when one goes down and when it comes back.
    pub(crate) fn spawn(self, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut votes = Dependency::ALL.map(ProbeVote::new);
            let mut interval = tokio::time::interval(PROBE_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let (pubsub, redis, bigquery) = tokio::join!(
                    bounded(self.probe_pubsub()),
                    bounded(self.probe_redis()),
                    bounded(self.probe_bigquery()),
                );
                let health = health::global();
                for (vote, result) in votes.iter_mut().zip([pubsub, redis, bigquery]) {
                    let name = vote.dependency().label();
                    match &result {
                        Err(e) if !vote.is_open() => {
                            tracing::warn!(dependency = name, error = %e, "health probe: {name} is down");
                        }
                        Ok(()) if vote.is_open() => {
                            tracing::info!(dependency = name, "health probe: {name} is back");
                        }
                        _ => {}
                    }
                    vote.record(health, result.is_ok());
                }
            }
        });
    }

    async fn probe_pubsub(&self) -> Result<(), String> {
        self.admin
            .check_subscription(&self.click_subscription)
            .await
            .map_err(|e| e.to_string())
    }

    async fn probe_redis(&self) -> Result<(), String> {
        self.users.ping().await.map_err(|e| e.to_string())?;
        self.store
            .meta()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn probe_bigquery(&self) -> Result<(), String> {
        self.bigquery
            .check_table(self.touches)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `fut` bounded by [`PROBE_ATTEMPT`].
async fn bounded(fut: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_ATTEMPT, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {PROBE_ATTEMPT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn problem(found: &str) -> Problem {
        Problem {
            what: "Redis at redis://127.0.0.1:1 (REDIS_URL)".into(),
            expected: "an answer to PING".into(),
            found: found.into(),
            fix: "fix REDIS_URL".into(),
        }
    }

    #[test]
    fn a_config_error_exits_78_through_any_context() {
        let e = anyhow::Error::from(ConfigError {
            problems: vec![problem("refused")],
        })
        .context("outer");
        assert_eq!(exit_code(&e), EXIT_CONFIG);
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("BigQuery refuses the rows"));
        assert_eq!(exit_code(&e.context("while running").unwrap_err()), 1);
    }

    #[test]
    fn every_problem_is_listed_with_what_to_fix() {
        let one = ConfigError {
            problems: vec![problem("refused")],
        };
        assert_eq!(
            one.to_string(),
            "configuration error: Redis at redis://127.0.0.1:1 (REDIS_URL): expected an answer \
             to PING, found: refused. Fix: fix REDIS_URL"
        );
        let two = ConfigError {
            problems: vec![problem("a"), problem("b")],
        };
        let text = two.to_string();
        assert!(
            text.starts_with("configuration error: 2 problems\n  - "),
            "{text}"
        );
        assert_eq!(text.matches("Fix: fix REDIS_URL").count(), 2, "{text}");
    }

    #[tokio::test]
    async fn a_permanent_failure_ends_the_check_at_once() {
        let started = Instant::now();
        let mut attempts = 0;
        let result: Result<(), Problem> = until_ready(
            "test",
            &problem(""),
            started + Duration::from_secs(30),
            started,
            |_| {
                attempts += 1;
                async {
                    Err(Failed {
                        problem: problem("no table"),
                        transient: false,
                    })
                }
            },
        )
        .await;
        assert_eq!(attempts, 1);
        assert_eq!(result.unwrap_err().found, "no table");
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_the_budget_is_spent() {
        let started = Instant::now();
        let mut attempts = 0;
        let result: Result<(), Problem> = until_ready(
            "test",
            &problem(""),
            started + Duration::from_millis(1500),
            started,
            |_| {
                attempts += 1;
                async {
                    Err(Failed {
                        problem: problem("refused"),
                        transient: true,
                    })
                }
            },
        )
        .await;
        assert!(attempts >= 3, "{attempts} attempts");
        let found = result.unwrap_err().found;
        assert!(found.starts_with("refused (still failing after"), "{found}");
        assert!(started.elapsed() >= Duration::from_millis(1500));

        // A dependency that comes up in time passes.
        let mut attempts = 0;
        let result = until_ready(
            "test",
            &problem(""),
            Instant::now() + Duration::from_secs(10),
            Instant::now(),
            |_| {
                attempts += 1;
                let up = attempts >= 3;
                async move {
                    if up {
                        Ok(attempts)
                    } else {
                        Err(Failed {
                            problem: problem("loading"),
                            transient: true,
                        })
                    }
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
    }
}
