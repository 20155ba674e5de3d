//! One WebSocket connection speaking the JSON protocol: one object per text frame.
//!
//! Two halves run in one task: the writer drains the connection's [`Outbox`] (one
//! frame per queued JSON line), sends keepalive pings and, when the outbox closes, sends
//! the remaining events and a close frame (1001 "going away" on shutdown); the reader
//! feeds frames to the [`JsonSession`]. Limits are set explicitly, not left at
//! axum's defaults: message and frame size, bounded buffers, no compression.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use super::super::conn::CLOSE_FLUSH_TIMEOUT;
use super::super::json::codec::OVERSIZE_HEAD_BYTES;
use super::super::json::{JsonDoor, JsonSession};
use super::super::Slot;
use super::lazy_buffers::WRITE_BATCH_BYTES;
use crate::hub::outbox::Take;
use crate::hub::{CloseReason, HubGone, Outbox};

/// tungstenite's read buffer (kept for the life of a connection): it takes bytes
/// from [`LazyBuffers`](super::lazy_buffers::LazyBuffers) this much at a time, a copy in memory, not a system call.
const TUNGSTENITE_READ_BYTES: usize = 256;

/// WebSocket limits and keepalive.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Messages over this are refused with `line_too_long`; the connection stays.
    pub max_message_bytes: usize,
    /// A ping goes out this often when the server has nothing else to send.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
}

impl WsLimits {
    /// Frames up to twice the message cap are read whole, so an over-cap message can
    /// still be answered with its id; beyond that the socket is closed with 1009.
    fn hard_max(&self) -> usize {
        self.max_message_bytes.saturating_mul(2).max(1024)
    }

    /// Apply the limits to an upgrade (axum's defaults: 64 MiB messages, 16 MiB frames,
    /// unbounded write buffer, 128 KiB buffers per idle connection).
    ///
    /// tungstenite's buffers live as long as the connection (the read buffer at its
    /// full size from the start, the write buffer at the largest batch it held), so
    /// they are kept tiny: the stream below ([`LazyBuffers`](super::lazy_buffers::LazyBuffers)) reads in big chunks and
    /// gathers frames into one write, in buffers that are freed when empty.
    pub fn configure(&self, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
        let hard_max = self.hard_max();
        upgrade
            .max_message_size(hard_max)
            .max_frame_size(hard_max)
            .read_buffer_size(TUNGSTENITE_READ_BYTES)
            // Each frame goes straight down to `LazyBuffers`, which batches them.
            .write_buffer_size(0)
            // What the socket has not taken: our batch plus one frame in tungstenite.
            .max_write_buffer_size(WRITE_BATCH_BYTES + 2 * hard_max)
    }
}

/// A close frame's code for a reason.
fn close_code_for(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::ClientQuit | CloseReason::PeerClosed => close_code::NORMAL,
        CloseReason::Shutdown | CloseReason::IdleTimeout | CloseReason::RegisterTimeout => {
            close_code::AWAY
        }
        CloseReason::LineTooLong => close_code::SIZE,
        CloseReason::BadInput => close_code::INVALID,
        CloseReason::PeerReset => close_code::ERROR,
        CloseReason::SlowConsumer | CloseReason::Flood => close_code::POLICY,
        CloseReason::ServerFull => close_code::AGAIN,
    }
}

/// The two halves of an upgraded WebSocket.
pub type WsSink = SplitSink<WebSocket, Message>;
pub type WsStream = SplitStream<WebSocket>;

/// Drive one upgraded WebSocket from connect to close.
///
/// This future is the connection's task for its whole life, so what it holds while
/// idle is kept small: the halves come in already split, and the work done per
/// message or per batch (big futures: hub commands, timed writes) is boxed, so its
/// state exists only while that work runs.
pub async fn run(
    door: Arc<JsonDoor>,
    mut sink: WsSink,
    mut stream: WsStream,
    peer: SocketAddr,
    slot: Slot,
    limits: WsLimits,
) {
    let Some((client, outbox)) = Box::pin(door.open(peer)).await else {
        let _ = sink.send(close_frame(CloseReason::Shutdown)).await;
        return;
    };
    let _counted = door.metrics().connected(&outbox);
    let mut session = door.session(client);
    // Milliseconds since `start` when the peer last sent anything; shared by the halves.
    let start = Instant::now();
    let last_heard = AtomicU64::new(0);
    let writer_first = {
        // Pinned where they are made: a moved-from copy would keep its space too.
        let writer = std::pin::pin!(write_loop(&mut sink, &outbox, &limits, start, &last_heard));
        let reader = std::pin::pin!(read_loop(
            &mut stream,
            &mut session,
            &outbox,
            &limits,
            start,
            &last_heard,
        ));
        tokio::select! {
            reason = writer => Ok(reason),
            () = reader => Err(()),
        }
    };
    let reason = match writer_first {
        Ok(reason) => {
            // Our close frame is out: read until the peer's answering close (bounded),
            // so the TCP close is clean.
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
            reason
        }
        // The reader told the hub it is going; send what is left and the close frame.
        Err(()) => tokio::time::timeout(
            CLOSE_FLUSH_TIMEOUT,
            write_loop(&mut sink, &outbox, &limits, start, &last_heard),
        )
        .await
        .unwrap_or_else(|_| outbox.close_reason().unwrap_or(CloseReason::PeerReset)),
    };
    Box::pin(door.closed(client, peer, reason)).await;
    drop(slot);
}

fn close_frame(reason: CloseReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code_for(reason),
        reason: Utf8Bytes::from_static(reason.describe()),
    }))
}

fn millis_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Send queued events (one frame each), keepalive pings, and finally the close frame.
/// Returns the reason the outbox closed.
async fn write_loop(
    sink: &mut WsSink,
    outbox: &Arc<Outbox>,
    limits: &WsLimits,
    start: Instant,
    last_heard: &AtomicU64,
) -> CloseReason {
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    loop {
        let taken = tokio::select! {
            taken = poll_fn(|cx| outbox.poll_take(cx, &mut batch)) => taken,
            _ = ping.tick() => {
                let quiet = millis_since(start)
                    .saturating_sub(last_heard.load(Ordering::Relaxed));
                if quiet > limits.idle_timeout.as_millis() as u64 {
                    outbox.close(CloseReason::IdleTimeout);
                } else if Box::pin(tokio::time::timeout(
                    limits.idle_timeout,
                    sink.send(Message::Ping(Bytes::new())),
                ))
                .await
                .map_or(true, |sent| sent.is_err())
                {
                    outbox.close(CloseReason::PeerReset);
                }
                continue;
            }
        };
        match taken {
            Take::Data => {
                // The batch's allocation came from the outbox; it is freed here, not
                // kept for the next one (an idle connection holds no queue).
                let events = std::mem::take(&mut batch);
                let written: usize = events.iter().map(Bytes::len).sum();
                let sent = Box::pin(tokio::time::timeout(
                    limits.idle_timeout,
                    send_events(sink, events),
                ))
                .await;
                outbox.written(written);
                match sent {
                    Ok(Ok(())) => {}
                    // The peer is gone, or has not taken a byte for the whole idle timeout.
                    Ok(Err(_)) => outbox.close(CloseReason::PeerReset),
                    Err(_) => outbox.close(CloseReason::SlowConsumer),
                }
            }
            Take::Closed(reason) => {
                if !outbox.is_discarding() {
                    let _ = Box::pin(tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
                        let _ = sink.send(close_frame(reason)).await;
                        let _ = sink.flush().await;
                    }))
                    .await;
                }
                return reason;
            }
        }
    }
}

/// Send each JSON line of each queued buffer as its own text frame, then flush (the
/// frames gather below and go out in one write).
async fn send_events(sink: &mut WsSink, events: VecDeque<Bytes>) -> Result<(), axum::Error> {
    for buffer in events {
        for event in json_lines(buffer) {
            let Ok(text) = Utf8Bytes::try_from(event) else {
                continue;
            };
            sink.feed(Message::Text(text)).await?;
        }
    }
    sink.flush().await
}

/// The events in one queued buffer, each without its newline. The hub may hand over
/// several JSON lines in one buffer (a room's lines gathered over a flush round); JSON
/// text never holds a raw newline, so the lines split cleanly, without copying.
fn json_lines(mut events: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if events.is_empty() {
            return None;
        }
        let line = match memchr::memchr(b'\n', &events) {
            Some(end) => {
                let line = events.split_to(end + 1);
                line.slice(..end)
            }
            None => events.split_off(0),
        };
        Some(line)
    })
}

/// Read frames into the session until the peer closes or fails; then tell the hub.
async fn read_loop(
    stream: &mut WsStream,
    session: &mut JsonSession<'_>,
    outbox: &Outbox,
    limits: &WsLimits,
    start: Instant,
    last_heard: &AtomicU64,
) {
    loop {
        let register_deadline = session.register_deadline();
        let outcome: Result<Received, HubGone> = tokio::select! {
            message = stream.next() => {
                last_heard.store(millis_since(start), Ordering::Relaxed);
                Box::pin(received(session, limits, message)).await
            }
            _ = sleep_until(register_deadline) => {
                Box::pin(session.register_timed_out()).await.map(|()| Received::More)
            }
        };
        match outcome {
            Ok(Received::More) => {}
            Ok(Received::Gone) => return,
            Ok(Received::Failed(reason)) => {
                // The hub is gone already: close on our own.
                outbox.close(reason);
                return;
            }
            Err(HubGone) => {
                // The hub is gone (shutdown finished): close on our own.
                outbox.close(CloseReason::Shutdown);
                return;
            }
        }
    }
}

/// What one read from the socket meant.
enum Received {
    /// Handled; read on.
    More,
    /// The peer closed or failed, and the hub was told.
    Gone,
    /// The peer failed and the hub could not be told.
    Failed(CloseReason),
}

/// Hand one read's result to the session.
async fn received(
    session: &mut JsonSession<'_>,
    limits: &WsLimits,
    message: Option<Result<Message, axum::Error>>,
) -> Result<Received, HubGone> {
    match message {
        Some(Ok(Message::Text(text))) => handle(session, limits, text.as_bytes()).await?,
        Some(Ok(Message::Binary(bytes))) => handle(session, limits, &bytes).await?,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => session.control_frame().await?,
        Some(Ok(Message::Close(_))) | None => {
            let _ = session.leave(CloseReason::PeerClosed).await;
            return Ok(Received::Gone);
        }
        Some(Err(error)) => {
            let reason = if is_capacity(&error) {
                CloseReason::LineTooLong
            } else if is_bad_utf8(&error) {
                // A text frame that is not UTF-8: closed with 1007.
                CloseReason::BadInput
            } else {
                CloseReason::PeerReset
            };
            return Ok(match session.leave(reason).await {
                Ok(()) => Received::Gone,
                Err(HubGone) => Received::Failed(reason),
            });
        }
    }
    Ok(Received::More)
}

/// Whether a WebSocket read failed on our size limits.
fn is_capacity(error: &axum::Error) -> bool {
    // tungstenite's `Error::Capacity`, seen through axum's opaque error.
    error.to_string().contains("Space limit exceeded")
}

/// Whether a WebSocket read failed on a text frame that is not valid UTF-8.
fn is_bad_utf8(error: &axum::Error) -> bool {
    // tungstenite's `Error::Utf8`, seen through axum's opaque error.
    error.to_string().contains("UTF-8")
}

/// Sleep until `deadline`, or forever. The timer is boxed: it is needed only until
/// the client registers, and inline it would cost every connection its size for life.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => Box::pin(tokio::time::sleep_until(deadline)).await,
        None => std::future::pending().await,
    }
}

async fn handle(
    session: &mut JsonSession<'_>,
    limits: &WsLimits,
    bytes: &[u8],
) -> Result<(), HubGone> {
    if bytes.len() > limits.max_message_bytes {
        session
            .handle_too_long(&bytes[..bytes.len().min(OVERSIZE_HEAD_BYTES)])
            .await
    } else {
        session.handle_message(bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &'static [u8]) -> Vec<Bytes> {
        json_lines(Bytes::from_static(input)).collect()
    }

    #[test]
    fn splits_a_buffer_into_one_frame_per_line() {
        assert_eq!(
            lines(b"{\"a\":1}\n{\"b\":2}\n"),
            [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]
        );
        assert_eq!(lines(b"{\"a\":1}\n"), [&b"{\"a\":1}"[..]]);
        // A buffer without its newline is still one frame; nothing is lost.
        assert_eq!(lines(b"{\"a\":1}"), [&b"{\"a\":1}"[..]]);
        assert!(lines(b"").is_empty());
    }
}
