//! The IRC front door: irssi, WeeChat, HexChat and bots join the same rooms as every
//! other door (a room `#general` is the channel `#general`). [`IrcProtocol`] maps IRC
//! commands to hub requests and answers what it can itself (PING, CAP, MODE queries);
//! it rides line framing ([`IrcFraming`], CR LF) on the shared session driver, events
//! are rendered by [`render::IrcRender`], and a close says `ERROR :Closing link`.
//!
//! What a client gets today: registration (CAP LS/LIST/REQ/END offering
//! `cap-notify`, `echo-message`, `multi-prefix`, `server-time` and `sasl`; SASL PLAIN
//! logs in to an account before registration; NICK, USER, PASS checked against
//! `--irc-password` when one is set), the welcome numerics 001-005 and the message of
//! the day (375/372/376, also for MOTD), PING/PONG, JOIN (several channels), PART,
//! PRIVMSG and NOTICE to channels and nicks (CTCP ACTION is `/me`), NICK changes,
//! NAMES, LIST, WHOIS, WHO, TOPIC, moderation (KICK, INVITE, KILL, channel MODE +i +R
//! +b +o and its queries), VERSION, TIME, QUIT, and error numerics. Flood control,
//! the register timeout, slow consumers and the connection limits are the driver's,
//! as on every door.

pub mod message;
pub mod render;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use self::message::{ctcp_action, parse};
use self::render::{Caps, IrcRenders, Motd, SERVER_NAME};
use super::conn::Farewell;
use super::line::framing::LineFramer;
use super::session::{
    self, AccountStep, Door, Framing, Notice, Protocol, SessionSettings, Step, Unit,
};
use super::PeerSlot;
use crate::chat::Moderation;
use crate::hub::{CloseReason, HistoryBound, HubHandle, Request, Tag, MAX_PRESENCE_NICKS};
use crate::metrics::DoorMetrics;
use crate::text::NickError;

/// The longest line a client may send, without its CR LF and tags (RFC 1459: 512
/// with them).
pub const MAX_LINE_BYTES: usize = 510;

/// The most a line's tags (`@` to the space after them) may take (IRCv3
/// message-tags: 8191 bytes from clients).
pub const MAX_TAG_BYTES: usize = 8191;

/// The IRC door: its session rules and its protocol.
pub type IrcDoor = Door<IrcProtocol>;

/// What an IRC door is configured with beyond the session rules.
#[derive(Debug, Clone, Default)]
pub struct IrcSettings {
    /// The message of the day's lines (`None`: the built-in line).
    pub motd: Option<Vec<String>>,
    /// The server password PASS must give before registering (`None`: none asked).
    pub password: Option<String>,
}

/// Build the IRC door on `hub`.
pub fn door(
    hub: HubHandle,
    session: SessionSettings,
    metrics: DoorMetrics,
    settings: IrcSettings,
) -> IrcDoor {
    let protocol = IrcProtocol::with(settings);
    Door {
        name: "irc",
        hub,
        render: protocol.renders.for_caps(Caps::default()).clone(),
        settings: session,
        metrics,
        protocol,
    }
}

/// Drive one IRC connection (plain or TLS) from registration to close.
pub fn drive<'door, D, S>(door: D, stream: S, peer: PeerSlot) -> impl Future<Output = ()> + 'door
where
    D: Deref<Target = IrcDoor> + 'door,
    S: AsyncRead + AsyncWrite + Unpin + 'door,
{
    // The framer holds the longest line with tags; the protocol checks the parts.
    let framing = IrcFraming(LineFramer::new(MAX_TAG_BYTES + MAX_LINE_BYTES));
    session::drive(door, stream, peer, framing, IrcFarewell)
}

/// CR LF (or bare LF) framing. Unlike the line door there is no burst gap: every IRC
/// client ends its lines, so an unterminated line waits for its end.
pub struct IrcFraming(pub LineFramer);

impl Framing for IrcFraming {
    type Control = Infallible;

    fn push(&mut self, chunk: &Bytes, units: &mut Vec<Unit<Infallible>>) {
        self.0.push(chunk, units);
    }

    fn finish(&mut self, units: &mut Vec<Unit<Infallible>>) {
        self.0.finish(units);
    }
}

/// `ERROR` with the reason, the last line before the server closes (RFC 2812 3.7.4).
pub struct IrcFarewell;

impl Farewell for IrcFarewell {
    fn farewell(&self, reason: CloseReason) -> Option<Bytes> {
        Some(format!("ERROR :Closing link: {}\r\n", reason.as_str()).into())
    }
}

/// What an IRC connection remembers before and during registration.
#[derive(Debug, Default)]
pub struct IrcState {
    /// From NICK, until the hub has answered the registration.
    nick: Option<String>,
    /// USER was sent.
    user: bool,
    /// Between `CAP LS`/`CAP REQ` and `CAP END`: registration waits (IRCv3).
    negotiating: bool,
    /// A registration is with the hub.
    registering: bool,
    /// Which of [`CAPS`] the client has asked for and been given.
    enabled: [bool; CAPS.len()],
    /// What PASS gave, until registration.
    password: Option<String>,
    /// Where a SASL exchange is.
    sasl: Sasl,
    /// The account SASL signed in to, registered as once registration starts.
    verified: Option<crate::chat::Account>,
}

/// SASL (PLAIN only) before registration.
#[derive(Debug, Default, PartialEq)]
enum Sasl {
    #[default]
    Idle,
    /// `AUTHENTICATE PLAIN` was answered with `+`: the credentials come next, in
    /// base64, in 400-byte pieces (collected here).
    Awaiting(String),
    /// With the accounts service.
    Checking,
    /// Signed in (at registration).
    Done,
}

/// Longest SASL payload taken (base64 of a name and a password, with room to spare).
const MAX_SASL_BYTES: usize = 1200;

/// The capabilities among those `enabled` that change how a client is rendered.
fn render_caps(enabled: [bool; CAPS.len()]) -> Caps {
    let on = |name: &str| enabled[cap_index(name)];
    Caps {
        echo_message: on("echo-message"),
        server_time: on("server-time"),
        extended_join: on("extended-join"),
        away_notify: on("away-notify"),
        message_tags: on("message-tags"),
        account_tag: on("account-tag"),
        batch: on("batch"),
    }
}

/// The IRCv3 capabilities offered, in `CAP LS` order. `cap-notify` is there for
/// clients that ask (the list never changes, so there is never a NEW or DEL to
/// notify); `multi-prefix` costs nothing, as the one member prefix is `@`.
/// `message-tags` lets a client send tags (accepted, not relayed: client-only tags
/// reach nobody) and gives it each message's `msgid`. `draft/account-registration`
/// without values: REGISTER after connecting, the account named as the nick.
const CAPS: [&str; 12] = [
    "cap-notify",
    "echo-message",
    "multi-prefix",
    "server-time",
    "sasl",
    "extended-join",
    "away-notify",
    "message-tags",
    "account-tag",
    "batch",
    "draft/chathistory",
    "draft/account-registration",
];

/// Where `name` is in [`CAPS`] (a name from that list).
fn cap_index(name: &str) -> usize {
    CAPS.iter()
        .position(|cap| *cap == name)
        .expect("a capability this door offers")
}

/// `enabled` after a `CAP REQ` for `wanted` (`name` or `-name`, space-separated), or
/// `None` if it names one not offered: a request is granted whole or not at all.
fn requested(enabled: [bool; CAPS.len()], wanted: &str) -> Option<[bool; CAPS.len()]> {
    let mut after = enabled;
    for token in wanted.split_whitespace() {
        let (name, on) = match token.strip_prefix('-') {
            Some(name) => (name, false),
            None => (token, true),
        };
        let index = CAPS.iter().position(|cap| cap.eq_ignore_ascii_case(name))?;
        after[index] = on;
    }
    Some(after)
}

/// The IRC protocol. Per-connection state is [`IrcState`]; what it shares is one
/// renderer per capability combination, the message of the day and the password.
pub struct IrcProtocol {
    renders: IrcRenders,
    motd: Motd,
    password: Option<String>,
}

impl IrcProtocol {
    /// No password, the built-in message of the day.
    pub fn new() -> Self {
        Self::with(IrcSettings::default())
    }

    pub fn with(settings: IrcSettings) -> Self {
        let motd: Motd = match settings.motd {
            Some(lines) => lines.into(),
            None => Arc::from([render::BUILT_IN_MOTD.to_owned()]),
        };
        IrcProtocol {
            renders: IrcRenders::with_motd(motd.clone()),
            motd,
            password: settings.password,
        }
    }

    /// Whether `given` is the server password (or none is asked). Compared in time
    /// that does not depend on where they differ.
    fn password_accepted(&self, given: Option<&str>) -> bool {
        let Some(password) = &self.password else {
            return true;
        };
        let given = given.unwrap_or("").as_bytes();
        let wanted = password.as_bytes();
        let differs = given
            .iter()
            .zip(wanted)
            .fold(given.len() ^ wanted.len(), |acc, (a, b)| {
                acc | usize::from(a ^ b)
            });
        differs == 0
    }
}

impl Default for IrcProtocol {
    fn default() -> Self {
        Self::new()
    }
}

/// The moderation a channel `MODE` asks for, in order: `+i`/`-i` (invite-only),
/// `+R`/`-R` (accounts only), `+k KEY`/`-k` (a key to join), `+m`/`-m` (moderated:
/// only operators speak), `+t`/`-t` (only operators set the topic), `+b MASK`/`-b
/// MASK`, `+o NICK`/`-o NICK`, combined as in `+ikb-o KEY MASK NICK` or `+ik-t KEY`. `-k` takes an argument
/// too (CHANMODES type B: clients send the old key), which is skipped; `+k` without
/// one does nothing, as `+b` without one. `Err`: a mode letter this server does not
/// know.
fn channel_modes(modes: &str, arguments: &[&str]) -> Result<Vec<Moderation>, char> {
    let mut arguments = arguments.iter();
    let (mut on, mut actions) = (true, Vec::new());
    let (mut invite_only, mut registered_only, mut key) = (None, None, None);
    let (mut moderated, mut topic_locked) = (None, None);
    for letter in modes.chars() {
        match letter {
            '+' => on = true,
            '-' => on = false,
            'i' => invite_only = Some(on),
            'R' | 'r' => registered_only = Some(on),
            'm' => moderated = Some(on),
            't' => topic_locked = Some(on),
            'k' => match arguments.next() {
                Some(given) if on => key = Some(Some((*given).to_owned())),
                None if on => {}
                _ => key = Some(None),
            },
            'b' => {
                if let Some(mask) = arguments.next() {
                    let target = from_irc_mask(mask);
                    actions.push(if on {
                        Moderation::Ban {
                            target,
                            duration: None,
                            reason: None,
                        }
                    } else {
                        Moderation::Unban { target }
                    });
                }
            }
            'o' => {
                if let Some(nick) = arguments.next() {
                    let nick = (*nick).to_owned();
                    actions.push(if on {
                        Moderation::Op { nick }
                    } else {
                        Moderation::Deop { nick }
                    });
                }
            }
            other => return Err(other),
        }
    }
    if invite_only.is_some()
        || registered_only.is_some()
        || key.is_some()
        || moderated.is_some()
        || topic_locked.is_some()
    {
        actions.insert(
            0,
            Moderation::Mode {
                invite_only,
                registered_only,
                key,
                moderated,
                topic_locked,
            },
        );
    }
    Ok(actions)
}

/// An IRC ban mask as a moderation target: the account extbans `~a:NAME` and
/// `$a:NAME` are `account:NAME`; `*!*@HOST` is HOST (an address mask); `NICK!*@*` is
/// NICK; anything else is taken as it is.
fn from_irc_mask(mask: &str) -> String {
    for prefix in ["~a:", "~account:", "$a:"] {
        if let Some(name) = mask.strip_prefix(prefix) {
            return format!("account:{name}");
        }
    }
    match mask.split_once('@') {
        Some((user, "*")) => user.split('!').next().unwrap_or(user).to_owned(),
        Some((_, host)) => host.to_owned(),
        None => mask.split('!').next().unwrap_or(mask).to_owned(),
    }
}

/// `AUTHENTICATE` before registration: `PLAIN`, then the base64 of
/// `authzid NUL authcid NUL password` (in 400-byte pieces; `+` ends a payload that
/// was a multiple of 400, or is an empty one), or `*` to abort.
fn authenticate(state: &mut IrcState, params: &[&str], steps: &mut Vec<Step>) {
    let Some(&param) = params.first() else {
        steps.push(numeric(461, "AUTHENTICATE :Not enough parameters"));
        return;
    };
    if param == "*" {
        // An abort takes back a success too: registration will not sign in.
        state.sasl = Sasl::Idle;
        state.verified = None;
        steps.push(numeric(906, ":SASL authentication aborted"));
        return;
    }
    match std::mem::take(&mut state.sasl) {
        Sasl::Idle | Sasl::Done if !state.enabled[cap_index("sasl")] => {
            steps.push(numeric(
                904,
                ":SASL authentication failed: CAP REQ :sasl first",
            ));
        }
        Sasl::Idle if param.eq_ignore_ascii_case("PLAIN") => {
            state.sasl = Sasl::Awaiting(String::new());
            steps.push(send_line("AUTHENTICATE +".into()));
        }
        Sasl::Idle => {
            steps.push(numeric(908, "PLAIN :are available SASL mechanisms"));
            steps.push(numeric(
                904,
                ":SASL authentication failed: only PLAIN is offered",
            ));
        }
        Sasl::Awaiting(mut payload) => {
            if param != "+" {
                payload.push_str(param);
            }
            if payload.len() > MAX_SASL_BYTES {
                steps.push(numeric(905, ":SASL message too long"));
                return;
            }
            if param.len() == 400 {
                // More to come.
                state.sasl = Sasl::Awaiting(payload);
                return;
            }
            match plain_credentials(&payload) {
                Some((name, password)) => {
                    state.sasl = Sasl::Checking;
                    steps.push(Step::Account {
                        tag: None,
                        step: AccountStep::Verify { name, password },
                    });
                }
                None => steps.push(numeric(
                    904,
                    ":SASL authentication failed: the PLAIN payload is not base64 of authzid\\0name\\0password",
                )),
            }
        }
        Sasl::Checking => {
            state.sasl = Sasl::Checking;
            steps.push(numeric(
                904,
                ":SASL authentication failed: a check is already running",
            ));
        }
        Sasl::Done => {
            state.sasl = Sasl::Done;
            steps.push(numeric(907, ":You have already authenticated"));
        }
    }
}

/// What NickServ understands: `REGISTER PASSWORD [EMAIL]` (the nick becomes an
/// account), `IDENTIFY [ACCOUNT] PASSWORD` (log in; the nick becomes the account's),
/// and `HELP`. Answered as NOTICEs from NickServ.
fn nickserv(text: &str, steps: &mut Vec<Step>) {
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or("").to_ascii_uppercase();
    let words: Vec<&str> = words.collect();
    let tag = Some(Tag::from(render::NICKSERV_TAG));
    let step = match (command.as_str(), &words[..]) {
        ("REGISTER", [password, ..]) => AccountStep::Register {
            password: (*password).to_owned(),
            remember: false,
            name: None,
        },
        ("IDENTIFY" | "LOGIN", [password]) => AccountStep::Login {
            name: String::new(),
            password: (*password).to_owned(),
            remember: false,
        },
        ("IDENTIFY" | "LOGIN", [account, password, ..]) => AccountStep::Login {
            name: (*account).to_owned(),
            password: (*password).to_owned(),
            remember: false,
        },
        _ => {
            steps.push(Step::SendAddressed(crate::hub::Addressed {
                head: format!(":{0}!{0}@{SERVER_NAME} NOTICE ", render::NICKSERV),
                tail: " :Commands: REGISTER PASSWORD (makes your nick an account), IDENTIFY [ACCOUNT] PASSWORD (logs in). SASL PLAIN logs in as you connect.\r\n".into(),
            }));
            return;
        }
    };
    steps.push(Step::Account { tag, step });
}

/// `CHATHISTORY LATEST|BEFORE|AFTER|BETWEEN target ref [ref] limit` (IRCv3
/// draft/chathistory) as a history request, tagged so the answer comes as a batch.
/// References are `timestamp=` (to the millisecond, as `server-time` writes them),
/// `msgid=` (the ids this server gives, see [`render::msgid`]), or `*` for LATEST.
fn chathistory(params: &[&str], steps: &mut Vec<Step>) {
    let fail = |code: &str, context: &str, why: &str| {
        send_line(format!("FAIL CHATHISTORY {code} {context} :{why}"))
    };
    let (Some(subcommand), Some(&target)) = (params.first(), params.get(1)) else {
        steps.push(fail(
            "NEED_MORE_PARAMS",
            "*",
            "CHATHISTORY SUBCOMMAND TARGET REFERENCE LIMIT",
        ));
        return;
    };
    let subcommand = subcommand.to_ascii_uppercase();
    let references = match subcommand.as_str() {
        "LATEST" | "BEFORE" | "AFTER" => 1,
        "BETWEEN" => 2,
        "TARGETS" | "AROUND" => {
            steps.push(fail(
                "INVALID_PARAMS",
                &subcommand,
                "not supported here; use LATEST, BEFORE, AFTER or BETWEEN",
            ));
            return;
        }
        other => {
            steps.push(fail(
                "INVALID_PARAMS",
                other,
                "unknown subcommand (LATEST, BEFORE, AFTER, BETWEEN)",
            ));
            return;
        }
    };
    let context = format!("{subcommand} {target}");
    let Some(limit) = params
        .get(2 + references)
        .and_then(|limit| limit.parse::<usize>().ok())
        .filter(|limit| *limit > 0)
    else {
        steps.push(fail(
            "INVALID_PARAMS",
            &context,
            "the limit must be a number above 0",
        ));
        return;
    };
    let room = target.starts_with('#');
    // A reference as a bound; `Ok(None)` for `*`.
    let reference = |param: &str| -> Result<Option<HistoryBound>, &'static str> {
        if param == "*" {
            return Ok(None);
        }
        if let Some(time) = param.strip_prefix("timestamp=") {
            return render::parse_time_tag(time)
                .map(|ms| Some(HistoryBound::Millis(ms)))
                .ok_or("not a timestamp (YYYY-MM-DDThh:mm:ss.sssZ)");
        }
        match param.strip_prefix("msgid=").and_then(render::parse_msgid) {
            Some((id, of_room)) if of_room == room => Ok(Some(HistoryBound::Id(id))),
            _ => Err("not a msgid this server gave for that target"),
        }
    };
    let mut ids = Vec::with_capacity(references);
    for param in &params[2..2 + references] {
        match reference(param) {
            Ok(None) if subcommand != "LATEST" => {
                steps.push(fail("INVALID_PARAMS", &context, "only LATEST takes *"));
                return;
            }
            Ok(id) => ids.push(id),
            Err(why) => {
                steps.push(fail("INVALID_PARAMS", &context, why));
                return;
            }
        }
    }
    let (before, after, newest) = match (subcommand.as_str(), &ids[..]) {
        ("LATEST", [after]) => (None, *after, true),
        ("BEFORE", [before]) => (*before, None, false),
        ("AFTER", [after]) => (None, *after, false),
        ("BETWEEN", [Some(first), Some(second)]) => match (first, second) {
            (HistoryBound::Id(a), HistoryBound::Id(b))
            | (HistoryBound::Millis(a), HistoryBound::Millis(b))
                if a <= b =>
            {
                (Some(*second), Some(*first), false)
            }
            // Given newest first: read backwards from the first.
            (HistoryBound::Id(_), HistoryBound::Id(_))
            | (HistoryBound::Millis(_), HistoryBound::Millis(_)) => {
                (Some(*first), Some(*second), true)
            }
            _ => {
                let why = "give both references the same way (two msgids or two timestamps)";
                steps.push(fail("INVALID_PARAMS", &context, why));
                return;
            }
        },
        _ => (None, None, true),
    };
    let limit = Some(limit.min(render::CHATHISTORY_LIMIT));
    let request = if room {
        Request::History {
            room: Some(target.to_owned()),
            before,
            after,
            limit,
            newest,
        }
    } else {
        Request::PrivateHistory {
            with: target.to_owned(),
            before,
            after,
            limit,
            newest,
        }
    };
    steps.push(Step::Request {
        tag: Some(format!("{} {context}", render::CHATHISTORY_TAG).into()),
        request,
    });
}

/// The name and password in a SASL PLAIN payload (`authzid NUL authcid NUL password`,
/// base64; the authorization id must be empty or the same name).
fn plain_credentials(payload: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '\0');
    let (authzid, name, password) = (parts.next()?, parts.next()?, parts.next()?);
    if name.is_empty() || (!authzid.is_empty() && authzid != name) {
        return None;
    }
    Some((name.to_owned(), password.to_owned()))
}

/// `:switchboard NUMERIC nick rest`: the hub writes in the client's nick as it is
/// when the line goes out (`*` before registration).
fn numeric(number: u16, rest: &str) -> Step {
    addressed(format!(":{SERVER_NAME} {number:03} "), rest)
}

/// `head`, the client's nick, a space and `rest`, as one line (see [`send_line`] on
/// what is made safe).
fn addressed(head: String, rest: &str) -> Step {
    let mut tail = String::with_capacity(rest.len() + 3);
    tail.push(' ');
    tail.push_str(rest);
    if tail.contains(['\r', '\n', '\0']) {
        tail = tail.replace(['\r', '\n', '\0'], " ");
    }
    tail.push_str("\r\n");
    Step::SendAddressed(crate::hub::Addressed { head, tail })
}

/// One line the door says itself. What it echoes of the client's input (a command's
/// name, a nick) may hold a lone CR or NUL: made a space, so it cannot end the line.
fn send_line(mut line: String) -> Step {
    if line.contains(['\r', '\n', '\0']) {
        line = line.replace(['\r', '\n', '\0'], " ");
    }
    line.push_str("\r\n");
    Step::Send(Bytes::from(line))
}

fn request(request: Request) -> Step {
    Step::Request { tag: None, request }
}

impl IrcProtocol {
    fn before_registration(
        &self,
        state: &mut IrcState,
        command: &str,
        params: &[&str],
        steps: &mut Vec<Step>,
    ) {
        match command {
            "NICK" => match params.first() {
                Some(nick) if !nick.is_empty() => state.nick = Some((*nick).to_owned()),
                _ => steps.push(numeric(431, ":No nickname given")),
            },
            "USER" if params.len() < 4 => steps.push(numeric(461, "USER :Not enough parameters")),
            "USER" => state.user = true,
            // Checked when registration starts (any is accepted when none is asked).
            "PASS" => state.password = params.first().map(|given| (*given).to_owned()),
            "QUIT" => steps.push(Step::Leave(CloseReason::ClientQuit)),
            "REGISTER" => steps.push(send_line(
                "FAIL REGISTER COMPLETE_CONNECTION_REQUIRED * :register once connected (after NICK and USER); the account is your nick".into(),
            )),
            _ => steps.push(numeric(451, ":You have not registered")),
        }
        self.try_register(state, steps);
    }

    /// Registration starts once NICK and USER are in and capability negotiation is
    /// over; a wrong or missing server password ends the connection instead.
    fn try_register(&self, state: &mut IrcState, steps: &mut Vec<Step>) {
        if state.nick.is_some() && state.user && !state.negotiating && !state.registering {
            if !self.password_accepted(state.password.as_deref()) {
                steps.push(numeric(464, ":Password incorrect"));
                steps.push(Step::Leave(CloseReason::BadPassword));
                // Said once: the connection is closing.
                state.registering = true;
                return;
            }
            state.registering = true;
            let caps = render_caps(state.enabled);
            if caps != Caps::default() {
                steps.push(Step::Render(self.renders.for_caps(caps).clone()));
            }
            match state.verified.take() {
                Some(account) => steps.push(Step::RegisterSignedIn { account }),
                None => steps.push(Step::Register {
                    tag: None,
                    nick: state.nick.clone().unwrap_or_default(),
                }),
            }
        }
    }

    fn registered(&self, command: &str, params: &[&str], steps: &mut Vec<Step>) {
        match command {
            "JOIN" => {
                let Some(channels) = params.first().filter(|c| !c.is_empty()) else {
                    steps.push(numeric(461, "JOIN :Not enough parameters"));
                    return;
                };
                // `JOIN #a,#b k1,k2`: keys pair with channels by position; a channel
                // past the last key (or with an empty one) is joined without.
                let mut keys = params.get(1).map(|keys| keys.split(','));
                for room in channels.split(',') {
                    let key = keys.as_mut().and_then(Iterator::next);
                    if room.is_empty() {
                        continue;
                    }
                    steps.push(request(Request::Join {
                        room: room.to_owned(),
                        key: key.filter(|key| !key.is_empty()).map(str::to_owned),
                    }));
                    // The member list a client expects right after its JOIN (none
                    // after a refusal: its numeric is the whole answer).
                    steps.push(request(Request::JoinedNames {
                        room: room.to_owned(),
                    }));
                }
            }
            "PART" => {
                let Some(channels) = params.first().filter(|c| !c.is_empty()) else {
                    steps.push(numeric(461, "PART :Not enough parameters"));
                    return;
                };
                let reason = params.get(1).map(|reason| (*reason).to_owned());
                for room in channels.split(',').filter(|room| !room.is_empty()) {
                    steps.push(request(Request::Part {
                        room: Some(room.to_owned()),
                        reason: reason.clone(),
                    }));
                }
            }
            "PRIVMSG" | "NOTICE" => {
                let Some(target) = params.first().filter(|t| !t.is_empty()) else {
                    steps.push(numeric(411, &format!(":No recipient given ({command})")));
                    return;
                };
                let Some(text) = params.get(1).filter(|text| !text.is_empty()) else {
                    steps.push(numeric(412, ":No text to send"));
                    return;
                };
                // NickServ is the server itself: what is said to it (passwords) never
                // reaches a user who took that nick.
                if target.eq_ignore_ascii_case(render::NICKSERV) {
                    if command == "PRIVMSG" {
                        nickserv(text, steps);
                    }
                    return;
                }
                let (text, action) = match ctcp_action(text) {
                    Some(body) => (body, true),
                    // Other CTCP queries (VERSION, PING) are not relayed as speech.
                    None if text.starts_with('\u{1}') => return,
                    None => (*text, false),
                };
                let text = text.to_owned();
                if command == "NOTICE" && !action {
                    // A NOTICE must never draw an automatic reply (RFC 2812 3.3.2),
                    // and arrives as a NOTICE.
                    steps.push(request(Request::Notice {
                        to: (*target).to_owned(),
                        text,
                    }));
                } else if target.starts_with('#') {
                    steps.push(request(Request::Say {
                        room: Some((*target).to_owned()),
                        text,
                        data: None,
                        action,
                    }));
                } else {
                    steps.push(request(Request::Whisper {
                        to: (*target).to_owned(),
                        text,
                        data: None,
                        action,
                    }));
                }
            }
            // Client-only tags (typing notices, reactions) are not relayed: accepted
            // and dropped, as IRCv3 lets a server do.
            "TAGMSG" => {}
            "CHATHISTORY" => chathistory(params, steps),
            "NICKSERV" | "NS" => nickserv(&params.join(" "), steps),
            // draft/account-registration: the account is the nick (`*` says so), the
            // email is not kept.
            "REGISTER" => match params {
                [account, _email, password, ..] if !password.is_empty() => {
                    let name = (*account != "*").then(|| (*account).to_owned());
                    steps.push(Step::Account {
                        tag: Some(format!("{} {account}", render::REGISTER_TAG).into()),
                        step: AccountStep::Register {
                            password: (*password).to_owned(),
                            remember: false,
                            name,
                        },
                    });
                }
                _ => steps.push(send_line(
                    "FAIL REGISTER NEED_MORE_PARAMS * :REGISTER ACCOUNT EMAIL PASSWORD (ACCOUNT * for your nick, EMAIL * for none)".into(),
                )),
            },
            "NICK" => match params.first().filter(|nick| !nick.is_empty()) {
                Some(nick) => steps.push(request(Request::Nick {
                    nick: (*nick).to_owned(),
                })),
                None => steps.push(numeric(431, ":No nickname given")),
            },
            // NAMES #a,#b: each channel's list; no channel: the current one's.
            "NAMES" => match params.first().filter(|rooms| !rooms.is_empty()) {
                Some(rooms) => {
                    for room in rooms.split(',').filter(|room| !room.is_empty()) {
                        steps.push(request(Request::Who {
                            room: Some(room.to_owned()),
                        }));
                    }
                }
                None => steps.push(request(Request::Who { room: None })),
            },
            "LIST" => steps.push(request(Request::Rooms)),
            "WHOIS" => match params.last().filter(|nick| !nick.is_empty()) {
                Some(nick) => steps.push(request(Request::Whois {
                    nick: (*nick).to_owned(),
                })),
                None => steps.push(numeric(431, ":No nickname given")),
            },
            // A channel's members, one 352 each (the request is tagged so the
            // renderer answers it as WHO, not as NAMES). Other masks match nobody:
            // clients still get the end they wait for.
            "WHO" => match params.first().copied() {
                Some(room) if room.starts_with('#') => steps.push(Step::Request {
                    tag: Some(render::WHO_TAG.into()),
                    request: Request::Who {
                        room: Some(room.to_owned()),
                    },
                }),
                mask => {
                    let mask = mask.unwrap_or("*");
                    steps.push(numeric(315, &format!("{mask} :End of /WHO list")));
                }
            },
            "AWAY" => steps.push(request(Request::Away {
                message: params.first().map(|message| (*message).to_owned()),
            })),
            // ISON takes nicks as separate parameters or in one trailing list;
            // USERHOST at most five.
            "ISON" | "USERHOST" => {
                let nicks: Vec<String> = params
                    .iter()
                    .flat_map(|param| param.split_whitespace())
                    .take(if command == "USERHOST" {
                        5
                    } else {
                        MAX_PRESENCE_NICKS
                    })
                    .map(str::to_owned)
                    .collect();
                if nicks.is_empty() {
                    steps.push(numeric(461, &format!("{command} :Not enough parameters")));
                    return;
                }
                let tag = if command == "ISON" {
                    render::ISON_TAG
                } else {
                    render::USERHOST_TAG
                };
                steps.push(Step::Request {
                    tag: Some(tag.into()),
                    request: Request::Present { nicks },
                });
            }
            "MODE" => match params {
                [target] if target.starts_with('#') => steps.push(request(Request::Moderate {
                    room: Some((*target).to_owned()),
                    action: Moderation::Rules,
                })),
                // User modes: none are kept, so a client's `MODE me +i` is answered
                // with what it has.
                [target, ..] if !target.starts_with('#') => {
                    steps.push(send_line(format!(":{SERVER_NAME} 221 {target} +")))
                }
                [target, "b" | "+b"] => steps.push(Step::Request {
                    tag: Some(render::BANS_TAG.into()),
                    request: Request::Moderate {
                        room: Some((*target).to_owned()),
                        action: Moderation::Rules,
                    },
                }),
                [target, "e" | "+e"] => steps.push(numeric(
                    349,
                    &format!("{target} :End of channel exception list"),
                )),
                [target, "I" | "+I"] => steps.push(numeric(
                    347,
                    &format!("{target} :End of channel invite list"),
                )),
                [target] => steps.push(send_line(format!(":{SERVER_NAME} 221 {target} +"))),
                [target, modes, arguments @ ..] => match channel_modes(modes, arguments) {
                    Ok(actions) => {
                        for action in actions {
                            steps.push(request(Request::Moderate {
                                room: Some((*target).to_owned()),
                                action,
                            }));
                        }
                    }
                    Err(mode) => steps.push(numeric(
                        472,
                        &format!("{mode} :is not a mode this server knows (i, m, R, t, k, b, o)"),
                    )),
                },
                [] => steps.push(numeric(461, "MODE :Not enough parameters")),
            },
            "KICK" => match params {
                [room, nicks, rest @ ..] => {
                    for nick in nicks.split(',').filter(|nick| !nick.is_empty()) {
                        steps.push(request(Request::Moderate {
                            room: Some((*room).to_owned()),
                            action: Moderation::Kick {
                                nick: nick.to_owned(),
                                reason: rest.first().map(|reason| (*reason).to_owned()),
                            },
                        }));
                    }
                }
                _ => steps.push(numeric(461, "KICK :Not enough parameters")),
            },
            "INVITE" => match params {
                [nick, room, ..] => steps.push(request(Request::Moderate {
                    room: Some((*room).to_owned()),
                    action: Moderation::Invite {
                        nick: (*nick).to_owned(),
                    },
                })),
                _ => steps.push(numeric(461, "INVITE :Not enough parameters")),
            },
            "KILL" => match params {
                [nick, rest @ ..] => steps.push(request(Request::Kill {
                    nick: (*nick).to_owned(),
                    reason: rest.first().map(|reason| (*reason).to_owned()),
                })),
                _ => steps.push(numeric(461, "KILL :Not enough parameters")),
            },
            "TOPIC" => match params {
                [room, rest @ ..] if !room.is_empty() => steps.push(request(Request::Topic {
                    room: Some((*room).to_owned()),
                    text: rest.first().map(|text| (*text).to_owned()),
                })),
                _ => steps.push(numeric(461, "TOPIC :Not enough parameters")),
            },
            "LUSERS" => steps.push(request(Request::Counts)),
            "MOTD" => {
                for (number, text) in render::motd_numerics(&self.motd) {
                    steps.push(numeric(number, &text));
                }
            }
            "VERSION" => steps.push(numeric(
                351,
                &format!(
                    "switchboard-{} {SERVER_NAME} :Switchboard chat server",
                    env!("CARGO_PKG_VERSION")
                ),
            )),
            "TIME" => {
                // Modern clients read the timestamp and offset; people read the text.
                let now = std::time::SystemTime::now();
                let secs = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                let readable = render::time_tag(now);
                steps.push(numeric(391, &format!("{SERVER_NAME} {secs} 0 :{readable}")));
            }
            "QUIT" => steps.push(request(Request::Quit {
                reason: params.first().map(|reason| (*reason).to_owned()),
            })),
            "USER" | "PASS" => steps.push(numeric(462, ":You may not reregister")),
            _ => steps.push(numeric(421, &format!("{command} :Unknown command"))),
        }
    }
}

impl Protocol for IrcProtocol {
    type State = IrcState;

    fn on_message(
        &self,
        state: &mut IrcState,
        line: &[u8],
        registered: bool,
        steps: &mut Vec<Step>,
    ) {
        // The framer let through up to the tags' limit plus a line: each part is held
        // to its own limit.
        let tag_bytes = match line.first() {
            Some(b'@') => line
                .iter()
                .position(|&b| b == b' ')
                .map_or(line.len(), |end| end + 1),
            _ => 0,
        };
        if tag_bytes > MAX_TAG_BYTES || line.len() - tag_bytes > MAX_LINE_BYTES {
            self.on_too_long(state, line, registered, steps);
            return;
        }
        // Older clients send Latin-1 or other legacy encodings: shown, not refused.
        let line = String::from_utf8_lossy(line);
        let Some(message) = parse(&line) else { return };
        let params = &message.params[..];
        match message.command.as_str() {
            "PING" => {
                let token = params.first().copied().unwrap_or(SERVER_NAME);
                steps.push(send_line(format!(
                    ":{SERVER_NAME} PONG {SERVER_NAME} :{token}"
                )));
            }
            "PONG" => {}
            "CAP" => {
                let subcommand = params.first().map(|s| s.to_ascii_uppercase());
                let cap = || format!(":{SERVER_NAME} CAP ");
                match subcommand.as_deref() {
                    Some("LS") => {
                        if !registered {
                            state.negotiating = true;
                        }
                        // Version 302 clients are told the mechanisms as the value.
                        let offered = if params.get(1).is_some_and(|v| *v >= "302") {
                            CAPS.join(" ").replace("sasl", "sasl=PLAIN")
                        } else {
                            CAPS.join(" ")
                        };
                        steps.push(addressed(cap(), &format!("LS :{offered}")));
                    }
                    Some("LIST") => {
                        let enabled: Vec<&str> = CAPS
                            .iter()
                            .zip(state.enabled)
                            .filter_map(|(cap, on)| on.then_some(*cap))
                            .collect();
                        let enabled = enabled.join(" ");
                        steps.push(addressed(cap(), &format!("LIST :{enabled}")));
                    }
                    Some("REQ") => {
                        if !registered {
                            state.negotiating = true;
                        }
                        let wanted = params.get(1).copied().unwrap_or("");
                        let before = render_caps(state.enabled);
                        // A client in rooms keeps how it is rendered.
                        let granted = requested(state.enabled, wanted)
                            .filter(|after| !registered || render_caps(*after) == before);
                        let answer = match granted {
                            Some(after) => {
                                state.enabled = after;
                                "ACK"
                            }
                            None => "NAK",
                        };
                        steps.push(addressed(cap(), &format!("{answer} :{wanted}")));
                    }
                    Some("END") => {
                        state.negotiating = false;
                        if !registered {
                            self.try_register(state, steps);
                        }
                    }
                    _ => {
                        let mut rest = String::new();
                        let _ = write!(
                            rest,
                            "{} :Invalid CAP command",
                            params.first().unwrap_or(&"")
                        );
                        steps.push(numeric(410, &rest));
                    }
                }
            }
            "AUTHENTICATE" if registered => steps.push(numeric(
                907,
                ":SASL is only before registration (log in from the start, or use another door)",
            )),
            "AUTHENTICATE" => authenticate(state, params, steps),
            command if registered => self.registered(command, params, steps),
            command => self.before_registration(state, command, params, steps),
        }
    }

    fn on_too_long(&self, _: &mut IrcState, _head: &[u8], _: bool, steps: &mut Vec<Step>) {
        steps.push(numeric(
            417,
            &format!(
                ":Input line was too long (limit {MAX_LINE_BYTES} bytes, and {MAX_TAG_BYTES} for tags); it was discarded"
            ),
        ));
    }

    fn on_registered(
        &self,
        state: &mut IrcState,
        _tag: Option<Tag>,
        answer: Result<(), NickError>,
        steps: &mut Vec<Step>,
    ) {
        state.registering = false;
        let nick = state.nick.take().unwrap_or_default();
        match answer {
            // The default room was joined on registration: its member list, as after
            // any JOIN.
            Ok(()) => steps.push(request(Request::Who { room: None })),
            Err(NickError::Taken) => {
                steps.push(numeric(433, &format!("{nick} :Nickname is already in use")))
            }
            Err(NickError::Registered) => steps.push(numeric(
                433,
                &format!("{nick} :Nickname is registered to an account; choose another"),
            )),
            Err(why) => steps.push(numeric(432, &format!("{nick} :Erroneous nickname: {why}"))),
        }
    }

    fn on_verified(
        &self,
        state: &mut IrcState,
        answer: Result<crate::chat::Account, (crate::chat::ErrorCode, Arc<str>)>,
        steps: &mut Vec<Step>,
    ) {
        let nick = state.nick.clone().unwrap_or_else(|| "*".into());
        match answer {
            Ok(signed_in) => {
                let account = signed_in.name.clone();
                state.verified = Some(signed_in);
                state.sasl = Sasl::Done;
                steps.push(numeric(
                    900,
                    &format!(
                        "{nick}!{nick}@{SERVER_NAME} {account} :You are now logged in as {account}; your nick will be {account}"
                    ),
                ));
                steps.push(numeric(903, ":SASL authentication successful"));
            }
            Err((code, why)) => {
                state.sasl = Sasl::Idle;
                // The accounts' own words for a wrong name speak of the line door.
                let why: Arc<str> = match code {
                    crate::chat::ErrorCode::AuthFailed => "wrong account name or password".into(),
                    _ => why,
                };
                steps.push(numeric(904, &format!(":SASL authentication failed: {why}")));
            }
        }
    }

    fn notice(&self, notice: Notice) -> Bytes {
        let text = match notice {
            Notice::SlowDown { rate } => {
                format!("slow down: over {rate} messages per second; your messages are delayed")
            }
            Notice::Flooding => "disconnected for flooding".to_owned(),
            Notice::RegisterTimeout { limit } => format!(
                "no registration (NICK and USER) within {}s",
                limit.as_secs_f64()
            ),
            Notice::IdleTimeout { limit } => {
                format!("nothing received for {}s", limit.as_secs_f64())
            }
        };
        format!(":{SERVER_NAME} NOTICE * :{text}\r\n").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_modes_become_moderation_in_order() {
        assert_eq!(
            channel_modes("+ib-o", &["~a:mallory", "bob"]),
            Ok(vec![
                Moderation::Mode {
                    invite_only: Some(true),
                    registered_only: None,
                    key: None,
                    moderated: None,
                    topic_locked: None
                },
                Moderation::Ban {
                    target: "account:mallory".into(),
                    duration: None,
                    reason: None
                },
                Moderation::Deop { nick: "bob".into() },
            ])
        );
        assert_eq!(
            channel_modes("-R", &[]),
            Ok(vec![Moderation::Mode {
                invite_only: None,
                registered_only: Some(false),
                key: None,
                moderated: None,
                topic_locked: None
            }])
        );
        // +m and +t are flags, combined with the others: `+ik-t KEY`.
        assert_eq!(
            channel_modes("+mt", &[]),
            Ok(vec![Moderation::Mode {
                invite_only: None,
                registered_only: None,
                key: None,
                moderated: Some(true),
                topic_locked: Some(true)
            }])
        );
        assert_eq!(
            channel_modes("+ik-t", &["Sesame"]),
            Ok(vec![Moderation::Mode {
                invite_only: Some(true),
                registered_only: None,
                key: Some(Some("Sesame".into())),
                moderated: None,
                topic_locked: Some(false)
            }])
        );
        assert_eq!(
            channel_modes("-m+o", &["bob"]),
            Ok(vec![
                Moderation::Mode {
                    invite_only: None,
                    registered_only: None,
                    key: None,
                    moderated: Some(false),
                    topic_locked: None
                },
                Moderation::Op { nick: "bob".into() }
            ])
        );
        // +k takes the key; -k takes (and skips) one; +k without one does nothing.
        let key = |key: Option<Option<&str>>| Moderation::Mode {
            invite_only: None,
            registered_only: None,
            key: key.map(|key| key.map(Into::into)),
            moderated: None,
            topic_locked: None,
        };
        assert_eq!(
            channel_modes("+ko", &["Sesame", "bob"]),
            Ok(vec![
                key(Some(Some("Sesame"))),
                Moderation::Op { nick: "bob".into() }
            ])
        );
        assert_eq!(
            channel_modes("-ko", &["Sesame", "bob"]),
            Ok(vec![
                key(Some(None)),
                Moderation::Deop { nick: "bob".into() }
            ])
        );
        assert_eq!(channel_modes("-k", &[]), Ok(vec![key(Some(None))]));
        assert_eq!(channel_modes("+k", &[]), Ok(vec![]));
        assert_eq!(channel_modes("+l", &["10"]), Err('l'));
        for (mask, target) in [
            ("*!*@203.0.113.0/24", "203.0.113.0/24"),
            ("mallory!*@*", "mallory"),
            ("$a:mallory", "account:mallory"),
            ("mallory", "mallory"),
        ] {
            assert_eq!(from_irc_mask(mask), target, "{mask}");
        }
    }
    use crate::hub::{Event, Render};

    fn run(state: &mut IrcState, line: &str, registered: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        IrcProtocol::new().on_message(state, line.as_bytes(), registered, &mut steps);
        steps
    }

    /// What `steps` send, as a client without a nick yet would read it.
    fn sent(steps: &[Step]) -> String {
        steps
            .iter()
            .filter_map(|step| match step {
                Step::Send(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                Step::SendAddressed(line) => {
                    Some(String::from_utf8_lossy(&line.write(None)).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sasl_plain_checks_the_account_before_registration() {
        use base64::Engine as _;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let mut state = IrcState::default();
        run(&mut state, "CAP LS 302", false);
        // Without the capability: refused, with what to do.
        assert!(sent(&run(&mut state, "AUTHENTICATE PLAIN", false)).contains(" 904 "));
        run(&mut state, "CAP REQ :sasl", false);
        run(&mut state, "NICK someone", false);
        run(&mut state, "USER a 0 * :A", false);
        assert!(sent(&run(&mut state, "AUTHENTICATE SCRAM-SHA-256", false)).contains(" 908 "));
        assert_eq!(
            sent(&run(&mut state, "AUTHENTICATE PLAIN", false)),
            "AUTHENTICATE +\r\n"
        );
        // Garbage is refused; the exchange starts again.
        assert!(sent(&run(&mut state, "AUTHENTICATE !!!", false)).contains(" 904 "));
        run(&mut state, "AUTHENTICATE PLAIN", false);
        let payload = encode("\0alice\0correct horse battery");
        let check = run(&mut state, &format!("AUTHENTICATE {payload}"), false);
        assert!(
            matches!(&check[..], [Step::Account { step: AccountStep::Verify { name, password }, .. }]
                if name == "alice" && password == "correct horse battery"),
            "{check:?}"
        );
        let mut steps = Vec::new();
        let alice = crate::chat::Account {
            key: "allce".into(),
            name: "alice".into(),
        };
        IrcProtocol::new().on_verified(&mut state, Ok(alice), &mut steps);
        let said = sent(&steps);
        assert!(said.contains(" 900 ") && said.contains(" 903 "), "{said}");
        // Registration waits for CAP END, then registers (as the account, in the driver).
        let end = run(&mut state, "CAP END", false);
        assert!(
            matches!(&end[..], [.., Step::RegisterSignedIn { account }] if &*account.name == "alice"),
            "{end:?}"
        );
        assert!(sent(&run(&mut state, "AUTHENTICATE PLAIN", true)).contains(" 907 "));
    }

    #[test]
    fn sasl_plain_payloads_split_at_400_bytes_and_can_be_aborted() {
        use base64::Engine as _;
        let mut state = IrcState::default();
        run(&mut state, "CAP REQ :sasl", false);
        run(&mut state, "AUTHENTICATE PLAIN", false);
        let long = "p".repeat(297);
        let payload = base64::engine::general_purpose::STANDARD.encode(format!("bob\0bob\0{long}"));
        assert!(payload.len() > 400 && payload.len() < 800);
        assert!(run(
            &mut state,
            &format!("AUTHENTICATE {}", &payload[..400]),
            false
        )
        .is_empty());
        let check = run(
            &mut state,
            &format!("AUTHENTICATE {}", &payload[400..]),
            false,
        );
        assert!(
            matches!(&check[..], [Step::Account { step: AccountStep::Verify { name, password }, .. }]
                if name == "bob" && *password == long),
            "{check:?}"
        );
        let mut steps = Vec::new();
        IrcProtocol::new().on_verified(
            &mut state,
            Err((crate::chat::ErrorCode::AuthFailed, "wrong password".into())),
            &mut steps,
        );
        assert!(sent(&steps)
            .contains(" 904 * :SASL authentication failed: wrong account name or password"));
        run(&mut state, "AUTHENTICATE PLAIN", false);
        assert!(sent(&run(&mut state, "AUTHENTICATE *", false)).contains(" 906 "));
        // A different authorization id is refused.
        assert_eq!(
            plain_credentials(&base64::engine::general_purpose::STANDARD.encode("eve\0bob\0pw")),
            None
        );
    }

    #[test]
    fn registers_after_nick_and_user_and_waits_for_cap_end() {
        let mut state = IrcState::default();
        let ls = run(&mut state, "CAP LS 302", false);
        assert_eq!(
            sent(&ls),
            ":switchboard CAP * LS :cap-notify echo-message multi-prefix server-time sasl=PLAIN extended-join away-notify message-tags account-tag batch draft/chathistory draft/account-registration\r\n"
        );
        assert!(run(&mut state, "NICK alice", false).is_empty());
        assert!(
            run(&mut state, "USER alice 0 * :Alice", false).is_empty(),
            "registration waits for CAP END"
        );
        let end = run(&mut state, "CAP END", false);
        assert!(matches!(&end[..], [Step::Register { nick, .. }] if nick == "alice"));
        // A taken name: 433, and a new NICK registers again.
        let mut steps = Vec::new();
        IrcProtocol::new().on_registered(&mut state, None, Err(NickError::Taken), &mut steps);
        assert!(sent(&steps).contains(" 433 * alice :Nickname is already in use"));
        let retry = run(&mut state, "NICK alice_", false);
        assert!(matches!(&retry[..], [Step::Register { nick, .. }] if nick == "alice_"));
    }

    #[test]
    fn capabilities_are_granted_whole_or_not_at_all_and_pick_the_renderer() {
        let mut state = IrcState::default();
        run(&mut state, "CAP LS 302", false);
        let nak = run(&mut state, "CAP REQ :server-time labeled-response", false);
        assert_eq!(
            sent(&nak),
            ":switchboard CAP * NAK :server-time labeled-response\r\n"
        );
        let ack = run(&mut state, "CAP REQ :server-time echo-message", false);
        assert_eq!(
            sent(&ack),
            ":switchboard CAP * ACK :server-time echo-message\r\n"
        );
        let off = run(&mut state, "CAP REQ :-echo-message MULTI-PREFIX", false);
        assert_eq!(
            sent(&off),
            ":switchboard CAP * ACK :-echo-message MULTI-PREFIX\r\n"
        );
        let list = run(&mut state, "CAP LIST", false);
        assert_eq!(
            sent(&list),
            ":switchboard CAP * LIST :multi-prefix server-time\r\n"
        );
        run(&mut state, "NICK alice", false);
        run(&mut state, "USER alice 0 * :Alice", false);
        // Registration starts with CAP END, rendered as negotiated.
        let end = run(&mut state, "CAP END", false);
        let protocol = IrcProtocol::new();
        let wanted = protocol.renders.for_caps(Caps {
            echo_message: false,
            server_time: true,
            ..Caps::default()
        });
        match &end[..] {
            [Step::Render(render), Step::Register { nick, .. }] => {
                assert_eq!(nick, "alice");
                // The door's one renderer for that combination (by what it renders).
                let event = Event::Notice { text: "x".into() };
                let ours = render.render(&event).unwrap();
                assert!(ours.starts_with(b"@time="), "{ours:?}");
                let theirs = wanted.render(&event).unwrap();
                assert_eq!(ours.len(), theirs.len());
            }
            other => panic!("{other:?}"),
        }
        // Once in rooms, a request that would change the rendering is refused; others pass.
        let late = run(&mut state, "CAP REQ echo-message", true);
        assert!(
            sent(&late).contains(" NAK :echo-message"),
            "{}",
            sent(&late)
        );
        let fine = run(&mut state, "CAP REQ cap-notify", true);
        assert!(sent(&fine).contains(" ACK :cap-notify"), "{}", sent(&fine));
    }

    #[test]
    fn a_server_password_must_come_with_pass_before_registering() {
        let protocol = IrcProtocol::with(IrcSettings {
            motd: Some(vec!["line one".into(), "line two".into()]),
            password: Some("sesame".into()),
        });
        let run = |state: &mut IrcState, line: &str| {
            let mut steps = Vec::new();
            protocol.on_message(state, line.as_bytes(), false, &mut steps);
            steps
        };
        // None, or a wrong one: 464 and the link closed, once.
        for pass in [None, Some("PASS open"), Some("PASS sesame2")] {
            let mut state = IrcState::default();
            if let Some(pass) = pass {
                assert!(run(&mut state, pass).is_empty());
            }
            run(&mut state, "NICK eve");
            let refused = run(&mut state, "USER eve 0 * :Eve");
            assert!(
                sent(&refused).contains(" 464 * :Password incorrect"),
                "{pass:?}"
            );
            assert!(matches!(
                refused.last(),
                Some(Step::Leave(CloseReason::BadPassword))
            ));
            assert!(run(&mut state, "NICK eve2").is_empty(), "said once");
        }
        // The right one, even across CAP negotiation.
        let mut state = IrcState::default();
        run(&mut state, "CAP LS 302");
        run(&mut state, "PASS sesame");
        run(&mut state, "NICK ali");
        run(&mut state, "USER ali 0 * :Ali");
        let end = run(&mut state, "CAP END");
        assert!(matches!(&end[..], [Step::Register { nick, .. }] if nick == "ali"));
        // MOTD on request: the configured lines.
        let mut steps = Vec::new();
        protocol.on_message(&mut state, b"MOTD", true, &mut steps);
        assert_eq!(
            sent(&steps),
            ":switchboard 375 * :- switchboard Message of the day -\r\n\
             :switchboard 372 * :- line one\r\n\
             :switchboard 372 * :- line two\r\n\
             :switchboard 376 * :End of /MOTD command.\r\n"
        );
    }

    #[test]
    fn names_asks_for_each_channel_it_lists() {
        let mut state = IrcState::default();
        let steps = run(&mut state, "NAMES #a,#b", true);
        let rooms: Vec<_> = steps
            .iter()
            .map(|step| match step {
                Step::Request {
                    request: Request::Who { room },
                    ..
                } => room.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(rooms, [Some("#a".to_owned()), Some("#b".to_owned())]);
    }

    /// CHATHISTORY's subcommands as the history requests they are.
    #[test]
    fn chathistory_becomes_history_requests() {
        let history = |line: &str| -> (Option<Tag>, Request) {
            let mut state = IrcState::default();
            match run(&mut state, line, true).pop() {
                Some(Step::Request { tag, request }) => (tag, request),
                other => panic!("{line}: {other:?}"),
            }
        };
        let (tag, latest) = history("CHATHISTORY LATEST #a * 20");
        assert_eq!(tag.as_deref(), Some("irc:chathistory LATEST #a"));
        assert!(
            matches!(latest, Request::History { room: Some(room), before: None, after: None, limit: Some(20), newest: true } if room == "#a")
        );
        let (_, since) = history("CHATHISTORY LATEST #a msgid=#a/7 5000");
        assert!(matches!(
            since,
            Request::History {
                after: Some(HistoryBound::Id(7)),
                limit: Some(500),
                newest: true,
                ..
            }
        ));
        let (_, before) = history("chathistory before bob msgid=~9 3");
        assert!(
            matches!(before, Request::PrivateHistory { with, before: Some(HistoryBound::Id(9)), after: None, newest: false, .. } if with == "bob")
        );
        let (_, between) = history("CHATHISTORY BETWEEN #a msgid=#a/2 msgid=#a/9 4");
        assert!(matches!(
            between,
            Request::History {
                before: Some(HistoryBound::Id(9)),
                after: Some(HistoryBound::Id(2)),
                newest: false,
                ..
            }
        ));
        let (_, since) = history("CHATHISTORY AFTER #a timestamp=2023-11-14T22:13:20.5Z 9");
        assert!(matches!(
            since,
            Request::History {
                after: Some(HistoryBound::Millis(1_700_000_000_500)),
                newest: false,
                ..
            }
        ));
        let (_, backwards) = history("CHATHISTORY BETWEEN #a msgid=#a/9 msgid=#a/2 4");
        assert!(matches!(
            backwards,
            Request::History {
                before: Some(HistoryBound::Id(9)),
                after: Some(HistoryBound::Id(2)),
                newest: true,
                ..
            }
        ));
        let mut state = IrcState::default();
        for (line, why) in [
            ("CHATHISTORY", "NEED_MORE_PARAMS"),
            (
                "CHATHISTORY LATEST #a * 0",
                "INVALID_PARAMS LATEST #a :the limit",
            ),
            ("CHATHISTORY AFTER #a * 5", "only LATEST takes *"),
            (
                "CHATHISTORY BEFORE #a msgid=~3 5",
                "not a msgid this server gave",
            ),
            (
                "CHATHISTORY BEFORE bob msgid=#a/3 5",
                "not a msgid this server gave",
            ),
            ("CHATHISTORY TARGETS a b 5", "INVALID_PARAMS TARGETS"),
            (
                "CHATHISTORY AROUND #a msgid=#a/3 5",
                "INVALID_PARAMS AROUND",
            ),
            (
                "CHATHISTORY LATEST #a timestamp=2020-13-01T00:00:00Z 5",
                "not a timestamp",
            ),
            (
                "CHATHISTORY BETWEEN #a msgid=#a/1 timestamp=2020-01-01T00:00:00Z 5",
                "the same way",
            ),
        ] {
            let said = sent(&run(&mut state, line, true));
            assert!(
                said.starts_with("FAIL CHATHISTORY ") && said.contains(why),
                "{line}: {said}"
            );
        }
    }

    #[test]
    fn tags_have_their_own_limit_beside_the_line() {
        let mut state = IrcState::default();
        let tagged = format!("@+x={} PRIVMSG #a :hi", "t".repeat(8000));
        assert!(matches!(
            &run(&mut state, &tagged, true)[..],
            [Step::Request { .. }]
        ));
        let long_tags = format!("@+x={} PRIVMSG #a :hi", "t".repeat(8200));
        assert!(sent(&run(&mut state, &long_tags, true)).contains(" 417 "));
        let long_line = format!("@+x=1 PRIVMSG #a :{}", "w".repeat(500));
        assert!(sent(&run(&mut state, &long_line, true)).contains(" 417 "));
        assert!(run(&mut state, "@+typing=active TAGMSG #a", true).is_empty());
    }

    #[test]
    fn no_capabilities_means_no_render_step() {
        let mut state = IrcState::default();
        run(&mut state, "NICK bob", false);
        let registering = run(&mut state, "USER bob 0 * :Bob", false);
        assert!(matches!(&registering[..], [Step::Register { .. }]));
    }

    #[test]
    fn commands_before_registration_get_451_and_ping_is_answered() {
        let mut state = IrcState::default();
        assert!(sent(&run(&mut state, "JOIN #a", false)).contains(" 451 "));
        assert_eq!(
            sent(&run(&mut state, "PING :abc", false)),
            ":switchboard PONG switchboard :abc\r\n"
        );
    }

    #[test]
    fn registered_commands_become_hub_requests() {
        let mut state = IrcState::default();
        let join = run(&mut state, "JOIN #a,#b", true);
        assert_eq!(join.len(), 4, "a join and a NAMES for each channel");
        // Keys pair with channels by position; an empty or missing one is no key.
        let keyed: Vec<(String, Option<String>)> =
            run(&mut state, "JOIN #a,,#b,#c,#d k1,x,,k3", true)
                .into_iter()
                .filter_map(|step| match step {
                    Step::Request {
                        request: Request::Join { room, key },
                        ..
                    } => Some((room, key)),
                    _ => None,
                })
                .collect();
        let expected = [
            ("#a", Some("k1")),
            ("#b", None),
            ("#c", Some("k3")),
            ("#d", None),
        ];
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(room, key)| (room.to_string(), key.map(str::to_owned)))
            .collect();
        assert_eq!(keyed, expected);
        assert!(matches!(
            &run(&mut state, "PRIVMSG #a :hello there", true)[..],
            [Step::Request { request: Request::Say { room: Some(room), text, action: false, .. }, .. }]
                if room == "#a" && text == "hello there"
        ));
        assert!(matches!(
            &run(&mut state, "PRIVMSG bob :\u{1}ACTION waves\u{1}", true)[..],
            [Step::Request { request: Request::Whisper { to, text, action: true, .. }, .. }]
                if to == "bob" && text == "waves"
        ));
        assert!(run(&mut state, "PRIVMSG bob :\u{1}VERSION\u{1}", true).is_empty());
        assert!(sent(&run(&mut state, "PRIVMSG #a", true)).contains(" 412 "));
        assert!(sent(&run(&mut state, "FROB x", true)).contains(" 421 * FROB :Unknown command"));
        assert!(sent(&run(&mut state, "USER a 0 * :b", true)).contains(" 462 "));
        let odd = sent(&run(&mut state, "FOO\rBAR\0", true));
        assert_eq!(odd.matches(['\r', '\n', '\0']).count(), 2, "{odd:?}");
        assert!(matches!(
            &run(&mut state, "QUIT :bye", true)[..],
            [Step::Request { request: Request::Quit { reason: Some(reason) }, .. }] if reason == "bye"
        ));
    }
}
