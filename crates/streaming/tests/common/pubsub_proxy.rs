//! A pass-through in front of the Pub/Sub emulator that ends the streaming pulls of a client
//! that went away, as Pub/Sub does (docs/design.md §8).
//!
//! Why it exists: the emulator (0.8.20) keeps a server thread for every StreamingPull whose
//! client died or cancelled and goes on leasing messages to it (100 every 50 ms) until the
//! client *half-closes* the stream (END_STREAM on the request side). A SIGKILLed process never
//! does, so without this the fault test could not use one subscription across process lives.
//! Pub/Sub itself ends such a stream and redelivers its messages once their leases expire;
//! behind this proxy the emulator does the same.
//!
//! What it owns: one listener on a free loopback port, on a thread with its own tokio runtime
//! (so test code that blocks its own runtime cannot stall the traffic). Per connection it
//! sniffs the first bytes, because the official client speaks both protocols on one port:
//! - the HTTP/2 preface (gRPC, prior knowledge, plaintext: StreamingPull): an HTTP/2-aware
//!   pass-through on `h2`, one upstream connection per downstream one, every stream forwarded
//!   (headers, data, trailers, both ways, flow-control capacity released only once the data
//!   was passed on, so a slow side slows the other). When the client goes away (connection
//!   closed or reset, stream reset), the upstream stream is half-closed instead of dropped,
//!   and its response drained (what arrives is dropped) until it ends, at most
//!   [`DRAIN_TIMEOUT`];
//! - anything else (REST over HTTP/1.1: admin calls, publishing): a plain TCP splice.
//!
//! Dropping the [`Proxy`] stops it: the listener closes, open client connections are treated
//! as gone (so their streams are half-closed too), and the drop waits for those drains.
//! Failures on a connection are logged to stderr and close that connection, never panic.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a new connection may take to send enough bytes to tell the protocols apart.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the emulator may take to end a stream after the proxy half-closed it.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/2 windows on both sides (h2's default of 64 KiB would cap a stream's throughput).
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// A running pass-through; stops when dropped.
pub(crate) struct Proxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

/// What the proxy did, for the tests' reports and assertions.
#[derive(Debug, Default)]
struct Counters {
    /// gRPC calls (HTTP/2 streams) forwarded.
    calls: AtomicU64,
    /// Of those, StreamingPulls (the rest are unary calls such as lease extensions).
    pulls: AtomicU64,
    /// Upstream streams half-closed because their client went away.
    half_closed: AtomicU64,
    /// Streams whose client went away that the emulator then ended within [`DRAIN_TIMEOUT`].
    drained: AtomicU64,
}

impl Proxy {
    /// `HOST:PORT` to give clients as `PUBSUB_EMULATOR_HOST`.
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    /// gRPC calls (HTTP/2 streams) forwarded so far.
    pub(crate) fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// Of those, StreamingPulls.
    pub(crate) fn pulls(&self) -> u64 {
        self.counters.pulls.load(Ordering::Relaxed)
    }

    /// Streams half-closed upstream because their client went away.
    pub(crate) fn half_closed(&self) -> u64 {
        self.counters.half_closed.load(Ordering::Relaxed)
    }

    /// Streams whose client went away that the emulator then ended (the rest hit
    /// [`DRAIN_TIMEOUT`] or are still draining).
    pub(crate) fn drained(&self) -> u64 {
        self.counters.drained.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a pass-through to `upstream` (`HOST:PORT`, the emulator) on a free loopback port.
///
/// Panics if it cannot bind a port or start its thread: test set-up, nothing to recover.
pub(crate) fn start(upstream: &str) -> Proxy {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port for the proxy");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener (tokio needs one)");
    let addr = listener.local_addr().expect("the proxy's address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the proxy's runtime");
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let shared = Shared {
        upstream: upstream.trim_start_matches("http://").to_string(),
        counters: counters.clone(),
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("pubsub-proxy".into())
        .spawn(move || runtime.block_on(serve(listener, shared)))
        .expect("the proxy's thread");
    Proxy {
        addr,
        counters,
        stop,
        thread: Some(thread),
    }
}

/// What every connection and stream task gets.
#[derive(Clone)]
struct Shared {
    upstream: String,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

fn log(what: impl std::fmt::Display) {
    eprintln!("pubsub proxy: {what}");
}

/// Accepts until stopped, then waits for the tasks still draining.
async fn serve(listener: std::net::TcpListener, shared: Shared) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return log(format!("cannot listen: {e}")),
    };
    // Every task holds a clone of `alive`; `recv` below returns None once all are gone.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            () = shared.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (down, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or the like: wait a little rather than spin.
                log(format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, alive) = (shared.clone(), alive.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(down, shared, alive).await {
                log(format!("connection from {peer} closed: {e}"));
            }
        });
    }
    drop((listener, alive));
    let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), all_done.recv()).await;
}

/// One client connection: sniffs the protocol, connects upstream, forwards.
async fn connection(
    down: TcpStream,
    shared: Shared,
    alive: mpsc::Sender<()>,
) -> Result<(), String> {
    let sniffed = tokio::time::timeout(SNIFF_TIMEOUT, starts_with_preface(&down))
        .await
        .map_err(|_| format!("no first bytes within {SNIFF_TIMEOUT:?}"))??;
    let Some(http2) = sniffed else {
        return Ok(());
    };
    let up = TcpStream::connect(&shared.upstream)
        .await
        .map_err(|e| format!("cannot reach the emulator at {}: {e}", shared.upstream))?;
    // Small gRPC frames (acks, lease extensions) must not wait for Nagle.
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    if http2 {
        forward_http2(down, up, shared, alive).await
    } else {
        splice(down, up, &shared.stop).await
    }
}

/// Whether the client's first bytes are the HTTP/2 preface; `None` if it closed before
/// sending any (a port probe). Peeks, so nothing is consumed.
async fn starts_with_preface(down: &TcpStream) -> Result<Option<bool>, String> {
    let mut buf = [0_u8; PREFACE.len()];
    loop {
        let n = down
            .peek(&mut buf)
            .await
            .map_err(|e| format!("reading the first bytes: {e}"))?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == PREFACE.len() {
            return Ok(Some(true));
        }
        // A prefix of the preface so far; `peek` would return it again at once.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes both ways until either side closes (HTTP/1.1 needs nothing more).
async fn splice(
    mut down: TcpStream,
    mut up: TcpStream,
    stop: &CancellationToken,
) -> Result<(), String> {
    tokio::select! {
        () = stop.cancelled() => Ok(()),
        copied = tokio::io::copy_bidirectional(&mut down, &mut up) => {
            copied.map(|_| ()).map_err(|e| format!("splice: {e}"))
        }
    }
}

/// Accepts the client's streams and forwards each on its own task over one upstream
/// connection.
async fn forward_http2(
    down: TcpStream,
    up: TcpStream,
    shared: Shared,
    alive: mpsc::Sender<()>,
) -> Result<(), String> {
    let (upstream, up_connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(up)
        .await
        .map_err(|e| format!("HTTP/2 handshake with the emulator: {e}"))?;
    // The upstream connection runs on a task of its own, not tied to the client's: it must
    // outlive the client to half-close and drain its streams. It ends with the last of them.
    tokio::spawn(async move {
        if let Err(e) = up_connection.await {
            log(format!("upstream connection: {e}"));
        }
    });
    let mut client = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(down)
        .await
        .map_err(|e| format!("HTTP/2 handshake with the client: {e}"))?;
    loop {
        // Returning (dropping `client`) wakes every stream of this connection with an error,
        // which is how each learns that its client went away.
        let next = tokio::select! {
            () = shared.stop.cancelled() => return Ok(()),
            next = client.accept() => next,
        };
        match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(format!("client connection: {e}")),
            Some(Ok((request, respond))) => {
                let (upstream, shared, alive) = (upstream.clone(), shared.clone(), alive.clone());
                tokio::spawn(async move {
                    forward_stream(request, respond, upstream, &shared).await;
                    drop(alive);
                });
            }
        }
    }
}

/// One gRPC call: the request forwarded upstream, the response back, concurrently.
async fn forward_stream(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    upstream: SendRequest<Bytes>,
    shared: &Shared,
) {
    let path = request.uri().path().to_string();
    let (head, mut from_client) = request.into_parts();
    let ended = from_client.is_end_stream();
    let opened = async {
        let mut upstream = upstream.ready().await?;
        upstream.send_request(Request::from_parts(head, ()), ended)
    };
    let (response, mut to_emulator) = match opened.await {
        Ok(pair) => pair,
        Err(e) => {
            log(format!("{path}: cannot open the upstream stream: {e}"));
            respond.send_reset(Reason::REFUSED_STREAM);
            return;
        }
    };
    shared.counters.calls.fetch_add(1, Ordering::Relaxed);
    if path.ends_with("/StreamingPull") {
        shared.counters.pulls.fetch_add(1, Ordering::Relaxed);
    }
    // Cancelled when the client is known to be gone; from then on the response is drained.
    let gone = CancellationToken::new();
    let mut gone_at = None;
    // Set once the upstream response is over: a client that stops then is just done.
    let finished = AtomicBool::new(false);
    let requests = async {
        if ended {
            return;
        }
        match copy_body(&mut from_client, &mut to_emulator).await {
            Ok(()) => {}
            Err(Broken::Source(_)) if finished.load(Ordering::Relaxed) => {
                let _ = to_emulator.send_data(Bytes::new(), true);
            }
            Err(Broken::Source(e)) => {
                gone.cancel();
                gone_at = Some(Instant::now());
                // The point of the proxy: end the request side as a client that is done
                // would, so that the emulator ends the stream instead of leasing on.
                match to_emulator.send_data(Bytes::new(), true) {
                    Ok(()) => {
                        shared.counters.half_closed.fetch_add(1, Ordering::Relaxed);
                        log(format!("{path}: client gone ({e}); half-closed upstream"));
                    }
                    // The emulator had already ended or reset the stream: nothing to do.
                    Err(_) => log(format!(
                        "{path}: client gone ({e}); upstream already closed"
                    )),
                }
            }
            // The emulator ended or reset the stream; the response side forwards that.
            Err(Broken::Sink(_)) => {}
        }
    };
    let responses = async {
        tokio::select! {
            () = forward_response(response, respond, &gone) => {
                finished.store(true, Ordering::Relaxed);
                if gone.is_cancelled() {
                    shared.counters.drained.fetch_add(1, Ordering::Relaxed);
                }
                gone.is_cancelled()
            }
            () = async { gone.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
                log(format!("{path}: upstream did not end within {DRAIN_TIMEOUT:?} of the half-close"));
                false
            }
        }
    };
    let ((), drained) = tokio::join!(requests, responses);
    if let (true, Some(at)) = (drained, gone_at) {
        log(format!(
            "{path}: upstream ended {:?} after the half-close",
            at.elapsed()
        ));
    }
}

/// Forwards the upstream response to the client. Once the client is gone, reads the rest to
/// its end and drops it: the emulator must see its data consumed (flow control) to get to the
/// end of the stream.
async fn forward_response(
    response: ResponseFuture,
    mut respond: SendResponse<Bytes>,
    gone: &CancellationToken,
) {
    let (head, mut from_emulator) = match response.await {
        Ok(r) => r.into_parts(),
        Err(e) => {
            respond.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
            return;
        }
    };
    let ended = from_emulator.is_end_stream();
    match respond.send_response(Response::from_parts(head, ()), ended) {
        Ok(_) if ended => return,
        Ok(mut to_client) => match copy_body(&mut from_emulator, &mut to_client).await {
            Ok(()) => return,
            Err(Broken::Source(e)) => {
                to_client.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
                return;
            }
            Err(Broken::Sink(_)) => gone.cancel(),
        },
        Err(_) => gone.cancel(),
    }
    while let Some(Ok(chunk)) = from_emulator.data().await {
        let _ = from_emulator.flow_control().release_capacity(chunk.len());
    }
    let _ = from_emulator.trailers().await;
}

/// Which side of a copy failed.
enum Broken {
    /// Reading: the sender reset the stream or its connection went away.
    Source(h2::Error),
    /// Writing: the receiver reset the stream or its connection went away.
    Sink(h2::Error),
}

/// Forwards DATA and then trailers (or a bare END_STREAM) from `from` to `to`.
async fn copy_body(from: &mut RecvStream, to: &mut SendStream<Bytes>) -> Result<(), Broken> {
    while let Some(chunk) = from.data().await {
        let chunk = chunk.map_err(Broken::Source)?;
        let len = chunk.len();
        let sent = send_within_window(to, chunk).await;
        // Released only now, so that a slow receiver slows the sender down.
        let _ = from.flow_control().release_capacity(len);
        sent.map_err(Broken::Sink)?;
    }
    match from.trailers().await.map_err(Broken::Source)? {
        Some(trailers) => to.send_trailers(trailers),
        None => to.send_data(Bytes::new(), true),
    }
    .map_err(Broken::Sink)
}

/// Sends `data` in pieces no larger than the receiver's window allows.
async fn send_within_window(to: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        to.reserve_capacity(data.len());
        while to.capacity() == 0 {
            match poll_fn(|cx| to.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                // The stream can no longer send: it was reset or closed.
                None => return Err(Reason::CANCEL.into()),
            }
        }
        let piece = data.split_to(to.capacity().min(data.len()));
        to.send_data(piece, false)?;
    }
    Ok(())
}
