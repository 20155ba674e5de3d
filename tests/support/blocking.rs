//! Blocking clients (std sockets) for plain (non-async) tests, and a handle on the
//! real binary for those that need one: start it, signal it, and always stop it (by
//! PID) when the test ends.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use super::{binary, seeds_dir, serve_command, PATIENCE};

/// A running server process.
pub struct Server {
    pub child: Child,
    /// Door name ("line", "json", ...) → bound address, from the "DOOR: listening on ADDR" lines.
    pub doors: HashMap<String, SocketAddr>,
    /// Everything printed on stdout after the listening lines.
    pub stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Start `switchboard serve` with the line door on port 0 plus `args` (other
    /// doors off unless `args` name them).
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// As [`Server::start`], with extra environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut named = args.to_vec();
        if !args.contains(&"--line") {
            named.extend(["--line", "127.0.0.1:0"]);
        }
        Self::spawn(serve_command(&named, "off"), env, &["line"])
    }

    /// Spawn `command`, wait until it has printed a listening line for each of `doors`.
    pub fn spawn(mut command: Command, env: &[(&str, &str)], doors: &[&str]) -> Server {
        command.env("RUST_LOG", "warn");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchboard");
        let stdout = child.stdout.take().expect("stdout piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut found = HashMap::new();
        let deadline = Instant::now() + PATIENCE;
        while doors.iter().any(|door| !found.contains_key(*door)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match receiver.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not print listening lines for {doors:?}; got {found:?}");
                }
            };
            if let Some((door, addr)) = super::listening(&line)
                .and_then(|(door, place)| Some((door, super::socket_addr(place)?)))
            {
                found.insert(door.to_string(), addr);
            }
        }
        Server {
            child,
            doors: found,
            stdout: receiver,
        }
    }

    pub fn line_addr(&self) -> SocketAddr {
        self.doors["line"]
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's PID.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(result, 0, "signal the server");
    }

    /// Wait for the process to exit, up to `PATIENCE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connect a raw line client.
    pub fn connect(&self) -> LineClient {
        LineClient::connect(self.line_addr())
    }

    /// Connect and register `nick`, waiting for the join notice.
    pub fn join(&self, nick: &str) -> LineClient {
        let mut client = self.connect();
        client.register(nick);
        client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub use libc::{SIGINT, SIGKILL, SIGTERM};

/// A raw TCP client of the line door, reading with a timeout.
pub struct LineClient {
    pub stream: TcpStream,
    /// Received and not yet consumed.
    pub buffer: Vec<u8>,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connect to the line door");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        LineClient {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Read more into the buffer; false on EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// Wait until the received text contains `needle`; return everything up to and
    /// including it (consumed). Panics with what arrived if it never does.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        // Where the search resumes: bytes before it were already searched.
        let mut searched = 0;
        loop {
            if let Some(at) = find(&self.buffer[searched..], needle.as_bytes()) {
                let end = searched + at + needle.len();
                let taken: Vec<u8> = self.buffer.drain(..end).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            searched = self.buffer.len().saturating_sub(needle.len());
            let open = self.fill();
            if !open || Instant::now() > deadline {
                panic!(
                    "expected {needle:?}; {} and got {:?}",
                    if open {
                        "timed out"
                    } else {
                        "connection closed"
                    },
                    String::from_utf8_lossy(&self.buffer)
                );
            }
        }
    }

    /// The next full line (without the newline).
    pub fn line(&mut self) -> String {
        let text = self.expect("\n");
        text.trim_end_matches('\n').to_string()
    }

    /// Lines until one contains `needle`; returns all of them, the matching one last.
    pub fn lines_until(&mut self, needle: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.contains(needle);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Register as `nick` and wait until this client sees its own join.
    pub fn register(&mut self, nick: &str) {
        self.expect("Enter your name: ");
        self.send_line(nick);
        self.expect(&format!("*** {nick} joined #general\n"));
    }

    /// Wait for the server to close the connection; returns what arrived before.
    pub fn expect_closed(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        while self.fill() {
            assert!(
                Instant::now() < deadline,
                "connection not closed; got {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned()
    }

    /// Nothing more arrives for `quiet` (used only to check something does NOT happen).
    pub fn assert_silent_for(&mut self, quiet: Duration) {
        let until = Instant::now() + quiet;
        while Instant::now() < until {
            self.fill();
        }
        assert!(
            self.buffer.is_empty(),
            "unexpected output: {:?}",
            String::from_utf8_lossy(&self.buffer)
        );
    }

    pub fn close_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Close with a reset (SO_LINGER 0), as a crashed peer would.
    pub fn reset(self) {
        let socket = socket2::SockRef::from(&self.stream);
        socket.set_linger(Some(Duration::ZERO)).expect("linger 0");
        drop(self);
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}
