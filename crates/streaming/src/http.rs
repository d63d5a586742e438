//! A tiny HTTP endpoint for operators: `GET /metrics` (Prometheus text format), `GET /healthz`
//! (liveness: 200 while the process runs, whatever its dependencies do, so that an outage does
//! not get it restarted) and `GET /readyz` (readiness: 503 until start-up has finished, while a
//! dependency is down and once stopping; 200 otherwise, see [`crate::health`]). Plain HTTP/1.0
//! responses on a tokio listener; nothing else is served.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Binds `addr` and serves until `stop` is cancelled. Returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = match socket.read(&mut buf).await {
                    Ok(n) => n,
                    Err(_) => return,
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.prometheus()),
                    "/healthz" | "/health" => ("200 OK", "ok\n".to_string()),
                    "/readyz" => match crate::health::global().readiness() {
                        Ok(()) => ("200 OK", "ready\n".to_string()),
                        Err(why) => ("503 Service Unavailable", format!("not ready: {why}\n")),
                    },
                    _ => (
                        "404 Not Found",
                        "try /metrics, /healthz or /readyz\n".to_string(),
                    ),
                };
                let response = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
