//! The JSON front door: the protocol in `docs/protocol.md`, one JSON object per
//! message. [`JsonSession`] holds the per-connection protocol state and is shared by
//! JSON lines over TCP (here, on the [`Conn`] pump like the line door) and by
//! WebSocket (`door::web`), which carries one object per text frame.

pub mod codec;
pub mod framing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::codec::{decode, sniff_id, ClientMessage};
use self::framing::{JsonFrame, JsonLineFramer};
use super::conn::{Conn, Input};
use super::flood::{FloodSettings, TokenBucket, Verdict};
use super::{ConnectionSlots, Slot};
use crate::hub::{
    ClientId, CloseReason, Command, Connection, ErrorCode, Event, HubGone, HubHandle, Outbox,
    Render, Reply, Request, Tag,
};
use crate::metrics::DoorMetrics;
use crate::text::NickError;

/// Settings for the JSON protocol, over TCP or WebSocket.
#[derive(Debug, Clone)]
pub struct JsonSettings {
    /// Largest accepted message; bigger ones are refused with `line_too_long`.
    pub max_message_bytes: usize,
    pub max_queue_bytes: usize,
    pub register_timeout: Duration,
    pub flood: FloodSettings,
}

/// Everything a JSON connection needs, shared by all of a door's connections.
pub struct JsonDoor {
    hub: HubHandle,
    slots: Arc<ConnectionSlots>,
    settings: JsonSettings,
    /// JSON lines, or WebSocket frames holding the same objects.
    render: Arc<dyn Render>,
    /// "json" or "ws": shown by whois and used as the metrics label.
    name: &'static str,
    metrics: DoorMetrics,
}

impl JsonDoor {
    pub fn new(
        hub: HubHandle,
        slots: Arc<ConnectionSlots>,
        settings: JsonSettings,
        name: &'static str,
        metrics: DoorMetrics,
        render: Arc<dyn Render>,
    ) -> Arc<Self> {
        Arc::new(JsonDoor {
            hub,
            slots,
            settings,
            render,
            name,
            metrics,
        })
    }

    pub fn settings(&self) -> &JsonSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &DoorMetrics {
        &self.metrics
    }

    /// Take a connection slot for `peer`, or a JSON error line saying why not.
    pub fn acquire(&self, peer: SocketAddr) -> Result<Slot, Bytes> {
        self.slots.acquire(peer).map_err(|refusal| {
            tracing::info!(%peer, reason = CloseReason::ServerFull.as_str(), "{}: refused: {refusal}", self.name);
            self.metrics.disconnected(CloseReason::ServerFull);
            let event = Event::Error {
                tag: None,
                code: ErrorCode::BadRequest,
                text: refusal.to_string().into(),
            };
            self.render
                .render(&event)
                .unwrap_or_else(|| Bytes::from_static(b"\n"))
        })
    }

    /// Accept plain TCP connections until `shutdown`; each runs on `tracker`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        super::accept_loop(self.name, listener, shutdown, |stream, peer| {
            tracker.spawn(self.clone().accept(stream, peer));
            std::future::ready(())
        })
        .await;
    }

    /// Serve one stream connection (plain or TLS), if a slot is free.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut stream: S,
        peer: SocketAddr,
    ) {
        let slot = match self.acquire(peer) {
            Ok(slot) => slot,
            Err(goodbye) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(&goodbye).await;
                    let _ = stream.shutdown().await;
                })
                .await;
                return;
            }
        };
        self.run(stream, peer).await;
        drop(slot);
    }

    /// Introduce a new connection to the hub; `None` once the hub has stopped.
    pub async fn open(&self, peer: SocketAddr) -> Option<(ClientId, Arc<Outbox>)> {
        let (client, outbox) = self.new_client();
        self.connect(client, peer, &outbox).await.ok()?;
        Some((client, outbox))
    }

    /// A new client's id and outbox, not yet known to the hub.
    pub fn new_client(&self) -> (ClientId, Arc<Outbox>) {
        let client = self.hub.next_client_id();
        (client, Arc::new(Outbox::new(self.settings.max_queue_bytes)))
    }

    /// Introduce a client made by [`JsonDoor::new_client`] to the hub.
    pub async fn connect(
        &self,
        client: ClientId,
        peer: SocketAddr,
        outbox: &Arc<Outbox>,
    ) -> Result<(), HubGone> {
        let connection = Connection {
            client,
            peer,
            door: self.name,
            outbox: outbox.clone(),
            render: self.render.clone(),
        };
        self.hub.send(Command::Connect(Box::new(connection))).await
    }

    /// Protocol state for a connection opened with [`JsonDoor::open`].
    pub fn session(&self, client: ClientId) -> JsonSession<'_> {
        JsonSession {
            door: self,
            client,
            registered: false,
            leaving: false,
            register_deadline: Instant::now() + self.settings.register_timeout,
            bucket: TokenBucket::new(&self.settings.flood, Instant::now()),
        }
    }

    /// After a connection ends: make sure the hub forgot it, log and count the reason.
    pub async fn closed(&self, client: ClientId, peer: SocketAddr, reason: CloseReason) {
        let _ = self.hub.disconnect(client, reason).await;
        self.metrics.disconnected(reason);
        let name = self.name;
        if reason.is_routine() {
            tracing::debug!(client, %peer, reason = reason.as_str(), "{name}: connection closed");
        } else {
            tracing::info!(client, %peer, reason = reason.as_str(), "{name}: connection closed");
        }
    }

    /// Drive one JSON-lines connection from connect to close, over any byte stream.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, peer: SocketAddr) {
        let Some((client, outbox)) = self.open(peer).await else {
            return;
        };
        let _counted = self.metrics.connected(&outbox);
        let mut session = self.session(client);
        let mut framer = JsonLineFramer::new(self.settings.max_message_bytes);
        let mut conn = Conn::new(stream, outbox);
        let mut frames = Vec::new();
        conn.set_deadline(session.register_deadline());
        let reason = loop {
            let outcome = match conn.next().await {
                Input::Data(chunk) => {
                    framer.push(&chunk, &mut frames);
                    session.handle_frames(&mut frames).await
                }
                Input::Eof => {
                    framer.finish(&mut frames);
                    match session.handle_frames(&mut frames).await {
                        Ok(()) => session.leave(CloseReason::PeerClosed).await,
                        gone => gone,
                    }
                }
                Input::ReadFailed(error) => {
                    tracing::debug!(client, %peer, %error, "{}: read failed", self.name);
                    session.leave(CloseReason::PeerReset).await
                }
                Input::Deadline => session.register_timed_out().await,
                Input::Finished(reason) => break reason,
            };
            if outcome.is_err() {
                // The hub is gone (shutdown finished): close on our own.
                conn.outbox().close(CloseReason::Shutdown);
            }
            conn.set_deadline(session.register_deadline());
        };
        self.closed(client, peer, reason).await;
    }
}

/// Per-connection JSON protocol state, whatever the transport.
pub struct JsonSession<'door> {
    door: &'door JsonDoor,
    client: ClientId,
    registered: bool,
    /// Quit or disconnect sent: further input is ignored.
    leaving: bool,
    register_deadline: Instant,
    bucket: TokenBucket,
}

impl JsonSession<'_> {
    /// When the connection must have chosen a name by, while it has not.
    pub fn register_deadline(&self) -> Option<Instant> {
        (!self.registered && !self.leaving).then_some(self.register_deadline)
    }

    pub fn client(&self) -> ClientId {
        self.client
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The register deadline passed: say so and leave.
    pub async fn register_timed_out(&mut self) -> Result<(), HubGone> {
        if self.register_deadline().is_none() || Instant::now() < self.register_deadline {
            return Ok(());
        }
        let limit = self.door.settings.register_timeout.as_secs();
        self.error(
            None,
            ErrorCode::NotRegistered,
            format!("no name chosen within {limit}s; goodbye"),
        )
        .await?;
        self.leave(CloseReason::RegisterTimeout).await
    }

    /// Tell the hub this connection is going, once.
    pub async fn leave(&mut self, reason: CloseReason) -> Result<(), HubGone> {
        if self.leaving {
            return Ok(());
        }
        self.leaving = true;
        self.door.hub.disconnect(self.client, reason).await
    }

    /// Queue an event rendered by the door, in order with the client's hub output.
    async fn deliver(&self, event: &Event) -> Result<(), HubGone> {
        let Some(bytes) = self.door.render.render(event) else {
            return Ok(());
        };
        let client = self.client;
        self.door.hub.send(Command::Deliver { client, bytes }).await
    }

    async fn error(
        &self,
        tag: Option<Tag>,
        code: ErrorCode,
        text: impl Into<Arc<str>>,
    ) -> Result<(), HubGone> {
        let text = text.into();
        self.deliver(&Event::Error { tag, code, text }).await
    }

    async fn handle_frames(&mut self, frames: &mut Vec<JsonFrame>) -> Result<(), HubGone> {
        for frame in frames.drain(..) {
            match frame {
                JsonFrame::Message(bytes) => self.handle_message(&bytes).await?,
                JsonFrame::TooLong { head } => self.handle_too_long(&head).await?,
            }
        }
        Ok(())
    }

    /// A message over the size cap: refuse it, echoing its id if one can be found.
    pub async fn handle_too_long(&mut self, head: &[u8]) -> Result<(), HubGone> {
        if self.leaving {
            return Ok(());
        }
        let max = self.door.settings.max_message_bytes;
        self.error(
            sniff_id(head),
            ErrorCode::LineTooLong,
            format!("message too long (limit {max} bytes); it was discarded"),
        )
        .await
    }

    /// Flood control: wait for a token before handling a message. While it waits the
    /// session reads nothing more from this client, so the excess stays in the
    /// client's own buffers. Returns false when the client was disconnected instead.
    async fn admit(&mut self) -> Result<bool, HubGone> {
        let mut waited = false;
        loop {
            match self.bucket.take(&self.door.settings.flood, Instant::now()) {
                Verdict::Allow => {
                    if !waited {
                        self.bucket.caught_up();
                    }
                    return Ok(true);
                }
                Verdict::Wait { until, first } => {
                    if first {
                        let rate = self.door.settings.flood.rate;
                        self.error(
                            None,
                            ErrorCode::Flood,
                            format!("slow down: over {rate} messages per second; your messages are delayed"),
                        )
                        .await?;
                    }
                    waited = true;
                    tokio::time::sleep_until(until).await;
                }
                Verdict::Kick => {
                    self.error(None, ErrorCode::Flood, "disconnected for flooding")
                        .await?;
                    self.leave(CloseReason::Flood).await?;
                    return Ok(false);
                }
            }
        }
    }

    /// A transport control frame (a WebSocket ping or pong): it carries no request but
    /// costs a flood-control token, so a ping flood is throttled and cut off like any.
    pub async fn control_frame(&mut self) -> Result<(), HubGone> {
        if !self.leaving {
            self.admit().await?;
        }
        Ok(())
    }

    /// One complete message.
    pub async fn handle_message(&mut self, bytes: &[u8]) -> Result<(), HubGone> {
        if self.leaving || !self.admit().await? {
            return Ok(());
        }
        let decoded = decode(bytes);
        let tag = decoded.tag;
        let message = match decoded.message {
            Ok(message) => message,
            Err(refusal) => return self.error(tag, refusal.code, refusal.text).await,
        };
        match message {
            ClientMessage::Nick(nick) if !self.registered => self.register(tag, nick).await,
            ClientMessage::Nick(nick) => self.request(tag, Request::Nick { nick }).await,
            ClientMessage::Hub(request) => self.request(tag, request).await,
        }
    }

    async fn register(&mut self, tag: Option<Tag>, nick: String) -> Result<(), HubGone> {
        match self.door.hub.register(self.client, nick).await? {
            Ok(()) => {
                self.registered = true;
                if tag.is_some() {
                    self.deliver(&Event::Reply {
                        tag,
                        reply: Reply::Done,
                    })
                    .await?;
                }
                Ok(())
            }
            Err(refusal) => {
                let code = match refusal {
                    NickError::Taken => ErrorCode::NickTaken,
                    _ => ErrorCode::NickInvalid,
                };
                self.error(tag, code, format!("cannot use that name: {refusal}"))
                    .await
            }
        }
    }

    async fn request(&mut self, tag: Option<Tag>, request: Request) -> Result<(), HubGone> {
        match &request {
            Request::Say { .. } | Request::Whisper { .. } => self.door.metrics.message_in(),
            // Before a name the hub would refuse the request; quitting needs none.
            Request::Quit { .. } if !self.registered => {
                return self.leave(CloseReason::ClientQuit).await
            }
            Request::Quit { .. } => self.leaving = true,
            _ => {}
        }
        self.door.hub.request(self.client, tag, request).await
    }
}
