//! The plain-text front door: newline-terminated lines over TCP, for netcat, telnet,
//! the seed clients and `switchboard chat`. Asks for a name, then maps typed lines
//! and slash commands to hub requests and renders events as text.

pub mod command;
pub mod framing;
pub mod render;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
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
use super::flood::{FloodSettings, Stamp, TokenBucket, Verdict};
use super::{ConnectionSlots, PeerSlot, Refusal, Slot};
use crate::hub::{CloseReason, Command, Connection, HubGone, HubHandle, Outbox};
use crate::metrics::{ConnectionGuard, DoorMetrics};

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
    ///
    /// The slot is taken here, before spawning, so that a refused connection's task is
    /// a different (short-lived) future and an accepted connection's future holds its
    /// state once: arguments moved into an `async fn` are kept twice in its state.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        super::accept_loop("line", listener, shutdown, |stream, peer| {
            match self.slots.acquire(peer) {
                // TCP keepalive (half-open peers) comes from the listener: see
                // `door::tune_listener`.
                Ok(slot) => tracker.spawn(drive(self.clone(), stream, peer, Some(slot))),
                Err(refusal) => tracker.spawn(self.clone().refuse(stream, peer, refusal)),
            };
            std::future::ready(())
        })
        .await;
    }

    async fn refuse(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        tracing::info!(%peer, reason = CloseReason::ServerFull.as_str(), "line: refused: {refusal}");
        self.metrics.disconnected(CloseReason::ServerFull);
        let goodbye = format!("error: {refusal}\n");
        let write = stream.write_all(goodbye.as_bytes());
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }

    /// Drive one connection from name prompt to close, over any byte stream.
    pub fn run<'door, S>(
        &'door self,
        stream: S,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + 'door
    where
        S: AsyncRead + AsyncWrite + Unpin + 'door,
    {
        drive(self, stream, peer, None)
    }
}

/// Build a connection's state, then drive it. Not an `async fn`: its arguments would
/// be stored in the future and again in the state built from them.
fn drive<'door, D, S>(
    door: D,
    stream: S,
    peer: SocketAddr,
    slot: Option<Slot>,
) -> impl Future<Output = ()> + 'door
where
    D: Deref<Target = LineDoor> + 'door,
    S: AsyncRead + AsyncWrite + Unpin + 'door,
{
    let mut line = LineConnection::new(door, stream, peer, slot);
    async move { line.run().await }
}

/// Everything one line connection holds while it lives (every idle connection holds
/// one of these, so it is kept small).
struct LineConnection<D, S> {
    door: D,
    conn: Conn<S>,
    session: Session,
    /// The peer, and the connection slot released when the connection ends (none when
    /// the caller holds it, as the TLS door does).
    peer: PeerSlot,
    counted: Option<ConnectionGuard>,
}

impl<D: Deref<Target = LineDoor>, S: AsyncRead + AsyncWrite + Unpin> LineConnection<D, S> {
    fn new(door: D, stream: S, peer: SocketAddr, slot: Option<Slot>) -> Self {
        let client = door.hub.next_client_id();
        let outbox = Arc::new(Outbox::new(door.settings.max_queue_bytes));
        LineConnection {
            conn: Conn::new(stream, outbox),
            session: Session::new(client, &door.settings),
            peer: PeerSlot::new(peer, slot),
            counted: None,
            door,
        }
    }

    async fn run(&mut self) {
        {
            let door: &LineDoor = &self.door;
            let connection = Box::new(Connection {
                client: self.session.client,
                peer: self.peer.peer(),
                door: "line",
                outbox: self.conn.outbox().clone(),
                render: door.render.clone(),
            });
            // Boxed in its own statement, so the unboxed future is not kept in the task.
            let connect = Box::pin(door.hub.send(Command::Connect(connection)));
            if connect.await.is_err() {
                return;
            }
            self.counted = Some(door.metrics.connected(self.conn.outbox()));
        }
        self.conn
            .outbox()
            .push(Bytes::from_static(NAME_PROMPT.as_bytes()));
        self.conn
            .set_deadline(self.session.next_deadline(&self.door));
        // The handling futures are boxed: they are large (nested hub sends) but live only
        // while input is handled, so an idle connection's task holds just the pump and
        // the session, not room for them. Nothing else is kept across the await but
        // `self` (locals here would be stored in every idle connection's task).
        let reason = loop {
            // Scoped, so the input is not stored across the handling's await.
            let handling = {
                let input = self.conn.next().await;
                if let Input::Finished(reason) = input {
                    break reason;
                }
                let door: &LineDoor = &self.door;
                Box::pin(self.session.on_input(door, input, self.peer.peer()))
            };
            let outcome = handling.await;
            if outcome.is_err() {
                // The hub is gone (shutdown finished): close on our own.
                self.conn.outbox().close(CloseReason::Shutdown);
            }
            // Throttled input waits in the peer's socket buffers, not in our memory.
            self.conn.set_reading(self.session.pending.is_empty());
            self.conn
                .set_deadline(self.session.next_deadline(&self.door));
        };
        let finish = Box::pin(self.finish(reason));
        finish.await;
    }

    /// After the connection ended: make sure the hub forgets us, whoever closed (a no-op
    /// if it already did), count and log it.
    async fn finish(&self, reason: CloseReason) {
        let door: &LineDoor = &self.door;
        let (client, peer) = (self.session.client, self.peer.peer());
        let _ = door.hub.disconnect(client, reason).await;
        door.metrics.disconnected(reason);
        if reason.is_routine() {
            tracing::debug!(client, %peer, reason = reason.as_str(), "line: connection closed");
        } else {
            tracing::info!(client, %peer, reason = reason.as_str(), "line: connection closed");
        }
    }
}

/// Per-connection protocol state.
struct Session {
    client: u64,
    framer: LineFramer,
    /// Frames received and not yet handled (waiting for flood-control tokens).
    /// Newest first, so the next one pops off the end (a `Vec` is smaller than a
    /// `VecDeque`, and every connection holds one).
    pending: Vec<Frame>,
    bucket: TokenBucket,
    throttled_until: Option<Stamp>,
    registered: bool,
    /// Quit or disconnect sent: ignore further input.
    leaving: bool,
    /// The peer closed its side: leave once pending input is handled.
    peer_done: bool,
    register_deadline: Stamp,
    last_input: Stamp,
}

impl Session {
    fn new(client: u64, settings: &LineSettings) -> Self {
        let now = Instant::now();
        Session {
            client,
            framer: LineFramer::new(settings.max_line_bytes),
            pending: Vec::new(),
            bucket: TokenBucket::new(&settings.flood, now),
            throttled_until: None,
            registered: false,
            leaving: false,
            peer_done: false,
            register_deadline: Stamp::at(now + settings.register_timeout),
            last_input: Stamp::at(now),
        }
    }

    async fn on_input(
        &mut self,
        door: &LineDoor,
        input: Input,
        peer: SocketAddr,
    ) -> Result<(), HubGone> {
        match input {
            Input::Data(chunk) => {
                self.last_input = Stamp::now();
                self.push_input(&chunk);
                drop(chunk);
                self.process(door).await
            }
            Input::Deadline => self.on_deadline(door).await,
            Input::Eof => {
                self.peer_done = true;
                self.finish_input();
                self.process(door).await
            }
            Input::ReadFailed(error) => {
                let client = self.client;
                tracing::debug!(client, %peer, %error, "line: read failed");
                self.leave(door, CloseReason::PeerReset).await
            }
            Input::Finished(_) => Ok(()),
        }
    }

    fn next_deadline(&self, door: &LineDoor) -> Option<Instant> {
        if self.leaving {
            return None;
        }
        let burst = self
            .framer
            .awaiting_burst_end()
            .then(|| Instant::now() + BURST_GAP);
        let register = (!self.registered).then_some(self.register_deadline);
        let idle = door
            .settings
            .idle_timeout
            .map(|idle| self.last_input + idle);
        let stamped = [register, idle, self.throttled_until]
            .into_iter()
            .flatten()
            .min()
            .map(Stamp::instant);
        [burst, stamped].into_iter().flatten().min()
    }

    /// Queue frames after those already pending.
    fn queue(&mut self, frames: Vec<Frame>) {
        if !frames.is_empty() {
            self.pending.splice(0..0, frames.into_iter().rev());
        }
    }

    fn push_input(&mut self, chunk: &Bytes) {
        let mut frames = Vec::new();
        self.framer.push(chunk, &mut frames);
        self.queue(frames);
    }

    fn finish_input(&mut self) {
        let mut frames = Vec::new();
        self.framer.finish(&mut frames);
        self.queue(frames);
    }

    async fn on_deadline(&mut self, door: &LineDoor) -> Result<(), HubGone> {
        let now = Stamp::now();
        if self.leaving {
            return Ok(());
        }
        if !self.registered && now >= self.register_deadline {
            let limit = door.settings.register_timeout.as_secs_f64();
            self.deliver(
                door,
                format!("\nerror: no name chosen within {limit}s; goodbye\n"),
            )
            .await?;
            return self.leave(door, CloseReason::RegisterTimeout).await;
        }
        if let Some(idle) = door.settings.idle_timeout {
            if now >= self.last_input + idle {
                let limit = idle.as_secs_f64();
                self.deliver(
                    door,
                    format!("error: nothing received for {limit}s; goodbye\n"),
                )
                .await?;
                return self.leave(door, CloseReason::IdleTimeout).await;
            }
        }
        if self.throttled_until.is_some_and(|until| now >= until) {
            self.throttled_until = None;
        }
        let mut frames = Vec::new();
        self.framer.end_burst(&mut frames);
        self.queue(frames);
        self.process(door).await
    }

    /// Handle pending frames as flood control allows; leave after the last one if the
    /// peer has closed.
    async fn process(&mut self, door: &LineDoor) -> Result<(), HubGone> {
        while !self.leaving && self.throttled_until.is_none() && !self.pending.is_empty() {
            match self.bucket.take(&door.settings.flood, Instant::now()) {
                Verdict::Allow => {
                    if let Some(frame) = self.pending.pop() {
                        self.handle_frame(door, frame).await?;
                    }
                }
                Verdict::Wait { until, first } => {
                    self.throttled_until = Some(Stamp::at(until));
                    if first {
                        let rate = door.settings.flood.rate;
                        self.deliver(door, format!(
                            "*** slow down: over {rate} messages per second; your messages are delayed\n"
                        ))
                        .await?;
                    }
                }
                Verdict::Kick => {
                    self.deliver(door, "error: disconnected for flooding\n")
                        .await?;
                    self.pending.clear();
                    return self.leave(door, CloseReason::Flood).await;
                }
            }
        }
        if self.leaving {
            self.pending.clear();
        }
        if self.pending.is_empty() {
            // An idle connection keeps no frame queue (~100 bytes each, thousands of them).
            self.pending = Vec::new();
            self.bucket.caught_up();
            if self.peer_done {
                return self.leave(door, CloseReason::PeerClosed).await;
            }
        }
        Ok(())
    }

    async fn leave(&mut self, door: &LineDoor, reason: CloseReason) -> Result<(), HubGone> {
        if self.leaving {
            return Ok(());
        }
        self.leaving = true;
        door.hub.disconnect(self.client, reason).await
    }

    /// Queue door-rendered text for this client, in order with its hub output.
    async fn deliver(&self, door: &LineDoor, text: impl Into<Bytes>) -> Result<(), HubGone> {
        let bytes = text.into();
        let client = self.client;
        door.hub.send(Command::Deliver { client, bytes }).await
    }

    async fn handle_frame(&mut self, door: &LineDoor, frame: Frame) -> Result<(), HubGone> {
        match frame {
            Frame::TooLong => {
                let max = door.settings.max_line_bytes;
                let prompt = if self.registered { "" } else { NAME_PROMPT };
                self.deliver(
                    door,
                    format!("error: line too long (limit {max} bytes); it was discarded\n{prompt}"),
                )
                .await
            }
            Frame::Line(line) if self.registered => {
                self.handle_line(door, &String::from_utf8_lossy(&line))
                    .await
            }
            Frame::Line(line) => self.handle_name(door, &line).await,
        }
    }

    async fn handle_name(&mut self, door: &LineDoor, line: &[u8]) -> Result<(), HubGone> {
        if let Some(why) = wrong_protocol(line) {
            self.deliver(door, format!("error: {why}\n")).await?;
            return self.leave(door, CloseReason::BadInput).await;
        }
        let Ok(name) = std::str::from_utf8(line) else {
            let why = crate::text::NickError::NotUtf8;
            return self
                .deliver(door, format!("error: {why}\n{NAME_PROMPT}"))
                .await;
        };
        if matches!(name, "end" | "/q" | "/quit") || name.starts_with("/quit ") {
            return self.leave(door, CloseReason::ClientQuit).await;
        }
        if let Err(refusal) = door.hub.register(self.client, name.to_owned()).await? {
            return self
                .deliver(
                    door,
                    format!("error: cannot use that name: {refusal}\n{NAME_PROMPT}"),
                )
                .await;
        }
        self.registered = true;
        Ok(())
    }

    async fn handle_line(&mut self, door: &LineDoor, line: &str) -> Result<(), HubGone> {
        match command::parse(line) {
            LineInput::Nothing => Ok(()),
            LineInput::Help => self.deliver(door, door.help.clone()).await,
            LineInput::Invalid(why) => self.deliver(door, format!("error: {why}\n")).await,
            LineInput::Request(request) => {
                match request {
                    crate::hub::Request::Quit { .. } => self.leaving = true,
                    crate::hub::Request::Say { .. } | crate::hub::Request::Whisper { .. } => {
                        door.metrics.message_in()
                    }
                    _ => {}
                }
                door.hub.request(self.client, None, request).await
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
    use super::*;

    /// Every idle connection holds its task's future, in an allocation tokio rounds up
    /// to 128 bytes on x86-64 (the future plus ~110 bytes of task header and trailer):
    /// up to ~400 bytes of future is a 512-byte task. It is 360 bytes in debug builds
    /// (where a `TcpStream` is larger) since the metrics guard shrank; this fails when
    /// it grows, so any growth is a decision.
    #[tokio::test]
    async fn an_idle_connection_future_stays_small() {
        let tracker = TaskTracker::new();
        let hub = crate::hub::spawn_in_memory(&tracker);
        let door = LineDoor::new(
            hub,
            ConnectionSlots::new(10, 10),
            LineSettings {
                max_line_bytes: 1024,
                max_queue_bytes: 1 << 20,
                register_timeout: Duration::from_secs(10),
                idle_timeout: None,
                flood: FloodSettings {
                    rate: 10.0,
                    burst: 5,
                    patience: Duration::from_secs(2),
                },
                default_room: "#general".into(),
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let slot = door.slots.acquire(peer).unwrap();
        let accept = drive(door.clone(), stream, peer, Some(slot));
        let size = std::mem::size_of_val(&accept);
        eprintln!(
            "line connection future {size} bytes: state {}, session {}, conn {}",
            std::mem::size_of::<LineConnection<Arc<LineDoor>, TcpStream>>(),
            std::mem::size_of::<Session>(),
            std::mem::size_of::<Conn<TcpStream>>(),
        );
        assert!(size <= 360, "line connection future grew to {size} bytes");
        drop(accept);
        assert_eq!(door.slots.in_use(), 0, "the slot is freed with the future");
    }

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
