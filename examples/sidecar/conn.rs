//! The timers of one client connection: the header-read timeout and the keep-alive idle timeout,
//! kept apart.
//!
//! hyper's own HTTP/1 `header_read_timeout` also runs while a kept-alive connection waits for its
//! next request, so an idle connection closed after the header timeout (10 s) whatever
//! `idle_timeout` said. Here hyper's timer is off, and the connection task enforces both:
//!
//! - **header read**: a request head must be complete within `header_read_timeout` of its first
//!   byte (of the connection's start, for the first request); past it the connection is dropped
//!   (a slow-loris client is cut off). The first byte is seen by [`Watched`], the IO wrapper.
//! - **idle**: a connection with no request in flight (an active request lasts until its response
//!   body ends) and no request head arriving is closed gracefully `idle_timeout` after its last
//!   request ended.
//!
//! HTTP/2 connections (recognised by their preface) have no header-read timer: streams and pings
//! interleave, and hyper's h2 settings bound them; the idle timer counts their streams.
//!
//! Everything here runs in the connection's own task (hyper calls the service and drops response
//! bodies inside the connection future), so relaxed atomics suffice.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// What one connection is doing, for its timers.
pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last request start or end.
    last: AtomicU64,
    /// 1 + milliseconds since `epoch` of the first byte of a request head not yet complete; 0
    /// when no head is arriving.
    head_since: AtomicU64,
    /// The connection speaks HTTP/2 (no header-read timer).
    h2: AtomicBool,
    /// Bytes read so far (only whether any were, and the first ones, matter).
    read_any: AtomicBool,
    /// Woken when a request head starts arriving, so that the task re-arms its timer.
    head_started: Notify,
    epoch: Instant,
}

impl Activity {
    /// A connection accepted now: its first request head is due within the header timeout.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            h2: AtomicBool::new(false),
            read_any: AtomicBool::new(false),
            head_started: Notify::new(),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request head is complete and its request starts; active until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> ActiveRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.touch();
        ActiveRequest(self.clone())
    }

    /// Bytes arrived; `first` are the first bytes of the connection when it had read none.
    fn bytes_in(&self, first: Option<&[u8]>) {
        if let Some(first) = first
            && first.starts_with(b"PRI ")
        {
            // The HTTP/2 preface (`PRI * HTTP/2.0`): no request head to time.
            self.h2.store(true, Ordering::Relaxed);
            self.head_since.store(0, Ordering::Relaxed);
            return;
        }
        if self.h2.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed) > 0
            || self.head_since.load(Ordering::Relaxed) != 0
        {
            return;
        }
        self.head_since
            .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
        self.head_started.notify_one();
    }

    /// When the head now arriving is overdue, if one is arriving. `None` also when that instant
    /// is past what `Instant` can hold.
    pub fn head_deadline(&self, header_read: Duration) -> Option<Instant> {
        let since = self.head_since.load(Ordering::Relaxed).checked_sub(1)?;
        self.epoch
            .checked_add(Duration::from_millis(since))?
            .checked_add(header_read)
    }

    /// When the connection becomes idle for `idle` if nothing happens: one idle period after the
    /// last request ended, or (while a request is active) one idle period from `now`, to look
    /// again then (no busy loop). `None` when that instant is past what `Instant` can hold: a
    /// huge `idle` never panics, it means "never idle".
    pub fn idle_deadline(&self, idle: Duration, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            now.checked_add(idle)
        } else {
            self.epoch
                .checked_add(Duration::from_millis(self.last.load(Ordering::Relaxed)))?
                .checked_add(idle)
        }
    }

    /// Whether the connection has been idle for `idle` at `now`.
    pub fn is_idle(&self, idle: Duration, now: Instant) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
            && self.idle_deadline(idle, now).is_some_and(|at| at <= now)
    }

    /// Resolves when a request head starts arriving (or has started since the last call).
    pub async fn head_started(&self) {
        self.head_started.notified().await;
    }
}

/// A request in flight on its connection, until dropped (with its response body).
pub struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's IO, telling its [`Activity`] when bytes arrive.
pub struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// Watches `io` for `activity`.
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            let first = !self.activity.read_any.swap(true, Ordering::Relaxed);
            self.activity
                .bytes_in(first.then(|| &buf.filled()[before..]));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Drives one served connection `conn` to its end, enforcing its header-read and idle timers
/// (from `activity`) and closing it gracefully (`graceful`) when `shutdown` flips. Used by the
/// proxy and the admin listener alike.
pub async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    header_read: Duration,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut closing = false;
    loop {
        let head_at = activity.head_deadline(header_read);
        let idle_at = if closing {
            None
        } else {
            activity.idle_deadline(idle, Instant::now())
        };
        let wake_at = match (head_at, idle_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
            // A head started arriving: re-arm with its deadline.
            _ = activity.head_started() => {}
            _ = sleep_until(wake_at) => {
                let now = Instant::now();
                if activity.head_deadline(header_read).is_some_and(|at| at <= now) {
                    tracing::debug!(peer = %peer, "request head not received in time");
                    return;
                }
                if !closing && activity.is_idle(idle, now) {
                    tracing::debug!(peer = %peer, "closing idle connection");
                    closing = true;
                    graceful(conn.as_mut());
                }
            }
        }
    }
}

/// Sleeps until `at`; never when `at` is `None`.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, `Instant::now() + idle` at the connection's idle check: a huge idle timeout
    /// (beyond what `Instant` holds) means "never idle", never a panic in the connection task.
    #[tokio::test(start_paused = true)]
    async fn regression_12_09_a_huge_idle_timeout_never_panics() {
        let activity = Activity::new();
        let now = Instant::now();
        activity.last.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(activity.idle_deadline(Duration::MAX, now), None);
        activity.last.store(1_000, Ordering::Relaxed);
        assert_eq!(
            activity.idle_deadline(Duration::from_secs(60), now),
            Some(activity.epoch + Duration::from_secs(61))
        );
        assert_eq!(activity.head_deadline(Duration::MAX), None);
        let _active = activity.request();
        assert_eq!(activity.idle_deadline(Duration::MAX, now), None);
        assert_eq!(
            activity.idle_deadline(Duration::from_secs(60), now),
            Some(now + Duration::from_secs(60))
        );
        // A connection whose idle deadline cannot be represented waits, not panics.
        let never = tokio::time::timeout(Duration::from_secs(3600), sleep_until(None)).await;
        assert!(never.is_err());
    }

    /// The header timer runs from the connection's start, stops when the head is complete, does
    /// not run while the connection idles between requests, and starts again with the first byte
    /// of the next head. HTTP/2 connections have none.
    #[tokio::test(start_paused = true)]
    async fn the_header_timer_runs_only_while_a_head_arrives() {
        let read = Duration::from_secs(10);
        let a = Activity::new();
        assert_eq!(a.head_deadline(read), Some(a.epoch + read));
        a.bytes_in(Some(b"GET / HTTP/1.1\r\n"));
        assert_eq!(a.head_deadline(read), Some(a.epoch + read), "not restarted");
        let request = a.request();
        assert_eq!(a.head_deadline(read), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        a.bytes_in(None); // body bytes of the active request
        assert_eq!(a.head_deadline(read), None);
        drop(request);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            a.head_deadline(read),
            None,
            "idle between requests: no timer"
        );
        assert!(!a.is_idle(Duration::from_secs(60), Instant::now()));
        assert!(a.is_idle(Duration::from_secs(30), Instant::now()));
        a.bytes_in(None);
        assert_eq!(a.head_deadline(read), Some(Instant::now() + read));
        assert!(
            !a.is_idle(Duration::from_secs(30), Instant::now()),
            "a head is arriving"
        );
        tokio::time::timeout(Duration::from_millis(1), a.head_started())
            .await
            .expect("the task is told to re-arm its timer");

        let h2 = Activity::new();
        h2.bytes_in(Some(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert_eq!(h2.head_deadline(read), None);
        h2.bytes_in(None);
        assert_eq!(h2.head_deadline(read), None);
    }
}
