//! The worker's checkpoint in Redis seen from the service: [`load`] restores an engine from it
//! at start-up; [`inspect`] and [`reset`] back the `streaming state` subcommands.
//!
//! Loading reads the base's pieces and then the changelog from `base_from_seq` on, a few
//! elements per call so that memory holds one batch of bytes besides the state being built,
//! and hands each element to `firstclick-checkpoint`, which checks its format version.

use std::time::{Duration, Instant};

use anyhow::Context;
use firstclick_checkpoint::{apply, LogTail};
use firstclick_delivery::Durable;
use firstclick_engine::{Engine, EngineConfig, Restorer};
use firstclick_redis::{CheckpointMeta, CheckpointStore, RedisError};
use tokio_util::sync::CancellationToken;

use crate::outage::retry;

/// Elements read per Redis call while loading.
const BATCH: u64 = 16;

/// What [`load`] found.
pub struct Loaded {
    /// The engine as the checkpoint left it (empty without one).
    pub engine: Engine,
    /// Where the store stands, for the delivery core.
    pub durable: Durable,
    /// Base pieces and changelog elements read.
    pub elements: u64,
    /// Their bytes.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
    /// What `meta` said (`None`: there was no checkpoint).
    pub meta: Option<CheckpointMeta>,
}

fn transient(e: &RedisError) -> bool {
    e.is_transient()
}

/// The key a version-1 checkpoint (one JSON string) was written under by default.
pub(crate) fn legacy_key(project: &str, click_subscription: &str) -> String {
    format!("firstclick:checkpoint:{project}:{click_subscription}")
}

/// Restores the engine from the checkpoint in `store`, retrying while Redis is down (until
/// `forced`). A checkpoint of another format, or a version-1 one under `legacy`, is an error
/// that says what to do.
pub async fn load(
    store: &CheckpointStore,
    config: EngineConfig,
    legacy: Option<&str>,
    forced: &CancellationToken,
) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let meta = retry("Redis (checkpoint)", forced, transient, || store.meta())
        .await
        .context("cannot read the checkpoint")?;
    let Some(meta) = meta else {
        if let Some(key) = legacy {
            let exists = retry("Redis (checkpoint)", forced, transient, || {
                store.string_exists(key)
            })
            .await?;
            if exists {
                anyhow::bail!(
                    "found a version-1 checkpoint (one JSON string) at Redis key {key}; this \
                     build keeps incremental checkpoints under firstclick:{{{}}}:* and cannot \
                     carry that state over. Delete it (`redis-cli DEL {key}`) to start afresh: \
                     messages not yet acknowledged are redelivered, rows already written stay",
                    store.name()
                );
            }
        }
        retry("Redis (checkpoint)", forced, transient, || store.init()).await?;
        return Ok(Loaded {
            engine: Engine::new(config),
            durable: Durable {
                clean_shutdown: true,
                ..Durable::default()
            },
            elements: 0,
            bytes: 0,
            took: started.elapsed(),
            meta: None,
        });
    };
    load_from(store, meta, config, forced, started).await
}

/// Restores the engine from the checkpoint `meta` describes.
async fn load_from(
    store: &CheckpointStore,
    meta: CheckpointMeta,
    config: EngineConfig,
    forced: &CancellationToken,
    started: Instant,
) -> anyhow::Result<Loaded> {
    let mut restorer = Restorer::new(config);
    let mut elements = 0u64;
    let mut base_bytes = 0u64;
    if meta.generation > 0 {
        let mut from = 0;
        loop {
            let batch = retry("Redis (checkpoint)", forced, transient, || {
                store.read_base(meta.generation, from, BATCH)
            })
            .await?;
            if batch.is_empty() {
                break;
            }
            for piece in &batch {
                apply(piece, &mut restorer).with_context(|| {
                    format!("base {} piece {from} of {}", meta.generation, store.name())
                })?;
                base_bytes += piece.len() as u64;
                from += 1;
            }
            elements += batch.len() as u64;
        }
        if from != meta.base_pieces {
            anyhow::bail!(
                "base {} of checkpoint {} has {from} pieces, its meta says {}: the base is \
                 incomplete. Run `streaming state reset --yes` to start afresh",
                meta.generation,
                store.name(),
                meta.base_pieces
            );
        }
    }
    let mut index = meta.base_from_seq.saturating_sub(meta.log_head_seq);
    let mut log_bytes = 0u64;
    let mut tail = LogTail::default();
    loop {
        let batch = retry("Redis (checkpoint)", forced, transient, || {
            store.read_log(index, BATCH)
        })
        .await?;
        if batch.is_empty() {
            break;
        }
        for delta in &batch {
            let applied = apply(delta, &mut restorer).with_context(|| {
                format!(
                    "changelog element {} of {}",
                    meta.log_head_seq + index,
                    store.name()
                )
            })?;
            tail.record(applied);
            log_bytes += delta.len() as u64;
            index += 1;
        }
        elements += batch.len() as u64;
    }
    Ok(Loaded {
        engine: restorer.finish(),
        durable: Durable {
            next_seq: meta.log_head_seq + index,
            generation: meta.generation,
            base_bytes,
            log_bytes,
            clean_shutdown: tail.clean_shutdown,
            rows_to_commit: tail.rows_to_commit,
        },
        elements,
        bytes: base_bytes + log_bytes,
        took: started.elapsed(),
        meta: Some(meta),
    })
}

/// What `streaming state inspect` prints.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Inspection {
    /// The checkpoint's keys.
    pub(crate) keys: Vec<String>,
    /// Format version.
    pub(crate) format_version: u16,
    /// The current base's generation (0: none yet).
    pub(crate) base_generation: u64,
    /// Pieces of the base.
    pub(crate) base_pieces: u64,
    /// Bytes of the base.
    pub(crate) base_bytes: u64,
    /// Age of the base, seconds (None: no base yet).
    pub(crate) base_age_secs: Option<f64>,
    /// Changelog elements (all, and those a restore replays).
    pub(crate) changelog_length: u64,
    /// Of those, replayed over the base.
    pub(crate) changelog_replayed: u64,
    /// Bytes of the changelog replayed.
    pub(crate) changelog_bytes: u64,
    /// Live clicks after a restore.
    pub(crate) live_clicks: usize,
    /// Pending checkouts after a restore.
    pub(crate) pending_checkouts: usize,
    /// Remembered checkout ids after a restore.
    pub(crate) remembered_checkouts: usize,
    /// The watermark, RFC 3339.
    pub(crate) watermark: Option<String>,
    /// Whether the last delta was written by a graceful shutdown.
    pub(crate) clean_shutdown: bool,
    /// How long a restore takes, seconds.
    pub(crate) restore_secs: f64,
}

/// Reads the whole checkpoint as a restore would (and so checks every element).
pub(crate) async fn inspect(
    store: &CheckpointStore,
    config: EngineConfig,
    forced: &CancellationToken,
) -> anyhow::Result<Option<Inspection>> {
    // `meta` is read here, not by `load`, which would create an empty checkpoint.
    let Some(meta): Option<CheckpointMeta> = store.meta().await? else {
        return Ok(None);
    };
    let loaded = load_from(store, meta, config, forced, Instant::now()).await?;
    // The restore read the changelog to its end.
    let log_len = loaded.durable.next_seq - meta.log_head_seq;
    let now_ms = (firstclick_model::time::wall_clock().as_micros() / 1000) as u64;
    let engine = &loaded.engine;
    Ok(Some(Inspection {
        keys: vec![
            store.meta_key(),
            store.log_key(),
            store.base_key(meta.generation),
        ],
        format_version: meta.format,
        base_generation: meta.generation,
        base_pieces: meta.base_pieces,
        base_bytes: loaded.durable.base_bytes,
        base_age_secs: (meta.base_written_ms > 0)
            .then(|| now_ms.saturating_sub(meta.base_written_ms) as f64 / 1000.0),
        changelog_length: log_len,
        changelog_replayed: loaded.durable.next_seq - meta.base_from_seq.max(meta.log_head_seq),
        changelog_bytes: loaded.durable.log_bytes,
        live_clicks: engine.live_clicks(),
        pending_checkouts: engine.pending_checkouts(),
        remembered_checkouts: engine.remembered_checkouts(),
        watermark: engine.watermark().map(|w| w.to_rfc3339()),
        clean_shutdown: loaded.durable.clean_shutdown,
        restore_secs: loaded.took.as_secs_f64(),
    }))
}

/// Deletes the checkpoint; returns the number of keys deleted.
pub(crate) async fn reset(store: &CheckpointStore) -> anyhow::Result<u64> {
    Ok(store.reset().await?)
}
