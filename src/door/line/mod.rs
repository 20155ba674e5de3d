//! The plain-text front door: newline-terminated lines over TCP, for netcat, telnet,
//! the seed clients and `switchboard chat`. [`LineFraming`] cuts the bytes,
//! [`LineProtocol`] asks for a name, then maps typed lines and slash commands to hub
//! requests; both ride the shared session driver (`door::session`), and events are
//! rendered as text by [`render::LineRender`].

pub mod command;
pub mod framing;
pub mod render;

use std::convert::Infallible;
use std::future::Future;
use std::ops::Deref;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use self::command::{LineInput, HELP};
use self::framing::{Frame, LineFramer};
use self::render::LineRender;
use super::conn::{Conn, Farewell, NoFarewell};
use super::session::{self, Door, Framing, Notice, Protocol, SessionSettings, Step, Unit};
use super::PeerSlot;
use crate::hub::{CloseReason, HubHandle, Tag};
use crate::metrics::DoorMetrics;
use crate::text::NickError;

/// The name prompt; the seed's wording, no newline so the cursor waits after it.
pub const NAME_PROMPT: &str = "Enter your name: ";

/// How long an unframed client (one that never sends a newline) must stay quiet
/// before what it sent counts as one message. The seed clients pause for the user to
/// type, or sleep 0.3 s, between sends.
pub const BURST_GAP: Duration = Duration::from_millis(40);

/// The line door's own settings, beside the session rules.
#[derive(Debug, Clone)]
pub struct LineSettings {
    pub max_line_bytes: usize,
    pub default_room: String,
}

/// The line door: its session rules and its protocol.
pub type LineDoor = Door<LineProtocol>;

/// Build the line door on `hub`.
pub fn door(
    hub: HubHandle,
    session: SessionSettings,
    settings: LineSettings,
    metrics: DoorMetrics,
) -> LineDoor {
    Door {
        name: "line",
        hub,
        render: LineRender::new(&settings.default_room),
        settings: session,
        metrics,
        protocol: LineProtocol::new(settings.max_line_bytes),
    }
}

/// Drive one line connection (plain or TLS) from name prompt to close.
pub fn drive<'door, D, S>(door: D, stream: S, peer: PeerSlot) -> impl Future<Output = ()> + 'door
where
    D: Deref<Target = LineDoor> + 'door,
    S: AsyncRead + AsyncWrite + Unpin + 'door,
{
    let framing = LineFraming(LineFramer::new(door.protocol.max_line_bytes));
    session::drive(door, stream, peer, framing, NoFarewell)
}

/// Newline framing, with unframed clients' bursts cut by a quiet gap.
pub struct LineFraming(pub LineFramer);

impl From<Frame> for Unit<Infallible> {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Line(line) => Unit::Message(line),
            Frame::TooLong => Unit::TooLong { head: Bytes::new() },
        }
    }
}

impl Framing for LineFraming {
    type Control = Infallible;

    fn push(&mut self, chunk: &Bytes, units: &mut Vec<Unit<Infallible>>) {
        self.0.push(chunk, units);
    }

    fn finish(&mut self, units: &mut Vec<Unit<Infallible>>) {
        self.0.finish(units);
    }

    fn deadline(&self) -> Option<Instant> {
        self.0
            .awaiting_burst_end()
            .then(|| Instant::now() + BURST_GAP)
    }

    fn on_deadline<S, F>(
        &mut self,
        _conn: &mut Conn<S, F>,
        units: &mut Vec<Unit<Infallible>>,
        _input_waiting: bool,
    ) -> Option<CloseReason>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
        self.0.end_burst(units);
        None
    }
}

/// The line protocol: a name first (the seed's prompt), then text and slash commands.
pub struct LineProtocol {
    max_line_bytes: usize,
    help: Bytes,
}

impl LineProtocol {
    pub fn new(max_line_bytes: usize) -> Self {
        let mut help = String::from("*** commands:\n");
        for (usage, what) in HELP {
            help.push_str(&format!("***   {usage:<26} {what}\n"));
        }
        LineProtocol {
            max_line_bytes,
            help: Bytes::from(help),
        }
    }

    fn name_line(&self, line: &[u8], steps: &mut Vec<Step>) {
        if let Some(why) = wrong_protocol(line) {
            steps.push(Step::Send(format!("error: {why}\n").into()));
            steps.push(Step::Leave(CloseReason::BadInput));
            return;
        }
        let Ok(name) = std::str::from_utf8(line) else {
            let why = NickError::NotUtf8;
            steps.push(Step::Send(format!("error: {why}\n{NAME_PROMPT}").into()));
            return;
        };
        if matches!(name, "end" | "/q" | "/quit") || name.starts_with("/quit ") {
            steps.push(Step::Leave(CloseReason::ClientQuit));
            return;
        }
        // Logging in instead of choosing a name: `/login NAME PASSWORD`, or the two
        // words on their own for clients that can send only one line.
        let login = match name.split_once(' ') {
            Some(("/login" | "/identify", rest)) => Some(command::login(rest)),
            Some((word, rest)) if !word.starts_with('/') && !rest.trim().is_empty() => {
                Some(command::login(name))
            }
            _ => None,
        };
        match login {
            Some(LineInput::Account(step)) => {
                steps.push(Step::Account { tag: None, step });
                return;
            }
            Some(LineInput::Invalid(why)) => {
                steps.push(Step::Send(format!("error: {why}\n{NAME_PROMPT}").into()));
                return;
            }
            _ => {}
        }
        steps.push(Step::Register {
            tag: None,
            nick: name.to_owned(),
        });
    }

    fn typed_line(&self, line: &str, steps: &mut Vec<Step>) {
        match command::parse(line) {
            LineInput::Nothing => {}
            LineInput::Help => steps.push(Step::Send(self.help.clone())),
            LineInput::Invalid(why) => steps.push(Step::Send(format!("error: {why}\n").into())),
            LineInput::Request(request) => steps.push(Step::Request { tag: None, request }),
            LineInput::Account(step) => steps.push(Step::Account { tag: None, step }),
        }
    }
}

impl Protocol for LineProtocol {
    type State = ();

    fn greeting(&self) -> Option<Bytes> {
        Some(Bytes::from_static(NAME_PROMPT.as_bytes()))
    }

    fn on_message(&self, _: &mut (), line: &[u8], registered: bool, steps: &mut Vec<Step>) {
        if registered {
            self.typed_line(&String::from_utf8_lossy(line), steps);
        } else {
            self.name_line(line, steps);
        }
    }

    fn on_too_long(&self, _: &mut (), _head: &[u8], registered: bool, steps: &mut Vec<Step>) {
        let max = self.max_line_bytes;
        let prompt = if registered { "" } else { NAME_PROMPT };
        steps.push(Step::Send(
            format!("error: line too long (limit {max} bytes); it was discarded\n{prompt}").into(),
        ));
    }

    fn on_registered(
        &self,
        _: &mut (),
        _tag: Option<Tag>,
        answer: Result<(), NickError>,
        steps: &mut Vec<Step>,
    ) {
        if let Err(NickError::Registered) = answer {
            steps.push(Step::Send(
                format!(
                    "error: that name is registered; to log in send NAME PASSWORD, or choose another name\n{NAME_PROMPT}"
                )
                .into(),
            ));
        } else if let Err(refusal) = answer {
            steps.push(Step::Send(
                format!("error: cannot use that name: {refusal}\n{NAME_PROMPT}").into(),
            ));
        }
    }

    fn after_account_refusal(&self, registered: bool) -> Option<Bytes> {
        (!registered).then(|| Bytes::from_static(NAME_PROMPT.as_bytes()))
    }

    fn notice(&self, notice: Notice) -> Bytes {
        match notice {
            Notice::SlowDown { rate } => format!(
                "*** slow down: over {rate} messages per second; your messages are delayed\n"
            ),
            Notice::Flooding => "error: disconnected for flooding\n".to_owned(),
            Notice::RegisterTimeout { limit } => format!(
                "\nerror: no name chosen within {}s; goodbye\n",
                limit.as_secs_f64()
            ),
            Notice::IdleTimeout { limit } => format!(
                "error: nothing received for {}s; goodbye\n",
                limit.as_secs_f64()
            ),
        }
        .into()
    }
}

/// Recognise another protocol spoken at the line port (a browser, curl, a TLS client)
/// from the first line, so it gets an explanation instead of a name refusal.
fn wrong_protocol(first_line: &[u8]) -> Option<&'static str> {
    if first_line.starts_with(&[0x16, 0x03]) {
        return Some("this is Switchboard's plain-text chat port; it does not speak TLS");
    }
    let text = std::str::from_utf8(first_line).ok()?;
    let mut words = text.split(' ');
    let method = words.next()?;
    let _target = words.next()?;
    let version = words.next()?;
    let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if is_method && version.starts_with("HTTP/") && words.next().is_none() {
        return Some(
            "this is Switchboard's plain-text chat port, not HTTP; connect with nc or telnet, or open the web door",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::flood::FloodSettings;
    use crate::door::ConnectionSlots;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::task::TaskTracker;

    /// Every idle connection holds its task's future, in an allocation tokio rounds up
    /// to 128 bytes on x86-64 (the future plus ~110 bytes of task header and trailer):
    /// up to ~400 bytes of future is a 512-byte task. It is 360 bytes in debug builds
    /// (where a `TcpStream` is larger) since the metrics guard shrank; this fails when
    /// it grows, so any growth is a decision.
    #[tokio::test]
    async fn an_idle_connection_future_stays_small() {
        let tracker = TaskTracker::new();
        let hub = crate::hub::spawn_in_memory(&tracker);
        let door = std::sync::Arc::new(door(
            hub,
            SessionSettings {
                max_queue_bytes: 1 << 20,
                register_timeout: Duration::from_secs(10),
                idle_timeout: None,
                flood: FloodSettings {
                    rate: 10.0,
                    burst: 5,
                    patience: Duration::from_secs(2),
                },
                accounts: None,
            },
            LineSettings {
                max_line_bytes: 1024,
                default_room: "#general".into(),
            },
            DoorMetrics::default(),
        ));
        let slots = ConnectionSlots::new(10, 10);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let slot = slots.acquire(peer).unwrap();
        let accept = drive(door.clone(), stream, PeerSlot::new(peer, Some(slot)));
        let size = std::mem::size_of_val(&accept);
        eprintln!("line connection future {size} bytes");
        assert!(size <= 360, "line connection future grew to {size} bytes");
        drop(accept);
        assert_eq!(slots.in_use(), 0, "the slot is freed with the future");
    }

    #[test]
    fn recognises_http_and_tls_but_not_names() {
        assert!(wrong_protocol(b"GET / HTTP/1.1").is_some());
        assert!(wrong_protocol(b"POST /ws HTTP/1.0").is_some());
        assert!(wrong_protocol(&[0x16, 0x03, 0x01, 0x02, 0x00]).is_some());
        assert!(wrong_protocol(b"alice").is_none());
        assert!(wrong_protocol(b"GET").is_none());
        assert!(wrong_protocol(b"get lost HTTP/1.1").is_none());
    }

    fn steps_for(protocol: &LineProtocol, line: &[u8], registered: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        protocol.on_message(&mut (), line, registered, &mut steps);
        steps
    }

    #[test]
    fn the_first_line_is_a_name_and_later_lines_are_commands() {
        let protocol = LineProtocol::new(64);
        assert!(matches!(
            &steps_for(&protocol, b"alice", false)[..],
            [Step::Register { tag: None, nick }] if nick == "alice"
        ));
        assert!(matches!(
            &steps_for(&protocol, b"end", false)[..],
            [Step::Leave(CloseReason::ClientQuit)]
        ));
        assert!(matches!(
            &steps_for(&protocol, b"GET / HTTP/1.1", false)[..],
            [Step::Send(_), Step::Leave(CloseReason::BadInput)]
        ));
        assert!(matches!(
            &steps_for(&protocol, b"\xff\xfe", false)[..],
            [Step::Send(text)] if text.ends_with(NAME_PROMPT.as_bytes())
        ));
        assert!(matches!(
            &steps_for(&protocol, b"hello", true)[..],
            [Step::Request {
                tag: None,
                request: crate::hub::Request::Say { .. }
            }]
        ));
        assert!(matches!(
            &steps_for(&protocol, b"/help", true)[..],
            [Step::Send(help)] if help.starts_with(b"*** commands:")
        ));
        assert!(steps_for(&protocol, b"   ", true).is_empty());
    }
}
