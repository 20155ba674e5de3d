//! What every door shares, against the real server: flood control that delays a
//! client's input without holding back its output (JSON and WebSocket as on the line
//! door), and the one accept path: connection limits taken before a TLS handshake,
//! the handshake's deadline, and refusals logged once and counted on every listener.
//! Tests that read the server's log start the binary (`Server`); the others run it in
//! process.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use serde_json::json;
use support::inproc::InProcess;
use support::web::{certificate, http_get, metric, Lines, Server, Ws, WAIT};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// How many messages each flooder sends at once.
const FLOOD: usize = 20;

/// A JSON client and a WebSocket client each send 20 messages at once, against a rate
/// of 5 per second after a burst of 2: their input waits for ~3.6 s. Meanwhile a
/// netcat user says ten 3,000-byte lines (30 KB each way, over the 16 KiB outbox
/// bound): both flooders get them while they wait, the WebSocket gets its keepalive
/// pings, nobody is closed as a slow consumer, and every flooded message arrives, in
/// order. (When the JSON and WebSocket doors slept inside the handler, their output
/// stopped while throttled and the chatter closed them as slow consumers.)
#[tokio::test]
async fn throttled_json_and_websocket_clients_keep_receiving() {
    let server = Server::start_logged(
        &[
            "--flood-rate",
            "5",
            "--flood-burst",
            "2",
            "--flood-patience",
            "30s",
            "--max-queue-bytes",
            "16384",
            "--ws-ping-interval",
            "500ms",
        ],
        &["line", "json", "web"],
        "info",
    )
    .await;
    let (mut json, _) = Lines::json_login(server.addr("json"), "jflood").await;
    let ws_url = format!("{}ws", server.url("web").replace("http://", "ws://"));
    let (mut ws, _) = Ws::login(&ws_url, "wflood").await;
    // Logged in last, so its login shows both flooders are in the room.
    let mut netcat = Lines::line_login(server.addr("line"), "chatter").await;

    let mut burst = String::new();
    for n in 1..=FLOOD {
        burst.push_str(&json!({"type": "say", "text": format!("j{n}")}).to_string());
        burst.push('\n');
    }
    // From before the first message: a stall in this test only makes the flood look
    // slower, never faster than the throttle allows.
    let started = Instant::now();
    json.send_raw(burst.as_bytes()).await;
    for n in 1..=FLOOD {
        ws.send(json!({"type": "say", "text": format!("w{n}")}))
            .await;
    }
    let chatter: Vec<String> = (0..10)
        .map(|n| format!("{n}{}", "x".repeat(3000)))
        .collect();
    for line in &chatter {
        netcat.send_line(line).await;
    }

    // Both read at once, as real clients do: a client that reads nothing for longer
    // than the keepalive allows is closed as idle, throttled or not.
    let json_side = async {
        // The JSON flooder: the flood notice, every chatter line before its own last
        // message, its own messages all there and in order, and still connected.
        let mut heard = Vec::new();
        let mut own = Vec::new();
        let mut slowed = false;
        while own.len() < FLOOD {
            let event = json.json().await;
            match event["type"].as_str() {
                Some("error") if event["code"] == "flood" => slowed = true,
                Some("error") => panic!("json flooder got {event}"),
                Some("message") if event["from"] == "chatter" => {
                    heard.push(event["text"].as_str().unwrap().to_owned())
                }
                Some("message") if event["from"] == "jflood" => {
                    own.push(event["text"].as_str().unwrap().to_owned())
                }
                _ => {}
            }
        }
        assert!(slowed, "no flood notice");
        assert!(
            started.elapsed() > Duration::from_secs(2),
            "the flood was not throttled"
        );
        assert_eq!(
            heard, chatter,
            "chatter reached the throttled JSON client late"
        );
        let expected: Vec<String> = (1..=FLOOD).map(|n| format!("j{n}")).collect();
        assert_eq!(own, expected);
        json.send_json(json!({"type": "ping", "id": "alive"})).await;
        assert_eq!(json.json_of_type("pong").await["id"], "alive");
    };
    let ws_side = async {
        // The WebSocket flooder: pings and the chatter while it waited, then its own.
        let mut pings_while_waiting = 0;
        let mut heard = Vec::new();
        let mut own = Vec::new();
        while own.len() < FLOOD {
            let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws.stream))
                .await
                .expect("a WebSocket message in time");
            let message = message.expect("still open");
            let Ok(message) = message else {
                panic!("{message:?}; server log:\n{}", server.log());
            };
            match message {
                Message::Ping(_) => pings_while_waiting += 1,
                Message::Text(text) => {
                    let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                    match (event["type"].as_str(), event["from"].as_str()) {
                        (Some("message"), Some("chatter")) => {
                            heard.push(event["text"].as_str().unwrap().to_owned())
                        }
                        (Some("message"), Some("wflood")) => {
                            own.push(event["text"].as_str().unwrap().to_owned())
                        }
                        (Some("error"), _) if event["code"] == "flood" => {}
                        (Some("error"), _) => panic!("websocket flooder got {event}"),
                        _ => {}
                    }
                }
                Message::Close(frame) => panic!("websocket closed: {frame:?}\n{}", server.log()),
                _ => {}
            }
        }
        assert!(
            pings_while_waiting >= 2,
            "{pings_while_waiting} keepalive pings while throttled"
        );
        assert_eq!(
            heard, chatter,
            "chatter reached the throttled WebSocket late"
        );
        let expected: Vec<String> = (1..=FLOOD).map(|n| format!("w{n}")).collect();
        assert_eq!(own, expected);
        ws.send(json!({"type": "ping", "id": "alive"})).await;
        assert_eq!(ws.of_type("pong").await["id"], "alive");
    };
    tokio::join!(json_side, ws_side);
    server.stop().await;
}

/// A TCP connection to `addr` from the loopback address `from` (the whole 127/8 is
/// this machine's), so one address's limit can be filled while another checks.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connected in time")
        .unwrap()
}

/// A connection from 127.0.0.2 to the line door at `line`, once the server has taken
/// it in (its prompt arrived): with `--max-clients-per-ip 1` that address is now full.
async fn hold_a_slot(line: SocketAddr) -> TcpStream {
    let mut holder = connect_from("127.0.0.2", line).await;
    let mut prompt = [0u8; 17];
    holder.read_exact(&mut prompt).await.unwrap();
    assert_eq!(&prompt, b"Enter your name: ");
    holder
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `/metrics` over HTTPS from 127.0.0.1, from the web door at `web`.
async fn scrape(web: SocketAddr, connector: &TlsConnector) -> String {
    let tcp = TcpStream::connect(web).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (status, body) = http_get(tls, "localhost", "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// Connections that never start their TLS handshake hold a slot each: with
/// `--max-clients-per-ip 4`, a fifth from the same address is closed at once, and the
/// four are closed when the handshake deadline passes, after which that address is
/// served again. Another address is served throughout.
#[tokio::test]
async fn a_tls_handshake_flood_is_held_by_the_limits_and_the_deadline() {
    let tls = certificate(&["localhost"]);
    let mut flags = tls.flags().to_vec();
    flags.extend(["--line-tls", "127.0.0.1:0", "--max-clients-per-ip", "4"]);
    // Long enough that the fifth connection's refusal, on a loaded machine, still
    // comes well before the deadline it must not be mistaken for.
    flags.extend(["--tls-handshake-timeout", "4s"]);
    let server = InProcess::start(&flags).await;
    let door = server.addr("line-tls");
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect_from("127.0.0.2", door).await);
    }
    let mut fifth = connect_from("127.0.0.2", door).await;
    assert!(
        closed_within(&mut fifth, Duration::from_millis(3000)).await,
        "the fifth connection from one address was not refused"
    );
    assert!(opened.elapsed() < Duration::from_secs(4));

    // Another address gets in and chats over TLS while 127.0.0.2's slots are held.
    let name = ServerName::try_from("localhost").unwrap();
    let tcp = connect_from("127.0.0.1", door).await;
    let stream = tls.connector.connect(name.clone(), tcp).await.unwrap();
    let mut alice = Lines::new(stream);
    alice.send_line("alice").await;
    alice.line_containing("welcome, alice").await;

    for stream in &mut silent {
        assert!(
            closed_within(stream, WAIT).await,
            "a connection that never handshook was kept"
        );
    }
    let held = opened.elapsed();
    assert!(
        held >= Duration::from_millis(3900),
        "closed after {held:?}, before the deadline"
    );
    // The server closes a timed-out socket a moment before it frees its slot: a
    // connection in between is refused, so bob tries until he is let in.
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        let tcp = connect_from("127.0.0.2", door).await;
        match tls.connector.connect(name.clone(), tcp).await {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "127.0.0.2 never got back in: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut bob = Lines::new(stream);
    bob.send_line("bob").await;
    bob.line_containing("welcome, bob").await;
    alice.line_containing("bob joined").await;

    let metrics = scrape(server.addr("web"), &tls.connector).await;
    let refused = |reason: &str| {
        metric(
            &metrics,
            &format!(r#"switchboard_refused_total{{listener="line-tls",reason="{reason}"}}"#),
        )
    };
    assert_eq!(refused("too_many_from_address"), 1.0, "{metrics}");
    assert_eq!(refused("tls_handshake_timeout"), 4.0, "{metrics}");
    server.stop().await;
}

/// With one connection allowed per address, a second on each listener is refused in
/// that door's words (none before a TLS handshake), logged once and counted once.
#[tokio::test]
async fn refusals_on_every_door_are_told_logged_and_counted() {
    let tls = certificate(&["localhost"]);
    let mut flags = tls.flags().to_vec();
    flags.extend(["--line-tls", "127.0.0.1:0", "--json-tls", "127.0.0.1:0"]);
    flags.extend(["--max-clients-per-ip", "1"]);
    let server = Server::start_logged(
        &flags,
        &["line", "json", "line-tls", "json-tls", "web"],
        "info",
    )
    .await;
    let holder = hold_a_slot(server.addr("line")).await;

    let refusal = "too many connections from your address (limit 1); close one and retry";
    let mut said = std::collections::HashMap::new();
    for listener in ["line", "json", "web", "line-tls", "json-tls"] {
        let mut refused = connect_from("127.0.0.2", server.addr(listener)).await;
        let mut words = Vec::new();
        let read = tokio::time::timeout(WAIT, refused.read_to_end(&mut words)).await;
        assert!(
            read.is_ok(),
            "{listener}: the refusal did not close in time"
        );
        said.insert(listener, String::from_utf8_lossy(&words).into_owned());
    }
    assert_eq!(said["line"], format!("error: {refusal}\n"));
    let json_error: serde_json::Value = serde_json::from_str(said["json"].trim()).unwrap();
    assert_eq!(
        (json_error["type"].as_str(), json_error["text"].as_str()),
        (Some("error"), Some(refusal))
    );
    // The web door speaks HTTPS here: nothing before a handshake either.
    for listener in ["web", "line-tls", "json-tls"] {
        assert_eq!(
            said[listener], "",
            "{listener}: words before a TLS handshake"
        );
    }

    let metrics = scrape(server.addr("web"), &tls.connector).await;
    let log = server.log();
    for listener in ["line", "json", "web", "line-tls", "json-tls"] {
        let series = format!(
            r#"switchboard_refused_total{{listener="{listener}",reason="too_many_from_address"}}"#
        );
        assert_eq!(metric(&metrics, &series), 1.0, "{series} in {metrics}");
        let logged = log
            .lines()
            .filter(|line| line.contains(&format!(" {listener}: refused: ")))
            .count();
        assert_eq!(
            logged, 1,
            "{listener} refusals logged {logged} times in:\n{log}"
        );
    }
    drop(holder);
    server.stop().await;
}

/// A plain-HTTP connection over the limit is answered 503 with the reason, and closed.
#[tokio::test]
async fn a_refused_web_connection_is_answered_503() {
    let server = InProcess::start(&["--max-clients-per-ip", "1"]).await;
    let holder = hold_a_slot(server.addr("line")).await;
    let mut refused = connect_from("127.0.0.2", server.addr("web")).await;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, refused.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with(
            "\r\n\r\ntoo many connections from your address (limit 1); close one and retry\n"
        ),
        "{answer}"
    );
    // Another address still gets the page.
    let page = TcpStream::connect(server.addr("web")).await.unwrap();
    let (status, _) = http_get(page, "127.0.0.1", "/healthz").await;
    assert_eq!(status, 200);
    drop(holder);
    server.stop().await;
}
