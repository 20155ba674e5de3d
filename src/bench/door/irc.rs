//! The IRC adapter: any IRC server (Switchboard's IRC door, ngircd, InspIRCd) over
//! plain TCP. Registers with NICK and USER, joins [`CHANNEL`] and waits for the end of
//! its NAMES, sends each payload as a PRIVMSG to it, and leaves with QUIT. IRC servers
//! do not send senders their own messages (no `echo-message` is asked for).

use std::io;
use std::net::SocketAddr;

use super::tcp::{self, find_after, TcpWriting};
use super::{Door, Registration, Step};

/// The channel every bench connection joins. Not Switchboard's default room, so the
/// same run means the same on every server: one channel of exactly the bench's
/// connections.
pub const CHANNEL: &str = "#bench";

/// The IRC adapter.
pub struct IrcDoor;

/// Where a registration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing sent yet.
    Start,
    /// NICK and USER sent; waiting for the welcome (001).
    Welcome,
    /// JOIN sent; waiting for the end of the channel's NAMES (366).
    Joined,
}

/// NICK and USER, the welcome, JOIN, the end of NAMES.
struct IrcRegistration {
    nick: String,
    stage: Stage,
    searched: usize,
    /// Received lines up to here have been checked for a refusal.
    checked: usize,
}

/// Whether `line` says the server will not take the connection: a nickname refused
/// (432 erroneous, 433 in use) or the link closed (`ERROR`).
fn is_refusal(line: &[u8]) -> bool {
    if line.starts_with(b"ERROR ") {
        return true;
    }
    let mut words = line.split(|&byte| byte == b' ');
    let command = match words.next() {
        Some(prefix) if prefix.starts_with(b":") => words.next(),
        first => first,
    };
    matches!(command, Some(b"432" | b"433"))
}

impl Registration for IrcRegistration {
    fn step(&mut self, received: &[u8]) -> io::Result<Step> {
        // Each whole line once, so the error quotes the reason.
        while let Some(newline) = memchr::memchr(b'\n', &received[self.checked..]) {
            let end = self.checked + newline + 1;
            if is_refusal(&received[self.checked..end]) {
                return Err(tcp::refused("registration failed", &received[..end]));
            }
            self.checked = end;
        }
        match self.stage {
            Stage::Start => {
                self.stage = Stage::Welcome;
                let nick = &self.nick;
                Ok(Step::Send(
                    format!("NICK {nick}\r\nUSER {nick} 0 * :bench\r\n").into_bytes(),
                ))
            }
            Stage::Welcome => match find_after(received, &mut self.searched, b" 001 ", true) {
                Some(end) => {
                    self.stage = Stage::Joined;
                    self.searched = end;
                    Ok(Step::Send(format!("JOIN {CHANNEL}\r\n").into_bytes()))
                }
                None => Ok(Step::Read),
            },
            // Every server ends NAMES with `366 <nick or *> #bench :End of ...`.
            Stage::Joined => {
                let end_of_names = format!(" {CHANNEL} :End of");
                match find_after(received, &mut self.searched, end_of_names.as_bytes(), true) {
                    Some(end) => Ok(Step::Registered(end)),
                    None => Ok(Step::Read),
                }
            }
        }
    }
}

impl Door for IrcDoor {
    fn name(&self) -> &'static str {
        "irc"
    }

    fn echoes(&self) -> bool {
        false
    }

    fn registration(&self, _addr: SocketAddr, nick: &str) -> Box<dyn Registration> {
        Box::new(IrcRegistration {
            nick: nick.to_owned(),
            stage: Stage::Start,
            searched: 0,
            checked: 0,
        })
    }

    fn writing(&self) -> TcpWriting {
        TcpWriting {
            frame: |payload, out| {
                out.extend_from_slice(b"PRIVMSG ");
                out.extend_from_slice(CHANNEL.as_bytes());
                out.extend_from_slice(b" :");
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            },
            farewell: b"QUIT :bench done\r\n",
            may_reset: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::door::testing::{assert_refused, assert_registers};

    fn registration() -> impl Fn() -> Box<dyn Registration> {
        || IrcDoor.registration("127.0.0.1:6667".parse().unwrap(), "b1_0")
    }

    const HELLO: &[u8] = b"NICK b1_0\r\nUSER b1_0 0 * :bench\r\n";
    const JOIN: &[u8] = b"JOIN #bench\r\n";

    #[test]
    fn registers_joins_and_waits_for_the_end_of_names_on_every_server() {
        // Switchboard: numerics aimed at `*` after the welcome.
        let transcript =
            b":switchboard 001 b1_0 :Welcome to Switchboard, b1_0!b1_0@switchboard\r\n\
            :switchboard 422 b1_0 :MOTD File is missing\r\n\
            :b1_0!b1_0@switchboard JOIN #bench\r\n\
            :switchboard 353 * = #bench :b1_0\r\n\
            :switchboard 366 * #bench :End of /NAMES list\r\n\
            :b1_1!b1_1@switchboard PRIVMSG #bench :~b1:1:0:5~\r\n";
        let end = transcript.len() - b":b1_1!b1_1@switchboard PRIVMSG #bench :~b1:1:0:5~\r\n".len();
        assert_registers(registration(), transcript, &[HELLO, JOIN], end);
        // ngircd and InspIRCd: the nick as target, NOTICEs before the welcome.
        let transcript = b":irc.local NOTICE * :*** Looking up your hostname...\r\n\
            :irc.local 001 b1_0 :Welcome to the Internet Relay Network b1_0!~b1_0@localhost\r\n\
            :b1_0!~b1_0@localhost JOIN :#bench\r\n\
            :irc.local 353 b1_0 = #bench :@b1_0\r\n\
            :irc.local 366 b1_0 #bench :End of NAMES list\r\n";
        assert_registers(registration(), transcript, &[HELLO, JOIN], transcript.len());
    }

    #[test]
    fn a_refused_nickname_or_a_closed_link_is_a_refusal() {
        assert_refused(
            registration(),
            b":irc.local 433 * b1_0 :Nickname already in use\r\n",
            "Nickname already in use",
        );
        assert_refused(
            registration(),
            b"ERROR :Closing link: (b1_0@127.0.0.1) [Too many connections]\r\n",
            "Too many connections",
        );
        // Numbers in text are not numerics.
        let transcript = b":irc.local 001 b1_0 :Welcome\r\n\
            :irc.local 250 b1_0 :Highest connection count: 432 (433 connections received)\r\n\
            :irc.local 366 b1_0 #bench :End of NAMES list\r\n";
        assert_registers(registration(), transcript, &[HELLO, JOIN], transcript.len());
    }

    #[test]
    fn payloads_go_to_the_channel_as_privmsgs() {
        let mut out = Vec::new();
        (IrcDoor.writing().frame)(b"~b1:0:1:2~", &mut out);
        assert_eq!(out, b"PRIVMSG #bench :~b1:0:1:2~\r\n");
    }
}
