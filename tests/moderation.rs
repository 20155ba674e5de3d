//! Moderation against the real server: a room's owner and the operators it appoints
//! kick, ban (by account and by address, with expiry), mute, invite and set modes over
//! the line, JSON, WebSocket and IRC doors; a server operator from the command line
//! moderates anywhere, sees addresses and disconnects people; refusals say why and
//! change nothing; and the rules, and the history of every action, survive a restart.
//! Guests "elsewhere" connect from 127.0.0.2 (all of 127/8 is this machine).

mod support;

use std::net::SocketAddr;

use serde_json::{json, Value};
use support::inproc::InProcess as Server;
use support::web::{metric, Lines, Ws};
use tokio::net::TcpStream;

/// A client on `addr` whose connection comes from `from` (a loopback address).
async fn connect_from(addr: SocketAddr, from: &str) -> Lines<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    Lines::new(socket.connect(addr).await.unwrap())
}

#[tokio::test]
async fn an_owner_and_its_operators_moderate_over_the_line_door_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = ["--data", data.as_str(), "--operator", "root"];
    let server = Server::start(&args).await;
    let line = server.addr("line");

    // alice, signed in, makes #den: she owns it.
    let mut alice = Lines::line_account(line, "alice").await;
    alice.send_line("/join #den").await;
    alice.line_containing("alice joined #den").await;
    let mut bob = Lines::line_account(line, "bob").await;
    bob.send_line("/join #den").await;
    alice.line_containing("bob joined #den").await;
    let mut mallory = connect_from(line, "127.0.0.2").await;
    mallory.send_line("mallory").await;
    mallory.line_containing("welcome").await;
    mallory.send_line("/join #den").await;
    alice.line_containing("mallory joined #den").await;

    // Members who are not operators are refused, and nothing changes.
    mallory.send_line("/kick #den bob").await;
    mallory
        .line_containing(
            "error: only #den's owner and operators (or a server operator) can do that",
        )
        .await;
    alice.send_line("/ban #den alice").await;
    alice
        .line_containing("error: you cannot ban yourself")
        .await;
    // A guest sharing the moderators' address can still be muted (moderators are
    // above it); the mute is lifted again.
    let mut local = Lines::line_login(line, "local").await;
    local.send_line("/join #den").await;
    alice.line_containing("local joined #den").await;
    alice.send_line("/mute #den local").await;
    alice.line_containing("* alice muted local (guest)").await;
    local.send_line("can I talk?").await;
    local.line_containing("error: you are muted in #den").await;
    alice.send_line("still here").await;
    bob.line_containing("[alice] still here").await;
    alice.send_line("/unmute #den local").await;
    alice.line_containing("* alice unmuted local (guest)").await;
    local.send_line("/quit").await;

    // A mute: mallory stays but cannot speak; the room is told.
    alice.send_line("/mute #den mallory 1h noise").await;
    bob.line_containing("* alice muted mallory (guest) for 1h (noise)")
        .await;
    mallory.send_line("/join #den").await;
    mallory.send_line("hello?").await;
    mallory
        .line_containing("error: you are muted in #den for 1h more (noise)")
        .await;

    // alice makes bob an operator; he may kick and ban, but not touch the owner or
    // appoint others.
    alice.send_line("/op #den bob").await;
    bob.line_containing("* alice made bob an operator").await;
    bob.send_line("/kick #den alice").await;
    bob.line_containing("error: you cannot do that to someone of your rank or above")
        .await;
    bob.send_line("/op #den mallory").await;
    bob.line_containing("error: only #den's owner (or a server operator) appoints its operators")
        .await;
    bob.send_line("/ban #den mallory enough").await;
    mallory
        .line_containing("*** mallory left #den (banned by bob: enough)")
        .await;
    alice
        .line_containing("* bob banned mallory (guest) (enough)")
        .await;
    mallory.send_line("/join #den").await;
    mallory
        .line_containing("error: you are banned from #den (enough)")
        .await;
    // Nor may the banned read what the room says.
    mallory.send_line("/history #den").await;
    mallory
        .line_containing("error: you are banned from #den (enough)")
        .await;

    // Accounts only: a guest from anywhere is refused with how to get in.
    alice.send_line("/mode #den +r").await;
    alice
        .line_containing("* alice made the room accounts-only")
        .await;
    let mut guest = Lines::line_login(line, "guest").await;
    guest.send_line("/join #den").await;
    guest
        .line_containing(
            "error: #den is for accounts only: sign in first (/register PASSWORD, or /login NAME PASSWORD)",
        )
        .await;
    alice.send_line("/rules #den").await;
    alice
        .line_containing("*** #den: owned by alice; operators bob; accounts only")
        .await;
    alice
        .line_containing("*** banned: mallory (guest) by bob (enough)")
        .await;
    alice
        .line_containing("*** muted: mallory (guest) by alice for ")
        .await;

    // The server operator, from the command line: sees addresses, moderates a room it
    // is not in, and disconnects people.
    let mut root = Lines::line_account(line, "root").await;
    root.send_line("/whois mallory").await;
    root.line_containing("; from 127.0.0.2").await;
    bob.send_line("/whois mallory").await;
    let plain = bob.line_containing("mallory is client").await;
    assert!(
        !plain.contains("127.0.0.2"),
        "only operators see addresses: {plain}"
    );
    // A mute set by the owner is not an operator's to lift.
    bob.send_line("/unmute #den mallory").await;
    bob.line_containing("error: that unmute was set by alice, above you")
        .await;
    root.send_line("/unmute #den 127.0.0.2").await;
    root.line_containing("#den: you unmuted mallory (guest)")
        .await;
    alice
        .line_containing("* root unmuted mallory (guest)")
        .await;
    bob.send_line("/kill mallory").await;
    bob.line_containing("error: only server operators can disconnect people")
        .await;
    root.send_line("/kill mallory go away").await;
    mallory
        .line_containing("*** you are disconnected by root: go away")
        .await;
    while mallory.line().await.is_some() {}
    root.line_containing("mallory is disconnected").await;

    let text = server.metrics().await;
    for (action, count) in [
        ("mute", 2.0),
        ("op", 1.0),
        ("ban", 1.0),
        ("mode", 1.0),
        ("unmute", 2.0),
        ("kill", 1.0),
    ] {
        let series = format!("switchboard_moderation_actions_total{{action=\"{action}\"}}");
        assert_eq!(metric(&text, &series), count, "{series}");
    }
    server.stop().await;

    // After a restart: the same rules, and the actions are in the room's history.
    let server = Server::start(&args).await;
    let line = server.addr("line");
    let mut alice = Lines::account_login(line, "alice").await;
    alice.send_line("/rules #den").await;
    alice
        .line_containing("*** #den: owned by alice; operators bob; accounts only")
        .await;
    alice
        .line_containing("*** banned: mallory (guest) by bob")
        .await;
    alice.send_line("/join #den").await;
    alice.send_line("/history #den").await;
    alice
        .line_containing("* alice muted mallory (guest) for 1h (noise)")
        .await;
    alice
        .line_containing("* bob banned mallory (guest) (enough)")
        .await;
    let mut mallory = connect_from(line, "127.0.0.2").await;
    mallory.send_line("mallory2").await;
    mallory.line_containing("welcome").await;
    mallory.send_line("/register mallory's password").await;
    mallory.line_containing("is registered to you").await;
    mallory.send_line("/join #den").await;
    mallory
        .line_containing("error: you are banned from #den (enough)")
        .await;
    // The owner lifts it; now mallory2 (an account) gets in.
    alice.send_line("/unban #den 127.0.0.2").await;
    alice
        .line_containing("* alice unbanned mallory (guest)")
        .await;
    mallory.send_line("/join #den").await;
    alice.line_containing("mallory2 joined #den").await;
    server.stop().await;
}

/// Register `nick` over JSON (password `NICK's password`).
async fn json_account(addr: SocketAddr, nick: &str) -> Lines<TcpStream> {
    let (mut client, _) = Lines::json_login(addr, nick).await;
    client
        .send_json(
            json!({"type": "auth", "action": "register", "password": format!("{nick}'s password")}),
        )
        .await;
    client.json_of_type("signed_in").await;
    client
}

/// The next moderation notice with this text (earlier ones are skipped).
async fn moderation_saying(page: &mut Ws, text: &str) -> Value {
    loop {
        let notice = moderation_of(page).await;
        if notice["text"] == text {
            return notice;
        }
    }
}

async fn moderation_of(page: &mut Ws) -> Value {
    loop {
        let value = page.of_type("message").await;
        if !value["data"]["moderation"].is_null() {
            return value;
        }
    }
}

#[tokio::test]
async fn moderation_over_json_and_websocket_with_expiry_and_invitations() {
    let server = Server::start(&["--memory"]).await;
    let json_door = server.addr("json");
    let mut alice = json_account(json_door, "alice").await;
    alice
        .send_json(json!({"type": "join", "room": "#lab", "id": 1}))
        .await;
    alice.json_of_type("ok").await;
    let (mut watcher, _) = Ws::login(&format!("ws://{}/ws", server.addr("web")), "watcher").await;
    watcher
        .send(json!({"type": "join", "room": "#lab", "id": "w"}))
        .await;
    // The watcher's own ok, not its login's join of #general seen by alice.
    watcher.of_type("ok").await;

    // Invite-only: carol needs an invitation, which alice sends.
    alice
        .send_json(json!({"type": "moderate", "room": "#lab", "action": "mode", "invite_only": true, "id": 2}))
        .await;
    alice.json_of_type("ok").await;
    let notice = moderation_of(&mut watcher).await;
    assert_eq!(notice["from"], "alice");
    assert_eq!(notice["text"], "made the room invite-only");
    assert_eq!(notice["data"]["moderation"]["action"], "mode");
    assert_eq!(notice["data"]["moderation"]["invite_only"], true);
    let (mut carol, _) = Lines::json_login(json_door, "carol").await;
    carol
        .send_json(json!({"type": "join", "room": "#lab", "id": "j"}))
        .await;
    let refused = carol.json_of_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_str()),
        (Some("invite_only"), Some("j"))
    );
    alice
        .send_json(json!({"type": "moderate", "room": "#lab", "action": "invite", "nick": "carol"}))
        .await;
    // An event of its own, not a notice in the line door's words.
    let invited = carol.json_of_type("invited").await;
    assert_eq!(
        (invited["room"].as_str(), invited["by"].as_str()),
        (Some("#lab"), Some("alice"))
    );
    carol
        .send_json(json!({"type": "join", "room": "#lab"}))
        .await;
    carol.json_of_type("joined").await;

    // A kick from the room, seen by the WebSocket watcher with its reason.
    alice
        .send_json(json!({"type": "moderate", "room": "#lab", "action": "kick", "nick": "carol", "reason": "testing"}))
        .await;
    let left = loop {
        let value = watcher.of_type("left").await;
        if value["nick"] == "carol" {
            break value;
        }
    };
    assert_eq!(left["reason"], "kicked by alice: testing");
    let kick = moderation_of(&mut watcher).await;
    assert_eq!(kick["data"]["moderation"]["target"], "carol");
    assert_eq!(kick["data"]["moderation"]["reason"], "testing");
    // Her invitation was used by her join: kicked, she cannot walk back in.
    carol
        .send_json(json!({"type": "join", "room": "#lab", "id": "again"}))
        .await;
    let again = carol.json_of_type("error").await;
    assert_eq!(again["code"], "invite_only", "{again}");

    // A ban by account with an expiry (2 s): refused, then let in once it runs out.
    let mut dave = json_account(json_door, "dave").await;
    alice
        .send_json(json!({"type": "moderate", "room": "#lab", "action": "ban", "target": "account:dave", "duration": "2s", "id": 3}))
        .await;
    alice.json_of_type("ok").await;
    alice
        .send_json(json!({"type": "moderate", "room": "#lab", "action": "invite", "nick": "dave"}))
        .await;
    dave.send_json(json!({"type": "join", "room": "#lab", "id": 4}))
        .await;
    let banned = dave.json_of_type("error").await;
    assert_eq!(banned["code"], "banned", "{banned}");
    alice
        .send_json(json!({"type": "moderate", "room": "#lab", "action": "rules", "id": 5}))
        .await;
    let rules = alice.json_of_type("rules").await;
    assert_eq!(rules["owner"], "alice");
    assert_eq!(rules["invite_only"], true);
    assert_eq!(rules["bans"][0]["target"], "account:dave");
    assert!(rules["bans"][0]["expires"].as_u64().is_some(), "{rules}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    dave.send_json(json!({"type": "join", "room": "#lab", "id": 6}))
        .await;
    dave.json_of_type("joined").await;

    // Bad requests: each says what is wrong.
    for (request, code, words) in [
        (
            json!({"type": "moderate", "room": "#lab", "action": "ban", "target": "nobody-here"}),
            "no_such_nick",
            "nobody is called nobody-here",
        ),
        (
            json!({"type": "moderate", "room": "#lab", "action": "ban", "target": "dave", "duration": -5}),
            "bad_request",
            "above zero",
        ),
        (
            json!({"type": "moderate", "room": "#lab", "action": "ban", "target": "1.2.3.4", "duration": "9300000000000000000"}),
            "bad_request",
            "longer than 100 years",
        ),
        (
            json!({"type": "moderate", "room": "#lab", "action": "ban", "target": "1.2.3.4", "duration": "20000d"}),
            "bad_request",
            "at most 3650 days",
        ),
        (
            json!({"type": "moderate", "room": "#lab", "action": "ban"}),
            "bad_request",
            "\"target\"",
        ),
        (
            json!({"type": "moderate", "room": "#lab", "action": "explode"}),
            "bad_request",
            "unknown moderation action",
        ),
        (
            json!({"type": "moderate", "room": "#lab", "action": "mode"}),
            "bad_request",
            "say which",
        ),
        (
            json!({"type": "moderate", "room": "#nowhere", "action": "kick", "nick": "dave"}),
            "no_such_room",
            "no room",
        ),
        (
            json!({"type": "say", "room": "#lab", "text": "x", "data": {"moderation": {"action": "kick"}}}),
            "bad_request",
            "moderation notices",
        ),
    ] {
        alice.send_json(request.clone()).await;
        let error = alice.json_of_type("error").await;
        assert_eq!(error["code"], code, "{request}: {error}");
        assert!(
            error["text"].as_str().unwrap().contains(words),
            "{request}: {error}"
        );
    }
    dave.send_json(
        json!({"type": "moderate", "room": "#lab", "action": "mute", "target": "alice"}),
    )
    .await;
    assert_eq!(dave.json_of_type("error").await["code"], "not_operator");
    // Made an operator, dave may mute (not alice, the owner); unmade, he may not.
    let moderate = |fields: Value| {
        let mut request = json!({"type": "moderate", "room": "#lab"});
        for (key, value) in fields.as_object().unwrap() {
            request[key] = value.clone();
        }
        request
    };
    alice
        .send_json(moderate(json!({"action": "op", "nick": "dave", "id": 7})))
        .await;
    alice.json_of_type("ok").await;
    dave.send_json(moderate(
        json!({"action": "mute", "target": "alice", "id": 8}),
    ))
    .await;
    assert_eq!(dave.json_of_type("error").await["code"], "not_operator");
    dave.send_json(moderate(
        json!({"action": "mute", "target": "watcher", "id": 9}),
    ))
    .await;
    dave.json_of_type("ok").await;
    let muted = moderation_saying(&mut watcher, "muted watcher (guest)").await;
    assert_eq!(muted["from"], "dave");
    watcher
        .send(json!({"type": "say", "room": "#lab", "text": "hm", "id": "w"}))
        .await;
    assert_eq!(watcher.of_type("error").await["code"], "muted");
    dave.send_json(moderate(
        json!({"action": "unmute", "target": "127.0.0.1", "id": 10}),
    ))
    .await;
    dave.json_of_type("ok").await;
    alice
        .send_json(moderate(
            json!({"action": "deop", "nick": "dave", "id": 11}),
        ))
        .await;
    alice.json_of_type("ok").await;
    assert_eq!(
        moderation_of(&mut watcher).await["text"],
        "unmuted watcher (guest)"
    );
    assert_eq!(
        moderation_of(&mut watcher).await["text"],
        "took operator status from dave"
    );
    dave.send_json(moderate(json!({"action": "kick", "nick": "watcher"})))
        .await;
    assert_eq!(dave.json_of_type("error").await["code"], "not_operator");

    // The watcher, signed in on the WebSocket, moderates too once it is an operator.
    watcher
        .send(json!({"type": "auth", "action": "register", "password": "watcher's password"}))
        .await;
    watcher.of_type("signed_in").await;
    alice
        .send_json(moderate(
            json!({"action": "op", "nick": "watcher", "id": 12}),
        ))
        .await;
    alice.json_of_type("ok").await;
    watcher
        .send(moderate(
            json!({"action": "kick", "nick": "dave", "reason": "from the web", "id": "k"}),
        ))
        .await;
    assert_eq!(watcher.of_type("ok").await["id"], "k");
    let left = dave.json_of_type("left").await;
    assert_eq!(left["reason"], "kicked by watcher: from the web");

    // IRC sees the same rules in its own words: MODE, the ban list, a refused JOIN.
    let irc = TcpStream::connect(server.addr("irc")).await.unwrap();
    let mut irc = Lines::new(irc);
    irc.send_raw(b"NICK ircguest\r\nUSER g 0 * :G\r\n").await;
    irc.line_containing(" 001 ").await;
    irc.send_raw(b"MODE #lab\r\nJOIN #lab\r\nMODE #lab +R\r\n")
        .await;
    let modes = irc.line_containing(" 324 ").await;
    assert!(modes.contains("#lab +i"), "{modes}");
    let refused = irc.line_containing(" 473 ").await;
    assert!(refused.contains("invite-only"), "{refused}");
    let refused = irc.line_containing(" 482 ").await;
    assert!(refused.contains("owner and operators"), "{refused}");
    server.stop().await;
}

/// An IRC client through its registration, with SASL PLAIN as `name`/`password`:
/// returns the client and the server's answer to the credentials (903 or 904 line).
async fn irc_sasl(
    addr: SocketAddr,
    nick: &str,
    name: &str,
    password: &str,
) -> (Lines<TcpStream>, String) {
    use base64::Engine as _;
    let mut irc = Lines::connect(addr).await;
    irc.send_raw(format!("CAP LS 302\r\nNICK {nick}\r\nUSER u 0 * :U\r\n").as_bytes())
        .await;
    let ls = irc.line_containing(" LS ").await;
    assert!(ls.contains("sasl=PLAIN"), "{ls}");
    irc.send_raw(b"CAP REQ :sasl\r\n").await;
    irc.line_containing(" ACK ").await;
    irc.send_raw(b"AUTHENTICATE PLAIN\r\n").await;
    irc.line_containing("AUTHENTICATE +").await;
    let payload = base64::engine::general_purpose::STANDARD.encode(format!("\0{name}\0{password}"));
    irc.send_raw(format!("AUTHENTICATE {payload}\r\n").as_bytes())
        .await;
    let answer = loop {
        let line = irc.line().await.expect("an answer to AUTHENTICATE");
        if line.contains(" 903 ") || line.contains(" 904 ") {
            break line;
        }
    };
    (irc, answer)
}

#[tokio::test]
async fn an_irc_user_logs_in_with_sasl_owns_a_room_and_kicks_from_it() {
    let server = Server::start(&["--memory"]).await;
    let mut alice = Lines::line_account(server.addr("line"), "alice").await;
    alice.send_line("/quit").await;
    while alice.line().await.is_some() {}

    // A wrong password: 904, and the client may go on as a guest under another nick.
    let (mut wrong, answer) = irc_sasl(server.addr("irc"), "alice", "alice", "not it at all").await;
    assert!(
        answer.contains("SASL authentication failed: wrong account name or password"),
        "{answer}"
    );
    wrong.send_raw(b"CAP END\r\n").await;
    let taken = wrong.line_containing(" 433 ").await;
    assert!(taken.contains("registered to an account"), "{taken}");
    drop(wrong);

    // The right one: 900 and 903 before registration, then 001 as the account.
    let (mut irc, answer) =
        irc_sasl(server.addr("irc"), "whoever", "ALICE", "alice's password").await;
    assert!(answer.contains(" 903 "), "{answer}");
    irc.send_raw(b"CAP END\r\n").await;
    let welcome = irc.line_containing(" 001 ").await;
    assert!(welcome.contains(" 001 alice "), "{welcome}");
    irc.send_raw(b"JOIN #irc\r\n").await;
    irc.line_containing("JOIN #irc").await;
    let mut bob = Lines::line_login(server.addr("line"), "bob").await;
    bob.send_line("/join #irc").await;
    // Bob's own join, not his login's JOIN #general.
    bob.line_containing("*** bob joined #irc").await;
    irc.line_containing(":bob!bob@switchboard JOIN #irc").await;
    // She owns #irc: KICK and MODE work, in IRC's words.
    irc.send_raw(b"MODE #irc +i\r\nKICK #irc bob :bye bob\r\nMODE #irc\r\n")
        .await;
    bob.line_containing("* alice made the room invite-only")
        .await;
    bob.line_containing("*** bob left #irc (kicked by alice: bye bob)")
        .await;
    let modes = irc.line_containing(" 324 ").await;
    assert!(modes.contains("#irc +i"), "{modes}");
    bob.send_line("/join #irc").await;
    bob.line_containing("error: #irc is invite-only").await;
    server.stop().await;
}
