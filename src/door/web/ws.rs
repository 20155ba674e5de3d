//! One WebSocket connection speaking the JSON protocol, one object per text frame, on
//! the same [`Conn`] pump as the stream doors.
//!
//! Hub events are framed once per event by [`WsRender`] (server frames are unmasked,
//! so every recipient can be sent the same bytes), and a recipient's queued frames go
//! out in one coalesced write. Input goes through the pure [`FrameReader`]. Pings,
//! pongs and the close frame are queued on the connection's own outbox between whole
//! frames; the close frame is the [`Conn`]'s farewell, sent after the last event.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::{Buf, Bytes};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::super::conn::{Conn, Farewell};
use super::super::flood::Stamp;
use super::super::json::codec::{JsonRender, OVERSIZE_HEAD_BYTES};
use super::super::json::JsonDoor;
#[cfg(test)]
use super::super::session::drive_conn;
use super::super::session::{drive, Framing, Unit};
use super::super::PeerSlot;
use super::frame::{
    close_payload, encode_frame, write_header, FrameError, FrameReader, WsFrame, MAX_HEADER_BYTES,
    OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
};
use crate::hub::{CloseReason, Event, Render};

/// WebSocket limits and keepalive.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Messages over this are refused with `line_too_long`; the connection stays.
    pub max_message_bytes: usize,
    /// A ping goes out this often.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Origins besides the server's own whose pages may open WebSockets (lowercase,
    /// no trailing slash; `*` allows any).
    pub origins: Vec<String>,
    /// The web door's certificate when it speaks TLS (its own pages' origin is then
    /// https), whose names count as the server's own.
    pub certificate: Option<CertificateDer<'static>>,
}

impl WsLimits {
    /// Messages up to twice the cap are read (and all but their head discarded), so an
    /// over-cap message is answered with its id; beyond that the socket is closed with
    /// 1009, since nobody sends that much by mistake.
    fn hard_max(&self) -> usize {
        self.max_message_bytes.saturating_mul(2).max(1024)
    }
}

/// Close codes (RFC 6455 section 7.4.1).
mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const SIZE: u16 = 1009;
    pub const ERROR: u16 = 1011;
    pub const AGAIN: u16 = 1013;
    /// Ours (4000-4999 are the application's): the account signed in from another
    /// connection. The page must not reconnect on its own, or two tabs would take
    /// the name from each other for ever.
    pub const REPLACED: u16 = 4001;
    /// A server operator disconnected this client: the page does not come straight
    /// back either.
    pub const KILLED: u16 = 4002;
    /// The device this client signed in as was removed: its token is gone too.
    pub const REVOKED: u16 = 4003;
}

/// A close frame's code for a reason.
fn close_code_for(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::ClientQuit | CloseReason::PeerClosed | CloseReason::LoggedOut => {
            close_code::NORMAL
        }
        CloseReason::Replaced => close_code::REPLACED,
        CloseReason::Killed => close_code::KILLED,
        CloseReason::Revoked => close_code::REVOKED,
        CloseReason::Shutdown | CloseReason::IdleTimeout | CloseReason::RegisterTimeout => {
            close_code::AWAY
        }
        CloseReason::LineTooLong => close_code::SIZE,
        CloseReason::BadInput => close_code::INVALID,
        CloseReason::ProtocolError => close_code::PROTOCOL,
        CloseReason::PeerReset => close_code::ERROR,
        CloseReason::SlowConsumer | CloseReason::Flood | CloseReason::BadPassword => {
            close_code::POLICY
        }
        CloseReason::ServerFull => close_code::AGAIN,
    }
}

/// The close frame for `reason`, its words as the close reason.
fn close_frame(reason: CloseReason) -> Bytes {
    encode_frame(
        OPCODE_CLOSE,
        &close_payload(close_code_for(reason), reason.describe()),
    )
}

/// The reason to close with when the frame reader gives up.
fn reason_for(error: FrameError) -> CloseReason {
    match error {
        FrameError::Protocol(_) => CloseReason::ProtocolError,
        FrameError::BadUtf8 => CloseReason::BadInput,
        FrameError::TooBig => CloseReason::LineTooLong,
    }
}

/// A keepalive ping: final, opcode 9, no payload.
const PING_FRAME: [u8; 2] = [0x80 | OPCODE_PING, 0];

/// A WebSocket's last frame: the close frame for the reason its outbox closed.
struct CloseFrame;

impl Farewell for CloseFrame {
    fn farewell(&self, reason: CloseReason) -> Option<Bytes> {
        Some(close_frame(reason))
    }
}

/// Renders hub events as WebSocket text frames holding the JSON protocol's objects:
/// the JSON rendering with a frame header in front instead of a newline behind.
#[derive(Debug, Default)]
pub struct WsRender {
    json: JsonRender,
}

impl WsRender {
    pub fn new() -> Arc<Self> {
        Arc::new(WsRender::default())
    }
}

impl Render for WsRender {
    fn carries_commands(&self) -> bool {
        true
    }

    fn render(&self, event: &Event) -> Option<Bytes> {
        let value = self.json.to_value(event)?;
        // The header's longest form is reserved in front, so the JSON is written once,
        // in place, and the header goes just before it.
        let mut frame = Vec::with_capacity(128);
        frame.resize(MAX_HEADER_BYTES, 0);
        serde_json::to_writer(&mut frame, &value).ok()?;
        let payload_len = frame.len() - MAX_HEADER_BYTES;
        let header: &mut [u8; MAX_HEADER_BYTES] =
            (&mut frame[..MAX_HEADER_BYTES]).try_into().ok()?;
        let header_len = write_header(OPCODE_TEXT, payload_len, header);
        // Advanced, not sliced: the bytes stay a plain vector (a slice would make them
        // reference-counted, an allocation per event).
        let mut frame = Bytes::from(frame);
        frame.advance(MAX_HEADER_BYTES - header_len);
        Some(frame)
    }
}

/// Why an upgrade request was refused: the status and words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRefusal {
    pub status: StatusCode,
    pub text: String,
}

/// Check an upgrade request's headers (RFC 6455 section 4.2.1) and derive the
/// `Sec-WebSocket-Accept` value for the answer. No extension (compression) and no
/// subprotocol is ever agreed: the answer names neither.
pub fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, HandshakeRefusal> {
    let refuse = |status, text: &str| {
        Err(HandshakeRefusal {
            status,
            text: text.to_owned(),
        })
    };
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::UPGRADE, "websocket") {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "this address speaks WebSocket only (Upgrade: websocket)\n",
        );
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket request needs Connection: Upgrade\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)\n",
        );
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| !key.is_empty())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket request needs a Sec-WebSocket-Key\n",
        );
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).or(refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "could not answer the WebSocket key\n",
    ))
}

/// Whether a browser page from the request's `Origin` may open a WebSocket here.
///
/// A browser sends any site's scripts' WebSocket requests with the user's cookies and
/// network position; the Origin header (which scripts cannot forge) is how a server
/// refuses other sites' pages. Allowed: no Origin at all (programs, not browsers), the
/// operator's `--ws-origin` list, and the server's own origin: the host and port the
/// browser asked for (`Host`), default ports filled in, over https when the server
/// speaks TLS (`tls`), and over either scheme when it does not (a proxy in front may
/// terminate TLS for it).
///
/// The own origin counts only under a name no DNS can move (an IP address or
/// `localhost`) or a name on the door's TLS `certificate`. Under any other name a
/// hostile site may have pointed its own name at this server (DNS rebinding; its
/// page's `Host` and `Origin` then agree) to reach, through the visitor's browser, a
/// server on their machine or network that the site cannot reach itself. That TLS is
/// spoken is not enough (a visitor who clicks through a certificate warning once for
/// the rebound name lets the site in); the certificate's names are, since they are the
/// operator's. Other names must be listed with `--ws-origin`, and the refusal says so.
pub fn check_origin(
    headers: &HeaderMap,
    allowed: &[String],
    tls: bool,
    certificate: Option<&CertificateDer<'_>>,
) -> Result<(), HandshakeRefusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|allowed| allowed == "*" || allowed == origin)
    {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .map(|host| String::from_utf8_lossy(host.as_bytes()).to_ascii_lowercase());
    if let (Some(page), Some(host)) = (split_origin(origin), host) {
        let (scheme, page_host, page_port) = page;
        let scheme_ok = scheme == "https" || !tls;
        // A Host without a port is the default port of the scheme the browser used.
        let same_place = split_host_port(&host, default_port(scheme))
            .is_some_and(|(host, port)| host == page_host && port == page_port);
        if scheme_ok && same_place {
            // The certificate's names count only where the door speaks TLS with it.
            let certified =
                || tls && certificate.is_some_and(|leaf| crate::tls::certifies(leaf, page_host));
            if name_cannot_be_rebound(page_host) || certified() {
                return Ok(());
            }
            return Err(HandshakeRefusal {
                status: StatusCode::FORBIDDEN,
                text: format!(
                    "pages from {origin} may not open WebSockets here: under a DNS name \
                     the page could be any site's, its name pointed at this server (DNS \
                     rebinding); if {page_host} is this server's own name, start the \
                     server with --ws-origin {origin}{or_certificate}\n",
                    or_certificate = if tls {
                        ", or put the name on its TLS certificate"
                    } else {
                        ""
                    },
                ),
            });
        }
    }
    Err(HandshakeRefusal {
        status: StatusCode::FORBIDDEN,
        text: format!(
            "pages from {origin} may not open WebSockets here; \
             start the server with --ws-origin {origin} to allow them\n"
        ),
    })
}

/// A host (as in `Host` and origins, lowercase) that names this server whatever DNS
/// says: an IP address, or `localhost` (with or without its trailing dot), which
/// browsers resolve to loopback themselves. Not `*.localhost`: Safari, and Firefox
/// before 84, ask DNS for those.
fn name_cannot_be_rebound(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .is_some_and(|host| host.parse::<Ipv6Addr>().is_ok())
        || host == "localhost"
        || host == "localhost."
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// An http(s) origin's scheme, host and port (default filled in); `None` for anything
/// else (`null`, other schemes).
fn split_origin(origin: &str) -> Option<(&str, &str, u16)> {
    let (scheme, authority) = origin.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, port) = split_host_port(authority, default_port(scheme))?;
    Some((scheme, host, port))
}

/// `host[:port]` (IPv6 literals in brackets) into its host and port.
fn split_host_port(authority: &str, default: u16) -> Option<(&str, u16)> {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => Some((host, port.parse().ok()?)),
        _ => Some((authority, default)),
    }
}

/// WebSocket framing for the JSON protocol: one object per text (or binary) message.
/// Pings are answered with pongs queued between whole frames; a keepalive ping goes out
/// every `ping_interval`, and a peer neither heard from nor taking output for
/// `idle_timeout` is closed.
pub struct WsFraming {
    reader: FrameReader,
    limits: Arc<WsLimits>,
    /// When the peer last sent anything (a pong counts), or was seen taking our output.
    last_heard: Stamp,
    /// When the next keepalive ping is due (and the peer's silence is checked).
    next_ping: Stamp,
}

/// A WebSocket's control frames, handled once they get their flood-control token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsControl {
    Ping(Bytes),
    Pong,
}

impl From<WsFrame> for Unit<WsControl> {
    fn from(frame: WsFrame) -> Self {
        match frame {
            WsFrame::Text(message) | WsFrame::Binary(message) => Unit::Message(message),
            WsFrame::TooLong { head } => Unit::TooLong { head },
            WsFrame::Ping(payload) => Unit::Control(WsControl::Ping(payload)),
            WsFrame::Pong(_) => Unit::Control(WsControl::Pong),
            WsFrame::Close { .. } => Unit::PeerClosed,
        }
    }
}

impl WsFraming {
    pub fn new(limits: Arc<WsLimits>) -> Self {
        let now = Instant::now();
        WsFraming {
            reader: FrameReader::new(
                limits.max_message_bytes,
                limits.hard_max(),
                OVERSIZE_HEAD_BYTES,
            ),
            last_heard: Stamp::at(now),
            next_ping: Stamp::at(now + limits.ping_interval),
            limits,
        }
    }
}

impl Framing for WsFraming {
    type Control = WsControl;

    fn push(&mut self, chunk: &Bytes, units: &mut Vec<Unit<WsControl>>) {
        self.last_heard = Stamp::now();
        if let Err(error) = self.reader.push(chunk, units) {
            units.push(Unit::Broken(reason_for(error)));
        }
    }

    /// The TCP connection ended without a close frame: a partial frame is dropped.
    fn finish(&mut self, _units: &mut Vec<Unit<WsControl>>) {}

    fn deadline(&self) -> Option<Instant> {
        Some(self.next_ping.instant())
    }

    fn on_deadline<S, F>(
        &mut self,
        conn: &mut Conn<S, F>,
        _units: &mut Vec<Unit<WsControl>>,
        input_waiting: bool,
    ) -> Option<CloseReason>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
        let now = Stamp::now();
        if now < self.next_ping {
            return None;
        }
        self.next_ping = now + self.limits.ping_interval;
        // A ping waits behind what is queued before it, so a peer reading a long
        // backlog slowly sends no pong for a long time. Output moving says it is
        // there: more writes than the last ping's own one. A dead peer's socket buffer
        // stops taking them once full, and with no backlog the pings alone never count.
        // Input held back by flood control is input all the same: its pongs wait
        // unread behind it, and only our pause keeps them from being heard.
        if conn.take_writes() > 1 || input_waiting {
            self.last_heard = now;
        }
        if now.saturating_duration_since(self.last_heard) > self.limits.idle_timeout {
            return Some(CloseReason::IdleTimeout);
        }
        conn.outbox().push(Bytes::from_static(&PING_FRAME));
        None
    }

    fn on_control<S, F>(&mut self, control: WsControl, conn: &mut Conn<S, F>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
        if let WsControl::Ping(payload) = control {
            // Queued behind what the peer is owed, between whole frames.
            conn.outbox().push(encode_frame(OPCODE_PONG, &payload));
        }
    }

    /// RFC 6455 5.5.1: answer a close "as soon as practical". The peer reads no more
    /// messages (a browser drops them), so what is still queued for it is dropped and
    /// our close frame goes next.
    fn on_peer_closed<S, F>(&mut self, conn: &mut Conn<S, F>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
        conn.abandon_output(CloseReason::PeerClosed);
    }
}

/// Drive one WebSocket, once hyper hands over the upgraded connection, until it
/// closes. The connection's slot travels inside the upgraded stream (it was taken
/// when the TCP connection was accepted).
pub async fn run(
    door: Arc<JsonDoor>,
    limits: Arc<WsLimits>,
    upgrade: OnUpgrade,
    peer: std::net::SocketAddr,
) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%peer, %error, "ws: upgrade failed");
            return;
        }
    };
    let framing = WsFraming::new(limits);
    let io = TokioIo::new(upgraded);
    drive(door, io, PeerSlot::new(peer, None), framing, CloseFrame).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Reply;

    #[test]
    fn renders_one_text_frame_holding_the_json_object() {
        let event = Event::Reply {
            tag: None,
            reply: Reply::Pong,
        };
        let frame = WsRender::default().render(&event).unwrap();
        let json = JsonRender.render(&event).unwrap();
        let object = &json[..json.len() - 1];
        assert_eq!(frame[0], 0x80 | OPCODE_TEXT, "final text frame");
        assert_eq!(frame[1] as usize, object.len(), "unmasked, short length");
        assert_eq!(&frame[2..], object);
    }

    #[test]
    fn long_events_get_the_longer_length_forms() {
        let event = Event::Notice {
            text: "x".repeat(70_000).into(),
        };
        let frame = WsRender::default().render(&event).unwrap();
        let json = JsonRender.render(&event).unwrap();
        let object = &json[..json.len() - 1];
        assert_eq!(frame[1], 127, "64-bit length");
        assert_eq!(
            u64::from_be_bytes(frame[2..10].try_into().unwrap()),
            object.len() as u64
        );
        assert_eq!(&frame[10..], object);
    }

    fn upgrade_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        headers
    }

    #[test]
    fn answers_the_rfc_sample_key() {
        // RFC 6455 section 1.3's example.
        assert_eq!(
            accept_key(&upgrade_headers()).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refuses_requests_that_are_not_websocket_upgrades() {
        for (name, value, status) in [
            (header::UPGRADE, "h2c", StatusCode::UPGRADE_REQUIRED),
            (header::CONNECTION, "keep-alive", StatusCode::BAD_REQUEST),
            (
                header::SEC_WEBSOCKET_VERSION,
                "8",
                StatusCode::UPGRADE_REQUIRED,
            ),
            (header::SEC_WEBSOCKET_KEY, "", StatusCode::BAD_REQUEST),
        ] {
            let mut headers = upgrade_headers();
            headers.insert(name.clone(), HeaderValue::from_static(value));
            let refusal = accept_key(&headers).unwrap_err();
            assert_eq!(refusal.status, status, "{name}: {value}");
        }
        let mut headers = upgrade_headers();
        headers.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(
            accept_key(&headers).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    /// An upgrade request for `host`, from a page at `origin` (none: a program).
    fn page_headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = upgrade_headers();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn origin_check(host: &'static str, origin: Option<&'static str>, tls: bool) -> bool {
        let headers = page_headers(host, origin);
        let allowed = [
            "https://friend.example".to_owned(),
            "http://chat.lan:8080".to_owned(),
        ];
        match check_origin(&headers, &allowed, tls, None) {
            Ok(()) => true,
            Err(refusal) => {
                assert_eq!(refusal.status, StatusCode::FORBIDDEN);
                assert!(refusal.text.contains("--ws-origin"), "{}", refusal.text);
                false
            }
        }
    }

    #[test]
    fn pages_from_other_sites_are_refused_unless_allowed() {
        for (host, origin, tls, ok) in [
            // Programs send no Origin.
            ("chat.example:8080", None, false, true),
            // The server's own page, any case; https too, as from a TLS proxy in front.
            ("192.0.2.1:8080", Some("http://192.0.2.1:8080"), false, true),
            (
                "localhost:8080",
                Some("https://LOCALHOST:8080"),
                false,
                true,
            ),
            ("192.0.2.1", Some("http://192.0.2.1"), false, true),
            ("192.0.2.1:80", Some("http://192.0.2.1"), false, true),
            ("192.0.2.1", Some("https://192.0.2.1"), false, true),
            ("[::1]:8080", Some("http://[::1]:8080"), false, true),
            // Listed by the operator.
            (
                "chat.example:8080",
                Some("https://friend.example"),
                false,
                true,
            ),
            (
                "chat.example:8080",
                Some("https://friend.example/"),
                false,
                true,
            ),
            // Another site, the right host on another port, a sandboxed page.
            (
                "chat.example:8080",
                Some("https://evil.example"),
                false,
                false,
            ),
            (
                "192.0.2.1:8080",
                Some("http://192.0.2.1:9090"),
                false,
                false,
            ),
            ("192.0.2.1:8080", Some("http://192.0.2.1"), false, false),
            ("192.0.2.1", Some("https://192.0.2.1:8443"), false, false),
            ("[::1]:8080", Some("http://[::1]:9090"), false, false),
            ("192.0.2.1:8080", Some("null"), false, false),
            (
                "192.0.2.1:8080",
                Some("file://192.0.2.1:8080"),
                false,
                false,
            ),
            // Over TLS, only an https page is the server's own.
            ("192.0.2.1", Some("https://192.0.2.1"), true, true),
            ("192.0.2.1:443", Some("https://192.0.2.1"), true, true),
            ("192.0.2.1", Some("http://192.0.2.1"), true, false),
            ("192.0.2.1:443", Some("http://192.0.2.1:443"), true, false),
        ] {
            assert_eq!(
                origin_check(host, origin, tls),
                ok,
                "{host} {origin:?} tls {tls}"
            );
        }
        let mut headers = upgrade_headers();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&headers, &["*".to_owned()], false, None).is_ok());
    }

    #[test]
    fn the_own_origin_needs_a_name_dns_cannot_move() {
        for tls in [false, true] {
            for (host, origin, ok) in [
                // A name: perhaps a hostile site's, pointed here (DNS rebinding), over
                // TLS too (a self-signed certificate's warning clicked through).
                ("chat.example:8443", "https://chat.example:8443", false),
                ("chat.example", "https://chat.example", false),
                ("CHAT.example", "https://chat.example", false),
                (
                    "localhost.example:8443",
                    "https://localhost.example:8443",
                    false,
                ),
                ("evillocalhost:8443", "https://evillocalhost:8443", false),
                ("chat.localhost:8443", "https://chat.localhost:8443", false),
                // Addresses and localhost mean this server whatever DNS says.
                ("127.0.0.1:8443", "https://127.0.0.1:8443", true),
                ("192.168.1.5:8443", "https://192.168.1.5:8443", true),
                ("[fd12::7]:8443", "https://[fd12::7]:8443", true),
                ("LOCALHOST:8443", "https://localhost:8443", true),
                ("localhost.:8443", "https://localhost.:8443", true),
            ] {
                assert_eq!(
                    origin_check(host, Some(origin), tls),
                    ok,
                    "{host} {origin} tls {tls}"
                );
            }
        }
        // A name the operator listed as its own, and that name unlisted.
        assert!(origin_check(
            "chat.lan:8080",
            Some("http://chat.lan:8080"),
            false
        ));
        assert!(!origin_check(
            "chat.lan:9090",
            Some("http://chat.lan:9090"),
            false
        ));
        let headers = page_headers("chat.example", Some("http://chat.example"));
        let refusal = check_origin(&headers, &[], false, None).unwrap_err().text;
        assert!(
            refusal.contains("DNS rebinding")
                && refusal.contains("--ws-origin http://chat.example"),
            "{refusal}"
        );
    }

    #[test]
    fn over_tls_the_certificates_names_are_the_servers_own() {
        let names = ["chat.example.org", "*.wild.example", "192.0.2.9", "::2"];
        let generated =
            rcgen::generate_simple_self_signed(names.map(String::from).to_vec()).unwrap();
        let leaf = generated.cert.der();
        for (host, origin, ok) in [
            ("chat.example.org", "https://chat.example.org", true),
            (
                "chat.example.org:8443",
                "https://chat.example.org:8443",
                true,
            ),
            ("room.wild.example", "https://room.wild.example", true),
            ("192.0.2.9", "https://192.0.2.9", true),
            ("[::2]", "https://[::2]", true),
            // Names the certificate does not carry: perhaps rebound.
            ("evil.example", "https://evil.example", false),
            (
                "chat.example.org.evil.example",
                "https://chat.example.org.evil.example",
                false,
            ),
            ("wild.example", "https://wild.example", false),
            // Over TLS an http page is not the server's own, certificate or not.
            ("chat.example.org", "http://chat.example.org", false),
        ] {
            let headers = page_headers(host, Some(origin));
            assert_eq!(
                check_origin(&headers, &[], true, Some(leaf)).is_ok(),
                ok,
                "{host} {origin}"
            );
        }
        // The names count only where the door speaks TLS with that certificate; a
        // bracketed name is no address.
        let headers = page_headers("chat.example.org", Some("http://chat.example.org"));
        assert!(check_origin(&headers, &[], false, Some(leaf)).is_err());
        assert!(!crate::tls::certifies(leaf, "[chat.example.org]"));
        // Over TLS the refusal names both ways in.
        let headers = page_headers("evil.example", Some("https://evil.example"));
        let refusal = check_origin(&headers, &[], true, Some(leaf))
            .unwrap_err()
            .text;
        assert!(
            refusal.contains("--ws-origin https://evil.example")
                && refusal.contains("TLS certificate"),
            "{refusal}"
        );
    }

    #[test]
    fn every_close_reason_has_a_close_frame_with_its_code() {
        for (reason, code) in [
            (CloseReason::ClientQuit, 1000),
            (CloseReason::Shutdown, 1001),
            (CloseReason::ProtocolError, 1002),
            (CloseReason::BadInput, 1007),
            (CloseReason::Flood, 1008),
            (CloseReason::LineTooLong, 1009),
        ] {
            let frame = close_frame(reason);
            assert_eq!(frame[0], 0x80 | OPCODE_CLOSE);
            assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), code);
            assert_eq!(&frame[4..], reason.describe().as_bytes());
        }
    }
}
#[cfg(test)]
mod connection_tests {
    use super::*;
    use crate::door::flood::FloodSettings;
    use crate::door::session::SessionSettings;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::task::TaskTracker;

    /// A WebSocket door on a live in-memory hub, and its limits.
    fn door(tracker: &TaskTracker, ping_interval: Duration) -> (Arc<JsonDoor>, Arc<WsLimits>) {
        let door = crate::door::json::door(
            "ws",
            crate::hub::spawn_in_memory(tracker),
            SessionSettings {
                max_queue_bytes: 1 << 20,
                register_timeout: Duration::from_secs(1000),
                idle_timeout: None,
                flood: FloodSettings {
                    rate: 10.0,
                    burst: 5,
                    patience: Duration::from_secs(2),
                },
                accounts: None,
            },
            1024,
            crate::metrics::Metrics::new().door("ws"),
            WsRender::new(),
        );
        let limits = Arc::new(WsLimits {
            max_message_bytes: 1024,
            ping_interval,
            idle_timeout: ping_interval * 3,
            origins: Vec::new(),
            certificate: None,
        });
        (Arc::new(door), limits)
    }

    /// A client frame: final, masked with a zero key (as a client must mask).
    fn client_text(text: &str) -> Vec<u8> {
        assert!(text.len() < 126);
        let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    /// A connection over a 256-byte duplex (room for two of the queued frames) that
    /// has sent its name, with 100 frames of 100 bytes waiting in its outbox (a room's
    /// backlog); the running connection, the client's end and one of those frames.
    async fn served_with_backlog(
        door: Arc<JsonDoor>,
        limits: Arc<WsLimits>,
        nick: &str,
    ) -> (tokio::task::JoinHandle<()>, tokio::io::DuplexStream, Bytes) {
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (ours, mut theirs) = tokio::io::duplex(256);
        let outbox = Arc::new(crate::hub::Outbox::new(1 << 20));
        let backlog = encode_frame(OPCODE_TEXT, &[b'x'; 100]);
        for _ in 0..100 {
            outbox.push(backlog.clone());
        }
        let name = client_text(&format!(r#"{{"type":"nick","nick":"{nick}"}}"#));
        theirs.write_all(&name).await.unwrap();
        let conn = Conn::with_farewell(ours, outbox, CloseFrame);
        let framing = WsFraming::new(limits);
        let task = tokio::spawn(drive_conn(door, conn, PeerSlot::new(peer, None), framing));
        (task, theirs, backlog)
    }

    /// A client reading a long backlog slowly sends no pong until it reaches the
    /// pings queued behind it; it is kept while it takes output. One that takes
    /// nothing is closed as idle.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_idle_but_a_silent_one_is() {
        let tracker = TaskTracker::new();
        let (door, limits) = door(&tracker, Duration::from_secs(30));
        for (nick, reads_every) in [("slow", Some(Duration::from_secs(10))), ("silent", None)] {
            // 10 KB queued: at 100 bytes every 10 s, over 15 minutes of reading.
            let (task, mut theirs, _) =
                served_with_backlog(door.clone(), limits.clone(), nick).await;
            let client_side = async {
                let mut chunk = [0u8; 100];
                loop {
                    match reads_every {
                        Some(pause) => {
                            tokio::time::sleep(pause).await;
                            let _ = theirs.read(&mut chunk).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            let started = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_secs(400), async {
                tokio::select! {
                    finished = task => finished,
                    _ = client_side => unreachable!(),
                }
            })
            .await;
            match reads_every {
                // No pong for 400 s, thirteen idle checks: still served.
                Some(_) => assert!(outcome.is_err(), "closed: {outcome:?}"),
                // Its first writes count at the first check (30 s), so the check 90 s
                // after that closes it; the close may then spend 2 s trying to flush.
                None => {
                    assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}");
                    let after = started.elapsed();
                    assert!(after <= Duration::from_secs(153), "closed after {after:?}");
                }
            }
        }
    }

    /// A client's close is answered next, not after the events still queued for it.
    #[tokio::test]
    async fn a_client_close_is_answered_before_the_backlog() {
        let tracker = TaskTracker::new();
        let (door, limits) = door(&tracker, Duration::from_secs(30));
        let (task, mut theirs, backlog) = served_with_backlog(door, limits, "closer").await;
        // Close, code 1000, masked with a zero key as a client must mask.
        theirs
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
            .await
            .unwrap();
        let mut received = Vec::new();
        theirs.read_to_end(&mut received).await.unwrap();
        task.await.unwrap();
        let close = close_frame(CloseReason::PeerClosed);
        assert!(received.ends_with(&close), "no close frame last");
        let events = (received.len() - close.len()) / backlog.len();
        assert!(
            events < 10,
            "{events} of the 100 queued frames went out before the close"
        );
    }

    /// Every idle WebSocket holds its task's future (plus ~110 bytes of task header and
    /// trailer, rounded up to the allocator's size class): this fails when it grows.
    #[tokio::test]
    async fn an_idle_websocket_future_stays_small() {
        let tracker = TaskTracker::new();
        let (door, limits) = door(&tracker, Duration::from_secs(30));
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        // A request hyper never saw: its upgrade fails at once, but the future is the same.
        let upgrade = hyper::upgrade::on(axum::http::Request::new(()));
        let task = run(door, limits, upgrade, peer);
        let size = std::mem::size_of_val(&task);
        eprintln!("websocket future {size} bytes");
        // 528 bytes on the shared session driver (520 before it): with the task's
        // ~110-byte header and trailer still a 640-byte allocation, which this keeps.
        // The tungstenite version's future was 1,224 bytes.
        assert!(size <= 528, "websocket future grew to {size} bytes");
        task.await;
    }
}
