//! The JSON protocol over TCP against the real server: every request type, every
//! error path (each carrying its request id back), and the connection staying usable.

mod support;

use serde_json::json;
use support::inproc::InProcess as Server;
use support::web::Lines;

#[tokio::test]
async fn every_request_type_works_and_is_acknowledged_by_id() {
    let server = Server::start(&[]).await;
    let json = server.addr("json");
    let (mut alice, welcome) = Lines::json_login(json, "alice").await;
    assert_eq!(welcome["nick"], "alice");
    assert_eq!(welcome["protocol"], 1);
    assert!(welcome["client"].as_u64().is_some());
    let (mut bob, bob_welcome) = Lines::json_login(json, "bob").await;
    let bob_id = bob_welcome["client"].as_u64().unwrap();
    let joined = alice.json_of_type("joined").await;
    assert_eq!(joined["nick"], "bob");
    assert_eq!(joined["room"], "#general");

    // say, with a request id: the message (with server id and time), then the ack.
    alice
        .send_json(json!({"type": "say", "room": "#general", "text": "hello", "id": "s1", "colour": "ignored"}))
        .await;
    let message = bob.json_of_type("message").await;
    assert_eq!(message["from"], "alice");
    assert_eq!(message["text"], "hello");
    assert_eq!(message["room"], "#general");
    assert!(message["id"].as_u64().is_some() && message["time"].as_u64().unwrap() > 0);
    assert_eq!(alice.json_of_type("message").await["text"], "hello");
    assert_eq!(alice.json().await, json!({"type": "ok", "id": "s1"}));

    // structured data alongside or instead of text
    alice
        .send_json(json!({"type": "say", "data": {"cmd": "land", "alt": 0}}))
        .await;
    let telemetry = bob.json_of_type("message").await;
    assert_eq!(telemetry["data"], json!({"cmd": "land", "alt": 0}));
    assert_eq!(telemetry["text"], "");

    // action, private message, private action
    alice
        .send_json(json!({"type": "action", "text": "waves"}))
        .await;
    let action = bob.json_of_type("message").await;
    assert_eq!(
        (action["action"].clone(), action["text"].clone()),
        (json!(true), json!("waves"))
    );
    alice
        .send_json(json!({"type": "msg", "to": "bob", "text": "psst", "id": 7}))
        .await;
    let private = bob.json_of_type("message").await;
    assert_eq!(private["to"], "bob");
    assert_eq!(private["text"], "psst");
    assert!(private.get("room").is_none());
    assert_eq!(
        alice.json_of_type("ok").await["id"],
        7,
        "numeric ids echo as numbers"
    );

    // join, rooms, members, whois, ping
    bob.send_json(json!({"type": "join", "room": "#rust", "id": "j"}))
        .await;
    assert_eq!(bob.json_of_type("joined").await["room"], "#rust");
    assert_eq!(bob.json_of_type("ok").await["id"], "j");
    alice.send_json(json!({"type": "rooms", "id": "r"})).await;
    let rooms = alice.json_of_type("rooms").await;
    assert_eq!(rooms["id"], "r");
    assert_eq!(
        rooms["rooms"],
        json!([{"name": "#general", "members": 2}, {"name": "#rust", "members": 1}])
    );
    alice
        .send_json(json!({"type": "members", "room": "#general", "id": "m"}))
        .await;
    let members = alice.json_of_type("members").await;
    assert_eq!(members["members"], json!(["alice", "bob"]));
    assert_eq!(members["id"], "m");
    alice
        .send_json(json!({"type": "whois", "nick": "bob", "id": "w"}))
        .await;
    let whois = alice.json_of_type("whois").await;
    assert_eq!(whois["client"], bob_id);
    assert_eq!(whois["door"], "json");
    assert_eq!(whois["rooms"], json!(["#general", "#rust"]));
    alice.send_json(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(alice.json_of_type("pong").await["id"], "p");

    // nick change seen by a room-mate, part, quit
    alice
        .send_json(json!({"type": "nick", "nick": "alicia", "id": "n"}))
        .await;
    let change = bob.json_of_type("nick").await;
    assert_eq!(
        (change["old"].clone(), change["new"].clone()),
        (json!("alice"), json!("alicia"))
    );
    assert_eq!(alice.json_of_type("ok").await["id"], "n");
    bob.send_json(json!({"type": "part", "room": "#rust", "reason": "done"}))
        .await;
    let left = bob.json_of_type("left").await;
    assert_eq!(
        (left["room"].clone(), left["reason"].clone()),
        (json!("#rust"), json!("done"))
    );
    alice
        .send_json(json!({"type": "quit", "reason": "bye"}))
        .await;
    loop {
        match alice.line().await {
            None => break,
            Some(_) => continue,
        }
    }
    let gone = bob.json_of_type("left").await;
    assert_eq!(gone["nick"], "alicia");
    assert!(gone["reason"].as_str().unwrap().contains("bye"));
    server.stop().await;
}

#[tokio::test]
async fn every_error_carries_its_code_and_request_id_and_the_connection_stays_usable() {
    // Many requests back to back: flood control would (rightly) slow them down.
    let server = Server::start(&["--max-json-bytes", "256", "--flood-rate", "0"]).await;
    let json = server.addr("json");
    let (mut bob, _) = Lines::json_login(json, "bob").await;
    bob.send_json(json!({"type": "join", "room": "#private", "id": "j"}))
        .await;
    assert_eq!(bob.json_of_type("ok").await["id"], "j");
    let mut early = Lines::connect(json).await;

    // Before a name: requests are refused.
    early
        .send_json(json!({"type": "say", "text": "hi", "id": "e0"}))
        .await;
    assert_eq!(
        error(&mut early).await,
        (json!("not_registered"), json!("e0"))
    );
    // Bad names, taken names.
    early
        .send_json(json!({"type": "nick", "nick": "has space", "id": "e1"}))
        .await;
    assert_eq!(
        error(&mut early).await,
        (json!("nick_invalid"), json!("e1"))
    );
    early
        .send_json(json!({"type": "nick", "nick": "BOB", "id": "e2"}))
        .await;
    assert_eq!(error(&mut early).await, (json!("nick_taken"), json!("e2")));
    early
        .send_json(json!({"type": "nick", "nick": "carol", "id": "e3"}))
        .await;
    early.json_of_type("welcome").await;
    assert_eq!(early.json_of_type("ok").await["id"], "e3");

    // Malformed JSON: an error, and the connection still works.
    early.send_line("{\"type\": \"say\", oops").await;
    let malformed = early.json_of_type("error").await;
    assert_eq!(malformed["code"], "bad_request");
    assert!(malformed["text"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    assert!(malformed.get("id").is_none());
    early.send_line("[1, 2, 3]").await;
    assert_eq!(early.json_of_type("error").await["code"], "bad_request");

    let cases = [
        (json!({"type": "dance", "id": "e4"}), "unknown_command"),
        (
            json!({"type": "history", "before": "yesterday", "id": "e5"}),
            "bad_request",
        ),
        (json!({"id": "e6"}), "bad_request"),
        (json!({"type": "say", "id": "e7"}), "bad_request"),
        (json!({"type": "join", "id": "e8"}), "bad_request"),
        (
            json!({"type": "msg", "text": "x", "id": "e9"}),
            "bad_request",
        ),
        (
            json!({"type": "join", "room": 12, "id": "e10"}),
            "bad_request",
        ),
        (
            json!({"type": "say", "room": "#private", "text": "x", "id": "e11"}),
            "not_in_room",
        ),
        (
            json!({"type": "part", "room": "#private", "id": "e12"}),
            "not_in_room",
        ),
        (
            json!({"type": "say", "room": "#nowhere", "text": "x", "id": "e13"}),
            "no_such_room",
        ),
        (
            json!({"type": "msg", "to": "nobody", "text": "x", "id": "e14"}),
            "no_such_nick",
        ),
        (
            json!({"type": "whois", "nick": "nobody", "id": "e15"}),
            "no_such_nick",
        ),
        (
            json!({"type": "join", "room": "#bad room", "id": "e16"}),
            "room_invalid",
        ),
        (
            json!({"type": "nick", "nick": "bob", "id": "e17"}),
            "nick_taken",
        ),
        (
            json!({"type": "nick", "nick": "", "id": "e18"}),
            "nick_invalid",
        ),
    ];
    for (request, code) in cases {
        let id = request["id"].clone();
        early.send_json(request.clone()).await;
        assert_eq!(error(&mut early).await, (json!(code), id), "{request}");
    }

    // Over the size cap: refused with the id found in its start; the next one works.
    let big = format!(
        "{{\"type\":\"say\",\"id\":\"big\",\"text\":\"{}\"}}",
        "x".repeat(1000)
    );
    early.send_line(&big).await;
    assert_eq!(
        error(&mut early).await,
        (json!("line_too_long"), json!("big"))
    );
    early
        .send_json(json!({"type": "ping", "id": "after"}))
        .await;
    assert_eq!(early.json_of_type("pong").await["id"], "after");
    server.stop().await;
}

async fn error(
    client: &mut Lines<tokio::net::TcpStream>,
) -> (serde_json::Value, serde_json::Value) {
    let error = client.json_of_type("error").await;
    assert!(!error["text"].as_str().unwrap_or("").is_empty(), "{error}");
    (
        error["code"].clone(),
        error.get("id").cloned().unwrap_or_default(),
    )
}

#[tokio::test]
async fn json_door_can_be_turned_off_and_line_clients_see_json_messages() {
    let server = Server::start(&[]).await;
    let (mut program, _) = Lines::json_login(server.addr("json"), "drone1").await;
    let mut person = Lines::line_login(server.addr("line"), "pilot").await;
    program
        .send_json(json!({"type": "say", "text": "status", "data": {"battery": 87}}))
        .await;
    assert_eq!(
        person.line_containing("[drone1]").await,
        "[drone1] status {\"battery\":87}"
    );
    person.send_line("land now").await;
    let order = program.json_of_type("message").await;
    let order = if order["from"] == "pilot" {
        order
    } else {
        program.json_of_type("message").await
    };
    assert_eq!(
        (order["from"].clone(), order["text"].clone()),
        (json!("pilot"), json!("land now"))
    );
    server.stop().await;

    let off = Server::start(&["--json", "off"]).await;
    assert!(!off.doors.contains_key("json"), "{:?}", off.doors);
    off.stop().await;

    // A web-and-JSON-only server: the line door can be turned off too.
    let web_only = Server::start(&["--line", "off"]).await;
    assert!(!web_only.doors.contains_key("line"), "{:?}", web_only.doors);
    let (_program, welcome) = Lines::json_login(web_only.addr("json"), "solo").await;
    assert_eq!(welcome["nick"], "solo");
    web_only.stop().await;
}

#[tokio::test]
async fn history_is_replayed_on_join_and_paged_by_id() {
    let server = Server::start(&["--replay", "3"]).await;
    let json = server.addr("json");
    let (mut alice, _) = Lines::json_login(json, "alice").await;
    for n in 1..=5 {
        alice
            .send_json(json!({"type": "say", "text": format!("note {n}"), "id": n}))
            .await;
        assert_eq!(alice.json_of_type("ok").await["id"], n);
    }
    // A newcomer gets the last 3 as one history object, each message marked.
    let (mut bob, _) = Lines::json_login(json, "bob").await;
    let replay = bob.json_of_type("history").await;
    assert_eq!(replay["replay"], true);
    assert_eq!(replay["room"], "#general");
    let texts: Vec<&str> = replay["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["note 3", "note 4", "note 5"]);
    assert!(replay["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["history"] == true));
    let newest = replay["messages"][2]["id"].as_u64().unwrap();
    // Paging backwards from the newest by id, then forwards again.
    bob.send_json(
        json!({"type": "history", "room": "#general", "before": newest, "limit": 2, "id": "back"}),
    )
    .await;
    let page = bob.json_of_type("history").await;
    assert_eq!(page["id"], "back");
    assert!(page.get("replay").is_none());
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [newest - 2, newest - 1]);
    assert_eq!(page["more"], true);
    bob.send_json(json!({"type": "history", "after": newest - 2, "id": "fwd"}))
        .await;
    let page = bob.json_of_type("history").await;
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [newest - 1, newest]);
}

#[tokio::test]
async fn a_json_flooder_is_slowed_then_disconnected_and_others_carry_on() {
    let server = Server::start(&[
        "--flood-rate",
        "20",
        "--flood-burst",
        "5",
        "--flood-patience",
        "1s",
    ])
    .await;
    let json = server.addr("json");
    let (mut watcher, _) = Lines::json_login(json, "watcher").await;
    let (mut flooder, _) = Lines::json_login(json, "flooder").await;
    watcher.json_of_type("joined").await;
    // Over the burst: told once to slow down, and every message still arrives.
    for n in 0..10 {
        flooder
            .send_json(json!({"type": "say", "text": format!("burst {n}")}))
            .await;
    }
    let slow = flooder.json_of_type("error").await;
    assert_eq!(slow["code"], "flood");
    assert!(slow["text"].as_str().unwrap().contains("slow down"));
    for n in 0..10 {
        assert_eq!(
            watcher.json_of_type("message").await["text"],
            format!("burst {n}")
        );
    }
    // Flooding on past the patience ends with a stated reason.
    let line = format!("{}\n", json!({"type": "say", "text": "flood"})).repeat(50);
    let flood = tokio::spawn(async move {
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(20)
            && flooder.try_send_raw(line.as_bytes()).await
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    loop {
        let event = watcher.json().await;
        if event["type"] == "left" {
            assert_eq!(event["nick"], "flooder");
            assert_eq!(event["reason"], "flooding");
            break;
        }
    }
    flood.abort();
    watcher.send_json(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(watcher.json_of_type("pong").await["id"], "p");
}
