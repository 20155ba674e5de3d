//! Wiring for `switchboard serve`: bind every listener, start the hub and the doors
//! inside one shutdown scope, and on shutdown stop accepting, let the hub say goodbye
//! and close every outbox, then wait (bounded) for every connection task to finish.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::door::json::codec::JsonRender;
use crate::door::line::LineSettings;
use crate::door::listen::{self, DoorKind, Doors, Listener};
use crate::door::session::SessionSettings;
use crate::door::web::ws::{WsLimits, WsRender};
use crate::door::web::WebDoor;
use crate::door::ConnectionSlots;
use crate::hub::{self, Command, HistoryBackend, HubConfig};
use crate::metrics::Metrics;
use crate::store::{Store, StoreDone, StoreError};

/// A listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {door} door: {cause}{hint}")]
pub struct BindError {
    pub door: &'static str,
    pub addr: SocketAddr,
    pub cause: std::io::Error,
    hint: String,
}

/// The words that go with a bind failure, naming the flag that picks another address.
fn bind_error(
    door: &'static str,
    flag: &'static str,
    addr: SocketAddr,
    cause: std::io::Error,
) -> BindError {
    let hint = match cause.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another program uses it; stop it or pick another address with "
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges; pick another with "
        }
        std::io::ErrorKind::AddrNotAvailable => " (no such local address; pick another with ",
        _ => " (pick another address with ",
    };
    BindError {
        door,
        addr,
        cause,
        hint: format!("{hint}{flag} ADDR, or {flag} off)"),
    }
}

async fn bind(
    door: &'static str,
    flag: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| bind_error(door, flag, addr, cause))?;
    if let Err(error) = crate::door::tune_listener(&listener) {
        tracing::warn!(%error, "{door}: cannot set TCP_NODELAY/keepalive on {addr}; continuing without");
    }
    Ok(listener)
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    config: Config,
    /// The door list, each with its bound socket.
    listeners: Vec<(Listener, TcpListener)>,
    metrics: Metrics,
    /// The opened history database (`None` with `--memory`).
    store: Option<Store>,
    /// Accounts, in the history database (in memory with `--memory`).
    accounts: Accounts,
    /// The UDP door's socket (`None`: `--udp off`).
    udp: Option<tokio::net::UdpSocket>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    History(#[from] StoreError),
    #[error("{0}")]
    Accounts(String),
}

/// Open the history database named by `config`, off the async threads (it reads the
/// recent tail of every room). `None` with `--memory`.
pub async fn open_history(config: &Config) -> Result<Option<Store>, StoreError> {
    let Some(dir) = config.data.clone() else {
        return Ok(None);
    };
    let retention = config.retention;
    let tail = hub::history::tail_per_room(config.replay, true);
    tokio::task::spawn_blocking(move || Store::open(&dir, retention, tail))
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Database {
                path: config.data.clone().unwrap_or_default(),
                cause: format!("opening it panicked: {join}"),
                hint: "",
            })
        })
        .map(Some)
}

impl Server {
    /// Open the history, then bind every configured listener; nothing is served until
    /// [`Server::run`]. History comes first so a server that cannot keep its history
    /// never appears to be listening.
    /// What startup says about the server operators: who they are, and a warning for
    /// each name that is not an account yet (whoever registers it first becomes an
    /// operator).
    pub fn operator_notes(&self) -> Vec<String> {
        if self.config.operators.is_empty() {
            return Vec::new();
        }
        let registered: std::collections::HashSet<String> = self
            .accounts
            .registered()
            .unwrap_or_default()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let mut notes = vec![format!("operators: {}", self.config.operators.join(", "))];
        for name in &self.config.operators {
            if !registered.contains(&crate::text::nick_key(name)) {
                notes.push(format!(
                    "warning: operator {name} is not a registered account yet; register it \
                     now (/register PASSWORD as {name}): until then whoever registers it \
                     first is a server operator"
                ));
            }
        }
        notes
    }

    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let store = open_history(&config).await?;
        let metrics = Metrics::new();
        let path = store.as_ref().map(|store| store.path().to_path_buf());
        let account_metrics = metrics.accounts();
        let accounts =
            tokio::task::spawn_blocking(move || Accounts::open(path.as_deref(), account_metrics))
                .await
                .unwrap_or_else(|join| Err(format!("opening the accounts panicked: {join}")))
                .map_err(StartError::Accounts)?;
        let mut listeners = Vec::new();
        for spec in listen::listeners(&config) {
            let socket = bind(spec.name(), spec.flag(), spec.addr).await?;
            listeners.push((spec, socket));
        }
        let udp = match config.udp {
            Some(addr) => {
                let socket = tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|cause| bind_error("udp", "--udp", addr, cause))?;
                // Room for bursts while the door's task is busy: what does not fit is
                // dropped by the kernel, uncounted (the system caps it at
                // net.core.rmem_max).
                if let Err(error) =
                    socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER)
                {
                    tracing::warn!(%error, "udp: cannot enlarge the receive buffer; continuing");
                }
                Some(socket)
            }
            None => None,
        };
        Ok(Server {
            config,
            listeners,
            store,
            metrics,
            accounts,
            udp,
        })
    }

    /// Each stream door's name and the address it really listens on (port 0
    /// resolved); the web door is [`Server::web_url`].
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        let udp = self
            .udp
            .as_ref()
            .and_then(|socket| socket.local_addr().ok());
        self.listeners
            .iter()
            .filter(|(spec, _)| spec.kind != DoorKind::Web)
            .filter_map(|(spec, socket)| Some((spec.name(), socket.local_addr().ok()?)))
            .chain(udp.map(|addr| ("udp", addr)))
            .collect()
    }

    /// The web door's URL (`https` with TLS), with the port it really listens on.
    pub fn web_url(&self) -> Option<String> {
        let (spec, socket) = self
            .listeners
            .iter()
            .find(|(spec, _)| spec.kind == DoorKind::Web)?;
        let addr = socket.local_addr().ok()?;
        let scheme = if spec.tls { "https" } else { "http" };
        Some(format!("{scheme}://{addr}/"))
    }

    /// This server's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serve until `shutdown` is cancelled, then shut down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let config = self.config;
        let tracker = TaskTracker::new();
        let (history, store_done): (HistoryBackend, Option<StoreDone>) = match self.store {
            Some(store) => {
                let (done, store_done) = crate::store::done_pair();
                (
                    HistoryBackend::Stored {
                        store: Box::new(store),
                        done,
                    },
                    Some(store_done),
                )
            }
            None => (HistoryBackend::Memory, None),
        };
        let hub = hub::spawn(
            HubConfig {
                default_room: config.default_room.clone(),
                replay: config.replay,
                retention: config.retention,
                metrics: self.metrics.hub(),
                flush_interval: config.flush_interval,
                accounts: Some(self.accounts.clone()),
                operators: config
                    .operators
                    .iter()
                    .map(|name| crate::text::nick_key(name))
                    .collect(),
                command_timeout: config.command_timeout,
                ..HubConfig::default()
            },
            history,
            &tracker,
        )?;
        let slots = ConnectionSlots::new(config.max_clients, config.max_clients_per_ip);
        let doors = Arc::new(build_doors(
            &config,
            &hub,
            &self.accounts,
            &slots,
            &self.metrics,
            &self.listeners,
            &shutdown,
            &tracker,
        ));
        for (spec, socket) in self.listeners {
            tracker.spawn(listen::serve(
                spec,
                socket,
                doors.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        drop(doors);
        if let Some(socket) = self.udp {
            let settings = crate::door::udp::UdpSettings {
                max_datagram_bytes: config.udp_max_bytes,
                idle: config.udp_idle,
                device_rate: config.udp_device_rate,
                command_timeout: config.command_timeout,
                max_queue_bytes: config.max_queue_bytes,
            };
            tracker.spawn(crate::door::udp::serve(
                socket,
                hub.clone(),
                self.accounts.clone(),
                settings,
                self.metrics.udp(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracker.spawn(return_freed_memory(shutdown.clone()));

        shutdown.cancelled().await;
        tracing::info!(
            connections = slots.in_use(),
            "shutting down: telling every client"
        );
        // The hub sends the goodbye notice and closes every outbox; each connection
        // task flushes its goodbye and closes.
        let _ = hub.send(Command::Shutdown).await;
        drop(hub);
        tracker.close();
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = slots.in_use(),
                "shutdown grace of {:?} over; closing the remaining connections",
                config.shutdown_grace
            );
        }
        // The hub has stopped and dropped its end of the store: the writer commits what
        // it still holds, then stops. Messages delivered are already on disk; this
        // keeps the ones that were in flight.
        if let Some(store_done) = store_done {
            if tokio::time::timeout(STORE_CLOSE_TIMEOUT, store_done.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    "the history writer did not finish within {STORE_CLOSE_TIMEOUT:?}; \
                     messages still in flight (never delivered) may be lost"
                );
            }
        }
        Ok(())
    }
}

/// The UDP door's socket receive buffer asked for.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// How long shutdown waits for the history writer to commit what it holds.
const STORE_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Build every door the listeners lead to, and start the web door's HTTP server when
/// it has a listener.
// Each argument is a different piece of the running server the doors share; a struct
// holding them would only be built here.
#[allow(clippy::too_many_arguments)]
fn build_doors(
    config: &Config,
    hub: &hub::HubHandle,
    accounts: &Accounts,
    slots: &Arc<ConnectionSlots>,
    metrics: &Metrics,
    listeners: &[(Listener, TcpListener)],
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Doors {
    let session = SessionSettings {
        max_queue_bytes: config.max_queue_bytes,
        register_timeout: config.register_timeout,
        idle_timeout: config.idle_timeout,
        flood: config.flood,
        accounts: Some(accounts.clone()),
    };
    let line = crate::door::line::door(
        hub.clone(),
        session.clone(),
        LineSettings {
            max_line_bytes: config.max_line_bytes,
            default_room: config.default_room.clone(),
        },
        metrics.door("line"),
    );
    // The JSON doors keep their connections however long they are quiet (devices
    // report rarely); the WebSocket keepalive finds dead peers there.
    let json_session = SessionSettings {
        idle_timeout: None,
        ..session.clone()
    };
    let json = crate::door::json::door(
        "json",
        hub.clone(),
        json_session.clone(),
        config.max_json_bytes,
        metrics.door("json"),
        JsonRender::new(),
    );
    let web = listeners
        .iter()
        .find(|(spec, _)| spec.kind == DoorKind::Web)
        .and_then(|(_, socket)| socket.local_addr().ok())
        .map(|local| {
            let ws = crate::door::json::door(
                "ws",
                hub.clone(),
                json_session,
                config.max_json_bytes,
                metrics.door("ws"),
                WsRender::new(),
            );
            let limits = WsLimits {
                max_message_bytes: config.max_json_bytes,
                ping_interval: config.ws_ping_interval,
                idle_timeout: config.ws_ping_interval * 3,
                origins: config.ws_origins.clone(),
                certificate: config.tls.as_ref().map(|tls| tls.leaf.clone()),
            };
            WebDoor::new(
                Arc::new(ws),
                metrics.clone(),
                limits,
                shutdown.clone(),
                tracker.clone(),
            )
            .start(local)
        });
    let irc_settings = crate::door::irc::IrcSettings {
        motd: config.irc_motd.clone(),
        password: config.irc_password.clone(),
    };
    let irc = crate::door::irc::door(hub.clone(), session, metrics.door("irc"), irc_settings);
    Doors {
        line: Arc::new(line),
        json: Arc::new(json),
        irc: Arc::new(irc),
        web,
        slots: slots.clone(),
        metrics: metrics.clone(),
        tls: config.tls.clone(),
        handshake_timeout: config.tls_handshake_timeout,
        http_header_timeout: config.http_header_timeout,
    }
}

/// How often freed heap memory is handed back to the operating system.
const RETURN_FREED_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Hand freed heap memory back every few seconds (see [`crate::memory`]), off the async
/// threads.
async fn return_freed_memory(shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETURN_FREED_MEMORY_EVERY) => {}
        }
        let _ = tokio::task::spawn_blocking(crate::memory::return_freed_memory).await;
    }
}

/// Raise the soft open-files limit to the hard limit so the server can hold as many
/// connections as the system allows. Returns (before, after) when it changed.
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return None;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return None;
        }
        Some((before, limit.rlim_cur))
    }
}

/// SIGINT (Ctrl+C) and SIGTERM handlers, installed when this is created so a signal
/// that arrives right after startup is never missed (or fatal).
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Resolve at the first SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolve when the process gets SIGINT (Ctrl+C) or SIGTERM.
pub async fn shutdown_signal() {
    match ShutdownSignals::install() {
        Ok(mut signals) => signals.recv().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One startup or shutdown line on stdout, flushed. A stdout nobody reads any more
/// (`switchboard serve | head -1`) must not stop the server, as `println!` would by
/// panicking: the line is dropped, and the log on stderr still says everything.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Run the server as the `serve` command does: print where each door listens, serve
/// until a signal, shut down.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some((before, after)) = raise_fd_limit() {
        say(format_args!(
            "switchboard: raised the open-files limit from {before} to {after}"
        ));
    }
    let mut signals = ShutdownSignals::install()?;
    let server = Server::bind(config).await?;
    if let Some(store) = &server.store {
        say(format_args!("history: {}", store.path().display()));
    } else {
        say(format_args!("history: in memory only (--memory)"));
    }
    for (door, addr) in server.listening() {
        say(format_args!("{door}: listening on {addr}"));
    }
    if let Some(url) = server.web_url() {
        say(format_args!("web: listening on {url}"));
    }
    for line in server.operator_notes() {
        say(format_args!("{line}"));
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        signals.recv().await;
        signal.cancel();
    });
    server.run(shutdown).await?;
    say(format_args!("switchboard: stopped"));
    Ok(())
}
