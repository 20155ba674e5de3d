//! What front doors send the hub ([`Command`]) and how a connection is handed to it
//! ([`Connection`]); the chat vocabulary they carry is [`crate::chat`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Render;
use crate::chat::{ClientId, CloseReason, Reply, Request, Tag};
use crate::outbox::Outbox;
use crate::text::NickError;

/// A front door's message to the hub.
pub enum Command {
    /// A new connection: the hub can reach it from now on (shutdown notices included).
    Connect(Box<Connection>),
    /// Choose the first nickname; answered on `reply` so the door knows which state it is in.
    Register {
        client: ClientId,
        nick: String,
        reply: oneshot::Sender<Result<(), NickError>>,
    },
    /// From now on render this client's events with `render` (a door whose clients
    /// negotiate how they are sent things, as IRC's capabilities). Only before it has
    /// registered: a client in rooms keeps its renderer.
    Render {
        client: ClientId,
        render: Arc<dyn Render>,
    },
    /// Anything a registered client asks for.
    Request {
        client: ClientId,
        tag: Option<Tag>,
        request: Request,
    },
    /// Door-rendered bytes for one client (help text, parse errors), queued through the
    /// hub so they keep their place among the client's other output.
    Deliver {
        client: ClientId,
        bytes: bytes::Bytes,
    },
    /// The connection is over (or going): remove the client, announce it, close its outbox.
    Disconnect {
        client: ClientId,
        reason: CloseReason,
    },
    /// Tell everyone, close every outbox, stop.
    Shutdown,
    /// From the history store's writer: every message handed to it up to and including
    /// `upto` (the hub's hand-off sequence) is committed; deliver them now.
    Persisted { upto: u64 },
    /// From the history store's writer: the messages up to `upto` could not be saved;
    /// they are not delivered and each sender gets an error naming `cause`.
    PersistFailed { upto: u64, cause: Arc<str> },
    /// From the history store's reader: the answer to a history query the hub passed on.
    HistoryAnswer {
        client: ClientId,
        tag: Option<Tag>,
        answer: Result<Reply, Arc<str>>,
    },
}

/// A connection as the hub sees it.
pub struct Connection {
    pub client: ClientId,
    pub peer: SocketAddr,
    /// Which front door it came through ("line", "json", "ws", ...).
    pub door: &'static str,
    pub outbox: Arc<Outbox>,
    pub render: Arc<dyn Render>,
}
