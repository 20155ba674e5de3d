//! TCP plumbing the adapters share: connecting from a chosen source address, driving a
//! registration under a deadline, reading deliveries line by line, writing framed
//! payloads, and leaving (politely, or by reset).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use super::{
    BoxFuture, DeliveryReader, PayloadWriter, Registration, Session, Step, CLOSE_TIMEOUT,
    MAX_REGISTER_BYTES, READ_BUFFER_BYTES,
};
use crate::bench::payload::{Payload, Scanner};

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

/// Drive `registration` over `stream` until the server confirms it, by `deadline`;
/// returns what arrived past the confirmation. Running out of time, the connection
/// closing, and a reply longer than any registration's are errors that quote what
/// arrived.
pub async fn register(
    deadline: tokio::time::Instant,
    stream: &mut TcpStream,
    mut registration: Box<dyn Registration>,
) -> io::Result<Vec<u8>> {
    let mut received = Vec::new();
    loop {
        match registration.step(&received)? {
            Step::Send(bytes) => stream.write_all(&bytes).await?,
            Step::Registered(end) => {
                received.drain(..end);
                return Ok(received);
            }
            Step::Read => {
                check_registration_size(&received)?;
                received.reserve(REGISTER_READ_BYTES);
                let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut received))
                    .await
                    .map_err(|_| registration_timed_out(&received))??;
                if read == 0 {
                    return Err(registration_cut_off(&received));
                }
            }
        }
    }
}

/// Room made for each registration read: replies are a few lines.
pub const REGISTER_READ_BYTES: usize = 4096;

/// Registration replies longer than [`MAX_REGISTER_BYTES`] are not what we wait for.
pub fn check_registration_size(received: &[u8]) -> io::Result<()> {
    if received.len() > MAX_REGISTER_BYTES {
        return Err(refused("registration failed", received));
    }
    Ok(())
}

/// The error for a registration still unconfirmed at its deadline.
pub fn registration_timed_out(received: &[u8]) -> io::Error {
    refused("registration timed out", received)
}

/// The error for a connection the server closed before confirming registration.
pub fn registration_cut_off(received: &[u8]) -> io::Error {
    refused("registration failed (connection closed)", received)
}

/// Where the first `needle` at or after `*searched` in `received` ends; with
/// `line_end`, where the line holding it ends, once that line is whole. A miss moves
/// `*searched` on, so text already looked through is not scanned again.
pub fn find_after(
    received: &[u8],
    searched: &mut usize,
    needle: &[u8],
    line_end: bool,
) -> Option<usize> {
    let Some(at) = memchr::memmem::find(&received[*searched..], needle) else {
        *searched = (*searched).max(received.len().saturating_sub(needle.len()));
        return None;
    };
    let after = *searched + at + needle.len();
    if !line_end {
        return Some(after);
    }
    memchr::memchr(b'\n', &received[after..]).map(|newline| after + newline + 1)
}

/// An error saying what went wrong, quoting the end of what the server sent.
pub fn refused(what: &str, received: &[u8]) -> io::Error {
    let tail = &received[received.len().saturating_sub(200)..];
    io::Error::other(format!(
        "{what}; the server sent {:?}",
        String::from_utf8_lossy(tail)
    ))
}

/// How a TCP adapter frames payloads and leaves.
pub struct TcpWriting {
    /// Append one payload, framed as one message.
    pub frame: fn(&[u8], &mut Vec<u8>),
    /// Sent before a polite close.
    pub farewell: &'static [u8],
    /// The server copes with a reset, so a quick close may use one.
    pub may_reset: bool,
}

/// The sending half of a TCP adapter: frames payloads and leaves as `writing` says.
pub fn writer(write: OwnedWriteHalf, writing: TcpWriting) -> Box<dyn PayloadWriter> {
    Box::new(TcpWriter { write, writing })
}

/// Split a registered stream into a line reader (starting with the bytes registration
/// read past its confirmation) and a writer that frames and leaves as `writing` says.
pub fn session(stream: TcpStream, leftover: Vec<u8>, writing: TcpWriting) -> Session {
    let (read, write) = stream.into_split();
    let filled = leftover.len();
    Session {
        reader: Box::new(LineReader {
            read,
            buffer: read_buffer(leftover),
            filled,
            scanner: Scanner::this_run(),
        }),
        writer: writer(write, writing),
    }
}

/// A reader's buffer, holding what registration read past its reply. Empty when that
/// was nothing: it is allocated at the first read, so a connection that never reads
/// (the connect and idle scenarios) costs no 32 KiB of zeroing.
pub fn read_buffer(leftover: Vec<u8>) -> Vec<u8> {
    if leftover.is_empty() {
        return Vec::new();
    }
    let mut buffer = vec![0u8; READ_BUFFER_BYTES.max(leftover.len())];
    buffer[..leftover.len()].copy_from_slice(&leftover);
    buffer
}

/// Reads lines and scans whole ones for payloads; a partial last line waits for more.
struct LineReader {
    read: OwnedReadHalf,
    /// Empty until the first read (see [`read_buffer`]).
    buffer: Vec<u8>,
    filled: usize,
    scanner: &'static Scanner,
}

impl DeliveryReader for LineReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<Payload>) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            if self.buffer.is_empty() {
                self.buffer = vec![0u8; READ_BUFFER_BYTES];
            }
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

struct TcpWriter {
    write: OwnedWriteHalf,
    writing: TcpWriting,
}

impl PayloadWriter for TcpWriter {
    fn frame(&self, payload: &[u8], out: &mut Vec<u8>) {
        (self.writing.frame)(payload, out);
    }

    fn send<'a>(&'a mut self, framed: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.write.write_all(framed).await })
    }

    fn close(mut self: Box<Self>, quick: bool) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if quick && self.writing.may_reset {
                // Linger 0 never blocks: the close sends a reset at once.
                let _ =
                    socket2::SockRef::from(self.write.as_ref()).set_linger(Some(Duration::ZERO));
                // Dropping a write half shuts it down first, which sends a FIN ahead of
                // the reset: one more syscall here and one more segment for both sides
                // (about a tenth of a bare C server's CPU per connect+register).
                // Forgotten, it closes with the read half (dropped already in every
                // quick close).
                self.write.forget();
                return;
            }
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = self.write.write_all(self.writing.farewell).await;
                let _ = self.write.shutdown().await;
            })
            .await;
        })
    }
}
