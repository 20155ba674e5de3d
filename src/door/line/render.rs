//! How hub events look on the plain-text door: the seed's `[name] text` for the
//! default room, `#room [name] text` elsewhere, `*** ` for notices, `error: ` for errors.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use crate::hub::{Event, Reply, Target};
use crate::text::fold_case;

/// Renders events for netcat, telnet, the seed clients and `switchboard chat`.
pub struct LineRender {
    /// Messages in this room keep the seed's bare `[name] text` form.
    default_room_key: String,
}

impl LineRender {
    pub fn new(default_room: &str) -> Arc<Self> {
        Arc::new(LineRender {
            default_room_key: fold_case(default_room),
        })
    }

    fn room_prefix(&self, out: &mut String, room: &str) {
        if fold_case(room) != self.default_room_key {
            out.push_str(room);
            out.push(' ');
        }
    }

    /// Appends the text form of `event` to `out` (without the newline).
    pub fn write_event(&self, out: &mut String, event: &Event) -> bool {
        match event {
            Event::Welcome { client, nick } => {
                let _ = write!(
                    out,
                    "*** welcome, {nick}! you are client {client}; /help lists the commands"
                );
            }
            Event::Joined { room, nick, .. } => {
                let _ = write!(out, "*** {nick} joined {room}");
            }
            Event::Left {
                room, nick, reason, ..
            } => {
                let _ = write!(out, "*** {nick} left {room}");
                if let Some(reason) = reason {
                    let _ = write!(out, " ({reason})");
                }
            }
            Event::Message(message) => {
                match &message.target {
                    Target::Room(room) => {
                        self.room_prefix(out, room);
                        if message.action {
                            let _ = write!(out, "* {} {}", message.from, message.text);
                        } else {
                            let _ = write!(out, "[{}] {}", message.from, message.text);
                        }
                    }
                    Target::Private(to) => {
                        if message.action {
                            let _ = write!(
                                out,
                                "[{} -> {}] * {} {}",
                                message.from, to, message.from, message.text
                            );
                        } else {
                            let _ = write!(out, "[{} -> {}] {}", message.from, to, message.text);
                        }
                    }
                }
                if let Some(data) = &message.data {
                    // serde_json escapes control characters, so this cannot start a new line.
                    if !message.text.is_empty() {
                        out.push(' ');
                    }
                    let _ = write!(out, "{data}");
                }
            }
            Event::NickChanged { old, new, .. } => {
                let _ = write!(out, "*** {old} is now known as {new}");
            }
            Event::Notice { text } => {
                let _ = write!(out, "*** {text}");
            }
            Event::Reply { reply, .. } => match reply {
                Reply::Done => return false,
                Reply::Pong => out.push_str("*** pong"),
                Reply::Rooms(rooms) => {
                    out.push_str("*** rooms:");
                    if rooms.is_empty() {
                        out.push_str(" none");
                    }
                    for (index, room) in rooms.iter().enumerate() {
                        let separator = if index == 0 { " " } else { ", " };
                        let _ = write!(out, "{separator}{} ({})", room.name, room.members);
                    }
                }
                Reply::Who { room, members } => {
                    let _ = write!(
                        out,
                        "*** {room} has {} member{}:",
                        members.len(),
                        if members.len() == 1 { "" } else { "s" }
                    );
                    for (index, nick) in members.iter().enumerate() {
                        let separator = if index == 0 { " " } else { ", " };
                        let _ = write!(out, "{separator}{nick}");
                    }
                }
                Reply::Whois(info) => {
                    let _ = write!(
                        out,
                        "*** {} is client {}, connected via {} for {}s, in",
                        info.nick, info.client, info.door, info.connected_for_secs
                    );
                    if info.rooms.is_empty() {
                        out.push_str(" no rooms");
                    }
                    for room in &info.rooms {
                        let _ = write!(out, " {room}");
                    }
                }
            },
            Event::Error { text, .. } => {
                let _ = write!(out, "error: {text}");
            }
        }
        true
    }
}

impl crate::hub::Render for LineRender {
    fn render(&self, event: &Event) -> Option<Bytes> {
        let mut out = String::with_capacity(64);
        if !self.write_event(&mut out, event) {
            return None;
        }
        out.push('\n');
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ChatMessage, Render};
    use std::time::SystemTime;

    fn text(event: Event) -> String {
        let bytes = LineRender::new("#general")
            .render(&event)
            .expect("rendered");
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn message(target: Target, text: &str, action: bool) -> Event {
        Event::Message(Arc::new(ChatMessage {
            id: 1,
            time: SystemTime::now(),
            target,
            from: "alice".into(),
            from_client: 1,
            text: text.into(),
            data: None,
            action,
        }))
    }

    #[test]
    fn seed_format_in_the_default_room() {
        assert_eq!(
            text(message(Target::Room("#general".into()), "hi", false)),
            "[alice] hi\n"
        );
        assert_eq!(
            text(message(Target::Room("#rust".into()), "hi", false)),
            "#rust [alice] hi\n"
        );
        assert_eq!(
            text(message(Target::Room("#general".into()), "waves", true)),
            "* alice waves\n"
        );
        assert_eq!(
            text(message(Target::Private("bob".into()), "psst", false)),
            "[alice -> bob] psst\n"
        );
    }

    #[test]
    fn notices_name_who_and_what() {
        assert_eq!(
            text(Event::Joined {
                room: "#general".into(),
                nick: "bob".into(),
                client: 2
            }),
            "*** bob joined #general\n"
        );
        assert_eq!(
            text(Event::Left {
                room: "#general".into(),
                nick: "bob".into(),
                client: 2,
                reason: Some("quit".into())
            }),
            "*** bob left #general (quit)\n"
        );
    }

    #[test]
    fn structured_data_is_shown_compactly_on_one_line() {
        let event = Event::Message(Arc::new(ChatMessage {
            id: 1,
            time: SystemTime::now(),
            target: Target::Room("#general".into()),
            from: "drone1".into(),
            from_client: 1,
            text: "".into(),
            data: Some(Arc::new(serde_json::json!({"cmd": "land", "note": "a\nb"}))),
            action: false,
        }));
        assert_eq!(
            text(event),
            "[drone1] {\"cmd\":\"land\",\"note\":\"a\\nb\"}\n"
        );
    }

    #[test]
    fn acknowledgements_are_silent() {
        assert!(LineRender::new("#general")
            .render(&Event::Reply {
                tag: None,
                reply: Reply::Done
            })
            .is_none());
    }
}
