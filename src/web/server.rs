//! The daemon's own accept loop: HTTP/1.1 through hyper, with the limits `axum::serve` does not
//! have.
//!
//! - **A header-read timeout** (`[server] header_read_timeout_secs`): a client must send a whole
//!   request head within it, on a new connection and between keep-alive requests alike (hyper
//!   starts the clock whenever it waits for a head).
//! - **An idle timeout** (`[server] idle_timeout_secs`): a connection on which nothing was read
//!   or written for that long, and no request is being handled, is closed, whatever it is in
//!   the middle of (a body trickled in byte by byte, a response nobody reads). A handler that
//!   takes long (`POST /api/runs?wait=`) keeps its connection; server-sent events write a
//!   keep-alive every 15 s, so a live page is never idle.
//! - **A request-body deadline** (`[server] body_timeout_secs`): a body must arrive whole
//!   within it, or reading it fails.
//! - **A cap on open connections** (`[server] max_connections`). At the cap, a new connection
//!   takes the place of the oldest one that is handling no request: one that has not yet sent a
//!   whole request head (a half-open connection costs its sender nothing) or one idling between
//!   keep-alive requests (its client connects again); when every open connection is handling a
//!   request, the new one is closed at once. Both are logged at most once per
//!   [`LOG_EVERY`], with counts.
//!
//! The process's soft open-file limit is raised to its hard limit first ([`raise_open_files`]),
//! and the cap is kept below it, so that the daemon's own files and children's pipes never run
//! out because of clients.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// At most one log line per this long about refused or replaced connections.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes hyper buffers per connection, and so the largest request head.
const MAX_BUFFER: usize = 64 * 1024;

/// File descriptors kept for the daemon itself (its store, logs, children's pipes, git) when
/// the connection cap is sized to the open-file limit.
const RESERVED_FDS: u64 = 512;

/// The limits of [`serve`], from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client has to send a request head.
    pub header_read: Duration,
    /// How long a connection may go with nothing read or written and no request handled.
    pub idle: Duration,
    /// How long a request body may take to arrive whole, from its head. A handler that takes
    /// long is not idle (see [`Busy`]); a body that stalls or trickles gets this deadline.
    pub body: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Raises the soft limit on open files to the hard limit (Debian's soft default is 1,024, far
/// below what a daemon facing the internet needs) and returns the limit now in force.
pub fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            } else {
                tracing::warn!(
                    soft = limit.rlim_cur,
                    hard = limit.rlim_max,
                    "cannot raise the open-file limit"
                );
            }
        }
    }
    limit.rlim_cur
}

/// The connection cap actually used: the configured one, kept below the open-file limit
/// (minus what the daemon needs for itself).
pub fn effective_cap(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FDS).max(16);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, lets requests in progress finish and returns once every connection closed or
/// `drain` passed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let open = Arc::new(Open::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut refusals = RateLog::default();
    let mut replaced = RateLog::default();
    let mut accept_errors = RateLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; wait a little
                    // rather than spin.
                    if accept_errors.hit() {
                        tracing::warn!(error = %e, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if open.count.load(Ordering::Acquire) >= limits.max_connections {
            if open.replace_oldest_idle() {
                if let Some(n) = replaced.hit_count() {
                    tracing::warn!(
                        replaced = n,
                        cap = limits.max_connections,
                        "at the connection cap ([server] max_connections): connections that \
                         were handling no request were closed to make room"
                    );
                }
            } else {
                if let Some(n) = refusals.hit_count() {
                    tracing::warn!(
                        refused = n,
                        cap = limits.max_connections,
                        last = %addr,
                        "at the connection cap ([server] max_connections), every connection \
                         busy: new connections refused"
                    );
                }
                drop(stream);
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let conn = open.register();
        tokio::spawn(connection(
            stream,
            addr,
            router.clone(),
            limits,
            conn,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(drain, open.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = open.count.load(Ordering::Acquire),
            "open connections did not close within {}s; stopping anyway",
            drain.as_secs()
        );
    }
}

/// One connection, until it closes, idles out, is replaced, or the server stops.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    router: Router,
    limits: Limits,
    conn: Registered,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let open = Arc::clone(&conn.open);
    let (id, evicted) = (conn.id, Arc::clone(&conn.evicted));
    let handling = Arc::clone(&activity);
    let body_deadline = limits.body;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(addr));
        let mut router = router.clone();
        // Being handled: neither idle (`?wait=` awaits a run, however long) nor replaceable.
        let busy = Busy::new(
            Arc::clone(&handling),
            Arc::clone(&open),
            id,
            Arc::clone(&evicted),
        );
        async move {
            let request = request.map(|body| Body::new(Deadlined::new(body, body_deadline)));
            let response = tower_service::Service::call(&mut router, request)
                .await
                .unwrap_or_else(|never| match never {});
            // Busy until the response body is done too: a live page's event stream or a large
            // answer is a request being handled, never idle and never replaced.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Holding {
                    inner: body,
                    _busy: busy,
                })
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        // What hyper buffers per connection (its default is ~400 kB): bounds what many slow
        // connections cost, and the size of a request head.
        .max_buf_size(MAX_BUFFER)
        .keep_alive(true);
    let served = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(served);
    let idle = async {
        loop {
            if activity.handling.load(Ordering::Acquire) > 0 {
                activity.touch();
            }
            let quiet = activity.quiet_for();
            if quiet >= limits.idle {
                return;
            }
            tokio::time::sleep(limits.idle - quiet).await;
        }
    };
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %addr, error = %e, "connection ended");
                }
                break;
            }
            () = conn.evicted.notified() => {
                // A request may have arrived since it was picked: then it stays.
                if activity.handling.load(Ordering::Acquire) > 0 {
                    continue;
                }
                tracing::debug!(client = %addr, "idle connection closed to make room");
                break;
            }
            () = &mut idle => {
                tracing::debug!(client = %addr, "idle connection closed");
                break;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The open connections: how many, and the half-open ones oldest first.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    next_id: AtomicU64,
    /// Connections handling no request, oldest first: the ones a new connection may replace.
    idle: Mutex<BTreeMap<u64, Arc<Notify>>>,
    closed: Notify,
}

impl Open {
    fn register(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&evicted));
        self.count.fetch_add(1, Ordering::AcqRel);
        Registered {
            id,
            open: Arc::clone(self),
            evicted,
        }
    }

    fn not_replaceable(&self, id: u64) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn replaceable(&self, id: u64, evicted: Arc<Notify>) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, evicted);
    }

    /// Closes the oldest connection that is handling no request; false if there is none.
    fn replace_oldest_idle(&self) -> bool {
        let oldest = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_first();
        match oldest {
            Some((_, evicted)) => {
                // `notify_one` keeps the wake-up if the task is not waiting yet.
                evicted.notify_one();
                true
            }
            None => false,
        }
    }

    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place in [`Open`]; dropping it closes the books on the connection. A
/// connection replaced at the cap still counts until its task has dropped the socket, so the
/// count never undercounts open descriptors.
struct Registered {
    id: u64,
    open: Arc<Open>,
    evicted: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.not_replaceable(self.id);
        if self.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.closed.notify_waiters();
        }
    }
}

/// When a connection last moved a byte, as milliseconds since it opened, and how many of its
/// requests are being handled.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    handling: AtomicUsize,
}

/// Counts a request as being handled until dropped. While a connection handles none (it waits
/// for its first request head, or idles between keep-alive requests), it may be replaced at the
/// cap; a keep-alive client that is replaced simply connects again.
struct Busy {
    activity: Arc<Activity>,
    open: Arc<Open>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Busy {
    fn new(activity: Arc<Activity>, open: Arc<Open>, id: u64, evicted: Arc<Notify>) -> Busy {
        if activity.handling.fetch_add(1, Ordering::AcqRel) == 0 {
            open.not_replaceable(id);
        }
        Busy {
            activity,
            open,
            id,
            evicted,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.touch();
        if self.activity.handling.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.replaceable(self.id, Arc::clone(&self.evicted));
        }
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A socket that records when it last read or wrote a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole by a deadline; past it, reading fails (the handler
/// answers 400 and the connection closes) rather than holding the connection and its handler.
struct Deadlined {
    inner: Incoming,
    within: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Deadlined {
    fn new(inner: Incoming, within: Duration) -> Deadlined {
        Deadlined {
            inner,
            within,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl HttpBody for Deadlined {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {}s",
                self.within.as_secs()
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection counted as busy until it is done (or dropped).
struct Holding {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts events and says when to log them: at most once per [`LOG_EVERY`].
#[derive(Default)]
pub(crate) struct RateLog {
    last: Option<Instant>,
    since: u64,
}

impl RateLog {
    /// Counts one; `Some(count since the last line)` when a line is due.
    pub(crate) fn hit_count(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }

    fn hit(&mut self) -> bool {
        self.hit_count().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(effective_cap(4096, 1_048_576), 4096);
        assert_eq!(effective_cap(4096, 1024), 512);
        assert_eq!(effective_cap(4096, 100), 16);
        assert_eq!(effective_cap(0, 100_000), 1);
    }

    #[test]
    fn refusals_are_logged_at_a_bounded_rate() {
        let mut log = RateLog::default();
        assert_eq!(log.hit_count(), Some(1));
        for _ in 0..999 {
            assert_eq!(log.hit_count(), None);
        }
        log.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(
            log.hit_count(),
            Some(1000),
            "the line counts what it stood for"
        );
    }

    #[test]
    fn the_oldest_half_open_connection_goes_first() {
        let open = Arc::new(Open::default());
        let first = open.register();
        let second = open.register();
        open.not_replaceable(first.id);
        assert!(open.replace_oldest_idle());
        assert!(open.idle.lock().unwrap().is_empty());
        assert!(
            !open.replace_oldest_idle(),
            "a serving connection is never replaced"
        );
        assert_eq!(open.count.load(Ordering::Acquire), 2);
        drop((first, second));
        assert_eq!(open.count.load(Ordering::Acquire), 0);
    }
}
