//! The web door against the real server: the JSON protocol over WebSocket, delivery
//! across line, JSON and WebSocket doors, the page, /healthz, /metrics, keepalive and
//! the shutdown close frame.

mod support;

use serde_json::json;
use support::inproc::InProcess as Server;
use support::web::{http_get, metric, Lines, Ws};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn ws_url(server: &Server) -> String {
    format!("ws://{}/ws", server.addr("web"))
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let addr = server.addr("web");
    http_get(
        TcpStream::connect(addr).await.unwrap(),
        &addr.to_string(),
        path,
    )
    .await
}

#[tokio::test]
async fn messages_cross_every_door_in_both_directions() {
    let server = Server::start(&[]).await;
    let mut netcat = Lines::line_login(server.addr("line"), "nc").await;
    let (mut program, _) = Lines::json_login(server.addr("json"), "prog").await;
    let (mut browser, welcome) = Ws::login(&ws_url(&server), "web").await;
    assert_eq!(welcome["protocol"], 1);
    netcat.line_containing("web joined").await;
    program.json_of_type("joined").await; // web

    netcat.send_line("from the line door").await;
    let seen = browser.of_type("message").await;
    assert_eq!(
        (seen["from"].clone(), seen["text"].clone()),
        (json!("nc"), json!("from the line door"))
    );
    assert_eq!(
        program.json_of_type("message").await["text"],
        "from the line door"
    );

    browser
        .send(json!({"type": "say", "text": "from the browser", "id": "b1"}))
        .await;
    assert_eq!(
        netcat.line_containing("[web]").await,
        "[web] from the browser"
    );
    assert_eq!(program.json_of_type("message").await["from"], "web");
    assert_eq!(browser.of_type("ok").await["id"], "b1");

    program
        .send_json(json!({"type": "say", "text": "from a program"}))
        .await;
    assert_eq!(
        netcat.line_containing("[prog]").await,
        "[prog] from a program"
    );
    assert_eq!(browser.of_type("message").await["text"], "from a program");

    // Private messages across doors, and whois names the door.
    netcat.send_line("/msg web psst").await;
    let private = browser.of_type("message").await;
    assert_eq!(
        (private["to"].clone(), private["text"].clone()),
        (json!("web"), json!("psst"))
    );
    browser
        .send(json!({"type": "msg", "to": "nc", "text": "hi back"}))
        .await;
    assert_eq!(
        netcat.line_containing("[web -> nc]").await,
        "[web -> nc] hi back"
    );
    browser
        .send(json!({"type": "whois", "nick": "prog", "id": 1}))
        .await;
    let whois = browser.of_type("whois").await;
    assert_eq!(
        (whois["door"].clone(), whois["id"].clone()),
        (json!("json"), json!(1))
    );
    server.stop().await;
}

#[tokio::test]
async fn websocket_errors_carry_ids_and_the_socket_stays_open() {
    let server = Server::start(&["--max-json-bytes", "256"]).await;
    let url = ws_url(&server);
    let (_taken, _) = Ws::login(&url, "taken").await;
    let mut ws = Ws::connect(&url).await;
    ws.send(json!({"type": "join", "room": "#x", "id": "early"}))
        .await;
    let error = ws.of_type("error").await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("not_registered"), json!("early"))
    );
    ws.send(json!({"type": "nick", "nick": "Taken", "id": "n1"}))
        .await;
    let error = ws.of_type("error").await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("nick_taken"), json!("n1"))
    );
    ws.send(json!({"type": "nick", "nick": "bad\u{202e}name", "id": "n2"}))
        .await;
    assert_eq!(ws.of_type("error").await["code"], "nick_invalid");
    ws.send(json!({"type": "nick", "nick": "fresh"})).await;
    ws.of_type("welcome").await;

    ws.send_text("not json at all").await;
    let error = ws.of_type("error").await;
    assert_eq!(error["code"], "bad_request");
    ws.send(json!({"type": "fly", "id": "u"})).await;
    let error = ws.of_type("error").await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("unknown_command"), json!("u"))
    );
    ws.send(json!({"type": "msg", "text": "x", "id": "m"}))
        .await;
    let error = ws.of_type("error").await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("bad_request"), json!("m"))
    );
    ws.send(json!({"type": "msg", "to": "ghost", "text": "x", "id": "g"}))
        .await;
    let error = ws.of_type("error").await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("no_such_nick"), json!("g"))
    );
    ws.send(json!({"type": "part", "room": "#elsewhere", "id": "p"}))
        .await;
    assert_eq!(ws.of_type("error").await["id"], "p");

    // Over the cap but under the hard frame limit: refused with its id, socket stays.
    let big = json!({"id": "big", "type": "say", "text": "y".repeat(300)});
    ws.send(big).await;
    let error = ws.of_type("error").await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("line_too_long"), json!("big"))
    );
    ws.send(json!({"type": "ping", "id": "still"})).await;
    assert_eq!(ws.of_type("pong").await["id"], "still");

    // Far over the hard limit: the socket is closed with 1009 (message too big).
    ws.send_text(&"z".repeat(64 * 1024)).await;
    let close = loop {
        match ws.message().await {
            Some(Message::Close(frame)) => break frame,
            Some(_) => continue,
            None => panic!("stream ended without a close frame"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Size));
    server.stop().await;
}

#[tokio::test]
async fn page_health_and_metrics_are_served() {
    let server = Server::start(&[]).await;
    assert!(server.url("web").starts_with("http://127.0.0.1:"));
    let (status, page) = get(&server, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"app.js\">"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );
    let (status, script) = get(&server, "/app.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("location.host") && !script.contains("innerHTML"));
    assert_eq!(get(&server, "/style.css").await.0, 200);
    assert_eq!(get(&server, "/nope").await.0, 404);
    assert_eq!(get(&server, "/healthz").await, (200, "ok\n".into()));

    let (_, before) = get(&server, "/metrics").await;
    let mut netcat = Lines::line_login(server.addr("line"), "nc").await;
    let (mut browser, _) = Ws::login(&ws_url(&server), "web").await;
    netcat.send_line("one").await;
    browser.send(json!({"type": "say", "text": "two"})).await;
    browser.of_type("message").await;
    browser.of_type("message").await;
    // The netcat user's copy may still be on its way: poll until both deliveries of
    // both messages are counted (an over-count still fails the exact check below).
    let deadline = tokio::time::Instant::now() + support::web::WAIT;
    let after = loop {
        let (status, after) = get(&server, "/metrics").await;
        assert_eq!(status, 200);
        let out = metric(&after, "switchboard_messages_out_total")
            - metric(&before, "switchboard_messages_out_total");
        if out >= 4.0 || tokio::time::Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let grew = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        grew("switchboard_connections_total{door=\"line\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        grew("switchboard_connections_total{door=\"ws\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "switchboard_connections_open{door=\"ws\"}"),
        1.0
    );
    assert_eq!(grew("switchboard_messages_in_total{door=\"line\"}"), 1.0);
    assert_eq!(grew("switchboard_messages_in_total{door=\"ws\"}"), 1.0);
    // Two messages, each to both members.
    assert_eq!(grew("switchboard_messages_out_total"), 4.0, "{after}");
    assert!(grew("switchboard_deliveries_total") >= 4.0);
    assert!(after.contains("switchboard_queue_bytes"));

    netcat.send_line("/quit").await;
    while netcat.line().await.is_some() {}
    drop(netcat);
    browser.of_type("left").await;
    // The connection task counts its close once the socket is done: poll for it.
    let series = "switchboard_disconnects_total{door=\"line\",reason=\"client_quit\"}";
    let deadline = tokio::time::Instant::now() + support::web::WAIT;
    loop {
        let (_, later) = get(&server, "/metrics").await;
        if metric(&later, series) == 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{later}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_sends_the_goodbye_then_a_1001_close_frame() {
    let server = Server::start(&[]).await;
    let (mut ws, _) = Ws::login(&ws_url(&server), "stayer").await;
    let stopping = tokio::spawn(server.stop());
    let mut saw_notice = false;
    let close = loop {
        match ws.message().await {
            Some(Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                saw_notice |= value["type"] == "notice";
            }
            Some(Message::Close(frame)) => break frame,
            Some(_) => continue,
            None => panic!("stream ended without a close frame"),
        }
    };
    assert!(
        saw_notice,
        "the goodbye notice comes before the close frame"
    );
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_socket_that_never_answers_pings_is_closed_as_idle() {
    // Long enough that the awake client below, which answers pings only as it reads,
    // is never late by three intervals on a loaded machine.
    let server = Server::start(&["--ws-ping-interval", "500ms"]).await;
    let mut watcher = Lines::line_login(server.addr("line"), "watcher").await;
    let (mut ws, _) = Ws::login(&ws_url(&server), "sleepy").await;
    // Not reading means not answering pings: after three silent intervals, it is closed.
    let left = watcher.line_containing("sleepy left").await;
    assert!(left.contains("idle timeout"), "{left}");
    // Its close frame may be lost to the reset caused by the late pongs it now sends.
    loop {
        match ws.message().await {
            Some(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away));
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    // A socket that reads (and so answers pings) stays.
    let (mut awake, _) = Ws::login(&ws_url(&server), "awake").await;
    let mut pings = 0;
    while pings < 5 {
        match awake.message().await {
            Some(Message::Ping(_)) => pings += 1,
            Some(_) => {}
            None => panic!("a socket that answers pings was closed after {pings} of them"),
        }
    }
    awake.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(awake.of_type("pong").await["id"], 1);
    server.stop().await;
}

#[tokio::test]
async fn smuggled_newlines_and_bad_utf8_over_websocket_are_neutralised() {
    let server = Server::start(&[]).await;
    let mut netcat = Lines::line_login(server.addr("line"), "nc").await;
    let (mut ws, _) = Ws::login(&ws_url(&server), "web").await;
    let (mut json_client, _) = Lines::json_login(server.addr("json"), "prog").await;
    // CR/LF and escape sequences in JSON text must not become extra lines (or restyle
    // terminals) for netcat users, whichever door they came through.
    ws.send(json!({"type": "say", "text": "hi\r\n[nc] forged\u{1b}[2J"}))
        .await;
    json_client
        .send_json(json!({"type": "say", "text": "a\nb\u{202e}txet"}))
        .await;
    // Two connections: their messages may arrive in either order.
    let mut said = Vec::new();
    while said.len() < 2 {
        let line = netcat.line().await.expect("netcat still connected");
        if line.starts_with("[web] ") || line.starts_with("[prog] ") {
            said.push(line);
        }
    }
    said.sort();
    assert_eq!(
        said,
        [
            "[prog] a\u{FFFD}btxet",
            "[web] hi\u{FFFD}\u{FFFD}[nc] forged\u{FFFD}[2J"
        ]
    );
    // A text frame that is not UTF-8 closes the socket with 1007.
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    futures_util::SinkExt::send(&mut ws.stream, Message::Frame(frame))
        .await
        .unwrap();
    let close = loop {
        match ws.message().await {
            Some(Message::Close(frame)) => break frame,
            Some(_) => continue,
            None => panic!("stream ended without a close frame"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Invalid));
    netcat.line_containing("web left #general").await;
    server.stop().await;
}

#[tokio::test]
async fn slowloris_is_cut_off_while_pages_and_websockets_are_served() {
    let server = Server::start(&["--http-header-timeout", "500ms"]).await;
    let addr = server.addr("web");
    // One connection trickles a request head, a header byte every 100 ms; another
    // opens and sends nothing at all.
    let mut trickler = TcpStream::connect(addr).await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    trickler.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut cut_off = false;
    for _ in 0..100 {
        if trickler.write_all(b"X").await.is_err() {
            cut_off = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(read) = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            trickler.read(&mut byte),
        )
        .await
        {
            // EOF or reset: the server closed the connection.
            if matches!(read, Ok(0) | Err(_)) {
                cut_off = true;
                break;
            }
        }
    }
    assert!(cut_off, "the trickling connection was never closed");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    let mut rest = Vec::new();
    let silent_read = tokio::time::timeout(support::web::WAIT, silent.read_to_end(&mut rest)).await;
    assert!(
        silent_read.is_ok(),
        "the silent connection was never closed"
    );
    // Meanwhile normal requests and a quiet WebSocket are unaffected.
    assert_eq!(get(&server, "/healthz").await, (200, "ok\n".into()));
    let (mut ws, _) = Ws::login(&ws_url(&server), "quiet").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    ws.send(json!({"type": "ping", "id": "still"})).await;
    assert_eq!(ws.of_type("pong").await["id"], "still");
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_ping_flood_is_throttled_then_closed() {
    let server = Server::start(&[
        "--flood-rate",
        "20",
        "--flood-burst",
        "5",
        "--flood-patience",
        "1s",
    ])
    .await;
    let mut netcat = Lines::line_login(server.addr("line"), "nc").await;
    let (mut ws, _) = Ws::login(&ws_url(&server), "pinger").await;
    netcat.line_containing("pinger joined").await;
    // Pings as fast as the socket takes them, for up to 20 s.
    let started = std::time::Instant::now();
    let close = loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never closed"
        );
        let sent =
            futures_util::SinkExt::send(&mut ws.stream, Message::Ping(vec![1; 16].into())).await;
        if sent.is_err() {
            break None;
        }
        match tokio::time::timeout(std::time::Duration::from_millis(1), ws.message()).await {
            Ok(Some(Message::Close(frame))) => break frame,
            Ok(None) => break None,
            _ => {}
        }
    };
    if let Some(frame) = close {
        assert_eq!(frame.code, CloseCode::Policy);
    }
    assert_eq!(
        netcat.line_containing("pinger left").await,
        "*** pinger left #general (flooding)"
    );
    server.stop().await;
}

#[tokio::test]
async fn websocket_compression_is_never_negotiated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&[]).await;
    let addr = server.addr("web");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(support::web::WAIT, stream.read(&mut chunk))
            .await
            .expect("upgrade response in time")
            .unwrap();
        assert!(read > 0, "closed before the upgrade response");
        response.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    server.stop().await;
}

/// A WebSocket client made by hand, for what a library client will not send: pipelined
/// frames, fragments, unmasked frames.
struct RawWs {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    unread: Vec<u8>,
}

impl RawWs {
    /// The upgrade request, with `first_frames` in the same write as its head.
    async fn open(addr: std::net::SocketAddr, first_frames: &[u8]) -> RawWs {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(first_frames);
        stream.write_all(&request).await.unwrap();
        let mut raw = RawWs {
            stream,
            unread: Vec::new(),
        };
        let end = loop {
            if let Some(end) = raw.unread.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(raw.read_more().await, "closed before the upgrade response");
        };
        let head = String::from_utf8_lossy(&raw.unread[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455 section 1.3's answer to that key.
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key: {head}"
        );
        raw.unread.drain(..end);
        raw
    }

    async fn read_more(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        // A reset is an error here, not an end: the server's closes must be clean.
        let read = tokio::time::timeout(support::web::WAIT, self.stream.read(&mut chunk))
            .await
            .expect("server answered in time")
            .expect("read without a reset");
        self.unread.extend_from_slice(&chunk[..read]);
        read > 0
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next server frame: (opcode, payload). Server frames are never masked.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((header_len, payload_len)) = server_frame_len(&self.unread) {
                if self.unread.len() >= header_len + payload_len {
                    let opcode = self.unread[0] & 0x0f;
                    assert_eq!(self.unread[0] & 0xf0, 0x80, "final, no reserved bits");
                    let frame: Vec<u8> = self.unread.drain(..header_len + payload_len).collect();
                    return Some((opcode, frame[header_len..].to_vec()));
                }
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// The next text frame's JSON, skipping control frames.
    async fn json(&mut self) -> serde_json::Value {
        loop {
            let (opcode, payload) = self.frame().await.expect("a frame");
            if opcode == 1 {
                return serde_json::from_slice(&payload).unwrap();
            }
        }
    }
}

/// The header and payload length of a server frame, once its header is complete.
fn server_frame_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let short = *bytes.get(1)? as usize;
    assert_eq!(short & 0x80, 0, "server frames are unmasked");
    match short {
        126 => Some((
            4,
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
        )),
        127 => Some((
            10,
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
        )),
        len => Some((2, len)),
    }
}

/// A client frame, masked with a fixed key (`masked` false breaks the protocol).
fn client_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    if masked {
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

#[tokio::test]
async fn hand_made_frames_pipelined_fragmented_and_broken() {
    let server = Server::start(&[]).await;
    let mut netcat = Lines::line_login(server.addr("line"), "nc").await;

    // The name comes in the same packet as the upgrade request, in three fragments with
    // a ping between them: the pong echoes the ping, and the fragments make one message.
    let nick = br#"{"type":"nick","nick":"raw","id":"n"}"#;
    let mut first = client_frame(false, 0x1, &nick[..10], true);
    first.extend(client_frame(true, 0x9, b"are you there", true));
    first.extend(client_frame(false, 0x0, &nick[10..20], true));
    first.extend(client_frame(true, 0x0, &nick[20..], true));
    let mut raw = RawWs::open(server.addr("web"), &first).await;
    assert_eq!(
        raw.frame().await,
        Some((0xA, b"are you there".to_vec())),
        "the pong comes first, with the ping's payload"
    );
    let welcome = raw.json().await;
    assert_eq!(
        (welcome["type"].clone(), welcome["nick"].clone()),
        (json!("welcome"), json!("raw"))
    );
    netcat.line_containing("raw joined").await;

    // A message over 125 bytes takes the 16-bit length form both ways.
    let long_text = "w".repeat(300);
    let say = json!({"type": "say", "text": long_text}).to_string();
    raw.send(&client_frame(true, 0x1, say.as_bytes(), true))
        .await;
    assert_eq!(
        netcat.line_containing("[raw]").await,
        format!("[raw] {long_text}")
    );
    netcat.send_line(&"v".repeat(200)).await;
    let seen = loop {
        let event = raw.json().await;
        // Our own line comes back first (the JSON protocol echoes a sender's messages).
        if event["type"] == "message" && event["from"] == "nc" {
            break event;
        }
    };
    assert_eq!(seen["text"], "v".repeat(200));

    // An unmasked client frame breaks the protocol: closed with 1002, and the room is told.
    raw.send(&client_frame(
        true,
        0x1,
        br#"{"type":"say","text":"x"}"#,
        false,
    ))
    .await;
    let close = loop {
        match raw.frame().await {
            Some((0x8, payload)) => break payload,
            Some(_) => continue,
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002);
    assert_eq!(&close[2..], b"protocol error");
    assert_eq!(
        netcat.line_containing("raw left").await,
        "*** raw left #general (protocol error)"
    );
    // After the close frame the server closes the TCP connection.
    assert!(raw.frame().await.is_none());

    // A client that closes gets the close answered (1000), then a clean end.
    let nick = client_frame(true, 0x1, br#"{"type":"nick","nick":"polite"}"#, true);
    let mut polite = RawWs::open(server.addr("web"), &nick).await;
    assert_eq!(polite.json().await["type"], "welcome");
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    polite.send(&client_frame(true, 0x8, &close, true)).await;
    let answer = loop {
        match polite.frame().await {
            Some((0x8, payload)) => break payload,
            Some(_) => continue,
            None => panic!("closed without answering the close"),
        }
    };
    assert_eq!(u16::from_be_bytes([answer[0], answer[1]]), 1000);
    assert!(polite.frame().await.is_none(), "nothing after the close");
    netcat.line_containing("polite left").await;

    // A plain GET on the WebSocket address is told what it needs.
    let (status, body) = get(&server, "/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("Upgrade: websocket"), "{body}");
    server.stop().await;
}

/// The status line's code for a WebSocket upgrade request with these extra headers.
async fn upgrade_status(addr: std::net::SocketAddr, extra_headers: &str) -> (u16, String) {
    upgrade_status_as(addr, &addr.to_string(), extra_headers).await
}

/// The same, with `host` in the `Host` header.
async fn upgrade_status_as(
    addr: std::net::SocketAddr,
    host: &str,
    extra_headers: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(support::web::WAIT, stream.read(&mut response))
        .await
        .expect("an answer in time")
        .unwrap();
    let mut text = String::from_utf8_lossy(&response[..read]).into_owned();
    let status = text[9..12].parse().unwrap();
    if status != 101 {
        // A refused upgrade closes the connection (it is no longer under the deadline
        // that guards request heads).
        let mut rest = Vec::new();
        tokio::time::timeout(support::web::WAIT, stream.read_to_end(&mut rest))
            .await
            .expect("the server closes a refused upgrade")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&rest));
    }
    (status, text)
}

#[tokio::test]
async fn pages_from_other_sites_cannot_open_websockets_unless_allowed() {
    let server = Server::start(&[]).await;
    let addr = server.addr("web");
    // The server's own page, and programs that send no Origin, get in.
    let own = format!("Origin: http://{addr}\r\n");
    assert_eq!(upgrade_status(addr, &own).await.0, 101);
    assert_eq!(upgrade_status(addr, "").await.0, 101);
    // Another site's page is refused, told how to allow it.
    let (status, answer) = upgrade_status(addr, "Origin: https://evil.example\r\n").await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("--ws-origin https://evil.example"),
        "{answer}"
    );
    server.stop().await;

    let server = Server::start(&["--ws-origin", "https://friend.example"]).await;
    let addr = server.addr("web");
    let friend = "Origin: https://friend.example\r\n";
    assert_eq!(upgrade_status(addr, friend).await.0, 101);
    let evil = "Origin: https://evil.example\r\n";
    assert_eq!(upgrade_status(addr, evil).await.0, 403);
    server.stop().await;
}

#[tokio::test]
async fn a_page_under_a_dns_name_is_refused_unless_listed() {
    // A page whose Host and Origin agree on a name may be a hostile site that pointed
    // its name here (DNS rebinding).
    let server = Server::start(&[]).await;
    let addr = server.addr("web");
    let port = addr.port();
    let named = "Origin: http://chat.example\r\n";
    let (status, answer) = upgrade_status_as(addr, "chat.example", named).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("DNS rebinding") && answer.contains("--ws-origin http://chat.example"),
        "{answer}"
    );
    // localhost and addresses cannot be moved by DNS.
    let local = format!("Origin: http://localhost:{port}\r\n");
    let localhost = format!("localhost:{port}");
    assert_eq!(upgrade_status_as(addr, &localhost, &local).await.0, 101);
    server.stop().await;

    // The operator names it as the server's own (the default port as browsers drop it).
    let server = Server::start(&["--ws-origin", "http://chat.example:80"]).await;
    let addr = server.addr("web");
    assert_eq!(upgrade_status_as(addr, "chat.example", named).await.0, 101);
    server.stop().await;
}

/// With history on, /metrics says how many messages were saved, in how many
/// transactions, and how long saving took.
#[tokio::test]
async fn history_saves_are_counted_and_timed_in_metrics() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let server = Server::start(&["--data", data_dir]).await;
    let mut netcat = Lines::line_login(server.addr("line"), "nc").await;
    for text in ["one", "two", "three"] {
        netcat.send_line(text).await;
        // Delivered only once committed.
        assert_eq!(netcat.line_containing(text).await, format!("[nc] {text}"));
    }
    let (status, text) = get(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "switchboard_history_messages_saved_total"),
        3.0,
        "{text}"
    );
    let batches = metric(&text, "switchboard_history_batches_total");
    assert!((1.0..=3.0).contains(&batches), "{text}");
    assert_eq!(
        metric(&text, "switchboard_history_commit_seconds_count"),
        batches
    );
    assert_eq!(
        metric(&text, "switchboard_history_save_seconds_count"),
        batches
    );
    let saving = metric(&text, "switchboard_history_save_seconds_sum");
    assert!(saving > 0.0 && saving < 10.0, "{text}");
    assert_eq!(
        metric(&text, "switchboard_history_messages_failed_total"),
        0.0
    );
    server.stop().await;
}
