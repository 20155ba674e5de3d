//! The TCP side of the services: an accept loop with a connection cap, and one task per
//! connection that frames and answers what it reads. The bytes move through the same
//! [`Conn`] pump as every chat door (coalesced writes, flush, half-close and linger on
//! close), with an outbox that pauses reading instead of closing when it is full.
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
//! pump stops reading from that connection ([`Overflow::PauseReading`]), so a client
//! that sends but never reads costs bounded memory (the bound plus the answers to one
//! read) and stalls nobody else. Nothing read or written for `idle_timeout` closes the
//! connection (checked once per timeout, so a connection whose last write came just
//! after a check gets up to twice the timeout).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::mode::{unfinished_utf8_tail, Mode, Responder};
use crate::chat::CloseReason as PumpReason;
use crate::door::conn::{Conn, Input};
use crate::door::line::framing::{Frame, LineFramer};
use crate::door::line::BURST_GAP;
use crate::door::ConnectionSlots;
use crate::outbox::{Outbox, Overflow};

/// After a burst ended in the middle of a UTF-8 character, how long to wait for the
/// rest of it before answering what is there (as invalid text).
const UNFINISHED_CHARACTER_GAP: Duration = Duration::from_secs(1);

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
        let connection = Connection::new(responder.clone(), settings.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tracing::debug!(%peer, "tcp connection opened");
            let summary = connection.run(stream, &shutdown).await;
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

/// What one connection knows beyond its pump: how to cut and answer its input.
struct Connection {
    responder: Responder,
    settings: Arc<TcpSettings>,
    /// `None` in echo mode: bytes pass through unframed.
    framer: Option<LineFramer>,
    /// Where frames are cut into; kept so a read does not allocate a new one.
    frames: Vec<Frame>,
    read_open: bool,
    /// When the current unframed burst counts as finished.
    burst_deadline: Option<Instant>,
    /// The last burst ended mid-character and was put back to wait for the rest.
    holding_unfinished_character: bool,
    bytes_in: u64,
    /// Everything handed to the outbox; what is still pending at the end was not sent.
    bytes_queued: u64,
    answered: u64,
}

impl Connection {
    fn new(responder: Responder, settings: Arc<TcpSettings>) -> Self {
        let framer = match responder.mode() {
            Mode::Echo => None,
            Mode::Upper | Mode::Random => Some(LineFramer::new(settings.max_message_bytes)),
        };
        Connection {
            responder,
            settings,
            framer,
            frames: Vec::new(),
            read_open: true,
            burst_deadline: None,
            holding_unfinished_character: false,
            bytes_in: 0,
            bytes_queued: 0,
            answered: 0,
        }
    }

    /// Serve `stream` until it is finished: every answer has been written (or could
    /// not be) when this returns.
    async fn run(mut self, stream: TcpStream, shutdown: &CancellationToken) -> Summary {
        let outbox = Arc::new(Outbox::with_overflow(
            self.settings.max_pending_bytes,
            Overflow::PauseReading,
        ));
        let mut conn = Conn::new(stream, outbox.clone());
        let reason = self.pump(&mut conn, &outbox, shutdown).await;
        let unsent = outbox.pending_bytes() as u64;
        tracing::trace!("tcp connection task done");
        Summary {
            reason,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_queued.saturating_sub(unsent),
            answered: self.answered,
        }
    }

    async fn pump(
        &mut self,
        conn: &mut Conn<TcpStream>,
        outbox: &Outbox,
        shutdown: &CancellationToken,
    ) -> CloseReason {
        let idle_timeout = self.settings.idle_timeout;
        let mut idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
        // Why we closed the outbox; the pump then flushes, half-closes and lingers.
        let mut closing: Option<CloseReason> = None;
        loop {
            if closing.is_none() {
                let reason = if self.settings.once && self.answered > 0 {
                    Some(CloseReason::Answered)
                } else if !self.read_open {
                    Some(CloseReason::PeerClosed)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    closing = Some(reason);
                    outbox.close(PumpReason::PeerClosed);
                }
            }
            conn.set_deadline(earliest(self.burst_deadline, idle_deadline));
            let input = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if closing.is_none() => {
                    closing = Some(CloseReason::Shutdown);
                    outbox.close(PumpReason::Shutdown);
                    continue;
                }
                input = conn.next() => input,
            };
            match input {
                Input::Data(chunk) => {
                    idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
                    self.on_data(chunk, outbox);
                }
                Input::Eof => self.on_eof(outbox),
                // Plain TCP: any read error means the connection is gone.
                Input::ReadFailed(_) => return CloseReason::PeerReset,
                Input::Deadline => {
                    let now = Instant::now();
                    if self.burst_deadline.is_some_and(|at| at <= now) {
                        self.burst_deadline = None;
                        self.on_burst_end(outbox);
                    }
                    if idle_deadline.is_some_and(|at| at <= now) {
                        if conn.take_writes() > 0 {
                            idle_deadline = idle_timeout.map(|timeout| now + timeout);
                        } else if outbox.pending_bytes() == 0 {
                            return CloseReason::IdleTimeout;
                        } else {
                            return CloseReason::Stalled;
                        }
                    }
                }
                Input::Finished(PumpReason::PeerReset) => return CloseReason::PeerReset,
                Input::Finished(_) => return closing.unwrap_or(CloseReason::PeerReset),
            }
        }
    }

    /// Answer `message` into the outbox (which never refuses: it pauses reading).
    fn answer(&mut self, message: Message, outbox: &Outbox) {
        if self.settings.once && self.answered > 0 {
            // One message per connection: whatever else was sent is not answered.
            return;
        }
        match message {
            Message::Raw(bytes) => self.queue(bytes, outbox),
            Message::Line(text) => {
                let reply = self.responder.answer(&text);
                self.queue(reply, outbox);
                self.queue(Bytes::from_static(b"\n"), outbox);
            }
            Message::Burst(text) => {
                let reply = self.responder.answer(&text);
                self.queue(reply, outbox);
            }
            Message::TooLong => {
                let error = format!(
                    "error: message over {} bytes, discarded\n",
                    self.settings.max_message_bytes
                );
                self.queue(Bytes::from(error), outbox);
            }
        }
        self.answered += 1;
    }

    fn queue(&mut self, bytes: Bytes, outbox: &Outbox) {
        if !bytes.is_empty() {
            self.bytes_queued += bytes.len() as u64;
            outbox.push(bytes);
        }
    }

    /// Answer every frame the framer has cut, as a line or (at a burst's end or EOF)
    /// as a burst.
    fn answer_frames(&mut self, as_lines: bool, outbox: &Outbox) {
        let mut frames = std::mem::take(&mut self.frames);
        for frame in frames.drain(..) {
            let message = match frame {
                Frame::Line(text) if as_lines => Message::Line(text),
                Frame::Line(text) => Message::Burst(text),
                Frame::TooLong => Message::TooLong,
            };
            self.answer(message, outbox);
        }
        self.frames = frames;
    }

    fn on_data(&mut self, chunk: Bytes, outbox: &Outbox) {
        self.bytes_in += chunk.len() as u64;
        let Some(framer) = &mut self.framer else {
            self.answer(Message::Raw(chunk), outbox);
            return;
        };
        framer.push(&chunk, &mut self.frames);
        self.burst_deadline = framer
            .awaiting_burst_end()
            .then(|| Instant::now() + BURST_GAP);
        self.holding_unfinished_character = false;
        self.answer_frames(true, outbox);
    }

    fn on_burst_end(&mut self, outbox: &Outbox) {
        let Some(framer) = &mut self.framer else {
            return;
        };
        framer.end_burst(&mut self.frames);
        let mut frames = std::mem::take(&mut self.frames);
        for frame in frames.drain(..) {
            match frame {
                Frame::Line(text)
                    if self.responder.mode() == Mode::Upper
                        && !self.holding_unfinished_character
                        && unfinished_utf8_tail(&text) > 0 =>
                {
                    // The sender paused inside a character: put the burst back (it
                    // fits, it came from the framer) and give the rest time to arrive.
                    let mut none: Vec<Frame> = Vec::new();
                    if let Some(framer) = &mut self.framer {
                        framer.push(&text, &mut none);
                    }
                    self.holding_unfinished_character = true;
                    self.burst_deadline = Some(Instant::now() + UNFINISHED_CHARACTER_GAP);
                }
                Frame::Line(text) => {
                    self.holding_unfinished_character = false;
                    self.answer(Message::Burst(text), outbox);
                }
                Frame::TooLong => self.answer(Message::TooLong, outbox),
            }
        }
        self.frames = frames;
    }

    fn on_eof(&mut self, outbox: &Outbox) {
        self.read_open = false;
        self.burst_deadline = None;
        if let Some(framer) = &mut self.framer {
            framer.finish(&mut self.frames);
            self.answer_frames(false, outbox);
        }
    }
}

fn earliest(first: Option<Instant>, second: Option<Instant>) -> Option<Instant> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (first, second) => first.or(second),
    }
}
