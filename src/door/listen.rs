//! The doors as data, and the one way in. [`listeners`] turns the config into the
//! list of listeners (`{kind, addr, tls}`); [`serve`] accepts on one of them, and every
//! connection on every door takes the same path: a connection slot first (or a
//! refusal, logged and counted), then the TLS handshake under its deadline, then the
//! door. So a handshake flood is held by the connection limits like any other.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::irc::IrcDoor;
use super::json::codec::JsonRender;
use super::json::JsonDoor;
use super::line::LineDoor;
use super::web::head_deadline::HeadDeadline;
use super::web::WebStream;
use super::{accept_loop, ConnectionSlots, PeerSlot, Refusal, Slot};
use crate::config::Config;
use crate::hub::{ErrorCode, Event, Render};
use crate::metrics::Metrics;
use crate::tls::TlsSettings;

/// Which door a listener leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorKind {
    /// Plain text lines (`door::line`).
    Line,
    /// JSON lines (`door::json`).
    Json,
    /// IRC (`door::irc`).
    Irc,
    /// HTTP: the page, `/ws`, `/healthz`, `/metrics` (`door::web`).
    Web,
}

/// One listener the server opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub kind: DoorKind,
    pub addr: SocketAddr,
    /// Connections are TLS-handshaken before the door sees them.
    pub tls: bool,
}

impl Listener {
    /// Its name in startup lines, logs and metrics.
    pub fn name(&self) -> &'static str {
        match (self.kind, self.tls) {
            (DoorKind::Line, false) => "line",
            (DoorKind::Line, true) => "line-tls",
            (DoorKind::Json, false) => "json",
            (DoorKind::Json, true) => "json-tls",
            (DoorKind::Irc, false) => "irc",
            (DoorKind::Irc, true) => "irc-tls",
            (DoorKind::Web, _) => "web",
        }
    }

    /// The flag that sets its address (named in bind errors).
    pub fn flag(&self) -> &'static str {
        match (self.kind, self.tls) {
            (DoorKind::Line, false) => "--line",
            (DoorKind::Line, true) => "--line-tls",
            (DoorKind::Json, false) => "--json",
            (DoorKind::Json, true) => "--json-tls",
            (DoorKind::Irc, false) => "--irc",
            (DoorKind::Irc, true) => "--irc-tls",
            (DoorKind::Web, _) => "--web",
        }
    }
}

/// The door list: every listener `config` asks for, in the order startup prints them.
/// The web door speaks TLS whenever a certificate is configured; the TLS-only stream
/// doors need one (the config refuses them without).
pub fn listeners(config: &Config) -> Vec<Listener> {
    let tls = config.tls.is_some();
    [
        (DoorKind::Line, config.line, false),
        (DoorKind::Json, config.json, false),
        (DoorKind::Line, config.line_tls, true),
        (DoorKind::Json, config.json_tls, true),
        (DoorKind::Irc, config.irc, false),
        (DoorKind::Irc, config.irc_tls, true),
        (DoorKind::Web, config.web, tls),
    ]
    .into_iter()
    .filter_map(|(kind, addr, tls)| {
        Some(Listener {
            kind,
            addr: addr?,
            tls,
        })
    })
    .collect()
}

/// Accepted web connections on their way to axum.
pub type WebQueue = mpsc::Sender<(Box<dyn WebStream>, SocketAddr)>;

/// Everything the accept path hands connections to, built once by the server.
pub struct Doors {
    pub line: Arc<LineDoor>,
    pub json: Arc<JsonDoor>,
    pub irc: Arc<IrcDoor>,
    /// `None` when the web door is off.
    pub web: Option<WebQueue>,
    pub slots: Arc<ConnectionSlots>,
    pub metrics: Metrics,
    pub tls: Option<TlsSettings>,
    pub handshake_timeout: Duration,
    /// Each HTTP request head must arrive whole within this.
    pub http_header_timeout: Duration,
}

/// How long a refusal's one line may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

impl Doors {
    fn acceptor(&self, listener: &Listener) -> Option<TlsAcceptor> {
        let tls = self.tls.as_ref().filter(|_| listener.tls)?;
        let config = match listener.kind {
            DoorKind::Web => tls.web.clone(),
            DoorKind::Line | DoorKind::Json | DoorKind::Irc => tls.streams.clone(),
        };
        Some(TlsAcceptor::from(config))
    }

    /// Turn a connection away: logged and counted once; told why in its door's words
    /// where it can read them (not before a TLS handshake: the close says it).
    fn refuse(
        &self,
        listener: &Listener,
        mut stream: TcpStream,
        peer: SocketAddr,
        refusal: Refusal,
        tracker: &TaskTracker,
    ) {
        let name = listener.name();
        tracing::info!(%peer, reason = refusal.as_str(), "{name}: refused: {refusal}");
        self.metrics.refused(name, refusal.as_str());
        if listener.tls {
            return;
        }
        let words = refusal_words(listener.kind, refusal);
        tracker.spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                let _ = stream.write_all(&words).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }

    /// Hand a connection that holds its slot to its door: a task of its own on the
    /// stream doors (awaiting that task's whole life, when called from a handshake's
    /// task), or the queue to axum on the web door.
    async fn enter<S>(
        self: Arc<Self>,
        kind: DoorKind,
        stream: S,
        peer: SocketAddr,
        slot: Slot,
        spawn_on: Option<&TaskTracker>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match kind {
            DoorKind::Line => {
                let peer_slot = PeerSlot::new(peer, Some(slot));
                let connection = super::line::drive(self.line.clone(), stream, peer_slot);
                match spawn_on {
                    Some(tracker) => drop(tracker.spawn(connection)),
                    None => connection.await,
                }
            }
            DoorKind::Json => {
                let peer_slot = PeerSlot::new(peer, Some(slot));
                let connection = super::json::drive(self.json.clone(), stream, peer_slot);
                match spawn_on {
                    Some(tracker) => drop(tracker.spawn(connection)),
                    None => connection.await,
                }
            }
            DoorKind::Irc => {
                let peer_slot = PeerSlot::new(peer, Some(slot));
                let connection = super::irc::drive(self.irc.clone(), stream, peer_slot);
                match spawn_on {
                    Some(tracker) => drop(tracker.spawn(connection)),
                    None => connection.await,
                }
            }
            DoorKind::Web => {
                let Some(queue) = &self.web else { return };
                // The slot lives in the stream: an upgraded WebSocket keeps it.
                let stream = Slotted {
                    stream,
                    _slot: slot,
                };
                let stream = HeadDeadline::new(stream, self.http_header_timeout);
                // Fails only once axum has stopped, which is at shutdown.
                let _ = queue.send((Box::new(stream), peer)).await;
            }
        }
    }
}

/// A refusal in the words of the door it was meant for.
fn refusal_words(kind: DoorKind, refusal: Refusal) -> Vec<u8> {
    match kind {
        DoorKind::Line => format!("error: {refusal}\n").into_bytes(),
        DoorKind::Json => {
            let event = Event::Error {
                tag: None,
                code: ErrorCode::BadRequest,
                text: refusal.to_string().into(),
                about: None,
            };
            JsonRender
                .render(&event)
                .map(|bytes| bytes.to_vec())
                .unwrap_or_default()
        }
        DoorKind::Irc => format!("ERROR :Closing link: {refusal}\r\n").into_bytes(),
        DoorKind::Web => {
            let body = format!("{refusal}\n");
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    }
}

/// Accept on `listener` until `shutdown`: slot, then handshake, then door, for every
/// connection. Each runs as a task on `tracker`.
pub async fn serve(
    spec: Listener,
    listener: TcpListener,
    doors: Arc<Doors>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let name = spec.name();
    let acceptor = doors.acceptor(&spec);
    let stop = shutdown.clone();
    accept_loop(name, listener, stop, |stream, peer| {
        let doors = doors.clone();
        let (tracker, shutdown, acceptor) = (tracker.clone(), shutdown.clone(), acceptor.clone());
        async move {
            let slot = match doors.slots.acquire(peer) {
                Ok(slot) => slot,
                Err(refusal) => return doors.refuse(&spec, stream, peer, refusal, &tracker),
            };
            let Some(acceptor) = acceptor else {
                // TCP keepalive and NODELAY come from the listener (`tune_listener`).
                return doors
                    .enter(spec.kind, stream, peer, slot, Some(&tracker))
                    .await;
            };
            // One task per handshake, so a slow one blocks nobody; it holds the slot
            // throughout, so a handshake flood is held by the connection limits.
            tracker.spawn(async move {
                let timeout = doors.handshake_timeout;
                let handshake = tokio::time::timeout(timeout, acceptor.accept(stream));
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = handshake => outcome,
                };
                let stream = match outcome {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "{name}: TLS handshake failed");
                        doors.metrics.refused(name, "tls_handshake_failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "{name}: TLS handshake not finished within {timeout:?}");
                        doors.metrics.refused(name, "tls_handshake_timeout");
                        return;
                    }
                };
                doors.clone().enter(spec.kind, stream, peer, slot, None).await;
            });
        }
    })
    .await;
}

/// A stream that holds its connection's slot, freed when the stream is dropped: a web
/// connection's slot goes wherever hyper takes the stream, into an upgraded WebSocket
/// too.
struct Slotted<S> {
    stream: S,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Slotted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slotted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listener_has_its_own_name_and_flag() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for kind in [DoorKind::Line, DoorKind::Json, DoorKind::Irc] {
            for tls in [false, true] {
                let listener = Listener { kind, addr, tls };
                assert!(seen.insert(listener.name()));
                assert_eq!(listener.flag(), format!("--{}", listener.name()));
            }
        }
        let web = Listener {
            kind: DoorKind::Web,
            addr,
            tls: true,
        };
        assert_eq!((web.name(), web.flag()), ("web", "--web"));
    }

    #[test]
    fn refusals_are_in_each_doors_words() {
        let refusal = Refusal::TooManyFromAddress { max: 2 };
        let line = String::from_utf8(refusal_words(DoorKind::Line, refusal)).unwrap();
        assert_eq!(line, format!("error: {refusal}\n"));
        let json: serde_json::Value =
            serde_json::from_slice(&refusal_words(DoorKind::Json, refusal)).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["text"], refusal.to_string());
        let web = String::from_utf8(refusal_words(DoorKind::Web, refusal)).unwrap();
        let (head, body) = web.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
