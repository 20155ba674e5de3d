//! Async (tokio) clients (line, JSON, WebSocket, HTTP) for either kind of server, and
//! a handle on the real binary for async tests that need one: start it with every
//! door on port 0, read the addresses it prints (and its log, if asked), stop it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;

/// Generous: only to turn a hang into a failure.
pub const WAIT: Duration = super::PATIENCE;

pub struct Server {
    pub child: Child,
    pub doors: HashMap<String, String>,
    stdout: BufReader<ChildStdout>,
    /// What the server logged, when started with [`Server::start_logged`].
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Start `switchboard serve` with every door on 127.0.0.1:0 plus `extra` flags, and
    /// wait until it has printed where each door in `doors` listens.
    pub async fn start(extra: &[&str], doors: &[&str]) -> Server {
        Server::launch(extra, doors, None).await
    }

    /// [`Server::start`], keeping what the server logs at `filter` (a `RUST_LOG`
    /// value) for [`Server::log`].
    pub async fn start_logged(extra: &[&str], doors: &[&str], filter: &str) -> Server {
        Server::launch(extra, doors, Some(filter)).await
    }

    /// Everything logged so far (with [`Server::start_logged`]).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn launch(extra: &[&str], doors: &[&str], log_filter: Option<&str>) -> Server {
        let mut command = Command::from(super::serve_command(extra, "127.0.0.1:0"));
        command
            .env("RUST_LOG", log_filter.unwrap_or("warn"))
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if log_filter.is_some() {
            command.stderr(Stdio::piped());
        }
        let mut child = command.spawn().expect("start the server");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut found = HashMap::new();
        let mut line = String::new();
        while doors.iter().any(|door| !found.contains_key(*door)) {
            line.clear();
            let read = tokio::time::timeout(WAIT, stdout.read_line(&mut line))
                .await
                .expect("server printed its doors in time")
                .unwrap();
            assert!(
                read > 0,
                "server exited before printing every door: {found:?}"
            );
            if let Some((door, place)) = super::listening(&line) {
                found.insert(door.to_owned(), place.to_owned());
            }
        }
        Server {
            child,
            doors: found,
            stdout,
            log,
        }
    }

    /// The address a door listens on (`web` gives host:port without the scheme).
    /// `/metrics` from the web door, checked to be a 200.
    pub async fn metrics(&self) -> String {
        let addr = self.addr("web");
        let stream = TcpStream::connect(addr).await.unwrap();
        let (status, text) = http_get(stream, &addr.to_string(), "/metrics").await;
        assert_eq!(status, 200);
        text
    }

    pub fn addr(&self, door: &str) -> SocketAddr {
        super::socket_addr(&self.doors[door]).expect("a door's address")
    }

    pub fn url(&self, door: &str) -> String {
        self.doors[door].clone()
    }

    /// SIGTERM, then wait for a clean exit; returns the rest of stdout.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: sending a signal to our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("server stopped in time")
            .unwrap();
        let mut rest = String::new();
        let _ = tokio::time::timeout(WAIT, async {
            let mut line = String::new();
            while self.stdout.read_line(&mut line).await.unwrap_or(0) > 0 {
                rest.push_str(&line);
                line.clear();
            }
        })
        .await;
        assert!(status.success(), "server exit status {status}");
        rest
    }
}

/// A newline-delimited client: line door (text) or JSON door (JSON values).
pub struct Lines<S> {
    reader: BufReader<S>,
}

impl Lines<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        Lines::new(TcpStream::connect(addr).await.unwrap())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    pub fn new(stream: S) -> Self {
        Lines {
            reader: BufReader::new(stream),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
        self.reader.get_mut().flush().await.unwrap();
    }

    /// Send without panicking; false once the server has closed the connection.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.reader.get_mut().write_all(bytes).await.is_ok()
    }

    pub async fn send_line(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_line(&value.to_string()).await;
    }

    /// The next line, without its newline; `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let read = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .expect("a line arrived in time")
            .unwrap_or(0);
        (read > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Read lines until one contains `needle`; returns it.
    pub async fn line_containing(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .line()
                .await
                .unwrap_or_else(|| panic!("EOF before a line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub async fn json(&mut self) -> Value {
        let line = self.line().await.expect("a JSON line, not EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Read JSON lines until one has `"type": kind`; returns it.
    pub async fn json_of_type(&mut self, kind: &str) -> Value {
        loop {
            let value = self.json().await;
            if value["type"] == kind {
                return value;
            }
        }
    }
}

impl Lines<TcpStream> {
    /// Log in on the line door: answer the name prompt, read the welcome.
    pub async fn line_login(addr: SocketAddr, nick: &str) -> Lines<TcpStream> {
        let mut client = Lines::connect(addr).await;
        client.send_line(nick).await;
        client.line_containing("welcome").await;
        client
    }

    /// A line-door user who registers `nick` (password `NICK's password`) and is
    /// signed in when this returns.
    pub async fn line_account(addr: SocketAddr, nick: &str) -> Lines<TcpStream> {
        let mut client = Lines::line_login(addr, nick).await;
        client
            .send_line(&format!("/register {nick}'s password"))
            .await;
        client.line_containing("is registered to you").await;
        client
    }

    /// A line-door user who logs in to `nick`'s account (made by `line_account`).
    pub async fn account_login(addr: SocketAddr, nick: &str) -> Lines<TcpStream> {
        let mut client = Lines::connect(addr).await;
        client.send_line(&format!("{nick} {nick}'s password")).await;
        client.line_containing("you are logged in as").await;
        client
    }

    /// Log in on the JSON door; returns the client and its welcome.
    pub async fn json_login(addr: SocketAddr, nick: &str) -> (Lines<TcpStream>, Value) {
        let mut client = Lines::connect(addr).await;
        client
            .send_json(serde_json::json!({"type": "nick", "nick": nick}))
            .await;
        let welcome = client.json_of_type("welcome").await;
        client.json_of_type("joined").await;
        (client, welcome)
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket JSON client (over plain TCP unless built from another stream).
pub struct Ws<S = tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    pub stream: tokio_tungstenite::WebSocketStream<S>,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket connected in time")
            .expect("WebSocket handshake");
        Ws { stream }
    }

    pub async fn login(url: &str, nick: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(url).await;
        ws.send(serde_json::json!({"type": "nick", "nick": nick}))
            .await;
        let welcome = ws.of_type("welcome").await;
        ws.of_type("joined").await;
        (ws, welcome)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .unwrap();
    }

    /// The next message of any kind (pings included); `None` when the stream ended.
    pub async fn message(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.stream.next())
            .await
            .expect("a WebSocket message in time")
            .and_then(Result::ok)
    }

    /// The next JSON text message.
    pub async fn json(&mut self) -> Value {
        loop {
            match self.message().await.expect("a message, not the end") {
                Message::Text(text) => {
                    assert!(!text.contains('\n'), "one object per frame: {text:?}");
                    return serde_json::from_str(&text).unwrap();
                }
                Message::Close(frame) => panic!("closed while waiting for JSON: {frame:?}"),
                _ => continue,
            }
        }
    }

    pub async fn of_type(&mut self, kind: &str) -> Value {
        loop {
            let value = self.json().await;
            if value["type"] == kind {
                return value;
            }
        }
    }
}

/// A self-signed certificate for `names`, its PEM files, and a client that trusts it.
pub struct Certificate {
    _dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub connector: tokio_rustls::TlsConnector,
}

impl Certificate {
    /// `--tls-cert FILE --tls-key FILE` for this certificate.
    pub fn flags(&self) -> [&str; 4] {
        let cert = self.cert.to_str().expect("a UTF-8 temporary path");
        let key = self.key.to_str().expect("a UTF-8 temporary path");
        ["--tls-cert", cert, "--tls-key", key]
    }
}

pub fn certificate(names: &[&str]) -> Certificate {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Certificate {
        _dir: dir,
        cert,
        key,
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    }
}

/// The value of one Prometheus series in `/metrics` text, e.g.
/// `switchboard_messages_in_total{door="ws"}`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// A plain HTTP/1.1 GET over any stream; returns (status, body).
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
    )
    .await
    .expect("HTTP response in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
