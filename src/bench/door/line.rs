//! The line-family adapter: servers that speak plain text lines over TCP, each with its
//! own way to register (Switchboard's line door, `ncat --chat`, the seed chat server,
//! a raw line peer) and to leave.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::tcp::{self, read_until, TcpWriting};
use super::{BoxFuture, Door, Session};

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

impl LineDoor {
    pub fn new(target: LineTarget) -> Self {
        LineDoor { target }
    }

    async fn sign_in(
        &self,
        stream: &mut TcpStream,
        nick: &str,
        deadline: Instant,
    ) -> io::Result<Vec<u8>> {
        let mut buffer = Vec::new();
        let consumed = match self.target {
            LineTarget::Switchboard => {
                let answer = format!("{nick}\n");
                let joined = format!("*** {nick} joined ");
                register_at_prompt(
                    deadline,
                    stream,
                    &mut buffer,
                    answer.as_bytes(),
                    joined.as_bytes(),
                    b"Enter your name: ",
                )
                .await?
            }
            LineTarget::SeedChat => {
                // The seed takes one recv as the name, newline and all: send none.
                let joined = format!("[{nick}] has joined.");
                register_at_prompt(
                    deadline,
                    stream,
                    &mut buffer,
                    nick.as_bytes(),
                    joined.as_bytes(),
                    b"Already registered",
                )
                .await?
            }
            // ncat greets each newcomer with the list of who is there; after that line
            // it relays to this connection.
            LineTarget::NcatChat => {
                read_until(
                    deadline,
                    stream,
                    &mut buffer,
                    b"<announce> already connected: ",
                    true,
                    None,
                )
                .await?
            }
            LineTarget::Raw => 0,
        };
        buffer.drain(..consumed);
        Ok(buffer)
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

/// Register at an `Enter your name: ` prompt (Switchboard's and the seed's): wait for
/// it, send `answer`, then wait for the whole line holding `joined`; `failure` arriving
/// instead means the name was refused. Returns the offset just past that line.
async fn register_at_prompt(
    deadline: Instant,
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    answer: &[u8],
    joined: &[u8],
    failure: &[u8],
) -> io::Result<usize> {
    let prompt = read_until(deadline, stream, buffer, b"Enter your name: ", false, None).await?;
    buffer.drain(..prompt);
    stream.write_all(answer).await?;
    read_until(deadline, stream, buffer, joined, true, Some(failure)).await
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

    fn register<'a>(
        &'a self,
        mut stream: TcpStream,
        _addr: SocketAddr,
        nick: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, io::Result<Session>> {
        Box::pin(async move {
            let leftover = self.sign_in(&mut stream, nick, deadline).await?;
            Ok(tcp::session(stream, leftover, self.writing()))
        })
    }
}
