//! The chat hub: one task that owns every room, nickname and client record, turns
//! commands from front doors into events, and fans events out to bounded outboxes.
//!
//! The hub knows events, not bytes: each connection brings a [`Render`] for its wire
//! format, and a broadcast renders the event once per distinct format, then pushes a
//! cheap `Bytes` handle onto each recipient's [`Outbox`]. The hub never awaits anything
//! but its own inbox, so no client can slow it down; a client whose outbox overflows is
//! removed as a slow consumer and everyone else carries on.

mod event;
pub mod outbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use event::*;
pub use outbox::{Outbox, Push};

use crate::text::{fold_case, normalize_room, sanitize_text, validate_nick, NickError};

/// Turns hub events into one wire format. One instance per front door, shared by all
/// of that door's connections; a broadcast calls it once per event, not per recipient.
pub trait Render: Send + Sync + 'static {
    /// The bytes to send for `event`, or `None` when this format does not show it.
    fn render(&self, event: &Event) -> Option<Bytes>;
}

/// Settings the hub needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Every client joins this room once registered.
    pub default_room: String,
    /// Capacity of the hub's inbox (commands); front doors wait when it is full.
    pub inbox_capacity: usize,
    /// Fan-out counters, bumped once per fan-out (not per recipient).
    pub metrics: crate::metrics::HubMetrics,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            default_room: "#general".into(),
            inbox_capacity: 8192,
            metrics: Default::default(),
        }
    }
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
        let (reply, answer) = oneshot::channel();
        self.send(Command::Register {
            client,
            nick,
            reply,
        })
        .await?;
        answer.await.map_err(|_| HubGone)
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

/// Start the hub task. It runs until it has processed [`Command::Shutdown`] (or every
/// handle is dropped).
pub fn spawn(config: HubConfig, tracker: &tokio_util::task::TaskTracker) -> HubHandle {
    let (inbox, commands) = mpsc::channel(config.inbox_capacity);
    let hub = Hub::new(config);
    tracker.spawn(hub.run(commands));
    HubHandle {
        inbox,
        next_client_id: Arc::new(AtomicU64::new(1)),
    }
}

struct Client {
    nick: Option<Arc<str>>,
    door: &'static str,
    outbox: Arc<Outbox>,
    render: Arc<dyn Render>,
    /// Folded room keys, in join order; the last one is the "current" room.
    rooms: Vec<String>,
    connected_at: Instant,
}

struct Member {
    client: ClientId,
    outbox: Arc<Outbox>,
    render: Arc<dyn Render>,
}

struct Room {
    name: Arc<str>,
    members: Vec<Member>,
    next_message_id: u64,
}

struct Hub {
    config: HubConfig,
    clients: HashMap<ClientId, Client>,
    /// Folded nickname → owner.
    nicks: HashMap<String, ClientId>,
    /// Folded room name → room. A room exists while it has members.
    rooms: HashMap<String, Room>,
    next_private_id: u64,
    /// Clients whose outbox overflowed during the current command.
    overflowed: Vec<ClientId>,
    shutting_down: bool,
}

/// Renders one event at most once per wire format. Formats are told apart by the
/// identity of their shared renderer; there are only a handful, so a short list beats a map.
#[derive(Default)]
struct RenderOnce {
    rendered: Vec<(*const (), Option<Bytes>)>,
}

impl RenderOnce {
    fn get(&mut self, render: &Arc<dyn Render>, event: &Event) -> Option<Bytes> {
        let format = Arc::as_ptr(render) as *const ();
        if let Some((_, bytes)) = self.rendered.iter().find(|(key, _)| *key == format) {
            return bytes.clone();
        }
        let bytes = render.render(event);
        self.rendered.push((format, bytes.clone()));
        bytes
    }
}

impl Hub {
    fn new(config: HubConfig) -> Self {
        Hub {
            config,
            clients: HashMap::new(),
            nicks: HashMap::new(),
            rooms: HashMap::new(),
            next_private_id: 1,
            overflowed: Vec::new(),
            shutting_down: false,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(256);
        while commands.recv_many(&mut batch, 256).await > 0 {
            for command in batch.drain(..) {
                self.handle(command);
                self.remove_overflowed();
            }
            if self.shutting_down {
                break;
            }
        }
        tracing::debug!("hub stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect(connection) => self.connect(*connection),
            Command::Register {
                client,
                nick,
                reply,
            } => {
                let _ = reply.send(self.register(client, &nick));
            }
            Command::Request {
                client,
                tag,
                request,
            } => self.request(client, tag, request),
            Command::Deliver { client, bytes } => {
                if let Some(target) = self.clients.get(&client) {
                    if target.outbox.push(bytes) == Push::Overflowed {
                        self.overflowed.push(client);
                    }
                }
            }
            Command::Disconnect { client, reason } => self.disconnect(client, reason, None),
            Command::Shutdown => self.shutdown(),
        }
    }

    fn connect(&mut self, connection: Connection) {
        if self.shutting_down {
            connection.outbox.close(CloseReason::Shutdown);
            return;
        }
        self.clients.insert(
            connection.client,
            Client {
                nick: None,
                door: connection.door,
                outbox: connection.outbox,
                render: connection.render,
                rooms: Vec::new(),
                connected_at: Instant::now(),
            },
        );
    }

    fn register(&mut self, id: ClientId, nick: &str) -> Result<(), NickError> {
        let nick = validate_nick(nick)?;
        let Some(client) = self.clients.get(&id) else {
            return Err(NickError::Taken);
        };
        if client.nick.is_some() {
            return Ok(());
        }
        let key = fold_case(nick);
        if self.nicks.contains_key(&key) {
            return Err(NickError::Taken);
        }
        let nick: Arc<str> = nick.into();
        self.nicks.insert(key, id);
        if let Some(client) = self.clients.get_mut(&id) {
            client.nick = Some(nick.clone());
        }
        self.send_to(id, &Event::Welcome { client: id, nick });
        let default_room = self.config.default_room.clone();
        self.join(id, None, &default_room);
        Ok(())
    }

    fn request(&mut self, id: ClientId, tag: Option<Tag>, request: Request) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        if client.nick.is_none() {
            self.error(id, tag, ErrorCode::NotRegistered, "choose a name first");
            return;
        }
        match request {
            Request::Say {
                room,
                text,
                data,
                action,
            } => self.say(id, tag, room, &text, data, action),
            Request::Whisper {
                to,
                text,
                data,
                action,
            } => self.whisper(id, tag, &to, &text, data, action),
            Request::Join { room } => self.join(id, tag, &room),
            Request::Part { room, reason } => self.part(id, tag, room, reason),
            Request::Nick { nick } => self.change_nick(id, tag, &nick),
            Request::Rooms => {
                let mut rooms: Vec<RoomSummary> = self
                    .rooms
                    .values()
                    .map(|room| RoomSummary {
                        name: room.name.clone(),
                        members: room.members.len(),
                    })
                    .collect();
                rooms.sort_by(|a, b| a.name.cmp(&b.name));
                self.reply(id, tag, Reply::Rooms(rooms));
            }
            Request::Who { room } => {
                let Some(key) = self.resolve_room(id, &tag, room) else {
                    return;
                };
                let room = &self.rooms[&key];
                let mut members: Vec<Arc<str>> = room
                    .members
                    .iter()
                    .filter_map(|m| self.clients.get(&m.client).and_then(|c| c.nick.clone()))
                    .collect();
                members.sort_by_key(|nick| fold_case(nick));
                let room = room.name.clone();
                self.reply(id, tag, Reply::Who { room, members });
            }
            Request::Whois { nick } => {
                let Some(&target) = self.nicks.get(&fold_case(&nick)) else {
                    self.error(
                        id,
                        tag,
                        ErrorCode::NoSuchNick,
                        &format!("nobody is called {nick}"),
                    );
                    return;
                };
                let client = &self.clients[&target];
                let info = WhoisInfo {
                    nick: client.nick.clone().unwrap_or_else(|| nick.as_str().into()),
                    client: target,
                    door: client.door,
                    rooms: client
                        .rooms
                        .iter()
                        .map(|key| self.rooms[key].name.clone())
                        .collect(),
                    connected_for_secs: client.connected_at.elapsed().as_secs(),
                };
                self.reply(id, tag, Reply::Whois(info));
            }
            Request::Ping => self.reply(id, tag, Reply::Pong),
            Request::Quit { reason } => {
                let reason = reason.map(|r| sanitize_text(&r).into_owned());
                self.disconnect(id, CloseReason::ClientQuit, reason.as_deref());
            }
        }
    }

    /// The folded key of the room a request means, or an error sent to the client.
    fn resolve_room(
        &mut self,
        id: ClientId,
        tag: &Option<Tag>,
        room: Option<String>,
    ) -> Option<String> {
        let client = &self.clients[&id];
        let key = match room {
            Some(name) => match normalize_room(&name) {
                Ok(name) => fold_case(&name),
                Err(error) => {
                    self.error(id, tag.clone(), ErrorCode::RoomInvalid, &error.to_string());
                    return None;
                }
            },
            None => match client.rooms.last() {
                Some(key) => key.clone(),
                None => {
                    self.error(
                        id,
                        tag.clone(),
                        ErrorCode::NotInRoom,
                        "you are not in any room; /join one",
                    );
                    return None;
                }
            },
        };
        if !self.rooms.contains_key(&key) {
            self.error(
                id,
                tag.clone(),
                ErrorCode::NoSuchRoom,
                &format!("there is no room {key}"),
            );
            return None;
        }
        Some(key)
    }

    fn say(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        text: &str,
        data: Option<Data>,
        action: bool,
    ) {
        let Some(key) = self.resolve_room(id, &tag, room) else {
            return;
        };
        if !self.clients[&id].rooms.contains(&key) {
            let name = self.rooms[&key].name.clone();
            self.error(
                id,
                tag,
                ErrorCode::NotInRoom,
                &format!("you are not in {name}; /join it first"),
            );
            return;
        }
        let from = self.clients[&id].nick.clone().unwrap_or_default();
        let room = self.rooms.get_mut(&key).expect("resolved room exists");
        let message = ChatMessage {
            id: room.next_message_id,
            time: SystemTime::now(),
            target: Target::Room(room.name.clone()),
            from,
            from_client: id,
            text: sanitize_text(text).into(),
            data,
            action,
        };
        room.next_message_id += 1;
        self.broadcast(&key, &Event::Message(Arc::new(message)));
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
    }

    fn whisper(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        to: &str,
        text: &str,
        data: Option<Data>,
        action: bool,
    ) {
        let Some(&target) = self.nicks.get(&fold_case(to)) else {
            self.error(
                id,
                tag,
                ErrorCode::NoSuchNick,
                &format!("nobody is called {to}"),
            );
            return;
        };
        let message = ChatMessage {
            id: self.next_private_id,
            time: SystemTime::now(),
            target: Target::Private(self.clients[&target].nick.clone().unwrap_or_default()),
            from: self.clients[&id].nick.clone().unwrap_or_default(),
            from_client: id,
            text: sanitize_text(text).into(),
            data,
            action,
        };
        self.next_private_id += 1;
        let event = Event::Message(Arc::new(message));
        self.send_to(target, &event);
        if target != id {
            self.send_to(id, &event);
        }
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
    }

    fn join(&mut self, id: ClientId, tag: Option<Tag>, room: &str) {
        let name = match normalize_room(room) {
            Ok(name) => name,
            Err(error) => {
                self.error(id, tag, ErrorCode::RoomInvalid, &error.to_string());
                return;
            }
        };
        let key = fold_case(&name);
        let client = self
            .clients
            .get_mut(&id)
            .expect("caller checked the client");
        if let Some(position) = client.rooms.iter().position(|k| *k == key) {
            // Already there: make it the current room again.
            let key = client.rooms.remove(position);
            client.rooms.push(key);
            if tag.is_some() {
                self.reply(id, tag, Reply::Done);
            }
            return;
        }
        client.rooms.push(key.clone());
        let member = Member {
            client: id,
            outbox: client.outbox.clone(),
            render: client.render.clone(),
        };
        let nick = client.nick.clone().unwrap_or_default();
        let room = self.rooms.entry(key.clone()).or_insert_with(|| Room {
            name: name.as_str().into(),
            members: Vec::new(),
            next_message_id: 1,
        });
        room.members.push(member);
        let event = Event::Joined {
            room: room.name.clone(),
            nick,
            client: id,
        };
        self.broadcast(&key, &event);
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
    }

    fn part(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        reason: Option<String>,
    ) {
        let Some(key) = self.resolve_room(id, &tag, room) else {
            return;
        };
        if !self.clients[&id].rooms.contains(&key) {
            let name = self.rooms[&key].name.clone();
            self.error(
                id,
                tag,
                ErrorCode::NotInRoom,
                &format!("you are not in {name}"),
            );
            return;
        }
        let reason = reason.map(|r| Arc::from(sanitize_text(&r).as_ref()));
        // Announce first so the leaver sees its own part.
        let nick = self.clients[&id].nick.clone().unwrap_or_default();
        let event = Event::Left {
            room: self.rooms[&key].name.clone(),
            nick,
            client: id,
            reason,
        };
        self.broadcast(&key, &event);
        self.remove_membership(id, &key);
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
    }

    fn remove_membership(&mut self, id: ClientId, key: &str) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.rooms.retain(|k| k != key);
        }
        if let Some(room) = self.rooms.get_mut(key) {
            if let Some(position) = room.members.iter().position(|m| m.client == id) {
                room.members.swap_remove(position);
            }
            if room.members.is_empty() {
                self.rooms.remove(key);
            }
        }
    }

    fn change_nick(&mut self, id: ClientId, tag: Option<Tag>, nick: &str) {
        let new = match validate_nick(nick) {
            Ok(nick) => nick,
            Err(error) => {
                self.error(
                    id,
                    tag,
                    ErrorCode::NickInvalid,
                    &format!("cannot use that name: {error}"),
                );
                return;
            }
        };
        let new_key = fold_case(new);
        let old = self.clients[&id].nick.clone().unwrap_or_default();
        let old_key = fold_case(&old);
        if self.nicks.get(&new_key).is_some_and(|&owner| owner != id) {
            self.error(
                id,
                tag,
                ErrorCode::NickTaken,
                &format!("{new} is already in use"),
            );
            return;
        }
        let new: Arc<str> = new.into();
        self.nicks.remove(&old_key);
        self.nicks.insert(new_key, id);
        let client = self
            .clients
            .get_mut(&id)
            .expect("caller checked the client");
        client.nick = Some(new.clone());
        let event = Event::NickChanged {
            old,
            new,
            client: id,
        };
        // Everyone who shares a room with the client, once each, and the client.
        let mut audience: Vec<ClientId> = vec![id];
        for key in &self.clients[&id].rooms {
            audience.extend(self.rooms[key].members.iter().map(|m| m.client));
        }
        audience.sort_unstable();
        audience.dedup();
        self.send_to_many(&audience, &event);
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
    }

    /// Remove a client: leave notices in each of its rooms, free its name, close its outbox.
    fn disconnect(&mut self, id: ClientId, reason: CloseReason, message: Option<&str>) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let nick = client.nick.clone();
        let rooms = client.rooms.clone();
        let outbox = client.outbox.clone();
        let shown_reason: Arc<str> = match message {
            Some(text) if !text.is_empty() => format!("{}: {text}", reason.describe()).into(),
            _ => reason.describe().into(),
        };
        if let Some(nick) = &nick {
            for key in &rooms {
                // The leaver is removed first: it is going away and may not be reading.
                self.remove_membership(id, key);
                if let Some(room) = self.rooms.get(key) {
                    let event = Event::Left {
                        room: room.name.clone(),
                        nick: nick.clone(),
                        client: id,
                        reason: Some(shown_reason.clone()),
                    };
                    self.broadcast(key, &event);
                }
            }
            self.nicks.remove(&fold_case(nick));
        }
        self.clients.remove(&id);
        outbox.close(reason);
    }

    fn shutdown(&mut self) {
        self.shutting_down = true;
        let notice = Event::Notice {
            text: "server shutting down; goodbye".into(),
        };
        let everyone: Vec<ClientId> = self.clients.keys().copied().collect();
        self.send_to_many(&everyone, &notice);
        for client in self.clients.values() {
            client.outbox.close(CloseReason::Shutdown);
        }
        self.clients.clear();
        self.rooms.clear();
        self.nicks.clear();
    }

    fn remove_overflowed(&mut self) {
        // Removing a slow consumer announces its departure, which can overflow another.
        while let Some(id) = self.overflowed.pop() {
            self.disconnect(id, CloseReason::SlowConsumer, None);
        }
    }

    /// Render `event` once per wire format present in the room and queue it for every member.
    fn broadcast(&mut self, key: &str, event: &Event) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let mut rendered = RenderOnce::default();
        let mut delivered = 0;
        for member in &room.members {
            if let Some(bytes) = rendered.get(&member.render, event) {
                delivered += 1;
                if member.outbox.push(bytes) == Push::Overflowed {
                    self.overflowed.push(member.client);
                }
            }
        }
        self.count_deliveries(event, delivered);
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
        let mut rendered = RenderOnce::default();
        let mut delivered = 0;
        for id in clients {
            let Some(client) = self.clients.get(id) else {
                continue;
            };
            if let Some(bytes) = rendered.get(&client.render, event) {
                delivered += 1;
                if client.outbox.push(bytes) == Push::Overflowed {
                    self.overflowed.push(*id);
                }
            }
        }
        self.count_deliveries(event, delivered);
    }

    fn send_to(&mut self, id: ClientId, event: &Event) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        if let Some(bytes) = client.render.render(event) {
            if client.outbox.push(bytes) == Push::Overflowed {
                self.overflowed.push(id);
            }
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
            },
        );
    }
}
