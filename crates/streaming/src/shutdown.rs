//! The shutdown signal: the first SIGTERM or SIGINT asks for a graceful stop (stop pulling,
//! finish in-flight work, flush, checkpoint, exit 0); a second one forces the stop even while a
//! service is down (nothing unwritten is acknowledged, so nothing is lost).

use tokio_util::sync::CancellationToken;

/// The two levels of stop.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    /// Graceful: stop taking new messages.
    pub(crate) graceful: CancellationToken,
    /// Forced: give up waiting for services that are down.
    pub(crate) forced: CancellationToken,
}

impl Shutdown {
    /// Starts a task that turns signals into the two tokens.
    pub(crate) fn listen() -> std::io::Result<Self> {
        let s = Shutdown::default();
        let (graceful, forced) = (s.graceful.clone(), s.forced.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            for level in 0.. {
                tokio::select! {
                    _ = term.recv() => {}
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                }
                if level == 0 {
                    tracing::info!("stop requested: finishing in-flight work, then checkpointing");
                    graceful.cancel();
                } else {
                    tracing::warn!("second stop request: giving up on services that are down");
                    forced.cancel();
                    return;
                }
            }
        });
        Ok(s)
    }
}
