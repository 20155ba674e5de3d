//! Devices against the real server, over real UDP sockets: an account adds a device
//! and gets its token; the device's telemetry datagrams reach line, JSON and WebSocket
//! users in its room; commands from users reach it by datagram (resent until
//! answered), and its answer (sent twice) comes back once; a command nobody answers
//! times out; datagrams with a bad token, a replayed seq, no token, bad JSON or too
//! many bytes, and floods from a stranger and from 20 addresses, are dropped, counted
//! and never answered while the device goes on being served; a removed device's token
//! stops working.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::device::Device;
use support::inproc::InProcess as Server;
use support::web::{metric, Lines, Ws, WAIT};
use tokio::net::{TcpStream, UdpSocket};

/// `alice` registers on the line door at `line` and adds device `name`; returns her
/// connection and the device's token.
async fn alice_with_device(line: SocketAddr, name: &str) -> (Lines<TcpStream>, String) {
    let mut alice = Lines::line_login(line, "alice").await;
    alice.send_line("/register alice's password").await;
    alice.line_containing("is registered to you").await;
    alice.send_line(&format!("/device add {name}")).await;
    let added = alice.line_containing("its token").await;
    let token = added.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(token.len(), 64, "{added}");
    alice.line_containing("switchboard device --token").await;
    (alice, token)
}

/// `nick` on the JSON door, registered (the tests name it a server operator, who may
/// command any device).
async fn json_account(server: &Server, nick: &str) -> Lines<TcpStream> {
    let (mut client, _) = Lines::json_login(server.addr("json"), nick).await;
    client
        .send_json(
            json!({"type": "auth", "action": "register", "password": format!("{nick}'s password")}),
        )
        .await;
    client.json_of_type("signed_in").await;
    client
}

async fn metrics_value(server: &Server, series: &str) -> f64 {
    metric(&server.metrics().await, series)
}

/// Wait until `series` reaches `at_least` (metrics are counted as datagrams arrive).
async fn metric_reaches(server: &Server, series: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = metrics_value(server, series).await;
        if value >= at_least {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {value}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn telemetry_reaches_every_door_and_commands_come_back_answered() {
    let server = Server::start(&["--operator", "carol"]).await;
    let (mut alice, token) = alice_with_device(server.addr("line"), "drone7").await;
    let mut bob = Lines::line_login(server.addr("line"), "bob").await;
    bob.send_line("/join #drones").await;
    bob.line_containing("*** bob joined #drones").await;
    let mut carol = json_account(&server, "carol").await;
    carol
        .send_json(json!({"type": "join", "room": "#drones", "id": "j"}))
        .await;
    carol.json_of_type("ok").await;
    let ws_url = format!("ws://{}/ws", server.addr("web"));
    let (mut dave, _) = Ws::login(&ws_url, "dave").await;
    dave.send(json!({"type": "join", "room": "#drones", "id": "j"}))
        .await;
    dave.of_type("ok").await;

    // Telemetry: the device's first datagram signs it in and joins it to the room.
    let mut drone = Device::new(server.addr("udp"), &token).await;
    drone
        .send(json!({"type": "say", "room": "#drones", "text": "alt 12", "data": {"alt": 12}}))
        .await;
    assert_eq!(
        drone.receive_of_type("signed_in").await["account"],
        "drone7"
    );
    bob.line_containing("*** drone7 joined #drones").await;
    assert!(bob.line_containing("alt 12").await.contains("drone7"));
    let message = carol.json_of_type("message").await;
    assert_eq!(
        (&message["from"], &message["room"], &message["data"]["alt"]),
        (&json!("drone7"), &json!("#drones"), &json!(12))
    );
    let message = dave.of_type("message").await;
    assert_eq!(message["data"]["alt"], 12);
    // The device is shown as one, and is not put in the lobby.
    bob.send_line("/who #drones").await;
    assert!(bob
        .line_containing("#drones has")
        .await
        .contains("drone7 (device)"));
    carol
        .send_json(json!({"type": "members", "room": "#general", "id": "w"}))
        .await;
    let members = carol.json_of_type("members").await;
    assert!(!members["members"]
        .as_array()
        .unwrap()
        .contains(&json!("drone7")));
    carol
        .send_json(json!({"type": "whois", "nick": "drone7", "id": "w"}))
        .await;
    let whois = carol.json_of_type("whois").await;
    assert_eq!(
        (&whois["device"], &whois["door"]),
        (&json!(true), &json!("udp"))
    );
    // IRC's WHOIS says so too.
    let mut irc = Lines::connect(server.addr("irc")).await;
    irc.send_line("NICK erin\r\nUSER e 0 * :e\r\nWHOIS drone7\r")
        .await;
    irc.line_containing(" 311 erin drone7 drone7 switchboard * :client")
        .await;
    irc.line_containing(" 320 erin drone7 :is a device").await;

    // A device obeys its owner and the server operators only.
    bob.send_line("/command drone7 land").await;
    bob.line_containing("error: drone7 is a device: only its owner")
        .await;
    // A command from a program (carol is a server operator): the device does not answer at first, so it is sent
    // again; the device then answers twice (as a device that retried would), and the
    // sender gets one answer.
    carol
        .send_json(json!({"type": "command", "to": "drone7", "name": "land",
                          "args": {"speed": 2}, "id": "c1"}))
        .await;
    let command = drone.receive_of_type("command").await;
    assert_eq!(
        (
            &command["name"],
            &command["from"],
            &command["args"]["speed"]
        ),
        (&json!("land"), &json!("carol"), &json!(2))
    );
    let again = drone.receive_of_type("command").await;
    assert_eq!(again["id"], command["id"], "a command unanswered is resent");
    let answer = json!({"type": "command_result", "id": command["id"], "ok": true,
                        "result": {"landed": true}});
    drone.send(answer.clone()).await;
    drone.send(answer).await;
    let result = carol.json_of_type("command_result").await;
    assert_eq!(
        (
            &result["id"],
            &result["from"],
            &result["ok"],
            &result["result"]["landed"]
        ),
        (&json!("c1"), &json!("drone7"), &json!(true), &json!(true))
    );
    carol
        .send_json(json!({"type": "ping", "id": "after"}))
        .await;
    let next = carol.json().await;
    assert_eq!(
        next["type"], "pong",
        "one answer only, then the pong: {next}"
    );

    // From the line door, by the device's owner: the answer, in words, and kept in
    // the private history of the two accounts.
    alice.send_line("/command drone7 status").await;
    // Resends of carol's command, answered late, may still be on their way.
    let command = loop {
        let command = drone.receive_of_type("command").await;
        if command["name"] == "status" {
            break command;
        }
    };
    assert_eq!(command["from"], "alice");
    drone
        .send(
            json!({"type": "command_result", "id": command["id"], "ok": false,
                     "error": "battery low"}),
        )
        .await;
    alice
        .line_containing("*** drone7: status failed: battery low")
        .await;
    alice.send_line("/history drone7").await;
    alice.line_containing("status: failed: battery low").await;
    // Line users cannot answer commands.
    carol
        .send_json(json!({"type": "command", "to": "bob", "name": "x", "id": "c2"}))
        .await;
    expect_error(
        &mut carol,
        "not_a_device",
        json!("c2"),
        "cannot answer commands",
    )
    .await;

    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "switchboard_commands_total{outcome=\"sent\"}"),
        2.0
    );
    assert_eq!(
        metric(&text, "switchboard_commands_total{outcome=\"answered\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "switchboard_commands_total{outcome=\"failed\"}"),
        1.0
    );
    assert!(metric(&text, "switchboard_udp_datagrams_total") >= 4.0);
    server.stop().await;
}

#[tokio::test]
async fn a_command_nobody_answers_times_out_and_a_leaving_device_fails_it_at_once() {
    let server = Server::start(&["--command-timeout", "1s", "--operator", "carol"]).await;
    let (_alice, token) = alice_with_device(server.addr("line"), "probe").await;
    let mut probe = Device::new(server.addr("udp"), &token).await;
    probe.send(json!({"type": "ping", "id": 1})).await;
    probe.receive_of_type("pong").await;
    let mut carol = json_account(&server, "carol").await;
    carol
        .send_json(json!({"type": "command", "to": "probe", "name": "status", "id": "t"}))
        .await;
    let status = probe.receive_of_type("command").await;
    expect_error(
        &mut carol,
        "command_timeout",
        json!("t"),
        "probe did not answer status",
    )
    .await;
    // An answer after the timeout is acknowledged and goes nowhere: the next thing
    // carol hears below is the failure of her next command.
    probe
        .send(json!({"type": "command_result", "id": status["id"], "ok": true}))
        .await;
    assert_eq!(probe.receive_of_type("ok").await["id"], status["id"]);
    // The device leaves (quit) while a command waits: the sender hears at once.
    carol
        .send_json(json!({"type": "command", "to": "probe", "name": "land", "id": "q"}))
        .await;
    while probe.receive_of_type("command").await["name"] != "land" {}
    probe.send(json!({"type": "quit"})).await;
    let failed = carol.json().await;
    assert_eq!(
        failed["type"], "error",
        "nothing before the failure: {failed}"
    );
    assert_eq!(
        (&failed["code"], &failed["id"]),
        (&json!("command_timeout"), &json!("q"))
    );
    assert!(failed["text"]
        .as_str()
        .unwrap()
        .contains("left before answering"));
    server.stop().await;
}

/// The next error `client` gets: its code, the request id it carries back, and words
/// in its text.
async fn expect_error(client: &mut Lines<TcpStream>, code: &str, id: Value, words: &str) {
    let error = client.json_of_type("error").await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&json!(code), &id),
        "{error}"
    );
    let text = error["text"].as_str().unwrap_or_default();
    assert!(text.contains(words), "{error}");
}

#[tokio::test]
async fn bad_datagrams_are_dropped_counted_and_never_answered() {
    let server = Server::start(&[]).await;
    let (mut alice, token) = alice_with_device(server.addr("line"), "drone8").await;
    alice.send_line("/join #drones").await;
    alice.line_containing("*** alice joined #drones").await;
    let mut drone = Device::new(server.addr("udp"), &token).await;
    drone
        .send(json!({"type": "say", "room": "#drones", "text": "first"}))
        .await;
    alice.line_containing("first").await;

    // A replay of that very datagram (same seq) is dropped.
    let replayed = json!({"type": "say", "room": "#drones", "text": "first",
                          "token": token, "seq": drone.seq});
    drone
        .socket
        .send(replayed.to_string().as_bytes())
        .await
        .unwrap();
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"replayed\"}",
        1.0,
    )
    .await;

    // A stranger: wrong token, no token, bad JSON, oversized, then a flood of wrong
    // tokens. Nothing comes back to it, ever.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.connect(server.addr("udp")).await.unwrap();
    let wrong = json!({"type": "say", "room": "#drones", "text": "let me in",
                       "token": "0".repeat(64), "seq": 1});
    stranger.send(wrong.to_string().as_bytes()).await.unwrap();
    stranger
        .send(br##"{"type":"say","room":"#drones","text":"x","seq":1}"##)
        .await
        .unwrap();
    stranger.send(b"{\"type\": \"say\", \"tok").await.unwrap();
    let oversized = json!({"type": "say", "room": "#drones", "token": token,
                           "seq": 999_999, "text": "x".repeat(1300)});
    stranger
        .send(oversized.to_string().as_bytes())
        .await
        .unwrap();
    // In steps the server keeps up with, so the kernel never drops one for it (a
    // full socket buffer would make the counts below come out short).
    let received = metric_reaches(&server, "switchboard_udp_datagrams_total", 6.0).await;
    for step in 0..10 {
        for n in 0..20 {
            let token = format!("{:064}", step * 20 + n);
            let flood = json!({"type": "say", "text": "flood", "token": token, "seq": 1});
            stranger.send(flood.to_string().as_bytes()).await.unwrap();
        }
        let sent = f64::from(step + 1) * 20.0;
        metric_reaches(&server, "switchboard_udp_datagrams_total", received + sent).await;
    }
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"bad_token\"}",
        2.0,
    )
    .await;
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"no_token\"}",
        1.0,
    )
    .await;
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"bad_json\"}",
        1.0,
    )
    .await;
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"oversized\"}",
        1.0,
    )
    .await;
    let limited = metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"rate_limited\"}",
        150.0,
    )
    .await;
    assert!(limited <= 200.0);

    // A flood that looks spoofed: wrong tokens from 20 addresses (all of 127/8 is this
    // machine). Every datagram is dropped and counted, as a bad token or over a limit.
    let text = server.metrics().await;
    let dropped_before = metric(&text, "switchboard_udp_dropped_total{reason=\"bad_token\"}")
        + metric(
            &text,
            "switchboard_udp_dropped_total{reason=\"rate_limited\"}",
        );
    let received = metric(&text, "switchboard_udp_datagrams_total");
    for host in 2..22 {
        let spoofed = UdpSocket::bind(format!("127.0.0.{host}:0")).await.unwrap();
        spoofed.connect(server.addr("udp")).await.unwrap();
        for n in 0..20 {
            let token = format!("{host:032}{n:032}");
            let flood = json!({"type": "say", "text": "flood", "token": token, "seq": n + 1});
            spoofed.send(flood.to_string().as_bytes()).await.unwrap();
        }
        let sent = f64::from(host - 1) * 20.0;
        metric_reaches(&server, "switchboard_udp_datagrams_total", received + sent).await;
    }
    let text = server.metrics().await;
    let dropped = metric(&text, "switchboard_udp_dropped_total{reason=\"bad_token\"}")
        + metric(
            &text,
            "switchboard_udp_dropped_total{reason=\"rate_limited\"}",
        );
    assert_eq!(dropped - dropped_before, 400.0, "{text}");

    // Meanwhile the device is served as before; the oversized datagram with its token
    // and a high seq did not move its window (it was dropped before being read).
    drone
        .send(json!({"type": "say", "room": "#drones", "text": "still here"}))
        .await;
    alice.line_containing("still here").await;
    let mut buffer = [0u8; 2048];
    let answered =
        tokio::time::timeout(Duration::from_millis(500), stranger.recv(&mut buffer)).await;
    assert!(
        answered.is_err(),
        "the stranger got an answer: {answered:?}"
    );
    assert!(
        !alice_saw_any(&mut alice, &["let me in", "flood"]).await,
        "a dropped datagram was delivered"
    );

    // Removing the device ends its session and its token.
    alice.send_line("/device remove drone8").await;
    alice
        .line_containing("drone8 left #drones (device removed)")
        .await;
    alice
        .line_containing("*** device drone8 removed; its token no longer works")
        .await;
    let before = metrics_value(
        &server,
        "switchboard_udp_dropped_total{reason=\"bad_token\"}",
    )
    .await;
    drone
        .send(json!({"type": "say", "room": "#drones", "text": "after removal"}))
        .await;
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"bad_token\"}",
        before + 1.0,
    )
    .await;
    alice.send_line("/devices").await;
    alice.line_containing("you have no devices").await;
    server.stop().await;
}

/// Whether any of `needles` is in what `client` receives in the next moment (after a
/// ping it answers, so everything sent before has arrived).
async fn alice_saw_any(client: &mut Lines<TcpStream>, needles: &[&str]) -> bool {
    client.send_line("/ping").await;
    loop {
        let line = client.line().await.expect("a line");
        if line.contains("pong") {
            return false;
        }
        if needles.iter().any(|needle| line.contains(needle)) {
            return true;
        }
    }
}

#[tokio::test]
async fn devices_are_an_account_s_own_and_need_one() {
    let server = Server::start(&[]).await;
    let mut guest = Lines::line_login(server.addr("line"), "guest").await;
    guest.send_line("/device add sneaky").await;
    guest.line_containing("error:").await;
    let (mut alice, _token) = alice_with_device(server.addr("line"), "drone9").await;
    // The name is protected like an account's.
    let mut taker = Lines::connect(server.addr("line")).await;
    taker.send_line("drone9").await;
    taker.line_containing("that name is registered").await;
    alice.send_line("/device add alice").await;
    alice.line_containing("alice is already registered").await;
    // Someone else's device cannot be removed.
    let (mut bob, _) = Lines::json_login(server.addr("json"), "bob").await;
    bob.send_json(json!({"type": "auth", "action": "register", "password": "bob's password"}))
        .await;
    bob.json_of_type("signed_in").await;
    bob.send_json(json!({"type": "device", "action": "remove", "name": "drone9", "id": 1}))
        .await;
    expect_error(
        &mut bob,
        "no_such_nick",
        json!(1),
        "not one of your devices",
    )
    .await;
    bob.send_json(json!({"type": "device", "action": "add", "name": "bobcat", "id": 2}))
        .await;
    let added = bob.json_of_type("device_added").await;
    assert_eq!(
        (&added["name"], &added["id"]),
        (&json!("bobcat"), &json!(2))
    );
    bob.send_json(json!({"type": "device", "action": "list", "id": 3}))
        .await;
    assert_eq!(
        bob.json_of_type("devices").await["devices"],
        json!(["bobcat"])
    );
    // The device can use its token on a connection too.
    let (mut bobcat, _) = {
        let mut client = Lines::connect(server.addr("json")).await;
        client
            .send_json(json!({"type": "auth", "action": "token", "token": added["token"]}))
            .await;
        let signed_in = client.json_of_type("signed_in").await;
        (client, signed_in)
    };
    bob.send_json(json!({"type": "command", "to": "bobcat", "name": "ping", "id": "p"}))
        .await;
    let command = bobcat.json_of_type("command").await;
    bobcat
        .send_json(json!({"type": "command_result", "id": command["id"], "ok": true}))
        .await;
    let result = bob.json_of_type("command_result").await;
    assert_eq!((&result["id"], &result["ok"]), (&json!("p"), &json!(true)));
    // A device owns no devices.
    bobcat
        .send_json(json!({"type": "device", "action": "add", "name": "kitten", "id": "k"}))
        .await;
    expect_error(
        &mut bobcat,
        "not_operator",
        json!("k"),
        "a device owns no devices",
    )
    .await;
    server.stop().await;
}

/// The README's walk-through: `switchboard device` with a token from `/device add`
/// sends telemetry into its room and answers commands. Both ends are the binary, as a
/// user runs them: the simulator is one of its subcommands.
#[tokio::test]
async fn the_device_simulator_sends_telemetry_and_answers_commands() {
    let server = support::web::Server::start(&[], &["line", "udp"]).await;
    let (mut alice, token) = alice_with_device(server.addr("line"), "drone1").await;
    alice.send_line("/join #devices").await;
    alice.line_containing("*** alice joined #devices").await;
    let udp = server.addr("udp").to_string();
    let mut simulator = tokio::process::Command::new(support::binary())
        .args(["device", "--token", &token, "--udp", &udp])
        .args(["--room", "#devices", "--rate", "20", "--count", "100000"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start switchboard device");
    alice.line_containing("*** drone1 joined #devices").await;
    let telemetry = alice.line_containing("telemetry").await;
    assert!(telemetry.contains("[drone1]"), "{telemetry}");
    assert!(telemetry.contains("battery_pct"), "{telemetry}");
    alice
        .send_line(r#"/command drone1 takeoff {"altitude_m":25}"#)
        .await;
    let answer = alice.line_containing("*** drone1: takeoff").await;
    assert_eq!(answer, r#"*** drone1: takeoff: ok {"altitude_m":25.0}"#);
    alice.send_line("/command drone1 dance").await;
    let refused = alice.line_containing("*** drone1: dance").await;
    assert!(
        refused.contains("failed: unknown command \"dance\""),
        "{refused}"
    );
    simulator.kill().await.unwrap();
    server.stop().await;
}

/// A device removed while it had no UDP session: its token, still in the door's
/// cache, signs nobody in, not even a person who took the name since.
#[tokio::test]
async fn a_removed_device_s_token_signs_in_nobody_later() {
    let server = Server::start(&[]).await;
    let (mut alice, token) = alice_with_device(server.addr("line"), "gadget").await;
    let mut gadget = Device::new(server.addr("udp"), &token).await;
    gadget.send(json!({"type": "ping", "id": 1})).await;
    gadget.receive_of_type("pong").await;
    gadget.send(json!({"type": "quit"})).await;
    alice.send_line("/device remove gadget").await;
    alice.line_containing("*** device gadget removed").await;
    let mut person = Lines::line_login(server.addr("line"), "gadget").await;
    person.send_line("/register gadget's own password").await;
    person.line_containing("is registered to you").await;

    let before = metrics_value(
        &server,
        "switchboard_udp_dropped_total{reason=\"bad_token\"}",
    )
    .await;
    gadget
        .send(json!({"type": "say", "text": "impostor", "id": 2}))
        .await;
    metric_reaches(
        &server,
        "switchboard_udp_dropped_total{reason=\"bad_token\"}",
        before + 1.0,
    )
    .await;
    person.send_line("/whois gadget").await;
    let whois = person.line_containing("*** gadget is client").await;
    assert!(
        whois.contains("via line") && !whois.contains("a device"),
        "{whois}"
    );
    assert!(!alice_saw_any(&mut person, &["impostor", "signed in from elsewhere"]).await);
    server.stop().await;
}
