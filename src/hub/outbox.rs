//! The per-client outbound queue: bounded in bytes, never blocks the publisher.
//!
//! The hub pushes rendered, shared `Bytes` handles; the connection's writer takes
//! everything queued at once and writes it with one vectored write. The byte count
//! covers what is queued *and* what the writer has taken but not yet written, so
//! the bound is the client's whole pending output. A push that would exceed the
//! bound closes the outbox with [`CloseReason::SlowConsumer`]: the publisher never
//! waits for a reader, and the slow client is the only one affected.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use super::CloseReason;

/// What became of a [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the writer.
    Queued,
    /// This push went over the byte bound: the outbox is now closed as a slow consumer
    /// and the caller (the hub) should remove the client.
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
    /// A slow consumer's queue is discarded rather than flushed.
    discard: bool,
}

/// A bounded, closable queue of rendered output for one connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    writer_waker: AtomicWaker,
    max_pending_bytes: usize,
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
    pub fn new(max_pending_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pending_bytes: 0,
                closed: None,
                discard: false,
            }),
            writer_waker: AtomicWaker::new(),
            max_pending_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue `bytes` for the writer. Never blocks beyond a short uncontended lock.
    pub fn push(&self, bytes: Bytes) -> Push {
        let result = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return Push::Closed;
            }
            if state.pending_bytes + bytes.len() > self.max_pending_bytes {
                state.closed = Some(CloseReason::SlowConsumer);
                state.discard = true;
                state.queue.clear();
                Push::Overflowed
            } else {
                state.pending_bytes += bytes.len();
                state.queue.push_back(bytes);
                Push::Queued
            }
        };
        self.writer_waker.wake();
        result
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
            None => Poll::Pending,
        }
    }

    /// The writer reports `written` bytes as gone to the socket.
    pub fn written(&self, written: usize) {
        let mut state = self.lock();
        state.pending_bytes = state.pending_bytes.saturating_sub(written);
    }

    /// True once a slow-consumer close means nothing more should be written.
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
    fn empty_open_outbox_is_pending() {
        let outbox = Outbox::new(100);
        assert!(take(&outbox).0.is_pending());
    }
}
