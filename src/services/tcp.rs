//! The TCP side of the services: an accept loop with a connection cap, and one task per
//! connection that reads, frames, answers and writes with bounded buffers.
//!
//! What a "message" is on TCP:
//! - `echo` has none: bytes go back exactly as they arrive (RFC 862).
//! - `upper` and `random` use the line door's framer: each newline-terminated line is
//!   one message and its reply ends with `\n`; a client that never sends a newline
//!   (the seed clients) has each burst of bytes followed by a quiet gap of
//!   [`BURST_GAP`] treated as one message, answered without a newline. At EOF an
//!   unterminated last message is answered too, then the connection closes.
//!
//! Backpressure: while a connection's unsent output is over `max_pending_bytes`, the
//! task stops reading from that connection (and stops turning queued messages into
//! replies), so a client that sends but never reads costs bounded memory and stalls
//! nobody else. Nothing read or written for `idle_timeout` closes the connection.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::mode::{unfinished_utf8_tail, Mode, Responder};
use crate::door::line::framing::{Frame, LineFramer};
use crate::door::line::BURST_GAP;
use crate::door::ConnectionSlots;

/// Bytes read per `try_read`; lives on the stack of a synchronous helper, never in the
/// connection.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// After a burst ended in the middle of a UTF-8 character, how long to wait for the
/// rest of it before answering what is there (as invalid text).
const UNFINISHED_CHARACTER_GAP: Duration = Duration::from_secs(1);
/// On close: how long to keep flushing output and waiting for the peer's EOF.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings shared by every TCP connection.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    pub max_clients: usize,
    /// `None`: never time out.
    pub idle_timeout: Option<Duration>,
    pub max_message_bytes: usize,
    pub max_pending_bytes: usize,
    /// Answer one message, then close (the seed's `tcp_upper.py` server).
    pub once: bool,
}

/// Why a TCP connection ended; logged once by the connection's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side and every answer was sent.
    PeerClosed,
    /// Reset or another socket error.
    PeerReset,
    /// `--once`: the one message was answered.
    Answered,
    /// The server is shutting down.
    Shutdown,
    /// Nothing read or written for the idle timeout.
    IdleTimeout,
    /// Output was waiting but the peer read none of it for the idle timeout.
    Stalled,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerReset => "peer_reset",
            CloseReason::Answered => "answered",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Stalled => "stalled",
        }
    }
}

/// Accept connections until `shutdown`, each in its own task on `tracker`.
pub async fn serve(
    listener: TcpListener,
    responder: Responder,
    settings: TcpSettings,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let settings = Arc::new(settings);
    // One address may use every slot: the cap is on the total.
    let slots = ConnectionSlots::new(settings.max_clients, settings.max_clients);
    crate::door::accept_loop("tcp", listener, shutdown.clone(), |stream, peer| {
        let slot = match slots.acquire(peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::info!(%peer, reason = "server_full", "tcp connection refused: {refusal}");
                // Best effort, never waits: a refused peer gets no task.
                let _ = stream.try_write(format!("error: {refusal}\n").as_bytes());
                return std::future::ready(());
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection::new(stream, peer, responder.clone(), settings.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tracing::debug!(%peer, "tcp connection opened");
            let summary = connection.run(&shutdown).await;
            tracing::info!(
                %peer,
                reason = summary.reason.as_str(),
                bytes_in = summary.bytes_in,
                bytes_out = summary.bytes_out,
                answered = summary.answered,
                "tcp connection closed"
            );
            drop(slot);
        });
        std::future::ready(())
    })
    .await;
}

/// One unit of input to answer.
#[derive(Debug)]
enum Message {
    /// `echo`: bytes as read, sent back as they are.
    Raw(Bytes),
    /// A newline-terminated line (without its terminator): the reply ends with `\n`.
    Line(Bytes),
    /// An unframed burst or an unterminated last line: the reply has no newline added.
    Burst(Bytes),
    /// A line or burst over the size cap, discarded.
    TooLong,
}

struct Summary {
    reason: CloseReason,
    bytes_in: u64,
    bytes_out: u64,
    answered: u64,
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    responder: Responder,
    settings: Arc<TcpSettings>,
    /// `None` in echo mode: bytes pass through unframed.
    framer: Option<LineFramer>,
    /// Messages read but not yet answered; only filled while output is under its bound.
    messages: VecDeque<Message>,
    output: VecDeque<Bytes>,
    output_bytes: usize,
    read_open: bool,
    /// When the current unframed burst counts as finished.
    burst_deadline: Option<Instant>,
    /// The last burst ended mid-character and was put back to wait for the rest.
    holding_unfinished_character: bool,
    bytes_in: u64,
    bytes_out: u64,
    answered: u64,
}

impl Connection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        responder: Responder,
        settings: Arc<TcpSettings>,
    ) -> Self {
        let framer = match responder.mode() {
            Mode::Echo => None,
            Mode::Upper | Mode::Random => Some(LineFramer::new(settings.max_message_bytes)),
        };
        Connection {
            stream,
            peer,
            responder,
            settings,
            framer,
            messages: VecDeque::new(),
            output: VecDeque::new(),
            output_bytes: 0,
            read_open: true,
            burst_deadline: None,
            holding_unfinished_character: false,
            bytes_in: 0,
            bytes_out: 0,
            answered: 0,
        }
    }

    async fn run(mut self, shutdown: &CancellationToken) -> Summary {
        let reason = self.pump(shutdown).await;
        if matches!(
            reason,
            CloseReason::PeerClosed | CloseReason::Answered | CloseReason::Shutdown
        ) {
            self.close_gracefully().await;
        }
        tracing::trace!(peer = %self.peer, "tcp connection task done");
        Summary {
            reason,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            answered: self.answered,
        }
    }

    /// Move bytes both ways until the connection is finished; every answer has been
    /// written when this returns a graceful reason.
    async fn pump(&mut self, shutdown: &CancellationToken) -> CloseReason {
        let idle_timeout = self.settings.idle_timeout;
        let mut idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
        let mut closing: Option<CloseReason> = None;
        let mut close_deadline: Option<Instant> = None;
        loop {
            self.answer_queued();
            if closing.is_none() {
                if self.settings.once && self.answered > 0 {
                    // Whatever else was sent is not answered: one message per connection.
                    self.messages.clear();
                    closing = Some(CloseReason::Answered);
                } else if !self.read_open && self.messages.is_empty() {
                    closing = Some(CloseReason::PeerClosed);
                }
            }
            if let Some(reason) = closing {
                if self.output.is_empty() {
                    return reason;
                }
            }
            let want_read = closing.is_none()
                && self.read_open
                && self.messages.is_empty()
                && self.output_bytes < self.settings.max_pending_bytes;
            let want_write = !self.output.is_empty();
            let progressed = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if close_deadline.is_none() => {
                    self.messages.clear();
                    closing = Some(closing.unwrap_or(CloseReason::Shutdown));
                    close_deadline = Some(Instant::now() + CLOSE_FLUSH_TIMEOUT);
                    false
                }
                _ = sleep_until_or_never(close_deadline) => {
                    return closing.unwrap_or(CloseReason::Shutdown);
                }
                ready = self.stream.writable(), if want_write => match ready.and_then(|()| self.write_some()) {
                    Ok(written) => written > 0,
                    Err(_) => return CloseReason::PeerReset,
                },
                ready = self.stream.readable(), if want_read => match ready.and_then(|()| read_chunk(&self.stream)) {
                    Ok(Some(chunk)) => {
                        self.on_data(chunk);
                        true
                    }
                    Ok(None) => {
                        self.on_eof();
                        true
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => false,
                    Err(_) => return CloseReason::PeerReset,
                },
                _ = sleep_until_or_never(self.burst_deadline) => {
                    self.burst_deadline = None;
                    self.on_burst_end();
                    false
                }
                _ = sleep_until_or_never(idle_deadline) => {
                    return if self.output.is_empty() {
                        CloseReason::IdleTimeout
                    } else {
                        CloseReason::Stalled
                    };
                }
            };
            if progressed {
                idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
            }
        }
    }

    /// Turn queued messages into replies while the output is under its bound.
    fn answer_queued(&mut self) {
        while self.output_bytes < self.settings.max_pending_bytes {
            if self.settings.once && self.answered > 0 {
                return;
            }
            let Some(message) = self.messages.pop_front() else {
                return;
            };
            match message {
                Message::Raw(bytes) => self.queue_output(bytes),
                Message::Line(text) => {
                    let reply = self.responder.answer(&text);
                    self.queue_output(reply);
                    self.queue_output(Bytes::from_static(b"\n"));
                }
                Message::Burst(text) => {
                    let reply = self.responder.answer(&text);
                    self.queue_output(reply);
                }
                Message::TooLong => {
                    let error = format!(
                        "error: message over {} bytes, discarded\n",
                        self.settings.max_message_bytes
                    );
                    self.queue_output(Bytes::from(error));
                }
            }
            self.answered += 1;
        }
    }

    fn queue_output(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.output_bytes += bytes.len();
            self.output.push_back(bytes);
        }
    }

    fn on_data(&mut self, chunk: Bytes) {
        self.bytes_in += chunk.len() as u64;
        let Some(framer) = &mut self.framer else {
            self.messages.push_back(Message::Raw(chunk));
            return;
        };
        let mut frames = Vec::new();
        framer.push(&chunk, &mut frames);
        self.burst_deadline = framer
            .awaiting_burst_end()
            .then(|| Instant::now() + BURST_GAP);
        self.holding_unfinished_character = false;
        self.messages
            .extend(frames.into_iter().map(|frame| match frame {
                Frame::Line(text) => Message::Line(text),
                Frame::TooLong => Message::TooLong,
            }));
    }

    fn on_burst_end(&mut self) {
        let Some(framer) = &mut self.framer else {
            return;
        };
        let mut frames = Vec::new();
        framer.end_burst(&mut frames);
        for frame in frames {
            match frame {
                Frame::Line(text)
                    if self.responder.mode() == Mode::Upper
                        && !self.holding_unfinished_character
                        && unfinished_utf8_tail(&text) > 0 =>
                {
                    // The sender paused inside a character: put the burst back (it
                    // fits, it came from the framer) and give the rest time to arrive.
                    let mut none: Vec<Frame> = Vec::new();
                    framer.push(&text, &mut none);
                    self.holding_unfinished_character = true;
                    self.burst_deadline = Some(Instant::now() + UNFINISHED_CHARACTER_GAP);
                }
                Frame::Line(text) => {
                    self.holding_unfinished_character = false;
                    self.messages.push_back(Message::Burst(text));
                }
                Frame::TooLong => self.messages.push_back(Message::TooLong),
            }
        }
    }

    fn on_eof(&mut self) {
        self.read_open = false;
        self.burst_deadline = None;
        if let Some(framer) = &mut self.framer {
            let mut frames = Vec::new();
            framer.finish(&mut frames);
            self.messages
                .extend(frames.into_iter().map(|frame| match frame {
                    Frame::Line(text) => Message::Burst(text),
                    Frame::TooLong => Message::TooLong,
                }));
        }
    }

    /// One vectored write of as much queued output as the socket takes now.
    fn write_some(&mut self) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = self.output.len().min(MAX_IOVECS);
        for (slot, bytes) in slices.iter_mut().zip(self.output.iter()) {
            *slot = IoSlice::new(bytes);
        }
        let written = match self.stream.try_write_vectored(&slices[..count]) {
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut remaining = written;
        while remaining > 0 {
            let Some(front) = self.output.front_mut() else {
                break;
            };
            if front.len() <= remaining {
                remaining -= front.len();
                self.output.pop_front();
            } else {
                front.advance(remaining);
                remaining = 0;
            }
        }
        self.output_bytes -= written;
        self.bytes_out += written as u64;
        if self.output.is_empty() {
            // Release the queue's storage so an idle connection holds none.
            self.output = VecDeque::new();
        }
        Ok(written)
    }

    /// Half-close, then read until the peer's EOF (bounded), so unread input in our
    /// receive buffer does not turn the close into a reset that eats the last answer.
    async fn close_gracefully(&mut self) {
        let _ = self.stream.shutdown().await;
        if !self.read_open {
            return;
        }
        let linger = async {
            loop {
                if self.stream.readable().await.is_err() {
                    return;
                }
                match read_chunk(&self.stream) {
                    Ok(Some(_)) => continue,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, linger).await;
    }
}

/// Read what the socket has now. `Ok(None)` is EOF.
fn read_chunk(stream: &TcpStream) -> io::Result<Option<Bytes>> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    match stream.try_read(&mut chunk)? {
        0 => Ok(None),
        read => Ok(Some(Bytes::copy_from_slice(&chunk[..read]))),
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
