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

use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::json::{push_say, register_request, registration_outcome};
use super::tcp::{self, TcpWriting};
use super::{BoxFuture, DeliveryReader, Door, Registration, Session, Step, READ_BUFFER_BYTES};
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

/// The upgrade request for `path` at `addr`.
fn upgrade_request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Registration over WebSocket: the upgrade, then (for Switchboard) the JSON `nick`
/// request in a frame and its answer.
struct WsRegistration {
    stage: WsStage,
    /// Taken when sent.
    upgrade: Option<Vec<u8>>,
    /// The framed `nick` request; `None` for a peer that needs none.
    register: Option<Vec<u8>>,
}

enum WsStage {
    Upgrading,
    /// Frames from `scanned` on are looked through for the answer.
    Answering {
        scanned: usize,
    },
}

impl Registration for WsRegistration {
    fn step(&mut self, received: &[u8]) -> io::Result<Step> {
        if let Some(upgrade) = self.upgrade.take() {
            return Ok(Step::Send(upgrade));
        }
        match &mut self.stage {
            WsStage::Upgrading => {
                let Some(head) = memchr::memmem::find(received, b"\r\n\r\n") else {
                    return Ok(Step::Read);
                };
                let head_end = head + 4;
                if !received.starts_with(b"HTTP/1.1 101") {
                    return Err(tcp::refused(
                        "WebSocket upgrade refused",
                        &received[..head_end],
                    ));
                }
                // A broadcast peer relays to a client from the moment its handshake
                // is done.
                let Some(register) = self.register.take() else {
                    return Ok(Step::Registered(head_end));
                };
                self.stage = WsStage::Answering { scanned: head_end };
                Ok(Step::Send(register))
            }
            WsStage::Answering { scanned } => match registration_in_frames(received, scanned) {
                Some(outcome) => outcome.map(Step::Registered),
                None => Ok(Step::Read),
            },
        }
    }
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

    fn registration(&self, addr: SocketAddr, nick: &str) -> Box<dyn Registration> {
        let register = (self.target == WsTarget::Switchboard).then(|| {
            let mut framed = Vec::new();
            push_client_frame(register_request(nick).as_bytes(), &mut framed);
            framed
        });
        Box::new(WsRegistration {
            stage: WsStage::Upgrading,
            upgrade: Some(upgrade_request(addr, self.path())),
            register,
        })
    }

    fn writing(&self) -> TcpWriting {
        TcpWriting {
            frame: match self.target {
                WsTarget::Switchboard => |payload: &[u8], out: &mut Vec<u8>| {
                    let mut say = Vec::with_capacity(payload.len() + 32);
                    push_say(payload, &mut say);
                    push_client_frame(&say, out);
                },
                WsTarget::Broadcast => push_client_frame,
            },
            farewell: CLOSE_FRAME,
            may_reset: true,
        }
    }

    fn session(&self, stream: TcpStream, leftover: Vec<u8>) -> Session {
        let (read, write) = stream.into_split();
        let filled = leftover.len();
        let reader = FrameReader {
            read,
            buffer: tcp::read_buffer(leftover),
            filled,
            scanner: Scanner::this_run(),
        };
        Session {
            reader: Box::new(reader),
            writer: tcp::writer(write, self.writing()),
        }
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
    use crate::bench::door::testing::{assert_refused, assert_registers};
    use crate::door::web::frame::{encode_frame, FrameReader as ServerReader, WsFrame};

    #[test]
    fn client_frames_are_what_the_server_reads() {
        for length in [0, 1, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..length).map(|n| b'a' + (n % 26) as u8).collect();
            let mut framed = Vec::new();
            push_client_frame(&payload, &mut framed);
            let mut reader = ServerReader::new(1 << 20, 1 << 21, 16);
            let mut frames = Vec::<WsFrame>::new();
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

    #[test]
    fn registration_upgrades_then_registers_over_frames() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let head = &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"[..];
        let mut transcript = head.to_vec();
        transcript.extend_from_slice(&encode_frame(0x1, br#"{"type":"welcome","nick":"b1_0"}"#));
        transcript.extend_from_slice(&encode_frame(0x1, br#"{"type":"ok","id":"register"}"#));
        let end = transcript.len();
        transcript.extend_from_slice(&encode_frame(0x1, br#"{"type":"joined"}"#));
        let mut register = Vec::new();
        push_client_frame(register_request("b1_0").as_bytes(), &mut register);
        let switchboard = || WsDoor::new(WsTarget::Switchboard).registration(addr, "b1_0");
        let upgrade = upgrade_request(addr, "/ws");
        assert_registers(switchboard, &transcript, &[&upgrade, &register], end);
        // A broadcast peer's session starts right after the upgrade.
        let broadcast = || WsDoor::new(WsTarget::Broadcast).registration(addr, "b1_0");
        let upgrade = upgrade_request(addr, "/");
        assert_registers(broadcast, &transcript, &[&upgrade], head.len());
        let refusal = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
        assert_refused(switchboard, refusal, "WebSocket upgrade refused");
    }
}
