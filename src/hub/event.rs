//! What front doors send the hub ([`Command`]) and how a connection is handed to it
//! ([`Connection`]); the chat vocabulary they carry is [`crate::chat`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Render;
use crate::chat::{Account, ChatMessage, ClientId, CloseReason, ErrorCode, Reply, Request, Tag};
use crate::outbox::Outbox;
use crate::text::NickError;

/// A line for one client with its name in the middle, written once the name is
/// known: see [`Command::DeliverAddressed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// What comes before the name (`:server 461 `).
    pub head: String,
    /// What comes after it, line end included.
    pub tail: String,
}

impl Addressed {
    /// The bytes for `recipient` (`*` while it has no name, as IRC writes it).
    pub fn write(&self, recipient: Option<&str>) -> bytes::Bytes {
        let name = recipient.unwrap_or("*");
        let mut line = String::with_capacity(self.head.len() + name.len() + self.tail.len());
        line.push_str(&self.head);
        line.push_str(name);
        line.push_str(&self.tail);
        line.into()
    }
}

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
    /// Signed in to `account` (the driver checked its password or token): the client
    /// takes the account's name, registering with it if it has none yet (another
    /// connection holding the name is closed as `replaced`), then gets
    /// [`Reply::SignedIn`] and, later, what was kept for it while it was away.
    /// `created`: the account was just registered under the client's own name.
    SignIn {
        client: ClientId,
        tag: Option<Tag>,
        account: Account,
        created: bool,
        token: Option<crate::chat::IssuedToken>,
        reply: oneshot::Sender<Result<(), NickError>>,
    },
    /// Who the client is now (the driver's account steps need it).
    Identify {
        client: ClientId,
        reply: oneshot::Sender<Identity>,
    },
    /// The client's account was deleted: its name is anyone's from now on.
    AccountDropped {
        client: ClientId,
        tag: Option<Tag>,
        account: Account,
        /// The devices it owned, deleted with it.
        devices: Vec<Account>,
    },
    /// The client's account added `device` (see `crate::accounts::Accounts::add_device`):
    /// its name is protected from now on; the client gets the token.
    DeviceAdded {
        client: ClientId,
        tag: Option<Tag>,
        device: Account,
        token: crate::chat::IssuedToken,
    },
    /// `device` was removed: its sessions are closed and its name is anyone's.
    DeviceRemoved {
        client: ClientId,
        tag: Option<Tag>,
        device: Account,
    },
    /// Command `id`'s time is up (a timer the hub started when it sent it).
    CommandExpired { id: u64 },
    /// An answer the driver has for the client (an account step's), queued through
    /// the hub so it keeps its place among the client's other output.
    Answer {
        client: ClientId,
        tag: Option<Tag>,
        answer: Result<Reply, (ErrorCode, Arc<str>)>,
    },
    /// What was kept for an account while it was offline, read from its mailbox for
    /// `client`. `delivered` tells the mailbox worker whether the client got it (it
    /// may have left, or signed in as someone else): only then is it deleted.
    Mailbox {
        client: ClientId,
        account: Account,
        messages: Result<Vec<ChatMessage>, String>,
        delivered: oneshot::Sender<bool>,
    },
    /// A private message to an offline account is kept (or could not be).
    Deposited {
        sender: ClientId,
        tag: Option<Tag>,
        message: Arc<ChatMessage>,
        result: Result<crate::accounts::Kept, String>,
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
    /// Door-rendered bytes that name their one reader (IRC numerics carry the
    /// recipient's nick): written by the hub, which knows the name at that moment
    /// (`None` before the client has one).
    DeliverAddressed { client: ClientId, write: Addressed },
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

/// Who a client is, as the hub knows it.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Its name, once it has one.
    pub nick: Option<Arc<str>>,
    /// The account it is signed in to.
    pub account: Option<Account>,
    /// That account is a server operator's.
    pub server_operator: bool,
    /// That account is a device's.
    pub device: bool,
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
