//! Parsing what a line-protocol user typed into hub requests, pure. IRC-like slash
//! commands; anything else is text for the current room.

use crate::door::session::AccountStep;
use crate::hub::{HistoryBound, Moderation, Request};

/// What one typed line means.
#[derive(Debug, Clone, PartialEq)]
pub enum LineInput {
    /// A hub request.
    Request(Request),
    /// Something about the user's account.
    Account(AccountStep),
    /// `/help`: answered by the door itself.
    Help,
    /// Blank line: ignored.
    Nothing,
    /// Not understood: tell the user why.
    Invalid(String),
}

/// The `/help` text, one command a line.
pub const HELP: &[(&str, &str)] = &[
    ("text", "say text to your current room"),
    ("/me action", "say it as an action: * you action"),
    ("/msg NAME text", "private message to NAME"),
    (
        "/join #room [key]",
        "join (or create) a room; it becomes your current room (key: for a room with one)",
    ),
    (
        "/part [#room] [reason]",
        "leave a room (default: the current one)",
    ),
    ("/rooms", "list rooms and how many are in each"),
    ("/who [#room]", "list a room's members"),
    (
        "/away [message]",
        "mark yourself away (private messages tell the sender); no message: back",
    ),
    (
        "/topic [#room] [text]",
        "show a room's topic (default: the current one), or set it",
    ),
    (
        "/whois NAME",
        "who NAME is: client id, rooms, how connected",
    ),
    ("/nick NEW", "change your name"),
    (
        "/register PASSWORD",
        "register your name: only you can use it, and your private messages are kept",
    ),
    (
        "/login NAME PASSWORD",
        "log in (also as the first line: NAME PASSWORD)",
    ),
    (
        "/password OLD NEW",
        "change your password (OLD is one word here)",
    ),
    (
        "/unregister PASSWORD",
        "delete your account; the name is anyone's again",
    ),
    ("/logout", "log out and leave"),
    (
        "/history [#room|NAME] [N]",
        "last N messages of a room (default: current) or of your private talk with NAME",
    ),
    (
        "/history ... before|after ID",
        "page back or forward from message ID (ids are shown after each page)",
    ),
    (
        "/kick [#room] NAME [reason]",
        "put NAME out of the room (room owners and operators)",
    ),
    (
        "/ban [#room] TARGET [DURATION] [reason]",
        "keep TARGET out: a name, account:NAME or an address mask (203.0.113.0/24); DURATION like 10m, 2h, 7d",
    ),
    ("/unban [#room] TARGET", "lift a ban"),
    (
        "/mute [#room] TARGET [DURATION] [reason]",
        "TARGET may stay but not speak",
    ),
    ("/unmute [#room] TARGET", "lift a mute"),
    (
        "/op [#room] NAME, /deop [#room] NAME",
        "make an account one of the room's operators, or not (the owner)",
    ),
    (
        "/invite [#room] NAME",
        "let NAME into an invite-only room",
    ),
    (
        "/mode [#room] +i|-i|+r|-r|+k KEY|-k|+m|-m|+t|-t",
        "invite-only, accounts-only, a key to join, moderated (only operators speak), \
         topic lock (only operators set it): on/off",
    ),
    (
        "/rules [#room]",
        "the room's owner, operators, modes, bans and mutes",
    ),
    ("/kill NAME [reason]", "disconnect NAME (server operators)"),
    (
        "/command NAME COMMAND [ARGS]",
        "ask device NAME to do COMMAND (ARGS: JSON or text); its answer follows",
    ),
    (
        "/device add NAME",
        "add a device you own; you get its token once (logged in)",
    ),
    ("/device remove NAME", "remove one of your devices"),
    ("/devices", "list your devices"),
    ("/ping", "check the server answers"),
    ("/quit [reason], /q, end", "leave"),
    ("//text", "say text that starts with a slash"),
];

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Split `rest` into its first word and the remainder (trimmed).
fn first_word(rest: &str) -> (&str, &str) {
    let rest = rest.trim_start();
    match rest.split_once(char::is_whitespace) {
        Some((word, tail)) => (word, tail.trim_start()),
        None => (rest, ""),
    }
}

pub fn parse(line: &str) -> LineInput {
    if line.trim().is_empty() {
        return LineInput::Nothing;
    }
    if line == "end" {
        return LineInput::Request(Request::Quit { reason: None });
    }
    if let Some(literal) = line.strip_prefix("//") {
        return say(format!("/{literal}"), false);
    }
    let Some(command_line) = line.strip_prefix('/') else {
        return say(line.to_owned(), false);
    };
    let (command, rest) = first_word(command_line);
    let usage = |text: &str| LineInput::Invalid(format!("usage: {text}"));
    match command.to_ascii_lowercase().as_str() {
        "help" | "h" | "?" => LineInput::Help,
        "q" | "quit" | "exit" => LineInput::Request(Request::Quit { reason: optional(rest) }),
        "me" => match optional(rest) {
            Some(action) => say(action, true),
            None => usage("/me action"),
        },
        "msg" | "m" | "tell" | "whisper" => {
            let (to, text) = first_word(rest);
            if to.is_empty() || text.is_empty() {
                return usage("/msg NAME text");
            }
            LineInput::Request(Request::Whisper { to: to.to_owned(), text: text.to_owned(), data: None, action: false })
        }
        "join" | "j" => match first_word(rest) {
            ("", _) => usage("/join #room [key]"),
            (room, tail) => {
                let key = Some(first_word(tail).0).filter(|key| !key.is_empty()).map(str::to_owned);
                LineInput::Request(Request::Join { room: room.to_owned(), key })
            }
        },
        "part" | "leave" => {
            let (first, tail) = first_word(rest);
            if first.starts_with('#') {
                LineInput::Request(Request::Part { room: Some(first.to_owned()), reason: optional(tail) })
            } else {
                LineInput::Request(Request::Part { room: None, reason: optional(rest) })
            }
        }
        "rooms" | "list" => LineInput::Request(Request::Rooms),
        "who" | "names" => LineInput::Request(Request::Who { room: optional(rest).map(|r| first_word(&r).0.to_owned()) }),
        "whois" => match first_word(rest) {
            ("", _) => usage("/whois NAME"),
            (nick, _) => LineInput::Request(Request::Whois { nick: nick.to_owned() }),
        },
        "nick" => match first_word(rest) {
            ("", _) => usage("/nick NEW"),
            (nick, "") => LineInput::Request(Request::Nick { nick: nick.to_owned() }),
            _ => LineInput::Invalid("a name cannot contain spaces".into()),
        },
        "ping" => LineInput::Request(Request::Ping),
        "away" => LineInput::Request(Request::Away {
            message: optional(rest),
        }),
        "back" => LineInput::Request(Request::Away { message: None }),
        "topic" => {
            let (first, tail) = first_word(rest);
            let (room, text) = if first.starts_with('#') {
                (Some(first.to_owned()), optional(tail))
            } else {
                (None, optional(rest))
            };
            LineInput::Request(Request::Topic { room, text })
        }
        "history" | "hist" => history(rest),
        "kick" | "ban" | "unban" | "mute" | "unmute" | "op" | "deop" | "invite" | "mode"
        | "rules" | "bans" => moderate(&command.to_ascii_lowercase(), rest),
        "kill" => match first_word(rest) {
            ("", _) => usage("/kill NAME [reason]"),
            (nick, reason) => LineInput::Request(Request::Kill {
                nick: nick.to_owned(),
                reason: optional(reason),
            }),
        },
        "command" | "cmd" => command_request(rest),
        "device" => match first_word(rest) {
            ("add", name) if !name.is_empty() && !name.contains(' ') => {
                LineInput::Account(AccountStep::AddDevice {
                    name: name.to_owned(),
                })
            }
            ("remove", name) if !name.is_empty() && !name.contains(' ') => {
                LineInput::Account(AccountStep::RemoveDevice {
                    name: name.to_owned(),
                })
            }
            ("list", "") => LineInput::Account(AccountStep::ListDevices),
            _ => usage("/device add NAME, /device remove NAME or /device list"),
        },
        "devices" => LineInput::Account(AccountStep::ListDevices),
        "register" => match rest {
            "" => usage("/register PASSWORD"),
            password => LineInput::Account(AccountStep::Register {
                password: password.to_owned(),
                remember: false,
                name: None,
            }),
        },
        "login" | "identify" => login(rest),
        "logout" => LineInput::Account(AccountStep::Logout { token: None }),
        "password" | "passwd" => match first_word(rest) {
            ("", _) | (_, "") => usage("/password OLD NEW"),
            (old, new) => LineInput::Account(AccountStep::Password {
                old: old.to_owned(),
                new: new.to_owned(),
            }),
        },
        "unregister" | "drop" => match rest {
            "" => usage("/unregister PASSWORD"),
            password => LineInput::Account(AccountStep::Drop {
                password: password.to_owned(),
            }),
        },
        "" => LineInput::Invalid("empty command; /help lists the commands, //text sends a line starting with /".into()),
        other => LineInput::Invalid(format!(
            "unknown command /{other}; /help lists the commands, //text sends a line starting with /"
        )),
    }
}

/// `/command NAME COMMAND [ARGS]`: ARGS is JSON if it parses as JSON, else a string.
fn command_request(rest: &str) -> LineInput {
    let (to, tail) = first_word(rest);
    let (name, args) = first_word(tail);
    if to.is_empty() || name.is_empty() {
        return LineInput::Invalid(
            "usage: /command NAME COMMAND [ARGS], e.g. /command drone7 land {\"speed\":2}".into(),
        );
    }
    let args = match args.trim() {
        "" => None,
        text => Some(std::sync::Arc::new(
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::from(text)),
        )),
    };
    LineInput::Request(Request::Command {
        to: to.to_owned(),
        name: name.to_owned(),
        args,
    })
}

/// A moderation command: an optional `#room` first, then the command's own words.
fn moderate(command: &str, rest: &str) -> LineInput {
    let (first, tail) = first_word(rest);
    let (room, rest) = if first.starts_with('#') {
        (Some(first.to_owned()), tail)
    } else {
        (None, rest)
    };
    let (target, tail) = first_word(rest);
    let usage = |text: &str| LineInput::Invalid(format!("usage: {text}"));
    let named = |text: &str| -> Result<String, LineInput> {
        match target {
            "" => Err(usage(text)),
            target => Ok(target.to_owned()),
        }
    };
    // `[DURATION] [reason]`: a first word that reads as a duration is one.
    let duration_and_reason = || match first_word(tail) {
        (word, reason) if !word.is_empty() && word.starts_with(|c: char| c.is_ascii_digit()) => {
            match word.parse::<crate::config::Seconds>() {
                Ok(duration) => Ok((Some(duration.0), optional(reason))),
                Err(error) => Err(LineInput::Invalid(error)),
            }
        }
        _ => Ok((None, optional(tail))),
    };
    let action = match command {
        "kick" => named("/kick [#room] NAME [reason]").map(|nick| Moderation::Kick {
            nick,
            reason: optional(tail),
        }),
        "ban" | "mute" => {
            let usage_text = format!("/{command} [#room] TARGET [DURATION] [reason]");
            named(&usage_text).and_then(|target| {
                let (duration, reason) = duration_and_reason()?;
                Ok(if command == "ban" {
                    Moderation::Ban {
                        target,
                        duration,
                        reason,
                    }
                } else {
                    Moderation::Mute {
                        target,
                        duration,
                        reason,
                    }
                })
            })
        }
        "unban" => named("/unban [#room] TARGET").map(|target| Moderation::Unban { target }),
        "unmute" => named("/unmute [#room] TARGET").map(|target| Moderation::Unmute { target }),
        "op" => named("/op [#room] NAME").map(|nick| Moderation::Op { nick }),
        "deop" => named("/deop [#room] NAME").map(|nick| Moderation::Deop { nick }),
        "invite" => named("/invite [#room] NAME").map(|nick| Moderation::Invite { nick }),
        "mode" => modes(rest),
        _ => Ok(Moderation::Rules),
    };
    match action {
        Ok(action) => LineInput::Request(Request::Moderate { room, action }),
        Err(input) => input,
    }
}

/// `+i`, `-r`, `+ir`, `+i -r`, `+k KEY`, `-k`, `+ik KEY`, `+m`, `-t`, `+mt`:
/// invite-only, accounts-only, the room's key, moderated and the topic lock on or off
/// (the word after a `+k` is the key).
fn modes(text: &str) -> Result<Moderation, LineInput> {
    let usage = "usage: /mode [#room] +i|-i|+r|-r|+k KEY|-k|+m|-m|+t|-t";
    let (mut invite_only, mut registered_only, mut key) = (None, None, None);
    let (mut moderated, mut topic_locked) = (None, None);
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        let mut on = None;
        for c in word.chars() {
            match (c, on) {
                ('+', _) => on = Some(true),
                ('-', _) => on = Some(false),
                ('i', Some(on)) => invite_only = Some(on),
                ('r' | 'R', Some(on)) => registered_only = Some(on),
                ('k', Some(true)) => match words.next() {
                    Some(given) => key = Some(Some(given.to_owned())),
                    None => return Err(LineInput::Invalid(format!("{usage} (+k needs the key)"))),
                },
                ('k', Some(false)) => key = Some(None),
                ('m', Some(on)) => moderated = Some(on),
                ('t', Some(on)) => topic_locked = Some(on),
                _ => {
                    return Err(LineInput::Invalid(format!(
                    "unknown mode {word:?}: use +i or -i (invite-only), +r or -r (accounts only), +k KEY or -k (a key to join), +m or -m (moderated: only operators speak), +t or -t (only operators set the topic)"
                )))
                }
            }
        }
    }
    if invite_only.is_none()
        && registered_only.is_none()
        && key.is_none()
        && moderated.is_none()
        && topic_locked.is_none()
    {
        return Err(LineInput::Invalid(usage.into()));
    }
    Ok(Moderation::Mode {
        invite_only,
        registered_only,
        key,
        moderated,
        topic_locked,
    })
}

/// `/login NAME PASSWORD` (the password is the rest of the line, spaces and all), or
/// `NAME PASSWORD` as a first line.
pub fn login(rest: &str) -> LineInput {
    match first_word(rest) {
        ("", _) | (_, "") => LineInput::Invalid("usage: /login NAME PASSWORD".into()),
        (name, password) => LineInput::Account(AccountStep::Login {
            name: name.to_owned(),
            password: password.to_owned(),
            remember: false,
        }),
    }
}

/// `/history [#room|NAME] [N] [before ID|after ID]`, words in any order.
fn history(rest: &str) -> LineInput {
    const USAGE: &str = "usage: /history [#room|NAME] [N] [before ID|after ID]";
    let mut room = None;
    let mut with = None;
    let mut limit = None;
    let mut before = None;
    let mut after = None;
    let mut words = rest.split_whitespace();
    while let Some(word) = words.next() {
        let lower = word.to_ascii_lowercase();
        if lower == "before" || lower == "after" {
            let Some(id) = words.next().and_then(|id| id.parse::<u64>().ok()) else {
                return LineInput::Invalid(format!("{USAGE} ({lower} needs a message id)"));
            };
            let slot = if lower == "before" {
                &mut before
            } else {
                &mut after
            };
            if slot.replace(id).is_some() {
                return LineInput::Invalid(format!("{USAGE} ({lower} given twice)"));
            }
        } else if let Ok(n) = word.parse::<usize>() {
            if limit.replace(n).is_some() {
                return LineInput::Invalid(format!("{USAGE} (two counts given)"));
            }
        } else if word.starts_with('#') && room.is_none() && with.is_none() {
            room = Some(word.to_owned());
        } else if room.is_none() && with.is_none() {
            with = Some(word.to_owned());
        } else {
            return LineInput::Invalid(format!("{USAGE} (did not understand {word:?})"));
        }
    }
    LineInput::Request(match with {
        Some(with) => Request::PrivateHistory {
            with,
            before: before.map(HistoryBound::Id),
            after: after.map(HistoryBound::Id),
            limit,
            newest: false,
        },
        None => Request::History {
            room,
            before: before.map(HistoryBound::Id),
            after: after.map(HistoryBound::Id),
            limit,
            newest: false,
        },
    })
}

fn say(text: String, action: bool) -> LineInput {
    LineInput::Request(Request::Say {
        room: None,
        text,
        data: None,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(input: &str) -> Request {
        match parse(input) {
            LineInput::Request(request) => request,
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn moderation_commands_with_and_without_a_room() {
        use std::time::Duration;
        let moderate = |room: Option<&str>, action| Request::Moderate {
            room: room.map(Into::into),
            action,
        };
        assert_eq!(
            request("/kick bob spamming again"),
            moderate(
                None,
                Moderation::Kick {
                    nick: "bob".into(),
                    reason: Some("spamming again".into())
                }
            )
        );
        assert_eq!(
            request("/ban #ops 203.0.113.0/24 2h flood"),
            moderate(
                Some("#ops"),
                Moderation::Ban {
                    target: "203.0.113.0/24".into(),
                    duration: Some(Duration::from_secs(7200)),
                    reason: Some("flood".into())
                }
            )
        );
        assert_eq!(
            request("/mute account:mallory"),
            moderate(
                None,
                Moderation::Mute {
                    target: "account:mallory".into(),
                    duration: None,
                    reason: None
                }
            )
        );
        // A reason that does not start with a digit is a reason, not a duration.
        assert_eq!(
            request("/ban bob you know why"),
            moderate(
                None,
                Moderation::Ban {
                    target: "bob".into(),
                    duration: None,
                    reason: Some("you know why".into())
                }
            )
        );
        assert_eq!(
            request("/mode +i -r"),
            moderate(
                None,
                Moderation::Mode {
                    invite_only: Some(true),
                    registered_only: Some(false),
                    key: None,
                    moderated: None,
                    topic_locked: None
                }
            )
        );
        assert_eq!(
            request("/mode #vault +ik Sesame -r"),
            moderate(
                Some("#vault"),
                Moderation::Mode {
                    invite_only: Some(true),
                    registered_only: Some(false),
                    key: Some(Some("Sesame".into())),
                    moderated: None,
                    topic_locked: None
                }
            )
        );
        assert_eq!(
            request("/mode -k"),
            moderate(
                None,
                Moderation::Mode {
                    invite_only: None,
                    registered_only: None,
                    key: Some(None),
                    moderated: None,
                    topic_locked: None
                }
            )
        );
        assert_eq!(
            request("/mode #den +m -t"),
            moderate(
                Some("#den"),
                Moderation::Mode {
                    invite_only: None,
                    registered_only: None,
                    key: None,
                    moderated: Some(true),
                    topic_locked: Some(false)
                }
            )
        );
        assert_eq!(
            request("/mode +tk-m Sesame"),
            moderate(
                None,
                Moderation::Mode {
                    invite_only: None,
                    registered_only: None,
                    key: Some(Some("Sesame".into())),
                    moderated: Some(false),
                    topic_locked: Some(true)
                }
            )
        );
        assert_eq!(
            request("/rules #ops"),
            moderate(Some("#ops"), Moderation::Rules)
        );
        assert_eq!(
            request("/kill bob bye"),
            Request::Kill {
                nick: "bob".into(),
                reason: Some("bye".into())
            }
        );
        for (bad, why) in [
            ("/kick", "usage: /kick"),
            ("/ban #ops", "usage: /ban"),
            ("/ban bob 5x", "unknown duration unit"),
            ("/ban 1.2.3.4 9300000000000000000", "longer than 100 years"),
            ("/mode +x", "unknown mode"),
            ("/mode m", "unknown mode"),
            ("/mode", "usage: /mode"),
            ("/mode +k", "+k needs the key"),
            ("/kill", "usage: /kill"),
        ] {
            match parse(bad) {
                LineInput::Invalid(text) => assert!(text.contains(why), "{bad}: {text}"),
                other => panic!("{bad} gave {other:?}"),
            }
        }
    }

    #[test]
    fn plain_text_is_said_to_the_current_room() {
        assert_eq!(
            request("hello there"),
            Request::Say {
                room: None,
                text: "hello there".into(),
                data: None,
                action: false
            }
        );
        assert_eq!(
            request("//etc/passwd"),
            Request::Say {
                room: None,
                text: "/etc/passwd".into(),
                data: None,
                action: false
            }
        );
    }

    #[test]
    fn account_commands_keep_the_password_whole() {
        let account = |input: &str| match parse(input) {
            LineInput::Account(step) => step,
            other => panic!("{input:?} gave {other:?}"),
        };
        assert_eq!(
            account("/login alice correct horse"),
            AccountStep::Login {
                name: "alice".into(),
                password: "correct horse".into(),
                remember: false
            }
        );
        assert_eq!(
            account("/register  s3cret pass"),
            AccountStep::Register {
                password: "s3cret pass".into(),
                remember: false,
                name: None,
            }
        );
        assert_eq!(
            account("/password old new one"),
            AccountStep::Password {
                old: "old".into(),
                new: "new one".into()
            }
        );
        assert_eq!(
            account("/unregister pw"),
            AccountStep::Drop {
                password: "pw".into()
            }
        );
        assert_eq!(account("/logout"), AccountStep::Logout { token: None });
        for incomplete in [
            "/login",
            "/login alice",
            "/register",
            "/password old",
            "/unregister",
        ] {
            assert!(
                matches!(parse(incomplete), LineInput::Invalid(ref why) if why.starts_with("usage:")),
                "{incomplete:?}"
            );
        }
    }

    #[test]
    fn topic_shows_or_sets_the_current_or_a_named_room() {
        let topic = |room: Option<&str>, text: Option<&str>| Request::Topic {
            room: room.map(Into::into),
            text: text.map(Into::into),
        };
        assert_eq!(request("/topic"), topic(None, None));
        assert_eq!(request("/topic #rust"), topic(Some("#rust"), None));
        assert_eq!(
            request("/topic #rust  borrow checker tips "),
            topic(Some("#rust"), Some("borrow checker tips"))
        );
        assert_eq!(
            request("/topic release on Friday"),
            topic(None, Some("release on Friday"))
        );
    }

    #[test]
    fn away_with_a_message_and_back_without() {
        assert_eq!(
            request("/away  gone fishing "),
            Request::Away {
                message: Some("gone fishing".into())
            }
        );
        assert_eq!(request("/away"), Request::Away { message: None });
        assert_eq!(request("/back"), Request::Away { message: None });
    }

    #[test]
    fn quit_words() {
        assert_eq!(request("end"), Request::Quit { reason: None });
        assert_eq!(request("/q"), Request::Quit { reason: None });
        assert_eq!(
            request("/quit gone fishing"),
            Request::Quit {
                reason: Some("gone fishing".into())
            }
        );
        // Only the exact word leaves: "end" inside a sentence is text.
        assert!(matches!(request("the end"), Request::Say { .. }));
    }

    #[test]
    fn commands_with_arguments() {
        assert_eq!(
            request("/msg bob hi there"),
            Request::Whisper {
                to: "bob".into(),
                text: "hi there".into(),
                data: None,
                action: false
            }
        );
        assert_eq!(
            request("/join #rust"),
            Request::Join {
                room: "#rust".into(),
                key: None
            }
        );
        assert_eq!(
            request("/join #vault Sesame and more"),
            Request::Join {
                room: "#vault".into(),
                key: Some("Sesame".into())
            }
        );
        assert_eq!(
            request("/part #rust bye all"),
            Request::Part {
                room: Some("#rust".into()),
                reason: Some("bye all".into())
            }
        );
        assert_eq!(
            request("/part see you"),
            Request::Part {
                room: None,
                reason: Some("see you".into())
            }
        );
        assert_eq!(request("/who"), Request::Who { room: None });
        assert_eq!(
            request("/who #rust"),
            Request::Who {
                room: Some("#rust".into())
            }
        );
        assert_eq!(
            request("/whois alice"),
            Request::Whois {
                nick: "alice".into()
            }
        );
        assert_eq!(
            request("/nick alice2"),
            Request::Nick {
                nick: "alice2".into()
            }
        );
        assert_eq!(
            request("/me waves"),
            Request::Say {
                room: None,
                text: "waves".into(),
                data: None,
                action: true
            }
        );
        assert_eq!(request("/ROOMS"), Request::Rooms);
    }

    #[test]
    fn history_pages() {
        let room =
            |room: Option<&str>, before: Option<u64>, after: Option<u64>, limit| Request::History {
                room: room.map(str::to_owned),
                before: before.map(HistoryBound::Id),
                after: after.map(HistoryBound::Id),
                limit,
                newest: false,
            };
        assert_eq!(request("/history"), room(None, None, None, None));
        assert_eq!(request("/history 50"), room(None, None, None, Some(50)));
        assert_eq!(
            request("/history #rust 10 before 99"),
            room(Some("#rust"), Some(99), None, Some(10))
        );
        assert_eq!(
            request("/HISTORY after 7 #rust"),
            room(Some("#rust"), None, Some(7), None)
        );
        assert_eq!(
            request("/history bob 5 after 3"),
            Request::PrivateHistory {
                with: "bob".into(),
                before: None,
                after: Some(HistoryBound::Id(3)),
                limit: Some(5),
                newest: false,
            }
        );
        for bad in [
            "/history before",
            "/history before x",
            "/history 1 2",
            "/history #a #b",
            "/history bob carol",
            "/history after 1 after 2",
        ] {
            assert!(
                matches!(parse(bad), LineInput::Invalid(text) if text.contains("usage: /history")),
                "{bad}"
            );
        }
    }

    #[test]
    fn mistakes_get_explanations() {
        assert_eq!(parse("/help"), LineInput::Help);
        assert_eq!(parse("   "), LineInput::Nothing);
        assert!(
            matches!(parse("/frobnicate"), LineInput::Invalid(text) if text.contains("unknown command /frobnicate"))
        );
        assert!(matches!(parse("/msg bob"), LineInput::Invalid(text) if text.contains("usage")));
        assert!(matches!(parse("/join"), LineInput::Invalid(_)));
        assert!(matches!(parse("/nick two words"), LineInput::Invalid(_)));
        assert!(matches!(parse("/me"), LineInput::Invalid(_)));
    }
}
