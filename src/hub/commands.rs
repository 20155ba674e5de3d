//! The hub's command handlers: connecting, registering, and every request a client
//! makes (say, whisper, join, part, nick, topic, away, who, whois, quit), each
//! checking what it needs and answering in events, never in any door's words.

use super::rules::{Rank, RoomRules};
use super::*;

/// Why the hub will not do what a client asked: told to that client as an error
/// event, and nothing else changes. Handlers return it (`?` through the checks they
/// share) instead of each sending its own error and returning.
pub(super) struct Refusal {
    pub(super) code: ErrorCode,
    pub(super) text: String,
    /// The room or nick it is about, for formats that name it (IRC's numerics).
    pub(super) about: Option<Arc<str>>,
}

impl Refusal {
    pub(super) fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Refusal {
            code,
            text: text.into(),
            about: None,
        }
    }

    /// The same, about room or nick `name`.
    pub(super) fn about(mut self, name: &str) -> Self {
        self.about = Some(name.into());
        self
    }
}

/// What a request handler comes to.
pub(super) type Outcome = Result<(), Refusal>;

/// How a private message goes, beside its text.
/// How something is said, beside its words.
pub(super) struct Speech {
    data: Option<Data>,
    action: bool,
    /// A notice: never answered automatically, so the sender of a private one is not
    /// told the recipient is away.
    notice: bool,
}

/// `data.moderation` is the server's: a client sending it could forge a notice.
fn refuse_moderation_data(data: &Option<Data>) -> Outcome {
    if data
        .as_ref()
        .is_some_and(|data| data.get(MODERATION_DATA).is_some())
    {
        let why = format!("data.{MODERATION_DATA} is kept for the server's moderation notices");
        return Err(Refusal::new(ErrorCode::BadRequest, why));
    }
    Ok(())
}

impl Hub {
    pub(super) fn handle(&mut self, command: Command) {
        match command {
            Command::Connect(connection) => self.connect(*connection),
            Command::Register {
                client,
                nick,
                reply,
            } => {
                let _ = reply.send(self.register(client, &nick));
            }
            Command::SignIn {
                client,
                tag,
                account,
                created,
                token,
                reply,
            } => {
                let _ = reply.send(self.sign_in(client, tag, account, created, token));
            }
            Command::Identify { client, reply } => {
                let identity =
                    self.clients
                        .get(&client)
                        .map(|client| Identity {
                            nick: client.nick.clone(),
                            account: client.account.clone(),
                            server_operator: client.account.as_ref().is_some_and(|account| {
                                self.config.operators.contains(&*account.key)
                            }),
                            device: client.device,
                        })
                        .unwrap_or_default();
                let _ = reply.send(identity);
            }
            Command::AccountDropped {
                client,
                tag,
                account,
                devices,
            } => {
                for device in &devices {
                    self.forget_device(device);
                }
                self.registered.remove(&*account.key);
                self.history.forget_account(account.key.clone());
                self.forget_account_rules(&account.key);
                for other in self.clients.values_mut() {
                    if other.account.as_ref() == Some(&account) {
                        other.account = None;
                    }
                }
                let account = account.name;
                self.reply(client, tag, Reply::AccountDropped { account });
            }
            Command::DeviceAdded {
                client,
                tag,
                device,
                token,
            } => self.device_added(client, tag, device, token),
            Command::DeviceRemoved {
                client,
                tag,
                device,
            } => {
                self.forget_device(&device);
                let name = device.name;
                self.reply(client, tag, Reply::DeviceRemoved { name });
            }
            Command::CommandExpired { id } => self.command_expired(id),
            Command::Answer {
                client,
                tag,
                answer,
            } => match answer {
                Ok(reply) => self.reply(client, tag, reply),
                Err((code, text)) => self.error(client, tag, code, &text),
            },
            Command::Mailbox {
                client,
                account,
                messages,
                delivered,
            } => self.deliver_mailbox(client, account, messages, delivered),
            Command::Deposited {
                sender,
                tag,
                message,
                result,
            } => self.deposited(sender, tag, message, result),
            Command::Render { client, render } => {
                if let Some(client) = self.clients.get_mut(&client) {
                    if client.nick.is_none() {
                        client.render = render;
                    }
                }
            }
            Command::Request {
                client,
                tag,
                request,
            } => self.request(client, tag, request),
            Command::Deliver { client, bytes } => {
                self.seal_for(client);
                if let Some(target) = self.clients.get(&client) {
                    self.outgoing.queue(client, &target.outbox, bytes);
                }
            }
            Command::DeliverAddressed { client, write } => {
                self.seal_for(client);
                if let Some(target) = self.clients.get(&client) {
                    let bytes = write.write(target.nick.as_deref());
                    self.outgoing.queue(client, &target.outbox, bytes);
                }
            }
            Command::Disconnect { client, reason } => self.disconnect(client, reason, None),
            Command::Shutdown => self.shutdown(),
            Command::Persisted { upto } => {
                for pending in self.history.committed(upto) {
                    self.deliver_committed(pending);
                }
            }
            Command::PersistFailed { upto, cause } => {
                for pending in self.history.failed(upto) {
                    let text = format!("message not sent: the server could not save it ({cause})");
                    self.error(
                        pending.sender,
                        pending.tag,
                        ErrorCode::HistoryUnavailable,
                        &text,
                    );
                }
            }
            Command::HistoryAnswer {
                client,
                tag,
                answer,
            } => match answer {
                Ok(reply) => self.reply(client, tag, reply),
                Err(cause) => self.error(client, tag, ErrorCode::HistoryUnavailable, &cause),
            },
        }
    }

    pub(super) fn connect(&mut self, connection: Connection) {
        if self.shutting_down {
            connection.outbox.close(CloseReason::Shutdown);
            return;
        }
        self.clients.insert(
            connection.client,
            Box::new(Client {
                nick: None,
                door: connection.door,
                outbox: connection.outbox,
                render: connection.render,
                rooms: Vec::new(),
                connected_at: Instant::now(),
                away: None,
                account: None,
                address: connection.peer.ip(),
                device: false,
            }),
        );
    }

    pub(super) fn register(&mut self, id: ClientId, nick: &str) -> Result<(), NickError> {
        let nick = validate_nick(nick)?;
        let Some(client) = self.clients.get(&id) else {
            return Err(NickError::Taken);
        };
        if client.nick.is_some() {
            return Ok(());
        }
        let key = nick_key(nick);
        if self.nicks.contains_key(&key) {
            return Err(NickError::Taken);
        }
        if self.registered.contains_key(&key) {
            return Err(NickError::Registered);
        }
        self.take_name(id, key, nick.into());
        Ok(())
    }

    /// Give `id` (which has no name yet) the name `nick`, whose key is free: welcome
    /// it and put it in the default room.
    fn take_name(&mut self, id: ClientId, key: String, nick: Arc<str>) {
        self.nicks.insert(key, id);
        if let Some(client) = self.clients.get_mut(&id) {
            client.nick = Some(nick.clone());
        }
        self.send_to(id, &Event::Welcome { client: id, nick });
        if self.clients.get(&id).is_some_and(|client| client.device) {
            // Devices go where their telemetry goes, not into everyone's lobby.
            return;
        }
        let default_room = self.config.default_room.clone();
        if let Err(refusal) = self.join(id, None, &default_room, None) {
            // The default room's name was checked with the config: not expected.
            self.refuse(id, None, refusal);
        }
    }

    /// See [`Command::SignIn`].
    fn sign_in(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        account: Account,
        created: bool,
        token: Option<crate::chat::IssuedToken>,
    ) -> Result<(), NickError> {
        let key = account.key.to_string();
        if created {
            // Protected from now on, even if its creator has already gone.
            self.registered.insert(key.clone(), account.name.clone());
        } else if !self.registered.contains_key(&key) {
            // Its password was checked, then the account was dropped (by another of
            // its sessions) before this sign-in got here.
            let why = format!("{} no longer has an account", account.name);
            self.error(id, tag, ErrorCode::AuthFailed, &why);
            return Err(NickError::Taken);
        }
        let Some(client) = self.clients.get(&id) else {
            return Err(NickError::Taken);
        };
        if client.door == "udp" && !self.devices.contains_key(&key) {
            // The UDP door signs in devices only (a token it cached may have outlived
            // its device, and the name may be a person's now).
            let why = format!("{} is not a device", account.name);
            self.error(id, tag, ErrorCode::BadToken, &why);
            return Err(NickError::Taken);
        }
        if let Some(current) = client
            .account
            .as_ref()
            .filter(|current| **current != account)
        {
            let why = format!(
                "you are logged in as {}; log out first to use another account",
                current.name
            );
            self.error(id, tag, ErrorCode::BadRequest, &why);
            return Err(NickError::Taken);
        }
        let has_name = client.nick.is_some();
        // Whoever else holds the name (another session of the owner's, or a guest
        // whose look-alike slipped in before the name was registered) gives it up.
        if let Some(&holder) = self.nicks.get(&key) {
            if holder != id {
                self.disconnect(holder, CloseReason::Replaced, None);
            }
        }
        let name = account.name.clone();
        let device = self.is_device_account(&account);
        if let Some(client) = self.clients.get_mut(&id) {
            client.account = Some(account.clone());
            client.device = device;
        }
        if !has_name {
            self.take_name(id, key, name.clone());
        } else if self.clients[&id].nick.as_deref() != Some(&*name) {
            if let Err(refusal) = self.rename(id, &name) {
                self.refuse(id, tag.clone(), refusal);
            }
        }
        let reply = Reply::SignedIn {
            account: name,
            created,
            token,
        };
        self.reply(id, tag, reply);
        self.enforce_bans(id);
        // Over UDP what was kept waits for a connection: a page of it does not fit a
        // datagram.
        if !created
            && self
                .clients
                .get(&id)
                .is_some_and(|client| client.door != "udp")
        {
            self.fetch_mailbox(id, account);
        }
        Ok(())
    }

    pub(super) fn request(&mut self, id: ClientId, tag: Option<Tag>, request: Request) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let outcome = if client.nick.is_none() {
            Err(Refusal::new(
                ErrorCode::NotRegistered,
                "choose a name first",
            ))
        } else {
            self.dispatch(id, tag.clone(), request)
        };
        if let Err(refusal) = outcome {
            self.refuse(id, tag, refusal);
        }
    }

    /// A registered client's request, handled.
    fn dispatch(&mut self, id: ClientId, tag: Option<Tag>, request: Request) -> Outcome {
        match request {
            Request::Say {
                room,
                text,
                data,
                action,
            } => {
                let speech = Speech {
                    data,
                    action,
                    notice: false,
                };
                return self.say(id, tag, room, &text, speech);
            }
            Request::Whisper {
                to,
                text,
                data,
                action,
            } => {
                let speech = Speech {
                    data,
                    action,
                    notice: false,
                };
                return self.whisper(id, tag, &to, &text, speech);
            }
            Request::Notice { to, text } => {
                let notice = Speech {
                    data: None,
                    action: false,
                    notice: true,
                };
                // A room's name (they all start with #) or a nick.
                if to.starts_with('#') {
                    return self.say(id, tag, Some(to), &text, notice);
                }
                return self.whisper(id, tag, &to, &text, notice);
            }
            Request::Join { room, key } => return self.join(id, tag, &room, key.as_deref()),
            Request::Part { room, reason } => return self.part(id, tag, room, reason),
            Request::Nick { nick } => return self.change_nick(id, tag, &nick),
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
            Request::JoinedNames { room } => {
                let key = self.resolve_room(id, Some(room.clone()));
                if key.is_ok_and(|key| self.clients[&id].in_room(&key)) {
                    return self.dispatch(id, tag, Request::Who { room: Some(room) });
                }
            }
            Request::Who { room } => {
                let key = self.resolve_room(id, room)?;
                let room = &self.rooms[&key];
                let mut members: Vec<Arc<str>> = room
                    .members
                    .iter()
                    .filter_map(|m| self.clients.get(&m.client).and_then(|c| c.nick.clone()))
                    .collect();
                members.sort_by_key(|nick| fold_case(nick));
                let mut devices: Vec<Arc<str>> = room
                    .members
                    .iter()
                    .filter_map(|m| self.clients.get(&m.client))
                    .filter(|client| client.device)
                    .filter_map(|client| client.nick.clone())
                    .collect();
                devices.sort_by_key(|nick| fold_case(nick));
                let mut away: Vec<Arc<str>> = room
                    .members
                    .iter()
                    .filter_map(|m| self.clients.get(&m.client))
                    .filter(|client| client.away.is_some())
                    .filter_map(|client| client.nick.clone())
                    .collect();
                away.sort_by_key(|nick| fold_case(nick));
                let mut operators: Vec<Arc<str>> = room
                    .members
                    .iter()
                    .filter(|m| matches!(self.rank(m.client, &key), Rank::Owner | Rank::Operator))
                    .filter_map(|m| self.clients.get(&m.client).and_then(|c| c.nick.clone()))
                    .collect();
                operators.sort_by_key(|nick| fold_case(nick));
                let room = room.name.clone();
                let who = Reply::Who {
                    room,
                    members,
                    devices,
                    away,
                    operators,
                };
                self.reply(id, tag, who);
            }
            Request::Topic { room, text } => return self.topic(id, tag, room, text),
            Request::Moderate { room, action } => return self.moderate(id, tag, room, action),
            Request::Kill { nick, reason } => return self.kill(id, tag, &nick, reason),
            Request::Command { to, name, args } => {
                return self.send_command(id, tag, &to, &name, args)
            }
            Request::CommandResult {
                id: command_id,
                ok,
                result,
                error,
            } => return self.command_result(id, tag, command_id, (ok, result, error)),
            Request::Away { message } => {
                let message = sanitize_text(message.as_deref().unwrap_or("").trim()).into_owned();
                if message.chars().count() > MAX_AWAY_CHARS {
                    let why =
                        format!("the away message is longer than {MAX_AWAY_CHARS} characters");
                    return Err(Refusal::new(ErrorCode::BadRequest, why));
                }
                let away: Option<Arc<str>> = (!message.is_empty()).then(|| Arc::from(message));
                let reply = Reply::Away {
                    away: away.is_some(),
                };
                let Some(client) = self.clients.get_mut(&id) else {
                    return Ok(());
                };
                let changed = client.away != away;
                client.away = away.clone();
                let nick = client.nick.clone().unwrap_or_default();
                self.reply(id, tag, reply);
                if changed {
                    let peers = self.room_peers(id, false);
                    let event = Event::AwayChanged {
                        nick,
                        client: id,
                        away,
                    };
                    self.send_to_many(&peers, &event);
                }
            }
            Request::Counts => {
                let (users, rooms) = (self.nicks.len(), self.rooms.len());
                self.reply(id, tag, Reply::Counts { users, rooms });
            }
            Request::Present { nicks } => {
                let present = nicks
                    .iter()
                    .take(MAX_PRESENCE_NICKS)
                    .filter_map(|nick| self.nicks.get(&nick_key(nick)))
                    .filter_map(|owner| self.clients.get(owner)?.nick.clone())
                    .collect();
                self.reply(id, tag, Reply::Present(present));
            }
            Request::Whois { nick } => {
                let target = self.owner_of(&nick)?;
                let client = &self.clients[&target];
                let info = WhoisInfo {
                    nick: client.nick.clone().unwrap_or_else(|| nick.as_str().into()),
                    client: target,
                    door: client.door,
                    rooms: client
                        .rooms
                        .iter()
                        .map(|membership| self.rooms[&membership.key].name.clone())
                        .collect(),
                    connected_for_secs: client.connected_at.elapsed().as_secs(),
                    away: client.away.clone(),
                    account: client.account.as_ref().map(|account| account.name.clone()),
                    address: self.address_for(id, target),
                    device: client.device,
                };
                self.reply(id, tag, Reply::Whois(info));
            }
            Request::Ping => self.reply(id, tag, Reply::Pong),
            Request::History {
                room,
                before,
                after,
                limit,
                newest,
            } => {
                let page = PageRequest::new(before, after, limit, newest);
                return self.room_history(id, tag, room, page);
            }
            Request::PrivateHistory {
                with,
                before,
                after,
                limit,
                newest,
            } => {
                let page = PageRequest::new(before, after, limit, newest);
                return self.private_history(id, tag, &with, page);
            }
            Request::Quit { reason } => {
                let reason = reason.map(|r| sanitize_text(&r).into_owned());
                self.disconnect(id, CloseReason::ClientQuit, reason.as_deref());
            }
        }
        Ok(())
    }

    /// Who is called `nick` now.
    pub(super) fn owner_of(&self, nick: &str) -> Result<ClientId, Refusal> {
        let owner = self.nicks.get(&nick_key(nick)).copied();
        owner.ok_or_else(|| {
            Refusal::new(ErrorCode::NoSuchNick, format!("nobody is called {nick}")).about(nick)
        })
    }

    /// The folded key of the room a request means (`None`: the client's current one).
    pub(super) fn resolve_room(
        &self,
        id: ClientId,
        room: Option<String>,
    ) -> Result<String, Refusal> {
        let key = match room {
            Some(name) => match normalize_room(&name) {
                Ok(name) => fold_case(&name),
                Err(error) => return Err(Refusal::new(ErrorCode::RoomInvalid, error.to_string())),
            },
            None => match self.clients[&id].current_room() {
                Some(key) => key.clone(),
                None => {
                    let why = "you are not in any room; join one first";
                    return Err(Refusal::new(ErrorCode::NotInRoom, why));
                }
            },
        };
        if !self.rooms.contains_key(&key) {
            let why = format!("there is no room {key}");
            return Err(Refusal::new(ErrorCode::NoSuchRoom, why).about(&key));
        }
        Ok(key)
    }

    pub(super) fn say(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        text: &str,
        speech: Speech,
    ) -> Outcome {
        let Speech {
            data,
            action,
            notice,
        } = speech;
        if let Some(name) = room.as_deref() {
            if self.clients[&id].device {
                // A device's telemetry names its room in every datagram: saying there
                // is joining it (the join's own rules apply). Only when it is not in
                // it: a join seals the room's batch.
                let key = normalize_room(name).map(|name| fold_case(&name));
                if key.is_ok_and(|key| !self.clients[&id].in_room(&key)) {
                    self.join(id, None, name, None)?;
                }
            }
        }
        let key = self.resolve_room(id, room)?;
        self.require_member(id, &key)?;
        self.may_speak(id, &key)?;
        refuse_moderation_data(&data)?;
        let from = self.clients[&id].nick.clone().unwrap_or_default();
        let message = ChatMessage {
            id: history::UNDECIDED,
            time: SystemTime::now(),
            target: Target::Room(self.rooms[&key].name.clone()),
            from,
            from_client: id,
            text: sanitize_text(text).into(),
            data,
            action,
            notice,
            account: self.clients[&id]
                .account
                .as_ref()
                .map(|account| account.name.clone()),
        };
        // Delivered (and acknowledged) once it is in the history.
        self.record_and_deliver(message, Delivery::Room(key), id, tag);
        Ok(())
    }

    /// `id` is in room `key`, or is told so in words every door can show (each door
    /// has its own way to join).
    fn require_member(&self, id: ClientId, key: &str) -> Outcome {
        if self.clients[&id].in_room(key) {
            return Ok(());
        }
        let name = &self.rooms[key].name;
        let why = format!("you are not in {name}; join it first");
        Err(Refusal::new(ErrorCode::NotInRoom, why).about(name))
    }

    pub(super) fn topic(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        text: Option<String>,
    ) -> Outcome {
        let Some(text) = text else {
            // A stored topic is there to read while the room is empty, too.
            let key = self.moderated_room(id, room)?;
            let (name, topic) = (self.room_name(&key), self.topic_of(&key));
            self.reply(id, tag, Reply::Topic { room: name, topic });
            return Ok(());
        };
        let key = self.resolve_room(id, room)?;
        let name = self.rooms[&key].name.clone();
        self.require_member(id, &key)?;
        self.may_set_topic(id, &key)?;
        let text: Arc<str> = sanitize_text(text.trim()).into();
        if text.chars().count() > MAX_TOPIC_CHARS {
            let why = format!("the topic is longer than {MAX_TOPIC_CHARS} characters");
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        let nick = self.clients[&id].nick.clone().unwrap_or_default();
        let topic = (!text.is_empty()).then(|| {
            Arc::new(Topic {
                text: text.clone(),
                set_by: nick.clone(),
                time: SystemTime::now(),
            })
        });
        // Kept with the room's rules (made for it if need be), and stored with them.
        let rules = self.rules.entry(key.clone()).or_insert_with(|| RoomRules {
            name: name.to_string(),
            ..RoomRules::default()
        });
        rules.topic = topic;
        self.save_rules(&key);
        let event = Event::TopicChanged {
            room: name,
            nick,
            text,
        };
        self.broadcast(&key, &event);
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
        Ok(())
    }

    pub(super) fn whisper(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        to: &str,
        text: &str,
        speech: Speech,
    ) -> Outcome {
        let Speech {
            data,
            action,
            notice,
        } = speech;
        refuse_moderation_data(&data)?;
        let key = nick_key(to);
        // Online: whoever holds the name now. Offline: an account, whose mailbox
        // keeps it for the next login.
        let (online, name, recipient) = match self.nicks.get(&key) {
            Some(&target) => {
                let client = &self.clients[&target];
                let name = client.nick.clone().unwrap_or_default();
                (Some(target), name, client.account.clone())
            }
            None => match self.registered.get(&key) {
                Some(name) if self.config.accounts.is_some() => {
                    let account = Account {
                        key: key.as_str().into(),
                        name: name.clone(),
                    };
                    (None, name.clone(), Some(account))
                }
                _ => {
                    let why = format!("nobody is called {to}");
                    return Err(Refusal::new(ErrorCode::NoSuchNick, why).about(to));
                }
            },
        };
        // Kept in history only between two accounts: a guest's name is anyone's
        // after it leaves, so its conversations are delivered and forgotten.
        let pair = match (&self.clients[&id].account, &recipient) {
            (Some(me), Some(them)) => Some(store::account_pair(&me.key, &them.key)),
            _ => None,
        };
        let mailbox = match (online, recipient) {
            // Kept only from accounts: a guest could otherwise push an owner's real
            // mail out of a full mailbox under a name nobody can trace.
            (None, Some(_)) if self.clients[&id].account.is_none() => {
                let why = format!(
                    "{name} is offline; messages are kept for offline accounts only from \
                     logged-in users: /login NAME PASSWORD or /register PASSWORD first"
                );
                return Err(Refusal::new(ErrorCode::NotSignedIn, why));
            }
            (None, Some(account)) => Some(account.key),
            _ => None,
        };
        let message = ChatMessage {
            id: history::UNDECIDED,
            time: SystemTime::now(),
            target: Target::Private(name.clone()),
            from: self.clients[&id].nick.clone().unwrap_or_default(),
            from_client: id,
            text: sanitize_text(text).into(),
            data,
            action,
            notice,
            account: self.clients[&id]
                .account
                .as_ref()
                .map(|account| account.name.clone()),
        };
        let away = online.and_then(|target| self.clients[&target].away.clone());
        let delivery = Delivery::Private {
            to: online,
            pair,
            mailbox,
        };
        self.record_and_deliver(message, delivery, id, tag);
        if let Some(text) = away.filter(|_| !notice) {
            self.send_to(id, &Event::IsAway { nick: name, text });
        }
        Ok(())
    }

    /// `id` joins `room`, giving `room_key` if the room has a key (`+k`).
    pub(super) fn join(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: &str,
        room_key: Option<&str>,
    ) -> Outcome {
        let name = normalize_room(room)
            .map_err(|error| Refusal::new(ErrorCode::RoomInvalid, error.to_string()))?;
        let key = fold_case(&name);
        if !self.clients[&id].in_room(&key) {
            self.may_join(id, &key, &name, room_key)?;
        }
        // What the client is owed from an open batch of a room it is in goes before
        // anything this join queues for it directly (the room being joined owes it
        // nothing yet, so this never seals that room's batch for a newcomer).
        self.seal_for(id);
        let client = self
            .clients
            .get_mut(&id)
            .expect("caller checked the client");
        if let Some(index) = client.rooms.iter().position(|m| m.key == key) {
            // Already there: make it the current room again.
            let membership = client.rooms.remove(index);
            client.rooms.push(membership);
            if tag.is_some() {
                self.reply(id, tag, Reply::Done);
            }
            return Ok(());
        }
        if client.rooms.capacity() == 0 {
            // Most clients stay in one room: room for one key, not the default four.
            client.rooms.reserve_exact(1);
        }
        let member = Member {
            client: id,
            outbox: client.outbox.clone(),
            render: client.render.clone(),
        };
        let nick = client.nick.clone().unwrap_or_default();
        let account_name = client.account.as_ref().map(|account| account.name.clone());
        let created = !self.rooms.contains_key(&key);
        let room = self.rooms.entry(key.clone()).or_insert_with(|| Room {
            name: name.as_str().into(),
            members: Vec::new(),
        });
        client.rooms.push(Membership {
            key: key.clone(),
            position: room.members.len(),
        });
        let name = room.name.clone();
        let announce = !room.members.is_empty();
        let event = Event::Joined {
            room: name.clone(),
            nick,
            client: id,
            account: account_name,
        };
        // To those already there through the room's batch (presence may wait for its
        // flush: PRESENCE_DELAY), to the joiner at once, as the sign that it is in.
        if announce {
            self.broadcast(&key, &event);
        }
        let room = self.rooms.get_mut(&key).expect("found or made above");
        if let Some(batch) = self.batch.as_mut().filter(|batch| batch.key == key) {
            // From here on: the joiner never gets lines said before it came.
            batch.add_member(&member.render);
        }
        room.members.push(member);
        if created {
            self.claim_room(id, &key, &name);
        }
        self.use_invitation(id, &key);
        let topic = self.topic_of(&key);
        // The joiner has been given everything the open batch holds (nothing), so its
        // own output can go straight to it without sealing the batch for the others.
        self.send_direct(id, &event);
        if topic.is_some() {
            let room = name.clone();
            let reply = Reply::Topic { room, topic };
            self.send_direct(id, &Event::Reply { tag: None, reply });
        }
        // Before any live message of the room: those are delivered by later commands.
        if let Some(page) = self.history.replay(&key, &name) {
            self.send_direct(id, &Event::Replay(Arc::new(page)));
        }
        if tag.is_some() {
            self.send_direct(
                id,
                &Event::Reply {
                    tag,
                    reply: Reply::Done,
                },
            );
        }
        Ok(())
    }

    pub(super) fn part(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        reason: Option<String>,
    ) -> Outcome {
        let key = self.resolve_room(id, room)?;
        self.require_member(id, &key)?;
        let reason = reason.map(|r| Arc::from(sanitize_text(&r).as_ref()));
        // Announce first so the leaver sees its own part.
        let nick = self.clients[&id].nick.clone().unwrap_or_default();
        let event = Event::Left {
            room: self.rooms[&key].name.clone(),
            nick,
            client: id,
            reason,
            removed_by: None,
        };
        self.broadcast(&key, &event);
        self.remove_membership(id, &key);
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
        Ok(())
    }

    pub(super) fn remove_membership(&mut self, id: ClientId, key: &str) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(index) = client.rooms.iter().position(|m| m.key == key) else {
            return;
        };
        let position = client.rooms.remove(index).position;
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        debug_assert_eq!(room.members[position].client, id, "membership position");
        if let Some(batch) = self.batch.as_mut().filter(|batch| batch.key == key) {
            // Everything said while it was here goes to the leaver first.
            batch.remove_member(position, &room.members[position], &mut self.outgoing);
        }
        room.members.swap_remove(position);
        if let Some(moved) = room.members.get(position) {
            // The last member took the leaver's place.
            let membership = self
                .clients
                .get_mut(&moved.client)
                .and_then(|client| client.rooms.iter_mut().find(|m| m.key == key));
            if let Some(membership) = membership {
                membership.position = position;
            }
        }
        if room.members.is_empty() {
            self.rooms.remove(key);
            if self.batch.as_ref().is_some_and(|batch| batch.key == key) {
                self.batch = None;
            }
            if !self.history.is_stored() {
                // Without a store a topic lasts while the room has members, as it
                // always did; a stored one stays, like the room's other settings.
                self.forget_topic(key);
            }
        }
    }

    pub(super) fn change_nick(&mut self, id: ClientId, tag: Option<Tag>, nick: &str) -> Outcome {
        let new = validate_nick(nick).map_err(|error| {
            Refusal::new(
                ErrorCode::NickInvalid,
                format!("cannot use that name: {error}"),
            )
        })?;
        let new_key = nick_key(new);
        if self.nicks.get(&new_key).is_some_and(|&owner| owner != id) {
            let why = format!("{new} is already in use");
            return Err(Refusal::new(ErrorCode::NickTaken, why));
        }
        let own = self.clients[&id]
            .account
            .as_ref()
            .is_some_and(|account| *account.key == new_key);
        if let Some(name) = self.registered.get(&new_key).filter(|_| !own) {
            let why = format!(
                "{new} is registered (as {name}); log in to use it, or choose another name"
            );
            return Err(Refusal::new(ErrorCode::NickRegistered, why));
        }
        self.rename(id, new)?;
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
        Ok(())
    }

    /// Rename `id` to `new` (checked, with a key nobody else holds) and tell everyone
    /// who shares a room with it.
    fn rename(&mut self, id: ClientId, new: &str) -> Outcome {
        let new_key = nick_key(new);
        let old = self.clients[&id].nick.clone().unwrap_or_default();
        let old_key = nick_key(&old);
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
        let audience = self.room_peers(id, true);
        self.send_to_many(&audience, &event);
        Ok(())
    }

    /// Everyone who shares a room with `id`, once each (and `id` itself if asked).
    fn room_peers(&self, id: ClientId, with_itself: bool) -> Vec<ClientId> {
        let mut audience: Vec<ClientId> = Vec::new();
        for membership in &self.clients[&id].rooms {
            audience.extend(self.rooms[&membership.key].members.iter().map(|m| m.client));
        }
        audience.sort_unstable();
        audience.dedup();
        audience.retain(|&peer| peer != id);
        if with_itself {
            audience.push(id);
        }
        audience
    }

    /// Remove a client: leave notices in each of its rooms, free its name, close its outbox.
    pub(super) fn disconnect(&mut self, id: ClientId, reason: CloseReason, message: Option<&str>) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let nick = client.nick.clone();
        let rooms: Vec<String> = client.rooms.iter().map(|m| m.key.clone()).collect();
        let outbox = client.outbox.clone();
        self.forget_commands_of(id);
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
                        removed_by: None,
                    };
                    self.broadcast(key, &event);
                }
            }
            self.nicks.remove(&nick_key(nick));
        }
        self.clients.remove(&id);
        outbox.close(reason);
    }

    pub(super) fn shutdown(&mut self) {
        self.shutting_down = true;
        self.seal_batch();
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
}
