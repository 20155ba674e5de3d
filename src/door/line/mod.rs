//! The plain-text front door: newline-terminated lines over TCP, for netcat, telnet,
//! the seed clients and `switchboard chat`. Asks for a name, then maps typed lines
//! and slash commands to hub requests and renders events as text.

pub mod command;
pub mod framing;
pub mod render;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::command::{LineInput, HELP};
use self::framing::{Frame, LineFramer};
use self::render::LineRender;
use super::conn::{Conn, Input};
use super::flood::{FloodSettings, TokenBucket, Verdict};
use super::ConnectionSlots;
use crate::hub::{CloseReason, Command, Connection, HubGone, HubHandle, Outbox};
use crate::metrics::DoorMetrics;

/// The name prompt; the seed's wording, no newline so the cursor waits after it.
pub const NAME_PROMPT: &str = "Enter your name: ";

/// How long an unframed client (one that never sends a newline) must stay quiet
/// before what it sent counts as one message. The seed clients pause for the user to
/// type, or sleep 0.3 s, between sends.
pub const BURST_GAP: Duration = Duration::from_millis(40);

/// Settings for the line door.
#[derive(Debug, Clone)]
pub struct LineSettings {
    pub max_line_bytes: usize,
    pub max_queue_bytes: usize,
    pub register_timeout: Duration,
    /// Close a connection that sends nothing for this long (`None`: never; half-open
    /// peers are found by TCP keepalive instead, so idle humans are not kicked).
    pub idle_timeout: Option<Duration>,
    pub flood: FloodSettings,
    pub default_room: String,
}

/// Everything a line connection needs, shared by all of them.
pub struct LineDoor {
    hub: HubHandle,
    slots: Arc<ConnectionSlots>,
    settings: LineSettings,
    render: Arc<LineRender>,
    help: Bytes,
    metrics: DoorMetrics,
}

impl LineDoor {
    pub fn new(hub: HubHandle, slots: Arc<ConnectionSlots>, settings: LineSettings) -> Arc<Self> {
        Self::with_metrics(hub, slots, settings, DoorMetrics::default())
    }

    /// Like [`LineDoor::new`], counting connections and messages in `metrics`.
    pub fn with_metrics(
        hub: HubHandle,
        slots: Arc<ConnectionSlots>,
        settings: LineSettings,
        metrics: DoorMetrics,
    ) -> Arc<Self> {
        let mut help = String::from("*** commands:\n");
        for (usage, what) in HELP {
            help.push_str(&format!("***   {usage:<26} {what}\n"));
        }
        Arc::new(LineDoor {
            render: LineRender::new(&settings.default_room),
            hub,
            slots,
            settings,
            help: Bytes::from(help),
            metrics,
        })
    }

    /// Accept connections until `shutdown`; each runs as its own task on `tracker`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        super::accept_loop("line", listener, shutdown, |stream, peer| {
            tracker.spawn(self.clone().accept(stream, peer));
        })
        .await;
    }

    async fn accept(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let slot = match self.slots.acquire(peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::info!(%peer, reason = CloseReason::ServerFull.as_str(), "line: refused: {refusal}");
                self.metrics.disconnected(CloseReason::ServerFull);
                let goodbye = format!("error: {refusal}\n");
                let write = stream.write_all(goodbye.as_bytes());
                let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), write)).await;
                return;
            }
        };
        // TCP keepalive (half-open peers) comes from the listener: see `door::tune_listener`.
        self.run(stream, peer).await;
        drop(slot);
    }

    /// Drive one connection from name prompt to close, over any byte stream.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, peer: SocketAddr) {
        let client = self.hub.next_client_id();
        let outbox = Arc::new(Outbox::new(self.settings.max_queue_bytes));
        let connection = Connection {
            client,
            peer,
            door: "line",
            outbox: outbox.clone(),
            render: self.render.clone(),
        };
        let connect = self.hub.send(Command::Connect(Box::new(connection)));
        if Box::pin(connect).await.is_err() {
            return;
        }
        let _counted = self.metrics.connected(&outbox);
        outbox.push(Bytes::from_static(NAME_PROMPT.as_bytes()));
        let now = Instant::now();
        let mut session = Session {
            door: self,
            client,
            framer: LineFramer::new(self.settings.max_line_bytes),
            pending: VecDeque::new(),
            bucket: TokenBucket::new(self.settings.flood, now),
            throttled_until: None,
            registered: false,
            leaving: false,
            peer_done: false,
            register_deadline: now + self.settings.register_timeout,
            last_input: now,
        };
        let mut conn = Conn::new(stream, outbox);
        conn.set_deadline(session.next_deadline());
        // The handling futures are boxed: they are large (nested hub sends) but live only
        // while input is handled, so an idle connection's task holds just the pump and
        // the session, not room for them.
        let reason = loop {
            let outcome = match conn.next().await {
                Input::Data(chunk) => {
                    session.last_input = Instant::now();
                    session.push_input(&chunk);
                    Box::pin(session.process()).await
                }
                Input::Deadline => Box::pin(session.on_deadline()).await,
                Input::Eof => {
                    session.peer_done = true;
                    session.finish_input();
                    Box::pin(session.process()).await
                }
                Input::ReadFailed(error) => {
                    tracing::debug!(client, %peer, %error, "line: read failed");
                    Box::pin(session.leave(CloseReason::PeerReset)).await
                }
                Input::Finished(reason) => break reason,
            };
            if outcome.is_err() {
                // The hub is gone (shutdown finished): close on our own.
                conn.outbox().close(CloseReason::Shutdown);
            }
            // Throttled input waits in the peer's socket buffers, not in our memory.
            conn.set_reading(session.pending.is_empty());
            conn.set_deadline(session.next_deadline());
        };
        // Make sure the hub forgets us, whoever closed (no-op if it already did).
        let _ = Box::pin(self.hub.disconnect(client, reason)).await;
        self.metrics.disconnected(reason);
        match reason {
            CloseReason::ClientQuit | CloseReason::PeerClosed | CloseReason::Shutdown => {
                tracing::debug!(client, %peer, reason = reason.as_str(), "line: connection closed");
            }
            _ => tracing::info!(client, %peer, reason = reason.as_str(), "line: connection closed"),
        }
    }
}

/// Per-connection protocol state.
struct Session<'door> {
    door: &'door LineDoor,
    client: u64,
    framer: LineFramer,
    /// Frames received and not yet handled (waiting for flood-control tokens).
    pending: VecDeque<Frame>,
    bucket: TokenBucket,
    throttled_until: Option<Instant>,
    registered: bool,
    /// Quit or disconnect sent: ignore further input.
    leaving: bool,
    /// The peer closed its side: leave once pending input is handled.
    peer_done: bool,
    register_deadline: Instant,
    last_input: Instant,
}

impl Session<'_> {
    fn next_deadline(&self) -> Option<Instant> {
        if self.leaving {
            return None;
        }
        let burst = self
            .framer
            .awaiting_burst_end()
            .then(|| Instant::now() + BURST_GAP);
        let register = (!self.registered).then_some(self.register_deadline);
        let idle = self
            .door
            .settings
            .idle_timeout
            .map(|idle| self.last_input + idle);
        [burst, register, idle, self.throttled_until]
            .into_iter()
            .flatten()
            .min()
    }

    fn push_input(&mut self, chunk: &Bytes) {
        let mut frames = Vec::new();
        self.framer.push(chunk, &mut frames);
        self.pending.extend(frames);
    }

    fn finish_input(&mut self) {
        let mut frames = Vec::new();
        self.framer.finish(&mut frames);
        self.pending.extend(frames);
    }

    async fn on_deadline(&mut self) -> Result<(), HubGone> {
        let now = Instant::now();
        if self.leaving {
            return Ok(());
        }
        if !self.registered && now >= self.register_deadline {
            let limit = self.door.settings.register_timeout.as_secs_f64();
            self.deliver(format!(
                "\nerror: no name chosen within {limit}s; goodbye\n"
            ))
            .await?;
            return self.leave(CloseReason::RegisterTimeout).await;
        }
        if let Some(idle) = self.door.settings.idle_timeout {
            if now >= self.last_input + idle {
                let limit = idle.as_secs_f64();
                self.deliver(format!("error: nothing received for {limit}s; goodbye\n"))
                    .await?;
                return self.leave(CloseReason::IdleTimeout).await;
            }
        }
        if self.throttled_until.is_some_and(|until| now >= until) {
            self.throttled_until = None;
        }
        let mut frames = Vec::new();
        self.framer.end_burst(&mut frames);
        self.pending.extend(frames);
        self.process().await
    }

    /// Handle pending frames as flood control allows; leave after the last one if the
    /// peer has closed.
    async fn process(&mut self) -> Result<(), HubGone> {
        while !self.leaving && self.throttled_until.is_none() && !self.pending.is_empty() {
            match self.bucket.take(Instant::now()) {
                Verdict::Allow => {
                    if let Some(frame) = self.pending.pop_front() {
                        self.handle_frame(frame).await?;
                    }
                }
                Verdict::Wait { until, first } => {
                    self.throttled_until = Some(until);
                    if first {
                        let rate = self.door.settings.flood.rate;
                        self.deliver(format!(
                            "*** slow down: over {rate} messages per second; your messages are delayed\n"
                        ))
                        .await?;
                    }
                }
                Verdict::Kick => {
                    self.deliver("error: disconnected for flooding\n").await?;
                    self.pending.clear();
                    return self.leave(CloseReason::Flood).await;
                }
            }
        }
        if self.leaving {
            self.pending.clear();
        }
        if self.pending.is_empty() {
            // An idle connection keeps no frame queue (~100 bytes each, thousands of them).
            self.pending = VecDeque::new();
            self.bucket.caught_up();
            if self.peer_done {
                return self.leave(CloseReason::PeerClosed).await;
            }
        }
        Ok(())
    }

    async fn leave(&mut self, reason: CloseReason) -> Result<(), HubGone> {
        if self.leaving {
            return Ok(());
        }
        self.leaving = true;
        self.door.hub.disconnect(self.client, reason).await
    }

    /// Queue door-rendered text for this client, in order with its hub output.
    async fn deliver(&self, text: impl Into<Bytes>) -> Result<(), HubGone> {
        let bytes = text.into();
        let client = self.client;
        self.door.hub.send(Command::Deliver { client, bytes }).await
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), HubGone> {
        match frame {
            Frame::TooLong => {
                let max = self.door.settings.max_line_bytes;
                let prompt = if self.registered { "" } else { NAME_PROMPT };
                self.deliver(format!(
                    "error: line too long (limit {max} bytes); it was discarded\n{prompt}"
                ))
                .await
            }
            Frame::Line(line) if self.registered => {
                self.handle_line(&String::from_utf8_lossy(&line)).await
            }
            Frame::Line(line) => self.handle_name(&line).await,
        }
    }

    async fn handle_name(&mut self, line: &[u8]) -> Result<(), HubGone> {
        if let Some(why) = wrong_protocol(line) {
            self.deliver(format!("error: {why}\n")).await?;
            return self.leave(CloseReason::BadInput).await;
        }
        let Ok(name) = std::str::from_utf8(line) else {
            let why = crate::text::NickError::NotUtf8;
            return self.deliver(format!("error: {why}\n{NAME_PROMPT}")).await;
        };
        if matches!(name, "end" | "/q" | "/quit") || name.starts_with("/quit ") {
            return self.leave(CloseReason::ClientQuit).await;
        }
        if let Err(refusal) = self.door.hub.register(self.client, name.to_owned()).await? {
            return self
                .deliver(format!(
                    "error: cannot use that name: {refusal}\n{NAME_PROMPT}"
                ))
                .await;
        }
        self.registered = true;
        Ok(())
    }

    async fn handle_line(&mut self, line: &str) -> Result<(), HubGone> {
        match command::parse(line) {
            LineInput::Nothing => Ok(()),
            LineInput::Help => self.deliver(self.door.help.clone()).await,
            LineInput::Invalid(why) => self.deliver(format!("error: {why}\n")).await,
            LineInput::Request(request) => {
                match request {
                    crate::hub::Request::Quit { .. } => self.leaving = true,
                    crate::hub::Request::Say { .. } | crate::hub::Request::Whisper { .. } => {
                        self.door.metrics.message_in()
                    }
                    _ => {}
                }
                self.door.hub.request(self.client, None, request).await
            }
        }
    }
}

/// Recognise another protocol spoken at the line port (a browser, curl, a TLS client)
/// from the first line, so it gets an explanation instead of a name refusal.
fn wrong_protocol(first_line: &[u8]) -> Option<&'static str> {
    if first_line.starts_with(&[0x16, 0x03]) {
        return Some("this is Switchboard's plain-text chat port; it does not speak TLS");
    }
    let text = std::str::from_utf8(first_line).ok()?;
    let mut words = text.split(' ');
    let method = words.next()?;
    let _target = words.next()?;
    let version = words.next()?;
    let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if is_method && version.starts_with("HTTP/") && words.next().is_none() {
        return Some(
            "this is Switchboard's plain-text chat port, not HTTP; connect with nc or telnet, or open the web door",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::wrong_protocol;

    #[test]
    fn recognises_http_and_tls_but_not_names() {
        assert!(wrong_protocol(b"GET / HTTP/1.1").is_some());
        assert!(wrong_protocol(b"POST /ws HTTP/1.0").is_some());
        assert!(wrong_protocol(&[0x16, 0x03, 0x01, 0x02, 0x00]).is_some());
        assert!(wrong_protocol(b"alice").is_none());
        assert!(wrong_protocol(b"GET").is_none());
        assert!(wrong_protocol(b"get lost HTTP/1.1").is_none());
    }
}
