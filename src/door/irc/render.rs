//! How hub events look on the IRC door: `:nick!nick@switchboard PRIVMSG #room :text`,
//! JOIN/PART/NICK lines, numerics for the welcome, NAMES, LIST, WHOIS and errors, and
//! history as NOTICEs. Rendered once per event for every IRC client with the same
//! capabilities (render-once: one shared [`IrcRender`] per combination of
//! `echo-message` and `server-time`, see [`IrcRenders`]), so a numeric's target is the
//! recipient's nick only where the event names it (the welcome); elsewhere it is `*`,
//! which clients accept. With `server-time` every line carries `@time=`, a message's
//! its own (a replayed one the time it was first said), and history comes as the
//! PRIVMSGs it was, as bouncers play it back.
//!
//! No CR, LF or NUL ever reaches the wire inside a line: the hub already neutralises
//! message text, and every line is checked again here, so input from another door can
//! never forge an IRC command.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::hub::{ChatMessage, ErrorCode, Event, HistoryPage, Render, Reply, Target};
use crate::text::{MAX_AWAY_CHARS, MAX_NICK_CHARS, MAX_ROOM_CHARS, MAX_TOPIC_CHARS};

/// The server's name in prefixes and numerics.
pub const SERVER_NAME: &str = "switchboard";

/// The tag on a member-list request that asks for WHO's 352 lines instead of NAMES.
pub const WHO_TAG: &str = "irc:who";
/// Tags a room-rules request answered as the ban list (`MODE #room b`), not the modes.
pub const BANS_TAG: &str = "irc:bans";
/// The tags on a presence request from ISON (303) and from USERHOST (302).
pub const ISON_TAG: &str = "irc:ison";
pub const USERHOST_TAG: &str = "irc:userhost";

/// The IRCv3 capabilities that change what a client is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// The sender gets its own messages back (`echo-message`).
    pub echo_message: bool,
    /// Every line is tagged with `@time=` (`server-time`).
    pub server_time: bool,
    /// JOIN carries the joiner's account and real name (`extended-join`).
    pub extended_join: bool,
    /// Peers going away and coming back are told as `AWAY` (`away-notify`).
    pub away_notify: bool,
}

/// The message of the day when no file is given.
pub const BUILT_IN_MOTD: &str =
    "Welcome to Switchboard: the same rooms for IRC, netcat, browsers and programs.";

/// Renders events for IRC clients with one set of [`Caps`].
pub struct IrcRender {
    /// The ISUPPORT (005) tokens, built once.
    isupport: String,
    caps: Caps,
    motd: Motd,
}

/// The message of the day's lines, shared by the renderers and the protocol.
pub type Motd = Arc<[String]>;

impl IrcRender {
    /// The renderer for clients that negotiated nothing, with the built-in MOTD.
    pub fn new() -> Arc<Self> {
        Self::with_caps(Caps::default())
    }

    pub fn with_caps(caps: Caps) -> Arc<Self> {
        Self::with(caps, Arc::from([BUILT_IN_MOTD.to_owned()]))
    }

    pub fn with(caps: Caps, motd: Motd) -> Arc<Self> {
        Arc::new(IrcRender {
            isupport: isupport_tokens(),
            caps,
            motd,
        })
    }
}

/// 375, a 372 per line, 376: the message of the day as its numerics, aimed at `target`.
pub fn write_motd(out: &mut String, target: &str, motd: &[String]) {
    let mut lines = Lines::new();
    motd_lines(&mut lines, target, motd);
    out.push_str(&lines.out);
}

fn motd_lines(lines: &mut Lines, target: &str, motd: &[String]) {
    let _ = write!(
        lines.numeric(375, target),
        ":- {SERVER_NAME} Message of the day -"
    );
    lines.end();
    for line in motd {
        // Long lines are cut (at a character boundary) so each numeric fits 512 bytes.
        let mut end = line.len().min(400);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let _ = write!(lines.numeric(372, target), ":- {}", &line[..end]);
        lines.end();
    }
    let _ = write!(lines.numeric(376, target), ":End of /MOTD command.");
    lines.end();
}

/// One shared renderer per combination of [`Caps`]: a room of IRC clients costs one
/// rendering per combination in use, never one per client.
pub struct IrcRenders([Arc<IrcRender>; 16]);

impl IrcRenders {
    pub fn new() -> Self {
        Self::with_motd(Arc::from([BUILT_IN_MOTD.to_owned()]))
    }

    pub fn with_motd(motd: Motd) -> Self {
        IrcRenders(std::array::from_fn(|index| {
            let caps = Caps {
                echo_message: index & 1 != 0,
                server_time: index & 2 != 0,
                extended_join: index & 4 != 0,
                away_notify: index & 8 != 0,
            };
            IrcRender::with(caps, motd.clone())
        }))
    }

    pub fn for_caps(&self, caps: Caps) -> &Arc<IrcRender> {
        &self.0[usize::from(caps.echo_message)
            | usize::from(caps.server_time) << 1
            | usize::from(caps.extended_join) << 2
            | usize::from(caps.away_notify) << 3]
    }
}

impl Default for IrcRenders {
    fn default() -> Self {
        Self::new()
    }
}

/// `@time=YYYY-MM-DDThh:mm:ss.sssZ ` (UTC, milliseconds), as `server-time` writes it.
fn time_tag(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (hours, minutes, seconds) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Days to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "@time={year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{:03}Z ",
        since.subsec_millis()
    )
}

/// What this server supports, truthfully: names fold case the same way on every door
/// (`text::fold_case`); ASCII letters fold as `ascii` says, and other letters fold by
/// Unicode lowercase, which no CASEMAPPING token names.
fn isupport_tokens() -> String {
    use crate::text::MAX_KEY_CHARS;
    format!(
        "CASEMAPPING=ascii CHANTYPES=# NICKLEN={MAX_NICK_CHARS} CHANNELLEN={MAX_ROOM_CHARS} \
         TOPICLEN={MAX_TOPIC_CHARS} AWAYLEN={MAX_AWAY_CHARS} KEYLEN={MAX_KEY_CHARS} PREFIX=() CHANMODES=b,k,,iR TARGMAX=PRIVMSG:1,NOTICE:1,JOIN:,PART: NETWORK=Switchboard"
    )
}

/// Lines being rendered: each is checked for CR, LF and NUL and ended with CR LF.
struct Lines {
    out: String,
    line_start: usize,
    /// Put in front of each line as it ends (the `server-time` tag).
    tag: Option<String>,
}

impl Lines {
    fn new() -> Self {
        Lines {
            out: String::new(),
            line_start: 0,
            tag: None,
        }
    }

    /// End the line written since the last `end`: anything that could end or cut it
    /// becomes a space.
    fn end(&mut self) {
        if self.out[self.line_start..].contains(['\r', '\n', '\0']) {
            let safe: String = self.out[self.line_start..]
                .chars()
                .map(|c| {
                    if matches!(c, '\r' | '\n' | '\0') {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
            self.out.truncate(self.line_start);
            self.out.push_str(&safe);
        }
        if let Some(tag) = &self.tag {
            self.out.insert_str(self.line_start, tag);
        }
        self.out.push_str("\r\n");
        self.line_start = self.out.len();
    }

    /// `:switchboard NUMERIC target ` then the caller writes the rest.
    fn numeric(&mut self, numeric: u16, target: &str) -> &mut String {
        let _ = write!(self.out, ":{SERVER_NAME} {numeric:03} {target} ");
        &mut self.out
    }
}

fn write_message(lines: &mut Lines, message: &ChatMessage) {
    let target: &str = match &message.target {
        Target::Room(room) => room,
        Target::Private(to) => to,
    };
    let from = &message.from;
    let out = &mut lines.out;
    let _ = write!(out, ":{from}!{from}@{SERVER_NAME} PRIVMSG {target} :");
    if message.action {
        out.push_str("\u{1}ACTION ");
    }
    out.push_str(&message.text);
    if let Some(data) = message.shown_data() {
        if !message.text.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{data}");
    }
    if message.action {
        out.push('\u{1}');
    }
    lines.end();
}

/// History as NOTICEs, so clients do not show it as live speech; with `server-time`,
/// as the PRIVMSGs they were, each tagged with the time it was said.
fn write_history(lines: &mut Lines, page: &HistoryPage, server_time: bool) {
    for message in &page.messages {
        if server_time {
            lines.tag = Some(time_tag(message.time));
            write_message(lines, message);
            continue;
        }
        let target: &str = match &message.target {
            Target::Room(room) => room,
            Target::Private(_) => "*",
        };
        let secs = message
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let (hours, minutes, seconds) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let _ = write!(
            lines.out,
            ":{SERVER_NAME} NOTICE {target} :[history {hours:02}:{minutes:02}:{seconds:02}] "
        );
        let from = &message.from;
        if message.action {
            let _ = write!(lines.out, "* {from} {}", message.text);
        } else {
            let _ = write!(lines.out, "<{from}> {}", message.text);
        }
        if let Some(data) = message.shown_data() {
            let _ = write!(lines.out, " {data}");
        }
        lines.end();
    }
}

/// A ban target as IRC writes masks: `account:NAME` as the account extban `~a:NAME`
/// (the form InspIRCd and UnrealIRCd use), an address as `*!*@ADDRESS`.
fn irc_mask(target: &str) -> String {
    match target.strip_prefix("account:") {
        Some(name) => format!("~a:{name}"),
        None => format!("*!*@{target}"),
    }
}

/// The numeric for a hub error.
fn error_numeric(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::NoSuchNick => 401,
        ErrorCode::NoSuchRoom => 403,
        ErrorCode::RoomInvalid => 479,
        ErrorCode::NotInRoom => 442,
        ErrorCode::NickInvalid => 432,
        ErrorCode::NickTaken | ErrorCode::NickRegistered => 433,
        ErrorCode::NotRegistered => 451,
        ErrorCode::AlreadyRegistered => 462,
        ErrorCode::UnknownCommand => 421,
        ErrorCode::BadRequest => 461,
        ErrorCode::LineTooLong => 417,
        // No numeric fits; FAIL is IRCv3's standard reply for these.
        ErrorCode::Flood
        | ErrorCode::CommandTimeout
        | ErrorCode::NotADevice
        | ErrorCode::NotOverUdp
        | ErrorCode::HistoryUnavailable
        | ErrorCode::AuthFailed
        | ErrorCode::AuthLimited
        | ErrorCode::AccountExists
        | ErrorCode::BadPassword
        | ErrorCode::BadToken
        | ErrorCode::NotSignedIn
        | ErrorCode::AccountsUnavailable => 0,
        ErrorCode::NotOperator => 482,
        ErrorCode::Banned => 474,
        ErrorCode::Muted => 404,
        ErrorCode::InviteOnly => 473,
        ErrorCode::RegisteredOnly => 477,
        ErrorCode::BadKey => 475,
    }
}

impl IrcRender {
    fn write_event(&self, lines: &mut Lines, event: &Event) {
        match event {
            Event::Welcome { nick, .. } => {
                let version = env!("CARGO_PKG_VERSION");
                let _ = write!(
                    lines.numeric(1, nick),
                    ":Welcome to Switchboard, {nick}!{nick}@{SERVER_NAME}"
                );
                lines.end();
                let _ = write!(
                    lines.numeric(2, nick),
                    ":Your host is {SERVER_NAME}, running switchboard-{version}"
                );
                lines.end();
                let _ = write!(lines.numeric(3, nick), ":This server speaks to every door");
                lines.end();
                let _ = write!(
                    lines.numeric(4, nick),
                    "{SERVER_NAME} switchboard-{version} i bikRo bko"
                );
                lines.end();
                let _ = write!(
                    lines.numeric(5, nick),
                    "{} :are supported by this server",
                    self.isupport
                );
                lines.end();
                motd_lines(lines, nick, &self.motd);
            }
            Event::Joined {
                room,
                nick,
                account,
                ..
            } => {
                let _ = write!(lines.out, ":{nick}!{nick}@{SERVER_NAME} JOIN {room}");
                if self.caps.extended_join {
                    // The real name is not kept: the nick stands in, as in WHO.
                    let account = account.as_deref().unwrap_or("*");
                    let _ = write!(lines.out, " {account} :{nick}");
                }
                lines.end();
            }
            Event::AwayChanged { nick, away, .. } => {
                if self.caps.away_notify {
                    let _ = write!(lines.out, ":{nick}!{nick}@{SERVER_NAME} AWAY");
                    if let Some(away) = away {
                        let _ = write!(lines.out, " :{away}");
                    }
                    lines.end();
                }
            }
            Event::Left {
                room, nick, reason, ..
            } => {
                let _ = write!(lines.out, ":{nick}!{nick}@{SERVER_NAME} PART {room}");
                if let Some(reason) = reason {
                    let _ = write!(lines.out, " :{reason}");
                }
                lines.end();
            }
            Event::Message(message) => write_message(lines, message),
            Event::Replay(page) => write_history(lines, page, self.caps.server_time),
            Event::NickChanged { old, new, .. } => {
                let _ = write!(lines.out, ":{old}!{old}@{SERVER_NAME} NICK {new}");
                lines.end();
            }
            // IRC users cannot answer commands, so none is sent to them.
            Event::Command(_) => {}
            Event::Notice { text } => {
                let _ = write!(lines.out, ":{SERVER_NAME} NOTICE * :{text}");
                lines.end();
            }
            Event::IsAway { nick, text } => {
                let _ = write!(lines.numeric(301, "*"), "{nick} :{text}");
                lines.end();
            }
            Event::TopicChanged { room, nick, text } => {
                let _ = write!(
                    lines.out,
                    ":{nick}!{nick}@{SERVER_NAME} TOPIC {room} :{text}"
                );
                lines.end();
            }
            Event::Reply {
                tag: Some(tag),
                reply: Reply::Who { room, members, .. },
            } if &**tag == WHO_TAG => {
                // Hosts and real names are not kept: the nick stands in for both.
                for nick in members {
                    let _ = write!(
                        lines.numeric(352, "*"),
                        "{room} {nick} {SERVER_NAME} {SERVER_NAME} {nick} H :0 {nick}"
                    );
                    lines.end();
                }
                let _ = write!(lines.numeric(315, "*"), "{room} :End of /WHO list");
                lines.end();
            }
            Event::Reply {
                tag: Some(tag),
                reply: Reply::Present(nicks),
            } if &**tag == USERHOST_TAG => {
                let out = lines.numeric(302, "*");
                out.push(':');
                for (index, nick) in nicks.iter().enumerate() {
                    let separator = if index == 0 { "" } else { " " };
                    let _ = write!(out, "{separator}{nick}=+{nick}@{SERVER_NAME}");
                }
                lines.end();
            }
            Event::Reply {
                tag: Some(tag),
                reply: Reply::Rules(rules),
            } if &**tag == BANS_TAG => {
                let room = &rules.room;
                for ban in &rules.bans {
                    let mask = irc_mask(&ban.target);
                    let _ = write!(lines.numeric(367, "*"), "{room} {mask} {} 0", ban.by);
                    lines.end();
                }
                let _ = write!(lines.numeric(368, "*"), "{room} :End of channel ban list");
                lines.end();
            }
            Event::Reply { reply, .. } => self.write_reply(lines, reply),
            Event::Error { code, text, .. } => match error_numeric(*code) {
                0 => {
                    let _ = write!(lines.out, "FAIL * {} :{text}", code.as_str().to_uppercase());
                    lines.end();
                }
                numeric => {
                    let _ = write!(lines.numeric(numeric, "*"), ":{text}");
                    lines.end();
                }
            },
        }
    }

    fn write_reply(&self, lines: &mut Lines, reply: &Reply) {
        match reply {
            Reply::Done | Reply::Pong => {}
            Reply::Counts { users, rooms } => {
                let _ = write!(
                    lines.numeric(251, "*"),
                    ":There are {users} users and 0 invisible on 1 servers"
                );
                lines.end();
                let _ = write!(lines.numeric(254, "*"), "{rooms} :channels formed");
                lines.end();
                let _ = write!(
                    lines.numeric(255, "*"),
                    ":I have {users} clients and 0 servers"
                );
                lines.end();
            }
            Reply::Away { away: true } => {
                let _ = write!(
                    lines.numeric(306, "*"),
                    ":You have been marked as being away"
                );
                lines.end();
            }
            Reply::Away { away: false } => {
                let _ = write!(
                    lines.numeric(305, "*"),
                    ":You are no longer marked as being away"
                );
                lines.end();
            }
            // ISON's answer (and any other presence answer) names those present.
            Reply::Present(nicks) => {
                let _ = write!(lines.numeric(303, "*"), ":{}", nicks.join(" "));
                lines.end();
            }
            Reply::Topic { room, topic: None } => {
                let _ = write!(lines.numeric(331, "*"), "{room} :No topic is set");
                lines.end();
            }
            Reply::Topic {
                room,
                topic: Some(topic),
            } => {
                let _ = write!(lines.numeric(332, "*"), "{room} :{}", topic.text);
                lines.end();
                let set_at = topic
                    .time
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                let _ = write!(
                    lines.numeric(333, "*"),
                    "{room} {}!{}@{SERVER_NAME} {set_at}",
                    topic.set_by,
                    topic.set_by
                );
                lines.end();
            }
            Reply::Rooms(rooms) => {
                let _ = write!(lines.numeric(321, "*"), "Channel :Users Name");
                lines.end();
                for room in rooms {
                    let _ = write!(lines.numeric(322, "*"), "{} {} :", room.name, room.members);
                    lines.end();
                }
                let _ = write!(lines.numeric(323, "*"), ":End of /LIST");
                lines.end();
            }
            Reply::Who { room, members, .. } => {
                // One 353 per ~400 bytes of names keeps each line under 512.
                for chunk in name_chunks(members) {
                    let _ = write!(lines.numeric(353, "*"), "= {room} :{chunk}");
                    lines.end();
                }
                let _ = write!(lines.numeric(366, "*"), "{room} :End of /NAMES list");
                lines.end();
            }
            Reply::Whois(info) => {
                let nick = &info.nick;
                let _ = write!(
                    lines.numeric(311, "*"),
                    "{nick} {nick} {SERVER_NAME} * :client {} on the {} door",
                    info.client,
                    info.door
                );
                lines.end();
                if let Some(away) = &info.away {
                    let _ = write!(lines.numeric(301, "*"), "{nick} :{away}");
                    lines.end();
                }
                if let Some(account) = &info.account {
                    let _ = write!(lines.numeric(330, "*"), "{nick} {account} :is logged in as");
                    lines.end();
                }
                if let Some(address) = &info.address {
                    let _ = write!(
                        lines.numeric(338, "*"),
                        "{nick} {address} :actually using host"
                    );
                    lines.end();
                }
                if !info.rooms.is_empty() {
                    let rooms: Vec<&str> = info.rooms.iter().map(|room| &**room).collect();
                    let _ = write!(lines.numeric(319, "*"), "{nick} :{}", rooms.join(" "));
                    lines.end();
                }
                let _ = write!(lines.numeric(312, "*"), "{nick} {SERVER_NAME} :Switchboard");
                lines.end();
                let _ = write!(
                    lines.numeric(317, "*"),
                    "{nick} 0 {} :seconds idle, signon time",
                    signon_time(info.connected_for_secs)
                );
                lines.end();
                let _ = write!(lines.numeric(318, "*"), "{nick} :End of /WHOIS list");
                lines.end();
            }
            Reply::History(page) => write_history(lines, page, self.caps.server_time),
            Reply::SignedIn { account, .. } => {
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :You are now logged in as {account}"
                );
                lines.end();
            }
            Reply::PasswordChanged => {
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :Your password is changed"
                );
                lines.end();
            }
            Reply::AccountDropped { account } => {
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :The account {account} is deleted"
                );
                lines.end();
            }
            Reply::Rules(rules) => {
                let room = &rules.room;
                let mut modes = String::from("+");
                if rules.invite_only {
                    modes.push('i');
                }
                if rules.registered_only {
                    modes.push('R');
                }
                // The key only for the room's operators (the hub leaves it out of
                // anyone else's view); others see that there is one.
                let key = match (&rules.key, rules.has_key) {
                    (Some(key), _) => format!(" {key}"),
                    (None, true) => " *".to_owned(),
                    (None, false) => String::new(),
                };
                if rules.has_key {
                    modes.push('k');
                }
                let _ = write!(lines.numeric(324, "*"), "{room} {modes}{key}");
                lines.end();
                for mute in &rules.mutes {
                    let _ = write!(
                        lines.out,
                        ":{SERVER_NAME} NOTICE * :{room}: {} is muted (by {})",
                        mute.target, mute.by
                    );
                    lines.end();
                }
            }
            Reply::KeptFor { nick } => {
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :{nick} is offline; your message is kept for their next login"
                );
                lines.end();
            }
            Reply::CommandResult(outcome) => {
                let mut text = String::new();
                crate::door::line::render::write_command_result(&mut text, outcome);
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :{}",
                    text.trim_start_matches("*** ")
                );
                lines.end();
            }
            Reply::DeviceAdded { name, token } => {
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :Device {name} added; its token (shown this once): {}",
                    token.secret
                );
                lines.end();
            }
            Reply::DeviceRemoved { name } => {
                let _ = write!(lines.out, ":{SERVER_NAME} NOTICE * :Device {name} removed");
                lines.end();
            }
            Reply::Devices(names) => {
                let _ = write!(
                    lines.out,
                    ":{SERVER_NAME} NOTICE * :Your devices: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(" ")
                    }
                );
                lines.end();
            }
        }
    }
}

fn signon_time(connected_for_secs: u64) -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_secs())
        .saturating_sub(connected_for_secs)
}

/// Space-separated names in chunks short enough for one 353 line each.
fn name_chunks(members: &[Arc<str>]) -> Vec<String> {
    let mut chunks = vec![String::new()];
    for member in members {
        let current = chunks.last_mut().expect("never empty");
        if !current.is_empty() && current.len() + member.len() > 400 {
            chunks.push(String::new());
        }
        let current = chunks.last_mut().expect("never empty");
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(member);
    }
    chunks
}

impl Render for IrcRender {
    fn render(&self, event: &Event) -> Option<Bytes> {
        let mut lines = Lines::new();
        if self.caps.server_time {
            let time = match event {
                Event::Message(message) => message.time,
                _ => SystemTime::now(),
            };
            lines.tag = Some(time_tag(time));
        }
        self.write_event(&mut lines, event);
        (!lines.out.is_empty()).then(|| Bytes::from(lines.out))
    }

    /// Without `echo-message` an IRC client shows what its user typed itself.
    fn echoes_own_messages(&self) -> bool {
        self.caps.echo_message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn render(event: &Event) -> String {
        let bytes = IrcRender::new().render(event).unwrap_or_default();
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
    fn a_member_list_asked_for_by_who_comes_as_352_lines() {
        let members: Vec<Arc<str>> = vec!["alice".into(), "bob".into()];
        let who = Event::Reply {
            tag: Some(WHO_TAG.into()),
            reply: Reply::Who {
                room: "#general".into(),
                members: members.clone(),
                devices: Vec::new(),
            },
        };
        assert_eq!(
            render(&who),
            ":switchboard 352 * #general alice switchboard switchboard alice H :0 alice\r\n\
             :switchboard 352 * #general bob switchboard switchboard bob H :0 bob\r\n\
             :switchboard 315 * #general :End of /WHO list\r\n"
        );
        // Untagged (NAMES, and after JOIN): 353 and 366.
        let names = Event::Reply {
            tag: None,
            reply: Reply::Who {
                room: "#general".into(),
                members,
                devices: Vec::new(),
            },
        };
        assert!(render(&names).starts_with(":switchboard 353 * = #general :alice bob\r\n"));
    }

    #[test]
    fn server_time_tags_are_utc_with_milliseconds() {
        let at = |secs: u64, millis: u64| {
            time_tag(UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + millis))
        };
        assert_eq!(at(0, 0), "@time=1970-01-01T00:00:00.000Z ");
        assert_eq!(at(951_782_400, 5), "@time=2000-02-29T00:00:00.005Z ");
        assert_eq!(at(1_700_000_000, 123), "@time=2023-11-14T22:13:20.123Z ");
        assert_eq!(at(4_107_542_399, 999), "@time=2100-02-28T23:59:59.999Z ");
    }

    #[test]
    fn capabilities_pick_echo_and_time_tags_and_history_keeps_its_time() {
        let plain = IrcRender::new();
        assert!(!plain.echoes_own_messages());
        let echo = IrcRender::with_caps(Caps {
            echo_message: true,
            server_time: false,
            ..Caps::default()
        });
        assert!(echo.echoes_own_messages());
        let timed = IrcRender::with_caps(Caps {
            echo_message: false,
            server_time: true,
            ..Caps::default()
        });
        let said = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let old = Arc::new(ChatMessage {
            id: 7,
            time: said,
            target: Target::Room("#general".into()),
            from: "bob".into(),
            from_client: 2,
            text: "earlier\r\nQUIT".into(),
            data: None,
            action: false,
        });
        let live = timed.render(&Event::Message(old.clone())).unwrap();
        assert_eq!(
            &live[..],
            b"@time=2023-11-14T22:13:20.000Z :bob!bob@switchboard PRIVMSG #general :earlier  QUIT\r\n"
        );
        // Replayed history: the PRIVMSGs as they were, each at its own time.
        let page = Arc::new(HistoryPage {
            scope: crate::hub::HistoryScope::Room("#general".into()),
            messages: vec![old.clone(), old],
            more: false,
        });
        let replay = timed.render(&Event::Replay(page.clone())).unwrap();
        let replay = String::from_utf8(replay.to_vec()).unwrap();
        assert_eq!(
            replay
                .matches("@time=2023-11-14T22:13:20.000Z :bob!")
                .count(),
            2
        );
        // Without server-time it stays NOTICEs, and nothing is tagged.
        let notices =
            String::from_utf8(plain.render(&Event::Replay(page)).unwrap().to_vec()).unwrap();
        assert!(notices.starts_with(":switchboard NOTICE #general :[history 22:13:20] <bob>"));
        // Several lines in one event: each its own tag.
        let welcome = timed
            .render(&Event::Welcome {
                client: 1,
                nick: "alice".into(),
            })
            .unwrap();
        let welcome = String::from_utf8(welcome.to_vec()).unwrap();
        assert!(
            welcome.lines().all(|line| line.starts_with("@time=")),
            "{welcome}"
        );
    }

    /// One renderer per combination, shared: the same Arc for the same caps.
    #[test]
    fn one_renderer_per_capability_combination() {
        let renders = IrcRenders::new();
        let caps = Caps {
            echo_message: true,
            server_time: true,
            ..Caps::default()
        };
        assert!(Arc::ptr_eq(renders.for_caps(caps), renders.for_caps(caps)));
        assert!(!Arc::ptr_eq(
            renders.for_caps(caps),
            renders.for_caps(Caps::default())
        ));
        assert!(renders.for_caps(caps).echoes_own_messages());
    }

    #[test]
    fn messages_are_privmsg_with_a_full_prefix() {
        assert_eq!(
            render(&message(Target::Room("#general".into()), "hi there", false)),
            ":alice!alice@switchboard PRIVMSG #general :hi there\r\n"
        );
        assert_eq!(
            render(&message(Target::Private("bob".into()), "psst", false)),
            ":alice!alice@switchboard PRIVMSG bob :psst\r\n"
        );
        assert_eq!(
            render(&message(Target::Room("#a".into()), "waves", true)),
            ":alice!alice@switchboard PRIVMSG #a :\u{1}ACTION waves\u{1}\r\n"
        );
    }

    /// Text from another door that somehow still holds a line break cannot start a
    /// second, forged IRC command.
    #[test]
    fn a_line_break_in_text_never_starts_a_new_line() {
        let forged = render(&message(
            Target::Room("#a".into()),
            "hi\r\nQUIT :owned\0",
            false,
        ));
        assert_eq!(forged.matches("\r\n").count(), 1, "{forged:?}");
        assert!(!forged.contains('\0'));
        assert!(forged.ends_with("QUIT :owned \r\n"));
    }

    #[test]
    fn the_welcome_names_the_client_and_says_what_is_supported() {
        let welcome = render(&Event::Welcome {
            client: 7,
            nick: "bob".into(),
        });
        let numerics: Vec<&str> = welcome
            .lines()
            .map(|line| line.split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(
            numerics,
            ["001", "002", "003", "004", "005", "375", "372", "376"]
        );
        assert!(welcome.starts_with(":switchboard 001 bob :Welcome"));
        assert!(welcome.contains(&format!(":switchboard 372 bob :- {BUILT_IN_MOTD}\r\n")));
        assert!(welcome.contains("CASEMAPPING=ascii CHANTYPES=# NICKLEN=32"));
    }

    #[test]
    fn names_come_in_chunks_that_fit_a_line() {
        let members: Vec<Arc<str>> = (0..200).map(|n| format!("user{n:04}").into()).collect();
        let names = render(&Event::Reply {
            tag: None,
            reply: Reply::Who {
                room: "#big".into(),
                members,
                devices: Vec::new(),
            },
        });
        let lines: Vec<&str> = names.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert!(lines.len() > 2);
        assert!(lines.iter().all(|line| line.len() <= 510), "{lines:?}");
        assert!(lines.last().unwrap().contains(" 366 * #big :End of /NAMES"));
        let named: usize = lines
            .iter()
            .filter(|line| line.contains(" 353 "))
            .map(|line| line.rsplit(':').next().unwrap().split(' ').count())
            .sum();
        assert_eq!(named, 200);
    }

    #[test]
    fn errors_carry_their_numeric() {
        let error = render(&Event::Error {
            tag: None,
            code: ErrorCode::NoSuchNick,
            text: "no such user: carol".into(),
        });
        assert_eq!(error, ":switchboard 401 * :no such user: carol\r\n");
    }
}
