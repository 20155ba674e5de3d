//! TLS against the real server, with a certificate made in the test (rcgen): the
//! TLS-only line and JSON listeners, HTTPS and WSS on the web listener, and clear
//! startup errors for unusable certificate files.

mod support;

use std::path::Path;

use rustls_pki_types::ServerName;
use serde_json::json;
use support::inproc::InProcess as Server;
use support::web::{certificate, http_get, Lines, Ws};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

async fn tls_connect(connector: &TlsConnector, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn tls_line_json_https_and_wss_reach_the_same_room() {
    let tls = certificate(&["localhost", "127.0.0.1", "chat.test"]);
    let server = Server::start(&[
        "--tls-cert",
        path(&tls.cert),
        "--tls-key",
        path(&tls.key),
        "--line-tls",
        "127.0.0.1:0",
        "--json-tls",
        "127.0.0.1:0",
    ])
    .await;
    assert!(
        server.url("web").starts_with("https://"),
        "{:?}",
        server.doors
    );

    let mut secure_line = Lines::new(tls_connect(&tls.connector, server.addr("line-tls")).await);
    secure_line.send_line("sline").await;
    secure_line.line_containing("welcome").await;
    let mut secure_json = Lines::new(tls_connect(&tls.connector, server.addr("json-tls")).await);
    secure_json
        .send_json(json!({"type": "nick", "nick": "sjson", "id": 1}))
        .await;
    secure_json.json_of_type("welcome").await;
    let mut plain = Lines::line_login(server.addr("line"), "plain").await;

    // HTTPS
    let web = server.addr("web");
    let (status, body) = http_get(
        tls_connect(&tls.connector, web).await,
        "localhost",
        "/healthz",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, page) = http_get(tls_connect(&tls.connector, web).await, "localhost", "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("app.js"));

    // WSS
    let stream = tls_connect(&tls.connector, web).await;
    let (stream, _) = tokio_tungstenite::client_async("wss://localhost/ws", stream)
        .await
        .expect("WSS handshake");
    let mut wss = Ws { stream };
    wss.send(json!({"type": "nick", "nick": "swss"})).await;
    wss.of_type("welcome").await;

    secure_line.send_line("over tls").await;
    assert_eq!(plain.line_containing("[sline]").await, "[sline] over tls");
    assert_eq!(
        secure_json.json_of_type("message").await["text"],
        "over tls"
    );
    let seen = wss.of_type("message").await;
    assert_eq!(seen["from"], "sline");
    wss.send(json!({"type": "say", "text": "over wss"})).await;
    assert_eq!(
        secure_line.line_containing("[swss]").await,
        "[swss] over wss"
    );
    secure_json
        .send_json(json!({"type": "say", "text": "json over tls"}))
        .await;
    assert_eq!(
        plain.line_containing("[sjson]").await,
        "[sjson] json over tls"
    );

    // Plain text on a TLS port is no chat: the handshake fails and nobody joins.
    let mut confused = Lines::connect(server.addr("line-tls")).await;
    confused.send_line("hello?").await;
    assert!(
        confused
            .line()
            .await
            .is_none_or(|line| !line.contains("welcome")),
        "plain text must not reach the chat on a TLS port"
    );
    server.stop().await;
}

#[tokio::test]
async fn over_wss_pages_under_the_certificates_names_are_the_servers_own() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = certificate(&["localhost", "127.0.0.1", "chat.test"]);
    let server = Server::start(&["--tls-cert", path(&tls.cert), "--tls-key", path(&tls.key)]).await;
    let web = server.addr("web");
    // chat.test is on the certificate; evil.test could be anyone's name pointed here.
    for (name, status) in [("chat.test", &b"101"[..]), ("evil.test", b"403")] {
        let mut stream = tls_connect(&tls.connector, web).await;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {name}\r\nOrigin: https://{name}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[9..12], status, "{name}");
    }
    server.stop().await;
}

/// The binary itself: what it says on stderr and its exit status are the point.
#[tokio::test]
async fn unusable_certificate_files_are_named_at_startup() {
    let tls = certificate(&["localhost", "127.0.0.1", "chat.test"]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let garbage = dir.path().join("garbage-key.pem");
    std::fs::write(&garbage, "this is not a key\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", path(&missing), "--tls-key", path(&tls.key)],
            "missing-cert.pem",
        ),
        (
            vec!["--tls-cert", path(&tls.cert), "--tls-key", path(&garbage)],
            "garbage-key.pem",
        ),
        (vec!["--tls-cert", path(&tls.cert)], "--tls-key"),
        (vec!["--line-tls", "127.0.0.1:0"], "--tls-cert"),
    ];
    for (args, expected) in cases {
        let mut named = vec!["--line", "127.0.0.1:0"];
        named.extend(&args);
        let output = support::serve_command(&named, "off").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should not start");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
