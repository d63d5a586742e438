//! `streaming`: the firstclick pipeline. Everything lives in the library (`src/lib.rs`); this
//! file only picks the allocator and calls it.

/// mimalloc: the replay allocates and frees a few small strings per event; measured 15-20%
/// less CPU than the system allocator on the 1.5 M-event replay (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    firstclick_streaming::main_entry()
}
