//! The per-client outbound queue: bounded in bytes, never blocks the publisher.
//!
//! The hub pushes rendered, shared `Bytes` handles; the connection's writer takes
//! everything queued at once and writes it with one vectored write. The byte count
//! covers what is queued *and* what the writer has taken but not yet written, so
//! the bound is the client's whole pending output. What a push over the bound does is
//! the outbox's [`Overflow`] policy: for the hub's clients it closes the outbox with
//! [`CloseReason::SlowConsumer`] (the publisher never waits for a reader, and the slow
//! client is the only one affected); for a connection that only answers its own input
//! (the echo services) the push is queued and the connection stops reading instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::chat::CloseReason;

/// Room made in an empty queue at its first push: a burst usually follows, and a
/// round usually gives a member a few handles (at most 33 from one room batch, fewer
/// in a big room; the queue grows past 12 when needed). 12 handles are 384 bytes, a
/// jemalloc size class no long-lived per-connection record uses (tokio's task cell is
/// 512 bytes, its I/O registration 256): these buffers come and go every round, and
/// sharing slabs with records that stay would leave those slabs half empty after a
/// join storm (16 slots, 512 bytes, cost ~200 bytes per idle connection at 19,000).
const INITIAL_QUEUE_SLOTS: usize = 12;

/// What a push over the byte bound does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Close the outbox as a slow consumer and drop what is queued: for output that
    /// others publish (the hub's fan-out), which must never wait for one reader.
    CloseSlowConsumer,
    /// Queue it anyway; the connection reads nothing more until its output is back
    /// under the bound ([`Outbox::holds_reading`]). For output that only the
    /// connection's own input produces, where not reading is the backpressure: the
    /// bound is exceeded by at most the answers to one read.
    PauseReading,
}

/// What became of a [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the writer.
    Queued,
    /// This push went over the byte bound of a [`Overflow::CloseSlowConsumer`] outbox:
    /// it is now closed as a slow consumer and the caller (the hub) should remove the
    /// client.
    Overflowed,
    /// The outbox was already closed; the bytes were dropped because nobody will write them.
    Closed,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Bytes>,
    /// Bytes queued plus bytes taken by the writer and not yet reported written.
    pending_bytes: usize,
    closed: Option<CloseReason>,
    /// Nothing more is written (a slow consumer, a broken connection): the queue is
    /// discarded rather than flushed.
    discard: bool,
    /// The writer found nothing to take and is waiting for a wake-up.
    writer_waiting: bool,
    /// Held while the writer owes the hub's current flush round its turn.
    ticket: Option<RoundTicket>,
}

impl State {
    fn drop_queued(&mut self) {
        let dropped: usize = self.queue.iter().map(Bytes::len).sum();
        self.pending_bytes = self.pending_bytes.saturating_sub(dropped);
        self.queue = VecDeque::new();
    }
}

/// The writers one flush woke. The hub starts the next flush once every one of them
/// has taken its output, so a busy room's lines gather while the last round is being
/// written (one write per member per round, whatever the message rate), and a quiet
/// server's lines go out at once.
#[derive(Debug, Default)]
pub struct FlushRound {
    outstanding: AtomicUsize,
    finished: Notify,
}

impl FlushRound {
    /// Writers woken by the last flush that have not yet taken their output.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Completes once the outstanding count has dropped to zero since the last call
    /// (a finish while nobody waits is remembered).
    pub async fn finished(&self) {
        self.finished.notified().await
    }
}

/// One woken writer's part in a round: dropped when the writer next looks at its
/// outbox, or when the outbox itself goes.
#[derive(Debug)]
struct RoundTicket(Arc<FlushRound>);

impl Drop for RoundTicket {
    fn drop(&mut self) {
        if self.0.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.finished.notify_one();
        }
    }
}

/// A bounded, closable queue of rendered output for one connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    writer_waker: AtomicWaker,
    /// Output is queued, or the writer was woken in a round, and the writer has not
    /// looked at its outbox since: whatever is pushed now goes out in its coming write.
    awaits_take: AtomicBool,
    max_pending_bytes: usize,
    overflow: Overflow,
}

/// What the writer got from [`Outbox::poll_take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Buffers were appended to the writer's batch.
    Data,
    /// Nothing queued and the outbox is closed: finish writing what you hold, then close.
    Closed(CloseReason),
}

impl Outbox {
    /// An outbox that closes as a slow consumer when it goes over `max_pending_bytes`.
    pub fn new(max_pending_bytes: usize) -> Self {
        Outbox::with_overflow(max_pending_bytes, Overflow::CloseSlowConsumer)
    }

    pub fn with_overflow(max_pending_bytes: usize, overflow: Overflow) -> Self {
        Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pending_bytes: 0,
                closed: None,
                discard: false,
                writer_waiting: false,
                ticket: None,
            }),
            writer_waker: AtomicWaker::new(),
            awaits_take: AtomicBool::new(false),
            max_pending_bytes,
            overflow,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue `bytes` for the writer and wake it. Never blocks beyond a short
    /// uncontended lock.
    pub fn push(&self, bytes: Bytes) -> Push {
        let (result, wake) = self.enqueue(bytes);
        if wake {
            self.wake_writer();
        }
        result
    }

    /// Queue `bytes` without waking the writer; true in the second place means the
    /// caller owes it a [`Outbox::wake_writer`]. The hub uses this to wake each writer
    /// once per flush, after a whole batch of fan-outs, rather than once per message.
    ///
    /// Only a push into an empty queue owes a wake: until the writer takes the queue
    /// it has a wake-up coming already.
    pub fn enqueue(&self, bytes: Bytes) -> (Push, bool) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return (Push::Closed, false);
        }
        if state.pending_bytes + bytes.len() > self.max_pending_bytes
            && self.overflow == Overflow::CloseSlowConsumer
        {
            state.closed = Some(CloseReason::SlowConsumer);
            state.discard = true;
            state.queue.clear();
            return (Push::Overflowed, true);
        }
        let was_empty = state.queue.is_empty();
        if state.queue.capacity() == 0 {
            // The writer took the last allocation; skip the 4-8-16 regrowth.
            state.queue.reserve(INITIAL_QUEUE_SLOTS);
        }
        state.pending_bytes += bytes.len();
        state.queue.push_back(bytes);
        self.awaits_take.store(true, Ordering::Relaxed);
        (Push::Queued, was_empty)
    }

    /// Have `waker` woken by the next push, wake-up or close, without taking anything:
    /// for a writer whose socket is full, which must still see the outbox close.
    pub fn register_writer(&self, waker: &std::task::Waker) {
        self.writer_waker.register(waker);
    }

    /// Wake the writer so it takes what is queued.
    pub fn wake_writer(&self) {
        self.writer_waker.wake();
    }

    /// Wake the writer as part of `round`: if it is waiting, the round counts it until
    /// it has taken its output. A writer busy with an earlier batch (a full socket) is
    /// woken but not counted, so one slow reader never holds a round back.
    pub fn wake_writer_in(&self, round: &Arc<FlushRound>) {
        {
            let mut state = self.lock();
            if state.writer_waiting && state.ticket.is_none() {
                round.outstanding.fetch_add(1, Ordering::AcqRel);
                state.ticket = Some(RoundTicket(round.clone()));
                self.awaits_take.store(true, Ordering::Relaxed);
            }
        }
        self.writer_waker.wake();
    }

    /// True while output is queued or a round's wake-up is out and the writer has not
    /// taken since: a push now joins its coming write at no extra cost. A hint (the
    /// writer may be taking right now on another thread); a push that misses it owes a
    /// wake-up as usual.
    pub fn awaits_take(&self) -> bool {
        self.awaits_take.load(Ordering::Relaxed)
    }

    /// Close the outbox: the writer flushes what is queued (unless the client is being
    /// dropped as a slow consumer) and then closes the connection. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason);
        }
        self.writer_waker.wake();
    }

    /// Close the outbox (first reason wins) and drop what is queued and not yet taken:
    /// for a peer that has said it reads nothing more. Unlike a slow consumer's close,
    /// the writer still ends with its farewell.
    pub fn close_dropping_queued(&self, reason: CloseReason) {
        {
            let mut state = self.lock();
            state.closed.get_or_insert(reason);
            state.drop_queued();
        }
        self.writer_waker.wake();
    }

    /// Close the outbox (first reason wins) and write nothing more, not even the
    /// farewell: for a connection the kernel reports broken (reset), where every write
    /// would fail. What is queued is dropped and later pushes are refused.
    pub fn close_discarding(&self, reason: CloseReason) {
        {
            let mut state = self.lock();
            state.closed.get_or_insert(reason);
            state.discard = true;
            state.drop_queued();
        }
        self.writer_waker.wake();
    }

    /// The reason the outbox was closed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Bytes waiting to be written (queued or held by the writer).
    pub fn pending_bytes(&self) -> usize {
        self.lock().pending_bytes
    }

    /// Move everything queued into `batch`. Registers the writer's waker first so a
    /// push racing with this call is never missed.
    pub fn poll_take(&self, cx: &mut Context<'_>, batch: &mut VecDeque<Bytes>) -> Poll<Take> {
        self.writer_waker.register(cx.waker());
        let mut state = self.lock();
        // Whatever is found, the writer has had its turn in the round.
        drop(state.ticket.take());
        self.awaits_take.store(false, Ordering::Relaxed);
        state.writer_waiting = false;
        if state.discard {
            batch.clear();
            return Poll::Ready(Take::Closed(
                state.closed.unwrap_or(CloseReason::SlowConsumer),
            ));
        }
        if !state.queue.is_empty() {
            if batch.is_empty() {
                // Hand over the allocation itself: the queue keeps no capacity from a
                // past burst, and the writer frees it once the batch is written.
                std::mem::swap(&mut state.queue, batch);
            } else {
                batch.extend(state.queue.drain(..));
            }
            return Poll::Ready(Take::Data);
        }
        match state.closed {
            Some(reason) => Poll::Ready(Take::Closed(reason)),
            None => {
                state.writer_waiting = true;
                Poll::Pending
            }
        }
    }

    /// The writer reports `written` bytes as gone to the socket.
    pub fn written(&self, written: usize) {
        let mut state = self.lock();
        state.pending_bytes = state.pending_bytes.saturating_sub(written);
    }

    /// True while a [`Overflow::PauseReading`] outbox is at or over its bound: its
    /// connection reads nothing until the writer has caught up. Always false (and no
    /// lock taken) for the hub's outboxes.
    pub fn holds_reading(&self) -> bool {
        self.overflow == Overflow::PauseReading
            && self.lock().pending_bytes >= self.max_pending_bytes
    }

    /// True once nothing more should be written: a slow consumer's close, or
    /// [`Outbox::close_discarding`].
    pub fn is_discarding(&self) -> bool {
        self.lock().discard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn take(outbox: &Outbox) -> (Poll<Take>, VecDeque<Bytes>) {
        let mut batch = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let poll = outbox.poll_take(&mut cx, &mut batch);
        (poll, batch)
    }

    #[test]
    fn queues_in_order_and_counts_until_written() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(Bytes::from_static(b"abc")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"defg")), Push::Queued);
        let (poll, batch) = take(&outbox);
        assert_eq!(poll, Poll::Ready(Take::Data));
        assert_eq!(
            batch,
            [Bytes::from_static(b"abc"), Bytes::from_static(b"defg")]
        );
        // Taken but unwritten bytes still count against the bound.
        assert_eq!(outbox.pending_bytes(), 7);
        assert_eq!(outbox.push(Bytes::from_static(b"1234")), Push::Overflowed);
    }

    #[test]
    fn a_pausing_outbox_queues_past_its_bound_and_holds_reading_until_written() {
        let outbox = Outbox::with_overflow(10, Overflow::PauseReading);
        assert!(!outbox.holds_reading());
        assert_eq!(outbox.push(Bytes::from_static(b"abcdefgh")), Push::Queued);
        assert!(!outbox.holds_reading(), "8 of 10 bytes");
        // Over the bound: still queued, never closed, and reading is held.
        assert_eq!(outbox.push(Bytes::from_static(b"ijkl")), Push::Queued);
        assert!(outbox.holds_reading());
        assert_eq!(outbox.close_reason(), None);
        let (poll, batch) = take(&outbox);
        assert_eq!(poll, Poll::Ready(Take::Data));
        assert_eq!(batch.len(), 2, "nothing was dropped");
        // Taken is not written: still held until the writer reports it gone.
        assert!(outbox.holds_reading());
        outbox.written(8);
        assert!(!outbox.holds_reading(), "4 of 10 bytes left");
        // The hub's default never holds reading: it closes instead.
        let closing = Outbox::new(10);
        assert_eq!(
            closing.push(Bytes::from_static(b"abcdefghijkl")),
            Push::Overflowed
        );
        assert!(!closing.holds_reading());
    }

    #[test]
    fn an_emptied_queue_keeps_no_capacity() {
        let outbox = Outbox::new(1 << 20);
        for _ in 0..1000 {
            outbox.push(Bytes::from_static(b"join notice\n"));
        }
        let (_, batch) = take(&outbox);
        assert_eq!(batch.len(), 1000);
        assert_eq!(outbox.lock().queue.capacity(), 0);
    }

    #[test]
    fn written_bytes_free_room() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(Bytes::from_static(b"0123456789")), Push::Queued);
        let _ = take(&outbox);
        outbox.written(10);
        assert_eq!(outbox.push(Bytes::from_static(b"0123456789")), Push::Queued);
    }

    #[test]
    fn overflow_closes_as_slow_consumer_and_discards() {
        let outbox = Outbox::new(4);
        assert_eq!(outbox.push(Bytes::from_static(b"abcd")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"e")), Push::Overflowed);
        assert_eq!(outbox.push(Bytes::from_static(b"f")), Push::Closed);
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
        let (poll, batch) = take(&outbox);
        assert_eq!(poll, Poll::Ready(Take::Closed(CloseReason::SlowConsumer)));
        assert!(batch.is_empty());
    }

    #[test]
    fn close_flushes_queue_first_and_first_reason_wins() {
        let outbox = Outbox::new(100);
        outbox.push(Bytes::from_static(b"bye"));
        outbox.close(CloseReason::Shutdown);
        outbox.close(CloseReason::ClientQuit);
        let (poll, batch) = take(&outbox);
        assert_eq!(poll, Poll::Ready(Take::Data));
        assert_eq!(batch.len(), 1);
        let (poll, _) = take(&outbox);
        assert_eq!(poll, Poll::Ready(Take::Closed(CloseReason::Shutdown)));
    }

    #[test]
    fn close_dropping_queued_drops_the_queue_and_refuses_more() {
        let outbox = Outbox::new(100);
        outbox.push(Bytes::from_static(b"one"));
        outbox.push(Bytes::from_static(b"two"));
        outbox.close_dropping_queued(CloseReason::PeerClosed);
        assert_eq!(outbox.push(Bytes::from_static(b"late")), Push::Closed);
        assert_eq!(outbox.pending_bytes(), 0);
        assert!(
            !outbox.is_discarding(),
            "not a slow consumer: the farewell still goes"
        );
        let (poll, batch) = take(&outbox);
        assert_eq!(poll, Poll::Ready(Take::Closed(CloseReason::PeerClosed)));
        assert!(batch.is_empty());
    }

    #[test]
    fn only_a_push_into_an_empty_queue_wakes_the_writer() {
        use std::task::Wake;
        struct Counter(AtomicUsize);
        impl Wake for Counter {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let outbox = Outbox::new(1 << 20);
        let mut batch = VecDeque::new();
        for round in 1..=3 {
            assert!(outbox.poll_take(&mut cx, &mut batch).is_pending());
            for _ in 0..10 {
                outbox.push(Bytes::from_static(b"line\n"));
            }
            assert_eq!(counter.0.load(Ordering::SeqCst), round);
            assert_eq!(
                outbox.poll_take(&mut cx, &mut batch),
                Poll::Ready(Take::Data)
            );
            assert_eq!(batch.len(), 10);
            batch.clear();
        }
        // A close still wakes a writer that is waiting.
        outbox.close(CloseReason::Shutdown);
        assert_eq!(counter.0.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_round_waits_for_every_waiting_writer_to_take() {
        let round = Arc::new(FlushRound::default());
        let first = Outbox::new(1 << 20);
        let second = Outbox::new(1 << 20);
        let busy = Outbox::new(1 << 20);
        // Two writers waiting for output; a third never asked (busy writing).
        assert!(take(&first).0.is_pending());
        assert!(take(&second).0.is_pending());
        for outbox in [&first, &second, &busy] {
            outbox.enqueue(Bytes::from_static(b"line\n"));
            outbox.wake_writer_in(&round);
        }
        assert_eq!(round.outstanding(), 2);
        assert!(first.awaits_take() && second.awaits_take() && busy.awaits_take());
        // Waking twice in one round counts once.
        first.wake_writer_in(&round);
        assert_eq!(round.outstanding(), 2);
        assert_eq!(take(&first).0, Poll::Ready(Take::Data));
        assert_eq!(round.outstanding(), 1);
        assert!(!first.awaits_take());
        let idle = Outbox::new(1 << 20);
        assert!(take(&idle).0.is_pending());
        idle.wake_writer_in(&Arc::new(FlushRound::default()));
        assert!(idle.awaits_take(), "a woken writer has a take coming");
        // An outbox dropped with its ticket (the client left) finishes its part too.
        drop(second);
        assert_eq!(round.outstanding(), 0);
        // The finish was remembered for whoever waits next.
        use std::future::Future;
        let mut finished = std::pin::pin!(round.finished());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(finished.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn empty_open_outbox_is_pending() {
        let outbox = Outbox::new(100);
        assert!(take(&outbox).0.is_pending());
    }
}
