//! The chat hub: one task that owns every room, nickname and client record, turns
//! commands from front doors into events, and fans events out to bounded outboxes.
//!
//! The hub knows events, not bytes: each connection brings a [`Render`] for its wire
//! format, and a broadcast renders the event once per distinct format into the room's
//! open `RoomBatch` (the fan-out engine, `fanout.rs`); at the next flush each member
//! gets one cheap `Bytes` handle to everything its room said since the last one,
//! pushed onto its [`Outbox`]. The hub never awaits anything but its own inbox, so no
//! client can slow it down; a client whose outbox overflows is removed as a slow
//! consumer and everyone else carries on.
//!
//! History (`history`): with a stored history a message is handed to the store's
//! writer thread and fanned out only when it reports the batch committed
//! ([`Command::Persisted`]), so whatever anyone received survives a crash; with
//! `--memory` it is kept in RAM and fanned out at once. Joins replay the room's last
//! messages from an in-memory tail, never from disk.

mod commands;
mod devices;
mod event;
mod fanout;
pub(crate) mod history;
mod mailbox;
mod moderation;
mod persist;
mod rounds;
pub(crate) mod rules;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use crate::chat::*;
pub use crate::outbox::{FlushRound, Outbox, Push};
pub use event::*;

use self::fanout::{Member, Outgoing, RenderOnce, RoomBatch};
use self::history::{Delivery, History, PageRequest, Pending, Recorded};
use crate::store::{self, Retention, StoreError};
use crate::text::{
    fold_case, nick_key, normalize_room, sanitize_text, validate_nick, NickError, MAX_AWAY_CHARS,
    MAX_TOPIC_CHARS,
};

/// Turns hub events into one wire format. One instance per front door, shared by all
/// of that door's connections; a broadcast calls it once per event, not per recipient.
pub trait Render: Send + Sync + 'static {
    /// The bytes to send for `event`, or `None` when this format does not show it.
    fn render(&self, event: &Event) -> Option<Bytes>;

    /// The bytes for `event` sent to one client alone (a reply, an error, the
    /// welcome), named `recipient` once it has a name. Formats that address such
    /// lines to their reader (IRC's numerics carry the recipient's nick) say so here;
    /// events for many clients are rendered once with [`Render::render`].
    fn render_to(&self, event: &Event, recipient: Option<&str>) -> Option<Bytes> {
        let _ = recipient;
        self.render(event)
    }

    /// Whether a sender gets its own messages back. IRC clients without
    /// `echo-message` show what they typed themselves and would show it twice.
    fn echoes_own_messages(&self) -> bool {
        true
    }

    /// Whether a client sent things in this format can be sent a command and answer
    /// it (the JSON protocol can; lines for people and IRC cannot).
    fn carries_commands(&self) -> bool {
        false
    }
}

/// Renderers are told apart by identity; this names the trait in debug output.
impl std::fmt::Debug for dyn Render {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Render")
    }
}

/// See [`HubConfig::flush_interval`]: unnoticeable in a chat, and only reached when a
/// round of writes is slower than that.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// How long a room's joins and leaves may wait for a flush when nothing else is said:
/// a batch holding only presence notices is sealed this long after it opened, or at
/// once when a message (or anything that seals) comes. Nobody notices 25 ms on a join
/// notice, but a room's members are spared a write per join or leave: in a connect
/// storm each member's writes for the others' comings and goings cost more than its own
/// registration. The joiner gets its own notice at once (it is the sign that it is in).
pub const PRESENCE_DELAY: Duration = Duration::from_millis(25);

/// Settings the hub needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Every client joins this room once registered.
    pub default_room: String,
    /// Capacity of the hub's inbox (commands); front doors wait when it is full.
    pub inbox_capacity: usize,
    /// Messages replayed to a client joining a room (0: none).
    pub replay: usize,
    /// How much history is kept (also applied to what is served from memory).
    pub retention: Retention,
    /// Fan-out counters, bumped once per fan-out (not per recipient).
    pub metrics: crate::metrics::HubMetrics,
    /// Longest a flush waits for the previous round of writers (see `Hub::run`);
    /// zero wakes the writers after every batch of commands.
    pub flush_interval: Duration,
    /// Registered names are protected, private history is kept between accounts and
    /// messages to offline accounts wait in their mailbox. `None`: no accounts (every
    /// name is anyone's, and private messages are never kept).
    pub accounts: Option<crate::accounts::Accounts>,
    /// Accounts (by [`nick_key`]) that are server operators: they moderate every room,
    /// see addresses in `/whois` and may disconnect anyone.
    pub operators: std::collections::HashSet<String>,
    /// A command not answered within this is answered with `command_timeout`.
    pub command_timeout: Duration,
}

/// See [`HubConfig::command_timeout`].
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            default_room: "#general".into(),
            inbox_capacity: 8192,
            replay: 20,
            retention: Retention::default(),
            metrics: Default::default(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            accounts: None,
            operators: Default::default(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// Where the hub keeps history.
pub enum HistoryBackend {
    /// In RAM only, bounded; gone when the process ends (`--memory`).
    Memory,
    /// On disk: messages are delivered only once committed. `done` fires when the
    /// store's writer has committed everything and stopped, after the hub stops.
    Stored {
        store: Box<store::Store>,
        done: store::writer::DoneSignal,
    },
}

/// A cloneable handle front doors use to reach the hub.
#[derive(Clone)]
pub struct HubHandle {
    inbox: mpsc::Sender<Command>,
    next_client_id: Arc<AtomicU64>,
}

/// The hub has stopped (shutdown finished); the caller should close its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hub has stopped")]
pub struct HubGone;

impl HubHandle {
    /// A fresh, never reused client id.
    pub fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Send a command, waiting while the hub's inbox is full (backpressure on readers).
    pub async fn send(&self, command: Command) -> Result<(), HubGone> {
        self.inbox.send(command).await.map_err(|_| HubGone)
    }

    /// Register `nick` for `client`: `Ok` once it is the client's name.
    pub async fn register(
        &self,
        client: ClientId,
        nick: String,
    ) -> Result<Result<(), NickError>, HubGone> {
        self.ask(|reply| Command::Register {
            client,
            nick,
            reply,
        })
        .await
    }

    /// Send the command `make` builds around a reply channel, and wait for the answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, HubGone> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| HubGone)
    }

    /// Signed in to `account` (checked by the caller): see [`Command::SignIn`].
    pub async fn sign_in(
        &self,
        client: ClientId,
        tag: Option<Tag>,
        account: Account,
        created: bool,
        token: Option<crate::chat::IssuedToken>,
    ) -> Result<Result<(), NickError>, HubGone> {
        self.ask(|reply| Command::SignIn {
            client,
            tag,
            account,
            created,
            token,
            reply,
        })
        .await
    }

    /// Who `client` is now.
    pub async fn identify(&self, client: ClientId) -> Result<Identity, HubGone> {
        self.ask(|reply| Command::Identify { client, reply }).await
    }

    /// The connection is over or going: the hub announces it, frees the name and closes
    /// the outbox with `reason` (a no-op if it already forgot the client).
    pub async fn disconnect(&self, client: ClientId, reason: CloseReason) -> Result<(), HubGone> {
        self.send(Command::Disconnect { client, reason }).await
    }

    pub async fn request(
        &self,
        client: ClientId,
        tag: Option<Tag>,
        request: Request,
    ) -> Result<(), HubGone> {
        self.send(Command::Request {
            client,
            tag,
            request,
        })
        .await
    }
}

/// Start the hub task (and, with a stored history, the store's writer thread). It runs
/// until it has processed [`Command::Shutdown`] (or every handle is dropped).
pub fn spawn(
    config: HubConfig,
    history: HistoryBackend,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<HubHandle, StoreError> {
    let (inbox, commands) = mpsc::channel(config.inbox_capacity);
    let history = match history {
        HistoryBackend::Memory => History::new(
            None,
            store::Loaded::default(),
            config.replay,
            config.retention,
        ),
        HistoryBackend::Stored { mut store, done } => {
            let loaded = store.take_loaded();
            let sender = store.start(inbox.clone(), done, config.metrics.history.clone())?;
            History::new(Some(sender), loaded, config.replay, config.retention)
        }
    };
    let mut hub = Hub::new(config, history);
    hub.inbox = Some(inbox.downgrade());
    // Weak: the hub stops when every door's handle is gone, whatever the worker holds.
    hub.mail = hub
        .config
        .accounts
        .clone()
        .map(|accounts| mailbox::start(accounts, inbox.downgrade(), tracker));
    tracker.spawn(hub.run(commands));
    Ok(HubHandle {
        inbox,
        next_client_id: Arc::new(AtomicU64::new(1)),
    })
}

/// A hub with the default settings and history in memory: the front doors' unit tests.
#[cfg(test)]
pub(crate) fn spawn_in_memory(tracker: &tokio_util::task::TaskTracker) -> HubHandle {
    match spawn(HubConfig::default(), HistoryBackend::Memory, tracker) {
        Ok(handle) => handle,
        Err(error) => panic!("an in-memory hub cannot fail to start: {error}"),
    }
}

struct Client {
    nick: Option<Arc<str>>,
    door: &'static str,
    outbox: Arc<Outbox>,
    render: Arc<dyn Render>,
    /// The rooms it is in, in join order; the last one is the "current" room.
    rooms: Vec<Membership>,
    connected_at: Instant,
    /// Its away message while it is away.
    away: Option<Arc<str>>,
    /// The account it signed in to.
    account: Option<Account>,
    /// Where it connects from (bans by address; `/whois` for server operators).
    address: std::net::IpAddr,
    /// Signed in to a device's account (shown as a device; no default room).
    device: bool,
}

impl Client {
    fn in_room(&self, key: &str) -> bool {
        self.rooms.iter().any(|membership| membership.key == key)
    }

    /// The room a message without a room goes to: the one joined (or re-joined) last.
    fn current_room(&self) -> Option<&String> {
        self.rooms.last().map(|membership| &membership.key)
    }
}

/// A client's place in one room. The position makes a leave O(1) in a room of any size
/// (a scan made a leave storm in a room of N cost O(N²)); it costs nothing extra in
/// memory, as 32 bytes is the allocator's size class for a lone 24-byte key anyway.
struct Membership {
    /// The folded room name.
    key: String,
    /// Where the client is in the room's member list.
    position: usize,
}

/// A room with members. Its topic is kept with its rules (`Hub::rules`), as it is
/// stored with them.
struct Room {
    name: Arc<str>,
    members: Vec<Member>,
}

struct Hub {
    config: HubConfig,
    /// Boxed: a map grown for the largest crowd keeps its slots, and a slot holding a
    /// pointer costs a fraction of one holding the record.
    clients: HashMap<ClientId, Box<Client>>,
    /// Nickname key ([`nick_key`]: case and look-alikes folded) → owner.
    nicks: HashMap<String, ClientId>,
    /// Account key → the account's name: every registered name, which only its
    /// signed-in owner may use.
    registered: HashMap<String, Arc<str>>,
    /// The registered names that are devices: device key → its owner's account key.
    devices: HashMap<String, String>,
    /// Commands sent and not yet answered, by id.
    commands: HashMap<u64, devices::PendingCommand>,
    /// The id the next command gets.
    next_command: u64,
    /// The hub's own inbox, for the command timers (weak: they must not keep it alive).
    inbox: Option<mpsc::WeakSender<Command>>,
    /// The mailbox worker's queue (with accounts only).
    mail: Option<mpsc::Sender<mailbox::MailJob>>,
    /// Folded room name → its stored settings (owner, operators, bans, mutes, modes,
    /// key, topic), for every moderated room or room with a topic, with members or
    /// not. Read from the store at startup.
    rules: HashMap<String, rules::RoomRules>,
    /// Folded room name → room. A room exists while it has members.
    rooms: HashMap<String, Room>,
    /// Message ids, recent messages, messages waiting to be committed.
    history: History,
    /// Writers to wake at the next flush, and clients whose outbox overflowed.
    outgoing: Outgoing,
    /// One room's lines since the last flush, not yet pushed to its members.
    batch: Option<RoomBatch>,
    shutting_down: bool,
}

impl Hub {
    fn new(config: HubConfig, mut history: History) -> Self {
        let rules = history
            .take_loaded_rules()
            .into_iter()
            .filter_map(|(key, text)| match serde_json::from_str(&text) {
                Ok(rules) => Some((key, rules)),
                Err(error) => {
                    tracing::error!(room = %key, "a room's stored moderation rules are unreadable and ignored: {error}");
                    None
                }
            })
            .collect();
        let registered = config
            .accounts
            .as_ref()
            .map(|accounts| match accounts.registered() {
                Ok(names) => names
                    .into_iter()
                    .map(|(key, name)| (key, Arc::from(name)))
                    .collect(),
                Err(error) => {
                    tracing::error!("{error}; registered names are not protected until restart");
                    HashMap::new()
                }
            })
            .unwrap_or_default();
        let devices = config
            .accounts
            .as_ref()
            .map(|accounts| match accounts.device_owners() {
                Ok(keys) => keys,
                Err(error) => {
                    tracing::error!("{error}; devices are shown as people until restart");
                    Default::default()
                }
            })
            .unwrap_or_default();
        Hub {
            config,
            clients: HashMap::new(),
            nicks: HashMap::new(),
            registered,
            devices,
            commands: HashMap::new(),
            next_command: 1,
            inbox: None,
            mail: None,
            rules,
            rooms: HashMap::new(),
            history,
            outgoing: Outgoing::default(),
            batch: None,
            shutting_down: false,
        }
    }

    /// Render `event` once per wire format present in the room into the room's batch,
    /// which its members get at the next flush.
    fn broadcast(&mut self, key: &str, event: &Event) {
        if self.batch.as_ref().is_some_and(|batch| batch.key != key) {
            self.seal_batch();
        }
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let presence = matches!(event, Event::Joined { .. } | Event::Left { .. });
        let batch = self.batch.get_or_insert_with(|| {
            let mut batch = RoomBatch::open(key, room);
            if presence {
                batch.presence_until = Some(Instant::now() + PRESENCE_DELAY);
            }
            batch
        });
        if !presence {
            batch.presence_until = None;
        }
        let (delivered, full) = match Self::silent_sender(&self.clients, key, event) {
            Some(position) => {
                let member = &room.members[position];
                batch.append_skipping(event, position, member, &mut self.outgoing)
            }
            None => batch.append(event),
        };
        self.count_deliveries(event, delivered);
        if full {
            self.seal_batch();
        }
    }

    /// For a message in room `key` whose sender is a member that does not want its
    /// own messages back: the sender's position in the room.
    fn silent_sender(
        clients: &HashMap<ClientId, Box<Client>>,
        key: &str,
        event: &Event,
    ) -> Option<usize> {
        let Event::Message(message) = event else {
            return None;
        };
        let sender = clients.get(&message.from_client)?;
        if sender.render.echoes_own_messages() {
            return None;
        }
        sender
            .rooms
            .iter()
            .find(|membership| membership.key == key)
            .map(|membership| membership.position)
    }

    /// One metrics update per fan-out, never one per recipient.
    fn count_deliveries(&self, event: &Event, delivered: u64) {
        if delivered > 0 {
            self.config.metrics.deliveries.increment(delivered);
            if matches!(event, Event::Message(_)) {
                self.config.metrics.messages_out.increment(delivered);
            }
        }
    }

    fn send_to_many(&mut self, clients: &[ClientId], event: &Event) {
        // Rare (renames, shutdown) and usually aimed at room members: seal unasked.
        self.seal_batch();
        let mut rendered = RenderOnce::default();
        let mut delivered = 0;
        for id in clients {
            let Some(client) = self.clients.get(id) else {
                continue;
            };
            if let Some(bytes) = rendered.get(&client.render, event) {
                delivered += 1;
                self.outgoing.queue(*id, &client.outbox, bytes);
            }
        }
        self.count_deliveries(event, delivered);
    }

    fn send_to(&mut self, id: ClientId, event: &Event) {
        self.seal_for(id);
        self.send_direct(id, event);
    }

    /// Queue `event` for `id` without sealing the open batch first: only for a client
    /// that the open batch owes nothing (see `join`).
    fn send_direct(&mut self, id: ClientId, event: &Event) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        if let Some(bytes) = client.render.render_to(event, client.nick.as_deref()) {
            self.outgoing.queue(id, &client.outbox, bytes);
            self.count_deliveries(event, 1);
        }
    }

    fn reply(&mut self, id: ClientId, tag: Option<Tag>, reply: Reply) {
        self.send_to(id, &Event::Reply { tag, reply });
    }

    fn error(&mut self, id: ClientId, tag: Option<Tag>, code: ErrorCode, text: &str) {
        self.send_to(
            id,
            &Event::Error {
                tag,
                code,
                text: text.into(),
                about: None,
            },
        );
    }

    /// Tell `id` why its request was refused.
    fn refuse(&mut self, id: ClientId, tag: Option<Tag>, refusal: commands::Refusal) {
        self.send_to(
            id,
            &Event::Error {
                tag,
                code: refusal.code,
                text: refusal.text.into(),
                about: refusal.about,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    //! The hub driven directly, command by command, with its flush done by hand: what
    //! each client's outbox holds, and in how many buffers.

    use super::fanout::*;
    use super::rounds::WAKE_SLICE;
    use super::*;
    use crate::outbox::Take;
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    /// A wire format for tests: one short line per event, with a prefix that tells
    /// formats apart.
    struct Plain(&'static str);

    impl Render for Plain {
        fn render(&self, event: &Event) -> Option<Bytes> {
            let text = match event {
                Event::Message(message) => match &message.target {
                    Target::Room(room) => format!("{room} {}: {}", message.from, message.text),
                    Target::Private(_) => format!("private {}: {}", message.from, message.text),
                },
                Event::Joined { room, nick, .. } => format!("+{nick} {room}"),
                Event::Left { room, nick, .. } => format!("-{nick} {room}"),
                Event::NickChanged { old, new, .. } => format!("{old}={new}"),
                Event::TopicChanged { room, nick, text } => format!("{nick} topic {room}: {text}"),
                Event::IsAway { nick, text } => format!("{nick} away: {text}"),
                Event::Invited { room, by } => format!("{by} invites to {room}"),
                Event::Reply { .. } => "ok".into(),
                Event::Notice { text } => format!("notice {text}"),
                Event::Error { text, .. } => format!("error {text}"),
                Event::Command(command) => format!("command {} {}", command.id, command.name),
                Event::AwayChanged { nick, .. } => format!("{nick} away changed"),
                Event::Welcome { .. } | Event::Replay(_) => return None,
            };
            Some(format!("{}{text}\n", self.0).into())
        }
    }

    /// [`Plain`] for clients that do not get their own messages back (as IRC's).
    struct Quiet(Plain);

    impl Render for Quiet {
        fn render(&self, event: &Event) -> Option<Bytes> {
            self.0.render(event)
        }

        fn echoes_own_messages(&self) -> bool {
            false
        }
    }

    struct TestHub {
        hub: Hub,
        line: Arc<dyn Render>,
        json: Arc<dyn Render>,
        quiet: Arc<dyn Render>,
        outboxes: HashMap<ClientId, Arc<Outbox>>,
    }

    impl TestHub {
        fn new() -> Self {
            let config = HubConfig {
                default_room: "#lobby".into(),
                replay: 0,
                ..HubConfig::default()
            };
            let history = History::new(None, store::Loaded::default(), 0, config.retention);
            TestHub {
                hub: Hub::new(config, history),
                line: Arc::new(Plain("")),
                json: Arc::new(Plain("J ")),
                quiet: Arc::new(Quiet(Plain("Q "))),
                outboxes: HashMap::new(),
            }
        }

        /// Line clients 1, 2, ... with these nicks, their join notices flushed and taken.
        fn settled(nicks: &[&str]) -> Self {
            let mut test = TestHub::new();
            for (index, nick) in nicks.iter().enumerate() {
                test.client(index as ClientId + 1, nick, false);
            }
            test.flush();
            for index in 0..nicks.len() {
                test.take(index as ClientId + 1);
            }
            test
        }

        /// Connect and register `nick` (joining #lobby); `json` picks the second format.
        fn client(&mut self, id: ClientId, nick: &str, json: bool) {
            let render = if json { &self.json } else { &self.line };
            self.client_with(id, nick, render.clone());
        }

        /// Connect and register `nick` with the format that does not echo.
        fn quiet_client(&mut self, id: ClientId, nick: &str) {
            self.client_with(id, nick, self.quiet.clone());
        }

        fn client_with(&mut self, id: ClientId, nick: &str, render: Arc<dyn Render>) {
            let outbox = Arc::new(Outbox::new(1 << 20));
            self.hub.handle(Command::Connect(Box::new(Connection {
                client: id,
                peer: "127.0.0.1:1".parse().unwrap(),
                door: "test",
                outbox: outbox.clone(),
                render,
            })));
            let (reply, _answer) = oneshot::channel();
            self.hub.handle(Command::Register {
                client: id,
                nick: nick.into(),
                reply,
            });
            self.outboxes.insert(id, outbox);
        }

        fn request(&mut self, id: ClientId, request: Request) {
            self.hub.handle(Command::Request {
                client: id,
                tag: None,
                request,
            });
        }

        fn say(&mut self, id: ClientId, text: &str) {
            self.say_in(id, None, text);
        }

        fn say_in(&mut self, id: ClientId, room: Option<&str>, text: &str) {
            self.request(
                id,
                Request::Say {
                    room: room.map(Into::into),
                    text: text.into(),
                    data: None,
                    action: false,
                },
            );
        }

        /// `id` leaves with `/quit`.
        fn quit(&mut self, id: ClientId) {
            self.hub.handle(Command::Disconnect {
                client: id,
                reason: CloseReason::ClientQuit,
            });
        }

        fn flush(&mut self) {
            self.hub.seal_batches();
            self.hub.outgoing.wake.clear();
        }

        /// Every membership a client records is where its room lists it, and every
        /// room lists exactly the clients that record it.
        fn assert_memberships_consistent(&self) {
            let mut recorded = 0;
            for (&id, client) in &self.hub.clients {
                for membership in &client.rooms {
                    let room = &self.hub.rooms[&membership.key];
                    assert_eq!(
                        room.members[membership.position].client, id,
                        "client {id} in {}",
                        membership.key
                    );
                    recorded += 1;
                }
            }
            let listed: usize = self.hub.rooms.values().map(|room| room.members.len()).sum();
            assert_eq!(recorded, listed);
        }

        /// Everything queued for `id`: the buffers, as text.
        fn take(&self, id: ClientId) -> Vec<String> {
            let mut batch = VecDeque::new();
            let mut cx = Context::from_waker(Waker::noop());
            match self.outboxes[&id].poll_take(&mut cx, &mut batch) {
                Poll::Ready(Take::Data) | Poll::Ready(Take::Closed(_)) | Poll::Pending => {}
            }
            batch
                .iter()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .collect()
        }
    }

    #[test]
    fn a_rounds_room_lines_reach_each_member_as_one_buffer() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        for text in ["one", "two", "three"] {
            test.say(1, text);
        }
        // Nothing is pushed before the flush...
        assert!(test.take(2).is_empty());
        test.flush();
        // ...and then one buffer holds the whole round, in order.
        let expected = ["#lobby ann: one\n#lobby ann: two\n#lobby ann: three\n"];
        assert_eq!(test.take(1), expected);
        assert_eq!(test.take(2), expected);
    }

    #[test]
    fn mid_round_lines_reach_writers_still_to_come_and_the_rest_at_the_flush() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        // Bob's writer is waiting; a round wakes it, and it has not looked yet.
        assert!(test.take(2).is_empty());
        let round = Arc::new(FlushRound::default());
        test.outboxes[&2].wake_writer_in(&round);
        assert!(test.outboxes[&2].awaits_take() && !test.outboxes[&1].awaits_take());
        test.say(1, "one");
        test.say(1, "two");
        test.hub.share_batch();
        assert_eq!(test.take(2), ["#lobby ann: one\n#lobby ann: two\n"]);
        assert!(test.take(1).is_empty());
        test.say(1, "three");
        // Nothing new for a writer that has had its turn; nothing twice.
        test.hub.share_batch();
        assert!(test.take(2).is_empty());
        test.flush();
        assert_eq!(test.take(2).concat(), "#lobby ann: three\n");
        assert_eq!(
            test.take(1).concat(),
            "#lobby ann: one\n#lobby ann: two\n#lobby ann: three\n"
        );
    }

    #[test]
    fn a_round_wakes_its_writers_a_slice_at_a_time() {
        let mut test = TestHub::new();
        for id in 1..=3 {
            test.client(id, &format!("user{id}"), false);
        }
        test.flush();
        for id in 1..=3 {
            test.take(id);
            // Each writer now waits for output.
            assert!(test.take(id).is_empty());
        }
        test.say(1, "hello");
        test.hub.seal_batches();
        assert_eq!(test.hub.outgoing.wake.len(), 3);
        let round = Arc::new(FlushRound::default());
        test.hub.outgoing.wake_writers(&round, 2);
        assert_eq!(round.outstanding(), 2);
        assert_eq!(test.hub.outgoing.wake.len(), 1);
        // The writer not yet woken still has a take coming: mid-round lines join it.
        assert!(test.outboxes[&3].awaits_take());
        test.hub.outgoing.wake_writers(&round, usize::MAX);
        assert_eq!(round.outstanding(), 3);
        assert!(test.hub.outgoing.wake.is_empty());
    }

    /// Writers that never wait (always busy) are not counted in rounds; with more of
    /// them than one wake slice, the hub must still go on to the next slice and the seal
    /// by itself, with no further command to wake it.
    #[tokio::test]
    async fn a_round_of_uncounted_writers_still_reaches_everyone() {
        let tracker = tokio_util::task::TaskTracker::new();
        let config = HubConfig {
            replay: 0,
            // No help from the interval: the slices alone must get the round through.
            flush_interval: Duration::from_secs(60),
            ..HubConfig::default()
        };
        let handle = spawn(config, HistoryBackend::Memory, &tracker).unwrap();
        let render: Arc<dyn Render> = Arc::new(Plain(""));
        let members = WAKE_SLICE * 2 + 10;
        let mut outboxes = Vec::new();
        for n in 0..members {
            let client = handle.next_client_id();
            let outbox = Arc::new(Outbox::new(1 << 24));
            handle
                .send(Command::Connect(Box::new(Connection {
                    client,
                    peer: "127.0.0.1:1".parse().unwrap(),
                    door: "test",
                    outbox: outbox.clone(),
                    render: render.clone(),
                })))
                .await
                .unwrap();
            handle
                .register(client, format!("user{n}"))
                .await
                .unwrap()
                .unwrap();
            outboxes.push(outbox);
        }
        // Let the join notices settle; each writer takes them (so it is not waiting,
        // and no round counts it) and leaves a waker that counts its wake-ups.
        tokio::time::sleep(Duration::from_millis(200)).await;
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut woken = Vec::new();
        for outbox in &outboxes {
            let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let mut batch = VecDeque::new();
            let taken = outbox.poll_take(&mut Context::from_waker(&waker), &mut batch);
            assert_eq!(taken, Poll::Ready(Take::Data));
            woken.push(count);
        }
        handle
            .send(Command::Request {
                client: 1,
                tag: None,
                request: Request::Say {
                    room: None,
                    text: "hello".into(),
                    data: None,
                    action: false,
                },
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for (n, count) in woken.iter().enumerate() {
            while count.0.load(Ordering::SeqCst) == 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "member {n}'s writer was never woken for the line"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    #[test]
    fn joins_wait_for_the_next_message_or_their_delay_and_the_joiner_hears_at_once() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        test.client(3, "cat", false);
        // The joiner's own notice is queued at once; the others' waits.
        assert_eq!(test.take(3), ["+cat #lobby\n"]);
        let due = test
            .hub
            .presence_due_at(Instant::now())
            .expect("a batch of joins waits");
        assert!(due > Instant::now() && due <= Instant::now() + PRESENCE_DELAY);
        assert!(test.take(1).is_empty());
        // A message makes the batch due now, and carries the join ahead of it.
        test.say(1, "hi");
        assert_eq!(test.hub.presence_due_at(Instant::now()), None);
        assert!(test.hub.has_output());
        test.flush();
        assert_eq!(test.take(2), ["+cat #lobby\n#lobby ann: hi\n"]);
        assert_eq!(test.take(3), ["#lobby ann: hi\n"]);
    }

    #[test]
    fn a_join_never_overtakes_lines_owed_from_another_room() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        test.say(1, "in the lobby");
        // Bob is owed the lobby line when he joins a room nobody is in yet, and when
        // he joins one with people in it.
        test.request(
            2,
            Request::Join {
                room: "#new".into(),
                key: None,
            },
        );
        assert_eq!(test.take(2), ["#lobby ann: in the lobby\n", "+bob #new\n"]);
        test.request(
            1,
            Request::Join {
                room: "#busy".into(),
                key: None,
            },
        );
        test.say_in(1, Some("#lobby"), "again");
        test.request(
            2,
            Request::Join {
                room: "#other".into(),
                key: None,
            },
        );
        test.request(
            2,
            Request::Join {
                room: "#busy".into(),
                key: None,
            },
        );
        let owed = test.take(2).concat();
        assert_eq!(owed, "#lobby ann: again\n+bob #other\n+bob #busy\n");
    }

    /// A model of who should hear what, against the hub under random commands: says,
    /// joins and re-joins, parts, quits, newcomers, renames, mid-round shares, flushes
    /// and writers taking at random moments, in four rooms and two wire formats. Every
    /// client's whole output must be exactly the model's, in order, and every member's
    /// recorded place and batch offset must stay in step with its room after each step.
    #[test]
    fn random_commands_keep_every_clients_output_exactly_in_order() {
        const ROOMS: [&str; 4] = ["#lobby", "#a", "#b", "#c"];
        for seed in 1..=300u64 {
            // xorshift: deterministic, so a failing seed can be replayed.
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut random = move |below: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            let mut test = TestHub::new();
            // The model: each live client's nick, rooms (in join order) and owed lines.
            let mut nicks: HashMap<ClientId, String> = HashMap::new();
            let mut rooms: HashMap<ClientId, Vec<&str>> = HashMap::new();
            let mut owed: HashMap<ClientId, String> = HashMap::new();
            let mut received: HashMap<ClientId, String> = HashMap::new();
            fn tell(
                rooms: &HashMap<ClientId, Vec<&str>>,
                owed: &mut HashMap<ClientId, String>,
                room: &str,
                line: &str,
                skip: Option<ClientId>,
            ) {
                for (client, joined) in rooms {
                    if joined.contains(&room) && Some(*client) != skip {
                        owed.get_mut(client).unwrap().push_str(line);
                    }
                }
            }
            let mut next_id: ClientId = 1;
            let mut said = 0;
            for step in 0..205 {
                let mut live: Vec<ClientId> = rooms.keys().copied().collect();
                live.sort_unstable();
                let action = if step < 5 || live.is_empty() {
                    6
                } else {
                    random(10)
                };
                let client = live.get(random(live.len().max(1) as u64) as usize).copied();
                match (action, client) {
                    (0..=2, Some(c)) if !rooms[&c].is_empty() => {
                        let room = rooms[&c][random(rooms[&c].len() as u64) as usize];
                        said += 1;
                        test.say_in(c, Some(room), &format!("m{said}"));
                        let line = format!("{room} {}: m{said}\n", nicks[&c]);
                        let skip = (c % 5 == 0).then_some(c);
                        tell(&rooms, &mut owed, room, &line, skip);
                    }
                    (3, Some(c)) => {
                        let room = ROOMS[random(4) as usize];
                        test.request(
                            c,
                            Request::Join {
                                room: room.into(),
                                key: None,
                            },
                        );
                        let joined = rooms.get_mut(&c).unwrap();
                        if let Some(index) = joined.iter().position(|r| *r == room) {
                            let again = joined.remove(index);
                            joined.push(again);
                        } else {
                            joined.push(room);
                            tell(
                                &rooms,
                                &mut owed,
                                room,
                                &format!("+{} {room}\n", nicks[&c]),
                                None,
                            );
                        }
                    }
                    (4, Some(c)) if !rooms[&c].is_empty() => {
                        let room = rooms[&c][random(rooms[&c].len() as u64) as usize];
                        let part = Request::Part {
                            room: Some(room.into()),
                            reason: None,
                        };
                        test.request(c, part);
                        tell(
                            &rooms,
                            &mut owed,
                            room,
                            &format!("-{} {room}\n", nicks[&c]),
                            None,
                        );
                        rooms.get_mut(&c).unwrap().retain(|r| *r != room);
                    }
                    (5, Some(c)) => {
                        test.quit(c);
                        for room in rooms.remove(&c).unwrap() {
                            tell(
                                &rooms,
                                &mut owed,
                                room,
                                &format!("-{} {room}\n", nicks[&c]),
                                None,
                            );
                        }
                    }
                    (6, _) => {
                        let id = next_id;
                        next_id += 1;
                        let nick = format!("u{id}");
                        if id % 5 == 0 {
                            test.quiet_client(id, &nick);
                        } else {
                            test.client(id, &nick, id % 3 == 0);
                        }
                        owed.insert(id, String::new());
                        rooms.insert(id, Vec::new());
                        rooms.get_mut(&id).unwrap().push("#lobby");
                        tell(
                            &rooms,
                            &mut owed,
                            "#lobby",
                            &format!("+{nick} #lobby\n"),
                            None,
                        );
                        nicks.insert(id, nick);
                    }
                    (7, Some(c)) => {
                        let old = nicks[&c].clone();
                        let new = match old.strip_suffix('x') {
                            Some(shorter) => shorter.to_string(),
                            None => format!("{old}x"),
                        };
                        test.request(c, Request::Nick { nick: new.clone() });
                        let mut audience = vec![c];
                        for (other, joined) in &rooms {
                            if joined.iter().any(|room| rooms[&c].contains(room)) {
                                audience.push(*other);
                            }
                        }
                        audience.sort_unstable();
                        audience.dedup();
                        for listener in audience {
                            owed.get_mut(&listener)
                                .unwrap()
                                .push_str(&format!("{old}={new}\n"));
                        }
                        nicks.insert(c, new);
                    }
                    (8, _) => test.hub.share_batch(),
                    _ => test.flush(),
                }
                test.assert_memberships_consistent();
                if let Some(batch) = &test.hub.batch {
                    assert_eq!(batch.given.len(), test.hub.rooms[&batch.key].members.len());
                }
                let mut ids: Vec<ClientId> = test.outboxes.keys().copied().collect();
                ids.sort_unstable();
                for id in ids {
                    if random(3) == 0 {
                        let taken = test.take(id).concat();
                        received.entry(id).or_default().push_str(&taken);
                    }
                }
            }
            test.flush();
            for &id in test.outboxes.keys() {
                let taken = test.take(id).concat();
                received.entry(id).or_default().push_str(&taken);
            }
            for (id, expected) in &owed {
                // The JSON-format clients' lines carry a "J " prefix, the quiet ones' "Q ".
                let got: String = received
                    .get(id)
                    .map(String::as_str)
                    .unwrap_or_default()
                    .split_inclusive('\n')
                    .map(|line| {
                        let line = line.strip_prefix("J ").unwrap_or(line);
                        line.strip_prefix("Q ").unwrap_or(line)
                    })
                    .collect();
                assert_eq!(&got, expected, "seed {seed}, client {id}");
            }
        }
    }

    /// A spawned hub with the line test format, for tests of the run loop itself.
    /// Tests using it run with paused time: time moves only when every task waits on
    /// a timer, so `settle` lets the hub run without letting time pass.
    struct LiveHub {
        handle: HubHandle,
        render: Arc<dyn Render>,
        _tracker: tokio_util::task::TaskTracker,
    }

    impl LiveHub {
        fn spawn() -> Self {
            let tracker = tokio_util::task::TaskTracker::new();
            let config = HubConfig {
                replay: 0,
                ..HubConfig::default()
            };
            let handle = spawn(config, HistoryBackend::Memory, &tracker).unwrap();
            LiveHub {
                handle,
                render: Arc::new(Plain("")),
                _tracker: tracker,
            }
        }

        /// Connect and register `nick` (joining #general).
        async fn join(&self, nick: &str) -> (ClientId, Arc<Outbox>) {
            let client = self.handle.next_client_id();
            let outbox = Arc::new(Outbox::new(1 << 20));
            let connection = Connection {
                client,
                peer: "127.0.0.1:1".parse().unwrap(),
                door: "test",
                outbox: outbox.clone(),
                render: self.render.clone(),
            };
            self.handle
                .send(Command::Connect(Box::new(connection)))
                .await
                .unwrap();
            let registered = self.handle.register(client, nick.into()).await.unwrap();
            registered.unwrap();
            (client, outbox)
        }

        async fn say(&self, client: ClientId, text: &str) {
            let say = Request::Say {
                room: None,
                text: text.into(),
                data: None,
                action: false,
            };
            self.handle.request(client, None, say).await.unwrap();
        }

        /// Take what `outbox` holds, as its writer would (the writer is then waiting,
        /// so the next round's wake-up counts it).
        fn taken(outbox: &Outbox) -> String {
            let mut batch = VecDeque::new();
            let _ = outbox.poll_take(&mut Context::from_waker(Waker::noop()), &mut batch);
            batch.iter().map(|b| String::from_utf8_lossy(b)).collect()
        }

        /// Let the hub run without letting time move.
        async fn settle() {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// The run loop seals a batch of joins and leaves once its delay is up, with no
    /// command to wake it, and at once when a message comes.
    #[tokio::test(start_paused = true)]
    async fn the_hub_flushes_presence_after_its_delay_and_messages_at_once() {
        let hub = LiveHub::spawn();
        let taken = LiveHub::taken;
        let (ann, ann_box) = hub.join("ann").await;
        let (bob, bob_box) = hub.join("bob").await;
        tokio::time::sleep(PRESENCE_DELAY * 2).await;
        assert_eq!(taken(&ann_box), "+ann #general\n+bob #general\n");
        assert_eq!(taken(&bob_box), "+bob #general\n");

        let (_cat, cat_box) = hub.join("cat").await;
        let joined_at = Instant::now();
        LiveHub::settle().await;
        assert_eq!(taken(&cat_box), "+cat #general\n", "the joiner at once");
        assert_eq!(taken(&ann_box), "", "the others after the delay");
        tokio::time::sleep_until(joined_at + PRESENCE_DELAY - Duration::from_millis(1)).await;
        LiveHub::settle().await;
        assert_eq!(taken(&ann_box), "");
        tokio::time::sleep_until(joined_at + PRESENCE_DELAY).await;
        LiveHub::settle().await;
        assert_eq!(taken(&ann_box), "+cat #general\n");

        // A leave waits too, until a message comes: then both go at once, in order.
        hub.handle
            .disconnect(bob, CloseReason::ClientQuit)
            .await
            .unwrap();
        LiveHub::settle().await;
        assert_eq!(taken(&ann_box), "");
        let said_at = Instant::now();
        hub.say(ann, "hi").await;
        LiveHub::settle().await;
        assert_eq!(Instant::now(), said_at, "no time passed");
        assert_eq!(taken(&ann_box), "-bob #general\n#general ann: hi\n");
        assert_eq!(taken(&cat_box), "-bob #general\n#general ann: hi\n");
    }

    /// With a round held open by a writer that never takes, and a leave waiting for
    /// its delay, a message makes the round's own deadline (`--flush-interval`, the
    /// sooner) the one the hub waits for: the hub's one timer keeps the earlier.
    #[tokio::test(start_paused = true)]
    async fn a_held_round_still_ends_at_its_interval_while_presence_waits() {
        let hub = LiveHub::spawn();
        let taken = LiveHub::taken;
        let (_ann, ann_box) = hub.join("ann").await;
        let (bob, _bob_box) = hub.join("bob").await;
        let (cat, cat_box) = hub.join("cat").await;
        tokio::time::sleep(PRESENCE_DELAY * 2).await;
        taken(&cat_box);
        // Ann's writer waits (a take that finds nothing), so the next round counts
        // her, and she never takes again: the round stays outstanding.
        taken(&ann_box);
        assert_eq!(taken(&ann_box), "");

        hub.say(cat, "hi").await;
        let round_started = Instant::now();
        LiveHub::settle().await;
        assert_eq!(taken(&cat_box), "#general cat: hi\n");
        // Bob leaves: the notice waits for PRESENCE_DELAY...
        tokio::time::sleep(Duration::from_millis(1)).await;
        hub.handle
            .disconnect(bob, CloseReason::ClientQuit)
            .await
            .unwrap();
        LiveHub::settle().await;
        // ...and a message makes it due, but the round is still being written.
        tokio::time::sleep(Duration::from_millis(1)).await;
        hub.say(cat, "again").await;
        LiveHub::settle().await;
        assert_eq!(taken(&cat_box), "");
        // The round is overdue at the interval, before the leave's own deadline.
        let interval = DEFAULT_FLUSH_INTERVAL;
        assert!(interval + Duration::from_millis(2) < PRESENCE_DELAY);
        tokio::time::sleep_until(round_started + interval + Duration::from_millis(1)).await;
        LiveHub::settle().await;
        assert_eq!(
            taken(&cat_box),
            "-bob #general\n#general cat: again\n",
            "sealed when the held round was overdue"
        );
    }

    #[test]
    fn each_format_gets_its_own_rendering() {
        let mut test = TestHub::new();
        test.client(1, "ann", false);
        test.client(2, "jay", true);
        test.flush();
        // Ann's own join went to her at once; Jay's came with the flush.
        assert_eq!(test.take(1), ["+ann #lobby\n", "+jay #lobby\n"]);
        assert_eq!(test.take(2), ["J +jay #lobby\n"]);
        test.say(2, "hi");
        test.flush();
        assert_eq!(test.take(1), ["#lobby jay: hi\n"]);
        assert_eq!(test.take(2), ["J #lobby jay: hi\n"]);
    }

    #[test]
    fn a_sender_that_does_not_echo_gets_everything_but_its_own_messages() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        test.quiet_client(3, "irc");
        test.flush();
        for id in 1..=3 {
            test.take(id);
        }
        test.say(1, "one");
        test.say(3, "two");
        test.say(1, "three");
        test.say(3, "four");
        test.flush();
        // The others still get the round as one buffer...
        let all = "#lobby ann: one\n#lobby irc: two\n#lobby ann: three\n#lobby irc: four\n";
        assert_eq!(test.take(2), [all]);
        assert_eq!(test.take(1), [all]);
        // ...and the quiet sender gets the rest, in order, without its own lines.
        assert_eq!(
            test.take(3).concat(),
            "Q #lobby ann: one\nQ #lobby ann: three\n"
        );
        // Owed more than a copy's worth when it speaks: the owed lines are shared.
        let long = "x".repeat(LEAVER_COPY_LIMIT);
        test.say(1, &long);
        test.say(3, "five");
        test.flush();
        assert_eq!(test.take(3).concat(), format!("Q #lobby ann: {long}\n"));
        let both = format!("#lobby ann: {long}\n#lobby irc: five\n");
        assert_eq!(test.take(2).concat(), both);
        assert_eq!(test.take(1).concat(), both);
        // Its private messages are not echoed either; the recipient's are.
        test.request(
            3,
            Request::Whisper {
                to: "ann".into(),
                text: "psst".into(),
                data: None,
                action: false,
            },
        );
        test.request(
            1,
            Request::Whisper {
                to: "irc".into(),
                text: "hey".into(),
                data: None,
                action: false,
            },
        );
        test.flush();
        assert_eq!(
            test.take(1).concat(),
            "private irc: psst\nprivate ann: hey\n"
        );
        assert_eq!(test.take(3).concat(), "Q private ann: hey\n");
    }

    #[test]
    fn direct_output_to_a_member_keeps_its_place_among_room_lines() {
        let mut test = TestHub::new();
        test.client(1, "ann", false);
        test.client(2, "bob", false);
        test.client(3, "cat", false);
        test.flush();
        for id in 1..=3 {
            test.take(id);
        }
        test.say(1, "before");
        test.request(
            1,
            Request::Whisper {
                to: "bob".into(),
                text: "psst".into(),
                data: None,
                action: false,
            },
        );
        test.say(1, "after");
        test.hub.handle(Command::Deliver {
            client: 2,
            bytes: Bytes::from_static(b"door help\n"),
        });
        test.say(1, "last");
        test.flush();
        assert_eq!(
            test.take(2).concat(),
            "#lobby ann: before\nprivate ann: psst\n#lobby ann: after\ndoor help\n#lobby ann: last\n"
        );
        assert_eq!(
            test.take(3).concat(),
            "#lobby ann: before\n#lobby ann: after\n#lobby ann: last\n"
        );
    }

    #[test]
    fn an_away_client_s_correspondents_are_told_and_whois_says_so() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        let away = |message: Option<&str>| Request::Away {
            message: message.map(Into::into),
        };
        let whisper = |to: &str| Request::Whisper {
            to: to.into(),
            text: "psst".into(),
            data: None,
            action: false,
        };
        test.request(2, away(Some(" at lunch ")));
        test.request(1, whisper("bob"));
        test.flush();
        assert_eq!(test.take(2).concat(), "ok\nprivate ann: psst\n");
        // Ann shares #lobby with bob: told he is away (IRC's away-notify), then, writing
        // to him, why.
        assert_eq!(
            test.take(1).concat(),
            "bob away changed\nprivate ann: psst\nbob away: at lunch\n"
        );
        assert_eq!(test.hub.clients[&2].away.as_deref(), Some("at lunch"));
        // Too long: refused, still away with the old message.
        test.request(2, away(Some(&"z".repeat(MAX_AWAY_CHARS + 1))));
        test.flush();
        assert!(test
            .take(2)
            .concat()
            .contains("error the away message is longer"));
        assert_eq!(test.hub.clients[&2].away.as_deref(), Some("at lunch"));
        // Back (no message, or an empty one): told once, and not when writing to him.
        test.request(2, away(Some("  ")));
        test.request(1, whisper("bob"));
        test.flush();
        assert_eq!(
            test.take(1).concat(),
            "bob away changed\nprivate ann: psst\n"
        );
        assert!(test.hub.clients[&2].away.is_none());
    }

    #[test]
    fn a_topic_is_set_by_members_told_to_joiners_and_gone_with_the_room() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        let topic = |text: Option<&str>| Request::Topic {
            room: None,
            text: text.map(Into::into),
        };
        test.request(1, topic(None));
        test.request(1, topic(Some("  release\non Friday ")));
        test.flush();
        // Plain renders every reply as "ok": the query's answer, then the change, to
        // everyone in the room.
        let change = "ann topic #lobby: release\u{FFFD}on Friday\n";
        assert_eq!(test.take(1).concat(), format!("ok\n{change}"));
        assert_eq!(test.take(2).concat(), change);
        assert_eq!(
            test.hub
                .topic_of("#lobby")
                .as_ref()
                .map(|topic| &*topic.text),
            Some("release\u{FFFD}on Friday"),
            "trimmed, and the newline neutralised as in any message"
        );
        // A joiner is told the topic right after its own join.
        test.client(3, "cat", false);
        let joined = test.take(3).concat();
        assert_eq!(joined, "+cat #lobby\nok\n");
        // Too long, or from outside the room: refused, nothing changes.
        test.request(2, topic(Some(&"x".repeat(MAX_TOPIC_CHARS + 1))));
        test.request(
            3,
            Request::Topic {
                room: Some("#elsewhere".into()),
                text: Some("hi".into()),
            },
        );
        test.flush();
        assert!(test
            .take(2)
            .concat()
            .contains("error the topic is longer than"));
        assert!(test.take(3).concat().contains("error there is no room"));
        // Everyone leaves: without a store (--memory) the room and its topic are
        // gone, rules and all; a new room has none.
        for id in 1..=3 {
            test.quit(id);
        }
        test.flush();
        assert!(!test.hub.rules.contains_key("#lobby"));
        test.client(4, "dan", false);
        assert!(test.hub.topic_of("#lobby").is_none());
    }

    #[test]
    fn a_keyed_room_admits_its_key_and_the_invited_and_never_says_the_key() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        test.hub.rules.insert(
            "#vault".into(),
            rules::RoomRules {
                name: "#vault".into(),
                key: Some("Sesame".into()),
                ..rules::RoomRules::default()
            },
        );
        let join = |key: Option<&str>| Request::Join {
            room: "#Vault".into(),
            key: key.map(Into::into),
        };
        test.request(1, join(None));
        test.request(1, join(Some("sesame")));
        test.flush();
        let refused = test.take(1).concat();
        assert_eq!(
            refused,
            "error #Vault needs a key (+k): join it with the key\n\
             error that is not #Vault's key (+k)\n"
        );
        assert!(!refused.contains("Sesame"));
        test.request(1, join(Some("Sesame")));
        test.flush();
        assert!(test.take(1).concat().starts_with("+ann #Vault\n"));
        // A guest who is invited needs no key, once: the invitation is used up.
        test.hub
            .rules
            .get_mut("#vault")
            .unwrap()
            .invited_guests
            .push(2);
        test.request(2, join(None));
        test.flush();
        assert!(test.take(2).concat().starts_with("+bob #Vault\n"));
        assert!(test.hub.rules["#vault"].invited_guests.is_empty());
    }

    #[test]
    fn a_moderated_room_hears_only_its_moderators_and_an_open_topic_is_any_speakers() {
        let mut test = TestHub::settled(&["ann", "bob", "cat"]);
        // ann owns the room and cat operates it (accounts both); bob is a guest.
        let named = |name: &str| rules::Named {
            key: name.into(),
            name: name.into(),
        };
        for (id, name) in [(1, "ann"), (3, "cat")] {
            test.hub.clients.get_mut(&id).unwrap().account = Some(crate::chat::Account {
                key: name.into(),
                name: name.into(),
            });
        }
        test.hub.rules.insert(
            "#lobby".into(),
            rules::RoomRules {
                name: "#lobby".into(),
                owner: Some(named("ann")),
                operators: vec![named("cat")],
                ..rules::RoomRules::default()
            },
        );
        let mode = |moderated: Option<bool>, topic_locked: Option<bool>| Request::Moderate {
            room: None,
            action: crate::chat::Moderation::Mode {
                invite_only: None,
                registered_only: None,
                key: None,
                moderated,
                topic_locked,
            },
        };
        let topic = |text: &str| Request::Topic {
            room: None,
            text: Some(text.into()),
        };

        test.request(1, mode(Some(true), None));
        test.say(2, "may I?");
        test.say(3, "operators may");
        test.say(1, "and owners");
        test.flush();
        let heard = test.take(2).concat();
        assert!(
            heard.contains("#lobby ann: made the room moderated (only its operators speak)\n"),
            "{heard}"
        );
        assert!(
            heard.contains(
                "error #lobby is moderated (+m): only its owner and operators (or a server \
                 operator) may speak there\n"
            ),
            "{heard}"
        );
        assert!(!heard.contains("may I?"), "{heard}");
        assert!(heard.contains("#lobby cat: operators may\n"), "{heard}");
        assert!(heard.contains("#lobby ann: and owners\n"), "{heard}");
        assert!(test.hub.rules["#lobby"].moderated);

        // The topic is locked by default in an owned room (+t)...
        test.request(1, mode(Some(false), None));
        test.request(2, topic("bob's topic"));
        test.flush();
        let refused = test.take(2).concat();
        assert!(
            refused.contains("error only #lobby's owner and operators set its topic (+t)\n"),
            "{refused}"
        );
        // ...-t opens it to members who may speak, and +m closes it again for them...
        test.request(1, mode(None, Some(false)));
        test.request(2, topic("bob's topic"));
        test.flush();
        let opened = test.take(2).concat();
        assert!(
            opened.contains("#lobby ann: let members set the topic\n"),
            "{opened}"
        );
        assert!(
            opened.contains("bob topic #lobby: bob's topic\n"),
            "{opened}"
        );
        test.request(1, mode(Some(true), None));
        test.request(2, topic("again"));
        test.flush();
        assert!(test
            .take(2)
            .concat()
            .contains("error #lobby is moderated (+m)"));
        // ...and +t locks it again (the default: nothing kept for it).
        test.request(1, mode(Some(false), Some(true)));
        test.request(2, topic("again"));
        test.request(3, topic("cat's topic"));
        test.flush();
        let locked = test.take(2).concat();
        assert!(
            locked.contains(
                "#lobby ann: let everyone speak again and locked the topic (only operators \
                 set it)\n"
            ),
            "{locked}"
        );
        assert!(locked.contains("error only #lobby's owner and operators set its topic (+t)"));
        assert!(
            locked.contains("cat topic #lobby: cat's topic\n"),
            "{locked}"
        );
        assert_eq!(test.hub.rules["#lobby"].topic_lock, None);
        // A guest cannot change either mode.
        test.request(2, mode(None, Some(false)));
        test.flush();
        assert!(test
            .take(2)
            .concat()
            .contains("error only #lobby's owner and operators"));
    }

    #[test]
    fn joiners_and_leavers_get_exactly_the_lines_of_their_membership() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        test.say(1, "before cat");
        test.client(3, "cat", false);
        test.say(1, "with cat");
        test.quit(2);
        test.say(1, "without bob");
        test.flush();
        assert_eq!(
            test.take(3).concat(),
            "+cat #lobby\n#lobby ann: with cat\n-bob #lobby\n#lobby ann: without bob\n"
        );
        // The leaver got every line said while it was there, before its outbox closed.
        assert_eq!(
            test.take(2).concat(),
            "#lobby ann: before cat\n+cat #lobby\n#lobby ann: with cat\n"
        );
        assert_eq!(
            test.outboxes[&2].close_reason(),
            Some(CloseReason::ClientQuit)
        );
    }

    #[test]
    fn leaves_from_anywhere_in_a_room_keep_every_members_place() {
        let nicks = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let mut test = TestHub::settled(&nicks);
        for id in [2, 4, 6, 8] {
            test.request(
                id,
                Request::Join {
                    room: "#two".into(),
                    key: None,
                },
            );
        }
        test.assert_memberships_consistent();
        // From the front, the middle, the end; by part and by quit; mid-batch and not.
        let leaves: [(ClientId, bool); 6] = [
            (1, true),
            (4, false),
            (8, true),
            (5, false),
            (2, true),
            (7, false),
        ];
        for (step, (id, by_quit)) in leaves.into_iter().enumerate() {
            test.say(3, &format!("line {step}"));
            if by_quit {
                test.quit(id);
            } else {
                test.request(
                    id,
                    Request::Part {
                        room: Some("#lobby".into()),
                        reason: None,
                    },
                );
            }
            test.assert_memberships_consistent();
            if step % 2 == 0 {
                test.flush();
            }
        }
        // A part and a re-join put the client at the end of the list.
        test.request(
            4,
            Request::Join {
                room: "#lobby".into(),
                key: None,
            },
        );
        test.assert_memberships_consistent();
        test.say(3, "last");
        test.flush();
        // One who stayed got each line once, in order; one who left did not get "last".
        let said: String = (0..6)
            .map(|step| format!("#lobby c: line {step}\n"))
            .chain(["#lobby c: last\n".to_string()])
            .collect();
        let stayed = test.take(6).concat();
        let lines_of_c: String = stayed
            .split_inclusive('\n')
            .filter(|line| line.starts_with("#lobby c:"))
            .collect();
        assert_eq!(lines_of_c, said);
        assert!(!test.take(7).concat().contains("last"));
        assert_eq!(test.hub.rooms["#lobby"].members.len(), 3);
    }

    #[test]
    fn joins_and_leaves_mid_batch_keep_every_member_aligned() {
        let mut test = TestHub::new();
        for (id, nick) in [(1, "ann"), (2, "bob"), (3, "cat"), (4, "dan")] {
            test.client(id, nick, false);
        }
        test.flush();
        for id in 1..=4 {
            test.take(id);
        }
        test.say(1, "one");
        // Bob leaves from the middle of the member list: dan takes his place there.
        test.request(
            2,
            Request::Part {
                room: None,
                reason: None,
            },
        );
        test.say(1, "two");
        // A member speaking a format the batch has not seen yet.
        test.client(5, "jay", true);
        test.say(4, "three");
        test.flush();
        assert_eq!(test.take(2).concat(), "#lobby ann: one\n-bob #lobby\n");
        let stayed =
            "#lobby ann: one\n-bob #lobby\n#lobby ann: two\n+jay #lobby\n#lobby dan: three\n";
        for id in [1, 3, 4] {
            assert_eq!(test.take(id).concat(), stayed, "client {id}");
        }
        assert_eq!(
            test.take(5).concat(),
            "J +jay #lobby\nJ #lobby dan: three\n"
        );
    }

    #[test]
    fn a_join_storm_reaches_each_member_as_one_buffer() {
        let mut test = TestHub::settled(&["ann"]);
        for id in 2..=40 {
            test.client(id, &format!("user{id}"), false);
        }
        test.flush();
        // One handle per member per flush, not one per join (a storm of N joins
        // into a room of N would otherwise queue N² handles).
        let ann = test.take(1);
        assert_eq!(ann.len(), 1);
        let joins: Vec<String> = (2..=40).map(|id| format!("+user{id} #lobby\n")).collect();
        assert_eq!(ann[0], joins.concat());
        // The joiner: its own notice at once, then the later joins as one buffer.
        let joiner = test.take(10);
        assert_eq!(joiner, [joins[8].clone(), joins[9..].concat()]);
    }

    #[test]
    fn mid_round_shares_stop_at_their_limit_and_the_rest_waits_for_the_flush() {
        let mut test = TestHub::settled(&["ann", "bob"]);
        assert!(test.take(2).is_empty());
        let round = Arc::new(FlushRound::default());
        test.outboxes[&2].wake_writer_in(&round);
        let said: Vec<String> = (0..MAX_MID_ROUND_SHARES + 3)
            .map(|n| format!("#lobby ann: {n}\n"))
            .collect();
        for n in 0..said.len() {
            test.say(1, &n.to_string());
            test.hub.share_batch();
        }
        // Bob's writer has still not looked: one handle per share, up to the limit.
        assert_eq!(test.take(2), said[..MAX_MID_ROUND_SHARES]);
        test.flush();
        assert_eq!(test.take(2), [said[MAX_MID_ROUND_SHARES..].concat()]);
        // Ann got none of the shares; the flush joins them into one buffer.
        assert_eq!(test.take(1), [said.concat()]);
    }

    #[test]
    fn big_rooms_get_fewer_mid_round_shares() {
        assert_eq!(mid_round_share_limit(2), MAX_MID_ROUND_SHARES);
        assert_eq!(mid_round_share_limit(1000), MAX_MID_ROUND_SHARES);
        assert_eq!(mid_round_share_limit(8192), 4);
        assert_eq!(mid_round_share_limit(19_000), 1);
        // Even the biggest room is shared once: its first mid-round lines still make
        // the round for the members not yet written.
        assert_eq!(mid_round_share_limit(1_000_000), 1);
    }

    #[test]
    fn a_big_room_is_shared_only_within_its_budget() {
        let members = MID_ROUND_HANDLE_BUDGET / (MAX_MID_ROUND_SHARES / 2) + 1;
        let limit = mid_round_share_limit(members);
        assert!(limit < MAX_MID_ROUND_SHARES);
        let nicks: Vec<String> = (1..=members).map(|id| format!("user{id}")).collect();
        let nicks: Vec<&str> = nicks.iter().map(String::as_str).collect();
        let mut test = TestHub::settled(&nicks);
        assert!(test.take(2).is_empty());
        test.outboxes[&2].wake_writer_in(&Arc::new(FlushRound::default()));
        for n in 0..MAX_MID_ROUND_SHARES {
            test.say(1, &n.to_string());
            test.hub.share_batch();
        }
        assert_eq!(test.take(2).len(), limit);
    }

    #[test]
    fn a_leaver_gets_a_copy_and_the_others_still_one_buffer() {
        let mut test = TestHub::settled(&["ann", "bob", "cat"]);
        test.say(1, "one");
        test.quit(3);
        test.say(1, "two");
        test.flush();
        assert_eq!(test.take(3), ["#lobby ann: one\n"]);
        let stayed = ["#lobby ann: one\n-cat #lobby\n#lobby ann: two\n"];
        assert_eq!(test.take(1), stayed);
        assert_eq!(test.take(2), stayed);
    }

    #[test]
    fn a_leaver_owed_many_lines_shares_them_instead_of_copying() {
        let mut test = TestHub::settled(&["ann", "bob", "cat"]);
        let text = "x".repeat(LEAVER_COPY_LIMIT);
        test.say(1, &text);
        test.quit(3);
        test.say(1, "two");
        test.flush();
        let said = format!("#lobby ann: {text}\n");
        assert_eq!(test.take(3), std::slice::from_ref(&said));
        let stayed = [format!("{said}-cat #lobby\n#lobby ann: two\n")];
        assert_eq!(test.take(1), stayed);
        assert_eq!(test.take(2), stayed);
    }

    #[test]
    fn lines_of_two_rooms_keep_the_order_they_were_said_in() {
        let mut test = TestHub::new();
        test.client(1, "ann", false);
        test.client(2, "bob", false);
        test.request(
            1,
            Request::Join {
                room: "#a".into(),
                key: None,
            },
        );
        test.request(
            2,
            Request::Join {
                room: "#a".into(),
                key: None,
            },
        );
        test.flush();
        test.take(1);
        test.take(2);
        test.say_in(1, Some("#lobby"), "l1");
        test.say_in(1, Some("#a"), "a1");
        test.say_in(1, Some("#lobby"), "l2");
        test.flush();
        assert_eq!(
            test.take(2).concat(),
            "#lobby ann: l1\n#a ann: a1\n#lobby ann: l2\n"
        );
    }

    #[test]
    fn shutdown_pushes_the_open_batch_before_the_goodbye() {
        let mut test = TestHub::settled(&["ann"]);
        test.say(1, "last words");
        test.hub.handle(Command::Shutdown);
        test.flush();
        assert_eq!(
            test.take(1).concat(),
            "#lobby ann: last words\nnotice server shutting down; goodbye\n"
        );
    }

    #[test]
    fn a_full_batch_is_sealed_early() {
        let mut test = TestHub::settled(&["ann"]);
        let text = "x".repeat(1000);
        let lines = MAX_BATCH_BYTES / 1000 + 10;
        for _ in 0..lines {
            test.say(1, &text);
        }
        test.flush();
        let buffers = test.take(1);
        assert_eq!(buffers.len(), 2);
        assert!(buffers[0].len() >= MAX_BATCH_BYTES);
        assert_eq!(buffers.concat().lines().count(), lines);
    }
}
