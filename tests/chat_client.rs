//! `switchboard chat` against the real server: pipe mode (lines both ways, /q, refused
//! names, connection refused, lost connection, --reconnect across a server restart) and
//! interactive mode under a pseudo-terminal (typing while messages arrive, editing keys,
//! the terminal restored on exit).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod support;

/// Only to avoid hanging forever; nothing here is expected to take long.
const TIMEOUT: Duration = Duration::from_secs(20);
const NAME_PROMPT: &str = "Enter your name: ";

fn binary() -> Command {
    isolated(Command::new(support::binary()))
}

fn isolated(mut command: Command) -> Command {
    // Settings from the environment of whoever runs the tests must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHBOARD_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on a child we started and have not yet reaped.
    unsafe { libc::kill(pid, signal) };
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit",
            child.id()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `switchboard serve` with only the line door.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(listen: &str) -> Result<Server, String> {
        let mut child = isolated(support::serve_command(&["--line", listen], "off"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("stdout");
        let (found, listening) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(("line", place)) = support::listening(&line) {
                    let _ = found.send(place.to_owned());
                }
            }
        });
        match listening.recv_timeout(TIMEOUT) {
            Ok(addr) => Ok(Server {
                child,
                addr: addr.parse().expect("listening address"),
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                Err(format!("server on {listen} did not start ({status})"))
            }
        }
    }

    /// Start on a given address, which a previous server just released.
    fn restart_on(addr: SocketAddr) -> Server {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match Server::start(&addr.to_string()) {
                Ok(server) => return server,
                Err(why) if Instant::now() > deadline => panic!("{why}"),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGTERM: the graceful shutdown that says goodbye to every client.
    fn stop(&mut self) {
        send_signal(&self.child, libc::SIGTERM);
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "server exit: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchboard chat` in pipe mode: stdin and stdout are pipes.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Chat {
    fn start(args: &[&str]) -> Chat {
        let mut child = binary()
            .arg("chat")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the client");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stderr_pipe.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..read]);
                collected.lock().unwrap().push_str(&text);
            }
        });
        Chat {
            stdin: child.stdin.take(),
            child,
            stdout: lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the client's stdin");
        stdin.flush().expect("flush");
    }

    /// Wait for a stdout line containing `text`; returns it.
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stdout line containing {text:?}; saw {:?}; stderr {:?}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `text`.
    fn expect_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stderr = self.stderr();
            if stderr.contains(text) {
                return stderr;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never contained {text:?}: {stderr:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the exit; returns the status and everything written to stderr.
    fn exit(&mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child);
        // The stderr reader finishes at end of pipe, right after the exit.
        let deadline = Instant::now() + TIMEOUT;
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        (status, self.stderr())
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain TCP peer speaking the line protocol, as netcat would.
struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    fn join(addr: SocketAddr, name: &str) -> Peer {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut peer = Peer {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        };
        let mut prompt = Vec::new();
        while !prompt.ends_with(NAME_PROMPT.as_bytes()) {
            let mut byte = [0u8; 1];
            peer.reader.read_exact(&mut byte).expect("read the prompt");
            prompt.push(byte[0]);
        }
        peer.say(name);
        peer.expect(&format!("*** welcome, {name}!"));
        peer
    }

    fn say(&mut self, line: &str) {
        writeln!(self.writer, "{line}").expect("send");
    }

    fn expect(&mut self, text: &str) -> String {
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => panic!("peer: no line containing {text:?}; saw {seen:?}"),
                Ok(_) => {}
            }
            if line.contains(text) {
                return line;
            }
            seen.push(line);
        }
    }
}

#[test]
fn pipe_mode_carries_lines_both_ways_and_q_exits_zero() {
    let server = Server::start("127.0.0.1:0").unwrap();
    let mut bob = Chat::start(&[&server.addr.to_string(), "--nick", "bob"]);
    bob.expect("*** welcome, bob!");
    bob.expect("*** bob joined #general");
    let mut alice = Peer::join(server.addr, "alice");
    bob.expect("*** alice joined #general");

    alice.say("hi bob");
    assert_eq!(bob.expect("hi bob"), "[alice] hi bob");
    bob.send("hello alice");
    alice.expect("[bob] hello alice");
    // Slash commands go to the server.
    bob.send("/msg alice psst");
    alice.expect("[bob -> alice] psst");

    // stdin stays open: the exit comes from /q alone.
    bob.send("/q");
    let (status, stderr) = bob.exit();
    assert!(status.success(), "exit {status}, stderr {stderr:?}");
    let left = alice.expect("*** bob left #general");
    assert_eq!(left.trim_end(), "*** bob left #general (quit)");
}

#[test]
fn pipe_mode_takes_the_name_from_the_first_line_and_quits_at_end_of_input() {
    let server = Server::start("127.0.0.1:0").unwrap();
    let mut alice = Peer::join(server.addr, "alice");
    let mut carol = Chat::start(&[&server.addr.to_string()]);
    carol.send("carol");
    carol.expect("*** welcome, carol!");
    carol.send("one line and done");
    drop(carol.stdin.take());
    alice.expect("[carol] one line and done");
    let (status, stderr) = carol.exit();
    assert!(status.success(), "exit {status}, stderr {stderr:?}");
    let left = alice.expect("*** carol left #general");
    assert_eq!(left.trim_end(), "*** carol left #general (quit)");
}

#[test]
fn sigterm_in_pipe_mode_quits_politely() {
    let server = Server::start("127.0.0.1:0").unwrap();
    let mut alice = Peer::join(server.addr, "alice");
    let mut henry = Chat::start(&[&server.addr.to_string(), "--nick", "henry"]);
    henry.expect("*** welcome, henry!");
    alice.expect("*** henry joined #general");
    send_signal(&henry.child, libc::SIGTERM);
    let (status, stderr) = henry.exit();
    assert!(status.success(), "exit {status}, stderr {stderr:?}");
    // A quit, not a dropped connection.
    let left = alice.expect("*** henry left #general");
    assert_eq!(left.trim_end(), "*** henry left #general (quit)");
}

#[test]
fn a_refused_name_in_pipe_mode_exits_non_zero_with_the_reason() {
    let server = Server::start("127.0.0.1:0").unwrap();
    let _dave = Peer::join(server.addr, "dave");
    let mut second = Chat::start(&[&server.addr.to_string(), "--nick", "Dave"]);
    let (status, stderr) = second.exit();
    assert!(!status.success());
    assert!(
        stderr.contains("refused the name \"Dave\"") && stderr.contains("already in use"),
        "{stderr:?}"
    );
}

#[test]
fn connection_refused_is_a_clear_error() {
    // A port that was just free: nothing listens there now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut chat = Chat::start(&[&addr.to_string(), "--nick", "x"]);
    let (status, stderr) = chat.exit();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot connect to {addr}")) && stderr.contains("refused"),
        "{stderr:?}"
    );
}

#[test]
fn a_lost_connection_is_reported_and_exits_non_zero() {
    let mut server = Server::start("127.0.0.1:0").unwrap();
    let mut erin = Chat::start(&[&server.addr.to_string(), "--nick", "erin"]);
    erin.expect("*** welcome, erin!");
    server.stop();
    // The server's goodbye is shown, then the loss is reported.
    erin.expect("server shutting down");
    let (status, stderr) = erin.exit();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("connection to {} lost", server.addr))
            && stderr.contains("the server closed the connection"),
        "{stderr:?}"
    );
}

#[test]
fn reconnect_signs_in_again_after_the_server_restarts() {
    let mut server = Server::start("127.0.0.1:0").unwrap();
    let addr = server.addr;
    let mut frank = Chat::start(&[&addr.to_string(), "--nick", "frank", "--reconnect"]);
    frank.expect("*** welcome, frank!");
    frank.send("/nick franky");
    frank.expect("*** frank is now known as franky");
    server.stop();
    frank.expect_stderr("*** connection lost: the server closed the connection; reconnecting in");
    // Piped lines wait while the client is away, and go out once it is back.
    frank.send("written while away");

    let server = Server::restart_on(addr);
    // Signed in again under the current name.
    frank.expect("*** welcome, franky!");
    frank.expect("[franky] written while away");
    frank.expect_stderr(&format!("*** connected to {addr}"));
    let mut grace = Peer::join(server.addr, "grace");
    frank.send("back again");
    grace.expect("[franky] back again");
    frank.send("/quit");
    let (status, stderr) = frank.exit();
    assert!(status.success(), "exit {status}, stderr {stderr:?}");
}

// ---------------------------------------------------------------------------------
// Interactive mode under a pseudo-terminal.

/// The controlling side of a pty, with everything the client wrote to it collected.
struct Pty {
    master: std::fs::File,
    /// Kept open so the terminal settings can be inspected after the client exits.
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn open() -> Pty {
        let mut master = -1;
        let mut slave = -1;
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills in two new descriptors we then own.
        let result = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(result, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("clone master");
        let collected = output.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read) = reader.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                collected.lock().unwrap().extend_from_slice(&chunk[..read]);
            }
        });
        Pty {
            master,
            slave,
            output,
        }
    }

    /// Run the client with the pty as its controlling terminal and stdio.
    fn spawn(&self, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt as _;
        let stdio = || Stdio::from(self.slave.try_clone().expect("clone slave"));
        let mut command = binary();
        command
            .arg("chat")
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().expect("start the client on the pty")
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
        self.master.flush().expect("flush");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Wait until the screen output after byte `from` contains `text`; returns where
    /// that occurrence ends.
    fn expect(&self, from: usize, text: &str) -> usize {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let output = self.text();
            if let Some(at) = output.get(from..).and_then(|rest| rest.find(text)) {
                return from + at + text.len();
            }
            assert!(
                Instant::now() < deadline,
                "terminal never showed {text:?}; it shows {output:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the terminal is in canonical mode with echo (as a shell expects it).
    fn cooked(&self) -> bool {
        // SAFETY: tcgetattr fills a plain struct from an open descriptor.
        let mut settings: libc::termios = unsafe { std::mem::zeroed() };
        let result = unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut settings) };
        assert_eq!(result, 0, "tcgetattr");
        settings.c_lflag & libc::ICANON != 0 && settings.c_lflag & libc::ECHO != 0
    }
}

#[test]
fn terminal_mode_shows_incoming_lines_while_the_user_types() {
    let server = Server::start("127.0.0.1:0").unwrap();
    let mut alice = Peer::join(server.addr, "alice");
    let mut pty = Pty::open();
    assert!(pty.cooked());
    let mut client = pty.spawn(&[&server.addr.to_string()]);

    // No --nick: the client shows the server's prompt and the user types a name.
    let at = pty.expect(0, NAME_PROMPT);
    pty.type_keys("typist\r");
    let at = pty.expect(at, "*** welcome, typist!");
    alice.expect("*** typist joined #general");
    assert!(!pty.cooked(), "the client runs the terminal in raw mode");

    // Half a line typed, then a message arrives: it is printed, and the half line is
    // drawn again below it, still editable.
    pty.type_keys("half typed");
    let at = pty.expect(at, "half typed");
    alice.say("hi from alice");
    let at = pty.expect(at, "[alice] hi from alice");
    let at = pty.expect(at, "half typed");
    pty.type_keys(" line\r");
    alice.expect("[typist] half typed line");
    let at = pty.expect(at, "[typist] half typed line");

    // Editing: arrows, Home, Ctrl-U, Ctrl-W, and history recall with Up.
    pty.type_keys("hello wrld\x1b[D\x1b[D\x1b[Do\r");
    alice.expect("[typist] hello world");
    pty.type_keys("garbage\x15clean\r");
    alice.expect("[typist] clean");
    pty.type_keys("one two\x17three\x01>\r");
    alice.expect("[typist] >one three");
    pty.type_keys("\x1b[A\x1b[A\x1b[A\x05!\r");
    alice.expect("[typist] hello world!");
    pty.expect(at, "[typist] hello world!");

    eprintln!("SCREEN {:?}", pty.text());
    // Ctrl-D on an empty line quits: exit 0, terminal back in cooked mode.
    pty.type_keys("\x04");
    let status = wait_exit(&mut client);
    assert!(status.success(), "exit {status}; screen {:?}", pty.text());
    let left = alice.expect("*** typist left #general");
    assert_eq!(left.trim_end(), "*** typist left #general (quit)");
    assert!(pty.cooked(), "the terminal was restored");
}

#[test]
fn terminal_mode_refused_name_lets_the_user_type_another() {
    let server = Server::start("127.0.0.1:0").unwrap();
    let mut alice = Peer::join(server.addr, "alice");
    let mut pty = Pty::open();
    let mut client = pty.spawn(&[&server.addr.to_string(), "--nick", "ALICE"]);
    let at = pty.expect(0, "error: cannot use that name: the name is already in use");
    let at = pty.expect(at, NAME_PROMPT);
    pty.type_keys("alice2\r");
    pty.expect(at, "*** welcome, alice2!");
    alice.expect("*** alice2 joined #general");
    // Ctrl-C quits too, and restores the terminal.
    pty.type_keys("\x03");
    let status = wait_exit(&mut client);
    assert!(status.success(), "exit {status}; screen {:?}", pty.text());
    assert!(pty.cooked());
}

#[test]
fn terminal_mode_reports_a_lost_connection_after_restoring_the_terminal() {
    let mut server = Server::start("127.0.0.1:0").unwrap();
    let mut pty = Pty::open();
    let mut client = pty.spawn(&[&server.addr.to_string(), "--nick", "ivy"]);
    let at = pty.expect(0, "*** welcome, ivy!");
    pty.type_keys("unsent draft");
    let at = pty.expect(at, "unsent draft");
    server.stop();
    let at = pty.expect(at, "*** server shutting down; goodbye");
    pty.expect(at, &format!("error: connection to {} lost", server.addr));
    let status = wait_exit(&mut client);
    assert!(!status.success(), "exit {status}; screen {:?}", pty.text());
    assert!(pty.cooked(), "the terminal was restored");
}
