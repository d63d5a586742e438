//! The checks of every dependency, one implementation for two callers:
//! - **start-up**: before anything is consumed or restored, `streaming run` runs them
//!   ([`check`]) and refuses to start, with exit code [`EXIT_CONFIG`] (78, `EX_CONFIG`) and a
//!   message that names the setting to fix, when one fails;
//! - **`streaming check`** ([`crate::check`]) runs the same ones once each and prints them as a
//!   checklist.
//!
//! What is checked ([`run_checks`], each a line of the checklist):
//! - Pub/Sub answers; both subscriptions exist, are attached to their topics, can be pulled,
//!   and have the ack deadline the service's timings derive from (`PUBSUB_ACK_DEADLINE_SECS`);
//!   the dead-letter and late topics exist (`create-pubsub` makes them all);
//! - Redis answers `PING`, a user hash can be read, and the checkpoint, if there is one, is of
//!   this build's format and complete (`REDIS_URL`, `REDIS_PASSWORD`, `CHECKPOINT_KEY`);
//! - BigQuery answers, the output table (and, with a multi-touch model, the touches table)
//!   exists with firstclick's schema (the comparison of `create-bq-table`,
//!   [`BigQuery::check_table`]), and with `storage-write` the emulator's gRPC port takes
//!   connections;
//! - the settings make sense together ([`crate::check::settings`]).
//!
//! Every check only reads: nothing is pulled, acknowledged, published or written.
//!
//! At start-up the three services are checked side by side under one time budget
//! (`--startup-timeout-secs`, default 30 s, [`Budget::startup`]). Each attempt is bounded by a
//! few seconds; a dependency that does not answer yet (still starting, as in `docker compose
//! up`) is asked again with jittered backoff until the budget is spent, while an answer that
//! waiting cannot change (a missing table, refused credentials) fails at once. Every failure is
//! reported, not only the first. A stop signal ends the checks at once. `streaming check` asks
//! each dependency once, bounded by its own timeout ([`Budget::once`]).
//!
//! After start-up the service's liveness checks, one attempt each, run every
//! [`PROBE_INTERVAL`] ([`Probes`]) and vote in [`crate::health`], so `/readyz` and
//! `firstclick_dependency_up` show an outage even while no message needs the service that is
//! down.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstclick_bigquery::{BigQuery, EnsureError};
use firstclick_pubsub::{Admin, Connection, PubSubError, SubscriptionInfo};
use firstclick_redis::{CheckpointStore, RedisError, UserDirectory, META_FORMAT};
use tokio_util::sync::CancellationToken;

use crate::check::{Checklist, Group, Item};
use crate::health::{self, Dependency, ProbeVote};
use crate::outage::{jittered, next_step};
use crate::run::RunArgs;
use crate::sink::WriteApi;

/// Exit code of a configuration error (BSD `sysexits.h` `EX_CONFIG`): a start-up check failed
/// or a setting cannot be used. Fix the configuration; restarting alone will not help.
pub(crate) const EXIT_CONFIG: u8 = 78;

/// Longest single attempt of one check at start-up.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Bound of one probe after start-up.
const PROBE_ATTEMPT: Duration = Duration::from_secs(3);
/// How often the dependencies are probed after start-up.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The user whose hash the Redis check reads (any id will do: an absent user is an answer).
const PROBE_USER: firstclick_model::UserId = 1;

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
/// error (including a failed `streaming check`), 1 for anything else.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain()
        .any(|c| c.is::<ConfigError>() || c.is::<crate::check::ChecksFailed>())
    {
        EXIT_CONFIG
    } else {
        1
    }
}

/// How long the checks may take, and whether a dependency that does not answer yet is asked
/// again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    started: Instant,
    /// Until when a transient failure is retried; `None`: one attempt per check.
    deadline: Option<Instant>,
    /// Bound of one attempt.
    attempt: Duration,
}

impl Budget {
    /// The service's start-up: attempts of at most [`ATTEMPT`], retried until `total` has
    /// passed (`--startup-timeout-secs`).
    pub(crate) fn startup(total: Duration) -> Self {
        let started = Instant::now();
        Budget {
            started,
            deadline: Some(started + total),
            attempt: ATTEMPT,
        }
    }

    /// `streaming check`: one attempt per check, each bounded by `timeout`.
    pub(crate) fn once(timeout: Duration) -> Self {
        Budget {
            started: Instant::now(),
            deadline: None,
            attempt: timeout.max(Duration::from_millis(100)),
        }
    }

    /// The bound of the next attempt.
    fn bound(&self) -> Duration {
        match self.deadline {
            Some(d) => self
                .attempt
                .min(d.saturating_duration_since(Instant::now())),
            None => self.attempt,
        }
    }

    /// Time left for retries (zero without retries).
    fn left(&self) -> Duration {
        self.deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }
}

/// A failed attempt: the problem it shows, and whether asking again may help.
struct Failed {
    problem: Problem,
    transient: bool,
}

/// Runs `attempt` until it succeeds, fails for good, or the budget is spent (each attempt
/// bounded by [`Budget::bound`]; an attempt that runs out of time is reported as `slow` with
/// what was found filled in). Logs the first transient failure once.
async fn until_ready<T, F, Fut>(
    name: &str,
    slow: &Problem,
    budget: Budget,
    mut attempt: F,
) -> Result<T, Problem>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, Failed>>,
{
    let mut step = Duration::from_millis(200);
    let mut attempts = 0u32;
    loop {
        let bound = budget.bound();
        attempts += 1;
        let failed = match tokio::time::timeout(bound, attempt(bound)).await {
            Ok(Ok(v)) => {
                if attempts > 1 {
                    tracing::info!(
                        check = name,
                        attempts,
                        waited_secs = budget.started.elapsed().as_secs_f64(),
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
        let left = budget.left();
        if !failed.transient || left.is_zero() {
            let mut problem = failed.problem;
            if failed.transient && budget.deadline.is_some() {
                problem.found = format!(
                    "{} (still failing after {attempts} attempts in {:.1} s; the budget is \
                     --startup-timeout-secs / STARTUP_TIMEOUT_SECS)",
                    problem.found,
                    budget.started.elapsed().as_secs_f64()
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

/// The clients the checks built, for the service to go on with.
pub(crate) struct Clients {
    /// Pub/Sub's connection and admin client, once Pub/Sub answered.
    pub(crate) pubsub: Option<(Connection, Admin)>,
    /// The BigQuery client, once its settings were usable.
    pub(crate) bigquery: Option<BigQuery>,
}

/// Every check, the three services side by side, then the settings: the checklist (in a fixed
/// order, one item per check, a check that cannot run for an earlier failure skipped) and the
/// clients built on the way.
///
/// `redis` holds the user directory and the checkpoint store, or why they cannot be built (a
/// bad `REDIS_URL`: a failed check).
pub(crate) async fn run_checks(
    args: &RunArgs,
    redis: Result<(&UserDirectory, &CheckpointStore), &RedisError>,
    budget: Budget,
) -> (Checklist, Clients) {
    let ((mut items, pubsub), redis, (bq_items, bigquery)) = tokio::join!(
        check_pubsub(args, budget),
        check_redis(args, redis, budget),
        check_bigquery(args, budget),
    );
    items.extend(redis);
    items.extend(bq_items);
    items.extend(crate::check::settings(args));
    (Checklist { items }, Clients { pubsub, bigquery })
}

/// What the start-up checks built and the service goes on with.
pub(crate) struct Checked {
    /// The Pub/Sub connection.
    pub(crate) conn: Connection,
    /// The BigQuery client of the output table.
    pub(crate) bigquery: BigQuery,
    /// The clients for the periodic probes.
    pub(crate) probes: Probes,
}

/// The start-up checks: [`run_checks`] under the budget of `--startup-timeout-secs`. Warnings
/// are logged; `Ok(None)` when `stop` was cancelled first; [`ConfigError`] listing every
/// failure otherwise.
pub(crate) async fn check(
    args: &RunArgs,
    users: Arc<UserDirectory>,
    store: Arc<CheckpointStore>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Checked>> {
    let total = Duration::from_secs(args.lifecycle.startup_timeout_secs.max(1));
    let budget = Budget::startup(total);
    tracing::info!(
        budget_secs = total.as_secs(),
        "checking Pub/Sub, Redis and BigQuery"
    );
    let (list, clients) = tokio::select! {
        _ = stop.cancelled() => return Ok(None),
        results = run_checks(args, Ok((&users, &store)), budget) => results,
    };
    for item in list.warnings() {
        tracing::warn!(check = %item.check, "{}", item.line());
    }
    let problems = list.problems();
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }
    let (Some((conn, admin)), Some(bigquery)) = (clients.pubsub, clients.bigquery) else {
        anyhow::bail!("internal error: the start-up checks passed without their clients");
    };
    tracing::info!(
        took_ms = budget.started.elapsed().as_millis() as u64,
        "start-up checks passed: Pub/Sub, Redis and BigQuery answer, the topology and the \
         table are as expected"
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

/// Where Pub/Sub is, in words.
pub(crate) fn pubsub_where(args: &RunArgs) -> String {
    match args.pubsub.emulator_host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => {
            format!("the Pub/Sub emulator at {h} (PUBSUB_EMULATOR_HOST)")
        }
        _ => format!("Pub/Sub on Google Cloud (project {})", args.gcp.project_id),
    }
}

/// One subscription the service pulls.
struct Input<'a> {
    subscription: &'a str,
    topic: &'a str,
    /// Its settings: `CLICK_SUBSCRIPTION`.
    setting: &'static str,
    /// Its topic's setting: `CLICK_TOPIC`.
    topic_setting: &'static str,
}

impl Input<'_> {
    fn label(&self) -> String {
        format!("subscription {:?} ({})", self.subscription, self.setting)
    }

    fn deadline_label(&self) -> String {
        format!("ack deadline of {:?}", self.subscription)
    }
}

/// A topic the service publishes to.
fn topic_label(topic: &str, setting: &str) -> String {
    format!("topic {topic:?} ({setting})")
}

/// Pub/Sub answers; both subscriptions are as the service needs them; the dead-letter and late
/// topics exist.
async fn check_pubsub(args: &RunArgs, budget: Budget) -> (Vec<Item>, Option<(Connection, Admin)>) {
    const G: Group = Group::PubSub;
    let topology = args.pubsub.topology();
    let place = pubsub_where(args);
    let inputs = [
        Input {
            subscription: &topology.click_subscription,
            topic: &topology.click_topic,
            setting: "CLICK_SUBSCRIPTION",
            topic_setting: "CLICK_TOPIC",
        },
        Input {
            subscription: &topology.checkout_subscription,
            topic: &topology.checkout_topic,
            setting: "CHECKOUT_SUBSCRIPTION",
            topic_setting: "CHECKOUT_TOPIC",
        },
    ];
    let outputs = [
        (&topology.dead_letter_topic, "DEAD_LETTER_TOPIC"),
        (&topology.late_topic, "LATE_TOPIC"),
    ];
    // Every item after the first, skipped for `why`.
    let skip_rest = |why: &str| {
        let mut items = Vec::new();
        for input in &inputs {
            items.push(Item::skip(G, input.label(), why));
            items.push(Item::skip(G, input.deadline_label(), why));
        }
        for (topic, setting) in outputs {
            items.push(Item::skip(G, topic_label(topic, setting), why));
        }
        items
    };
    const ANSWERS: &str = "answers";
    if let Err(e) = topology.validate() {
        let mut items = vec![Item::fail(
            G,
            "topic and subscription names",
            Problem {
                what: "the Pub/Sub topic and subscription names".into(),
                expected: "valid Pub/Sub ids".into(),
                found: e.to_string(),
                fix: "fix CLICK_TOPIC, CHECKOUT_TOPIC, CLICK_SUBSCRIPTION, \
                      CHECKOUT_SUBSCRIPTION, DEAD_LETTER_TOPIC or LATE_TOPIC"
                    .into(),
            },
        )];
        items.extend(skip_rest("the names are not valid"));
        return (items, None);
    }
    let reach_fix = match args.pubsub.emulator_host.as_deref() {
        Some(_) => "start the Pub/Sub emulator there, or fix PUBSUB_EMULATOR_HOST",
        None => {
            "check the network and the credentials (GOOGLE_APPLICATION_CREDENTIALS), or set \
             PUBSUB_EMULATOR_HOST to use the emulator"
        }
    };
    let unreachable = |e: PubSubError| Failed {
        transient: e.is_transient(),
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
    let connected = until_ready("Pub/Sub", &slow, budget, |bound| {
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
    .await;
    let (conn, admin) = match connected {
        Ok(clients) => clients,
        Err(problem) => {
            let mut items = vec![Item::fail(G, ANSWERS, problem)];
            items.extend(skip_rest("Pub/Sub does not answer"));
            return (items, None);
        }
    };
    let mut items = vec![Item::pass(
        G,
        ANSWERS,
        format!("it answers (project {})", args.gcp.project_id),
    )];
    for input in &inputs {
        items.extend(check_input(args, &admin, input, &place, budget).await);
    }
    // Scaled out: every partition's subscriptions too (create-pubsub --partitions P).
    let parts = topology.partition_topologies();
    for part in &parts {
        for (subscription, topic) in [
            (&part.click_subscription, &part.click_topic),
            (&part.checkout_subscription, &part.checkout_topic),
        ] {
            let input = Input {
                subscription,
                topic,
                setting: "PARTITIONS",
                topic_setting: "PARTITIONS",
            };
            items.extend(check_input(args, &admin, &input, &place, budget).await);
        }
    }
    for (topic, setting) in outputs {
        items.push(check_output_topic(&admin, topic, setting, &place, budget).await);
    }
    (items, Some((conn, admin)))
}

fn missing_problem(kind: &str, id: &str, setting: &str, place: &str) -> Problem {
    let note = match setting {
        "CLICK_SUBSCRIPTION" => ", default: CLICK_TOPIC",
        "CHECKOUT_SUBSCRIPTION" => ", default: CHECKOUT_TOPIC",
        _ => "",
    };
    Problem {
        what: format!("Pub/Sub {kind} {id:?} ({setting}{note}) on {place}"),
        expected: format!("an existing {kind}"),
        found: String::new(),
        fix: format!(
            "run create-pubsub with the same PROJECT_ID and topic/subscription settings, or fix \
             {setting}"
        ),
    }
}

/// Reads one resource through `until_ready`, a missing one reported as `missing`.
async fn read_resource<T, Fut>(
    missing: &Problem,
    budget: Budget,
    read: impl Fn() -> Fut,
) -> Result<T, Problem>
where
    Fut: Future<Output = Result<T, PubSubError>>,
{
    until_ready(&missing.what, missing, budget, |_| {
        let fut = read();
        async move {
            fut.await.map_err(|e| Failed {
                transient: e.is_transient(),
                problem: Problem {
                    found: match &e {
                        PubSubError::NotFound { kind, name } => format!("no {kind} {name}"),
                        e => e.to_string(),
                    },
                    ..missing.clone()
                },
            })
        }
    })
    .await
}

/// One input subscription: it exists, is attached to its topic and can be pulled (one item),
/// and its ack deadline is the one the service's timings assume (another).
async fn check_input(
    args: &RunArgs,
    admin: &Admin,
    input: &Input<'_>,
    place: &str,
    budget: Budget,
) -> [Item; 2] {
    const G: Group = Group::PubSub;
    let missing = missing_problem("subscription", input.subscription, input.setting, place);
    let info = read_resource(&missing, budget, || admin.subscription(input.subscription)).await;
    let info = match info {
        Ok(info) => info,
        Err(problem) => {
            return [
                Item::fail(G, input.label(), problem),
                Item::skip(G, input.deadline_label(), "no subscription to read it from"),
            ];
        }
    };
    let expected_topic = admin.connection().topic_path(input.topic);
    let what = format!(
        "Pub/Sub subscription {:?} ({}) on {place}",
        input.subscription, input.setting
    );
    let attached = if info.topic != expected_topic {
        Some(Problem {
            what: what.clone(),
            expected: format!(
                "a subscription of topic {expected_topic} ({})",
                input.topic_setting
            ),
            found: format!("it is attached to {}", info.topic),
            fix: format!(
                "set {} to the topic it reads, or {} to a subscription of {}",
                input.topic_setting, input.setting, input.topic
            ),
        })
    } else if let Some(endpoint) = &info.push_endpoint {
        Some(Problem {
            what: what.clone(),
            expected: "a pull subscription (the service pulls)".into(),
            found: format!("a push subscription to {endpoint}"),
            fix: format!(
                "create a pull subscription (create-pubsub) and point {} at it",
                input.setting
            ),
        })
    } else if info.detached {
        Some(Problem {
            what: what.clone(),
            expected: "a subscription attached to its topic".into(),
            found: "it is detached: it receives nothing".into(),
            fix: format!(
                "delete it and run create-pubsub, or point {} at another subscription",
                input.setting
            ),
        })
    } else {
        None
    };
    let first = match attached {
        Some(problem) => Item::fail(G, input.label(), problem),
        None => subscription_notes(&info, input, &what),
    };
    [first, check_ack_deadline(args, &info, input, place)]
}

/// A subscription that works: passes, or warns about a filter or a dead-letter policy.
fn subscription_notes(info: &SubscriptionInfo, input: &Input<'_>, what: &str) -> Item {
    const G: Group = Group::PubSub;
    let mut notes = Vec::new();
    if !info.filter.is_empty() {
        notes.push(format!(
            "it has the filter {:?}: messages that do not match it never reach the service",
            info.filter
        ));
    }
    if let Some((topic, attempts)) = &info.dead_letter {
        notes.push(format!(
            "it has a dead-letter policy (to {topic} after {attempts} delivery attempts): a \
             message redelivered that often, e.g. across restarts, goes there instead of being \
             attributed (the service dead-letters bad messages itself, to DEAD_LETTER_TOPIC)"
        ));
    }
    let topic = info.topic.rsplit('/').next().unwrap_or(&info.topic);
    if notes.is_empty() {
        return Item::pass(
            G,
            input.label(),
            format!("pull subscription of topic {topic:?}, no filter, no dead-letter policy"),
        );
    }
    Item::warn(
        G,
        input.label(),
        Problem {
            what: what.to_string(),
            expected: "no filter and no dead-letter policy".into(),
            found: notes.join("; "),
            fix: format!(
                "remove them (gcloud pubsub subscriptions update {} --clear-dead-letter-policy), \
                 or use a subscription without them",
                input.subscription
            ),
        },
    )
}

/// The recovery hold after a crash (`RECOVERY_HOLD_SECS`, default: ack deadline + 5 s).
pub(crate) fn recovery_hold_secs(args: &RunArgs) -> u64 {
    args.service
        .recovery_hold_secs
        .unwrap_or(u64::from(args.pubsub.ack_deadline_secs) + 5)
}

/// The subscription's ack deadline against `PUBSUB_ACK_DEADLINE_SECS`: after a crash, the
/// messages the dead worker held come back when their leases expire, and the recovery hold
/// (`RECOVERY_HOLD_SECS`, default: that deadline + 5 s) waits for them. A longer deadline on
/// the subscription than the hold covers fails (they could come back after the hold, as late
/// clicks); a shorter one only warns (the service extends every lease it holds).
fn check_ack_deadline(
    args: &RunArgs,
    info: &SubscriptionInfo,
    input: &Input<'_>,
    place: &str,
) -> Item {
    const G: Group = Group::PubSub;
    let want = i64::from(args.pubsub.ack_deadline_secs);
    let found = i64::from(info.ack_deadline_secs);
    let hold = recovery_hold_secs(args);
    if found == want {
        return Item::pass(
            G,
            input.deadline_label(),
            format!("{found} s (PUBSUB_ACK_DEADLINE_SECS; recovery hold {hold} s)"),
        );
    }
    let problem = Problem {
        what: format!(
            "the ack deadline of Pub/Sub subscription {:?} ({}) on {place}",
            input.subscription, input.setting
        ),
        expected: format!("{want} s (PUBSUB_ACK_DEADLINE_SECS)"),
        found: format!("{found} s"),
        fix: format!(
            "set the subscription's ack deadline to {want} s (gcloud pubsub subscriptions \
             update {} --ack-deadline={want}; on the emulator delete it and run create-pubsub), \
             or set PUBSUB_ACK_DEADLINE_SECS={found}",
            input.subscription
        ),
    };
    if found + 5 > i64::try_from(hold).unwrap_or(i64::MAX) {
        Item::fail(
            G,
            input.deadline_label(),
            Problem {
                found: format!(
                    "{found} s: after a crash its messages can come back after the recovery \
                     hold ({hold} s, RECOVERY_HOLD_SECS) is over, and count as late"
                ),
                ..problem
            },
        )
    } else {
        Item::warn(
            G,
            input.deadline_label(),
            Problem {
                found: format!("{found} s (the service's timings assume {want} s)"),
                ..problem
            },
        )
    }
}

/// A topic the service publishes to exists.
async fn check_output_topic(
    admin: &Admin,
    topic: &str,
    setting: &'static str,
    place: &str,
    budget: Budget,
) -> Item {
    let missing = missing_problem("topic", topic, setting, place);
    match read_resource(&missing, budget, || admin.check_topic(topic)).await {
        Ok(()) => Item::pass(Group::PubSub, topic_label(topic, setting), "exists"),
        Err(problem) => Item::fail(Group::PubSub, topic_label(topic, setting), problem),
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

/// Redis answers `PING` (the user directory's connection); a user hash can be read; the
/// checkpoint, if any, is of this build's format and complete (the checkpoint store's
/// connection).
async fn check_redis(
    args: &RunArgs,
    redis: Result<(&UserDirectory, &CheckpointStore), &RedisError>,
    budget: Budget,
) -> Vec<Item> {
    const G: Group = Group::Redis;
    const PING: &str = "answers PING";
    let users_label = "user hashes readable";
    let checkpoint_label = format!(
        "checkpoint {:?} (CHECKPOINT_KEY)",
        crate::run::checkpoint_name(args)
    );
    let (users, store) = match redis {
        Ok(clients) => clients,
        Err(e) => {
            let problem = Problem {
                what: "REDIS_URL".into(),
                expected: "a Redis URL".into(),
                found: e.to_string(),
                fix: "fix REDIS_URL (and REDIS_PASSWORD)".into(),
            };
            let why = "no usable Redis settings";
            return vec![
                Item::fail(G, PING, problem),
                Item::skip(G, users_label, why),
                Item::skip(G, checkpoint_label, why),
            ];
        }
    };
    let slow = redis_problem(args, "an answer to PING", None).problem;
    let ping = until_ready("Redis", &slow, budget, |_| async move {
        users
            .ping()
            .await
            .map_err(|e| redis_problem(args, "an answer to PING", Some(&e)))
    })
    .await;
    if let Err(problem) = ping {
        let why = "Redis does not answer";
        return vec![
            Item::fail(G, PING, problem),
            Item::skip(G, users_label, why),
            Item::skip(G, checkpoint_label, why),
        ];
    }
    let mut items = vec![Item::pass(G, PING, "PONG")];
    let expected = "user hashes (HGET user_{id} user_name) to be readable";
    let slow = redis_problem(args, expected, None).problem;
    let read = until_ready("Redis (users)", &slow, budget, |_| async move {
        users
            .read_name_uncached(PROBE_USER)
            .await
            .map_err(|e| redis_problem(args, expected, Some(&e)))
    })
    .await;
    items.push(match read {
        Ok(name) => Item::pass(
            G,
            users_label,
            format!(
                "HGET user_{PROBE_USER} user_name answers ({})",
                if name.is_some() {
                    "a name"
                } else {
                    "no such user"
                }
            ),
        ),
        Err(problem) => Item::fail(G, users_label, problem),
    });
    let expected = "a readable checkpoint";
    let slow = redis_problem(args, expected, None).problem;
    let found = until_ready("Redis (checkpoint)", &slow, budget, |_| async move {
        checkpoint_state(args, store)
            .await
            .map_err(|e| redis_problem(args, expected, Some(&e)))
    })
    .await;
    items.push(match found {
        Ok(Ok(state)) => Item::pass(G, checkpoint_label, state),
        Ok(Err(problem)) => Item::fail(G, checkpoint_label, problem),
        Err(problem) => Item::fail(G, checkpoint_label, problem),
    });
    items
}

/// The checkpoint in words, from its `meta` and the lengths of its lists (a restore reads it
/// all; this reads none of its elements). `Ok(Err(_))`: it is there but the service would
/// refuse it.
async fn checkpoint_state(
    args: &RunArgs,
    store: &CheckpointStore,
) -> Result<Result<String, Problem>, RedisError> {
    let refused = |found: String, fix: String| Problem {
        what: format!(
            "checkpoint {} on Redis at {} (CHECKPOINT_KEY)",
            store.name(),
            args.redis.redacted_url()
        ),
        expected: format!("no checkpoint, or a complete one of format version {META_FORMAT}"),
        found,
        fix,
    };
    let Some(meta) = store.meta().await? else {
        if args.service.checkpoint_key.is_none() {
            let legacy = crate::state::legacy_key(
                &args.gcp.project_id,
                &args.pubsub.topology().click_subscription,
            );
            if store.string_exists(&legacy).await? {
                return Ok(Err(refused(
                    format!("a version-1 checkpoint (one JSON string) at key {legacy}"),
                    format!(
                        "delete it (`redis-cli DEL {legacy}`) to start afresh: messages not yet \
                         acknowledged are redelivered, rows already written stay"
                    ),
                )));
            }
        }
        return Ok(Ok(format!(
            "none yet under firstclick:{{{}}}:* (the service starts with empty state)",
            store.name()
        )));
    };
    if meta.generation > 0 {
        let pieces = store.base_len(meta.generation).await?;
        if pieces != meta.base_pieces {
            return Ok(Err(refused(
                format!(
                    "base {} has {pieces} pieces, its meta says {}",
                    meta.generation, meta.base_pieces
                ),
                "`streaming state reset --yes` starts afresh".into(),
            )));
        }
    }
    let log = store.log_len().await?;
    Ok(Ok(format!(
        "format version {} (this build reads {META_FORMAT}), base generation {} ({} pieces, {} \
         bytes), changelog {log} elements",
        meta.format, meta.generation, meta.base_pieces, meta.base_bytes
    )))
}

/// Where BigQuery is, in words.
pub(crate) fn bigquery_where(args: &RunArgs) -> String {
    match &args.bigquery.emulator_host {
        Some(h) => format!("the BigQuery emulator at {h} (BIGQUERY_EMULATOR_HOST)"),
        None => "BigQuery on Google Cloud".to_string(),
    }
}

/// BigQuery answers; the output table (and the touches table when a multi-touch model runs)
/// exists with firstclick's schema; with `storage-write`, the gRPC port takes connections.
async fn check_bigquery(args: &RunArgs, budget: Budget) -> (Vec<Item>, Option<BigQuery>) {
    const G: Group = Group::BigQuery;
    let path = |table: &str| format!("{}.{}.{table}", args.gcp.project_id, args.bigquery.dataset);
    let (table, touches_table) = (
        path(&args.bigquery.table),
        path(&args.bigquery.touches_table),
    );
    let table_label = format!("table {table} (BQ_DATASET, BQ_TABLE)");
    let touches_label = format!("touches table {touches_table} (BQ_TOUCHES_TABLE)");
    let grpc_label = "Storage Write endpoint (BIGQUERY_EMULATOR_GRPC_HOST)";
    let multi_touch = args.engine.models.any_multi_touch();
    let grpc = async {
        if args.service.write_api == WriteApi::StorageWrite {
            check_storage_write(args, budget).await
        } else {
            Item::skip(G, grpc_label, "not used (BIGQUERY_WRITE_API=insert-all)")
        }
    };
    let tables = async {
        let bq = match BigQuery::connect(&args.gcp, &args.bigquery).await {
            Ok(bq) => bq,
            Err(e) => {
                let problem = Problem {
                    what: format!("the BigQuery client for {table}"),
                    expected: "usable settings".into(),
                    found: e.to_string(),
                    fix: "fix PROJECT_ID, BQ_DATASET, BQ_TABLE, BQ_TOUCHES_TABLE, \
                          BIGQUERY_EMULATOR_HOST or GOOGLE_APPLICATION_CREDENTIALS"
                        .into(),
                };
                let why = "the BigQuery client cannot be built";
                return (
                    [
                        Item::fail(G, table_label.as_str(), problem),
                        Item::skip(G, touches_label.as_str(), why),
                    ],
                    None,
                );
            }
        };
        let place = bigquery_where(args);
        let emulator = args.bigquery.emulator_host.is_some();
        let slow = |name: &str, touches| Problem {
            found: String::new(),
            ..bigquery_problem(None, name, touches, &place, emulator)
        };
        let failed = |e: EnsureError, name: &str, touches| Failed {
            transient: e.is_transient(),
            problem: bigquery_problem(Some(&e), name, touches, &place, emulator),
        };
        let found = until_ready("BigQuery", &slow(&table, false), budget, |_| async {
            bq.check_table(false)
                .await
                .map_err(|e| failed(e, &table, false))
        })
        .await;
        let table_item = schema_item(&table_label, found);
        let touches_item = if multi_touch {
            let slow = slow(&touches_table, true);
            let found = until_ready("BigQuery (touches)", &slow, budget, |_| async {
                bq.check_touches_table()
                    .await
                    .map_err(|e| failed(e, &touches_table, true))
            })
            .await;
            schema_item(&touches_label, found)
        } else {
            Item::skip(
                G,
                touches_label.as_str(),
                format!(
                    "not needed: no multi-touch model (ATTRIBUTION_MODEL={})",
                    args.engine.models
                ),
            )
        };
        ([table_item, touches_item], Some(bq))
    };
    // Side by side: a closed gRPC port retried at start-up must not eat the tables' budget.
    let (grpc, (tables, bq)) = tokio::join!(grpc, tables);
    let mut items = Vec::from(tables);
    items.push(grpc);
    (items, bq)
}

/// A table's item: passes, warns with its notes (descriptions, partitioning, clustering), or
/// fails.
fn schema_item(label: &str, found: Result<Vec<String>, Problem>) -> Item {
    const G: Group = Group::BigQuery;
    match found {
        Ok(notes) if notes.is_empty() => Item::pass(G, label, "exists with firstclick's schema"),
        Ok(notes) => Item::warn(
            G,
            label,
            Problem {
                what: label.to_string(),
                expected: "firstclick's table settings".into(),
                found: notes.join("; "),
                fix: "none needed to run; create-bq-table makes a table with them all".into(),
            },
        ),
        Err(problem) => Item::fail(G, label, problem),
    }
}

/// `--bigquery-write-api storage-write`: this build writes through the emulator's gRPC port
/// only; it must take connections.
async fn check_storage_write(args: &RunArgs, budget: Budget) -> Item {
    const LABEL: &str = "Storage Write endpoint (BIGQUERY_EMULATOR_GRPC_HOST)";
    let Some(address) = args.bigquery.emulator_grpc_address() else {
        return Item::fail(
            Group::BigQuery,
            LABEL,
            Problem {
                what: "BIGQUERY_WRITE_API".into(),
                expected: "a write path this build can use".into(),
                found: "storage-write on Google Cloud (this build writes through the \
                        emulator's gRPC port only)"
                    .into(),
                fix: "set BIGQUERY_WRITE_API=insert-all on Google Cloud".into(),
            },
        );
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
    let found = until_ready("BigQuery (Storage Write)", &slow, budget, |_| async {
        tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(drop)
            .map_err(|e| Failed {
                problem: problem(e.to_string()),
                transient: true,
            })
    })
    .await;
    match found {
        Ok(()) => Item::pass(
            Group::BigQuery,
            LABEL,
            format!("{address} takes connections"),
        ),
        Err(p) => Item::fail(Group::BigQuery, LABEL, p),
    }
}

/// What is wrong with the output table (`touches`: the touches table), or with BigQuery.
fn bigquery_problem(
    e: Option<&EnsureError>,
    table: &str,
    touches: bool,
    place: &str,
    emulator: bool,
) -> Problem {
    let (which, setting) = match touches {
        false => ("the output table", "BQ_TABLE"),
        true => ("the touches table", "BQ_TOUCHES_TABLE"),
    };
    let (expected, fix) = match e {
        Some(EnsureError::NotFound { .. }) => (
            which.to_string(),
            format!(
                "run create-bq-table with the same settings, or fix PROJECT_ID / BQ_DATASET / \
                 {setting}"
            ),
        ),
        Some(EnsureError::SchemaMismatch { .. } | EnsureError::WrongKind { .. }) => (
            "a table with firstclick's schema (create-bq-table makes one)".to_string(),
            format!(
                "migrate or drop the table and run create-bq-table, or point {setting} at \
                 another name"
            ),
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
        what: format!("table {table} (BQ_DATASET, {setting}) on {place}"),
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
        let mut attempts = 0;
        let result: Result<(), Problem> = until_ready(
            "test",
            &problem(""),
            Budget::startup(Duration::from_secs(30)),
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
            Budget::startup(Duration::from_millis(1500)),
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
            Budget::startup(Duration::from_secs(10)),
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

    #[tokio::test]
    async fn once_asks_a_transient_failure_a_single_time() {
        let started = Instant::now();
        let mut attempts = 0;
        let result: Result<(), Problem> = until_ready(
            "test",
            &problem(""),
            Budget::once(Duration::from_secs(5)),
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
        assert_eq!(attempts, 1);
        // No note about the start-up budget: there was none.
        assert_eq!(result.unwrap_err().found, "refused");
        assert!(started.elapsed() < Duration::from_secs(1));

        // An attempt that hangs ends at the timeout, reported as no answer.
        let result: Result<(), Problem> = until_ready(
            "test",
            &problem(""),
            Budget::once(Duration::from_millis(300)),
            |_| std::future::pending(),
        )
        .await;
        assert!(result.unwrap_err().found.starts_with("no answer within"));
    }
}
