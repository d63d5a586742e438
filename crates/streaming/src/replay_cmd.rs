//! `streaming replay`: NDJSON files through the engine, summary at the end. The outputs are
//! renamed into place only when everything succeeded (the report included).

use anyhow::Context;
use firstclick_replay::{Parallelism, ReplayOptions};

use crate::args::ReplayArgs;

/// Runs the replay and prints its summary (to stderr when the rows go to stdout).
pub(crate) fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let opts = ReplayOptions {
        clicks: args.clicks,
        checkouts: args.checkouts,
        users: args.users,
        out: args.out.clone(),
        late: args.late,
        touches: args.touches,
        dead_letter: args.dead_letter,
        engine: args.engine.config(),
        progress: true,
        max_bad_share: args.max_bad_share,
        parallelism: Parallelism {
            partitions: args.partitions,
            threads: args.threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, usize::from),
                |t| t as usize,
            ),
            processed_at: None,
        },
    };
    let summary = crate::report_file::replay_with_report(&opts, args.report.as_deref())?;
    let text = if args.summary_json {
        serde_json::to_string(&summary).context("cannot serialize the summary")?
    } else {
        summary.to_string()
    };
    if args.out.as_os_str() == "-" {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    Ok(())
}
