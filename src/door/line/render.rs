//! How hub events look on the plain-text door: the seed's `[name] text` for the
//! default room, `#room [name] text` elsewhere, `*** ` for notices, `error: ` for errors,
//! and history (replay on join, `/history`) as `[history HH:MM:SS] ` + the message line.

use std::fmt::Write as _;
use std::sync::Arc;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::hub::{ChatMessage, ErrorCode, Event, HistoryPage, HistoryScope, Reply, Target};
use crate::text::same_folded;

/// Renders events for netcat, telnet, the seed clients and `switchboard chat`.
pub struct LineRender {
    /// Messages in this room keep the seed's bare `[name] text` form.
    default_room: String,
}

impl LineRender {
    pub fn new(default_room: &str) -> Arc<Self> {
        Arc::new(LineRender {
            default_room: default_room.to_owned(),
        })
    }

    fn room_prefix(&self, out: &mut String, room: &str) {
        if !same_folded(room, &self.default_room) {
            out.push_str(room);
            out.push(' ');
        }
    }

    fn write_message(&self, out: &mut String, message: &ChatMessage) {
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
        if let Some(data) = message.shown_data() {
            // serde_json escapes control characters, so this cannot start a new line.
            if !message.text.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{data}");
        }
    }

    /// One line per message, each marked `[history TIME] `; an explicit `/history` also
    /// gets a closing line that says how to page on.
    fn write_history(&self, out: &mut String, page: &HistoryPage, explicit: bool) {
        let today = utc_day(SystemTime::now());
        if let HistoryScope::Offline = page.scope {
            let count = page.messages.len();
            let s = if count == 1 { "" } else { "s" };
            let _ = write!(out, "*** {count} message{s} while you were away:");
        }
        for (index, message) in page.messages.iter().enumerate() {
            if index > 0 || matches!(page.scope, HistoryScope::Offline) {
                out.push('\n');
            }
            out.push_str("[history ");
            write_utc(out, message.time, today);
            out.push_str("] ");
            self.write_message(out, message);
        }
        if !explicit {
            return;
        }
        if !page.messages.is_empty() {
            out.push('\n');
        }
        let (what, selector) = match &page.scope {
            HistoryScope::Room(room) => (format!("{room}"), format!("{room}")),
            HistoryScope::Private(with) => {
                (format!("private messages with {with}"), format!("{with}"))
            }
            HistoryScope::Offline => return,
        };
        match (page.messages.first(), page.messages.last()) {
            (Some(first), Some(last)) => {
                let count = page.messages.len();
                let _ = write!(
                    out,
                    "*** history of {what}: {count} message{} (ids {}-{})",
                    if count == 1 { "" } else { "s" },
                    first.id,
                    last.id
                );
                if page.more {
                    let _ = write!(out, "; more: /history {selector} before {}", first.id);
                }
                let _ = write!(out, "; newer: /history {selector} after {}", last.id);
            }
            _ => {
                let _ = write!(out, "*** history of {what}: no messages there");
            }
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
            Event::Message(message) => self.write_message(out, message),
            Event::Replay(page) => {
                if page.messages.is_empty() {
                    return false;
                }
                self.write_history(out, page, false);
            }
            Event::NickChanged { old, new, .. } => {
                let _ = write!(out, "*** {old} is now known as {new}");
            }
            Event::Notice { text } => {
                let _ = write!(out, "*** {text}");
            }
            Event::Invited { room, by } => {
                let _ = write!(out, "*** {by} invited you to {room}; /join {room} to go in");
            }
            Event::IsAway { nick, text } => {
                let _ = write!(out, "*** {nick} is away: {text}");
            }
            Event::TopicChanged { room, nick, text } if text.is_empty() => {
                let _ = write!(out, "*** {nick} cleared the topic of {room}");
            }
            Event::TopicChanged { room, nick, text } => {
                let _ = write!(out, "*** {nick} set the topic of {room}: {text}");
            }
            Event::Reply { reply, .. } => match reply {
                Reply::Done => return false,
                Reply::SignedIn {
                    account,
                    created: true,
                    ..
                } => {
                    let _ = write!(
                        out,
                        "*** {account} is registered to you and you are logged in; next time \
                         send /login {account} PASSWORD (or `{account} PASSWORD` as your first line)"
                    );
                }
                Reply::SignedIn { account, .. } => {
                    let _ = write!(out, "*** you are logged in as {account}");
                }
                Reply::PasswordChanged => out.push_str("*** your password is changed"),
                Reply::AccountDropped { account } => {
                    let _ = write!(
                        out,
                        "*** the account {account} is deleted; the name is anyone's now"
                    );
                }
                Reply::KeptFor { nick } => {
                    let _ = write!(
                        out,
                        "*** {nick} is offline; your message is kept for their next login"
                    );
                }
                Reply::Rules(rules) => write_rules(out, rules),
                Reply::History(page) => self.write_history(out, page, true),
                Reply::Pong => out.push_str("*** pong"),
                Reply::Away { away: true } => out.push_str("*** you are marked as away"),
                Reply::Counts { users, rooms } => {
                    let _ = write!(out, "*** {users} here, in {rooms} rooms");
                }
                Reply::Away { away: false } => out.push_str("*** you are back"),
                Reply::Present(nicks) if nicks.is_empty() => {
                    out.push_str("*** none of them is here");
                }
                Reply::Present(nicks) => {
                    let _ = write!(out, "*** here: {}", nicks.join(", "));
                }
                Reply::Topic { room, topic: None } => {
                    let _ = write!(out, "*** {room} has no topic");
                }
                Reply::Topic {
                    room,
                    topic: Some(topic),
                } => {
                    let _ = write!(
                        out,
                        "*** topic of {room}: {} (set by {})",
                        topic.text, topic.set_by
                    );
                }
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
                Reply::Who {
                    room,
                    members,
                    devices,
                    away,
                    operators,
                } => {
                    let _ = write!(
                        out,
                        "*** {room} has {} member{}:",
                        members.len(),
                        if members.len() == 1 { "" } else { "s" }
                    );
                    let devices: std::collections::HashSet<&str> =
                        devices.iter().map(|nick| &**nick).collect();
                    let away: std::collections::HashSet<&str> =
                        away.iter().map(|nick| &**nick).collect();
                    let operators: std::collections::HashSet<&str> =
                        operators.iter().map(|nick| &**nick).collect();
                    for (index, nick) in members.iter().enumerate() {
                        let separator = if index == 0 { " " } else { ", " };
                        let _ = write!(out, "{separator}{nick}");
                        if operators.contains(&**nick) {
                            out.push_str(" (operator)");
                        }
                        if devices.contains(&**nick) {
                            out.push_str(" (device)");
                        }
                        if away.contains(&**nick) {
                            out.push_str(" (away)");
                        }
                    }
                }
                Reply::CommandResult(outcome) => write_command_result(out, outcome),
                Reply::DeviceAdded { name, token } => {
                    let _ = write!(
                        out,
                        "*** device {name} added; its token (shown this once, keep it): {}\n\
                         *** run it: switchboard device --token {} --udp HOST:9996",
                        token.secret, token.secret
                    );
                }
                Reply::DeviceRemoved { name } => {
                    let _ = write!(out, "*** device {name} removed; its token no longer works");
                }
                Reply::Devices(names) if names.is_empty() => {
                    out.push_str("*** you have no devices; /device add NAME adds one");
                }
                Reply::Devices(names) => {
                    let _ = write!(out, "*** your devices: {}", names.join(", "));
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
                    if let Some(account) = &info.account {
                        let _ = write!(out, "; logged in as {account}");
                    }
                    if let Some(address) = &info.address {
                        let _ = write!(out, "; from {address}");
                    }
                    if let Some(away) = &info.away {
                        let _ = write!(out, "; away: {away}");
                    }
                    if info.device {
                        out.push_str("; a device");
                    }
                }
            },
            // Line users cannot answer commands, so none is sent to them.
            Event::Command(_) => return false,
            // Said when someone writes to them (`is away`), not to every room.
            Event::AwayChanged { .. } => return false,
            Event::Error { text, code, .. } => {
                let _ = write!(out, "error: {text}");
                // The hub's words are the same for every door; the commands are ours.
                if *code == ErrorCode::RegisteredOnly {
                    out.push_str(" (/register PASSWORD, or /login NAME PASSWORD)");
                }
            }
        }
        true
    }
}

/// `drone7: land: ok {"alt":0}` or `drone7: land failed: battery low`.
pub(crate) fn write_command_result(out: &mut String, outcome: &crate::chat::CommandOutcome) {
    let (from, name) = (&outcome.from, &outcome.name);
    if outcome.ok {
        let _ = write!(out, "*** {from}: {name}: ok");
    } else {
        let why = outcome.error.as_deref().unwrap_or("no reason given");
        let _ = write!(out, "*** {from}: {name} failed: {why}");
    }
    if let Some(result) = &outcome.result {
        let _ = write!(out, " {result}");
    }
}

/// A room's moderation, one line for who runs it and one per ban or mute.
fn write_rules(out: &mut String, rules: &crate::chat::RulesView) {
    let _ = write!(out, "*** {}: ", rules.room);
    match &rules.owner {
        Some(owner) => {
            let _ = write!(out, "owned by {owner}");
        }
        None => out.push_str("no owner"),
    }
    if !rules.operators.is_empty() {
        let operators: Vec<&str> = rules.operators.iter().map(|op| &**op).collect();
        let _ = write!(out, "; operators {}", operators.join(", "));
    }
    let mut who_may_join = Vec::new();
    if rules.invite_only {
        who_may_join.push("invite-only".to_owned());
    }
    if rules.registered_only {
        who_may_join.push("accounts only".to_owned());
    }
    match (&rules.key, rules.has_key) {
        (Some(key), _) => who_may_join.push(format!("key {key}")),
        (None, true) => who_may_join.push("needs a key".to_owned()),
        (None, false) => {}
    }
    if who_may_join.is_empty() {
        out.push_str("; open to all");
    } else {
        let _ = write!(out, "; {}", who_may_join.join(", "));
    }
    // Who may speak and set the topic, only where it is not everyone.
    if rules.moderated {
        out.push_str("; moderated (+m)");
    }
    if rules.topic_locked {
        out.push_str("; topic locked (+t)");
    }
    for (what, list) in [("banned", &rules.bans), ("muted", &rules.mutes)] {
        for item in list.iter() {
            let _ = write!(out, "\n*** {what}: {} by {}", item.target, item.by);
            if let Some(expires) = item.expires {
                let left = expires
                    .duration_since(SystemTime::now())
                    .map_or(0, |d| d.as_secs());
                let _ = write!(
                    out,
                    " for {} more",
                    crate::hub::rules::describe_duration(left)
                );
            }
            if let Some(reason) = &item.reason {
                let _ = write!(out, " ({reason})");
            }
        }
    }
}

fn utc_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn utc_day(time: SystemTime) -> u64 {
    utc_seconds(time) / 86_400
}

/// `HH:MM:SS` in UTC, preceded by `YYYY-MM-DD ` when not on `today` (a UTC day number).
fn write_utc(out: &mut String, time: SystemTime, today: u64) {
    let seconds = utc_seconds(time);
    let day = seconds / 86_400;
    if day != today {
        let (year, month, date) = civil_from_days(day);
        let _ = write!(out, "{year:04}-{month:02}-{date:02} ");
    }
    let of_day = seconds % 86_400;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let date = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, date)
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
            notice: false,
            account: None,
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
                client: 2,
                account: None,
            }),
            "*** bob joined #general\n"
        );
        assert_eq!(
            text(Event::Left {
                room: "#general".into(),
                nick: "bob".into(),
                client: 2,
                reason: Some("quit".into()),
                removed_by: None,
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
            notice: false,
            account: None,
        }));
        assert_eq!(
            text(event),
            "[drone1] {\"cmd\":\"land\",\"note\":\"a\\nb\"}\n"
        );
    }

    fn at(id: u64, time: SystemTime, room: &str) -> Arc<ChatMessage> {
        Arc::new(ChatMessage {
            id,
            time,
            target: Target::Room(room.into()),
            from: "alice".into(),
            from_client: 1,
            text: format!("m{id}").into(),
            data: None,
            action: false,
            notice: false,
            account: None,
        })
    }

    #[test]
    fn history_is_marked_with_its_time() {
        // 2021-03-04 05:06:07 UTC: an old day gets its date.
        let old = UNIX_EPOCH + std::time::Duration::from_secs(1_614_834_367);
        let now = SystemTime::now();
        let today = utc_seconds(now) % 86_400;
        let page = HistoryPage {
            scope: HistoryScope::Room("#rust".into()),
            messages: vec![at(4, old, "#rust"), at(5, now, "#rust")],
            more: true,
        };
        let replay = text(Event::Replay(Arc::new(page.clone())));
        let expected_now = format!(
            "[history {:02}:{:02}:{:02}] #rust [alice] m5\n",
            today / 3600,
            today / 60 % 60,
            today % 60
        );
        assert_eq!(
            replay,
            format!("[history 2021-03-04 05:06:07] #rust [alice] m4\n{expected_now}")
        );
        let answer = text(Event::Reply {
            tag: None,
            reply: Reply::History(Arc::new(page)),
        });
        assert!(answer.starts_with(&replay), "{answer}");
        assert!(
            answer.ends_with("*** history of #rust: 2 messages (ids 4-5); more: /history #rust before 4; newer: /history #rust after 5\n"),
            "{answer}"
        );
        let empty = HistoryPage {
            scope: HistoryScope::Private("bob".into()),
            messages: vec![],
            more: false,
        };
        assert!(LineRender::new("#general")
            .render(&Event::Replay(Arc::new(empty.clone())))
            .is_none());
        assert_eq!(
            text(Event::Reply {
                tag: None,
                reply: Reply::History(Arc::new(empty))
            }),
            "*** history of private messages with bob: no messages there\n"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(18_690), (2021, 3, 4));
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
