//! `streaming check`: validates a deployment's configuration against the real services without
//! consuming anything, and prints a checklist (like `vector validate`); exit 0 when every check
//! passes, [`EXIT_CONFIG`](crate::preflight::EXIT_CONFIG) (78) when one fails.
//!
//! This module owns:
//! - the checklist: [`Item`] (one check: its [`Group`], [`Status`], what was found, and for a
//!   failure or a warning the [`Problem`] with what was expected and what to fix) and
//!   [`Checklist`], with its text (`✓ ✗ ! -`, or `ok FAIL warn skip` with `--plain`) and JSON
//!   (`--json`) renderings;
//! - the checks of the settings alone, no service asked ([`settings`]: models, the event-time
//!   windows, the recovery hold, partitions);
//! - the command itself ([`CheckArgs`], [`run`]).
//!
//! The checks of Pub/Sub, Redis and BigQuery are [`crate::preflight`]'s: the service's start-up
//! runs the very same functions ([`preflight::run_checks`]), retrying a dependency that does not
//! answer yet until its budget is spent, where `check` asks each one once, bounded by
//! `--timeout-secs`. So `check` passes exactly when the start-up checks would.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use firstclick_redis::{CheckpointStore, UserDirectory};
use serde::Serialize;

use crate::preflight::{self, Budget, Problem};
use crate::run::RunArgs;

/// The exit status of `streaming check`, for `--help`.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   every check passed (warnings do not count)
  1   the checklist could not be printed
  2   bad command line
  78  a check failed (EX_CONFIG), as the service's start-up checks would; its line says what
      was expected, what was found and what to fix";

/// `streaming check`.
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Print JSON (one entry per check) instead of the checklist.
    #[arg(long)]
    pub(crate) json: bool,
    /// Mark the lines with ok / FAIL / warn / skip instead of ✓ ✗ ! -.
    #[arg(long)]
    pub(crate) plain: bool,
    /// Seconds each check may take: a service that does not answer within it fails its check
    /// (asked once; the service's start-up asks again until STARTUP_TIMEOUT_SECS).
    #[arg(long = "timeout-secs", env = "CHECK_TIMEOUT_SECS", default_value_t = 5)]
    pub(crate) timeout_secs: u64,
    /// The service's settings, exactly those of `streaming run`.
    #[command(flatten)]
    pub(crate) run: Box<RunArgs>,
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// As the service needs it.
    Pass,
    /// Works, but probably not what was meant; does not stop the service.
    Warn,
    /// The service would refuse to start.
    Fail,
    /// Not checked: not needed by this configuration, or an earlier check failed.
    Skip,
}

impl Status {
    fn mark(self, plain: bool) -> &'static str {
        match (self, plain) {
            (Status::Pass, false) => "✓",
            (Status::Warn, false) => "!",
            (Status::Fail, false) => "✗",
            (Status::Skip, false) => "-",
            (Status::Pass, true) => "ok  ",
            (Status::Warn, true) => "warn",
            (Status::Fail, true) => "FAIL",
            (Status::Skip, true) => "skip",
        }
    }
}

/// What a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Group {
    /// Topics and subscriptions.
    #[serde(rename = "pubsub")]
    PubSub,
    /// Users and the checkpoint.
    Redis,
    /// The output tables.
    #[serde(rename = "bigquery")]
    BigQuery,
    /// The settings alone.
    Settings,
}

impl Group {
    const ALL: [Group; 4] = [
        Group::PubSub,
        Group::Redis,
        Group::BigQuery,
        Group::Settings,
    ];

    /// The heading of the group's lines: the service and where it is.
    fn heading(self, args: &RunArgs) -> String {
        match self {
            Group::PubSub => format!("Pub/Sub: {}", preflight::pubsub_where(args)),
            Group::Redis => format!("Redis: {} (REDIS_URL)", args.redis.redacted_url()),
            Group::BigQuery => format!(
                "BigQuery: {}, project {}",
                preflight::bigquery_where(args),
                args.gcp.project_id
            ),
            Group::Settings => "Settings".to_string(),
        }
    }
}

/// One check and its outcome.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    /// What it is about.
    pub(crate) group: Group,
    /// What was checked, with the setting it comes from, e.g. `subscription "clicks"
    /// (CLICK_SUBSCRIPTION)`.
    pub(crate) check: String,
    /// The outcome.
    pub(crate) status: Status,
    /// What was found (for a skipped check: why it was not checked).
    pub(crate) found: String,
    /// For a failure or a warning: what was expected and what to fix.
    pub(crate) problem: Option<Problem>,
}

impl Item {
    /// A check that passed.
    pub(crate) fn pass(group: Group, check: impl Into<String>, found: impl Into<String>) -> Self {
        Item {
            group,
            check: check.into(),
            status: Status::Pass,
            found: found.into(),
            problem: None,
        }
    }

    /// A check not made, and why.
    pub(crate) fn skip(group: Group, check: impl Into<String>, why: impl Into<String>) -> Self {
        Item {
            status: Status::Skip,
            ..Item::pass(group, check, why)
        }
    }

    /// A check that failed.
    pub(crate) fn fail(group: Group, check: impl Into<String>, problem: Problem) -> Self {
        Item {
            group,
            check: check.into(),
            status: Status::Fail,
            found: problem.found.clone(),
            problem: Some(problem),
        }
    }

    /// A check that found something to look at, which does not stop the service.
    pub(crate) fn warn(group: Group, check: impl Into<String>, problem: Problem) -> Self {
        Item {
            status: Status::Warn,
            ..Item::fail(group, check, problem)
        }
    }

    /// The item on one line, without its mark.
    pub(crate) fn line(&self) -> String {
        match &self.problem {
            Some(p) => format!(
                "{}: expected {}, found: {}. Fix: {}",
                self.check, p.expected, p.found, p.fix
            ),
            None => format!("{}: {}", self.check, self.found),
        }
    }
}

/// Every check of a configuration, in a fixed order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Checklist {
    /// The checks.
    pub(crate) items: Vec<Item>,
}

impl Checklist {
    fn count(&self, status: Status) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }

    /// The problems of the failed checks.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        self.items
            .iter()
            .filter(|i| i.status == Status::Fail)
            .filter_map(|i| i.problem.clone())
            .collect()
    }

    /// The checks that warn.
    pub(crate) fn warnings(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.status == Status::Warn)
    }

    /// The checklist as text, grouped by service.
    fn write_text(&self, out: &mut impl Write, args: &RunArgs, plain: bool) -> std::io::Result<()> {
        for group in Group::ALL {
            let mut items = self.items.iter().filter(|i| i.group == group).peekable();
            if items.peek().is_none() {
                continue;
            }
            writeln!(out, "{}", group.heading(args))?;
            for item in items {
                let mark = item.status.mark(plain);
                match &item.problem {
                    Some(p) => {
                        writeln!(
                            out,
                            "  {mark} {}: expected {}, found: {}",
                            item.check, p.expected, p.found
                        )?;
                        writeln!(out, "      fix: {}", p.fix)?;
                    }
                    None => writeln!(out, "  {mark} {}: {}", item.check, item.found)?,
                }
            }
        }
        let failed = self.count(Status::Fail);
        writeln!(
            out,
            "\n{} checks: {} passed, {} warnings, {failed} failed, {} skipped. {}",
            self.items.len(),
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Skip),
            if failed == 0 {
                "`streaming run` would start with this configuration."
            } else {
                "Fix the failed checks and run `streaming check` again."
            }
        )
    }

    /// The checklist as JSON: `ok`, the counts, and `checks`, one entry per check.
    fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|i| {
                let mut entry = serde_json::json!({
                    "group": i.group,
                    "check": i.check,
                    "status": i.status,
                    "found": i.found,
                });
                if let (Some(p), Some(map)) = (&i.problem, entry.as_object_mut()) {
                    map.insert("what".into(), p.what.clone().into());
                    map.insert("expected".into(), p.expected.clone().into());
                    map.insert("fix".into(), p.fix.clone().into());
                }
                entry
            })
            .collect();
        let failed = self.count(Status::Fail);
        serde_json::json!({
            "ok": failed == 0,
            "exit_code": if failed == 0 { 0 } else { preflight::EXIT_CONFIG },
            "passed": self.count(Status::Pass),
            "warnings": self.count(Status::Warn),
            "failed": failed,
            "skipped": self.count(Status::Skip),
            "checks": checks,
        })
    }
}

/// `streaming check` found failures; the process exits with
/// [`EXIT_CONFIG`](crate::preflight::EXIT_CONFIG).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} checks failed; each line marked as failed says what to fix")]
pub(crate) struct ChecksFailed {
    /// Failed checks.
    pub(crate) failed: usize,
    /// All checks.
    pub(crate) total: usize,
}

/// Runs every check once and prints the checklist; [`ChecksFailed`] when one fails.
pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let run = &*args.run;
    let budget = Budget::once(Duration::from_secs(args.timeout_secs.max(1)));
    // Built as `streaming run` builds them; neither connects yet.
    let users = UserDirectory::new(&run.redis);
    let store = CheckpointStore::new(&run.redis, crate::run::checkpoint_name(run));
    let redis = match (&users, &store) {
        (Ok(users), Ok(store)) => Ok((users, store)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (list, _clients) = preflight::run_checks(run, redis, budget).await;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list.to_json())?)?;
    } else {
        list.write_text(&mut out, run, args.plain)?;
    }
    out.flush()?;
    match list.count(Status::Fail) {
        0 => Ok(()),
        failed => Err(ChecksFailed {
            failed,
            total: list.items.len(),
        }
        .into()),
    }
}

/// The checks of the settings alone (no service is asked). None of them fails: each warns
/// about a combination that works but is probably not what was meant.
pub(crate) fn settings(args: &RunArgs) -> Vec<Item> {
    vec![
        models(args),
        windows(args),
        recovery_hold(args),
        partitions(args),
    ]
}

const S: Group = Group::Settings;

fn models(args: &RunArgs) -> Item {
    let models = args.engine.models;
    let found = if models.any_multi_touch() {
        format!("{models} (multi-touch: credits go to BQ_TOUCHES_TABLE)")
    } else {
        models.to_string()
    };
    Item::pass(S, "attribution models (ATTRIBUTION_MODEL)", found)
}

/// Lookback, out-of-orderness and idle timeout.
fn windows(args: &RunArgs) -> Item {
    let e = &args.engine;
    let (lookback, ooo, idle) = (
        e.lookback_secs,
        e.out_of_orderness_secs,
        e.idle_timeout_secs,
    );
    let label = "lookback / out-of-orderness / idle timeout";
    let found = format!("{lookback} s / {ooo} s / {idle} s");
    let mut notes = Vec::new();
    if lookback == 0 {
        notes.push(
            "LOOKBACK_SECS is 0: only a click at the very microsecond of its checkout counts"
                .to_string(),
        );
    } else if ooo >= lookback {
        notes.push(format!(
            "OUT_OF_ORDERNESS_SECS ({ooo} s) is not below LOOKBACK_SECS ({lookback} s): every \
             row waits for late clicks longer than the window it looks back over"
        ));
    }
    if idle == 0 {
        notes.push(
            "IDLE_TIMEOUT_SECS is 0: every stream counts as idle at once, so the watermark \
             follows processing time between clicks and clicks a little behind become late"
                .to_string(),
        );
    }
    if notes.is_empty() {
        return Item::pass(S, label, found);
    }
    Item::warn(
        S,
        label,
        Problem {
            what: format!("{label} (LOOKBACK_SECS, OUT_OF_ORDERNESS_SECS, IDLE_TIMEOUT_SECS)"),
            expected: "0 < out-of-orderness < lookback and an idle timeout above 0".into(),
            found: format!("{found}: {}", notes.join("; ")),
            fix: "check LOOKBACK_SECS, OUT_OF_ORDERNESS_SECS and IDLE_TIMEOUT_SECS (defaults \
                  3600, 15, 30)"
                .into(),
        },
    )
}

/// The recovery hold covers the ack deadline (docs/design.md §3.4).
fn recovery_hold(args: &RunArgs) -> Item {
    let label = "recovery hold (RECOVERY_HOLD_SECS)";
    let hold = preflight::recovery_hold_secs(args);
    let deadline = u64::from(args.pubsub.ack_deadline_secs);
    let source = match args.service.recovery_hold_secs {
        Some(_) => "RECOVERY_HOLD_SECS",
        None => "PUBSUB_ACK_DEADLINE_SECS + 5 s",
    };
    if hold >= deadline {
        return Item::pass(S, label, format!("{hold} s ({source})"));
    }
    Item::warn(
        S,
        label,
        Problem {
            what: label.into(),
            expected: format!("at least the ack deadline, {deadline} s (PUBSUB_ACK_DEADLINE_SECS)"),
            found: format!(
                "{hold} s: after a crash the watermark moves on before the messages the dead \
                 worker held come back, so their clicks may count as late"
            ),
            fix: format!(
                "unset RECOVERY_HOLD_SECS (default {} s) or raise it",
                deadline + 5
            ),
        },
    )
}

/// The partition count P (`PARTITIONS`, docs/design.md §7). The partition topics'
/// subscriptions are checked with the other subscriptions ([`crate::preflight`]); the layout
/// recorded in Redis is compared by the service itself when it starts (it refuses another P
/// with exit 78).
///
/// With P > 1 every message passes a router, and a router that stops (killed, paused) holds
/// what it pulled until the ack deadline; those messages then reach their partition that much
/// behind their neighbours, so the out-of-orderness bound should cover the ack deadline.
fn partitions(args: &RunArgs) -> Item {
    let p = args.pubsub.partitions;
    if p <= 1 {
        return Item::pass(S, "partitions", "1 (not partitioned)");
    }
    let found = format!("{p} (routed by user to {p} partition topics of clicks and checkouts)");
    let (ooo, deadline) = (
        args.engine.out_of_orderness_secs,
        u64::from(args.pubsub.ack_deadline_secs),
    );
    if ooo >= deadline {
        return Item::pass(S, "partitions", found);
    }
    Item::warn(
        S,
        "partitions",
        Problem {
            what: "partitions (PARTITIONS) against the out-of-orderness bound".into(),
            expected: format!(
                "OUT_OF_ORDERNESS_SECS at least the ack deadline ({deadline} s, \
                 PUBSUB_ACK_DEADLINE_SECS) when messages pass a router"
            ),
            found: format!(
                "{found}, out-of-orderness {ooo} s: a router that is killed or paused holds the \
                 messages it pulled until their ack deadline, and their clicks then count as \
                 late"
            ),
            fix: "lower PUBSUB_ACK_DEADLINE_SECS (Pub/Sub allows 10 s; re-run create-pubsub \
                  with it) and raise OUT_OF_ORDERNESS_SECS above it plus the producers' \
                  disorder, e.g. 10 and 30"
                .into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["x"];
        argv.extend_from_slice(flags);
        Cli::parse_from(argv).run
    }

    fn status(items: &[Item], check: &str) -> Status {
        items
            .iter()
            .find(|i| i.check.starts_with(check))
            .map(|i| i.status)
            .unwrap_or_else(|| panic!("no check {check}"))
    }

    #[test]
    fn default_settings_pass() {
        let items = settings(&args(&[]));
        assert_eq!(items.len(), 4);
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:?}");
        assert_eq!(items[3].line(), "partitions: 1 (not partitioned)");
    }

    #[test]
    fn odd_windows_and_a_short_hold_warn() {
        let items = settings(&args(&[
            "--lookback-secs",
            "60",
            "--out-of-orderness-secs",
            "60",
            "--recovery-hold-secs",
            "10",
        ]));
        assert_eq!(status(&items, "lookback"), Status::Warn);
        assert_eq!(status(&items, "recovery hold"), Status::Warn);
        let line = items[1].line();
        assert!(line.contains("OUT_OF_ORDERNESS_SECS (60 s)"), "{line}");
        // Warnings do not fail a checklist.
        let list = Checklist { items };
        assert!(list.problems().is_empty());
        assert_eq!(list.warnings().count(), 2);
    }

    #[test]
    fn partitions_warn_when_a_stopped_router_would_make_clicks_late() {
        // The defaults: a 60 s ack deadline and a 15 s bound.
        let items = settings(&args(&["--partitions", "8"]));
        assert_eq!(status(&items, "partitions"), Status::Warn);
        let line = items[3].line();
        assert!(line.contains("out-of-orderness 15 s"), "{line}");
        assert!(line.contains("PUBSUB_ACK_DEADLINE_SECS"), "{line}");
        let fixed = settings(&args(&[
            "--partitions",
            "8",
            "--pubsub-ack-deadline-secs",
            "10",
            "--out-of-orderness-secs",
            "30",
        ]));
        assert_eq!(status(&fixed, "partitions"), Status::Pass);
        // Without a router the bound need not cover the deadline.
        assert_eq!(status(&settings(&args(&[])), "partitions"), Status::Pass);
    }

    #[test]
    fn text_and_json_have_one_line_and_one_entry_per_check() {
        let run = args(&[]);
        let mut items = settings(&run);
        items.push(Item::fail(
            Group::Redis,
            "answers PING",
            Problem {
                what: "Redis at redis://127.0.0.1:1 (REDIS_URL)".into(),
                expected: "an answer to PING".into(),
                found: "refused".into(),
                fix: "fix REDIS_URL".into(),
            },
        ));
        let list = Checklist { items };
        let json = list.to_json();
        assert_eq!(json["ok"], false);
        assert_eq!(json["exit_code"], 78);
        assert_eq!(json["checks"].as_array().map(Vec::len), Some(5));
        assert_eq!(json["checks"][4]["status"], "fail");
        assert_eq!(json["checks"][4]["fix"], "fix REDIS_URL");
        let mut text = Vec::new();
        list.write_text(&mut text, &run, true).expect("text");
        let text = String::from_utf8(text).expect("UTF-8");
        assert_eq!(text.matches("\n  ok   ").count(), 4, "{text}");
        assert!(
            text.contains("  FAIL answers PING: expected an answer to PING, found: refused\n"),
            "{text}"
        );
        assert!(text.contains("      fix: fix REDIS_URL\n"), "{text}");
        assert!(
            text.contains("5 checks: 4 passed, 0 warnings, 1 failed"),
            "{text}"
        );
    }
}
