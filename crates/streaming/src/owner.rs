//! The partitions this worker owns: the async shell around the lease state machine
//! (`firstclick_partition::lease`). Every round it heartbeats its membership, renews its
//! leases, reads which partitions are free and lets the state machine decide; then it starts a
//! [`run_partition`] for each lease it took, stops gracefully and gives back those beyond its
//! fair share (a joining worker gets them at their next checkpoint), and stops at once those
//! whose lease it lost (a paused worker that woke up: its writes are fenced anyway). On
//! SIGTERM it stops every partition gracefully, gives the leases back and leaves.
//! docs/design.md §7.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstclick_partition::lease::{Action, LeaseConfig, Leases, Round};
use firstclick_pubsub::Topology;
use firstclick_redis::{partition_checkpoint_name, CheckpointStore, LeaseStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::runner::{run_partition, Assignment, Ended, Shared};
use crate::shutdown::Shutdown;

/// A partition being run.
struct Running {
    token: u64,
    stop: CancellationToken,
    forced: CancellationToken,
    task: JoinHandle<anyhow::Result<Ended>>,
    /// Handed back: give the lease back once the task ends.
    releasing: bool,
    /// Lease lost: the task is being stopped by force.
    lost: bool,
}

/// The lease loop of one worker process.
pub(crate) struct Owner {
    shared: Arc<Shared>,
    leases: LeaseStore,
    machine: Leases,
    /// The deployment's topology (the original subscriptions, and P).
    topology: Topology,
    /// The checkpoint name of the deployment (partition names derive from it).
    name: String,
    /// The checkpoint name before checkpoint names existed (one partition only).
    legacy_key: Option<String>,
    running: BTreeMap<u32, Running>,
    started: Instant,
    /// Rounds run so far.
    rounds: u64,
}

impl Owner {
    /// A worker owning nothing yet.
    pub(crate) fn new(
        shared: Arc<Shared>,
        leases: LeaseStore,
        config: LeaseConfig,
        worker_id: &str,
        topology: Topology,
        name: String,
        legacy_key: Option<String>,
    ) -> Self {
        Owner {
            shared,
            leases,
            machine: Leases::new(config, worker_id),
            topology,
            name,
            legacy_key,
            running: BTreeMap::new(),
            started: Instant::now(),
            rounds: 0,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Owns partitions until the stop; then stops them all gracefully and gives their leases
    /// back. `Err` when a partition failed for good.
    pub(crate) async fn run(mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        let every = Duration::from_millis(self.machine.config().renew_every_ms.max(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut standing_by = false;
        let mut failure = None;
        loop {
            tokio::select! {
                _ = shutdown.graceful.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.reap().await {
                failure = Some(e);
                break;
            }
            self.round(shutdown).await;
            let idle = self.machine.held().is_empty() && self.rounds > 1;
            if idle && !standing_by {
                tracing::info!(
                    partitions = self.machine.config().partitions,
                    "standing by: every partition is owned by another worker; this one takes \
                     over when a lease expires or is handed back"
                );
            }
            standing_by = idle;
        }
        // Stop everything gracefully (the whole process stops, or one partition failed).
        for r in self.running.values() {
            r.stop.cancel();
        }
        let partitions: Vec<u32> = self.running.keys().copied().collect();
        for p in partitions {
            if let Some(r) = self.running.remove(&p) {
                let token = r.token;
                let ended = r.task.await;
                self.finished(p, token, !r.lost, ended, &mut failure).await;
            }
        }
        if let Err(e) = self.leases.leave().await {
            tracing::warn!(error = %e, "cannot leave the worker group; its entry expires by itself");
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Collects the partitions whose task ended: gives back handed-back leases, and fails on a
    /// partition that failed by itself.
    async fn reap(&mut self) -> anyhow::Result<()> {
        let done: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        let mut failure = None;
        for p in done {
            if let Some(r) = self.running.remove(&p) {
                let ended = r.task.await;
                let give_back = r.releasing || !r.lost;
                self.finished(p, r.token, give_back, ended, &mut failure)
                    .await;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Accounts for the end of partition `p`'s task.
    async fn finished(
        &mut self,
        p: u32,
        token: u64,
        give_back: bool,
        ended: Result<anyhow::Result<Ended>, tokio::task::JoinError>,
        failure: &mut Option<anyhow::Error>,
    ) {
        self.shared.metrics.forget_partition(p);
        match ended {
            Ok(Ok(how)) => {
                tracing::info!(partition = p, ended = ?how, "partition stopped");
            }
            Ok(Err(e)) => {
                tracing::error!(partition = p, error = %format!("{e:#}"), "partition failed");
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("partition {p}'s task panicked: {e}"));
            }
        }
        if give_back {
            match self.leases.release(p, token).await {
                Ok(true) => tracing::info!(partition = p, token, "lease given back"),
                Ok(false) => tracing::warn!(partition = p, token, "lease already gone"),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot give the lease back; it expires by itself")
                }
            }
        }
        self.machine.released(p);
    }

    /// One round of the lease protocol (module documentation).
    async fn round(&mut self, shutdown: &Shutdown) {
        let now_ms = self.now_ms();
        let live_workers = match self.leases.heartbeat().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "lease round: Redis did not answer; leases not confirmed in time are given up");
                crate::health::global().count_error(crate::health::Dependency::Redis);
                // No renewal confirmed this round: the state machine gives up what expires.
                let actions = self.machine.plan(&Round {
                    now_ms,
                    live_workers: 1,
                    renewed: Vec::new(),
                    free: Vec::new(),
                });
                self.act(actions, now_ms, shutdown).await;
                return;
            }
        };
        self.rounds += 1;
        if self.rounds == 1 {
            // The first round only announces this worker: workers started together then see
            // each other before taking partitions, and split them at once instead of one
            // taking everything and handing half back (each hand-over holds a watermark).
            return;
        }
        let mut renewed = Vec::new();
        for (p, token) in self.machine.to_renew() {
            let ok = match self.leases.renew(p, token).await {
                Ok(ok) => ok,
                // Unknown: not confirmed, so not trusted anew; the lease may still be ours.
                Err(_) => continue,
            };
            renewed.push((p, ok));
        }
        let free = self.leases.free_partitions().await.unwrap_or_default();
        let actions = self.machine.plan(&Round {
            now_ms,
            live_workers,
            renewed,
            free,
        });
        self.act(actions, now_ms, shutdown).await;
    }

    async fn act(&mut self, actions: Vec<Action>, now_ms: u64, shutdown: &Shutdown) {
        for action in actions {
            match action {
                Action::Lost(p) => {
                    tracing::warn!(
                        partition = p,
                        "lease lost (not renewed in time, or another worker holds it): \
                         stopping the partition without writing; its messages go to the new \
                         owner"
                    );
                    if let Some(r) = self.running.get_mut(&p) {
                        r.lost = true;
                        r.stop.cancel();
                        r.forced.cancel();
                    }
                }
                Action::Release(p) => {
                    tracing::info!(
                        partition = p,
                        "more than the fair share: handing the partition over after a checkpoint"
                    );
                    if let Some(r) = self.running.get_mut(&p) {
                        r.releasing = true;
                        r.stop.cancel();
                    }
                }
                Action::Acquire(p) => match self.leases.acquire(p).await {
                    Ok(Some(token)) => {
                        self.machine.acquired(p, Some(token), now_ms);
                        self.start(p, token, shutdown);
                    }
                    Ok(None) => self.machine.acquired(p, None, now_ms),
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "cannot take a lease");
                        self.machine.acquired(p, None, now_ms);
                    }
                },
            }
        }
    }

    /// Starts partition `p` under the lease `token`.
    fn start(&mut self, p: u32, token: u64, shutdown: &Shutdown) {
        let partitions = self.topology.partitions;
        let name = partition_checkpoint_name(&self.name, p, partitions);
        let store = match CheckpointStore::new(&self.shared.args.redis, name) {
            Ok(store) => Arc::new(store.with_fence(self.leases.fence(p, token))),
            Err(e) => {
                tracing::error!(partition = p, error = %e, "cannot open the partition's checkpoint");
                return;
            }
        };
        let topology = if partitions > 1 {
            self.topology.partition(p)
        } else {
            self.topology.clone()
        };
        let stop = shutdown.graceful.child_token();
        let forced = shutdown.forced.child_token();
        tracing::info!(partition = p, token, "lease taken: starting the partition");
        let task = tokio::spawn(run_partition(
            self.shared.clone(),
            Assignment {
                partition: p,
                topology,
                store,
                legacy_key: (partitions == 1).then(|| self.legacy_key.clone()).flatten(),
                handover: token > 1,
                stop: stop.clone(),
                forced: forced.clone(),
            },
        ));
        self.running.insert(
            p,
            Running {
                token,
                stop,
                forced,
                task,
                releasing: false,
                lost: false,
            },
        );
    }
}
