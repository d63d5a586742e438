//! `datagen`: fake users, clicks and checkouts, deterministic under `--seed`. With `--out DIR`
//! it writes `users.ndjson`, `clicks.ndjson` and `checkouts.ndjson` for a replay; otherwise it
//! writes the users to Redis and publishes the events to Pub/Sub (like the original producer).
//! File data sets are reproducible (seed 42, event time from 2026-01-01); publishing takes its
//! seed and start from the clock unless told otherwise, and says so before it starts
//! (`DatagenCli::resolve`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use firstclick_cli::ConfigError;
use firstclick_datagen::{
    publish, write_data_set, DataSetPaths, DatagenCli, Generator, PublishError, PublishTarget,
};
use firstclick_pubsub::Connection;
use firstclick_redis::UserDirectory;

fn progress_bar(total: Option<u64>) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    })
}

/// Errors are printed as their chain of causes, never with a backtrace (they are the user's to
/// act on). Exit status (`--help` lists it): 0 done, 1 failed while running, 2 bad command
/// line, 78 configuration error.
fn main() -> std::process::ExitCode {
    firstclick_cli::finish("datagen", run(), is_config_error)
}

/// A setting that cannot be used (78), as opposed to a service that did not answer (1).
fn is_config_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    use firstclick_pubsub::PubSubError as P;
    use firstclick_redis::RedisError as R;
    let redis = |e: &R| match e {
        R::InvalidUrl { .. } | R::Auth { .. } => true,
        R::NotReady { last, .. } => matches!(**last, R::InvalidUrl { .. } | R::Auth { .. }),
        _ => false,
    };
    let pubsub = |e: &P| {
        matches!(
            e,
            P::InvalidEmulatorHost { .. }
                | P::InvalidProject { .. }
                | P::InvalidName { .. }
                | P::CredentialsFile { .. }
                | P::CredentialsKey { .. }
                | P::Credentials { .. }
                | P::Unauthenticated { .. }
                | P::PermissionDenied { .. }
                | P::ProjectNotFound { .. }
                | P::NotFound { .. }
        )
    };
    if let Some(e) = cause.downcast_ref::<R>() {
        return redis(e);
    }
    if let Some(e) = cause.downcast_ref::<P>() {
        return pubsub(e);
    }
    match cause.downcast_ref::<PublishError>() {
        Some(PublishError::Redis(e)) => redis(e),
        Some(PublishError::PubSub(e)) => pubsub(e),
        None => false,
    }
}

fn run() -> anyhow::Result<()> {
    firstclick_pubsub::install_crypto_provider();
    let resolved = match DatagenCli::try_parse_resolved(
        std::env::args_os(),
        firstclick_model::time::wall_clock(),
    ) {
        Ok(r) => r,
        // --help, --version and bad command lines: clap prints them and picks the code (2).
        Err(e) => e.exit(),
    };
    firstclick_cli::init_logging(&resolved.cli.log);
    // Before anything is written: what this run uses (and, when the clock chose, how to repeat
    // it). On stderr, so that stdout keeps the one line about what was written.
    eprintln!("datagen: {}", resolved.describe());
    let cli = resolved.cli;
    match cli.out.clone() {
        Some(dir) => write_files(cli, dir),
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(publish_all(cli))
        }
    }
}

fn write_files(cli: DatagenCli, dir: PathBuf) -> anyhow::Result<()> {
    let Some(clicks) = cli.generator.clicks else {
        return Err(ConfigError(
            "expected --clicks N (DATAGEN_CLICKS) with --out: a file data set must be bounded, \
             and no number of clicks was given"
                .into(),
        )
        .into());
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    let paths = DataSetPaths::in_dir(&dir);
    let bar = progress_bar(Some(clicks));
    let started = std::time::Instant::now();
    let stats = write_data_set(Generator::new(cli.generator), &paths, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!(
        "wrote {} clicks, {} checkouts ({} duplicates, {} malformed, {} organic, {} stale, {} \
         unknown-user stories) to {} in {:.1} s",
        stats.clicks,
        stats.checkouts,
        stats.duplicates,
        stats.malformed,
        stats.organic_checkouts,
        stats.stale_stories,
        stats.unknown_user_stories,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn publish_all(cli: DatagenCli) -> anyhow::Result<()> {
    let conn = Connection::connect(&cli.gcp, &cli.pubsub)
        .await
        .context("cannot reach Pub/Sub")?;
    let users = UserDirectory::new(&cli.redis).context("bad Redis settings")?;
    users
        .wait_until_ready(std::time::Duration::from_secs(30))
        .await
        .context("Redis is not answering")?;
    let bar = progress_bar(None);
    let started = std::time::Instant::now();
    let target = PublishTarget {
        conn: &conn,
        click_topic: &cli.pubsub.click_topic,
        checkout_topic: &cli.pubsub.checkout_topic,
        users: &users,
        rate: cli.rate,
        max_in_flight: 2000,
    };
    let (stats, confirmed) = publish(Generator::new(cli.generator), target, |n| {
        if let Some(b) = &bar {
            b.set_message(format!("{n} messages published"));
            b.tick();
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {confirmed} messages ({} clicks, {} checkouts, {} duplicates, {} malformed) \
         in {secs:.1} s ({:.0} msg/s)",
        stats.clicks,
        stats.checkouts,
        stats.duplicates,
        stats.malformed,
        confirmed as f64 / secs.max(1e-9)
    );
    Ok(())
}
