//! The JSON protocol (version [`PROTOCOL_VERSION`], see `docs/protocol.md`), pure:
//! one JSON object in → a request or a precise error; one hub event → one JSON line.
//! Shared by JSON over TCP and WebSocket.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::door::session::AccountStep;
use crate::hub::{
    ChatMessage, ErrorCode, Event, HistoryBound, HistoryPage, HistoryScope, Render, Reply, Request,
    Tag, Target,
};

/// Bumped when a message changes incompatibly; sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted request `id`, in bytes of its JSON text.
pub const MAX_ID_BYTES: usize = 128;
/// How much of an over-long message is kept to find its `id` in.
pub const OVERSIZE_HEAD_BYTES: usize = 512;

/// What one client message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Choose a nickname: registers a new connection, renames a registered one.
    Nick(String),
    /// Something about the client's account (`{"type":"auth",...}`).
    Account(AccountStep),
    /// Anything else, for the hub.
    Hub(Request),
}

/// A message that cannot be carried out, with what to tell the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub text: String,
}

fn refuse(code: ErrorCode, text: impl Into<String>) -> Refusal {
    Refusal {
        code,
        text: text.into(),
    }
}

/// One decoded message: its `id` (if it carried a usable one) and what it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tag: Option<Tag>,
    pub message: Result<ClientMessage, Refusal>,
}

/// The `id` as the JSON text to echo back: strings and numbers only, bounded.
fn tag_of(value: &Value) -> Result<Tag, Refusal> {
    match value {
        Value::String(_) | Value::Number(_) => {
            let text = value.to_string();
            if text.len() > MAX_ID_BYTES {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    format!("\"id\" is longer than {MAX_ID_BYTES} bytes"),
                ));
            }
            Ok(text.into())
        }
        _ => Err(refuse(
            ErrorCode::BadRequest,
            "\"id\" must be a string or a number",
        )),
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn optional_str(&self, name: &str) -> Result<Option<&'a str>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(refuse(
                ErrorCode::BadRequest,
                format!("field \"{name}\" must be a string"),
            )),
        }
    }

    fn required_str(&self, name: &str) -> Result<&'a str, Refusal> {
        self.optional_str(name)?.ok_or_else(|| {
            refuse(
                ErrorCode::BadRequest,
                format!("missing field \"{name}\" (a string)"),
            )
        })
    }

    fn optional_u64(&self, name: &str) -> Result<Option<u64>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                refuse(
                    ErrorCode::BadRequest,
                    format!("field \"{name}\" must be a whole number, 0 or more"),
                )
            }),
        }
    }

    fn optional_bool(&self, name: &str) -> Result<bool, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(value)) => Ok(*value),
            Some(_) => Err(refuse(
                ErrorCode::BadRequest,
                format!("field \"{name}\" must be true or false"),
            )),
        }
    }

    /// A setting that can be cleared: absent leaves it (`None`), `null` clears it
    /// (`Some(None)`), a string sets it.
    fn set_or_clear(&self, name: &str) -> Result<Option<Option<String>>, Refusal> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(text)) => Ok(Some(Some(text.clone()))),
            Some(_) => Err(refuse(
                ErrorCode::BadRequest,
                format!("field \"{name}\" must be a string, or null to clear it"),
            )),
        }
    }

    /// `true`, `false`, or absent (`None`).
    fn maybe_bool(&self, name: &str) -> Result<Option<bool>, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(_) => Err(refuse(
                ErrorCode::BadRequest,
                format!("field \"{name}\" must be true or false"),
            )),
        }
    }

    /// A duration: seconds as a number, or text like `"10m"`, `"2h"`, `"7d"`.
    fn optional_duration(&self, name: &str) -> Result<Option<std::time::Duration>, Refusal> {
        let bad = |why: String| refuse(ErrorCode::BadRequest, format!("field \"{name}\": {why}"));
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(seconds)) => match seconds.as_f64() {
                Some(seconds) if seconds > 0.0 && seconds < 1e10 => {
                    Ok(Some(std::time::Duration::from_secs_f64(seconds)))
                }
                _ => Err(bad("a number of seconds above zero".into())),
            },
            Some(Value::String(text)) => text
                .parse::<crate::config::Seconds>()
                .map(|duration| Some(duration.0))
                .map_err(bad),
            Some(_) => Err(bad("seconds, or text like \"10m\"".into())),
        }
    }

    fn optional_string(&self, name: &str) -> Result<Option<String>, Refusal> {
        Ok(self.optional_str(name)?.map(str::to_owned))
    }

    /// A required list of strings.
    fn string_list(&self, name: &str) -> Result<Vec<String>, Refusal> {
        let wrong = || {
            refuse(
                ErrorCode::BadRequest,
                format!("field \"{name}\" must be a list of strings"),
            )
        };
        match self.0.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
                .collect(),
            _ => Err(wrong()),
        }
    }

    /// `text` and/or `data`: at least one.
    /// Any JSON value but null, as given.
    fn any(&self, name: &str) -> Option<crate::hub::Data> {
        match self.0.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Arc::new(value.clone())),
        }
    }

    fn content(&self) -> Result<(String, Option<crate::hub::Data>), Refusal> {
        let text = self.optional_string("text")?;
        let data = match self.0.get("data") {
            None | Some(Value::Null) => None,
            Some(value) => Some(Arc::new(value.clone())),
        };
        if text.is_none() && data.is_none() {
            return Err(refuse(
                ErrorCode::BadRequest,
                "missing field \"text\" (a string) or \"data\" (any JSON value)",
            ));
        }
        Ok((text.unwrap_or_default(), data))
    }
}

/// Decode one message (a JSON object; its bytes are already within the size cap).
pub fn decode(bytes: &[u8]) -> Decoded {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => {
            return Decoded {
                tag: None,
                message: Err(refuse(
                    ErrorCode::BadRequest,
                    format!("malformed JSON: {error}"),
                )),
            }
        }
    };
    let Value::Object(object) = value else {
        return Decoded {
            tag: None,
            message: Err(refuse(
                ErrorCode::BadRequest,
                "each message must be a JSON object",
            )),
        };
    };
    decode_object(object)
}

/// Decode one message already parsed into a JSON object (the UDP door's datagrams,
/// with their `token` and `seq` taken out).
pub fn decode_object(object: serde_json::Map<String, Value>) -> Decoded {
    let tag = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(id) => match tag_of(id) {
            Ok(tag) => Some(tag),
            Err(refusal) => {
                return Decoded {
                    tag: None,
                    message: Err(refusal),
                }
            }
        },
    };
    let message = decode_fields(&Fields(&object));
    Decoded { tag, message }
}

fn decode_fields(fields: &Fields<'_>) -> Result<ClientMessage, Refusal> {
    let kind = match fields.0.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(refuse(
                ErrorCode::BadRequest,
                "field \"type\" must be a string",
            ))
        }
        None => {
            return Err(refuse(
                ErrorCode::BadRequest,
                "missing field \"type\" (a string)",
            ))
        }
    };
    let request = match kind {
        "nick" => return Ok(ClientMessage::Nick(fields.required_str("nick")?.into())),
        "auth" => return auth(fields).map(ClientMessage::Account),
        "join" => Request::Join {
            room: fields.required_str("room")?.into(),
            key: fields.optional_string("key")?,
        },
        "part" => Request::Part {
            room: fields.optional_string("room")?,
            reason: fields.optional_string("reason")?,
        },
        "say" | "action" => {
            let (text, data) = fields.content()?;
            let action = kind == "action";
            // An action may go to a room (default) or, with "to", privately.
            match fields.optional_string("to")? {
                Some(to) if action => Request::Whisper {
                    to,
                    text,
                    data,
                    action,
                },
                _ => Request::Say {
                    room: fields.optional_string("room")?,
                    text,
                    data,
                    action,
                },
            }
        }
        "msg" => {
            let to = fields.required_str("to")?.into();
            let (text, data) = fields.content()?;
            Request::Whisper {
                to,
                text,
                data,
                action: false,
            }
        }
        "rooms" => Request::Rooms,
        "members" => Request::Who {
            room: fields.optional_string("room")?,
        },
        "whois" => Request::Whois {
            nick: fields.required_str("nick")?.into(),
        },
        "away" => Request::Away {
            message: fields.optional_string("text")?,
        },
        "counts" => Request::Counts,
        "online" => Request::Present {
            nicks: fields.string_list("nicks")?,
        },
        "topic" => Request::Topic {
            room: fields.optional_string("room")?,
            text: fields.optional_string("text")?,
        },
        "moderate" => Request::Moderate {
            room: fields.optional_string("room")?,
            action: moderation(fields)?,
        },
        "kill" => Request::Kill {
            nick: fields.required_str("nick")?.into(),
            reason: fields.optional_string("reason")?,
        },
        "command" => Request::Command {
            to: fields.required_str("to")?.into(),
            name: fields.required_str("name")?.into(),
            args: fields.any("args"),
        },
        "command_result" => Request::CommandResult {
            id: fields.optional_u64("id")?.ok_or_else(|| {
                refuse(
                    ErrorCode::BadRequest,
                    "missing field \"id\" (the command's id, a whole number)",
                )
            })?,
            ok: match fields.maybe_bool("ok")? {
                Some(ok) => ok,
                None => {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "missing field \"ok\" (true or false)",
                    ))
                }
            },
            result: fields.any("result"),
            error: fields.optional_string("error")?,
        },
        "device" => return device(fields).map(ClientMessage::Account),
        "ping" => Request::Ping,
        "quit" => Request::Quit {
            reason: fields.optional_string("reason")?,
        },
        "history" => {
            // Each end by message id or by time (ms since the epoch), not both.
            let bound = |id: Option<u64>, ms: Option<u64>, name: &str| match (id, ms) {
                (Some(_), Some(_)) => Err(refuse(
                    ErrorCode::BadRequest,
                    format!("give {name} or {name}_time, not both"),
                )),
                (id, ms) => Ok(id.map(HistoryBound::Id).or(ms.map(HistoryBound::Millis))),
            };
            let before = bound(
                fields.optional_u64("before")?,
                fields.optional_u64("before_time")?,
                "before",
            )?;
            let after = bound(
                fields.optional_u64("after")?,
                fields.optional_u64("after_time")?,
                "after",
            )?;
            let limit = fields.optional_u64("limit")?.map(|n| n as usize);
            let newest = fields.optional_bool("newest")?;
            match fields.optional_string("with")? {
                Some(with) => Request::PrivateHistory {
                    with,
                    before,
                    after,
                    limit,
                    newest,
                },
                None => Request::History {
                    room: fields.optional_string("room")?,
                    before,
                    after,
                    limit,
                    newest,
                },
            }
        }
        other => {
            let mut shown: String = other.chars().take(32).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err(refuse(
                ErrorCode::UnknownCommand,
                format!("unknown message type {shown:?}"),
            ));
        }
    };
    Ok(ClientMessage::Hub(request))
}

/// `{"type":"moderate","action":...}`: see [`Moderation`].
fn moderation(fields: &Fields<'_>) -> Result<crate::chat::Moderation, Refusal> {
    use crate::chat::Moderation;
    let nick = || fields.required_str("nick").map(str::to_owned);
    let target = || fields.required_str("target").map(str::to_owned);
    let reason = || fields.optional_string("reason");
    Ok(match fields.required_str("action")? {
        "kick" => Moderation::Kick {
            nick: nick()?,
            reason: reason()?,
        },
        "ban" => Moderation::Ban {
            target: target()?,
            duration: fields.optional_duration("duration")?,
            reason: reason()?,
        },
        "unban" => Moderation::Unban { target: target()? },
        "mute" => Moderation::Mute {
            target: target()?,
            duration: fields.optional_duration("duration")?,
            reason: reason()?,
        },
        "unmute" => Moderation::Unmute { target: target()? },
        "op" => Moderation::Op { nick: nick()? },
        "deop" => Moderation::Deop { nick: nick()? },
        "invite" => Moderation::Invite { nick: nick()? },
        "mode" => Moderation::Mode {
            invite_only: fields.maybe_bool("invite_only")?,
            registered_only: fields.maybe_bool("registered_only")?,
            key: fields.set_or_clear("key")?,
            moderated: fields.maybe_bool("moderated")?,
            topic_locked: fields.maybe_bool("topic_locked")?,
        },
        "rules" => Moderation::Rules,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "unknown moderation action {shown:?}; use kick, ban, unban, mute, unmute, \
                     op, deop, invite, mode or rules"
                ),
            ));
        }
    })
}

/// `{"type":"device","action":"add"|"remove"|"list","name":...}`: the devices the
/// signed-in account owns.
fn device(fields: &Fields<'_>) -> Result<AccountStep, Refusal> {
    Ok(match fields.required_str("action")? {
        "add" => AccountStep::AddDevice {
            name: fields.required_str("name")?.into(),
        },
        "remove" => AccountStep::RemoveDevice {
            name: fields.required_str("name")?.into(),
        },
        "list" => AccountStep::ListDevices,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("unknown device action {shown:?}; use add, remove or list"),
            ));
        }
    })
}

/// `{"type":"auth","action":...}`: log in, register, change the password, drop the
/// account, log out.
fn auth(fields: &Fields<'_>) -> Result<AccountStep, Refusal> {
    let password = || fields.required_str("password").map(str::to_owned);
    let remember = fields.optional_bool("remember")?;
    Ok(match fields.required_str("action")? {
        "login" => AccountStep::Login {
            name: fields.required_str("nick")?.into(),
            password: password()?,
            remember,
        },
        "token" => AccountStep::Token {
            token: fields.required_str("token")?.into(),
        },
        "register" => AccountStep::Register {
            password: password()?,
            remember,
            name: None,
        },
        "password" => AccountStep::Password {
            old: password()?,
            new: fields.required_str("new_password")?.into(),
        },
        "drop" => AccountStep::Drop {
            password: password()?,
        },
        "logout" => AccountStep::Logout {
            token: fields.optional_string("token")?,
        },
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "unknown auth action {shown:?}; use login, token, register, password, drop or logout"
                ),
            ));
        }
    })
}

/// Best effort: find a top-level-looking `"id": "..."` or `"id": 123` in the start of a
/// message too big to parse, so even that error can carry the request id back.
pub fn sniff_id(head: &[u8]) -> Option<Tag> {
    let mut from = 0;
    while let Some(offset) = memchr::memmem::find(&head[from..], b"\"id\"") {
        let mut at = from + offset + 4;
        from = at;
        while head.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if head.get(at) != Some(&b':') {
            continue;
        }
        at += 1;
        while head.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let start = at;
        match head.get(at) {
            Some(b'"') => {
                at += 1;
                while let Some(&byte) = head.get(at) {
                    at += 1;
                    match byte {
                        b'\\' => at += 1,
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                while head
                    .get(at)
                    .is_some_and(|b| b.is_ascii_digit() || b"-+.eE".contains(b))
                {
                    at += 1;
                }
            }
            _ => continue,
        }
        let value: Value = serde_json::from_slice(head.get(start..at)?).ok()?;
        return tag_of(&value).ok();
    }
    None
}

/// Renders hub events as JSON lines (one object and a newline per event).
#[derive(Debug, Default)]
pub struct JsonRender;

impl JsonRender {
    pub fn new() -> Arc<Self> {
        Arc::new(JsonRender)
    }

    /// The JSON object for `event`, or `None` for events this protocol does not show.
    pub fn to_value(&self, event: &Event) -> Option<Value> {
        let value = match event {
            Event::Welcome { client, nick } => json!({
                "type": "welcome",
                "client": client,
                "nick": &**nick,
                "protocol": PROTOCOL_VERSION,
                "server": concat!("switchboard ", env!("CARGO_PKG_VERSION")),
            }),
            Event::Joined {
                room,
                nick,
                client,
                account,
            } => {
                let mut value = json!({
                    "type": "joined", "room": &**room, "nick": &**nick, "client": client,
                });
                if let Some(account) = account {
                    value["account"] = json!(&**account);
                }
                value
            }
            // Asked for with whois; not pushed to every program in the rooms.
            Event::AwayChanged { .. } => return None,
            Event::Left {
                room,
                nick,
                client,
                reason,
                removed_by,
            } => {
                let mut value = json!({
                    "type": "left", "room": &**room, "nick": &**nick, "client": client,
                });
                if let Some(reason) = reason {
                    value["reason"] = json!(&**reason);
                }
                if let Some(by) = removed_by {
                    value["removed_by"] = json!(&**by);
                }
                value
            }
            Event::Message(message) => message_value(message, false),
            Event::Replay(page) => {
                let mut value = history_value(page);
                value["replay"] = json!(true);
                value
            }
            Event::NickChanged { old, new, client } => json!({
                "type": "nick", "old": &**old, "new": &**new, "client": client,
            }),
            Event::Invited { room, by } => json!({
                "type": "invited", "room": &**room, "by": &**by,
            }),
            Event::IsAway { nick, text } => json!({
                "type": "is_away", "nick": &**nick, "text": &**text,
            }),
            Event::TopicChanged { room, nick, text } => json!({
                "type": "topic_changed", "room": &**room, "nick": &**nick, "text": &**text,
            }),
            Event::Notice { text } => json!({ "type": "notice", "text": &**text }),
            Event::Reply { tag, reply } => {
                let mut value = match reply {
                    Reply::Done => json!({ "type": "ok" }),
                    Reply::Pong => json!({ "type": "pong" }),
                    Reply::Rooms(rooms) => json!({
                        "type": "rooms",
                        "rooms": rooms
                            .iter()
                            .map(|r| json!({ "name": &*r.name, "members": r.members }))
                            .collect::<Vec<_>>(),
                    }),
                    Reply::Who {
                        room,
                        members,
                        devices,
                        away,
                        operators,
                    } => json!({
                        "type": "members",
                        "room": &**room,
                        "members": members.iter().map(|m| &**m).collect::<Vec<_>>(),
                        "devices": devices.iter().map(|m| &**m).collect::<Vec<_>>(),
                        "away": away.iter().map(|m| &**m).collect::<Vec<_>>(),
                        "operators": operators.iter().map(|m| &**m).collect::<Vec<_>>(),
                    }),
                    Reply::CommandResult(outcome) => {
                        let mut value = json!({
                            "type": "command_result",
                            "from": &*outcome.from,
                            "name": &*outcome.name,
                            "ok": outcome.ok,
                        });
                        if let Some(result) = &outcome.result {
                            value["result"] = (**result).clone();
                        }
                        if let Some(error) = &outcome.error {
                            value["error"] = json!(&**error);
                        }
                        value
                    }
                    Reply::DeviceAdded { name, token } => json!({
                        "type": "device_added", "name": &**name, "token": &*token.secret,
                    }),
                    Reply::DeviceRemoved { name } => {
                        json!({ "type": "device_removed", "name": &**name })
                    }
                    Reply::Devices(names) => json!({
                        "type": "devices",
                        "devices": names.iter().map(|name| &**name).collect::<Vec<_>>(),
                    }),
                    Reply::History(page) => history_value(page),
                    Reply::Away { away } => json!({ "type": "away", "away": away }),
                    Reply::Counts { users, rooms } => {
                        json!({ "type": "counts", "users": users, "rooms": rooms })
                    }
                    Reply::Present(nicks) => json!({
                        "type": "online",
                        "nicks": nicks.iter().map(|nick| &**nick).collect::<Vec<_>>(),
                    }),
                    Reply::Topic { room, topic } => match topic {
                        Some(topic) => json!({
                            "type": "topic",
                            "room": &**room,
                            "text": &*topic.text,
                            "set_by": &*topic.set_by,
                            "time": topic.time.duration_since(UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64),
                        }),
                        None => json!({ "type": "topic", "room": &**room, "text": null }),
                    },
                    Reply::SignedIn {
                        account,
                        created,
                        token,
                    } => {
                        let mut value = json!({
                            "type": "signed_in", "account": &**account, "created": created,
                        });
                        if let Some(token) = token {
                            value["token"] = json!(&*token.secret);
                            value["token_expires"] = json!(token
                                .expires
                                .duration_since(UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64));
                        }
                        value
                    }
                    Reply::PasswordChanged => json!({ "type": "password_changed" }),
                    Reply::AccountDropped { account } => {
                        json!({ "type": "account_dropped", "account": &**account })
                    }
                    Reply::KeptFor { nick } => json!({ "type": "kept", "for": &**nick }),
                    Reply::Rules(rules) => {
                        let list = |items: &[crate::chat::RestrictionView]| -> Vec<Value> {
                            items
                                .iter()
                                .map(|item| {
                                    json!({
                                        "target": item.target,
                                        "by": &*item.by,
                                        "reason": item.reason.as_deref(),
                                        "expires": item.expires.map(|t| t
                                            .duration_since(UNIX_EPOCH)
                                            .map_or(0, |d| d.as_millis() as u64)),
                                    })
                                })
                                .collect()
                        };
                        json!({
                            "type": "rules",
                            "room": &*rules.room,
                            "owner": rules.owner.as_deref(),
                            "operators": rules.operators.iter().map(|op| &**op).collect::<Vec<_>>(),
                            "invite_only": rules.invite_only,
                            "registered_only": rules.registered_only,
                            "has_key": rules.has_key,
                            // Only in an operator's answer.
                            "key": rules.key.as_deref(),
                            "moderated": rules.moderated,
                            "topic_locked": rules.topic_locked,
                            "bans": list(&rules.bans),
                            "mutes": list(&rules.mutes),
                        })
                    }
                    Reply::Whois(info) => json!({
                        "type": "whois",
                        "nick": &*info.nick,
                        "client": info.client,
                        "door": info.door,
                        "rooms": info.rooms.iter().map(|r| &**r).collect::<Vec<_>>(),
                        "connected_for_secs": info.connected_for_secs,
                        "away": info.away.as_deref(),
                        "account": info.account.as_deref(),
                        "address": info.address.map(|address| address.to_string()),
                        "device": info.device,
                    }),
                };
                set_tag(&mut value, tag);
                value
            }
            Event::Error {
                tag, code, text, ..
            } => {
                let mut value = json!({ "type": "error", "code": code.as_str(), "text": &**text });
                set_tag(&mut value, tag);
                value
            }
            Event::Command(command) => {
                let mut value = json!({
                    "type": "command",
                    "id": command.id,
                    "from": &*command.from,
                    "name": &*command.name,
                });
                if let Some(args) = &command.args {
                    value["args"] = (**args).clone();
                }
                value
            }
        };
        Some(value)
    }
}

/// A chat message as JSON; `history` marks one replayed or paged from history.
fn message_value(message: &ChatMessage, history: bool) -> Value {
    let time = message
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut value = json!({
        "type": "message",
        "id": message.id,
        "time": time,
        "from": &*message.from,
        "from_client": message.from_client,
        "text": &*message.text,
    });
    match &message.target {
        Target::Room(room) => value["room"] = json!(&**room),
        Target::Private(to) => value["to"] = json!(&**to),
    }
    if message.action {
        value["action"] = json!(true);
    }
    if message.notice {
        value["notice"] = json!(true);
    }
    if let Some(account) = &message.account {
        value["account"] = json!(&**account);
    }
    if let Some(data) = &message.data {
        value["data"] = (**data).clone();
    }
    if history {
        value["history"] = json!(true);
    }
    value
}

/// A page of history: `{"type":"history","room"|"with":..,"messages":[..],"more":..}`.
fn history_value(page: &HistoryPage) -> Value {
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(|message| message_value(message, true))
        .collect();
    let mut value = json!({ "type": "history", "messages": messages, "more": page.more });
    match &page.scope {
        HistoryScope::Room(room) => value["room"] = json!(&**room),
        HistoryScope::Private(with) => value["with"] = json!(&**with),
        HistoryScope::Offline => value["offline"] = json!(true),
    }
    value
}

fn set_tag(value: &mut Value, tag: &Option<Tag>) {
    if let Some(tag) = tag {
        // The tag holds the id's own JSON text, so it echoes back with its type.
        if let Ok(id) = serde_json::from_str::<Value>(tag) {
            value["id"] = id;
        }
    }
}

impl Render for JsonRender {
    fn render(&self, event: &Event) -> Option<Bytes> {
        let value = self.to_value(event)?;
        let mut out = serde_json::to_vec(&value).ok()?;
        out.push(b'\n');
        Some(Bytes::from(out))
    }

    fn carries_commands(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ChatMessage;
    use std::time::SystemTime;

    fn refusal(text: &str) -> (Option<Tag>, ErrorCode) {
        let decoded = decode(text.as_bytes());
        (decoded.tag, decoded.message.unwrap_err().code)
    }

    #[test]
    fn decodes_history_queries() {
        let room = decode(br##"{"type":"history","room":"#rust","before":40,"limit":10}"##);
        assert_eq!(
            room.message,
            Ok(ClientMessage::Hub(Request::History {
                room: Some("#rust".into()),
                before: Some(HistoryBound::Id(40)),
                after: None,
                limit: Some(10),
                newest: false,
            }))
        );
        let private = decode(br#"{"type":"history","with":"bob","after":3}"#);
        assert_eq!(
            private.message,
            Ok(ClientMessage::Hub(Request::PrivateHistory {
                with: "bob".into(),
                before: None,
                after: Some(HistoryBound::Id(3)),
                limit: None,
                newest: false,
            }))
        );
        let by_time = decode(br#"{"type":"history","before_time":1765119600000}"#);
        assert!(matches!(
            by_time.message,
            Ok(ClientMessage::Hub(Request::History {
                before: Some(HistoryBound::Millis(1_765_119_600_000)),
                ..
            }))
        ));
        assert_eq!(
            refusal(r#"{"type":"history","after":3,"after_time":5}"#).1,
            ErrorCode::BadRequest
        );
        let newest = decode(br#"{"type":"history","after":3,"newest":true}"#);
        assert!(matches!(
            newest.message,
            Ok(ClientMessage::Hub(Request::History {
                after: Some(HistoryBound::Id(3)),
                newest: true,
                ..
            }))
        ));
    }

    #[test]
    fn a_notice_and_the_senders_account_are_shown() {
        let message = Event::Message(Arc::new(ChatMessage {
            id: 2,
            time: SystemTime::UNIX_EPOCH,
            target: Target::Private("bob".into()),
            from: "alice".into(),
            from_client: 3,
            text: "fyi".into(),
            data: None,
            action: false,
            notice: true,
            account: Some("Alice".into()),
        }));
        let value: Value =
            serde_json::from_slice(&JsonRender::new().render(&message).unwrap()).unwrap();
        assert_eq!(
            (&value["notice"], &value["account"]),
            (&json!(true), &json!("Alice"))
        );
    }

    #[test]
    fn history_pages_mark_every_message_as_history() {
        let message = Arc::new(ChatMessage {
            id: 7,
            time: SystemTime::UNIX_EPOCH,
            target: Target::Room("#general".into()),
            from: "ann".into(),
            from_client: 1,
            text: "earlier".into(),
            data: None,
            action: false,
            notice: false,
            account: None,
        });
        let page = Arc::new(HistoryPage {
            scope: HistoryScope::Room("#general".into()),
            messages: vec![message],
            more: true,
        });
        let replay = JsonRender.to_value(&Event::Replay(page.clone())).unwrap();
        assert_eq!(replay["type"], "history");
        assert_eq!(replay["replay"], true);
        assert_eq!(replay["room"], "#general");
        assert_eq!(replay["more"], true);
        assert_eq!(replay["messages"][0]["history"], true);
        assert_eq!(replay["messages"][0]["id"], 7);
        let reply = JsonRender
            .to_value(&Event::Reply {
                tag: Some("\"q\"".into()),
                reply: Reply::History(page),
            })
            .unwrap();
        assert_eq!(reply["id"], "q");
        assert!(reply.get("replay").is_none());
    }

    #[test]
    fn decodes_every_request_type() {
        let cases: Vec<(&str, ClientMessage)> = vec![
            (
                r#"{"type":"nick","nick":"ann"}"#,
                ClientMessage::Nick("ann".into()),
            ),
            (
                r##"{"type":"join","room":"#rust"}"##,
                ClientMessage::Hub(Request::Join {
                    room: "#rust".into(),
                    key: None,
                }),
            ),
            (
                r##"{"type":"join","room":"#vault","key":"Sesame"}"##,
                ClientMessage::Hub(Request::Join {
                    room: "#vault".into(),
                    key: Some("Sesame".into()),
                }),
            ),
            (
                r#"{"type":"part"}"#,
                ClientMessage::Hub(Request::Part {
                    room: None,
                    reason: None,
                }),
            ),
            (
                r#"{"type":"say","text":"hi","extra":1}"#,
                ClientMessage::Hub(Request::Say {
                    room: None,
                    text: "hi".into(),
                    data: None,
                    action: false,
                }),
            ),
            (
                r#"{"type":"action","to":"bob","text":"waves"}"#,
                ClientMessage::Hub(Request::Whisper {
                    to: "bob".into(),
                    text: "waves".into(),
                    data: None,
                    action: true,
                }),
            ),
            (
                r#"{"type":"msg","to":"bob","data":{"cmd":"land"}}"#,
                ClientMessage::Hub(Request::Whisper {
                    to: "bob".into(),
                    text: "".into(),
                    data: Some(Arc::new(json!({"cmd":"land"}))),
                    action: false,
                }),
            ),
            (r#"{"type":"rooms"}"#, ClientMessage::Hub(Request::Rooms)),
            (
                r##"{"type":"topic","room":"#a","text":""}"##,
                ClientMessage::Hub(Request::Topic {
                    room: Some("#a".into()),
                    text: Some(String::new()),
                }),
            ),
            (r#"{"type":"counts"}"#, ClientMessage::Hub(Request::Counts)),
            (
                r#"{"type":"online","nicks":["a","b"]}"#,
                ClientMessage::Hub(Request::Present {
                    nicks: vec!["a".into(), "b".into()],
                }),
            ),
            (
                r#"{"type":"topic"}"#,
                ClientMessage::Hub(Request::Topic {
                    room: None,
                    text: None,
                }),
            ),
            (
                r#"{"type":"members"}"#,
                ClientMessage::Hub(Request::Who { room: None }),
            ),
            (
                r#"{"type":"whois","nick":"bob"}"#,
                ClientMessage::Hub(Request::Whois { nick: "bob".into() }),
            ),
            (r#"{"type":"ping"}"#, ClientMessage::Hub(Request::Ping)),
            (
                r#"{"type":"quit","reason":"bye"}"#,
                ClientMessage::Hub(Request::Quit {
                    reason: Some("bye".into()),
                }),
            ),
            (
                r##"{"type":"moderate","room":"#v","action":"mode","key":"Sesame"}"##,
                ClientMessage::Hub(Request::Moderate {
                    room: Some("#v".into()),
                    action: crate::chat::Moderation::Mode {
                        invite_only: None,
                        registered_only: None,
                        key: Some(Some("Sesame".into())),
                        moderated: None,
                        topic_locked: None,
                    },
                }),
            ),
            (
                r##"{"type":"moderate","action":"mode","key":null,"invite_only":false}"##,
                ClientMessage::Hub(Request::Moderate {
                    room: None,
                    action: crate::chat::Moderation::Mode {
                        invite_only: Some(false),
                        registered_only: None,
                        key: Some(None),
                        moderated: None,
                        topic_locked: None,
                    },
                }),
            ),
            (
                r##"{"type":"moderate","action":"mode","moderated":true,"topic_locked":false}"##,
                ClientMessage::Hub(Request::Moderate {
                    room: None,
                    action: crate::chat::Moderation::Mode {
                        invite_only: None,
                        registered_only: None,
                        key: None,
                        moderated: Some(true),
                        topic_locked: Some(false),
                    },
                }),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(decode(text.as_bytes()).message, Ok(expected), "{text}");
        }
    }

    #[test]
    fn ids_echo_with_their_type_and_errors_are_precise() {
        assert_eq!(
            decode(br#"{"type":"ping","id":"a1"}"#).tag.as_deref(),
            Some("\"a1\"")
        );
        assert_eq!(
            decode(br#"{"type":"ping","id":7}"#).tag.as_deref(),
            Some("7")
        );
        assert_eq!(refusal("{not json"), (None, ErrorCode::BadRequest));
        assert_eq!(refusal("[1,2]"), (None, ErrorCode::BadRequest));
        assert_eq!(
            refusal(r#"{"type":"dance","id":1}"#),
            (Some("1".into()), ErrorCode::UnknownCommand)
        );
        assert_eq!(
            refusal(r#"{"type":"history","before":-1,"id":1}"#),
            (Some("1".into()), ErrorCode::BadRequest)
        );
        assert_eq!(
            refusal(r#"{"type":"say","id":2}"#),
            (Some("2".into()), ErrorCode::BadRequest)
        );
        assert_eq!(
            refusal(r#"{"type":"join","room":5,"id":3}"#),
            (Some("3".into()), ErrorCode::BadRequest)
        );
        assert_eq!(
            refusal(r#"{"id":4}"#),
            (Some("4".into()), ErrorCode::BadRequest)
        );
        assert_eq!(
            refusal(r#"{"type":"ping","id":{"x":1}}"#),
            (None, ErrorCode::BadRequest)
        );
    }

    #[test]
    fn sniffs_the_id_of_an_oversized_message() {
        assert_eq!(
            sniff_id(br#"{"type":"say","id" : "big-1","text":"xxxx"#).as_deref(),
            Some("\"big-1\"")
        );
        assert_eq!(
            sniff_id(br#"{"id":42,"type":"say","text":"xxxx"#).as_deref(),
            Some("42")
        );
        assert_eq!(sniff_id(br#"{"text":"id","type":"say""#), None);
        assert_eq!(sniff_id(br#"{"text":"\"id\": 5"#), None);
        assert_eq!(sniff_id(br#"{"id":"unterminated"#), None);
    }

    #[test]
    fn renders_messages_with_data_and_replies_with_ids() {
        let render = JsonRender::new();
        let message = Event::Message(Arc::new(ChatMessage {
            id: 9,
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500),
            target: Target::Room("#general".into()),
            from: "drone1".into(),
            from_client: 3,
            text: "".into(),
            data: Some(Arc::new(json!({"alt": 120}))),
            action: false,
            notice: false,
            account: None,
        }));
        let line = render.render(&message).unwrap();
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            json!({"type":"message","id":9,"time":1500,"from":"drone1","from_client":3,
                   "text":"","room":"#general","data":{"alt":120}})
        );
        let error = Event::Error {
            tag: Some("\"q\"".into()),
            code: ErrorCode::NickTaken,
            text: "taken".into(),
            about: None,
        };
        let value: Value = serde_json::from_slice(&render.render(&error).unwrap()).unwrap();
        assert_eq!(
            value,
            json!({"type":"error","id":"q","code":"nick_taken","text":"taken"})
        );
    }
}
