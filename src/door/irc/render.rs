//! How hub events look on the IRC door: `:nick!nick@switchboard PRIVMSG #room :text`,
//! JOIN/PART/NICK lines, numerics for the welcome, NAMES, LIST, WHOIS and errors, and
//! history as NOTICEs. Rendered once per event for every IRC client with the same
//! capabilities (render-once: one shared [`IrcRender`] per combination of the
//! capabilities that change the output, see [`IrcRenders`]); what one client alone
//! gets (replies, errors, the welcome) is rendered for it with its nick as the
//! numerics' target (`Render::render_to`). With `server-time` every line carries `@time=`, a message's
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

/// The tag on a history request from CHATHISTORY, followed by its subcommand and
/// target (`irc:chathistory LATEST #room`): answered as a `chathistory` batch, and
/// its refusal as `FAIL CHATHISTORY`.
pub const CHATHISTORY_TAG: &str = "irc:chathistory";

/// The tag on an account step from REGISTER (draft/account-registration), followed
/// by the account it named: answered as `REGISTER SUCCESS` or `FAIL REGISTER`.
pub const REGISTER_TAG: &str = "irc:register";
/// The tag on an account step asked of NickServ: answered as NOTICEs from it.
pub const NICKSERV_TAG: &str = "irc:nickserv";
/// The service IRC users register and identify with (the server answers for it).
pub const NICKSERV: &str = "NickServ";

/// Most messages one CHATHISTORY answer holds (ISUPPORT `CHATHISTORY`).
pub const CHATHISTORY_LIMIT: usize = crate::hub::MAX_HISTORY_LIMIT;

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
    /// Messages carry their `msgid` (`message-tags`).
    pub message_tags: bool,
    /// Messages from signed-in users carry `account=` (`account-tag`).
    pub account_tag: bool,
    /// History asked for with CHATHISTORY comes as a `chathistory` batch (`batch`).
    pub batch: bool,
}

/// How many combinations of [`Caps`] there are.
const CAPS_COMBINATIONS: usize = 1 << 7;

impl Caps {
    fn index(self) -> usize {
        [
            self.echo_message,
            self.server_time,
            self.extended_join,
            self.away_notify,
            self.message_tags,
            self.account_tag,
            self.batch,
        ]
        .iter()
        .enumerate()
        .map(|(bit, on)| usize::from(*on) << bit)
        .sum()
    }

    fn from_index(index: usize) -> Self {
        let on = |bit: usize| index & (1 << bit) != 0;
        Caps {
            echo_message: on(0),
            server_time: on(1),
            extended_join: on(2),
            away_notify: on(3),
            message_tags: on(4),
            account_tag: on(5),
            batch: on(6),
        }
    }
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

/// 375, a 372 per line, 376: the message of the day as its numerics (number, and what
/// follows the target).
pub fn motd_numerics(motd: &[String]) -> Vec<(u16, String)> {
    let mut numerics = Vec::with_capacity(motd.len() + 2);
    numerics.push((375, format!(":- {SERVER_NAME} Message of the day -")));
    for line in motd {
        // Long lines are cut (at a character boundary) so each numeric fits 512 bytes.
        let mut end = line.len().min(400);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        numerics.push((372, format!(":- {}", &line[..end])));
    }
    numerics.push((376, ":End of /MOTD command.".to_owned()));
    numerics
}

fn motd_lines(lines: &mut Lines<'_>, target: &str, motd: &[String]) {
    for (number, text) in motd_numerics(motd) {
        lines.numeric(number, target).push_str(&text);
        lines.end();
    }
}

/// One shared renderer per combination of [`Caps`]: a room of IRC clients costs one
/// rendering per combination in use, never one per client.
pub struct IrcRenders(Vec<Arc<IrcRender>>);

impl IrcRenders {
    pub fn new() -> Self {
        Self::with_motd(Arc::from([BUILT_IN_MOTD.to_owned()]))
    }

    pub fn with_motd(motd: Motd) -> Self {
        IrcRenders(
            (0..CAPS_COMBINATIONS)
                .map(|index| IrcRender::with(Caps::from_index(index), motd.clone()))
                .collect(),
        )
    }

    pub fn for_caps(&self, caps: Caps) -> &Arc<IrcRender> {
        &self.0[caps.index()]
    }
}

impl Default for IrcRenders {
    fn default() -> Self {
        Self::new()
    }
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` (UTC, milliseconds), as `server-time` writes it (and
/// `TIME` answers).
pub fn time_tag(time: SystemTime) -> String {
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
        "{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{:03}Z",
        since.subsec_millis()
    )
}

/// Milliseconds since the Unix epoch for a `server-time` timestamp
/// (`YYYY-MM-DDThh:mm:ss[.fraction]Z`, UTC; the fraction to milliseconds); `None` for
/// anything else.
pub fn parse_time_tag(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock_parts = clock.splitn(3, ':');
    let hours: u64 = clock_parts.next()?.parse().ok()?;
    let minutes: u64 = clock_parts.next()?.parse().ok()?;
    let seconds: u64 = clock_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hours > 23 || minutes > 59 {
        return None;
    }
    if seconds > 60 || fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: u64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    // Civil date to days (Howard Hinnant's algorithm, the inverse of `time_tag`'s).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = u64::try_from(era * 146_097 + day_of_era - 719_468).ok()?;
    Some(((days * 86_400 + hours * 3600 + minutes * 60 + seconds) * 1000) + millis)
}

/// A message's `msgid`: its room and its number there (`#general/42`), or `~` and
/// its number among private messages (`~7`), so CHATHISTORY can page from it.
pub fn msgid(message: &ChatMessage) -> String {
    match &message.target {
        Target::Room(room) => format!("{room}/{}", message.id),
        Target::Private(_) => format!("~{}", message.id),
    }
}

/// The message number in a `msgid` this server wrote, and whether it names a room's
/// message (`None`: not one of ours).
pub fn parse_msgid(msgid: &str) -> Option<(u64, bool)> {
    if let Some(number) = msgid.strip_prefix('~') {
        return number.parse().ok().map(|id| (id, false));
    }
    let (room, number) = msgid.rsplit_once('/')?;
    room.starts_with('#')
        .then(|| number.parse().ok())
        .flatten()
        .map(|id| (id, true))
}

/// A tag value with the characters IRCv3 escapes (`;`, space, `\`, CR, LF) escaped.
fn push_tag_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// What this server supports, truthfully: names fold case the same way on every door
/// (`text::fold_case`); ASCII letters fold as `ascii` says, and other letters fold by
/// Unicode lowercase, which no CASEMAPPING token names.
fn isupport_tokens() -> String {
    use crate::text::MAX_KEY_CHARS;
    format!(
        "CASEMAPPING=ascii CHANTYPES=# NICKLEN={MAX_NICK_CHARS} CHANNELLEN={MAX_ROOM_CHARS} \
         TOPICLEN={MAX_TOPIC_CHARS} AWAYLEN={MAX_AWAY_CHARS} KEYLEN={MAX_KEY_CHARS} PREFIX=(o)@ CHANMODES=b,k,,imRt TARGMAX=PRIVMSG:1,NOTICE:1,JOIN:,PART: NETWORK=Switchboard \
         CHATHISTORY={CHATHISTORY_LIMIT} MSGREFTYPES=timestamp,msgid"
    )
}

/// Lines being rendered: each is checked for CR, LF and NUL and ended with CR LF.
struct Lines<'to> {
    out: String,
    line_start: usize,
    /// Put in front of each line as it ends (the `server-time` tag).
    tag: Option<String>,
    /// Whom numerics are addressed to: the reader's nick for what only it gets, `*`
    /// in what is rendered once for many.
    recipient: &'to str,
}

impl<'to> Lines<'to> {
    fn new(recipient: &'to str) -> Self {
        Lines {
            out: String::new(),
            line_start: 0,
            tag: None,
            recipient,
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

    /// A numeric addressed to the reader.
    fn reply(&mut self, numeric: u16) -> &mut String {
        let _ = write!(self.out, ":{SERVER_NAME} {numeric:03} {} ", self.recipient);
        &mut self.out
    }
}

/// A moderation announcement IRC has its own line for.
enum Native<'message> {
    /// Someone was made an operator (`'+'`) or stopped being one (`'-'`): `MODE #room
    /// +o nick`.
    Operator(char, &'message str),
    /// A kick: the member's `Left` already came as a KICK line.
    Kick,
}

/// What IRC says instead of a live moderation announcement, if anything; `None` for
/// every other message (one comparison on the hot path: people's messages have a
/// sender).
fn irc_native(message: &ChatMessage) -> Option<Native<'_>> {
    if message.from_client != 0 || !matches!(message.target, Target::Room(_)) {
        return None;
    }
    let moderation = message.data.as_ref()?.get(crate::chat::MODERATION_DATA)?;
    let sign = match moderation.get("action")?.as_str()? {
        "op" => '+',
        "deop" => '-',
        "kick" => return Some(Native::Kick),
        _ => return None,
    };
    Some(Native::Operator(sign, moderation.get("target")?.as_str()?))
}

fn write_message(lines: &mut Lines<'_>, message: &ChatMessage) {
    let target: &str = match &message.target {
        Target::Room(room) => room,
        Target::Private(to) => to,
    };
    let from = &message.from;
    let out = &mut lines.out;
    let command = if message.notice { "NOTICE" } else { "PRIVMSG" };
    let _ = write!(out, ":{from}!{from}@{SERVER_NAME} {command} {target} :");
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
fn write_history(render: &IrcRender, lines: &mut Lines<'_>, page: &HistoryPage) {
    for message in &page.messages {
        if render.caps.server_time {
            lines.tag = render.tags(Some(message), None);
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
    fn write_event(&self, lines: &mut Lines<'_>, event: &Event) {
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
                    "{SERVER_NAME} switchboard-{version} i bikmoRt bko"
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
                room,
                nick,
                reason,
                removed_by: Some(by),
                ..
            } => {
                // A KICK names its kicker already: the comment is the reason alone
                // (the kicker's nick when none was given, as IRC servers do). A ban
                // keeps its whole text, which says it was a ban and until when.
                let reason = reason.as_deref().unwrap_or_default();
                let comment = match reason
                    .strip_prefix("kicked by ")
                    .and_then(|rest| rest.strip_prefix(&**by))
                {
                    Some("") => by,
                    Some(rest) => rest.strip_prefix(": ").unwrap_or(rest),
                    None => reason,
                };
                let _ = write!(
                    lines.out,
                    ":{by}!{by}@{SERVER_NAME} KICK {room} {nick} :{comment}"
                );
                lines.end();
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
            Event::Message(message) => match irc_native(message) {
                // The KICK line said it all.
                Some(Native::Kick) => {}
                // IRC clients keep their nick lists' `@` from MODE lines.
                Some(Native::Operator(sign, target)) => {
                    let from = &message.from;
                    let room = &message.target;
                    if let Target::Room(room) = room {
                        let _ = write!(
                            lines.out,
                            ":{from}!{from}@{SERVER_NAME} MODE {room} {sign}o {target}"
                        );
                        lines.end();
                    }
                }
                None => write_message(lines, message),
            },
            Event::Replay(page) => write_history(self, lines, page),
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
            Event::Invited { room, by } => {
                let _ = write!(
                    lines.out,
                    ":{by}!{by}@{SERVER_NAME} INVITE {} {room}",
                    lines.recipient
                );
                lines.end();
            }
            Event::IsAway { nick, text } => {
                let _ = write!(lines.reply(301), "{nick} :{text}");
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
                reply:
                    Reply::Who {
                        room,
                        members,
                        away,
                        operators,
                        ..
                    },
            } if &**tag == WHO_TAG => {
                // Hosts and real names are not kept: the nick stands in for both.
                let away: std::collections::HashSet<&str> =
                    away.iter().map(|nick| &**nick).collect();
                let operators: std::collections::HashSet<&str> =
                    operators.iter().map(|nick| &**nick).collect();
                for nick in members {
                    // H: here, G: gone (away); then @ for the room's operators.
                    let here = if away.contains(&**nick) { 'G' } else { 'H' };
                    let prefix = if operators.contains(&**nick) { "@" } else { "" };
                    let _ = write!(
                        lines.reply(352),
                        "{room} {nick} {SERVER_NAME} {SERVER_NAME} {nick} {here}{prefix} :0 {nick}"
                    );
                    lines.end();
                }
                let _ = write!(lines.reply(315), "{room} :End of /WHO list");
                lines.end();
            }
            Event::Reply {
                tag: Some(tag),
                reply: Reply::Present(nicks),
            } if &**tag == USERHOST_TAG => {
                let out = lines.reply(302);
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
                    let _ = write!(lines.reply(367), "{room} {mask} {} 0", ban.by);
                    lines.end();
                }
                let _ = write!(lines.reply(368), "{room} :End of channel ban list");
                lines.end();
            }
            Event::Reply {
                tag: Some(tag),
                reply: Reply::History(page),
            } if tag.starts_with(CHATHISTORY_TAG) => {
                self.write_chathistory(lines, tag[CHATHISTORY_TAG.len()..].trim_start(), page)
            }
            Event::Error {
                tag: Some(tag),
                code,
                text,
                ..
            } if tag.starts_with(CHATHISTORY_TAG) => {
                // IRCv3 standard replies: INVALID_TARGET for a target it may not read,
                // MESSAGE_ERROR when the history could not be read.
                let about = tag[CHATHISTORY_TAG.len()..].trim_start();
                let reason = match code {
                    ErrorCode::HistoryUnavailable => "MESSAGE_ERROR",
                    ErrorCode::BadRequest => "INVALID_PARAMS",
                    _ => "INVALID_TARGET",
                };
                let _ = write!(lines.out, "FAIL CHATHISTORY {reason} {about} :{text}");
                lines.end();
            }
            Event::Reply {
                tag: Some(tag),
                reply: Reply::SignedIn {
                    account, created, ..
                },
            } if tag.starts_with(REGISTER_TAG) || &**tag == NICKSERV_TAG => {
                if tag.starts_with(REGISTER_TAG) {
                    let _ = write!(
                        lines.out,
                        ":{SERVER_NAME} REGISTER SUCCESS {account} :Account registered; you are logged in"
                    );
                } else {
                    let done = if *created {
                        "registered; you are"
                    } else {
                        "identified:"
                    };
                    let _ = write!(
                        lines.out,
                        ":{NICKSERV}!{NICKSERV}@{SERVER_NAME} NOTICE {} :{account} {done} logged in as {account}",
                        lines.recipient
                    );
                }
                lines.end();
                let _ = write!(
                    lines.reply(900),
                    "{account}!{account}@{SERVER_NAME} {account} :You are now logged in as {account}"
                );
                lines.end();
            }
            Event::Error {
                tag: Some(tag),
                code,
                text,
                ..
            } if tag.starts_with(REGISTER_TAG) || &**tag == NICKSERV_TAG => {
                if let Some(account) = tag.strip_prefix(REGISTER_TAG) {
                    let reason = match code {
                        ErrorCode::AccountExists | ErrorCode::NickRegistered => "ACCOUNT_EXISTS",
                        ErrorCode::BadPassword => "WEAK_PASSWORD",
                        ErrorCode::BadRequest => "ACCOUNT_NAME_MUST_BE_NICK",
                        ErrorCode::NotRegistered => "COMPLETE_CONNECTION_REQUIRED",
                        ErrorCode::AccountsUnavailable | ErrorCode::AuthLimited => {
                            "TEMPORARILY_UNAVAILABLE"
                        }
                        _ => "BAD_ACCOUNT_NAME",
                    };
                    let _ = write!(
                        lines.out,
                        "FAIL REGISTER {reason} {} :{text}",
                        account.trim_start()
                    );
                } else {
                    let _ = write!(
                        lines.out,
                        ":{NICKSERV}!{NICKSERV}@{SERVER_NAME} NOTICE {} :{text}",
                        lines.recipient
                    );
                }
                lines.end();
            }
            Event::Reply { reply, .. } => self.write_reply(lines, reply),
            Event::Error {
                code, text, about, ..
            } => match error_numeric(*code) {
                0 => {
                    let _ = write!(lines.out, "FAIL * {} :{text}", code.as_str().to_uppercase());
                    lines.end();
                }
                // With the channel or nick it is about, as clients expect
                // (`475 nick #room :...`), when the hub named one.
                numeric => {
                    let out = lines.reply(numeric);
                    if let Some(about) = about {
                        let _ = write!(out, "{about} ");
                    }
                    let _ = write!(out, ":{text}");
                    // How to sign in, in IRC's words (the hub's are every door's).
                    if *code == ErrorCode::RegisteredOnly {
                        out.push_str(" (SASL, or /msg NickServ IDENTIFY PASSWORD)");
                    }
                    lines.end();
                }
            },
        }
    }

    fn write_reply(&self, lines: &mut Lines<'_>, reply: &Reply) {
        match reply {
            Reply::Done | Reply::Pong => {}
            Reply::Counts { users, rooms } => {
                let _ = write!(
                    lines.reply(251),
                    ":There are {users} users and 0 invisible on 1 servers"
                );
                lines.end();
                let _ = write!(lines.reply(254), "{rooms} :channels formed");
                lines.end();
                let _ = write!(lines.reply(255), ":I have {users} clients and 0 servers");
                lines.end();
            }
            Reply::Away { away: true } => {
                let _ = write!(lines.reply(306), ":You have been marked as being away");
                lines.end();
            }
            Reply::Away { away: false } => {
                let _ = write!(lines.reply(305), ":You are no longer marked as being away");
                lines.end();
            }
            // ISON's answer (and any other presence answer) names those present.
            Reply::Present(nicks) => {
                let _ = write!(lines.reply(303), ":{}", nicks.join(" "));
                lines.end();
            }
            Reply::Topic { room, topic: None } => {
                let _ = write!(lines.reply(331), "{room} :No topic is set");
                lines.end();
            }
            Reply::Topic {
                room,
                topic: Some(topic),
            } => {
                let _ = write!(lines.reply(332), "{room} :{}", topic.text);
                lines.end();
                let set_at = topic
                    .time
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                let _ = write!(
                    lines.reply(333),
                    "{room} {}!{}@{SERVER_NAME} {set_at}",
                    topic.set_by,
                    topic.set_by
                );
                lines.end();
            }
            Reply::Rooms(rooms) => {
                let _ = write!(lines.reply(321), "Channel :Users Name");
                lines.end();
                for room in rooms {
                    let _ = write!(lines.reply(322), "{} {} :", room.name, room.members);
                    lines.end();
                }
                let _ = write!(lines.reply(323), ":End of /LIST");
                lines.end();
            }
            Reply::Who {
                room,
                members,
                operators,
                ..
            } => {
                // One 353 per ~400 bytes of names keeps each line under 512.
                for chunk in name_chunks(members, operators) {
                    let _ = write!(lines.reply(353), "= {room} :{chunk}");
                    lines.end();
                }
                let _ = write!(lines.reply(366), "{room} :End of /NAMES list");
                lines.end();
            }
            Reply::Whois(info) => {
                let nick = &info.nick;
                let _ = write!(
                    lines.reply(311),
                    "{nick} {nick} {SERVER_NAME} * :client {} on the {} door",
                    info.client,
                    info.door
                );
                lines.end();
                if info.device {
                    // RPL_WHOISSPECIAL: what no other numeric says.
                    let _ = write!(
                        lines.reply(320),
                        "{nick} :is a device (its owner and server operators command it)"
                    );
                    lines.end();
                }
                if let Some(away) = &info.away {
                    let _ = write!(lines.reply(301), "{nick} :{away}");
                    lines.end();
                }
                if let Some(account) = &info.account {
                    let _ = write!(lines.reply(330), "{nick} {account} :is logged in as");
                    lines.end();
                }
                if let Some(address) = &info.address {
                    let _ = write!(lines.reply(338), "{nick} {address} :actually using host");
                    lines.end();
                }
                if !info.rooms.is_empty() {
                    let rooms: Vec<&str> = info.rooms.iter().map(|room| &**room).collect();
                    let _ = write!(lines.reply(319), "{nick} :{}", rooms.join(" "));
                    lines.end();
                }
                let _ = write!(lines.reply(312), "{nick} {SERVER_NAME} :Switchboard");
                lines.end();
                let _ = write!(
                    lines.reply(317),
                    "{nick} 0 {} :seconds idle, signon time",
                    signon_time(info.connected_for_secs)
                );
                lines.end();
                let _ = write!(lines.reply(318), "{nick} :End of /WHOIS list");
                lines.end();
            }
            Reply::History(page) => write_history(self, lines, page),
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
                // Flags in CHANMODES' order (imRt), then the key, whose argument
                // follows.
                if rules.invite_only {
                    modes.push('i');
                }
                if rules.moderated {
                    modes.push('m');
                }
                if rules.registered_only {
                    modes.push('R');
                }
                if rules.topic_locked {
                    modes.push('t');
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
                let _ = write!(lines.reply(324), "{room} {modes}{key}");
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
fn name_chunks(members: &[Arc<str>], operators: &[Arc<str>]) -> Vec<String> {
    let operators: std::collections::HashSet<&str> = operators.iter().map(|nick| &**nick).collect();
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
        if operators.contains(&**member) {
            current.push('@');
        }
        current.push_str(member);
    }
    chunks
}

impl IrcRender {
    /// The tags in front of a line, `@...;... ` (`None`: none to send): `batch` for
    /// what is inside one; with `server-time` the time (a message's own, else now);
    /// a message's `msgid` with `message-tags` and its sender's `account` with
    /// `account-tag`.
    fn tags(&self, message: Option<&ChatMessage>, batch: Option<&str>) -> Option<String> {
        let mut tags = String::new();
        let next = |tags: &mut String| tags.push(if tags.is_empty() { '@' } else { ';' });
        if let Some(batch) = batch.filter(|_| self.caps.batch) {
            next(&mut tags);
            tags.push_str("batch=");
            push_tag_value(&mut tags, batch);
        }
        if self.caps.server_time {
            next(&mut tags);
            tags.push_str("time=");
            tags.push_str(&time_tag(message.map_or_else(SystemTime::now, |m| m.time)));
        }
        if let Some(message) = message {
            if self.caps.message_tags {
                next(&mut tags);
                tags.push_str("msgid=");
                push_tag_value(&mut tags, &msgid(message));
            }
            if let Some(account) = message.account.as_deref().filter(|_| self.caps.account_tag) {
                next(&mut tags);
                tags.push_str("account=");
                push_tag_value(&mut tags, account);
            }
        }
        (!tags.is_empty()).then(|| {
            tags.push(' ');
            tags
        })
    }

    /// The answer to CHATHISTORY (`about`: its subcommand and target): the messages as
    /// they were said, in a `chathistory` batch for clients with `batch`.
    fn write_chathistory(&self, lines: &mut Lines<'_>, about: &str, page: &HistoryPage) {
        const BATCH: &str = "chathistory";
        let target = about.split(' ').nth(1).unwrap_or("*");
        if self.caps.batch {
            lines.tag = None;
            let _ = write!(
                lines.out,
                ":{SERVER_NAME} BATCH +{BATCH} chathistory {target}"
            );
            lines.end();
        }
        for message in &page.messages {
            lines.tag = self.tags(Some(message), Some(BATCH));
            write_message(lines, message);
        }
        if self.caps.batch {
            lines.tag = None;
            let _ = write!(lines.out, ":{SERVER_NAME} BATCH -{BATCH}");
            lines.end();
        }
    }

    fn render_lines(&self, event: &Event, recipient: &str) -> Option<Bytes> {
        let mut lines = Lines::new(recipient);
        lines.tag = match event {
            Event::Message(message) => self.tags(Some(message), None),
            _ => self.tags(None, None),
        };
        self.write_event(&mut lines, event);
        (!lines.out.is_empty()).then(|| Bytes::from(lines.out))
    }
}

impl Render for IrcRender {
    fn render(&self, event: &Event) -> Option<Bytes> {
        self.render_lines(event, "*")
    }

    /// Numerics name their reader, as RFC 2812 has them.
    fn render_to(&self, event: &Event, recipient: Option<&str>) -> Option<Bytes> {
        self.render_lines(event, recipient.unwrap_or("*"))
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
            notice: false,
            account: None,
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
                away: Vec::new(),
                operators: Vec::new(),
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
                away: Vec::new(),
                operators: Vec::new(),
            },
        };
        assert!(render(&names).starts_with(":switchboard 353 * = #general :alice bob\r\n"));
    }

    #[test]
    fn server_time_tags_are_utc_with_milliseconds() {
        let at = |secs: u64, millis: u64| {
            time_tag(UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        // And back, for CHATHISTORY's timestamp= references.
        for ms in [0, 951_782_400_005, 1_700_000_000_123, 4_107_542_399_999] {
            let text = time_tag(UNIX_EPOCH + std::time::Duration::from_millis(ms));
            assert_eq!(parse_time_tag(&text), Some(ms), "{text}");
        }
        assert_eq!(
            parse_time_tag("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time_tag("2023-11-14T22:13:20.1234Z"),
            Some(1_700_000_000_123)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-00-14T22:13:20Z",
            "x-1-1T0:0:0Z",
            "2023-11-14T22:13:20.Z",
        ] {
            assert_eq!(parse_time_tag(bad), None, "{bad}");
        }
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
            notice: false,
            account: None,
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
        // The channel modes: 004 lists them all (and those with a parameter), 005's
        // CHANMODES sorts them by kind, in at most 13 tokens.
        assert!(welcome.contains(" i bikmoRt bko\r\n"), "{welcome}");
        let isupport = welcome.lines().find(|line| line.contains(" 005 ")).unwrap();
        assert!(isupport.contains(" CHANMODES=b,k,,imRt "), "{isupport}");
        let (tokens, _trailing) = isupport.split_once(" :").unwrap();
        assert!(tokens.split(' ').skip(3).count() <= 13, "{isupport}");
    }

    #[test]
    fn channel_modes_come_in_324_in_a_stable_order_with_the_key_last() {
        let rules = |moderated, topic_locked, key: Option<&str>| {
            render(&Event::Reply {
                tag: None,
                reply: Reply::Rules(Arc::new(crate::chat::RulesView {
                    room: "#den".into(),
                    owner: None,
                    operators: Vec::new(),
                    invite_only: true,
                    registered_only: true,
                    has_key: true,
                    key: key.map(Into::into),
                    moderated,
                    topic_locked,
                    bans: Vec::new(),
                    mutes: Vec::new(),
                })),
            })
        };
        assert_eq!(
            rules(true, true, Some("Sesame")),
            ":switchboard 324 * #den +imRtk Sesame\r\n"
        );
        assert_eq!(
            rules(false, true, None),
            ":switchboard 324 * #den +iRtk *\r\n"
        );
        assert_eq!(
            rules(true, false, None),
            ":switchboard 324 * #den +imRk *\r\n"
        );
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
                away: Vec::new(),
                operators: Vec::new(),
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
    fn tags_escape_and_msgids_round_trip() {
        let mut value = String::new();
        push_tag_value(&mut value, "a b;c\\d\r\n");
        assert_eq!(value, "a\\sb\\:c\\\\d\\r\\n");
        let Event::Message(said) = message(Target::Room("#Ops".into()), "hi", false) else {
            unreachable!()
        };
        assert_eq!(msgid(&said), "#Ops/1");
        assert_eq!(parse_msgid("#Ops/1"), Some((1, true)));
        assert_eq!(parse_msgid("~42"), Some((42, false)));
        for foreign in ["42", "#ops/x", "abc/1", "~", ""] {
            assert_eq!(parse_msgid(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn tags_follow_the_capabilities_and_notices_stay_notices() {
        let said = Arc::new(ChatMessage {
            id: 3,
            time: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            target: Target::Room("#a".into()),
            from: "bob".into(),
            from_client: 2,
            text: "look".into(),
            data: None,
            action: false,
            notice: true,
            account: Some("Bob".into()),
        });
        let event = Event::Message(said);
        let rendered = |caps: Caps| {
            String::from_utf8(IrcRender::with_caps(caps).render(&event).unwrap().to_vec()).unwrap()
        };
        assert_eq!(
            rendered(Caps::default()),
            ":bob!bob@switchboard NOTICE #a :look\r\n"
        );
        let all = Caps {
            server_time: true,
            message_tags: true,
            account_tag: true,
            ..Caps::default()
        };
        assert_eq!(
            rendered(all),
            "@time=2023-11-14T22:13:20.000Z;msgid=#a/3;account=Bob :bob!bob@switchboard NOTICE #a :look\r\n"
        );
        let account_only = Caps {
            account_tag: true,
            ..Caps::default()
        };
        assert_eq!(
            rendered(account_only),
            "@account=Bob :bob!bob@switchboard NOTICE #a :look\r\n"
        );
        // Each combination has its own renderer, all 128 of them.
        let renders = IrcRenders::new();
        for index in 0..CAPS_COMBINATIONS {
            assert_eq!(Caps::from_index(index).index(), index);
            assert_eq!(
                renders.for_caps(Caps::from_index(index)).caps.index(),
                index
            );
        }
    }

    #[test]
    fn errors_carry_their_numeric() {
        let error = render(&Event::Error {
            tag: None,
            code: ErrorCode::NoSuchNick,
            text: "no such user: carol".into(),
            about: None,
        });
        assert_eq!(error, ":switchboard 401 * :no such user: carol\r\n");
    }
}
