//! `datagen`: fake users, clicks and checkouts. With `--out DIR` it writes `users.ndjson`,
//! `clicks.ndjson` and `checkouts.ndjson` for a replay; the Redis and Pub/Sub output is for the
//! cloud path.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use datagen::files::{write_data_set, DataSetPaths};
use datagen::{Generator, GeneratorConfig};

/// Generates fake users, clicks and checkouts, deterministically under --seed.
#[derive(Parser, Debug)]
#[command(name = "datagen", version, about)]
struct Cli {
    /// Write the data set as NDJSON files into this directory (created if missing).
    #[arg(long, env = "DATAGEN_OUT")]
    out: Option<PathBuf>,

    /// What to generate.
    #[command(flatten)]
    generator: GeneratorConfig,

    /// Logging.
    #[command(flatten)]
    log: firstclick_cli::LogArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    firstclick_cli::init_logging(&cli.log);
    let Some(dir) = cli.out else {
        anyhow::bail!(
            "expected --out DIR (NDJSON files); publishing to Pub/Sub and Redis is not built yet"
        );
    };
    let Some(clicks) = cli.generator.clicks else {
        anyhow::bail!("expected --clicks N with --out: a file data set must be bounded");
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    let paths = DataSetPaths::in_dir(&dir);
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| indicatif::ProgressBar::new(clicks));
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
