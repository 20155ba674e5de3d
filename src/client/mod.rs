//! The `chat` terminal client: connects to the line door, signs in, then carries lines
//! both ways at once: typed (or piped) lines to the server, server lines to the screen.
//! Owns connecting, the sign-in conversation, quitting, and reconnecting with backoff;
//! the screen and keyboard live in `terminal` (interactive) and `pipe` (scripts).

pub(crate) mod editor;
pub(crate) mod pipe;
pub(crate) mod protocol;
pub(crate) mod terminal;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use self::pipe::PipeUi;
use self::protocol::{LineKind, ServerEvent, ServerParser};
use self::terminal::TerminalUi;
use crate::door::line::NAME_PROMPT;

/// Where the client connects when no address is given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9999";
/// Port assumed when the address has none.
pub const DEFAULT_PORT: u16 = 9999;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After sending a quit, how long to wait for the server to close the connection.
const QUIT_GRACE: Duration = Duration::from_secs(2);
/// Typed lines not yet written to the socket; beyond this, input waits.
const MAX_OUTGOING_BYTES: usize = 256 * 1024;

/// `switchboard chat` flags.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Server address, HOST:PORT (the line door) [default: 127.0.0.1:9999].
    pub server: Option<String>,
    /// Nickname. Without it the client asks (on a terminal) or takes the first line
    /// of stdin (in pipe mode).
    #[arg(short, long, value_name = "NAME")]
    pub nick: Option<String>,
    /// When the connection is lost (or cannot be made), keep retrying with
    /// exponential backoff and sign in again, instead of exiting.
    #[arg(long)]
    pub reconnect: bool,
}

/// What the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInput {
    Line(String),
    /// Ctrl+C, Ctrl+D, end of stdin, or a termination signal.
    Quit,
}

/// SIGINT, SIGTERM and SIGHUP, all meaning "quit now, politely".
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves when any of the signals arrives. Cancel-safe.
    pub async fn recv(&mut self) {
        tokio::select! {
            Some(()) = self.interrupt.recv() => {}
            Some(()) = self.terminate.recv() => {}
            Some(()) = self.hangup.recv() => {}
            else => std::future::pending().await,
        }
    }
}

/// The two faces of the client.
enum Ui {
    Terminal(TerminalUi),
    Pipe(PipeUi),
}

impl Ui {
    fn interactive(&self) -> bool {
        matches!(self, Ui::Terminal(_))
    }

    async fn next_input(&mut self) -> UserInput {
        match self {
            Ui::Terminal(ui) => ui.next_input().await,
            Ui::Pipe(ui) => ui.next_input().await,
        }
    }

    fn show(&mut self, line: &str) -> anyhow::Result<()> {
        match self {
            Ui::Terminal(ui) => ui.show(line).context("cannot write to the terminal"),
            Ui::Pipe(ui) => ui.show(line).context("cannot write to stdout"),
        }
    }

    fn notice(&mut self, text: &str) {
        match self {
            Ui::Terminal(ui) => ui.notice(text),
            Ui::Pipe(ui) => ui.notice(text),
        }
    }

    fn set_prompt(&mut self, prompt: &str, for_name: bool) {
        if let Ui::Terminal(ui) = self {
            ui.set_prompt(prompt, for_name);
        }
    }
}

/// Run `switchboard chat`.
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let address = server_address(args.server.as_deref());
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let signals = Signals::new().context("cannot install signal handlers")?;
    let ui = if interactive {
        Ui::Terminal(TerminalUi::start().context("cannot set up the terminal")?)
    } else {
        Ui::Pipe(PipeUi::start())
    };
    let mut client = Client {
        ui,
        signals,
        address,
        nick: args.nick,
        reconnect: args.reconnect,
    };
    let result = client.run().await;
    // Leave raw mode before main prints any error.
    drop(client);
    result
}

/// `HOST:PORT` as given, with the default port added when there is none.
fn server_address(given: Option<&str>) -> String {
    let Some(given) = given.map(str::trim).filter(|g| !g.is_empty()) else {
        return DEFAULT_SERVER.to_owned();
    };
    let has_port = match given.rsplit_once(':') {
        // "[::1]:9999" or "host:9999"; a bare IPv6 address has colons but no port.
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        given.to_owned()
    } else if given.contains(':') && !given.starts_with('[') {
        format!("[{given}]:{DEFAULT_PORT}")
    } else {
        format!("{given}:{DEFAULT_PORT}")
    }
}

/// Whether `line` makes the server end the session (mirrors the line door's parser).
fn is_quit(line: &str) -> bool {
    if line == "end" {
        return true;
    }
    match line.strip_prefix('/') {
        Some(command) if !command.starts_with('/') => {
            let word = command.split_whitespace().next().unwrap_or("");
            matches!(word.to_ascii_lowercase().as_str(), "q" | "quit" | "exit")
        }
        _ => false,
    }
}

/// Delays between reconnection attempts: doubling from half a second up to 30 s, each
/// with ±25% jitter so a crowd of clients does not return in lockstep.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn next_delay(&mut self) -> Duration {
        let base = Self::FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How one connection ended.
enum Outcome {
    /// The user quit (exit 0).
    Quit,
    CannotConnect(String),
    Lost(String),
}

struct Client {
    ui: Ui,
    /// Polled beside everything else: once handlers are installed, SIGINT no longer
    /// ends the process by itself.
    signals: Signals,
    address: String,
    /// The name to sign in with; updated by the welcome and by nick changes, so a
    /// reconnect uses the current one. None: ask the user.
    nick: Option<String>,
    reconnect: bool,
}

/// State of one connection.
#[derive(Default)]
struct Session {
    parser: ServerParser,
    /// Bytes waiting to be written to the socket.
    outgoing: Vec<u8>,
    /// The terminal shows the name prompt; the next line typed is the name.
    asking_name: bool,
    /// A quit was sent; the connection ends when the server closes it or by then.
    quitting: Option<Instant>,
    /// The last `error:` line, to explain a following disconnect.
    last_error: Option<String>,
}

impl Session {
    fn send_line(&mut self, line: &str) {
        self.outgoing.extend_from_slice(line.as_bytes());
        self.outgoing.push(b'\n');
    }

    fn quit(&mut self, line: &str) {
        self.send_line(line);
        self.quitting = Some(Instant::now() + QUIT_GRACE);
    }

    fn lost(&self, what: &str) -> Outcome {
        if self.quitting.is_some() {
            return Outcome::Quit;
        }
        match &self.last_error {
            Some(error) => Outcome::Lost(format!("{what} ({error})")),
            None => Outcome::Lost(what.to_owned()),
        }
    }
}

impl Client {
    async fn run(&mut self) -> anyhow::Result<()> {
        if self.nick.is_none() && !self.ui.interactive() {
            let input = tokio::select! {
                input = self.ui.next_input() => input,
                () = self.signals.recv() => return Ok(()),
            };
            match input {
                UserInput::Line(line) if is_quit(&line) => return Ok(()),
                UserInput::Line(line) => self.nick = Some(line),
                UserInput::Quit => {
                    bail!("no name to sign in with: give --nick NAME or a first line on stdin")
                }
            }
        }
        if self.ui.interactive() {
            self.ui.notice(&format!(
                "*** connecting to {}; /help lists the commands, /q or Ctrl+D quits",
                self.address
            ));
        }
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        loop {
            let outcome = self.connection(attempt, &mut backoff).await?;
            attempt += 1;
            let address = &self.address;
            let reason = match outcome {
                Outcome::Quit => return Ok(()),
                Outcome::CannotConnect(error) if !self.reconnect => {
                    bail!("cannot connect to {address}: {error}")
                }
                Outcome::Lost(reason) if !self.reconnect => {
                    bail!("connection to {address} lost: {reason}")
                }
                Outcome::CannotConnect(error) => format!("cannot connect to {address}: {error}"),
                Outcome::Lost(reason) => format!("connection lost: {reason}"),
            };
            let delay = backoff.next_delay();
            self.ui.set_prompt("", false);
            self.ui.notice(&format!(
                "*** {reason}; reconnecting in {:.1}s",
                delay.as_secs_f64()
            ));
            if !self.wait(delay).await {
                return Ok(());
            }
        }
    }

    /// Sleep before a reconnection attempt; false if the user quit meanwhile.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                () = self.signals.recv() => return false,
                // In pipe mode stdin waits, so its lines are sent after reconnecting.
                input = self.ui.next_input(), if self.ui.interactive() => match input {
                    UserInput::Quit => return false,
                    UserInput::Line(line) if is_quit(&line) => return false,
                    UserInput::Line(_) => {
                        self.ui.notice("*** not connected; that line was not sent");
                    }
                },
            }
        }
    }

    /// Connect, sign in, and chat until the connection ends.
    async fn connection(&mut self, attempt: u32, backoff: &mut Backoff) -> anyhow::Result<Outcome> {
        let address = self.address.clone();
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address));
        tokio::pin!(connect);
        let stream = loop {
            tokio::select! {
                connected = &mut connect => match connected {
                    Ok(Ok(stream)) => break stream,
                    Ok(Err(error)) => return Ok(Outcome::CannotConnect(error.to_string())),
                    Err(_) => return Ok(Outcome::CannotConnect("timed out".into())),
                },
                () = self.signals.recv() => return Ok(Outcome::Quit),
                // In pipe mode stdin waits (lines are kept for later); on a terminal the
                // user may quit while a slow connect is under way.
                input = self.ui.next_input(), if self.ui.interactive() => match input {
                    UserInput::Line(line) if !is_quit(&line) => {
                        self.ui.notice("*** not connected yet; that line was not sent");
                    }
                    _ => return Ok(Outcome::Quit),
                },
            }
        };
        let _ = stream.set_nodelay(true);
        if self.ui.interactive() || attempt > 0 {
            self.ui
                .notice(&format!("*** connected to {}", self.address));
        }
        let (mut reader, mut writer) = stream.into_split();
        let mut session = Session::default();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut events = Vec::new();
        loop {
            // In pipe mode stdin is read only once signed in, so no line is taken for a
            // name retry or lost before the welcome.
            let take_input = session.quitting.is_none()
                && session.outgoing.len() < MAX_OUTGOING_BYTES
                && (self.ui.interactive() || session.parser.registered());
            let quit_by = session
                .quitting
                .unwrap_or_else(|| Instant::now() + QUIT_GRACE);
            tokio::select! {
                read = reader.read(&mut chunk) => match read {
                    Ok(0) => {
                        session.parser.finish(&mut events);
                        self.handle_events(&mut session, &mut events, backoff)?;
                        return Ok(session.lost("the server closed the connection"));
                    }
                    Ok(count) => {
                        session.parser.push(&chunk[..count], &mut events);
                        self.handle_events(&mut session, &mut events, backoff)?;
                    }
                    Err(error) => return Ok(session.lost(&error.to_string())),
                },
                written = writer.write(&session.outgoing), if !session.outgoing.is_empty() => {
                    match written {
                        Ok(count) => {
                            session.outgoing.drain(..count);
                        }
                        Err(error) => return Ok(session.lost(&format!("cannot send: {error}"))),
                    }
                }
                input = self.ui.next_input(), if take_input => self.handle_input(&mut session, input),
                () = self.signals.recv(), if session.quitting.is_none() => session.quit("/quit"),
                () = tokio::time::sleep_until(quit_by), if session.quitting.is_some() => {
                    return Ok(Outcome::Quit);
                }
            }
        }
    }

    fn handle_input(&mut self, session: &mut Session, input: UserInput) {
        let line = match input {
            UserInput::Quit => {
                session.quit("/quit");
                return;
            }
            UserInput::Line(line) => line,
        };
        if is_quit(&line) {
            // Before sign-in the server only knows the short forms.
            let signed_in = session.parser.registered();
            session.quit(if signed_in { &line } else { "/quit" });
        } else if session.asking_name {
            session.asking_name = false;
            self.ui.set_prompt("", false);
            session.send_line(&line);
            self.nick = Some(line);
        } else if session.parser.registered() {
            session.send_line(&line);
        } else if !line.is_empty() {
            self.ui
                .notice("*** not signed in yet; that line was not sent");
        }
    }

    fn handle_events(
        &mut self,
        session: &mut Session,
        events: &mut Vec<ServerEvent>,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        for event in events.drain(..) {
            let (text, kind) = match event {
                ServerEvent::NamePrompt => {
                    match &self.nick {
                        Some(nick) => session.send_line(nick),
                        None if self.ui.interactive() => {
                            session.asking_name = true;
                            self.ui.set_prompt(NAME_PROMPT, true);
                        }
                        None => bail!("the server asks for a name and none was given"),
                    }
                    continue;
                }
                ServerEvent::Line { text, kind } => (text, kind),
            };
            self.ui.show(&text)?;
            match kind {
                LineKind::Plain => {}
                LineKind::Error => session.last_error = Some(text),
                LineKind::NameRefused { reason } => {
                    if !self.ui.interactive() {
                        let nick = self.nick.as_deref().unwrap_or_default();
                        return Err(anyhow!("the server refused the name {nick:?}: {reason}"));
                    }
                    // Ask the user when the prompt comes again.
                    self.nick = None;
                }
                LineKind::Welcome { nick } => {
                    backoff.reset();
                    self.ui.set_prompt(&format!("{nick}> "), false);
                    self.nick = Some(nick);
                }
                LineKind::NickChanged { old, new } => {
                    let ours = self.nick.as_deref().is_some_and(|nick| {
                        crate::text::fold_case(nick) == crate::text::fold_case(&old)
                    });
                    if ours {
                        self.ui.set_prompt(&format!("{new}> "), false);
                        self.nick = Some(new);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_defaults() {
        assert_eq!(server_address(None), "127.0.0.1:9999");
        assert_eq!(server_address(Some("")), "127.0.0.1:9999");
        assert_eq!(server_address(Some("example.org")), "example.org:9999");
        assert_eq!(server_address(Some("example.org:7")), "example.org:7");
        assert_eq!(server_address(Some("[::1]:7")), "[::1]:7");
        assert_eq!(server_address(Some("::1")), "[::1]:9999");
        assert_eq!(server_address(Some("[::1]")), "[::1]:9999");
    }

    #[test]
    fn quit_words_match_the_server() {
        for line in ["/q", "/quit", "/QUIT bye now", "/exit", "end", "/ q"] {
            assert!(is_quit(line), "{line}");
        }
        for line in ["//q", "q", "/query", "ending", "hello /q", "end "] {
            assert!(!is_quit(line), "{line}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut backoff = Backoff::default();
        let mut previous_base = Duration::ZERO;
        for failure in 0..40 {
            let delay = backoff.next_delay();
            let base = Backoff::FIRST
                .saturating_mul(1 << failure.min(16))
                .min(Backoff::MAX);
            assert!(base >= previous_base);
            assert!(delay >= base.mul_f64(0.75) && delay <= base.mul_f64(1.25));
            previous_base = base;
        }
        assert!(backoff.next_delay() <= Backoff::MAX.mul_f64(1.25));
        backoff.reset();
        assert!(backoff.next_delay() <= Backoff::FIRST.mul_f64(1.25));
    }
}
