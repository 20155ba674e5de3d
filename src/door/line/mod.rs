//! The plain-text front door: newline-terminated lines over TCP, for netcat, telnet,
//! the seed clients and `switchboard chat`. Asks for a name, then maps typed lines
//! and slash commands to hub requests and renders events as text.

pub mod command;
pub mod framing;
pub mod render;

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
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let door = self.clone();
                    tracker.spawn(async move { door.accept(stream, peer).await });
                }
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "line: accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn accept(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let slot = match self.slots.acquire(peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::info!(%peer, reason = CloseReason::ServerFull.as_str(), "line: refused: {refusal}");
                self.metrics.disconnected(CloseReason::ServerFull);
                let goodbye = format!("error: {refusal}\n");
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(goodbye.as_bytes()),
                )
                .await;
                return;
            }
        };
        // Chat lines are small and latency matters; writes are already coalesced.
        let _ = stream.set_nodelay(true);
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
        if self
            .hub
            .send(Command::Connect(Box::new(connection)))
            .await
            .is_err()
        {
            return;
        }
        let _counted = self.metrics.connected(&outbox);
        outbox.push(Bytes::from_static(NAME_PROMPT.as_bytes()));
        let mut session = Session {
            door: self,
            client,
            framer: LineFramer::new(self.settings.max_line_bytes),
            registered: false,
            leaving: false,
            register_deadline: Instant::now() + self.settings.register_timeout,
        };
        let mut conn = Conn::new(stream, outbox);
        let mut frames = Vec::new();
        conn.set_deadline(session.next_deadline());
        let reason = loop {
            let input = conn.next().await;
            let outcome = match input {
                Input::Data(chunk) => {
                    session.framer.push(&chunk, &mut frames);
                    session.handle_frames(&mut frames).await
                }
                Input::Deadline => session.on_deadline(&mut frames).await,
                Input::Eof => {
                    session.framer.finish(&mut frames);
                    match session.handle_frames(&mut frames).await {
                        Ok(()) => session.leave(CloseReason::PeerClosed).await,
                        gone => gone,
                    }
                }
                Input::ReadFailed(error) => {
                    tracing::debug!(client, %peer, %error, "line: read failed");
                    session.leave(CloseReason::PeerReset).await
                }
                Input::Finished(reason) => break reason,
            };
            if outcome.is_err() {
                // The hub is gone (shutdown finished): close on our own.
                conn.outbox().close(CloseReason::Shutdown);
            }
            conn.set_deadline(session.next_deadline());
        };
        // Make sure the hub forgets us, whoever closed (no-op if it already did).
        let _ = self.hub.send(Command::Disconnect { client, reason }).await;
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
    registered: bool,
    /// Quit or disconnect sent: ignore further input.
    leaving: bool,
    register_deadline: Instant,
}

impl Session<'_> {
    fn next_deadline(&self) -> Option<Instant> {
        let burst = self
            .framer
            .awaiting_burst_end()
            .then(|| Instant::now() + BURST_GAP);
        let register = (!self.registered && !self.leaving).then_some(self.register_deadline);
        match (burst, register) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn on_deadline(&mut self, frames: &mut Vec<Frame>) -> Result<(), HubGone> {
        if !self.registered && !self.leaving && Instant::now() >= self.register_deadline {
            let limit = self.door.settings.register_timeout.as_secs();
            self.deliver(format!(
                "\nerror: no name chosen within {limit}s; goodbye\n"
            ))
            .await?;
            return self.leave(CloseReason::RegisterTimeout).await;
        }
        self.framer.end_burst(frames);
        self.handle_frames(frames).await
    }

    async fn leave(&mut self, reason: CloseReason) -> Result<(), HubGone> {
        if self.leaving {
            return Ok(());
        }
        self.leaving = true;
        let client = self.client;
        self.door
            .hub
            .send(Command::Disconnect { client, reason })
            .await
    }

    /// Queue door-rendered text for this client, in order with its hub output.
    async fn deliver(&self, text: impl Into<Bytes>) -> Result<(), HubGone> {
        let bytes = text.into();
        let client = self.client;
        self.door.hub.send(Command::Deliver { client, bytes }).await
    }

    async fn handle_frames(&mut self, frames: &mut Vec<Frame>) -> Result<(), HubGone> {
        for frame in frames.drain(..) {
            if self.leaving {
                continue;
            }
            match frame {
                Frame::TooLong => {
                    let max = self.door.settings.max_line_bytes;
                    let prompt = if self.registered { "" } else { NAME_PROMPT };
                    self.deliver(format!(
                        "error: line too long (limit {max} bytes); it was discarded\n{prompt}"
                    ))
                    .await?;
                }
                Frame::Line(line) if self.registered => {
                    self.handle_line(&String::from_utf8_lossy(&line)).await?
                }
                Frame::Line(line) => self.handle_name(&line).await?,
            }
        }
        Ok(())
    }

    async fn handle_name(&mut self, line: &[u8]) -> Result<(), HubGone> {
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
