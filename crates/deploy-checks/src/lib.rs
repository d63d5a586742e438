//! Deployment checks, as tests only (this library is empty).
//!
//! `tests/compose_env.rs` reads `docker-compose.yml` and `.env.example` at the top of the
//! repository and compares them with the command lines of the four binaries (`datagen`,
//! `create-pubsub`, `create-bq-table`, `streaming`), taken from their `clap` parsers: every
//! environment variable that compose passes to a binary must be one that binary reads, so a
//! variable renamed on one side only fails `cargo test -p firstclick-deploy-checks`.
//! `tests/kubernetes_env.rs` does the same for the manifests of `deploy/kubernetes/`: every
//! variable a container of the firstclick image gets (its `env`, the ConfigMap keys it takes
//! with `envFrom`) is one its binary reads, and its `--flags` are the binary's.
//! `scripts/check-deploy` runs these tests (steps `env` and `kubernetes`) next to the compose
//! validation, the Kubernetes schema check, the Dockerfile linter and the diagram check.
//!
//! # Layout
//! No modules: `src/lib.rs` is this page; `tests/compose_env.rs` and `tests/kubernetes_env.rs`
//! hold the checks, `tests/common/mod.rs` what they share (the binaries' parsers, the
//! variables and flags of a command line).
