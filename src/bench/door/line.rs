//! The line-family adapter: servers that speak plain text lines over TCP, each with its
//! own way to register (Switchboard's line door, `ncat --chat`, the seed chat server,
//! a raw line peer) and to leave.

use std::io;
use std::net::SocketAddr;

use super::tcp::{self, find_after, TcpWriting};
use super::{Door, Registration, Step};

/// The servers that speak lines over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTarget {
    /// Switchboard's line door: `Enter your name: `, `*** NAME joined ROOM`, echo.
    Switchboard,
    /// `ncat --chat`: no registration, `<userN> ` prefixes, no echo.
    NcatChat,
    /// The seed Python chat server: name prompt, `[name] has joined.`, echo; one
    /// message per recv, so its output is only as framed as TCP happens to deliver.
    SeedChat,
    /// Any line peer: no registration, payloads found anywhere, echo assumed.
    Raw,
}

/// The line-family adapter.
pub struct LineDoor {
    target: LineTarget,
}

/// What Switchboard's line door and the seed prompt with.
const NAME_PROMPT: &[u8] = b"Enter your name: ";

impl LineDoor {
    pub fn new(target: LineTarget) -> Self {
        LineDoor { target }
    }
}

/// Registration at a name prompt (Switchboard's and the seed's): wait for it, send
/// `answer`, then wait for the whole line holding `joined`; `failure` arriving after
/// the prompt instead means the name was refused.
struct AtPrompt {
    /// Taken when sent.
    answer: Option<Vec<u8>>,
    joined: Vec<u8>,
    failure: &'static [u8],
    /// Where the prompt ended, once it has arrived.
    prompt_end: Option<usize>,
    searched: usize,
}

impl Registration for AtPrompt {
    fn step(&mut self, received: &[u8]) -> io::Result<Step> {
        let Some(prompt_end) = self.prompt_end else {
            let Some(end) = find_after(received, &mut self.searched, NAME_PROMPT, false) else {
                return Ok(Step::Read);
            };
            self.prompt_end = Some(end);
            self.searched = end;
            return Ok(Step::Send(self.answer.take().unwrap_or_default()));
        };
        if let Some(end) = find_after(received, &mut self.searched, &self.joined, true) {
            return Ok(Step::Registered(end));
        }
        if memchr::memmem::find(&received[prompt_end..], self.failure).is_some() {
            return Err(tcp::refused("registration failed", received));
        }
        Ok(Step::Read)
    }
}

/// Registration that only waits for the whole line holding `needle`.
struct UntilLine {
    needle: &'static [u8],
    searched: usize,
}

impl Registration for UntilLine {
    fn step(&mut self, received: &[u8]) -> io::Result<Step> {
        Ok(
            match find_after(received, &mut self.searched, self.needle, true) {
                Some(end) => Step::Registered(end),
                None => Step::Read,
            },
        )
    }
}

/// No registration: relayed to from the moment of connecting.
struct Connected;

impl Registration for Connected {
    fn step(&mut self, _received: &[u8]) -> io::Result<Step> {
        Ok(Step::Registered(0))
    }
}

impl Door for LineDoor {
    fn name(&self) -> &'static str {
        match self.target {
            LineTarget::Switchboard => "switchboard",
            LineTarget::NcatChat => "ncat-chat",
            LineTarget::SeedChat => "seed-chat",
            LineTarget::Raw => "raw",
        }
    }

    fn echoes(&self) -> bool {
        !matches!(self.target, LineTarget::NcatChat)
    }

    fn max_open_concurrency(&self) -> Option<usize> {
        // The seed broadcasts over its user dict while other threads add to it; a
        // concurrent join kills a thread ("dictionary changed size during iteration").
        // ncat 7.93 quits ("getpeername ... failed: Transport endpoint is not
        // connected. QUITTING.") when many connections arrive at once.
        match self.target {
            LineTarget::SeedChat | LineTarget::NcatChat => Some(1),
            LineTarget::Switchboard | LineTarget::Raw => None,
        }
    }

    fn registration(&self, _addr: SocketAddr, nick: &str) -> Box<dyn Registration> {
        match self.target {
            LineTarget::Switchboard => Box::new(AtPrompt {
                answer: Some(format!("{nick}\n").into_bytes()),
                joined: format!("*** {nick} joined ").into_bytes(),
                // Switchboard asks again when a name is refused.
                failure: NAME_PROMPT,
                prompt_end: None,
                searched: 0,
            }),
            // The seed takes one recv as the name, newline and all: send none.
            LineTarget::SeedChat => Box::new(AtPrompt {
                answer: Some(nick.as_bytes().to_vec()),
                joined: format!("[{nick}] has joined.").into_bytes(),
                failure: b"Already registered",
                prompt_end: None,
                searched: 0,
            }),
            // ncat greets each newcomer with the list of who is there; after that line
            // it relays to this connection.
            LineTarget::NcatChat => Box::new(UntilLine {
                needle: b"<announce> already connected: ",
                searched: 0,
            }),
            LineTarget::Raw => Box::new(Connected),
        }
    }

    fn writing(&self) -> TcpWriting {
        TcpWriting {
            frame: |payload, out| {
                out.extend_from_slice(payload);
                out.push(b'\n');
            },
            // The seed server only forgets a user who says "end"; others take EOF.
            farewell: match self.target {
                LineTarget::SeedChat => b"end",
                LineTarget::Switchboard => b"/quit\n",
                LineTarget::NcatChat | LineTarget::Raw => b"",
            },
            // The seed server dies (thread by thread) on a reset; everyone else copes.
            may_reset: self.target != LineTarget::SeedChat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::door::testing::{assert_refused, assert_registers};

    const ADDR: &str = "127.0.0.1:9999";

    fn registration(target: LineTarget) -> impl Fn() -> Box<dyn Registration> {
        move || LineDoor::new(target).registration(ADDR.parse().unwrap(), "b1_0")
    }

    #[test]
    fn switchboard_registers_at_the_prompt_and_the_join_line() {
        let transcript = b"Welcome to switchboard.\nEnter your name: \
                           *** b1_0 joined #lobby\n[b1_0] ~b1:0:0:1~\n";
        let end = transcript.len() - b"[b1_0] ~b1:0:0:1~\n".len();
        let answer: &[u8] = b"b1_0\n";
        assert_registers(
            registration(LineTarget::Switchboard),
            transcript,
            &[answer],
            end,
        );
        // Someone else's join is not ours.
        let transcript = b"Enter your name: *** b1_01 joined #lobby\n*** b1_0 joined #lobby\n";
        let end = transcript.len();
        assert_registers(
            registration(LineTarget::Switchboard),
            transcript,
            &[answer],
            end,
        );
    }

    #[test]
    fn switchboard_asking_again_is_a_refusal() {
        let transcript = b"Enter your name: that name is taken\nEnter your name: ";
        assert_refused(
            registration(LineTarget::Switchboard),
            transcript,
            "registration failed; the server sent \"Enter your name: that name is taken",
        );
    }

    #[test]
    fn the_seed_gets_a_bare_name_and_may_refuse_it() {
        let transcript = b"Enter your name: [b1_0] has joined.\n";
        let end = transcript.len();
        assert_registers(
            registration(LineTarget::SeedChat),
            transcript,
            &[b"b1_0"],
            end,
        );
        let transcript = b"Enter your name: Already registered.\n";
        assert_refused(
            registration(LineTarget::SeedChat),
            transcript,
            "Already registered",
        );
    }

    #[test]
    fn ncat_and_raw_peers_need_no_name() {
        let transcript = b"<announce> already connected: nobody.\n<user1> hi\n";
        let end = transcript.len() - b"<user1> hi\n".len();
        assert_registers(registration(LineTarget::NcatChat), transcript, &[], end);
        assert_registers(registration(LineTarget::Raw), b"anything\n", &[], 0);
    }
}
