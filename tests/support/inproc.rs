//! The server inside the test's own process: the library's `Server::bind` on port 0
//! and `Server::run` on the test's runtime, for tests that need no separate process
//! (no signals or kill, no output to read; a clean restart is `stop` then `start`).
//! Flags are the same as for [`super::serve_command`]: every chat door the test does
//! not name on 127.0.0.1 port 0, history in memory.

use std::collections::HashMap;
use std::net::SocketAddr;

use clap::Parser as _;
use switchboard::cli::{Cli, Command};
use switchboard::config::Config;
use switchboard::server::Server;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::blocking::LineClient;
use super::PATIENCE;

/// A running in-process server.
pub struct InProcess {
    /// Each listening door by name, as the binary would print them.
    pub doors: HashMap<&'static str, SocketAddr>,
    /// The web door's URL as the server gives it (`http://127.0.0.1:PORT/`).
    web_url: Option<String>,
    shutdown: CancellationToken,
    running: JoinHandle<Result<(), switchboard::store::StoreError>>,
}

impl InProcess {
    /// Bind and run `switchboard serve ARGS` (as the binary would parse them).
    pub async fn start(args: &[&str]) -> InProcess {
        let command = super::serve_command(args, "127.0.0.1:0");
        let argv = std::iter::once("switchboard".to_owned()).chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned()),
        );
        let Command::Serve(serve) = Cli::try_parse_from(argv).expect("valid flags").command else {
            unreachable!("serve_command builds a serve command")
        };
        let config = Config::from_args(serve).expect("a valid configuration");
        let server = Server::bind(config).await.expect("bound on port 0");
        let mut doors: HashMap<&'static str, SocketAddr> = server.listening().into_iter().collect();
        let web_url = server.web_url();
        if let Some(web) = web_url.as_deref().and_then(super::socket_addr) {
            doors.insert("web", web);
        }
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(server.run(shutdown.clone()));
        InProcess {
            doors,
            web_url,
            shutdown,
            running,
        }
    }

    /// Where a door listens (`web` as host:port).
    pub fn addr(&self, door: &str) -> SocketAddr {
        *self
            .doors
            .get(door)
            .unwrap_or_else(|| panic!("no {door} door in {:?}", self.doors))
    }

    /// The web door's URL (the only door with one).
    pub fn url(&self, door: &str) -> String {
        assert_eq!(door, "web", "only the web door has a URL");
        self.web_url.clone().expect("the web door is on")
    }

    /// `/metrics` from the web door, checked to be a 200 (as [`super::web::Server::metrics`]).
    pub async fn metrics(&self) -> String {
        let addr = self.addr("web");
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (status, text) = super::web::http_get(stream, &addr.to_string(), "/metrics").await;
        assert_eq!(status, 200);
        text
    }

    /// Shut down as on SIGTERM and wait for the server to finish cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.running)
            .await
            .expect("the server stopped in time")
            .expect("the server task did not panic")
            .expect("the server stopped cleanly");
    }
}

/// [`InProcess`] for blocking tests (std sockets): the server runs on a runtime of its
/// own, on two worker threads, so a test's blocking reads never stall it; dropped, it
/// shuts down cleanly.
pub struct Background {
    server: Option<InProcess>,
    runtime: tokio::runtime::Runtime,
}

impl Background {
    /// [`InProcess::start`] on a runtime of its own.
    pub fn start(args: &[&str]) -> Background {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let server = runtime.block_on(InProcess::start(args));
        Background {
            server: Some(server),
            runtime,
        }
    }

    pub fn line_addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr("line")
    }

    /// Shut down and wait for a clean stop, as dropping does.
    pub fn stop(self) {}

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

impl Drop for Background {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        // A failing test is already panicking: a second panic here would abort and
        // hide its message, so only a passing test checks the shutdown.
        if !std::thread::panicking() {
            self.runtime.block_on(server.stop());
        }
    }
}
