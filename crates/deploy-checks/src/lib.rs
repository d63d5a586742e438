//! Deployment checks, as tests only (this library is empty).
//!
//! `tests/compose_env.rs` reads `docker-compose.yml` and `.env.example` at the top of the
//! repository and compares them with the command lines of the four binaries (`datagen`,
//! `create-pubsub`, `create-bq-table`, `streaming`), taken from their `clap` parsers: every
//! environment variable that compose passes to a binary must be one that binary reads, so a
//! variable renamed on one side only fails `cargo test -p firstclick-deploy-checks`.
//! `scripts/check-deploy` runs these tests next to the compose validation, the Dockerfile linter
//! and the diagram check.
//!
//! # Layout
//! No modules: `src/lib.rs` is this page; `tests/compose_env.rs` holds the checks.
