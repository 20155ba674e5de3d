//! The IRC door over raw sockets against the real server: registration, the welcome,
//! channels shared with the line and WebSocket doors, private messages, error
//! numerics, and text from other doors that cannot forge IRC lines.

mod support;

use serde_json::json;
use support::inproc::InProcess as Server;
use support::web::{Lines, Ws};
use tokio::net::TcpStream;

/// The server in this process: these tests need no process of its own.
async fn start() -> Server {
    Server::start(&[]).await
}

/// Register `nick` and read through the welcome and the default room's NAMES.
async fn irc_login(server: &Server, nick: &str) -> Lines<TcpStream> {
    let mut irc = Lines::connect(server.addr("irc")).await;
    irc.send_line(&format!("NICK {nick}\r")).await;
    irc.send_line(&format!("USER {nick} 0 * :{nick} the tester\r"))
        .await;
    irc.line_containing(" 001 ").await;
    irc.line_containing(" 366 ").await;
    irc
}

#[tokio::test]
async fn an_irc_client_registers_joins_and_talks_with_the_other_doors() {
    let server = start().await;
    let mut irc = Lines::connect(server.addr("irc")).await;
    irc.send_line("CAP LS 302\r").await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":switchboard CAP * LS :cap-notify echo-message multi-prefix server-time sasl=PLAIN extended-join away-notify message-tags account-tag batch draft/chathistory draft/account-registration"
    );
    irc.send_line("NICK alice\r").await;
    irc.send_line("USER alice 0 * :Alice\r").await;
    irc.send_line("CAP END\r").await;
    let welcome = irc.line().await.unwrap();
    assert!(
        welcome.starts_with(":switchboard 001 alice :Welcome"),
        "{welcome}"
    );
    let isupport = irc.line_containing(" 005 ").await;
    assert!(isupport.contains("CHANTYPES=#"), "{isupport}");
    irc.line_containing(" 376 alice :End of /MOTD command.")
        .await;
    // Landed in the default room like every client: JOIN, then its member list.
    assert_eq!(
        irc.line().await.unwrap(),
        ":alice!alice@switchboard JOIN #general"
    );
    let names = irc.line_containing(" 353 ").await;
    assert!(names.ends_with("#general :alice"), "{names}");
    irc.line_containing(" 366 alice #general ").await;

    let mut nc = support::web::Lines::line_login(server.addr("line"), "bob").await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":bob!bob@switchboard JOIN #general"
    );
    let (mut ws, _) = Ws::login(&format!("ws://{}/ws", server.addr("web")), "carol").await;
    irc.line_containing(":carol!carol@switchboard JOIN #general")
        .await;

    nc.send_line("hello from netcat").await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":bob!bob@switchboard PRIVMSG #general :hello from netcat"
    );
    ws.send(json!({"type": "say", "text": "hello from the browser"}))
        .await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":carol!carol@switchboard PRIVMSG #general :hello from the browser"
    );

    irc.send_line("PRIVMSG #general :hello from irc\r").await;
    nc.line_containing("[alice] hello from irc").await;
    // The browser has bob's line and its own before it.
    let said = loop {
        let message = ws.of_type("message").await;
        if message["from"] == "alice" {
            break message;
        }
    };
    assert_eq!(said["text"], "hello from irc");

    irc.send_line("PRIVMSG #general :\u{1}ACTION waves\u{1}\r")
        .await;
    nc.line_containing("* alice waves").await;

    // A private message both ways.
    irc.send_line("PRIVMSG bob :psst\r").await;
    nc.line_containing("[alice -> bob] psst").await;
    // An IRC client shows what it typed itself: none of it comes back, so the next
    // line it gets is what bob says after having seen all of it.
    nc.send_line("got all three").await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":bob!bob@switchboard PRIVMSG #general :got all three",
        "nothing alice said was echoed to her"
    );
    nc.send_line("/msg alice back at you").await;
    irc.line_containing(":bob!bob@switchboard PRIVMSG alice :back at you")
        .await;

    // Another channel: JOIN answers with the JOIN and NAMES; others see it.
    irc.send_line("JOIN #side\r").await;
    irc.line_containing(":alice!alice@switchboard JOIN #side")
        .await;
    irc.line_containing(" 353 alice = #side :alice").await;
    irc.line_containing(" 366 alice #side ").await;
    nc.send_line("/join #side").await;
    irc.line_containing(":bob!bob@switchboard JOIN #side").await;
    nc.send_line("in the side room").await;
    irc.line_containing("PRIVMSG #side :in the side room").await;
    irc.send_line("PART #side :enough\r").await;
    nc.line_containing("alice left #side").await;

    irc.send_line("QUIT :bye now\r").await;
    irc.line_containing("ERROR :Closing link: client_quit")
        .await;
    assert_eq!(irc.line().await, None, "closed after ERROR");
    nc.line_containing("alice left #general").await;
    server.stop().await;
}

#[tokio::test]
async fn irc_errors_come_as_numerics_and_the_connection_keeps_serving() {
    let server = start().await;
    let _bob = support::web::Lines::line_login(server.addr("line"), "bob").await;
    let mut irc = Lines::connect(server.addr("irc")).await;
    irc.send_line("JOIN #general\r").await;
    irc.line_containing(" 451 * :You have not registered").await;
    irc.send_line("PING :early\r").await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":switchboard PONG switchboard :early"
    );
    // A name taken on another door, compared case-insensitively.
    irc.send_line("NICK BOB\r").await;
    irc.send_line("USER x 0 * :x\r").await;
    irc.line_containing(" 433 * BOB :Nickname is already in use")
        .await;
    irc.send_line("NICK b@d\r").await;
    irc.line_containing(" 432 * b@d :Erroneous nickname").await;
    irc.send_line("NICK dave\r").await;
    irc.line_containing(" 001 dave ").await;
    irc.line_containing(" 366 ").await;

    irc.send_line("FROBNICATE now\r").await;
    irc.line_containing(" 421 dave FROBNICATE :Unknown command")
        .await;
    irc.send_line("PRIVMSG nobody :hello?\r").await;
    irc.line_containing(" 401 dave nobody :nobody is called nobody")
        .await;
    irc.send_line("PRIVMSG #general\r").await;
    irc.line_containing(" 412 dave :No text to send").await;
    irc.send_line("USER again 0 * :x\r").await;
    irc.line_containing(" 462 ").await;
    let long = format!("PRIVMSG #general :{}\r", "x".repeat(600));
    irc.send_line(&long).await;
    irc.line_containing(" 417 dave :Input line was too long")
        .await;
    // Still served after all of it.
    irc.send_line("PING :still-here\r").await;
    irc.line_containing("PONG switchboard :still-here").await;
    irc.send_line("WHOIS bob\r").await;
    irc.line_containing(" 311 dave bob bob switchboard * :client")
        .await;
    irc.line_containing(" 318 dave bob :End of /WHOIS list")
        .await;
    irc.send_line("LIST\r").await;
    irc.line_containing(" 322 dave #general 2 :").await;
    irc.line_containing(" 323 ").await;
    // Numerics name the reader as it is now, after a nick change too (the door's own
    // and the hub's).
    irc.send_line("NICK dave2\r").await;
    irc.line_containing(":dave!dave@switchboard NICK dave2")
        .await;
    irc.send_line("FROBNICATE again\r").await;
    irc.line_containing(" 421 dave2 FROBNICATE :Unknown command")
        .await;
    irc.send_line("PRIVMSG nobody :still?\r").await;
    irc.line_containing(" 401 dave2 nobody :").await;
    server.stop().await;
}

/// A JSON program's text holding CR LF must not become a second IRC line (a forged
/// command) for IRC clients; nor may a name or room from elsewhere.
#[tokio::test]
async fn text_from_other_doors_cannot_forge_irc_lines() {
    let server = start().await;
    let mut irc = irc_login(&server, "alice").await;
    let (mut json, _) = support::web::Lines::json_login(server.addr("json"), "mallory").await;
    irc.line_containing("JOIN #general").await;
    json.send_json(json!({"type": "say", "text": "hi\r\nQUIT :pwned\r\nPRIVMSG #general :x"}))
        .await;
    let line = irc
        .line_containing(":mallory!mallory@switchboard PRIVMSG")
        .await;
    assert!(
        line.contains("QUIT :pwned"),
        "the text arrives as text: {line}"
    );
    // The very next line is the pong, not a forged command.
    irc.send_line("PING :after\r").await;
    assert_eq!(
        irc.line().await.unwrap(),
        ":switchboard PONG switchboard :after"
    );

    // The same from a WebSocket, in text, data, a topic and an away message: each
    // arrives as one line, and the next line is always the pong.
    let (mut ws, _) = Ws::login(&format!("ws://{}/ws", server.addr("web")), "eve").await;
    irc.line_containing(":eve!eve@switchboard JOIN #general")
        .await;
    irc.send_line("CAP REQ :away-notify\r").await;
    irc.line_containing("CAP alice NAK").await;
    let forged = "x\r\nKILL alice\n\0NICK root";
    for request in [
        json!({"type": "say", "text": forged}),
        json!({"type": "say", "text": "with data", "data": {"note": forged}}),
        json!({"type": "topic", "text": forged}),
        json!({"type": "msg", "to": "alice", "text": forged}),
    ] {
        ws.send(request.clone()).await;
        let line = irc.line().await.unwrap();
        assert!(
            line.starts_with(":eve!eve@switchboard "),
            "{request}: {line}"
        );
        assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        irc.send_line("PING :next\r").await;
        assert_eq!(
            irc.line().await.unwrap(),
            ":switchboard PONG switchboard :next",
            "after {request}"
        );
    }
    ws.send(json!({"type": "away", "text": forged})).await;
    assert_eq!(ws.of_type("away").await["away"], true);
    irc.send_line("WHOIS eve\r").await;
    irc.line_containing(" 311 alice eve ").await;
    let away = irc.line().await.unwrap();
    assert!(away.starts_with(":switchboard 301 alice eve :"), "{away}");
    assert!(!away.contains(['\r', '\n', '\0']), "{away:?}");
    server.stop().await;
}

/// TOPIC set from IRC reaches every door, a joiner gets 332/333, the line door can
/// ask for it; WHO lists a channel's members one 352 each; ISON, USERHOST and the
/// JSON `online` request say who is here.
#[tokio::test]
async fn topics_are_shared_across_doors_and_who_lists_the_members() {
    let server = start().await;
    let mut alice = irc_login(&server, "alice").await;
    let mut bob = support::web::Lines::line_login(server.addr("line"), "bob").await;
    let (mut json, _) = support::web::Lines::json_login(server.addr("json"), "jo").await;
    alice
        .line_containing(":jo!jo@switchboard JOIN #general")
        .await;
    alice.send_line("TOPIC #general\r").await;
    alice
        .line_containing(" 331 alice #general :No topic is set")
        .await;

    alice.send_line("TOPIC #general :release on Friday\r").await;
    alice
        .line_containing(":alice!alice@switchboard TOPIC #general :release on Friday")
        .await;
    bob.line_containing("*** alice set the topic of #general: release on Friday")
        .await;
    let changed = json.json_of_type("topic_changed").await;
    assert_eq!(changed["nick"], "alice");
    assert_eq!(changed["text"], "release on Friday");
    bob.send_line("/topic").await;
    bob.line_containing("*** topic of #general: release on Friday (set by alice)")
        .await;

    // A joiner hears the topic after its JOIN, before the NAMES.
    let mut carol = Lines::connect(server.addr("irc")).await;
    carol.send_line("NICK carol\r").await;
    carol.send_line("USER carol 0 * :Carol\r").await;
    carol
        .line_containing(":carol!carol@switchboard JOIN #general")
        .await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 332 carol #general :release on Friday"
    );
    let who_set = carol.line().await.unwrap();
    assert!(
        who_set.starts_with(":switchboard 333 carol #general alice!alice@switchboard "),
        "{who_set}"
    );
    carol.line_containing(" 366 ").await;

    carol.send_line("WHO #general\r").await;
    for nick in ["alice", "bob", "carol", "jo"] {
        assert_eq!(
            carol.line().await.unwrap(),
            format!(
                ":switchboard 352 carol #general {nick} switchboard switchboard {nick} H :0 {nick}"
            )
        );
    }
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 315 carol #general :End of /WHO list"
    );
    // Presence: ISON and USERHOST, as the owners spell their names.
    carol.send_line("ISON :ALICE nobody Bob\r").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 303 carol :alice bob"
    );
    carol.send_line("USERHOST jo nobody\r").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 302 carol :jo=+jo@switchboard"
    );
    json.send_json(serde_json::json!({"type": "online", "nicks": ["carol", "zed"], "id": 5}))
        .await;
    let online = json.json_of_type("online").await;
    assert_eq!(online["nicks"], serde_json::json!(["carol"]));
    assert_eq!(online["id"], 5);
    carol.send_line("LUSERS\r").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 251 carol :There are 4 users and 0 invisible on 1 servers"
    );
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 254 carol 1 :channels formed"
    );
    carol.line_containing(" 255 carol :I have 4 clients").await;
    // Setting a topic of a channel you are not in is refused with its numeric.
    bob.send_line("/join #side").await;
    bob.line_containing("*** bob joined #side").await;
    carol.send_line("TOPIC #side :mine now\r").await;
    carol
        .line_containing(" 442 carol #side :you are not in #side")
        .await;
    server.stop().await;
}

/// AWAY: 306 and 305 to the client, 301 to whoever sends it a private message (on
/// any door; never for a NOTICE), and in WHOIS.
#[tokio::test]
async fn away_is_told_to_correspondents_and_shown_by_whois() {
    let server = start().await;
    let mut alice = irc_login(&server, "alice").await;
    let mut bob = support::web::Lines::line_login(server.addr("line"), "bob").await;
    let mut carol = irc_login(&server, "carol").await;
    alice.send_line("AWAY :at lunch\r").await;
    alice
        .line_containing(" 306 alice :You have been marked as being away")
        .await;
    bob.send_line("/msg alice are you there?").await;
    bob.line_containing("*** alice is away: at lunch").await;
    carol.send_line("PRIVMSG alice :ping?\r").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 301 carol alice :at lunch"
    );
    carol.send_line("WHOIS alice\r").await;
    carol.line_containing(" 311 carol alice ").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard 301 carol alice :at lunch"
    );
    carol
        .line_containing(" 318 carol alice :End of /WHOIS list")
        .await;
    // A NOTICE never draws an automatic reply: delivered, and no 301.
    carol.send_line("NOTICE alice :just so you know\r").await;
    carol.send_line("PING :notice\r").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard PONG switchboard :notice",
        "no 301 for a NOTICE"
    );
    bob.send_line("/whois alice").await;
    bob.line_containing("; away: at lunch").await;
    // WHO marks who is gone (G) and who is here (H); the line door says (away).
    carol.send_line("WHO #general\r").await;
    carol
        .line_containing(" 352 carol #general alice switchboard switchboard alice G :0 alice")
        .await;
    carol
        .line_containing(" 352 carol #general bob switchboard switchboard bob H :0 bob")
        .await;
    carol.line_containing(" 315 carol #general ").await;
    bob.send_line("/who").await;
    bob.line_containing("alice (away), bob").await;
    alice.line_containing("PRIVMSG alice :ping?").await;
    alice.line_containing("alice :just so you know").await;
    alice.send_line("AWAY\r").await;
    alice
        .line_containing(" 305 alice :You are no longer marked as being away")
        .await;
    // Back: a private message is just delivered.
    carol.send_line("PRIVMSG alice :welcome back\r").await;
    alice.line_containing("PRIVMSG alice :welcome back").await;
    carol.send_line("PING :after\r").await;
    assert_eq!(
        carol.line().await.unwrap(),
        ":switchboard PONG switchboard :after",
        "no 301 any more"
    );
    server.stop().await;
}

/// `--irc-password`: without it, or with a wrong one, 464 and the link is closed
/// (counted as `bad_password`); with it, the welcome and `--irc-motd`'s lines.
#[tokio::test]
async fn a_server_password_and_a_motd_file() {
    let dir = tempfile::tempdir().unwrap();
    let motd = dir.path().join("motd.txt");
    std::fs::write(&motd, "Be kind.\nRooms are channels.\n").unwrap();
    let motd = motd.display().to_string();
    let args = [
        "--irc",
        "127.0.0.1:0",
        "--irc-password",
        "sesame",
        "--irc-motd",
        &motd,
    ];
    let server = Server::start(&args).await;
    for pass in ["", "PASS wrong\r"] {
        let mut eve = Lines::connect(server.addr("irc")).await;
        if !pass.is_empty() {
            eve.send_line(pass).await;
        }
        eve.send_line("NICK eve\r").await;
        eve.send_line("USER eve 0 * :Eve\r").await;
        assert_eq!(
            eve.line().await.unwrap(),
            ":switchboard 464 * :Password incorrect"
        );
        eve.line_containing("ERROR :Closing link: bad_password")
            .await;
        assert_eq!(eve.line().await, None, "closed after ERROR");
    }
    let mut ali = Lines::connect(server.addr("irc")).await;
    ali.send_line("PASS sesame\r").await;
    ali.send_line("NICK ali\r").await;
    ali.send_line("USER ali 0 * :Ali\r").await;
    ali.line_containing(" 375 ali :- switchboard Message of the day -")
        .await;
    assert_eq!(
        ali.line().await.unwrap(),
        ":switchboard 372 ali :- Be kind."
    );
    assert_eq!(
        ali.line().await.unwrap(),
        ":switchboard 372 ali :- Rooms are channels."
    );
    ali.line_containing(" 376 ali :End of /MOTD command.").await;
    let (_, metrics) = support::web::http_get(
        TcpStream::connect(server.addr("web")).await.unwrap(),
        "localhost",
        "/metrics",
    )
    .await;
    assert!(
        metrics.contains("reason=\"bad_password\""),
        "refused registrations are counted by reason"
    );
    server.stop().await;
}

/// IRCv3 capabilities, negotiated before registration: `echo-message` brings a
/// client's own lines back, `server-time` tags every line, and a joiner's replayed
/// history carries the time each message was said; a client that asked for nothing in
/// the same room is sent neither.
#[tokio::test]
async fn negotiated_capabilities_change_what_that_client_is_sent() {
    let server = start().await;
    let mut plain = irc_login(&server, "plain").await;
    plain
        .send_line("PRIVMSG #general :said before carol came\r")
        .await;
    // Seen by bob (who came first) once it is in the history.
    let mut nc = support::web::Lines::line_login(server.addr("line"), "bob").await;
    nc.send_line("/history").await;
    nc.line_containing("said before carol came").await;

    let mut carol = Lines::connect(server.addr("irc")).await;
    carol.send_line("CAP LS 302\r").await;
    let offered = carol.line_containing(" CAP * LS :").await;
    assert!(
        offered.contains("server-time") && offered.contains("echo-message"),
        "{offered}"
    );
    carol.send_line("NICK carol\r").await;
    carol.send_line("USER carol 0 * :Carol\r").await;
    carol.send_line("CAP REQ :server-time echo-message\r").await;
    carol
        .line_containing(" CAP * ACK :server-time echo-message")
        .await;
    carol.send_line("CAP END\r").await;
    let welcome = carol.line_containing(" 001 carol ").await;
    assert!(welcome.starts_with("@time="), "{welcome}");
    // The replay: the PRIVMSG as it was, tagged with when it was said.
    let replayed = carol
        .line_containing(":plain!plain@switchboard PRIVMSG #general :said before carol came")
        .await;
    assert!(replayed.starts_with("@time=20"), "{replayed}");
    carol.line_containing(" 366 ").await;

    carol
        .send_line("PRIVMSG #general :with my own echo\r")
        .await;
    let echoed = carol
        .line_containing(":carol!carol@switchboard PRIVMSG #general :with my own echo")
        .await;
    assert!(echoed.starts_with("@time="), "{echoed}");
    // The plain client: untagged, and still not sent its own lines.
    let seen = plain
        .line_containing("PRIVMSG #general :with my own echo")
        .await;
    assert_eq!(
        seen,
        ":carol!carol@switchboard PRIVMSG #general :with my own echo"
    );
    nc.line_containing("[carol] with my own echo").await;
    server.stop().await;
}

/// `--irc-tls`: the same door behind TLS (as irssi's `-tls` or WeeChat's `tls=on`
/// reach it), and its traffic counted under its own door label in `/metrics`.
#[tokio::test]
async fn the_irc_door_over_tls_and_in_the_metrics() {
    let tls = support::web::certificate(&["localhost"]);
    let mut extra = vec!["--irc-tls", "127.0.0.1:0"];
    extra.extend(tls.flags());
    let server = Server::start(&extra).await;
    let mut irc = Lines::new(tls_connect(&tls.connector, server.addr("irc-tls")).await);
    irc.send_line("NICK secure\r").await;
    irc.send_line("USER secure 0 * :over tls\r").await;
    irc.line_containing(" 001 secure ").await;
    irc.line_containing(" 366 ").await;
    let mut nc = Lines::line_login(server.addr("line"), "plain").await;
    irc.send_line("PRIVMSG #general :sealed\r").await;
    nc.line_containing("[secure] sealed").await;

    let web = server.addr("web");
    let (_, metrics) = support::web::http_get(
        tls_connect(&tls.connector, web).await,
        "localhost",
        "/metrics",
    )
    .await;
    assert_eq!(
        support::web::metric(&metrics, "switchboard_messages_in_total{door=\"irc\"}"),
        1.0,
        "{metrics}"
    );
    server.stop().await;
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// `extended-join` and `away-notify`: a client that asked for them sees the account
/// of whoever joins (`*` for a guest) and peers going away and coming back; one that
/// did not sees plain JOINs and no AWAY.
#[tokio::test]
async fn extended_join_and_away_notify_tell_accounts_and_absences() {
    let server = start().await;
    let mut watcher = Lines::connect(server.addr("irc")).await;
    watcher
        .send_line(
            "CAP LS 302\r\nCAP REQ :extended-join away-notify\r\nNICK watcher\r\nUSER w 0 * :w\r\n",
        )
        .await;
    watcher
        .line_containing("CAP * ACK :extended-join away-notify")
        .await;
    watcher.send_line("CAP END\r\nJOIN #den\r").await;
    watcher.line_containing(" 366 ").await;
    watcher.line_containing(" 366 ").await;
    let mut plain = irc_login(&server, "plain").await;
    plain.send_line("JOIN #den\r").await;
    plain.line_containing(" 366 ").await;
    watcher
        .line_containing(":plain!plain@switchboard JOIN #den * :plain")
        .await;

    let mut bob = Lines::line_account(server.addr("line"), "bob").await;
    bob.send_line("/join #den").await;
    bob.line_containing("*** bob joined #den").await;
    watcher
        .line_containing(":bob!bob@switchboard JOIN #den bob :bob")
        .await;
    bob.send_line("/away at lunch").await;
    bob.line_containing("you are marked as away").await;
    watcher
        .line_containing(":bob!bob@switchboard AWAY :at lunch")
        .await;
    bob.send_line("/away").await;
    bob.line_containing("you are back").await;
    assert_eq!(
        watcher.line().await.unwrap(),
        ":bob!bob@switchboard AWAY",
        "back: AWAY without a message"
    );
    // The client without the capabilities: a plain JOIN, and no AWAY before its pong.
    plain
        .line_containing(":bob!bob@switchboard JOIN #den")
        .await
        .ends_with("JOIN #den")
        .then_some(())
        .expect("a plain JOIN");
    plain.send_line("PING :done\r").await;
    let rest = plain.line_containing("PONG").await;
    assert!(rest.ends_with(":done"), "{rest}");
    server.stop().await;
}

/// One message of a CHATHISTORY answer.
struct Paged {
    text: String,
    msgid: String,
    time: String,
}

fn texts(page: &[Paged]) -> Vec<&str> {
    page.iter().map(|message| message.text.as_str()).collect()
}

/// Send `command` (a CHATHISTORY request) and read its answer, from `BATCH +` to
/// `BATCH -`: every message bob said, tagged with the batch, its time, msgid and
/// account.
async fn history_page(irc: &mut Lines<TcpStream>, command: &str) -> Vec<Paged> {
    irc.send_line(&format!("{command}\r")).await;
    let target = command.split(' ').nth(2).unwrap();
    let opened = irc.line().await.unwrap();
    assert_eq!(
        opened,
        format!(":switchboard BATCH +chathistory chathistory {target}")
    );
    let mut messages = Vec::new();
    loop {
        let line = irc.line().await.unwrap();
        if line == ":switchboard BATCH -chathistory" {
            return messages;
        }
        let (tags, rest) = line.split_once(' ').unwrap();
        assert!(tags.starts_with("@batch=chathistory;time="), "{line}");
        assert!(tags.ends_with(";account=bob"), "{line}");
        assert!(rest.starts_with(&format!(":bob!bob@switchboard PRIVMSG {target} :")));
        let tag = |name: &str| {
            tags.split(';')
                .find_map(|tag| tag.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_owned()
        };
        messages.push(Paged {
            text: rest.rsplit(':').next().unwrap().to_owned(),
            msgid: tag("msgid="),
            time: tag("time="),
        });
    }
}

/// IRCv3 `message-tags`, `account-tag`, `batch` and `draft/chathistory`: messages
/// carry their msgid and their sender's account; CHATHISTORY pages a room by msgid
/// (LATEST, BEFORE, AFTER, BETWEEN) in a batch from the same history every door
/// reads; refusals are FAIL lines; a NOTICE arrives as a NOTICE; client tags are
/// taken (up to 8191 bytes) and not relayed.
#[tokio::test]
async fn chathistory_pages_by_msgid_and_messages_carry_their_tags() {
    let server = start().await;
    let mut bob = Lines::line_account(server.addr("line"), "bob").await;
    bob.send_line("/join #log").await;
    bob.line_containing("*** bob joined #log").await;
    for n in 1..=5 {
        bob.send_line(&format!("m{n}")).await;
        bob.line_containing(&format!("[bob] m{n}")).await;
        // Each in its own millisecond, so timestamp references tell them apart.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }

    let mut reader = Lines::connect(server.addr("irc")).await;
    reader
        .send_line(
            "CAP LS 302\r\nCAP REQ :message-tags account-tag batch server-time draft/chathistory\r\nNICK reader\r\nUSER r 0 * :r\r\nCAP END\r\n",
        )
        .await;
    let isupport = reader.line_containing(" 005 reader ").await;
    assert!(
        isupport.contains(" CHATHISTORY=500 MSGREFTYPES=timestamp,msgid "),
        "{isupport}"
    );
    reader.line_containing(" 366 reader #general ").await;
    reader.send_line("JOIN #log\r").await;
    reader.line_containing(" 366 reader #log ").await;
    let mut plain = irc_login(&server, "plain").await;
    plain.send_line("JOIN #log\r").await;
    plain.line_containing(" 366 plain #log ").await;
    reader
        .line_containing(":plain!plain@switchboard JOIN #log")
        .await;

    let latest = history_page(&mut reader, "CHATHISTORY LATEST #log * 3").await;
    assert_eq!(texts(&latest), ["m3", "m4", "m5"]);
    let m3 = &latest[0].msgid;
    let before = history_page(
        &mut reader,
        &format!("CHATHISTORY BEFORE #log msgid={m3} 10"),
    )
    .await;
    assert_eq!(texts(&before), ["m1", "m2"]);
    let (m1, m5) = (&before[0].msgid, &latest[2].msgid);
    let (t1, t3) = (&before[0].time, &latest[0].time);
    for (command, expected) in [
        (format!("AFTER #log msgid={m1} 2"), &["m2", "m3"][..]),
        // LATEST with a reference: the newest, down to (not including) it.
        (format!("LATEST #log msgid={m1} 2"), &["m4", "m5"]),
        (
            format!("BETWEEN #log msgid={m1} msgid={m5} 10"),
            &["m2", "m3", "m4"],
        ),
        // The same by time, as server-time wrote it.
        (format!("BEFORE #log timestamp={t3} 10"), &["m1", "m2"]),
        (format!("LATEST #log timestamp={t1} 2"), &["m4", "m5"]),
        (
            format!("BETWEEN #log timestamp={t3} timestamp={t1} 5"),
            &["m2"],
        ),
    ] {
        let page = history_page(&mut reader, &format!("CHATHISTORY {command}")).await;
        assert_eq!(texts(&page), expected, "{command}");
    }
    // Refusals say why, as IRCv3 standard replies.
    reader
        .send_line("CHATHISTORY LATEST #log timestamp=yesterday 5\r")
        .await;
    reader
        .line_containing("FAIL CHATHISTORY INVALID_PARAMS LATEST #log :not a timestamp")
        .await;
    reader.send_line("CHATHISTORY BEFORE #log * 5\r").await;
    reader
        .line_containing("FAIL CHATHISTORY INVALID_PARAMS BEFORE #log :only LATEST takes *")
        .await;
    reader.send_line("CHATHISTORY LATEST #log * many\r").await;
    reader
        .line_containing("FAIL CHATHISTORY INVALID_PARAMS LATEST #log :the limit")
        .await;
    reader.send_line("CHATHISTORY LATEST #b@d * 5\r").await;
    reader
        .line_containing("FAIL CHATHISTORY INVALID_TARGET LATEST #b@d :")
        .await;
    // A room nobody spoke in: an empty batch.
    assert!(history_page(&mut reader, "CHATHISTORY LATEST #quiet * 5")
        .await
        .is_empty());

    // Live messages carry the same tags; a guest's have no account.
    bob.send_line("m6").await;
    let live = reader.line_containing(" PRIVMSG #log :m6").await;
    assert!(live.starts_with("@time="), "{live}");
    assert!(live.contains(";msgid=#log/"), "{live}");
    assert!(live.contains(";account=bob :bob!bob@switchboard"), "{live}");
    plain
        .line_containing(":bob!bob@switchboard PRIVMSG #log :m6")
        .await;
    plain.send_line("PRIVMSG #log :from a guest\r").await;
    let guest = reader.line_containing(" PRIVMSG #log :from a guest").await;
    assert!(!guest.contains("account="), "{guest}");

    // A NOTICE stays a NOTICE, to a channel and to a nick, and reaches other doors.
    reader.send_line("NOTICE #log :heads up\r").await;
    plain
        .line_containing(":reader!reader@switchboard NOTICE #log :heads up")
        .await;
    bob.line_containing("[reader] heads up").await;
    reader.send_line("NOTICE plain :just you\r").await;
    plain
        .line_containing(":reader!reader@switchboard NOTICE plain :just you")
        .await;

    // Client tags: taken up to 8191 bytes and not relayed; TAGMSG is accepted quietly.
    reader.send_line("@+typing=active TAGMSG #log\r").await;
    let tags = format!("@+example/blob={}", "x".repeat(8000));
    reader
        .send_line(&format!("{tags} PRIVMSG #log :tagged\r"))
        .await;
    assert_eq!(
        plain.line().await.unwrap(),
        ":reader!reader@switchboard PRIVMSG #log :tagged",
        "no TAGMSG, and no client tags"
    );
    let too_many = format!("@+example/blob={} PRIVMSG #log :lost\r", "x".repeat(8200));
    reader.send_line(&too_many).await;
    reader
        .line_containing(" 417 reader :Input line was too long")
        .await;
    reader.send_line("PRIVMSG #log :still here\r").await;
    plain
        .line_containing(":reader!reader@switchboard PRIVMSG #log :still here")
        .await;
    server.stop().await;
}

/// Accounts from IRC: `REGISTER` (draft/account-registration) and NickServ's
/// `REGISTER` and `IDENTIFY`, answered in each one's words. NickServ is the server:
/// nobody may take that name (in any case or look-alike letters), so what is said to
/// it reaches no user.
#[tokio::test]
async fn irc_users_register_and_identify_without_another_door() {
    let server = start().await;
    let mut impostor = Lines::connect(server.addr("line")).await;
    impostor.send_line("nickserv").await;
    impostor
        .line_containing("the name is the server's own; choose another")
        .await;
    let mut irc_impostor = Lines::connect(server.addr("irc")).await;
    irc_impostor
        .send_line("NICK NICKSERV\r\nUSER n 0 * :n\r")
        .await;
    irc_impostor
        .line_containing(" 432 * NICKSERV :Erroneous nickname: the name is the server's own")
        .await;
    let mut impostor = Lines::line_login(server.addr("line"), "NickServ_").await;

    let mut carl = Lines::connect(server.addr("irc")).await;
    carl.send_line("CAP LS 302\r").await;
    let offered = carl.line_containing(" CAP * LS :").await;
    assert!(offered.contains("draft/account-registration"), "{offered}");
    carl.send_line("REGISTER * * early-password\r").await;
    carl.line_containing("FAIL REGISTER COMPLETE_CONNECTION_REQUIRED * :")
        .await;
    carl.send_line("CAP END\r\nNICK carl\r\nUSER c 0 * :c\r")
        .await;
    carl.line_containing(" 366 carl #general ").await;
    carl.send_line("REGISTER someone * carls-password\r").await;
    carl.line_containing("FAIL REGISTER ACCOUNT_NAME_MUST_BE_NICK someone :")
        .await;
    carl.send_line("REGISTER * * carls-password\r").await;
    carl.line_containing(":switchboard REGISTER SUCCESS carl :")
        .await;
    carl.line_containing(" 900 carl carl!carl@switchboard carl :You are now logged in as carl")
        .await;
    carl.send_line("REGISTER carl * carls-password\r").await;
    carl.line_containing("FAIL REGISTER ACCOUNT_EXISTS carl :you are already logged in")
        .await;

    let mut dora = irc_login(&server, "dora").await;
    dora.send_line("PRIVMSG NickServ :REGISTER doras-password\r")
        .await;
    dora.line_containing(
        ":NickServ!NickServ@switchboard NOTICE dora :dora registered; you are logged in as dora",
    )
    .await;
    dora.line_containing(" 900 dora ").await;
    dora.send_line("QUIT :bye\r").await;
    dora.line_containing("ERROR :Closing link").await;

    // Back as a guest under another nick: IDENTIFY takes the account's name.
    let mut back = irc_login(&server, "dora_").await;
    back.send_line("PRIVMSG NickServ :IDENTIFY dora wrong-password\r")
        .await;
    back.line_containing(":NickServ!NickServ@switchboard NOTICE dora_ :")
        .await;
    back.send_line("NS IDENTIFY dora doras-password\r").await;
    back.line_containing(":dora_!dora_@switchboard NICK dora")
        .await;
    back.line_containing(
        ":NickServ!NickServ@switchboard NOTICE dora :dora identified: logged in as dora",
    )
    .await;
    back.send_line("PRIVMSG NickServ :HELP\r").await;
    back.line_containing(":NickServ!NickServ@switchboard NOTICE dora :Commands: REGISTER")
        .await;
    back.send_line("WHOIS dora\r").await;
    back.line_containing(" 330 dora dora dora :is logged in as")
        .await;

    // Nothing said to NickServ reached anyone.
    carl.send_line("PRIVMSG #general :done\r").await;
    loop {
        let line = impostor
            .line()
            .await
            .expect("the line user is still connected");
        assert!(!line.contains("password"), "{line}");
        if line == "[carl] done" {
            break;
        }
    }
    server.stop().await;
}

/// Flood control on the IRC door, as on every door: twelve lines at once against 5
/// per second after a burst of 2 are delayed, not dropped; the flooder is told to
/// slow down and hears the room while it waits (what another user says lands among
/// its delayed lines, in the one room order); one that floods past
/// `--flood-patience` is told so and closed with ERROR.
#[tokio::test]
async fn irc_floods_are_delayed_in_order_and_a_persistent_flooder_is_cut_off() {
    let server = Server::start(&[
        "--flood-rate",
        "5",
        "--flood-burst",
        "2",
        "--flood-patience",
        "5s",
    ])
    .await;
    let mut nc = Lines::line_login(server.addr("line"), "nc").await;
    let mut fast = irc_login(&server, "fast").await;
    nc.line_containing("fast joined #general").await;
    let flood: String = (1..=12)
        .map(|n| format!("PRIVMSG #general :f{n}\r\n"))
        .collect();
    fast.send_line(flood.trim_end()).await;
    assert_eq!(nc.line().await.unwrap(), "[fast] f1");
    fast.line_containing(":switchboard NOTICE * :slow down: over 5 messages per second")
        .await;
    nc.send_line("hello fast").await;
    fast.line_containing(":nc!nc@switchboard PRIVMSG #general :hello fast")
        .await;
    let mut order = Vec::new();
    while order.last().map(String::as_str) != Some("[fast] f12") {
        order.push(nc.line().await.unwrap());
    }
    let hello = order.iter().position(|line| line == "[nc] hello fast");
    let expected: Vec<String> = (2..=12).map(|n| format!("[fast] f{n}")).collect();
    let flooded: Vec<String> = order
        .iter()
        .filter(|line| line.starts_with("[fast]"))
        .cloned()
        .collect();
    assert_eq!(flooded, expected, "every delayed line, in order");
    assert!(
        hello.is_some_and(|at| at < order.len() - 1),
        "the flooder heard the room before its last line went out: {order:?}"
    );

    // Past the patience: told, closed, and the others go on.
    let endless = "PRIVMSG #general :again\r\n".repeat(200);
    fast.send_line(endless.trim_end()).await;
    fast.line_containing(":switchboard NOTICE * :disconnected for flooding")
        .await;
    fast.line_containing("ERROR :Closing link: flood").await;
    assert_eq!(fast.line().await, None, "closed after ERROR");
    nc.line_containing("*** fast left #general (flooding)")
        .await;
    nc.send_line("after").await;
    nc.line_containing("[nc] after").await;
    server.stop().await;
}

/// With history on disk a topic outlives the room's last member, and anyone may read
/// it with TOPIC before joining.
#[tokio::test]
async fn a_stored_topic_is_read_while_the_room_is_empty() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data", data.path().to_str().unwrap()]).await;
    let mut alice = irc_login(&server, "alice").await;
    alice.send_line("JOIN #empty\r").await;
    alice.line_containing(" 366 alice #empty ").await;
    alice.send_line("TOPIC #empty :quiet here\r").await;
    alice
        .line_containing(":alice!alice@switchboard TOPIC #empty :quiet here")
        .await;
    alice.send_line("PART #empty\r").await;
    alice.line_containing("PART #empty").await;
    let mut carol = irc_login(&server, "carol").await;
    carol.send_line("TOPIC #empty\r").await;
    carol.line_containing(" 332 carol #empty :quiet here").await;
    carol
        .line_containing(" 333 carol #empty alice!alice@switchboard ")
        .await;
    server.stop().await;
}

/// The commands and error numerics the other tests do not reach: VERSION, TIME, NAMES
/// and LIST asked for by name, INVITE into an invite-only channel (an INVITE line to
/// the invitee), and 403, 404, 431, 461, 472, 473, 474, 477 and 482, each naming what
/// it is about; the connection keeps serving after every one.
#[tokio::test]
async fn the_remaining_commands_and_their_error_numerics() {
    let server = start().await;
    let mut olga = irc_login(&server, "olga").await;
    olga.send_line("PRIVMSG NickServ :REGISTER olgas-password\r")
        .await;
    olga.line_containing(" 900 olga ").await;
    let mut gus = irc_login(&server, "gus").await;

    gus.send_line("VERSION\r").await;
    let version = gus.line_containing(" 351 gus ").await;
    assert!(
        version.contains(&format!(
            "switchboard-{} switchboard",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    gus.send_line("TIME\r").await;
    let time = gus.line_containing(" 391 gus switchboard ").await;
    let fields: Vec<&str> = time.split(' ').collect();
    let secs: u64 = fields[4].parse().expect("seconds since the epoch");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) < 60, "{time}");
    assert_eq!(fields[5], "0", "UTC: {time}");
    assert!(
        fields[6].starts_with(':') && fields[6].ends_with('Z') && fields[6].contains('T'),
        "{time}"
    );

    gus.send_line("NICK\r").await;
    gus.line_containing(" 431 gus :No nickname given").await;
    gus.send_line("JOIN\r").await;
    gus.line_containing(" 461 gus JOIN :Not enough parameters")
        .await;
    gus.send_line("MODE #general +z\r").await;
    let unknown = gus.line_containing(" 472 gus ").await;
    assert!(unknown.contains("z :is not a mode"), "{unknown}");
    gus.send_line("PART #nowhere\r").await;
    gus.line_containing(" 403 gus #nowhere ").await;

    // Olga has an account, so the channel she makes is hers.
    olga.send_line("JOIN #club\r").await;
    olga.line_containing(":olga!olga@switchboard JOIN #club")
        .await;
    gus.send_line("MODE #club +i\r").await;
    gus.line_containing(" 482 gus #club ").await;
    olga.send_line("MODE #club +m\r").await;
    gus.send_line("JOIN #club\r").await;
    gus.line_containing(":gus!gus@switchboard JOIN #club").await;
    gus.send_line("PRIVMSG #club :may I?\r").await;
    gus.line_containing(" 404 gus #club ").await;

    gus.send_line("NAMES #club\r").await;
    let names = gus.line_containing(" 353 gus ").await;
    assert!(names.ends_with("#club :gus @olga"), "{names}");
    gus.line_containing(" 366 gus #club :End of /NAMES list")
        .await;
    gus.send_line("WHO #club\r").await;
    gus.line_containing(" 352 gus #club gus switchboard switchboard gus H :0 gus")
        .await;
    gus.line_containing(" 352 gus #club olga switchboard switchboard olga H@ :0 olga")
        .await;
    gus.send_line("LIST\r").await;
    gus.line_containing(" 322 gus #club 2 :").await;
    gus.line_containing(" 323 gus :End of /LIST").await;

    // Invite-only: refused with 473 until invited; the invitation is an INVITE line.
    olga.send_line("MODE #club -m+i\r").await;
    let mut hal = irc_login(&server, "hal").await;
    hal.send_line("JOIN #club\r").await;
    hal.line_containing(" 473 hal #club ").await;
    olga.send_line("INVITE hal #club\r").await;
    assert_eq!(
        hal.line().await.unwrap(),
        ":olga!olga@switchboard INVITE hal #club"
    );
    hal.send_line("JOIN #club\r").await;
    hal.line_containing(":hal!hal@switchboard JOIN #club").await;

    // Operators are accounts; making one is a MODE line, and NAMES shows the @.
    hal.send_line("PRIVMSG NickServ :REGISTER hals-password\r")
        .await;
    hal.line_containing(" 900 hal ").await;
    olga.send_line("MODE #club +o hal\r").await;
    gus.line_containing(":olga!olga@switchboard MODE #club +o hal")
        .await;
    hal.send_line("NAMES #club\r").await;
    let names = hal.line_containing(" 353 hal ").await;
    assert!(names.ends_with("#club :gus @hal @olga"), "{names}");

    // A kick is a KICK line to the channel, with the reason alone as its comment.
    olga.send_line("KICK #club hal :not today\r").await;
    hal.line_containing(":olga!olga@switchboard KICK #club hal :not today")
        .await;
    gus.line_containing(":olga!olga@switchboard KICK #club hal :not today")
        .await;
    olga.send_line("KICK #club gus\r").await;
    gus.line_containing(":olga!olga@switchboard KICK #club gus :olga")
        .await;

    // Banned: 474 (a guest is banned by its address). Accounts only: 477 for a guest.
    let mut ivy = irc_login(&server, "ivy").await;
    olga.send_line("MODE #club -i+b ivy!*@*\r").await;
    olga.line_containing("banned").await;
    ivy.send_line("JOIN #club\r").await;
    ivy.line_containing(" 474 ivy #club ").await;
    olga.send_line("MODE #club -b+R ivy!*@*\r").await;
    ivy.send_line("JOIN #club\r").await;
    ivy.line_containing(
        " 477 ivy #club :#club is for accounts only: sign in first (SASL, or /msg NickServ IDENTIFY PASSWORD)",
    )
    .await;

    // Still serving every one of them.
    for (client, nick) in [(&mut gus, "gus"), (&mut hal, "hal"), (&mut ivy, "ivy")] {
        client.send_line(&format!("PING :{nick}\r")).await;
        client
            .line_containing(&format!("PONG switchboard :{nick}"))
            .await;
    }
    server.stop().await;
}
