//! Door adapters: how the bench connects to one kind of server, registers, sends a
//! payload and finds deliveries. A new front door (JSON, WebSocket) is one more
//! [`Door`] implementation; the scenarios only see [`Door`], [`DeliveryReader`] and
//! [`PayloadWriter`].
//!
//! Implemented here: the line family over TCP, which covers Switchboard's line door,
//! `ncat --chat`, the seed chat server and any raw line peer.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use super::payload::{Payload, Scanner};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Read buffer per connection: big enough that one read takes many deliveries.
const READ_BUFFER_BYTES: usize = 32 * 1024;
/// Registration must finish in this time, or the connection counts as failed.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// Registration replies longer than this are not what we are waiting for.
const MAX_REGISTER_BYTES: usize = 1 << 20;

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
    /// Connect to `addr` (from `source`, if given) and register as `nick`; resolves once
    /// the server has confirmed the registration, so deliveries after that are owed.
    fn open<'a>(
        &'a self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        nick: &'a str,
    ) -> BoxFuture<'a, io::Result<Session>>;
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

/// The servers that speak lines over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineTarget {
    /// Switchboard's line door: `Enter your name: `, `*** NAME joined ROOM`, echo.
    Switchboard,
    /// `ncat --chat`: no registration, `<userN> ` prefixes, no echo.
    NcatChat,
    /// The seed Python chat server: name prompt, `[name] has joined.`, echo; one
    /// message per recv, so its output is only as framed as TCP happens to deliver.
    SeedChat,
    /// Any line peer: no registration, payloads found anywhere, echo assumed.
    Raw,
}

/// The line-family adapter.
pub struct LineDoor {
    target: LineTarget,
}

impl LineDoor {
    pub fn new(target: LineTarget) -> Self {
        LineDoor { target }
    }
}

/// Connect, optionally from a chosen local address (to spread per-IP limits).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Read into `buffer` until it contains `needle` followed by a newline (or, with
/// `line_end == false`, just `needle`). Returns the offset just past it; an early
/// `failure` text or the connection closing is an error that quotes what arrived.
async fn read_until(
    deadline: tokio::time::Instant,
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    needle: &[u8],
    line_end: bool,
    failure: Option<&[u8]>,
) -> io::Result<usize> {
    let mut searched = 0;
    loop {
        if let Some(at) = memchr::memmem::find(&buffer[searched..], needle) {
            let after = searched + at + needle.len();
            if !line_end {
                return Ok(after);
            }
            if let Some(newline) = memchr::memchr(b'\n', &buffer[after..]) {
                return Ok(after + newline + 1);
            }
        } else {
            searched = buffer.len().saturating_sub(needle.len());
        }
        if let Some(failure) = failure {
            if memchr::memmem::find(buffer, failure).is_some() {
                return Err(refused("registration failed", buffer));
            }
        }
        if buffer.len() > MAX_REGISTER_BYTES {
            return Err(refused("registration failed", buffer));
        }
        let mut chunk = [0u8; 8192];
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => return Err(refused("registration timed out", buffer)),
        };
        if read == 0 {
            return Err(refused("registration failed (connection closed)", buffer));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn refused(what: &str, received: &[u8]) -> io::Error {
    let tail = &received[received.len().saturating_sub(200)..];
    io::Error::other(format!(
        "{what}; the server sent {:?}",
        String::from_utf8_lossy(tail)
    ))
}

impl LineDoor {
    async fn register(&self, stream: &mut TcpStream, nick: &str) -> io::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
        let mut buffer = Vec::new();
        let consumed = match self.target {
            LineTarget::Switchboard => {
                let prompt = read_until(
                    deadline,
                    stream,
                    &mut buffer,
                    b"Enter your name: ",
                    false,
                    None,
                )
                .await?;
                buffer.drain(..prompt);
                stream.write_all(format!("{nick}\n").as_bytes()).await?;
                let needle = format!("*** {nick} joined ");
                read_until(
                    deadline,
                    stream,
                    &mut buffer,
                    needle.as_bytes(),
                    true,
                    Some(b"Enter your name: "),
                )
                .await?
            }
            LineTarget::SeedChat => {
                let prompt = read_until(
                    deadline,
                    stream,
                    &mut buffer,
                    b"Enter your name: ",
                    false,
                    None,
                )
                .await?;
                buffer.drain(..prompt);
                // The seed takes one recv as the name, newline and all: send none.
                stream.write_all(nick.as_bytes()).await?;
                let needle = format!("[{nick}] has joined.");
                read_until(
                    deadline,
                    stream,
                    &mut buffer,
                    needle.as_bytes(),
                    true,
                    Some(b"Already registered"),
                )
                .await?
            }
            // ncat greets each newcomer with the list of who is there; after that line
            // it relays to this connection.
            LineTarget::NcatChat => {
                read_until(
                    deadline,
                    stream,
                    &mut buffer,
                    b"<announce> already connected: ",
                    true,
                    None,
                )
                .await?
            }
            LineTarget::Raw => 0,
        };
        buffer.drain(..consumed);
        Ok(buffer)
    }
}

impl Door for LineDoor {
    fn name(&self) -> &'static str {
        match self.target {
            LineTarget::Switchboard => "switchboard",
            LineTarget::NcatChat => "ncat-chat",
            LineTarget::SeedChat => "seed-chat",
            LineTarget::Raw => "raw",
        }
    }

    fn echoes(&self) -> bool {
        !matches!(self.target, LineTarget::NcatChat)
    }

    fn max_open_concurrency(&self) -> Option<usize> {
        // The seed broadcasts over its user dict while other threads add to it; a
        // concurrent join kills a thread ("dictionary changed size during iteration").
        // ncat 7.93 quits ("getpeername ... failed: Transport endpoint is not
        // connected. QUITTING.") when many connections arrive at once.
        match self.target {
            LineTarget::SeedChat | LineTarget::NcatChat => Some(1),
            LineTarget::Switchboard | LineTarget::Raw => None,
        }
    }

    fn open<'a>(
        &'a self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        nick: &'a str,
    ) -> BoxFuture<'a, io::Result<Session>> {
        Box::pin(async move {
            let mut stream = connect(addr, source).await?;
            let leftover = self.register(&mut stream, nick).await?;
            let (read, write) = stream.into_split();
            let mut buffer = vec![0u8; READ_BUFFER_BYTES.max(leftover.len())];
            buffer[..leftover.len()].copy_from_slice(&leftover);
            Ok(Session {
                reader: Box::new(LineReader {
                    read,
                    buffer,
                    filled: leftover.len(),
                    scanner: Scanner::default(),
                }),
                writer: Box::new(LineWriter {
                    write,
                    target: self.target,
                }),
            })
        })
    }
}

/// Reads lines and scans whole ones for payloads; a partial last line waits for more.
struct LineReader {
    read: OwnedReadHalf,
    buffer: Vec<u8>,
    filled: usize,
    scanner: Scanner,
}

impl DeliveryReader for LineReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<Payload>) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            if self.filled == self.buffer.len() {
                // A line longer than the buffer: scan what is there and drop it, so
                // memory stays bounded whatever the peer sends.
                self.scanner.scan(&self.buffer, out);
                self.filled = 0;
            }
            let read = self.read.read(&mut self.buffer[self.filled..]).await?;
            if read == 0 {
                self.scanner.scan(&self.buffer[..self.filled], out);
                self.filled = 0;
                return Ok(0);
            }
            self.filled += read;
            let whole = match memchr::memrchr(b'\n', &self.buffer[..self.filled]) {
                Some(newline) => newline + 1,
                None => return Ok(read),
            };
            self.scanner.scan(&self.buffer[..whole], out);
            self.buffer.copy_within(whole..self.filled, 0);
            self.filled -= whole;
            Ok(read)
        })
    }
}

struct LineWriter {
    write: OwnedWriteHalf,
    target: LineTarget,
}

impl PayloadWriter for LineWriter {
    fn frame(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(payload);
        out.push(b'\n');
    }

    fn send<'a>(&'a mut self, framed: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.write.write_all(framed).await })
    }

    fn close(mut self: Box<Self>, quick: bool) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The seed server dies (thread by thread) on a reset; everyone else copes.
            if quick && self.target != LineTarget::SeedChat {
                // Linger 0 never blocks: the close sends a reset at once.
                let _ =
                    socket2::SockRef::from(self.write.as_ref()).set_linger(Some(Duration::ZERO));
                return;
            }
            // The seed server only forgets a user who says "end"; others take EOF.
            let farewell: &[u8] = match self.target {
                LineTarget::SeedChat => b"end",
                LineTarget::Switchboard => b"/quit\n",
                LineTarget::NcatChat | LineTarget::Raw => b"",
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = self.write.write_all(farewell).await;
                let _ = self.write.shutdown().await;
            })
            .await;
        })
    }
}
