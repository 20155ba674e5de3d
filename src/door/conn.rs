//! The I/O pump for one stream connection (plain TCP or TLS): reads arrive as chunks,
//! the connection's [`Outbox`] is drained with coalesced writes, and the close
//! is flushed, half-closed and lingered so the goodbye reaches the peer.
//!
//! One task drives both directions through [`Conn::next`], so an idle connection costs
//! one small future and no buffers: the read buffer lives on the stack only while
//! `poll_read` runs, and the write batch is empty unless output is pending.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::chat::CloseReason;
use crate::outbox::{Outbox, Take};

/// Bytes read per `poll_read`; lives on the stack, never in the connection.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The most bytes gathered into one write: enough for hundreds of chat lines, small
/// enough to stay in cache and to fit a socket's send buffer.
const GATHER_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where a connection's queued buffers are gathered for one write; one per runtime
    /// thread, so connections hold no write buffer of their own.
    static GATHER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(GATHER_BYTES));
}

/// A read error after which no write can succeed either.
fn breaks_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

/// After the outbox closes: how long to keep trying to flush and to wait for the peer's
/// EOF (so unread input does not turn our close into a reset that eats the goodbye).
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What happened on the connection.
#[derive(Debug)]
pub enum Input {
    /// Bytes from the peer.
    Data(Bytes),
    /// The peer closed its sending side. Output still flows until the outbox closes.
    Eof,
    /// Reading failed. When the connection itself is broken (reset, aborted, timed
    /// out) output stops too: the outbox is closed discarding, and the next input is
    /// `Finished`. Otherwise (a TLS error, say) output may still flow.
    ReadFailed(io::Error),
    /// The deadline set with [`Conn::set_deadline`] passed.
    Deadline,
    /// The outbox was closed and everything was flushed (or could not be): the
    /// connection is finished, for this reason.
    Finished(CloseReason),
}

enum Closing {
    Open,
    /// Outbox closed: flushing what is left.
    Flushing(CloseReason),
    /// Write side shut down: reading until EOF so the close is graceful.
    Lingering(CloseReason),
}

/// What a connection sends last, after its queued output, when its outbox closes (a
/// WebSocket's close frame). Skipped for a slow consumer, which gets no flush at all.
pub trait Farewell {
    fn farewell(&self, reason: CloseReason) -> Option<Bytes>;
}

/// Nothing: the stream's own close (FIN) is the goodbye.
pub struct NoFarewell;

impl Farewell for NoFarewell {
    fn farewell(&self, _reason: CloseReason) -> Option<Bytes> {
        None
    }
}

pub struct Conn<S, F = NoFarewell> {
    io: S,
    farewell: F,
    outbox: Arc<Outbox>,
    /// Buffers taken from the outbox and not yet fully written; the front may be partly written.
    batch: VecDeque<Bytes>,
    read_open: bool,
    /// Reading is paused (flood control): input waits in the kernel's buffers.
    read_paused: bool,
    /// Everything was written, but a transport that buffers (TLS) still holds some of
    /// it: flushed before more is taken, so the last bytes never wait for the next.
    unflushed: bool,
    /// Writes that made progress since [`Conn::take_writes`] last looked (saturating):
    /// a keepalive can tell a peer that is reading a backlog from a silent one.
    writes: u8,
    closing: Closing,
    /// The caller's deadline while open; once closing, the close deadline (the caller's
    /// is ignored then). One slot, since every idle connection holds it.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S, outbox: Arc<Outbox>) -> Self {
        Conn::with_farewell(io, outbox, NoFarewell)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, F: Farewell> Conn<S, F> {
    /// A connection that sends `farewell`'s bytes after the last queued output.
    pub fn with_farewell(io: S, outbox: Arc<Outbox>, farewell: F) -> Self {
        Conn {
            io,
            farewell,
            outbox,
            batch: VecDeque::new(),
            read_open: true,
            read_paused: false,
            unflushed: false,
            writes: 0,
            closing: Closing::Open,
            deadline: None,
        }
    }

    /// How many writes made progress since the last call (at most 255).
    pub fn take_writes(&mut self) -> u8 {
        std::mem::take(&mut self.writes)
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Pause or resume reading; output keeps flowing either way. (An outbox with the
    /// [`Overflow::PauseReading`](crate::outbox::Overflow) policy also pauses
    /// reading by itself while it is over its bound.)
    pub fn set_reading(&mut self, reading: bool) {
        self.read_paused = !reading;
    }

    /// Arm (or with `None`, disarm) the one caller-defined deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        if !matches!(self.closing, Closing::Open) {
            return;
        }
        match (deadline, &mut self.deadline) {
            (None, slot) => *slot = None,
            // Moving a timer costs more than reading a chunk: only when it changed.
            (Some(at), Some(sleep)) if sleep.deadline() == at => {}
            (Some(at), Some(sleep)) => sleep.as_mut().reset(at),
            (Some(at), slot) => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Wait for the next thing that happens on this connection, writing queued output
    /// meanwhile.
    ///
    /// Not an `async fn`: the returned future is just the borrow, so a task awaiting it
    /// stores 8 bytes for it.
    #[allow(clippy::should_implement_trait)] // an async wait, not an iterator
    pub fn next(&mut self) -> impl Future<Output = Input> + '_ {
        poll_fn(move |cx| self.poll_next(cx))
    }

    /// The peer reads nothing more (a WebSocket client sent its close): close the
    /// outbox for `reason` and drop what is still unwritten, so the farewell goes next.
    /// The first buffer taken is kept, since it may be partly written and the stream
    /// must stay whole to its last byte.
    pub fn abandon_output(&mut self, reason: CloseReason) {
        self.outbox.close_dropping_queued(reason);
        if self.batch.len() > 1 {
            let dropped: usize = self.batch.drain(1..).map(|bytes| bytes.len()).sum();
            self.outbox.written(dropped);
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        if let Poll::Ready(reason) = self.poll_output(cx) {
            return Poll::Ready(Input::Finished(reason));
        }
        // Before reading: a peer that always has input ready must not keep its deadline
        // (register timeout, keepalive, flood control) from ever being seen.
        if matches!(self.closing, Closing::Open) {
            if let Some(deadline) = &mut self.deadline {
                if deadline.as_mut().poll(cx).is_ready() {
                    self.deadline = None;
                    return Poll::Ready(Input::Deadline);
                }
            }
        }
        // A pausing outbox over its bound holds reading: what is read would only be
        // answered into it. The writer's progress wakes this task to look again.
        if self.read_open
            && !self.read_paused
            && matches!(self.closing, Closing::Open)
            && !self.outbox.holds_reading()
        {
            // Uninitialised: zeroing 16 KiB on every poll showed in the fan-out profile.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.read_open = false;
                    return Poll::Ready(Input::Eof);
                }
                Poll::Ready(Ok(())) => {
                    return Poll::Ready(Input::Data(Bytes::copy_from_slice(buf.filled())))
                }
                Poll::Ready(Err(error)) => {
                    self.read_open = false;
                    if breaks_connection(&error) {
                        // Nothing can reach the peer now. Drop the output rather than
                        // fail a write on what the hub still hands over (a leaver gets
                        // the room's last lines): that was a third send syscall per
                        // connection in a connect storm of resets.
                        self.outbox.close_discarding(CloseReason::PeerReset);
                        let dropped: usize = self.batch.drain(..).map(|bytes| bytes.len()).sum();
                        self.outbox.written(dropped);
                    }
                    return Poll::Ready(Input::ReadFailed(error));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Drive the write side. Ready only when the connection is finished.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        loop {
            match self.closing {
                Closing::Open | Closing::Flushing(_) => {}
                Closing::Lingering(reason) => return self.poll_linger(cx, reason),
            }
            if let Closing::Flushing(reason) = self.closing {
                if self.close_deadline_passed(cx) {
                    return Poll::Ready(reason);
                }
            }
            if self.batch.is_empty() && self.unflushed {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(_) => self.unflushed = false,
                    Poll::Pending => match self.on_output_blocked(cx) {
                        Some(poll) => return poll,
                        None => continue,
                    },
                }
            }
            if self.batch.is_empty() {
                match self.outbox.poll_take(cx, &mut self.batch) {
                    Poll::Ready(Take::Data) => {}
                    Poll::Ready(Take::Closed(reason)) => {
                        if self.outbox.is_discarding() {
                            // A slow consumer gets no flush: it was not reading anyway.
                            self.batch.clear();
                            return Poll::Ready(reason);
                        }
                        if matches!(self.closing, Closing::Open) {
                            self.start_flushing(reason);
                            continue;
                        }
                        if !self.read_open {
                            // The peer has closed already: nothing to linger for, and
                            // the close that follows sends our FIN.
                            return Poll::Ready(reason);
                        }
                        // Flushed: half-close, then linger for the peer's EOF.
                        match Pin::new(&mut self.io).poll_shutdown(cx) {
                            Poll::Ready(Ok(())) => {
                                self.closing = Closing::Lingering(reason);
                                continue;
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(reason),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.poll_write_batch(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    // The peer is gone; nothing queued can reach it.
                    self.batch.clear();
                    self.outbox.close(CloseReason::PeerReset);
                    return Poll::Ready(
                        self.outbox.close_reason().unwrap_or(CloseReason::PeerReset),
                    );
                }
                Poll::Pending => match self.on_output_blocked(cx) {
                    Some(poll) => return poll,
                    None => continue,
                },
            }
        }
    }

    /// The outbox is closed: queue the farewell after what is left, and from now on
    /// let the slot hold the close deadline.
    fn start_flushing(&mut self, reason: CloseReason) {
        self.closing = Closing::Flushing(reason);
        if let Some(last) = self.farewell.farewell(reason) {
            self.batch.push_back(last);
        }
        self.deadline = None;
    }

    /// Output waits on a peer that is not reading. If the outbox has been closed
    /// meanwhile, take the rest of it and start flushing now, so the close deadline
    /// runs: it used to start only once everything was written, and a peer that read
    /// nothing held its connection (and a keepalive's idle close) forever. `None`:
    /// go round again.
    fn on_output_blocked(&mut self, cx: &mut Context<'_>) -> Option<Poll<CloseReason>> {
        if !matches!(self.closing, Closing::Open) {
            return Some(Poll::Pending);
        }
        // Registered before looking, so a close that comes after the look still wakes
        // this task: the socket may never become writable, and the waker the last
        // take registered may have been used up by a push since.
        self.outbox.register_writer(cx.waker());
        if self.outbox.close_reason().is_none() {
            return Some(Poll::Pending);
        }
        loop {
            match self.outbox.poll_take(cx, &mut self.batch) {
                Poll::Ready(Take::Data) => {}
                Poll::Ready(Take::Closed(reason)) => {
                    if self.outbox.is_discarding() {
                        self.batch.clear();
                        return Some(Poll::Ready(reason));
                    }
                    self.start_flushing(reason);
                    return None;
                }
                // A closed outbox stays closed; nothing to wait for here.
                Poll::Pending => return Some(Poll::Pending),
            }
        }
    }

    /// One write of as much of the batch as fits. Ready(Ok) after progress.
    ///
    /// Several queued buffers are first copied into one per-thread gather buffer:
    /// the kernel charges per buffer handed to it (a vectored write of 400 rendered
    /// lines cost ~0.25 µs a line), while copying a line costs a few nanoseconds.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = Pin::new(&mut self.io);
        let poll = match self.batch.front() {
            Some(front) if self.batch.len() == 1 || front.len() >= GATHER_BYTES => {
                io.poll_write(cx, front)
            }
            Some(_) => GATHER.with(|gather| {
                let mut gather = gather.borrow_mut();
                gather.clear();
                for bytes in &self.batch {
                    if gather.len() + bytes.len() > GATHER_BYTES {
                        break;
                    }
                    gather.extend_from_slice(bytes);
                }
                io.poll_write(cx, &gather)
            }),
            None => return Poll::Ready(Ok(())),
        };
        let written = match poll {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(written)) => written,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        };
        let mut remaining = written;
        while remaining > 0 {
            let front = self
                .batch
                .front_mut()
                .expect("wrote no more than the batch holds");
            if front.len() <= remaining {
                remaining -= front.len();
                self.batch.pop_front();
            } else {
                front.advance(remaining);
                remaining = 0;
            }
        }
        self.outbox.written(written);
        self.writes = self.writes.saturating_add(1);
        if self.batch.is_empty() {
            // Release the batch's storage so an idle connection holds none.
            self.batch = VecDeque::new();
            // Encrypted transports buffer internally: flushed before the next take.
            self.unflushed = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>, reason: CloseReason) -> Poll<CloseReason> {
        loop {
            if self.close_deadline_passed(cx) {
                return Poll::Ready(reason);
            }
            // Uninitialised: zeroing 16 KiB on every poll showed in the fan-out profile.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => {
                    self.read_open = false;
                    return Poll::Ready(reason);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn close_deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)));
        deadline.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Push;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A farewell that names the reason.
    struct Goodbye;

    impl Farewell for Goodbye {
        fn farewell(&self, reason: CloseReason) -> Option<Bytes> {
            Some(Bytes::from(format!("bye: {reason}\n")))
        }
    }

    #[tokio::test]
    async fn writes_queued_output_and_reads_input() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::new(ours, outbox.clone());
        outbox.push(Bytes::from_static(b"hello "));
        outbox.push(Bytes::from_static(b"world\n"));
        theirs.write_all(b"ping").await.unwrap();
        match conn.next().await {
            Input::Data(data) => assert_eq!(&data[..], b"ping"),
            other => panic!("expected data, got {other:?}"),
        }
        let mut received = [0u8; 12];
        theirs.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"hello world\n");
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[tokio::test]
    async fn close_flushes_then_finishes_with_the_reason() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::new(ours, outbox.clone());
        outbox.push(Bytes::from_static(b"goodbye\n"));
        outbox.close(CloseReason::Shutdown);
        let peer = tokio::spawn(async move {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.unwrap();
            all
        });
        match conn.next().await {
            Input::Finished(reason) => assert_eq!(reason, CloseReason::Shutdown),
            other => panic!("expected finish, got {other:?}"),
        }
        drop(conn);
        assert_eq!(peer.await.unwrap(), b"goodbye\n");
    }

    #[tokio::test]
    async fn the_farewell_goes_after_the_last_output_and_not_to_a_slow_consumer() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::with_farewell(ours, outbox.clone(), Goodbye);
        outbox.push(Bytes::from_static(b"last line\n"));
        outbox.close(CloseReason::Shutdown);
        let peer = tokio::spawn(async move {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.unwrap();
            all
        });
        assert!(matches!(
            conn.next().await,
            Input::Finished(CloseReason::Shutdown)
        ));
        drop(conn);
        assert_eq!(
            peer.await.unwrap(),
            b"last line\nbye: server shutting down\n"
        );

        // Over its bound, a client is not flushed: no farewell either.
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let outbox = Arc::new(Outbox::new(8));
        let mut conn = Conn::with_farewell(ours, outbox.clone(), Goodbye);
        outbox.push(Bytes::from_static(b"more than eight bytes\n"));
        assert!(matches!(conn.next().await, Input::Finished(_)));
        drop(conn);
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).await.unwrap();
        assert!(all.is_empty(), "sent {all:?}");
    }

    #[tokio::test]
    async fn abandoned_output_keeps_the_stream_whole_and_ends_with_the_farewell() {
        // Eight bytes of room: the first write stops inside the first buffer.
        let (ours, mut theirs) = tokio::io::duplex(8);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::with_farewell(ours, outbox.clone(), Goodbye);
        for bytes in [&b"AAAAAAAAAAAA"[..], b"BBBB", b"CCCC"] {
            outbox.push(Bytes::from_static(bytes));
        }
        let stalled = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
        assert!(stalled.is_err(), "the peer reads nothing yet: {stalled:?}");
        outbox.push(Bytes::from_static(b"DDDD"));
        conn.abandon_output(CloseReason::PeerClosed);
        assert_eq!(outbox.push(Bytes::from_static(b"EEEE")), Push::Closed);
        let peer = tokio::spawn(async move {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.unwrap();
            all
        });
        assert!(matches!(
            conn.next().await,
            Input::Finished(CloseReason::PeerClosed)
        ));
        assert_eq!(outbox.pending_bytes(), 0);
        drop(conn);
        // The partly written buffer is finished; the rest is dropped.
        let expected = format!("AAAAAAAAAAAAbye: {}\n", CloseReason::PeerClosed);
        assert_eq!(String::from_utf8(peer.await.unwrap()).unwrap(), expected);
    }

    /// A transport whose read fails once with `error`, then waits forever; it keeps
    /// whatever is written to it.
    struct FailingRead {
        error: Option<io::ErrorKind>,
        written: Vec<u8>,
    }

    impl AsyncRead for FailingRead {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.error.take() {
                Some(kind) => Poll::Ready(Err(kind.into())),
                None => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for FailingRead {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bytes: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(bytes);
            Poll::Ready(Ok(bytes.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A pump whose first read fails with `kind`, once that failure is reported.
    async fn after_read_error(kind: io::ErrorKind) -> (Conn<FailingRead, Goodbye>, Arc<Outbox>) {
        let io = FailingRead {
            error: Some(kind),
            written: Vec::new(),
        };
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::with_farewell(io, outbox.clone(), Goodbye);
        assert!(matches!(conn.next().await, Input::ReadFailed(_)));
        (conn, outbox)
    }

    #[tokio::test]
    async fn a_reset_connection_writes_nothing_more() {
        let (mut conn, outbox) = after_read_error(io::ErrorKind::ConnectionReset).await;
        // What the hub hands over next (a leaver's last lines) is refused at once.
        assert_eq!(outbox.push(Bytes::from_static(b"late\n")), Push::Closed);
        assert!(outbox.is_discarding());
        outbox.close(CloseReason::Shutdown);
        assert!(matches!(
            conn.next().await,
            Input::Finished(CloseReason::PeerReset)
        ));
        assert_eq!(outbox.pending_bytes(), 0);
        assert_eq!(conn.io.written, b"", "no write, not even the farewell");

        // Any other read error (a TLS record that does not decrypt, say) leaves the
        // output flowing, farewell included.
        let (mut conn, outbox) = after_read_error(io::ErrorKind::InvalidData).await;
        assert_eq!(outbox.push(Bytes::from_static(b"still\n")), Push::Queued);
        outbox.close(CloseReason::PeerReset);
        assert!(matches!(
            conn.next().await,
            Input::Finished(CloseReason::PeerReset)
        ));
        let expected = format!("still\nbye: {}\n", CloseReason::PeerReset);
        assert_eq!(String::from_utf8_lossy(&conn.io.written), expected);
    }

    /// A peer that reads nothing still has its connection closed once the outbox is:
    /// the close deadline runs while a write waits, and what was queued behind it
    /// stays in order ahead of the farewell.
    #[tokio::test(start_paused = true)]
    async fn a_close_finishes_in_time_when_the_peer_reads_nothing() {
        let (ours, mut theirs) = tokio::io::duplex(8);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::with_farewell(ours, outbox.clone(), Goodbye);
        outbox.push(Bytes::from_static(b"AAAAAAAAAAAA"));
        let stalled = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
        assert!(stalled.is_err(), "the peer reads nothing yet: {stalled:?}");
        outbox.push(Bytes::from_static(b"BBBB"));
        outbox.close(CloseReason::IdleTimeout);
        let started = Instant::now();
        let finished = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT * 5, conn.next()).await;
        assert!(
            matches!(finished, Ok(Input::Finished(CloseReason::IdleTimeout))),
            "{finished:?}"
        );
        assert!(started.elapsed() <= CLOSE_FLUSH_TIMEOUT + Duration::from_millis(10));
        assert_eq!(
            conn.batch.len(),
            3,
            "the rest and the farewell were taken, in order"
        );
        let rest: Vec<u8> = conn.batch.iter().flat_map(|bytes| bytes.to_vec()).collect();
        let expected = format!("AAAABBBBbye: {}\n", CloseReason::IdleTimeout);
        assert_eq!(String::from_utf8(rest).unwrap(), expected);
        let mut written = [0u8; 8];
        theirs.read_exact(&mut written).await.unwrap();
        assert_eq!(&written, b"AAAAAAAA");
    }

    /// Counts its wake-ups.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A close that comes while a write waits on a full socket wakes the pump, even
    /// when a push has used up the waker its last take registered: nothing else
    /// would (the socket may never drain, and a door may have no deadline armed).
    #[test]
    fn a_close_wakes_a_pump_blocked_on_a_full_socket() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (ours, _theirs) = tokio::io::duplex(8);
            let outbox = Arc::new(Outbox::new(1 << 20));
            let mut conn = Conn::new(ours, outbox.clone());
            let counter = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
            let waker = std::task::Waker::from(counter.clone());
            let mut cx = Context::from_waker(&waker);
            let woken = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
            outbox.push(Bytes::from_static(b"AAAAAAAAAAAA"));
            assert!(
                conn.poll_next(&mut cx).is_pending(),
                "blocked on the socket"
            );
            // Into the empty queue: wakes the waker the take registered.
            outbox.push(Bytes::from_static(b"BBBB"));
            assert_eq!(woken(), 1);
            assert!(conn.poll_next(&mut cx).is_pending(), "still blocked");
            outbox.close(CloseReason::IdleTimeout);
            assert_eq!(woken(), 2, "the close woke nobody");
        });
    }

    /// Over its bound, a pausing outbox holds reading (the input stays in the peer's
    /// pipe) until the peer has read enough of the output; nothing is dropped.
    #[tokio::test]
    async fn a_pausing_outbox_over_its_bound_holds_reading_until_the_peer_catches_up() {
        let (ours, mut theirs) = tokio::io::duplex(4);
        let outbox = Arc::new(Outbox::with_overflow(
            8,
            crate::outbox::Overflow::PauseReading,
        ));
        let mut conn = Conn::new(ours, outbox.clone());
        assert_eq!(
            outbox.push(Bytes::from_static(b"0123456789abcdef")),
            Push::Queued
        );
        theirs.write_all(b"in").await.unwrap();
        // Four bytes fit the pipe; twelve still pending is over the bound of eight.
        let held = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
        assert!(held.is_err(), "read while over the bound: {held:?}");
        let (mut peer_read, mut peer_write) = tokio::io::split(theirs);
        let reader = tokio::spawn(async move {
            let mut all = [0u8; 16];
            peer_read.read_exact(&mut all).await.unwrap();
            all
        });
        let bounded = Duration::from_secs(5);
        match tokio::time::timeout(bounded, conn.next()).await {
            Ok(Input::Data(data)) => assert_eq!(&data[..], b"in"),
            other => panic!("expected the held input, got {other:?}"),
        }
        // The rest of the output goes out only while the connection is driven; the
        // peer's EOF spares it the linger.
        peer_write.shutdown().await.unwrap();
        outbox.close(CloseReason::PeerClosed);
        let finished = tokio::time::timeout(bounded, async {
            loop {
                if let Input::Finished(reason) = conn.next().await {
                    break reason;
                }
            }
        })
        .await;
        assert!(finished.is_ok(), "the connection never finished writing");
        let echoed = tokio::time::timeout(bounded, reader).await;
        assert_eq!(
            &echoed.expect("the peer read it all").unwrap(),
            b"0123456789abcdef"
        );
    }

    #[tokio::test]
    async fn reports_eof_and_deadline() {
        let (ours, theirs) = tokio::io::duplex(64);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut conn = Conn::new(ours, outbox);
        conn.set_deadline(Some(Instant::now() + Duration::from_millis(10)));
        assert!(matches!(conn.next().await, Input::Deadline));
        drop(theirs);
        assert!(matches!(conn.next().await, Input::Eof));
    }
}
