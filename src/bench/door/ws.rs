//! The WebSocket adapter, over tokio-tungstenite: Switchboard's WebSocket door (the
//! JSON protocol at `/ws`, one object per text frame, registration as in [`super::json`])
//! and a plain WebSocket broadcast peer (no registration; a text frame from one client
//! goes to every other client).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::json::{push_say, register_request, registration_outcome};
use super::{
    BoxFuture, DeliveryReader, Door, PayloadWriter, Session, CLOSE_TIMEOUT, READ_BUFFER_BYTES,
};
use crate::bench::payload::{Payload, Scanner};

/// Ends each message in a framed batch. Neither kind of message can contain it: the
/// JSON escapes newlines, and bench payloads have none.
const MESSAGE_END: u8 = b'\n';
/// Messages are gathered up to this much before tungstenite writes them; a batch is
/// written at once anyway when it is flushed.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

type WsStream = WebSocketStream<TcpStream>;

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

    fn url(&self, addr: SocketAddr) -> String {
        match self.target {
            WsTarget::Switchboard => format!("ws://{addr}/ws"),
            WsTarget::Broadcast => format!("ws://{addr}/"),
        }
    }
}

/// tungstenite's buffers sized like the TCP adapters' (its defaults, 128 KiB each and
/// the read buffer allocated up front, would cost a thousand clients 256 MiB).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
}

fn ws_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        other => io::Error::other(other),
    }
}

/// Register `nick` with Switchboard's JSON protocol and wait for the server's answer.
async fn register(socket: &mut WsStream, nick: &str, deadline: Instant) -> io::Result<()> {
    socket
        .send(Message::text(register_request(nick)))
        .await
        .map_err(ws_error)?;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(io::Error::other("registration timed out")),
            Ok(None) => return Err(io::Error::other("registration failed (connection closed)")),
            Ok(Some(message)) => message.map_err(ws_error)?,
        };
        let outcome = match &message {
            Message::Text(text) => registration_outcome(text.as_bytes()),
            Message::Binary(data) => registration_outcome(data),
            Message::Close(frame) => Some(Err(io::Error::other(format!(
                "registration failed (closed: {})",
                frame
                    .as_ref()
                    .map_or("no reason".to_string(), |frame| frame.reason.to_string())
            )))),
            _ => None,
        };
        if let Some(outcome) = outcome {
            return outcome;
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
        stream: TcpStream,
        addr: SocketAddr,
        nick: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, io::Result<Session>> {
        Box::pin(async move {
            let socket_fd = stream.as_raw_fd();
            let handshake =
                tokio_tungstenite::client_async_with_config(self.url(addr), stream, Some(config()));
            let (mut socket, _response) = tokio::time::timeout_at(deadline, handshake)
                .await
                .map_err(|_| io::Error::other("WebSocket handshake timed out"))?
                .map_err(ws_error)?;
            // A broadcast peer relays to a client from the moment its handshake is done.
            if self.target == WsTarget::Switchboard {
                register(&mut socket, nick, deadline).await?;
            }
            let (sink, stream) = socket.split();
            Ok(Session {
                reader: Box::new(WsReader {
                    stream,
                    scanner: Scanner::default(),
                    closed: false,
                }),
                writer: Box::new(WsWriter {
                    sink,
                    target: self.target,
                    socket_fd,
                }),
            })
        })
    }
}

/// Reads frames and scans each whole message for payloads.
struct WsReader {
    stream: SplitStream<WsStream>,
    scanner: Scanner,
    /// The connection ended (or failed) while a batch was being taken.
    closed: bool,
}

impl WsReader {
    /// Scan one message; its length, or `None` once the connection is over.
    fn take(
        &mut self,
        message: Option<Result<Message, WsError>>,
        out: &mut Vec<Payload>,
    ) -> io::Result<Option<usize>> {
        match message {
            None | Some(Ok(Message::Close(_))) => {
                self.closed = true;
                Ok(None)
            }
            Some(Err(error)) => {
                self.closed = true;
                Err(ws_error(error))
            }
            Some(Ok(Message::Text(text))) => {
                self.scanner.scan(text.as_bytes(), out);
                Ok(Some(text.len()))
            }
            Some(Ok(Message::Binary(data))) => {
                self.scanner.scan(&data, out);
                Ok(Some(data.len()))
            }
            // tungstenite answers pings itself.
            Some(Ok(other)) => Ok(Some(other.len())),
        }
    }
}

impl DeliveryReader for WsReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<Payload>) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            if self.closed {
                return Ok(0);
            }
            let first = self.stream.next().await;
            let Some(mut read) = self.take(first, out)? else {
                return Ok(0);
            };
            // Take what has already arrived too, as a TCP read would: the scenario then
            // handles many deliveries per wake-up, not one per frame.
            while read < READ_BUFFER_BYTES {
                let Some(message) = self.stream.next().now_or_never() else {
                    break;
                };
                match self.take(message, out) {
                    Ok(Some(length)) => read += length,
                    // Reported by the next call, after this batch is counted.
                    Ok(None) | Err(_) => break,
                }
            }
            // Never 0 for a message, even an empty one: 0 means closed.
            Ok(read.max(1))
        })
    }
}

struct WsWriter {
    sink: SplitSink<WsStream, Message>,
    target: WsTarget,
    /// The TCP socket under the WebSocket, to reset it on a quick close.
    socket_fd: RawFd,
}

/// The messages of a framed batch, one per text frame.
fn framed_messages(framed: &[u8]) -> impl Iterator<Item = &[u8]> {
    framed
        .split(|&byte| byte == MESSAGE_END)
        .filter(|message| !message.is_empty())
}

impl PayloadWriter for WsWriter {
    fn frame(&self, payload: &[u8], out: &mut Vec<u8>) {
        match self.target {
            WsTarget::Switchboard => push_say(payload, out),
            WsTarget::Broadcast => out.extend_from_slice(payload),
        }
        out.push(MESSAGE_END);
    }

    fn send<'a>(&'a mut self, framed: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            for message in framed_messages(framed) {
                let text = std::str::from_utf8(message)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                self.sink
                    .feed(Message::Text(Utf8Bytes::from(text)))
                    .await
                    .map_err(ws_error)?;
            }
            self.sink.flush().await.map_err(ws_error)
        })
    }

    fn close(mut self: Box<Self>, quick: bool) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if quick {
                // SAFETY: the sink shares ownership of the WebSocket stream, and with it
                // the TCP socket, so the descriptor stays open while `self` lives.
                let socket = unsafe { BorrowedFd::borrow_raw(self.socket_fd) };
                // Linger 0: once both halves are dropped, the close sends a reset.
                let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                return;
            }
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.sink.close()).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_batch_splits_back_into_its_messages() {
        let payloads: [&[u8]; 3] = [b"~b1:0:0:5~....", b"~b1:0:1:6~", b"quote \" and \\"];
        for target in [WsTarget::Switchboard, WsTarget::Broadcast] {
            let mut framed = Vec::new();
            let mut expected = Vec::new();
            for payload in payloads {
                let mut one = Vec::new();
                match target {
                    WsTarget::Switchboard => push_say(payload, &mut one),
                    WsTarget::Broadcast => one.extend_from_slice(payload),
                }
                framed.extend_from_slice(&one);
                framed.push(MESSAGE_END);
                expected.push(one);
            }
            let messages: Vec<&[u8]> = framed_messages(&framed).collect();
            assert_eq!(messages, expected, "{target:?}");
        }
        assert_eq!(framed_messages(b"").count(), 0);
    }
}
