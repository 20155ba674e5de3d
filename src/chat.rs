//! The chat vocabulary every part of the server shares: client ids, messages and
//! their targets, history pages, requests, replies, events, error codes and the named
//! reasons a connection ends. A leaf: the store, the metrics and the doors import it
//! without importing the hub, and no wire format appears here.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Unique for the life of the process; assigned at connect, before a name is chosen.
pub type ClientId = u64;

/// A client-chosen request id (JSON's `id`), carried back on the reply or error.
pub type Tag = Arc<str>;

/// Structured payload a message may carry beside its text (device commands, telemetry).
pub type Data = Arc<serde_json::Value>;

/// A signed-in identity: an account's key ([`crate::text::nick_key`] of its name) and
/// its name as registered. Only the accounts service makes one, after checking a
/// password or a token, so a client holding one has proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub key: Arc<str>,
    pub name: Arc<str>,
}

/// Why a connection ended. Every connection ends with exactly one, logged once by the
/// task that owns the connection and counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// `/quit`, `end`, `/q`, or the JSON quit request.
    ClientQuit,
    /// The peer closed its side (EOF).
    PeerClosed,
    /// Reset or another I/O error on the socket.
    PeerReset,
    /// The server is shutting down.
    Shutdown,
    /// The client's outbound queue went over its byte bound.
    SlowConsumer,
    /// Flood control gave up on a client that kept flooding.
    Flood,
    /// A line or frame over the size cap (on doors where that ends the connection).
    LineTooLong,
    /// Input that cannot be made sense of (e.g. HTTP on the line port, or a WebSocket
    /// text frame that is not UTF-8).
    BadInput,
    /// A WebSocket frame that breaks the protocol (unmasked, reserved bits, bad opcode).
    ProtocolError,
    /// Never chose a name within the register timeout.
    RegisterTimeout,
    /// Nothing received within the idle timeout.
    IdleTimeout,
    /// Refused at accept: the global or per-address connection limit.
    ServerFull,
    /// The server password was wrong or missing (IRC's PASS).
    BadPassword,
    /// The account's owner signed in from another connection, which took the name.
    Replaced,
    /// The client logged out of its account (which ends the connection).
    LoggedOut,
    /// A server operator disconnected it.
    Killed,
    /// Its account was a device, and the device was removed (its token revoked).
    Revoked,
}

impl CloseReason {
    /// Stable snake_case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientQuit => "client_quit",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerReset => "peer_reset",
            CloseReason::Shutdown => "shutdown",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Flood => "flood",
            CloseReason::LineTooLong => "line_too_long",
            CloseReason::BadInput => "bad_input",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::RegisterTimeout => "register_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ServerFull => "server_full",
            CloseReason::BadPassword => "bad_password",
            CloseReason::Replaced => "replaced",
            CloseReason::LoggedOut => "logged_out",
            CloseReason::Killed => "killed",
            CloseReason::Revoked => "revoked",
        }
    }

    /// The client's side ended it in one of the ordinary ways (a reset is one: browsers
    /// closing a tab, phones changing networks), or the server is stopping. Logged at
    /// debug: at thousands of connections a second these lines were most of the log
    /// (and its write was a syscall per connection); the metrics count them by reason.
    pub fn is_routine(self) -> bool {
        matches!(
            self,
            CloseReason::ClientQuit
                | CloseReason::LoggedOut
                | CloseReason::PeerClosed
                | CloseReason::PeerReset
                | CloseReason::Shutdown
        )
    }

    /// Words for people: shown in leave notices.
    pub fn describe(self) -> &'static str {
        match self {
            CloseReason::ClientQuit => "quit",
            CloseReason::PeerClosed => "connection closed",
            CloseReason::PeerReset => "connection reset",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::Flood => "flooding",
            CloseReason::LineTooLong => "line too long",
            CloseReason::BadInput => "bad input",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::RegisterTimeout => "no name chosen in time",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::ServerFull => "server full",
            CloseReason::BadPassword => "wrong server password",
            CloseReason::Replaced => "signed in from elsewhere",
            CloseReason::LoggedOut => "logged out",
            CloseReason::Killed => "disconnected by a server operator",
            CloseReason::Revoked => "device removed",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// What a registered client can ask of the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Say something in a room (`None`: the client's current room).
    Say {
        room: Option<String>,
        text: String,
        data: Option<Data>,
        action: bool,
    },
    /// A private message to one nickname.
    Whisper {
        to: String,
        text: String,
        data: Option<Data>,
        action: bool,
    },
    /// A private message that must never draw an automatic reply (IRC's NOTICE: bots
    /// answering each other's away notices would loop), so no "is away" comes back.
    Notice {
        to: String,
        text: String,
    },
    /// Join a room; `key` opens one that has a key (`+k`), unless invited.
    Join {
        room: String,
        key: Option<String>,
    },
    /// Leave a room (`None`: the current room).
    Part {
        room: Option<String>,
        reason: Option<String>,
    },
    Nick {
        nick: String,
    },
    Rooms,
    /// The member list of a room just joined, as [`Request::Who`], or nothing at all
    /// if the client is not in it (its join was refused, and the refusal said so):
    /// IRC sends NAMES after every JOIN without waiting to hear how it went.
    JoinedNames {
        room: String,
    },
    /// Members of a room (`None`: the current room).
    Who {
        room: Option<String>,
    },
    Whois {
        nick: String,
    },
    /// Be marked away with this message (`None` or empty: back). Those who send a
    /// private message are told, and WHOIS says so.
    Away {
        message: Option<String>,
    },
    /// How many are here: named clients and rooms (IRC's LUSERS).
    Counts,
    /// Which of these nicknames are in use now (IRC's ISON and USERHOST; a bot's
    /// presence check). At most [`MAX_PRESENCE_NICKS`] are looked at.
    Present {
        nicks: Vec<String>,
    },
    /// A room's topic (`None`: the current room): asked for with no `text`, set with
    /// some (cleared with an empty one). Setting it needs membership.
    Topic {
        room: Option<String>,
        text: Option<String>,
    },
    Ping,
    Quit {
        reason: Option<String>,
    },
    /// A page of a room's history (`None`: the current room), oldest first: the last
    /// `limit` messages, or those with id below `before` and/or above `after` (with
    /// `after`, the first `limit` after it, or with `newest` the last `limit` after
    /// it, as IRC's `CHATHISTORY LATEST` asks). `limit` defaults to
    /// [`DEFAULT_HISTORY_LIMIT`] and is capped at [`MAX_HISTORY_LIMIT`].
    History {
        room: Option<String>,
        before: Option<HistoryBound>,
        after: Option<HistoryBound>,
        limit: Option<usize>,
        newest: bool,
    },
    /// The same for the private conversation between the client and nickname `with`.
    PrivateHistory {
        with: String,
        before: Option<HistoryBound>,
        after: Option<HistoryBound>,
        limit: Option<usize>,
        newest: bool,
    },
    /// Moderate a room (`None`: the current room): see [`Moderation`].
    Moderate {
        room: Option<String>,
        action: Moderation,
    },
    /// Disconnect `nick` (server operators only).
    Kill {
        nick: String,
        reason: Option<String>,
    },
    /// Ask `to` (a device, or a program on the JSON door or a WebSocket) to do `name`
    /// with `args`; the answer (or a timeout) comes back as [`Reply::CommandResult`].
    Command {
        to: String,
        name: String,
        args: Option<Data>,
    },
    /// The answer to command `id` ([`Event::Command`]), from the client it was sent to.
    CommandResult {
        id: u64,
        ok: bool,
        result: Option<Data>,
        error: Option<String>,
    },
}

/// The longest command name, in bytes.
pub const MAX_COMMAND_NAME_BYTES: usize = 64;

/// What a room's owner, its operators or a server operator can do to it. A `target`
/// is a nickname (its account if it is signed in, else its address), `account:NAME`,
/// or an address mask (`203.0.113.7`, `203.0.113.0/24`, `203.0.113.*`, `2001:db8::/48`).
#[derive(Debug, Clone, PartialEq)]
pub enum Moderation {
    /// Put `nick` out of the room (it may come back).
    Kick {
        nick: String,
        reason: Option<String>,
    },
    /// Keep `target` out of the room (those present are put out), for `duration` or
    /// until unbanned.
    Ban {
        target: String,
        duration: Option<std::time::Duration>,
        reason: Option<String>,
    },
    Unban {
        target: String,
    },
    /// `target` may stay but not speak.
    Mute {
        target: String,
        duration: Option<std::time::Duration>,
        reason: Option<String>,
    },
    Unmute {
        target: String,
    },
    /// Make `nick` (an account) one of the room's operators: owner only.
    Op {
        nick: String,
    },
    Deop {
        nick: String,
    },
    /// Let `nick` into an invite-only room.
    Invite {
        nick: String,
    },
    /// Change who may join, speak and set the topic; `None` leaves that setting as it
    /// is. `key`: `Some(Some(k))` sets the room's key (`+k`), `Some(None)` takes it
    /// off. `moderated` (`+m`): only the owner and operators speak. `topic_locked`
    /// (`+t`): only they set the topic.
    Mode {
        invite_only: Option<bool>,
        registered_only: Option<bool>,
        key: Option<Option<String>>,
        moderated: Option<bool>,
        topic_locked: Option<bool>,
    },
    /// Show the room's owner, operators, bans, mutes and modes.
    Rules,
}

/// Nicknames one [`Request::Present`] looks at, at most (bounded output per request).
pub const MAX_PRESENCE_NICKS: usize = 64;

/// Messages in a history page when the request names no limit.
pub const DEFAULT_HISTORY_LIMIT: usize = 20;
/// Most messages in one history page: bounded output per request.
pub const MAX_HISTORY_LIMIT: usize = 500;

/// A chat message, room or private, shared by every recipient.
#[derive(Debug, Clone)]
pub struct ChatMessage {
    /// Per-room sequence for room messages, one sequence for all private ones; both
    /// increase monotonically and survive restarts when history is stored on disk.
    pub id: u64,
    pub time: SystemTime,
    pub target: Target,
    pub from: Arc<str>,
    pub from_client: ClientId,
    pub text: Arc<str>,
    pub data: Option<Data>,
    /// `/me`: an action rather than speech.
    pub action: bool,
    /// A notice (IRC's NOTICE): shown as said, but never answered by a program or an
    /// away message. Never also an action.
    pub notice: bool,
    /// The account the sender was signed in to (IRC's `account-tag`), if any.
    pub account: Option<Arc<str>>,
}

/// The key under `data` that marks a server's moderation notice (refused in what
/// clients send, so a notice carrying it is always the server's).
pub const MODERATION_DATA: &str = "moderation";

impl ChatMessage {
    /// When it was said, in whole milliseconds since the Unix epoch (how it is
    /// stored, shown and compared with a time bound).
    pub fn millis(&self) -> u64 {
        self.time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            })
    }

    /// The data people's screens show after the text: all of it, except on moderation
    /// notices, whose data is for programs (the text already says it all).
    pub fn shown_data(&self) -> Option<&Data> {
        self.data
            .as_ref()
            .filter(|data| !(self.from_client == 0 && data.get(MODERATION_DATA).is_some()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(Arc<str>),
    /// A private message to this nickname.
    Private(Arc<str>),
}

/// One end of a history page: a message id, or a time (milliseconds since the Unix
/// epoch, as messages' times are kept and shown), both exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryBound {
    Id(u64),
    Millis(u64),
}

impl HistoryBound {
    /// Whether `message` lies below this bound.
    pub fn is_above(self, message: &ChatMessage) -> bool {
        match self {
            HistoryBound::Id(id) => message.id < id,
            HistoryBound::Millis(ms) => message.millis() < ms,
        }
    }

    /// Whether `message` lies above this bound.
    pub fn is_below(self, message: &ChatMessage) -> bool {
        match self {
            HistoryBound::Id(id) => message.id > id,
            HistoryBound::Millis(ms) => message.millis() > ms,
        }
    }
}

/// Whose history a page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    /// A room, by its display name.
    Room(Arc<str>),
    /// The private conversation between the asking client and this nickname.
    Private(Arc<str>),
    /// Private messages kept for an account while it was offline, from anyone,
    /// delivered when it signs in.
    Offline,
}

/// Stored messages, oldest first: a replay on join or the answer to a history request.
/// Every message in it is history (already said), never live traffic.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub scope: HistoryScope,
    pub messages: Vec<Arc<ChatMessage>>,
    /// More stored messages lie beyond this page in the direction asked for (older
    /// ones for a "last N" or `before` page, newer ones for an `after` page).
    pub more: bool,
}

/// What a room is about, and who said so when. Stored with the room's settings, so
/// it outlasts the room's members and restarts (with `--memory`: while it has members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub text: Arc<str>,
    pub set_by: Arc<str>,
    pub time: SystemTime,
}

/// One room in a `/rooms` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: Arc<str>,
    pub members: usize,
}

#[derive(Debug, Clone)]
pub struct WhoisInfo {
    pub nick: Arc<str>,
    pub client: ClientId,
    pub door: &'static str,
    pub rooms: Vec<Arc<str>>,
    pub connected_for_secs: u64,
    /// Its away message, if it is away.
    pub away: Option<Arc<str>>,
    /// The account it is signed in to.
    pub account: Option<Arc<str>>,
    /// Where it connects from: shown to server operators only.
    pub address: Option<std::net::IpAddr>,
    /// It is a device (see `/device add`).
    pub device: bool,
}

/// Stable, machine-readable error codes (the JSON door sends them as strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NickInvalid,
    NickTaken,
    NoSuchNick,
    NoSuchRoom,
    RoomInvalid,
    NotInRoom,
    NotRegistered,
    AlreadyRegistered,
    UnknownCommand,
    BadRequest,
    LineTooLong,
    Flood,
    /// The history store could not save or read messages (disk full, I/O error, busy).
    HistoryUnavailable,
    /// The name is registered to an account: log in, or choose another.
    NickRegistered,
    /// Wrong name or password (which of the two is not said).
    AuthFailed,
    /// Too many failed logins from this address or for this account: wait.
    AuthLimited,
    /// Registering a name that already has an account.
    AccountExists,
    /// A new password that breaks the rules (too short, too long, control characters).
    BadPassword,
    /// A sign-in token that is unknown, revoked or expired.
    BadToken,
    /// Something only an account can do (private history, changing a password).
    NotSignedIn,
    /// The accounts database failed.
    AccountsUnavailable,
    /// A moderation request from someone who is not the room's owner or one of its
    /// operators (or a server operator), or an operator acting on someone above them.
    NotOperator,
    /// Banned from the room.
    Banned,
    /// Muted in the room: can be there, cannot speak.
    Muted,
    /// The room is invite-only and there is no invitation.
    InviteOnly,
    /// The room is for accounts only.
    RegisteredOnly,
    /// The room has a key (`+k`) and the join did not give it.
    BadKey,
    /// The command's target did not answer within `--command-timeout`, or left first.
    CommandTimeout,
    /// The command's target cannot answer commands (a line or IRC user).
    NotADevice,
    /// A device's datagram asked for something the UDP door does not carry.
    NotOverUdp,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NickInvalid => "nick_invalid",
            ErrorCode::NickTaken => "nick_taken",
            ErrorCode::NoSuchNick => "no_such_nick",
            ErrorCode::NoSuchRoom => "no_such_room",
            ErrorCode::RoomInvalid => "room_invalid",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::Flood => "flood",
            ErrorCode::HistoryUnavailable => "history_unavailable",
            ErrorCode::NickRegistered => "nick_registered",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthLimited => "auth_limited",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::BadPassword => "bad_password",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::NotSignedIn => "not_signed_in",
            ErrorCode::AccountsUnavailable => "accounts_unavailable",
            ErrorCode::NotOperator => "not_operator",
            ErrorCode::Banned => "banned",
            ErrorCode::Muted => "muted",
            ErrorCode::CommandTimeout => "command_timeout",
            ErrorCode::NotADevice => "not_a_device",
            ErrorCode::NotOverUdp => "not_over_udp",
            ErrorCode::InviteOnly => "invite_only",
            ErrorCode::RegisteredOnly => "registered_only",
            ErrorCode::BadKey => "bad_key",
        }
    }
}

/// A sign-in token on its way to its owner, shown this once (the server keeps only
/// its hash), and when it expires. A token is a password: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub secret: Arc<str>,
    pub expires: SystemTime,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("secret", &"<hidden>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// Answers to one client's request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The request was done; nothing more to say (JSON acknowledges it).
    Done,
    Rooms(Vec<RoomSummary>),
    Who {
        room: Arc<str>,
        members: Vec<Arc<str>>,
        /// Those of `members` that are devices.
        devices: Vec<Arc<str>>,
        /// Those of `members` that are away (sorted like `members`).
        away: Vec<Arc<str>>,
        /// Those of `members` that own or operate the room (sorted like `members`);
        /// IRC shows them with `@`.
        operators: Vec<Arc<str>>,
    },
    Whois(WhoisInfo),
    /// The answer to [`Request::Counts`].
    Counts {
        users: usize,
        rooms: usize,
    },
    /// The answer to [`Request::Away`]: whether the client is now marked away.
    Away {
        away: bool,
    },
    /// The answer to [`Request::Present`]: those in use, as their owners spell them,
    /// in the order asked.
    Present(Vec<Arc<str>>),
    /// A room's topic: the answer to [`Request::Topic`] without text, and what a
    /// joiner is told of a room that has one.
    Topic {
        room: Arc<str>,
        topic: Option<Arc<Topic>>,
    },
    Pong,
    /// The answer to [`Request::History`] or [`Request::PrivateHistory`].
    History(Arc<HistoryPage>),
    /// Signed in to `account` (`created`: just registered). `token`: a sign-in token
    /// asked for (the web page's "remember me"), shown this once, and when it expires.
    SignedIn {
        account: Arc<str>,
        created: bool,
        token: Option<IssuedToken>,
    },
    /// The account's password was changed (its sign-in tokens no longer work).
    PasswordChanged,
    /// The account was deleted; the name is now anyone's.
    AccountDropped {
        account: Arc<str>,
    },
    /// A private message to an account that is offline was kept for its next login.
    KeptFor {
        nick: Arc<str>,
    },
    /// The answer to [`Moderation::Rules`].
    Rules(Arc<RulesView>),
    /// What a command came to: the target's answer, in the sender's words. A command
    /// nobody answered in time is an [`ErrorCode::CommandTimeout`] instead.
    CommandResult(Arc<CommandOutcome>),
    /// A device was added: its token, shown this once (only its hash is kept).
    DeviceAdded {
        name: Arc<str>,
        token: IssuedToken,
    },
    /// A device was removed: its token no longer works and its sessions were closed.
    DeviceRemoved {
        name: Arc<str>,
    },
    /// The devices the client's account owns.
    Devices(Vec<Arc<str>>),
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// Who answered (the command's target).
    pub from: Arc<str>,
    pub name: Arc<str>,
    pub ok: bool,
    pub result: Option<Data>,
    /// Why it failed, in the target's words (with `ok: false`).
    pub error: Option<Arc<str>>,
}

/// A room's moderation as its members may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesView {
    pub room: Arc<str>,
    pub owner: Option<Arc<str>>,
    pub operators: Vec<Arc<str>>,
    pub invite_only: bool,
    pub registered_only: bool,
    /// A join needs a key (`+k`).
    pub has_key: bool,
    /// The key itself: only in the view an operator of the room is given.
    pub key: Option<Arc<str>>,
    /// Only the owner and operators speak (`+m`).
    pub moderated: bool,
    /// Only the owner and operators set the topic (`+t`), as it stands: an owned room
    /// is locked unless its operators opened it.
    pub topic_locked: bool,
    pub bans: Vec<RestrictionView>,
    pub mutes: Vec<RestrictionView>,
}

/// One ban or mute.
#[derive(Debug, Clone, PartialEq)]
pub struct RestrictionView {
    /// `account:NAME` or an address mask.
    pub target: String,
    pub by: Arc<str>,
    pub reason: Option<Arc<str>>,
    /// `None`: until lifted.
    pub expires: Option<SystemTime>,
}

/// What the hub sends to clients. Rendered once per wire format for a broadcast.
#[derive(Debug, Clone)]
pub enum Event {
    /// To the client alone, right after it registered.
    Welcome {
        client: ClientId,
        nick: Arc<str>,
    },
    /// To the room, the joiner included.
    Joined {
        room: Arc<str>,
        nick: Arc<str>,
        client: ClientId,
        /// The account the joiner is signed in to (IRC's `extended-join`).
        account: Option<Arc<str>>,
    },
    /// To the room, the leaver included when it is still connected.
    Left {
        room: Arc<str>,
        nick: Arc<str>,
        client: ClientId,
        reason: Option<Arc<str>>,
        /// The moderator who put them out (a kick or a ban), if one did: IRC says
        /// that as a KICK, not a PART.
        removed_by: Option<Arc<str>>,
    },
    Message(Arc<ChatMessage>),
    /// To a client that just joined a room, right after its `Joined` and before any live
    /// message of that room: the room's last messages (`--replay N`), marked as history.
    Replay(Arc<HistoryPage>),
    /// To everyone who shares a room with the client, and the client.
    NickChanged {
        old: Arc<str>,
        new: Arc<str>,
        client: ClientId,
    },
    /// To everyone who shares a room with the client (not the client): it is away
    /// with `away` now, or back (`None`). Shown to IRC clients with `away-notify`.
    AwayChanged {
        nick: Arc<str>,
        client: ClientId,
        away: Option<Arc<str>>,
    },
    /// To whoever was invited: `by` invited them into `room` (past invite-only and the
    /// key, once). IRC has a command for it, so it is not just a notice.
    Invited {
        room: Arc<str>,
        by: Arc<str>,
    },
    /// To the sender of a private message whose recipient is away.
    IsAway {
        nick: Arc<str>,
        text: Arc<str>,
    },
    /// To the room, the setter included: its topic is now `text` (empty: cleared).
    TopicChanged {
        room: Arc<str>,
        nick: Arc<str>,
        text: Arc<str>,
    },
    /// A notice from the server itself (e.g. "server shutting down").
    Notice {
        text: Arc<str>,
    },
    /// The answer to one request.
    Reply {
        tag: Option<Tag>,
        reply: Reply,
    },
    Error {
        tag: Option<Tag>,
        code: ErrorCode,
        text: Arc<str>,
        /// The room or nick it is about, when there is one (IRC's numerics name it).
        about: Option<Arc<str>>,
    },
    /// To a command's target: do `name` with `args` and answer with
    /// [`Request::CommandResult`] carrying `id`.
    Command(Arc<CommandSent>),
}

/// A command as its target gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSent {
    /// The hub's id for it (unique while the server runs): the answer carries it back.
    pub id: u64,
    pub from: Arc<str>,
    pub name: Arc<str>,
    pub args: Option<Data>,
}
