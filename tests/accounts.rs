//! Accounts against the real server, over the line, JSON and WebSocket doors: a
//! registered name is its owner's (look-alikes included), private history is read
//! only by its owners, messages wait for an offline account, sign-in tokens, and every
//! kind of bad account input refused with a clear error.

mod support;

use serde_json::{json, Value};
use support::inproc::InProcess as Server;
use support::web::{metric, Lines, Ws};
use tokio::net::TcpStream;

fn ws_url(server: &Server) -> String {
    format!("ws://{}/ws", server.addr("web"))
}

/// The texts of a history page's messages, in order.
fn texts(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("a page of messages")
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn alice_owns_her_name_and_her_private_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = ["--data", data.as_str()];
    let server = Server::start(&args).await;
    let (line, json_door) = (server.addr("line"), server.addr("json"));

    // alice registers her name on the line door; bob his over JSON.
    let mut alice = Lines::line_login(line, "alice").await;
    alice.send_line("/register short").await;
    alice.line_containing("shorter than 8 characters").await;
    alice.send_line("/register correct horse battery").await;
    alice
        .line_containing("*** alice is registered to you and you are logged in")
        .await;
    let (mut bob, _) = Lines::json_login(json_door, "bob").await;
    bob.send_json(
        json!({"type": "auth", "action": "register", "password": "bobs own secret", "id": 1}),
    )
    .await;
    let signed_in = bob.json_of_type("signed_in").await;
    assert_eq!(signed_in["account"], "bob");
    assert_eq!(signed_in["created"], true);
    assert_eq!(signed_in["id"], 1);

    // They talk privately, then alice leaves.
    alice.send_line("/msg bob hi bob").await;
    let message = bob.json_of_type("message").await;
    assert_eq!(
        (message["to"].as_str(), message["text"].as_str()),
        (Some("bob"), Some("hi bob"))
    );
    bob.send_json(json!({"type": "msg", "to": "alice", "text": "hi alice"}))
        .await;
    alice.line_containing("[bob -> alice] hi alice").await;
    alice.send_line("/quit").await;
    bob.json_of_type("left").await;

    // Nobody else may take her name, however it is spelled, on any door.
    let mut guest = Lines::connect(line).await;
    for spelling in ["alice", "ALICE", "\u{0430}lice", "\u{FF41}lice", "aIice"] {
        guest.send_line(spelling).await;
        guest.line_containing("that name is registered").await;
    }
    let mut program = Lines::connect(json_door).await;
    program
        .send_json(json!({"type": "nick", "nick": "Alice", "id": "n"}))
        .await;
    let refused = program.json_of_type("error").await;
    assert_eq!(refused["code"], "nick_registered", "{refused}");
    let mut browser = Ws::connect(&ws_url(&server)).await;
    browser
        .send(json!({"type": "nick", "nick": "\u{0430}lice"}))
        .await;
    assert_eq!(browser.of_type("error").await["code"], "nick_registered");
    let mut irc = Lines::connect(server.addr("irc")).await;
    irc.send_line("NICK ALICE").await;
    irc.send_line("USER a 0 * :A").await;
    let taken = irc.line_containing(" 433 ").await;
    assert!(taken.contains("registered"), "{taken}");
    // Nor be renamed to it.
    guest.send_line("mallory").await;
    guest.line_containing("welcome").await;
    guest.send_line("/nick alice").await;
    guest.line_containing("error: alice is registered").await;

    // Her private history is hers and bob's only.
    guest.send_line("/history alice").await;
    guest
        .line_containing("error: private history is kept only between accounts")
        .await;
    bob.send_json(json!({"type": "history", "with": "alice"}))
        .await;
    let page = bob.json_of_type("history").await;
    assert_eq!(texts(&page), ["hi bob", "hi alice"]);

    // Messages sent while she is away are kept for her, in order, from accounts only
    // (a guest could flood her mailbox under a name nobody can trace).
    for (n, text) in ["while you were out", "and another"]
        .into_iter()
        .enumerate()
    {
        bob.send_json(json!({"type": "msg", "to": "alice", "text": text, "id": n + 2}))
            .await;
    }
    for n in 2..4 {
        let kept = bob.json_of_type("kept").await;
        assert_eq!(
            (kept["for"].as_str(), kept["id"].as_i64()),
            (Some("alice"), Some(n))
        );
    }
    guest.send_line("/msg alice from mallory").await;
    guest
        .line_containing("error: alice is offline; messages are kept for offline accounts only from logged-in users")
        .await;

    // She signs in from the page (the WebSocket door): a wrong password first.
    let mut page = Ws::connect(&ws_url(&server)).await;
    page.send(json!({"type": "auth", "action": "login", "nick": "alice", "password": "wrong horse", "id": "a"}))
        .await;
    let wrong = page.of_type("error").await;
    assert_eq!(
        (wrong["code"].as_str(), wrong["id"].as_str()),
        (Some("auth_failed"), Some("a"))
    );
    page.send(json!({"type": "auth", "action": "login", "nick": "ALICE", "password": "correct horse battery", "remember": true}))
        .await;
    let welcome = page.of_type("welcome").await;
    assert_eq!(welcome["nick"], "alice");
    let signed_in = page.of_type("signed_in").await;
    assert_eq!(signed_in["account"], "alice");
    let token = signed_in["token"].as_str().expect("a token").to_owned();
    let away = page.of_type("history").await;
    assert_eq!(away["offline"], true, "{away}");
    assert_eq!(texts(&away), ["while you were out", "and another"]);
    assert_eq!(away["messages"][1]["from"], "bob");
    // Delivered once: the mailbox is empty now.
    page.send(json!({"type": "quit"})).await;
    drop(page);
    let text = server.metrics().await;
    assert_eq!(metric(&text, "switchboard_registrations_total"), 2.0);
    assert_eq!(
        metric(&text, "switchboard_logins_total{method=\"password\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_login_failures_total{reason=\"auth_failed\"}"
        ),
        1.0
    );
    server.stop().await;

    // After a restart: the token still signs her in, the name is still protected,
    // her history is still there, and nothing is delivered twice.
    let server = Server::start(&args).await;
    let mut guest = Lines::connect(server.addr("line")).await;
    guest.send_line("alice").await;
    guest.line_containing("that name is registered").await;
    let mut page = Ws::connect(&ws_url(&server)).await;
    page.send(json!({"type": "auth", "action": "token", "token": token}))
        .await;
    assert_eq!(page.of_type("signed_in").await["account"], "alice");
    page.send(json!({"type": "history", "with": "bob"})).await;
    let history = page.of_type("history").await;
    assert_eq!(
        texts(&history),
        ["hi bob", "hi alice", "while you were out", "and another"],
        "the accounts' messages are history"
    );
    page.send(json!({"type": "ping", "id": "p"})).await;
    loop {
        let value = page.json().await;
        assert_ne!(value["offline"], true, "the mailbox was delivered twice");
        if value["type"] == "pong" {
            break;
        }
    }
    // Logging out revokes the token.
    page.send(json!({"type": "auth", "action": "logout", "token": token}))
        .await;
    // The token is revoked before the connection closes.
    while let Some(message) = page.message().await {
        if message.is_close() {
            break;
        }
    }
    let mut again = Ws::connect(&ws_url(&server)).await;
    again
        .send(json!({"type": "auth", "action": "token", "token": token}))
        .await;
    assert_eq!(again.of_type("error").await["code"], "bad_token");
    server.stop().await;
}

#[tokio::test]
async fn bad_account_input_gets_clear_errors_and_changes_nothing() {
    let server = Server::start(&[]).await;
    let line = server.addr("line");

    // Account commands need an account, or a name first.
    let mut guest = Lines::line_login(line, "guest").await;
    guest.send_line("/password old new one").await;
    guest.line_containing("error: you are not logged in").await;
    guest.send_line("/unregister whatever").await;
    guest.line_containing("error: you are not logged in").await;
    let mut fresh = Lines::connect(server.addr("json")).await;
    fresh
        .send_json(json!({"type": "auth", "action": "register", "password": "long enough"}))
        .await;
    assert_eq!(fresh.json_of_type("error").await["code"], "not_registered");
    fresh
        .send_json(json!({"type": "auth", "action": "login", "nick": "x"}))
        .await;
    let missing = fresh.json_of_type("error").await;
    assert!(
        missing["text"].as_str().unwrap().contains("\"password\""),
        "{missing}"
    );
    fresh
        .send_json(json!({"type": "auth", "action": "steal", "password": "x"}))
        .await;
    assert_eq!(fresh.json_of_type("error").await["code"], "bad_request");

    // Passwords: too long, control characters; nothing is registered.
    let long = "p".repeat(300);
    guest.send_line(&format!("/register {long}")).await;
    guest.line_containing("longer than 256 bytes").await;
    guest.send_line("/register bell\u{7}inside").await;
    guest.line_containing("control characters").await;
    guest.send_line("/whois guest").await;
    guest.line_containing("*** guest is client").await;

    // carol registers; a second registration is refused.
    let mut carol = Lines::line_login(line, "carol").await;
    carol.send_line("/register carols-secret").await;
    carol.line_containing("is registered to you").await;
    carol.send_line("/register another one").await;
    carol
        .line_containing("error: you are already logged in as carol")
        .await;

    // A login flood against an account is cut off, for the right password too.
    guest.send_line("/register guests secret").await;
    guest.line_containing("is registered to you").await;
    let mut attacker = Lines::connect(line).await;
    for _ in 0..5 {
        attacker.send_line("guest guess guess").await;
        attacker.line_containing("error: wrong password").await;
    }
    attacker.send_line("guest guests secret").await;
    attacker
        .line_containing("error: too many failed logins for that account; try again in")
        .await;
    // An over-long password is refused without being hashed.
    attacker.send_line(&format!("/login dave {long}")).await;
    attacker.line_containing("error:").await;

    // A token from another account does not switch accounts under a signed-in user.
    let (mut dave, _) = Lines::json_login(server.addr("json"), "dave").await;
    dave.send_json(
        json!({"type": "auth", "action": "register", "password": "daves secret", "remember": true}),
    )
    .await;
    let token = dave.json_of_type("signed_in").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut erin = Ws::login(&ws_url(&server), "erin").await.0;
    erin.send(json!({"type": "auth", "action": "register", "password": "erins secret"}))
        .await;
    erin.of_type("signed_in").await;
    erin.send(json!({"type": "auth", "action": "token", "token": token, "id": 9}))
        .await;
    let refused = erin.of_type("error").await;
    assert!(
        refused["text"]
            .as_str()
            .unwrap()
            .contains("you are logged in as erin"),
        "{refused}"
    );
    erin.send(json!({"type": "auth", "action": "token", "token": "0".repeat(64)}))
        .await;
    assert_eq!(erin.of_type("error").await["code"], "bad_token");
    erin.send(json!({"type": "whois", "nick": "erin"})).await;
    let whois = erin.of_type("whois").await;
    assert_eq!(
        (whois["nick"].as_str(), whois["account"].as_str()),
        (Some("erin"), Some("erin"))
    );

    // Signing in from a second connection takes the name from the first.
    let mut dave_again = Lines::connect(line).await;
    dave_again.send_line("dave daves secret").await;
    dave_again
        .line_containing("*** you are logged in as dave")
        .await;
    // The first connection is closed (its stream ends).
    while dave.line().await.is_some() {}

    // A password change needs the old one; afterwards only the new one works.
    carol
        .send_line("/password wrong-old carols-new-secret")
        .await;
    carol.line_containing("error: wrong password").await;
    carol
        .send_line("/password carols-secret carols-new-secret")
        .await;
    carol.line_containing("*** your password is changed").await;

    // Dropping the account frees the name for anyone.
    carol.send_line("/unregister carols-new-secret").await;
    carol
        .line_containing("*** the account carol is deleted")
        .await;
    carol.send_line("/quit").await;
    while carol.line().await.is_some() {}
    let mut newcomer = Lines::connect(line).await;
    newcomer.send_line("Carol").await;
    newcomer.line_containing("welcome, Carol").await;

    let text = server.metrics().await;
    assert_eq!(metric(&text, "switchboard_registrations_total"), 4.0);
    assert!(
        metric(
            &text,
            "switchboard_login_failures_total{reason=\"auth_limited\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchboard_account_changes_total{kind=\"dropped\"}"),
        1.0
    );
    server.stop().await;
}

/// Register `nick` over JSON with `password`, signed in when this returns.
async fn json_register(server: &Server, nick: &str, password: &str) -> Lines<TcpStream> {
    let (mut client, _) = Lines::json_login(server.addr("json"), nick).await;
    client
        .send_json(json!({"type": "auth", "action": "register", "password": password}))
        .await;
    assert_eq!(client.json_of_type("signed_in").await["account"], nick);
    client
}

async fn private_history(client: &mut Lines<TcpStream>, with: &str) -> Vec<String> {
    client
        .send_json(json!({"type": "history", "with": with}))
        .await;
    texts(&client.json_of_type("history").await)
}

#[tokio::test]
async fn a_dropped_account_takes_its_private_history_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    dropped_account_forgotten(&["--data", data.as_str()]).await;
}

#[tokio::test]
async fn a_dropped_account_takes_its_private_history_with_it_in_memory() {
    dropped_account_forgotten(&["--memory"]).await;
}

async fn dropped_account_forgotten(args: &[&str]) {
    let server = Server::start(args).await;
    let mut alice = json_register(&server, "alice", "alice's password").await;
    let mut bob = json_register(&server, "bob", "bob's password!").await;
    let mut carol = json_register(&server, "carol", "carol's password").await;
    async fn say(from: &mut Lines<TcpStream>, to: &str, text: &str) {
        from.send_json(json!({"type": "msg", "to": to, "text": text, "id": 1}))
            .await;
        from.json_of_type("ok").await;
    }
    say(&mut alice, "bob", "alice to bob").await;
    say(&mut bob, "alice", "bob to alice").await;
    say(&mut bob, "carol", "bob to carol").await;
    assert_eq!(
        private_history(&mut bob, "alice").await,
        ["alice to bob", "bob to alice"]
    );

    // alice drops her account; someone else registers the name at once.
    alice
        .send_json(json!({"type": "auth", "action": "drop", "password": "alice's password"}))
        .await;
    assert_eq!(
        alice.json_of_type("account_dropped").await["account"],
        "alice"
    );
    alice.send_json(json!({"type": "quit"})).await;
    while alice.line().await.is_some() {}
    let mut newcomer = json_register(&server, "alice", "a different one").await;

    // Neither the newcomer nor bob sees what alice and bob said; bob and carol's
    // conversation is untouched.
    assert!(private_history(&mut newcomer, "bob").await.is_empty());
    assert!(private_history(&mut bob, "alice").await.is_empty());
    assert_eq!(private_history(&mut carol, "bob").await, ["bob to carol"]);
    server.stop().await;
    if args.contains(&"--memory") {
        return;
    }

    // Not on disk either.
    let server = Server::start(args).await;
    let (mut newcomer, _) = Lines::json_login(server.addr("json"), "x").await;
    newcomer
        .send_json(json!({"type": "auth", "action": "login", "nick": "alice", "password": "a different one"}))
        .await;
    newcomer.json_of_type("signed_in").await;
    assert!(private_history(&mut newcomer, "bob").await.is_empty());
    server.stop().await;
}
