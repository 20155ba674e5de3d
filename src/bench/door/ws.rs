//! The WebSocket adapter, by hand over TCP: Switchboard's WebSocket door (the JSON
//! protocol at `/ws`, one object per text frame, registration as in [`super::json`])
//! and a plain WebSocket broadcast peer (no registration; a text frame from one client
//! goes to every other client).
//!
//! Written by hand rather than with a WebSocket library so the generator costs about
//! what its TCP adapters do: server frames are never masked, so a read is scanned for
//! payloads in place, frame by frame, with no copy and no message objects.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::json::{push_say, register_request, registration_outcome};
use super::tcp::{self, TcpWriting};
use super::{BoxFuture, DeliveryReader, Door, Session, READ_BUFFER_BYTES};
use crate::bench::payload::{Payload, Scanner};

/// Any key will do for a client that checks nothing of the answer but its status.
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// A server frame bigger than this is an error (the reader's buffer grows to hold one
/// whole frame: a history replay can be longer than a read).
const MAX_FRAME_BYTES: usize = 1 << 20;
/// A close frame with code 1000, masked with the zero key.
const CLOSE_FRAME: &[u8] = &[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8];

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;

/// The servers that speak WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsTarget {
    /// Switchboard's WebSocket door.
    Switchboard,
    /// A broadcast peer such as benches/peers/ws-broadcast.mjs.
    Broadcast,
}

/// The WebSocket adapter.
pub struct WsDoor {
    target: WsTarget,
}

impl WsDoor {
    pub fn new(target: WsTarget) -> Self {
        WsDoor { target }
    }

    fn path(&self) -> &'static str {
        match self.target {
            WsTarget::Switchboard => "/ws",
            WsTarget::Broadcast => "/",
        }
    }
}

/// Append one client frame (final, text) holding `payload`.
///
/// Masked with the zero key: RFC 6455 asks for a mask on every client frame and lets
/// the key be any 32 bits; browsers pick a fresh random one to foil proxy-cache
/// attacks, which a loopback bench need not. The server unmasks either way, so what it
/// is measured doing is the same.
fn push_client_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | OPCODE_TEXT);
    match payload.len() {
        length @ 0..=125 => out.push(0x80 | length as u8),
        length @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

/// The first complete server frame in `bytes`: its opcode, where its payload lies, and
/// where it ends; `None` until it has all arrived. Server frames are never masked.
fn server_frame(bytes: &[u8]) -> io::Result<Option<(u8, std::ops::Range<usize>)>> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err(io::Error::other("the server sent a masked frame"));
    }
    let (header, length) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(length) => (4, u16::from_be_bytes([length[0], length[1]]) as usize),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10).and_then(|length| length.try_into().ok()) {
            Some(length) => (10, u64::from_be_bytes(length) as usize),
            None => return Ok(None),
        },
        length => (2, length as usize),
    };
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "the server sent a {length}-byte frame (most expected: {MAX_FRAME_BYTES})"
        )));
    }
    let end = header + length;
    Ok((bytes.len() >= end).then_some((first & 0x0f, header..end)))
}

/// Send the upgrade request; returns what arrived after the server's `101` answer.
async fn handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::new();
    let head_end = tcp::read_until_found(deadline, stream, &mut buffer, |buffer| {
        let end = memchr::memmem::find(buffer, b"\r\n\r\n")? + 4;
        Some(if buffer.starts_with(b"HTTP/1.1 101") {
            Ok(end)
        } else {
            Err(tcp::refused("WebSocket upgrade refused", &buffer[..end]))
        })
    })
    .await?;
    buffer.drain(..head_end);
    Ok(buffer)
}

/// Whether the frames from `*scanned` on settle registration: `Some(Ok(end))` with the
/// end of the answering frame, an error for a refusal or a close, `None` to read more.
fn registration_in_frames(buffer: &[u8], scanned: &mut usize) -> Option<io::Result<usize>> {
    loop {
        let (opcode, range) = match server_frame(&buffer[*scanned..]) {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(error) => return Some(Err(error)),
        };
        let end = *scanned + range.end;
        let payload = &buffer[*scanned + range.start..end];
        let outcome = match opcode {
            OPCODE_TEXT | OPCODE_BINARY => registration_outcome(payload),
            OPCODE_CLOSE => Some(Err(io::Error::other(format!(
                "registration failed (closed: {})",
                String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
            )))),
            _ => None,
        };
        *scanned = end;
        if let Some(outcome) = outcome {
            return Some(outcome.map(|()| end));
        }
    }
}

impl Door for WsDoor {
    fn name(&self) -> &'static str {
        match self.target {
            WsTarget::Switchboard => "ws",
            WsTarget::Broadcast => "ws-broadcast",
        }
    }

    fn echoes(&self) -> bool {
        self.target == WsTarget::Switchboard
    }

    fn register<'a>(
        &'a self,
        mut stream: TcpStream,
        addr: SocketAddr,
        nick: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, io::Result<Session>> {
        Box::pin(async move {
            let mut buffer = handshake(&mut stream, addr, self.path(), deadline).await?;
            // A broadcast peer relays to a client from the moment its handshake is done.
            if self.target == WsTarget::Switchboard {
                let mut request = Vec::new();
                push_client_frame(register_request(nick).as_bytes(), &mut request);
                stream.write_all(&request).await?;
                let mut scanned = 0;
                let confirmed =
                    tcp::read_until_found(deadline, &mut stream, &mut buffer, |buffer| {
                        registration_in_frames(buffer, &mut scanned)
                    })
                    .await?;
                buffer.drain(..confirmed);
            }
            let (read, write) = stream.into_split();
            let filled = buffer.len();
            let reader = FrameReader {
                read,
                buffer: tcp::read_buffer(buffer),
                filled,
                scanner: Scanner::this_run(),
            };
            let frame = match self.target {
                WsTarget::Switchboard => |payload: &[u8], out: &mut Vec<u8>| {
                    let mut say = Vec::with_capacity(payload.len() + 32);
                    push_say(payload, &mut say);
                    push_client_frame(&say, out);
                },
                WsTarget::Broadcast => push_client_frame,
            };
            Ok(Session {
                reader: Box::new(reader),
                writer: tcp::writer(
                    write,
                    TcpWriting {
                        frame,
                        farewell: CLOSE_FRAME,
                        may_reset: true,
                    },
                ),
            })
        })
    }
}

/// Reads server frames and scans each whole data frame for payloads; a partial last
/// frame waits for more.
struct FrameReader {
    read: OwnedReadHalf,
    /// Empty until the first read (see [`tcp::read_buffer`]).
    buffer: Vec<u8>,
    filled: usize,
    scanner: &'static Scanner,
}

impl FrameReader {
    /// Scan the whole frames at the front of the buffer, then keep only the rest.
    fn scan_frames(&mut self, out: &mut Vec<Payload>) -> io::Result<()> {
        let mut start = 0;
        while let Some((opcode, payload)) = server_frame(&self.buffer[start..self.filled])? {
            if matches!(opcode, OPCODE_TEXT | OPCODE_BINARY | OPCODE_CONTINUATION) {
                self.scanner.scan(
                    &self.buffer[start + payload.start..start + payload.end],
                    out,
                );
            }
            // Pings go unanswered: a run ends long before a server gives up on them.
            start += payload.end;
        }
        self.buffer.copy_within(start..self.filled, 0);
        self.filled -= start;
        Ok(())
    }
}

impl DeliveryReader for FrameReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<Payload>) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            if self.buffer.is_empty() {
                self.buffer = vec![0u8; READ_BUFFER_BYTES];
            }
            if self.filled == self.buffer.len() {
                // One frame longer than the buffer (it is at most MAX_FRAME_BYTES).
                let bigger = self.buffer.len() * 2;
                self.buffer.resize(bigger, 0);
            }
            let read = self.read.read(&mut self.buffer[self.filled..]).await?;
            if read == 0 {
                return Ok(0);
            }
            self.filled += read;
            self.scan_frames(out)?;
            Ok(read)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::web::frame::{encode_frame, FrameReader as ServerReader, WsFrame};

    #[test]
    fn client_frames_are_what_the_server_reads() {
        for length in [0, 1, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..length).map(|n| b'a' + (n % 26) as u8).collect();
            let mut framed = Vec::new();
            push_client_frame(&payload, &mut framed);
            let mut reader = ServerReader::new(1 << 20, 1 << 21, 16);
            let mut frames = Vec::new();
            reader.push(&framed, &mut frames).unwrap();
            assert_eq!(frames, [WsFrame::Text(payload.into())], "{length} bytes");
        }
        let mut frames = Vec::new();
        let mut reader = ServerReader::new(1024, 2048, 16);
        reader.push(CLOSE_FRAME, &mut frames).unwrap();
        assert!(matches!(
            frames[..],
            [WsFrame::Close {
                code: Some(1000),
                ..
            }]
        ));
    }

    #[test]
    fn server_frames_are_found_however_they_arrive() {
        let mut stream = Vec::new();
        for (opcode, payload) in [(0x1, &b"first"[..]), (0x9, b""), (0x1, &[b'x'; 300])] {
            stream.extend_from_slice(&encode_frame(opcode, payload));
        }
        let mut ends = Vec::new();
        let mut start = 0;
        while let Some((opcode, payload)) = server_frame(&stream[start..]).unwrap() {
            ends.push((opcode, payload.len()));
            start += payload.end;
        }
        assert_eq!(ends, [(0x1, 5), (0x9, 0), (0x1, 300)]);
        assert_eq!(start, stream.len());
        // Cut anywhere, the first frame is there only once whole.
        let first = encode_frame(0x1, b"first").len();
        for cut in 0..stream.len() {
            let found = server_frame(&stream[..cut]).unwrap();
            assert_eq!(found.is_some(), cut >= first, "cut at {cut}");
        }
        assert!(server_frame(&[0x81, 0x85, 0, 0, 0, 0]).is_err(), "masked");
    }

    #[test]
    fn registration_is_found_in_frames_however_they_arrive() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&encode_frame(0x1, br#"{"type":"notice","text":"hi"}"#));
        stream.extend_from_slice(&encode_frame(0x9, b""));
        let welcome = br#"{"type":"welcome","client":1,"nick":"b1"}"#;
        stream.extend_from_slice(&encode_frame(0x1, welcome));
        let answer = encode_frame(0x1, br#"{"type":"ok","id":"register"}"#);
        stream.extend_from_slice(&answer);
        let answered_at = stream.len();
        stream.extend_from_slice(&encode_frame(0x1, br#"{"type":"joined"}"#));
        for cut in 0..=stream.len() {
            let mut scanned = 0;
            let mut found = registration_in_frames(&stream[..cut], &mut scanned);
            if found.is_none() {
                found = registration_in_frames(&stream, &mut scanned);
            }
            assert_eq!(found.unwrap().unwrap(), answered_at, "cut at {cut}");
        }
        let refused = encode_frame(0x8, b"\x03\xe9server shutting down");
        assert!(registration_in_frames(&refused[..3], &mut 0).is_none());
        let error = registration_in_frames(&refused, &mut 0)
            .unwrap()
            .unwrap_err();
        assert!(
            error.to_string().contains("server shutting down"),
            "{error}"
        );
    }
}
