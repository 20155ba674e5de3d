//! `switchboard echo`: the classic socket services (echo per RFC 862, uppercase, random
//! reply) over TCP and UDP at once, inside one shutdown scope.
//!
//! [`mode`] decides what a message's answer is, `tcp` and `udp` move the bytes.

pub mod mode;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Seconds;
pub use mode::{Mode, Responder};
use tcp::TcpSettings;

/// Where the services listen when neither `--tcp` nor `--udp` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7777";
/// Pending connections the kernel queues before `accept`, for bursts of connects.
const LISTEN_BACKLOG: u32 = 4096;
/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const ECHO_AFTER_HELP: &str = "\
Messages on TCP: echo has none, bytes come back as they arrive. upper and random answer
each newline-terminated line (the reply ends with a newline) and, for clients that never
send a newline (the seed clients), each burst of bytes followed by a 40 ms pause (the
reply has no newline added). On UDP every datagram is one message and gets one datagram
back. At startup one line per socket is printed, e.g. `echo tcp: listening on
127.0.0.1:7777`. Ctrl+C or SIGTERM stops cleanly (exit 0).";

/// `switchboard echo` flags.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = ECHO_AFTER_HELP)]
pub struct EchoArgs {
    /// Serve TCP on this address (port 0 picks a free port) [default: 127.0.0.1:7777 when
    /// neither --tcp nor --udp is given; giving only --udp turns TCP off].
    #[arg(long, value_name = "ADDR")]
    pub tcp: Option<SocketAddr>,

    /// Serve UDP on this address (port 0 picks a free port) [default: 127.0.0.1:7777 when
    /// neither --tcp nor --udp is given; giving only --tcp turns UDP off].
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<SocketAddr>,

    /// What each message is answered with.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    pub mode: Mode,

    /// Replies for --mode random, one per line [default: the built-in list of the seed's
    /// server_multi.py].
    #[arg(long, value_name = "FILE")]
    pub replies: Option<PathBuf>,

    /// TCP: answer one message per connection, then close (the seed's tcp_upper.py
    /// server); without it every message is answered until the client closes.
    #[arg(long)]
    pub once: bool,

    /// TCP: close a connection after this long with nothing read or written (0 = never).
    #[arg(long, value_name = "DURATION", default_value = "300s")]
    pub idle_timeout: Seconds,

    /// TCP: most simultaneous connections; more are refused with an error line.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_clients: usize,

    /// TCP, upper and random: longest line or unframed message in bytes; longer ones are
    /// discarded with an error reply.
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// TCP: unsent output per connection above which the server stops reading from that
    /// connection until the client catches up.
    #[arg(long, value_name = "BYTES", default_value_t = 262_144)]
    pub max_pending_bytes: usize,
}

/// The services with their sockets bound, ready to run.
pub struct Services {
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    responder: Responder,
    settings: TcpSettings,
}

fn bind_hint(error: &std::io::Error, flag: &str) -> String {
    let why = match error.kind() {
        std::io::ErrorKind::AddrInUse => "another program uses it; ",
        std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges; ",
        std::io::ErrorKind::AddrNotAvailable => "no such local address; ",
        _ => "",
    };
    format!("{why}pick another address with {flag} ADDR")
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Services {
    /// Check the settings and bind the sockets; nothing is served until [`Services::run`].
    pub async fn bind(args: &EchoArgs) -> anyhow::Result<Services> {
        let (tcp_addr, udp_addr) = match (args.tcp, args.udp) {
            (None, None) => {
                let addr: SocketAddr = DEFAULT_ADDR.parse()?;
                (Some(addr), Some(addr))
            }
            chosen => chosen,
        };
        if args.max_clients == 0 {
            anyhow::bail!("--max-clients must be at least 1");
        }
        if args.max_message_bytes == 0 || args.max_pending_bytes == 0 {
            anyhow::bail!("--max-message-bytes and --max-pending-bytes must be at least 1");
        }
        let replies = match &args.replies {
            Some(path) => Some(mode::load_replies(path)?),
            None => None,
        };
        let tcp = match tcp_addr {
            Some(addr) => Some(bind_tcp(addr).map_err(|error| {
                let hint = bind_hint(&error, "--tcp");
                anyhow::Error::new(error).context(format!("cannot listen on TCP {addr} ({hint})"))
            })?),
            None => None,
        };
        let udp = match udp_addr {
            Some(addr) => Some(UdpSocket::bind(addr).await.map_err(|error| {
                let hint = bind_hint(&error, "--udp");
                anyhow::Error::new(error).context(format!("cannot listen on UDP {addr} ({hint})"))
            })?),
            None => None,
        };
        let idle_timeout = Some(args.idle_timeout.0).filter(|timeout| !timeout.is_zero());
        Ok(Services {
            tcp,
            udp,
            responder: Responder::new(args.mode, replies),
            settings: TcpSettings {
                max_clients: args.max_clients,
                idle_timeout,
                max_message_bytes: args.max_message_bytes,
                max_pending_bytes: args.max_pending_bytes,
                once: args.once,
            },
        })
    }

    /// Each protocol and the address it really listens on (port 0 resolved).
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut listening = Vec::new();
        if let Some(addr) = self.tcp.as_ref().and_then(|tcp| tcp.local_addr().ok()) {
            listening.push(("tcp", addr));
        }
        if let Some(addr) = self.udp.as_ref().and_then(|udp| udp.local_addr().ok()) {
            listening.push(("udp", addr));
        }
        listening
    }

    /// Serve until `shutdown` is cancelled, then stop accepting, let every connection
    /// flush what it owes (bounded), and return.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        if let Some(listener) = self.tcp {
            tracker.spawn(tcp::serve(
                listener,
                self.responder.clone(),
                self.settings,
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        if let Some(socket) = self.udp {
            tracker.spawn(udp::serve(socket, self.responder, shutdown.clone()));
        }
        shutdown.cancelled().await;
        tracing::info!("shutting down: flushing and closing every connection");
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown grace of {SHUTDOWN_GRACE:?} over; closing the remaining connections"
            );
        }
    }
}

/// Run the services as the `echo` command does: print where each listens, serve until
/// SIGINT or SIGTERM, shut down.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    if let Some((before, after)) = crate::server::raise_fd_limit() {
        tracing::debug!("raised the open-files limit from {before} to {after}");
    }
    // Handlers go in before the addresses are printed: a signal sent as soon as the
    // service is ready must stop it cleanly, not kill it.
    let shutdown = CancellationToken::new();
    let stop = stop_on_signal(shutdown.clone())?;
    let services = Services::bind(&args)
        .await
        .context("cannot start the services")?;
    println!("echo: mode {}", args.mode.as_str());
    for (protocol, addr) in services.listening() {
        println!("echo {protocol}: listening on {addr}");
    }
    let _ = std::io::stdout().flush();
    services.run(shutdown).await;
    stop.abort();
    println!("echo: stopped");
    Ok(())
}

/// Cancel `shutdown` on SIGINT (Ctrl+C) or SIGTERM. The handlers are installed before
/// this returns.
#[cfg(unix)]
fn stop_on_signal(shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        shutdown.cancel();
    }))
}

#[cfg(not(unix))]
fn stop_on_signal(shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        shutdown.cancel();
    }))
}
