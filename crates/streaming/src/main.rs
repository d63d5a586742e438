//! `streaming`: the firstclick pipeline. Everything lives in the library (`src/lib.rs`); this
//! file only picks the allocator and calls it.

/// mimalloc: the replay allocates and frees a few small strings per event; measured 15-20%
/// less CPU than the system allocator on the 1.5 M-event replay (BENCHMARKS.md). Built with
/// `no_thp`: mimalloc then does not ask for transparent huge pages, which on this replay cost
/// 40 MB of peak RSS (2 MiB pages touched in part) and the kernel's compaction on page faults
/// (system time 0.3-0.7 s against 0.26-0.39 s), for no CPU gained.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors are printed as their chain of causes, never with a backtrace: they are the user's to
/// act on (with `RUST_BACKTRACE` set in the environment, anyhow would print one). Exit status:
/// 0 after a stop, 1 for a failure while running, 78 (`EX_CONFIG`) for a configuration error
/// (`streaming run --help` lists them).
fn main() -> std::process::ExitCode {
    match firstclick_streaming::main_entry() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streaming: error: {e:#}");
            std::process::ExitCode::from(firstclick_streaming::exit_code(&e))
        }
    }
}
