//! Door adapters: how the bench connects to one kind of server, registers, sends a
//! payload and finds deliveries. The scenarios only see [`Door`], [`DeliveryReader`]
//! and [`PayloadWriter`]; `--target` picks the adapter ([`TargetKind`]).
//!
//! Adapters: the line family over TCP ([`line`](mod@line): Switchboard's line door, `ncat
//! --chat`, the seed chat server, any raw line peer), Switchboard's JSON protocol
//! ([`json`]: over TCP, and over WebSocket in [`ws`], which also drives a plain
//! WebSocket broadcast peer), and IRC ([`irc`]: Switchboard's IRC door, ngircd,
//! InspIRCd). [`tcp`] holds the plumbing the TCP adapters share.

pub mod irc;
pub mod json;
pub mod line;
pub mod tcp;
pub mod ws;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::payload::Payload;
use tcp::TcpWriting;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Read buffer per connection: big enough that one read takes many deliveries.
pub const READ_BUFFER_BYTES: usize = 32 * 1024;
/// Registration must finish in this time, or the connection counts as failed.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// Registration replies longer than this are not what we are waiting for.
pub const MAX_REGISTER_BYTES: usize = 1 << 20;
/// A polite close (farewell, close frame, shutdown) gives up after this long.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One kind of server the bench can drive.
pub trait Door: Send + Sync {
    /// Its name in the summary.
    fn name(&self) -> &'static str;
    /// True when a sender receives its own messages too.
    fn echoes(&self) -> bool;
    /// How many connections may register at once; some servers break under more.
    fn max_open_concurrency(&self) -> Option<usize> {
        None
    }
    /// How a connection registers as `nick` at `addr`: a fresh state machine, driven
    /// by [`tcp::register`] here and by the `connect` scenario's own event loop.
    fn registration(&self, addr: SocketAddr, nick: &str) -> Box<dyn Registration>;
    /// How this server frames payloads and is left.
    fn writing(&self) -> TcpWriting;
    /// The registered connection as a session; `leftover` is what arrived past the
    /// server's confirmation.
    fn session(&self, stream: TcpStream, leftover: Vec<u8>) -> Session {
        tcp::session(stream, leftover, self.writing())
    }
    /// Connect to `addr` (from `source`, if given) and register as `nick`; resolves once
    /// the server has confirmed the registration, so deliveries after that are owed.
    /// The same for every door: the whole of it counts against [`REGISTER_TIMEOUT`].
    fn open<'a>(
        &'a self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        nick: &'a str,
    ) -> BoxFuture<'a, io::Result<Session>> {
        Box::pin(async move {
            let deadline = Instant::now() + REGISTER_TIMEOUT;
            let mut stream = tcp::connect(addr, source).await?;
            let registration = self.registration(addr, nick);
            let leftover = tcp::register(deadline, &mut stream, registration).await?;
            Ok(self.session(stream, leftover))
        })
    }
}

/// What a registration does next, given everything received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes, then ask again.
    Send(Vec<u8>),
    /// Wait for more to arrive.
    Read,
    /// Registered: what arrived from this offset on belongs to the session.
    Registered(usize),
}

/// One connection's registration as a pure state machine (bytes in, what to do out),
/// so the async adapters and the `connect` scenario's event loop share it and tests
/// can feed it input cut anywhere.
pub trait Registration: Send {
    /// Look at everything received since the connection opened (it only grows; empty
    /// at the first call, made before anything is read) and say what comes next. A
    /// refusal is an error that quotes what the server said.
    fn step(&mut self, received: &[u8]) -> io::Result<Step>;
}

/// A registered connection, split so reading and sending can run in separate tasks.
pub struct Session {
    pub reader: Box<dyn DeliveryReader>,
    pub writer: Box<dyn PayloadWriter>,
}

/// The receiving half.
pub trait DeliveryReader: Send {
    /// Wait for input and append the payloads it completes to `out`. Returns the
    /// number of bytes read; 0 means the server closed the connection.
    fn read<'a>(&'a mut self, out: &'a mut Vec<Payload>) -> BoxFuture<'a, io::Result<usize>>;
}

/// The sending half.
pub trait PayloadWriter: Send {
    /// Append `payload` framed as one message to `out` (several may be batched).
    fn frame(&self, payload: &[u8], out: &mut Vec<u8>);
    /// Write framed messages.
    fn send<'a>(&'a mut self, framed: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;
    /// Leave the way this server expects; bounded in time, errors ignored. `quick`
    /// resets the connection instead where the server copes with that, so thousands of
    /// short connections leave no TIME_WAIT sockets behind on the bench's side.
    fn close(self: Box<Self>, quick: bool) -> BoxFuture<'static, ()>;
}

/// What `--target` names: the kind of server listening at `--addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// Switchboard's line door: `Enter your name: `, `*** NAME joined ROOM`, echo.
    Switchboard,
    /// `ncat --chat`: no registration, `<userN> ` prefixes, no echo.
    NcatChat,
    /// The seed Python chat server: name prompt, `[name] has joined.`, echo.
    SeedChat,
    /// Any line peer: no registration, payloads found anywhere, echo assumed.
    Raw,
    /// Switchboard's JSON door (`--json`): one JSON object per line over TCP.
    Json,
    /// Switchboard's WebSocket door (`/ws` on `--web`): the JSON protocol, one object
    /// per text frame.
    Ws,
    /// A plain WebSocket broadcast peer (benches/peers/ws-broadcast.mjs): no
    /// registration, each text frame relayed to every other client, no echo.
    WsBroadcast,
    /// Any IRC server (Switchboard's `--irc` door, ngircd, InspIRCd): NICK and USER,
    /// `JOIN #bench`, payloads as PRIVMSGs to it, no echo.
    Irc,
}

impl TargetKind {
    /// The adapter that speaks to this kind of server.
    pub fn door(self) -> Arc<dyn Door> {
        match self {
            TargetKind::Switchboard => Arc::new(line::LineDoor::new(line::LineTarget::Switchboard)),
            TargetKind::NcatChat => Arc::new(line::LineDoor::new(line::LineTarget::NcatChat)),
            TargetKind::SeedChat => Arc::new(line::LineDoor::new(line::LineTarget::SeedChat)),
            TargetKind::Raw => Arc::new(line::LineDoor::new(line::LineTarget::Raw)),
            TargetKind::Json => Arc::new(json::JsonTcpDoor),
            TargetKind::Ws => Arc::new(ws::WsDoor::new(ws::WsTarget::Switchboard)),
            TargetKind::WsBroadcast => Arc::new(ws::WsDoor::new(ws::WsTarget::Broadcast)),
            TargetKind::Irc => Arc::new(irc::IrcDoor),
        }
    }

    /// Where this kind listens by default: Switchboard's default port for that door.
    pub fn default_addr(self) -> &'static str {
        match self {
            TargetKind::Json => "127.0.0.1:9998",
            TargetKind::Ws | TargetKind::WsBroadcast => "127.0.0.1:8080",
            TargetKind::Irc => "127.0.0.1:6667",
            TargetKind::Switchboard
            | TargetKind::NcatChat
            | TargetKind::SeedChat
            | TargetKind::Raw => "127.0.0.1:9999",
        }
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// Drive `registration` as a server's `transcript` arrives, the first `arrivals[i]`
    /// bytes of it at a time; returns what it sent and where it said the session's
    /// input starts (or why it failed).
    pub fn drive(
        mut registration: Box<dyn Registration>,
        transcript: &[u8],
        arrivals: &[usize],
    ) -> (Vec<Vec<u8>>, io::Result<usize>) {
        let mut sent = Vec::new();
        for &arrived in arrivals {
            loop {
                match registration.step(&transcript[..arrived]) {
                    Ok(Step::Send(bytes)) => sent.push(bytes),
                    Ok(Step::Read) => break,
                    Ok(Step::Registered(end)) => return (sent, Ok(end)),
                    Err(error) => return (sent, Err(error)),
                }
            }
        }
        (sent, Err(io::Error::other("still waiting at the end")))
    }

    /// Ways `transcript` can arrive: in two parts cut at every byte, and byte by byte.
    pub fn arrivals(transcript: &[u8]) -> Vec<Vec<usize>> {
        let whole = transcript.len();
        let mut ways: Vec<Vec<usize>> = (0..=whole).map(|cut| vec![cut, whole]).collect();
        ways.push((0..=whole).collect());
        ways
    }

    /// However `transcript` arrives, the registration sends `sends` and settles with
    /// the session's input starting at `end`.
    pub fn assert_registers(
        make: impl Fn() -> Box<dyn Registration>,
        transcript: &[u8],
        sends: &[&[u8]],
        end: usize,
    ) {
        for arrivals in arrivals(transcript) {
            let (sent, settled) = drive(make(), transcript, &arrivals);
            assert_eq!(sent, sends, "arriving as {arrivals:?}");
            assert_eq!(settled.unwrap(), end, "arriving as {arrivals:?}");
        }
    }

    /// However `transcript` arrives, the registration fails with an error saying
    /// `says`.
    pub fn assert_refused(make: impl Fn() -> Box<dyn Registration>, transcript: &[u8], says: &str) {
        for arrivals in arrivals(transcript) {
            let (_, settled) = drive(make(), transcript, &arrivals);
            let error = settled.unwrap_err().to_string();
            assert!(error.contains(says), "arriving as {arrivals:?}: {error}");
        }
    }
}
