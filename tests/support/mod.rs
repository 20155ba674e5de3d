//! The one test support module: how every integration test starts the server (every
//! chat door on 127.0.0.1 port 0 or off, history in memory) and talks to it. `inproc`
//! runs it in the test's process (`InProcess` on the test's runtime, `Background` on
//! threads of its own for blocking clients), as every test does unless it needs a
//! process of its own: signals or a kill, stdout, stderr or logs, the exit status,
//! another subcommand, or process-wide state (environment, working directory, memory,
//! descriptors). Those start the `switchboard` binary and read where it listens:
//! `blocking::Server`, beside the std clients, or `web::Server`, beside the tokio ones
//! (line, JSON, WebSocket, HTTP). Any client talks to either kind of server.
#![allow(dead_code, unused_imports)]

pub mod blocking;
pub mod device;
pub mod inproc;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Generous bound for anything the server should do promptly; only there to stop a
/// broken server from hanging the suite, never to measure speed.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Every chat door's flag. A test server gets each one it does not name either on
/// 127.0.0.1 port 0 or off, never its default: defaults are fixed ports on every
/// interface, and parallel tests must not fight over them.
pub const CHAT_DOORS: [&str; 5] = ["--line", "--json", "--web", "--irc", "--udp"];

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

pub fn seeds_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds");
    assert!(
        dir.join("README.md").exists(),
        "the seed programs are expected at {}",
        dir.display()
    );
    dir
}

/// `switchboard serve` with `args`, every chat door `args` does not name set to
/// `unnamed_doors` (`"127.0.0.1:0"` or `"off"`), and history in memory unless `args`
/// name a place for it, so parallel tests never share a data directory.
pub fn serve_command(args: &[&str], unnamed_doors: &str) -> Command {
    let mut command = Command::new(binary());
    command.arg("serve");
    for door in CHAT_DOORS {
        if !args.contains(&door) {
            command.args([door, unnamed_doors]);
        }
    }
    if !args
        .iter()
        .any(|arg| *arg == "--data" || *arg == "--memory")
    {
        command.arg("--memory");
    }
    command.args(args);
    command
}

/// A startup line `NAME: listening on WHERE` (chat doors, web URLs and service
/// sockets alike): the name and where, as printed.
pub fn listening(line: &str) -> Option<(&str, &str)> {
    let (name, place) = line.trim().split_once(": listening on ")?;
    Some((name, place.trim()))
}

/// The socket address in what a listening line says (a web door's URL included).
pub fn socket_addr(place: &str) -> Option<SocketAddr> {
    place
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .ok()
}
