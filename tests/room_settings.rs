//! A room's settings against the real server over real sockets: a key (`+k`) set by
//! the room's owner refuses a missing or wrong key and admits the right one on the
//! line, JSON and IRC doors (475 on IRC, `JOIN #a,#b k1,k2` pairing keys with
//! channels by position), is shown only to operators, and survives a restart; a
//! topic outlives the room emptying and a restart, and its stored row goes when it
//! is cleared; a moderated room (`+m`) hears only its owner and operators (404 on
//! IRC), and its topic lock (`+t`, on by default in an owned room) is a mode that
//! `-t` opens to members (482 on IRC when locked), both kept across a restart.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::inproc::InProcess as Server;
use support::web::Lines;
use tokio::net::TcpStream;

/// An IRC guest through registration and the default room's NAMES.
async fn irc_guest(addr: SocketAddr, nick: &str) -> Lines<TcpStream> {
    let mut irc = Lines::connect(addr).await;
    irc.send_raw(format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").as_bytes())
        .await;
    irc.line_containing(" 001 ").await;
    irc.line_containing(" 366 ").await;
    irc
}

#[tokio::test]
async fn a_keyed_room_refuses_without_its_key_on_the_line_and_json_doors_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = ["--data", data.as_str()];
    let server = Server::start(&args).await;
    let line = server.addr("line");

    // alice makes #vault (she owns it) and gives it a key.
    let mut alice = Lines::line_account(line, "alice").await;
    alice.send_line("/join #vault").await;
    alice.line_containing("alice joined #vault").await;
    alice.send_line("/mode #vault +k Sesame").await;
    let announced = alice.line_containing("* alice set a key on the room").await;
    assert!(!announced.contains("Sesame"), "{announced}");
    alice.send_line("/rules #vault").await;
    alice
        .line_containing("*** #vault: owned by alice; key Sesame")
        .await;

    // A guest: no key, a wrong one (keys are exact), then the right one.
    let mut bob = Lines::line_login(line, "bob").await;
    bob.send_line("/join #vault").await;
    bob.line_containing("error: #vault needs a key (+k): join it with the key")
        .await;
    bob.send_line("/join #vault sesame").await;
    bob.line_containing("error: that is not #vault's key (+k)")
        .await;
    // Members hear there is a key, never what it is.
    bob.send_line("/rules #vault").await;
    bob.line_containing("*** #vault: owned by alice; needs a key")
        .await;
    bob.send_line("/join #vault Sesame").await;
    bob.line_containing("*** bob joined #vault").await;
    alice.line_containing("bob joined #vault").await;

    // The JSON door: the key is a field of the join, and the refusal's code is bad_key.
    let (mut carol, _) = Lines::json_login(server.addr("json"), "carol").await;
    carol
        .send_json(json!({"type": "join", "room": "#vault", "key": "guess", "id": "j1"}))
        .await;
    let refused = carol.json_of_type("error").await;
    assert_eq!(refused["code"], "bad_key", "{refused}");
    assert_eq!(refused["id"], "j1", "{refused}");
    carol
        .send_json(json!({"type": "moderate", "room": "#vault", "action": "rules", "id": "r"}))
        .await;
    let rules = carol.json_of_type("rules").await;
    assert_eq!(
        (rules["has_key"].clone(), rules["key"].clone()),
        (json!(true), json!(null))
    );
    carol
        .send_json(json!({"type": "join", "room": "#vault", "key": "Sesame", "id": "j2"}))
        .await;
    let joined = carol.json_of_type("ok").await;
    assert_eq!(joined["id"], "j2", "{joined}");
    // Only an operator changes it.
    carol
        .send_json(
            json!({"type": "moderate", "room": "#vault", "action": "mode", "key": null, "id": "m"}),
        )
        .await;
    assert_eq!(carol.json_of_type("error").await["code"], "not_operator");
    server.stop().await;

    // After a restart: the same key, refused and admitted the same way, until the
    // owner takes it off.
    let server = Server::start(&args).await;
    let line = server.addr("line");
    let mut alice = Lines::account_login(line, "alice").await;
    alice.send_line("/rules #vault").await;
    alice
        .line_containing("*** #vault: owned by alice; key Sesame")
        .await;
    let mut dan = Lines::line_login(line, "dan").await;
    dan.send_line("/join #vault").await;
    dan.line_containing("error: #vault needs a key (+k)").await;
    dan.send_line("/join #vault Sesame").await;
    dan.line_containing("*** dan joined #vault").await;
    alice.send_line("/mode #vault -k").await;
    dan.line_containing("* alice took the room's key off").await;
    let mut erin = Lines::line_login(line, "erin").await;
    erin.send_line("/join #vault").await;
    erin.line_containing("*** erin joined #vault").await;
    server.stop().await;
}

#[tokio::test]
async fn irc_joins_give_keys_by_position_and_get_475_without_them() {
    let server = Server::start(&["--memory"]).await;
    let line = server.addr("line");
    let mut alice = Lines::line_account(line, "alice").await;
    for (room, key) in [("#a", "k1"), ("#b", "k2")] {
        alice.send_line(&format!("/join {room}")).await;
        alice.line_containing(&format!("alice joined {room}")).await;
        alice.send_line(&format!("/mode {room} +k {key}")).await;
        alice.line_containing("* alice set a key on the room").await;
    }

    let mut irc = irc_guest(server.addr("irc"), "ircguest").await;
    let isupport = irc_isupport(server.addr("irc")).await;
    assert!(isupport.contains(" CHANMODES=b,k,,imRt "), "{isupport}");
    irc.send_raw(b"JOIN #a\r\n").await;
    let refused = irc.line_containing(" 475 ").await;
    assert!(
        refused.contains(" 475 ircguest #a :#a needs a key (+k)"),
        "the numeric names the channel: {refused}"
    );
    // #a's key is right, #b's is not: the keys go with the channels in order.
    irc.send_raw(b"JOIN #a,#b k1,k1\r\n").await;
    irc.line_containing(":ircguest!ircguest@switchboard JOIN #a")
        .await;
    let refused = irc.line_containing(" 475 ").await;
    assert!(refused.contains("that is not #b's key (+k)"), "{refused}");
    irc.send_raw(b"JOIN #b k2\r\n").await;
    irc.line_containing(":ircguest!ircguest@switchboard JOIN #b")
        .await;
    // MODE shows +k, with a * for the key: ircguest is no operator (and +t: only
    // operators set an owned room's topic).
    irc.send_raw(b"MODE #b\r\n").await;
    let modes = irc.line_containing(" 324 ").await;
    assert!(modes.ends_with(" #b +tk *"), "{modes}");
    // Nor may it change the key.
    irc.send_raw(b"MODE #b -k k2\r\n").await;
    let refused = irc.line_containing(" 482 ").await;
    assert!(refused.contains("owner and operators"), "{refused}");

    // alice over IRC (SASL) sets a new key with MODE, and sees it in 324.
    let mut owner = irc_sasl(server.addr("irc"), "alice", "alice's password").await;
    owner.send_raw(b"MODE #b +k New-Key\r\nMODE #b\r\n").await;
    let modes = owner.line_containing(" 324 ").await;
    assert!(modes.ends_with(" #b +tk New-Key"), "{modes}");
    // (Signing in over IRC took alice's name from her line session.)
    drop(alice);
    irc.line_containing("changed the room's key").await;
    irc.send_raw(b"PART #b\r\nJOIN #b k2\r\nJOIN #b New-Key\r\n")
        .await;
    irc.line_containing(" 475 ").await;
    irc.line_containing(":ircguest!ircguest@switchboard JOIN #b")
        .await;
    server.stop().await;
}

/// An IRC client signed in to `name`'s account with SASL PLAIN, registered.
async fn irc_sasl(addr: SocketAddr, name: &str, password: &str) -> Lines<TcpStream> {
    use base64::Engine as _;
    let mut irc = Lines::connect(addr).await;
    irc.send_raw(format!("CAP REQ :sasl\r\nNICK {name}\r\nUSER u 0 * :U\r\n").as_bytes())
        .await;
    irc.line_containing(" ACK ").await;
    irc.send_raw(b"AUTHENTICATE PLAIN\r\n").await;
    irc.line_containing("AUTHENTICATE +").await;
    let payload = base64::engine::general_purpose::STANDARD.encode(format!("\0{name}\0{password}"));
    irc.send_raw(format!("AUTHENTICATE {payload}\r\nCAP END\r\n").as_bytes())
        .await;
    irc.line_containing(" 903 ").await;
    irc.line_containing(" 366 ").await;
    irc
}

/// The ISUPPORT (005) line a fresh IRC client is sent.
async fn irc_isupport(addr: SocketAddr) -> String {
    let mut irc = Lines::connect(addr).await;
    irc.send_raw(b"NICK looker\r\nUSER l 0 * :L\r\n").await;
    irc.line_containing(" 005 ").await
}

/// The stored settings of room `key` in the history database under `dir`, if any.
fn stored_settings(dir: &std::path::Path, key: &str) -> Option<String> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("history.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT rules FROM room_rules WHERE room_key = ?1",
        [key],
        |row| row.get(0),
    )
    .ok()
}

#[tokio::test]
async fn a_topic_outlives_its_room_and_a_restart_and_goes_when_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = ["--data", data.as_str()];
    let server = Server::start(&args).await;
    let line = server.addr("line");

    // A guest's room (no owner, no moderation): only its topic is kept.
    let mut ann = Lines::line_login(line, "ann").await;
    ann.send_line("/join #news").await;
    ann.line_containing("*** ann joined #news").await;
    ann.send_line("/topic #news release on Friday").await;
    ann.line_containing("*** ann set the topic of #news: release on Friday")
        .await;
    // The room empties and is made again: the topic is still there.
    ann.send_line("/part #news").await;
    ann.line_containing("*** ann left #news").await;
    ann.send_line("/join #news").await;
    ann.line_containing("*** topic of #news: release on Friday (set by ann)")
        .await;
    server.stop().await;
    let stored = stored_settings(dir.path(), "#news").expect("a row for the topic");
    assert!(stored.contains("release on Friday"), "{stored}");

    // After a restart: the 332/333 on an IRC join, TOPIC, and the line door's /topic.
    let server = Server::start(&args).await;
    let mut irc = irc_guest(server.addr("irc"), "ircguest").await;
    irc.send_raw(b"JOIN #news\r\n").await;
    let topic = irc.line_containing(" 332 ").await;
    assert!(topic.ends_with(" #news :release on Friday"), "{topic}");
    let by = irc.line_containing(" 333 ").await;
    assert!(by.contains(" #news ann!"), "{by}");
    irc.send_raw(b"TOPIC #news\r\n").await;
    let topic = irc.line_containing(" 332 ").await;
    assert!(topic.ends_with(" #news :release on Friday"), "{topic}");
    let mut bob = Lines::line_login(server.addr("line"), "bob").await;
    bob.send_line("/join #news").await;
    bob.line_containing("*** topic of #news: release on Friday (set by ann)")
        .await;
    bob.send_line("/topic").await;
    bob.line_containing("*** topic of #news: release on Friday (set by ann)")
        .await;

    // Cleared (IRC's empty TOPIC): the room had nothing else stored, so its row goes.
    irc.send_raw(b"TOPIC #news :\r\n").await;
    bob.line_containing("*** ircguest cleared the topic of #news")
        .await;
    bob.send_line("/topic").await;
    bob.line_containing("*** #news has no topic").await;
    server.stop().await;
    assert_eq!(stored_settings(dir.path(), "#news"), None);
}

#[tokio::test]
async fn a_kept_topic_does_not_keep_an_account_from_owning_the_room_it_makes_anew() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data", data.as_str()]).await;
    let line = server.addr("line");
    let mut ann = Lines::line_login(line, "ann").await;
    ann.send_line("/join #cafe").await;
    ann.line_containing("*** ann joined #cafe").await;
    ann.send_line("/topic #cafe open late").await;
    ann.line_containing("*** ann set the topic of #cafe: open late")
        .await;
    ann.send_line("/part #cafe").await;
    ann.line_containing("*** ann left #cafe").await;

    // alice makes #cafe again: she owns it, topic and all, and only she may change it.
    let mut alice = Lines::line_account(line, "alice").await;
    alice.send_line("/join #cafe").await;
    alice
        .line_containing("*** topic of #cafe: open late (set by ann)")
        .await;
    alice.send_line("/rules #cafe").await;
    alice
        .line_containing("*** #cafe: owned by alice; open to all")
        .await;
    ann.send_line("/join #cafe").await;
    ann.line_containing("*** ann joined #cafe").await;
    ann.send_line("/topic #cafe closed").await;
    ann.line_containing("error: only #cafe's owner and operators set its topic")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_moderated_room_hears_only_its_operators_and_its_topic_lock_is_a_mode_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = ["--data", data.as_str()];
    let server = Server::start(&args).await;
    let line = server.addr("line");

    // alice owns #den and makes carol an operator; bob (line) and ircguest are guests.
    let mut alice = Lines::line_account(line, "alice").await;
    alice.send_line("/join #den").await;
    alice.line_containing("alice joined #den").await;
    let mut carol = Lines::line_account(line, "carol").await;
    carol.send_line("/join #den").await;
    alice.line_containing("carol joined #den").await;
    alice.send_line("/op #den carol").await;
    alice
        .line_containing("* alice made carol an operator")
        .await;
    let mut bob = Lines::line_login(line, "bob").await;
    bob.send_line("/join #den").await;
    bob.line_containing("*** bob joined #den").await;
    let mut irc = irc_guest(server.addr("irc"), "ircguest").await;
    irc.send_raw(b"JOIN #den\r\n").await;
    irc.line_containing(":ircguest!ircguest@switchboard JOIN #den")
        .await;

    // +m: the guests are refused (muted: IRC's 404, with the channel), the operator
    // and the owner still speak.
    alice.send_line("/mode #den +m").await;
    bob.line_containing("* alice made the room moderated (only its operators speak)")
        .await;
    bob.send_line("may I?").await;
    bob.line_containing(
        "error: #den is moderated (+m): only its owner and operators (or a server operator) \
         may speak there",
    )
    .await;
    irc.send_raw(b"PRIVMSG #den :and I?\r\n").await;
    let refused = irc.line_containing(" 404 ").await;
    assert!(
        refused.contains(" 404 ircguest #den :#den is moderated (+m)"),
        "{refused}"
    );
    carol.send_line("operators still speak").await;
    bob.line_containing("[carol] operators still speak").await;
    irc.line_containing("PRIVMSG #den :operators still speak")
        .await;
    alice.send_line("/rules #den").await;
    alice
        .line_containing(
            "*** #den: owned by alice; operators carol; open to all; moderated (+m); topic \
             locked (+t)",
        )
        .await;
    irc.send_raw(b"MODE #den\r\n").await;
    let modes = irc.line_containing(" 324 ").await;
    assert!(modes.ends_with(" #den +mt"), "{modes}");

    // -m: the guest speaks again. The topic is still the operators' (+t, the default
    // in an owned room) until -t opens it to members.
    alice.send_line("/mode #den -m").await;
    bob.line_containing("* alice let everyone speak again")
        .await;
    bob.send_line("thanks").await;
    alice.line_containing("[bob] thanks").await;
    bob.send_line("/topic #den bob's topic").await;
    bob.line_containing("error: only #den's owner and operators set its topic (+t)")
        .await;
    alice.send_line("/mode #den -t").await;
    bob.line_containing("* alice let members set the topic")
        .await;
    bob.send_line("/topic #den bob's topic").await;
    alice
        .line_containing("*** bob set the topic of #den: bob's topic")
        .await;
    irc.send_raw(b"MODE #den\r\n").await;
    let modes = irc.line_containing(" 324 ").await;
    assert!(modes.ends_with(" #den +"), "{modes}");
    // Kept moderated with an open topic, over the restart.
    irc.send_raw(b"MODE #den +m\r\n").await;
    irc.line_containing(" 482 ").await;
    alice.send_line("/mode #den +m").await;
    bob.line_containing("* alice made the room moderated").await;
    server.stop().await;

    let server = Server::start(&args).await;
    let line = server.addr("line");
    let mut alice = Lines::account_login(line, "alice").await;
    alice.send_line("/join #den").await;
    alice.line_containing("alice joined #den").await;
    alice.send_line("/rules #den").await;
    let rules = alice
        .line_containing("*** #den: owned by alice; operators carol; open to all; moderated (+m)")
        .await;
    assert!(!rules.contains("topic locked"), "{rules}");
    let mut bob = Lines::line_login(line, "bob").await;
    bob.send_line("/join #den").await;
    bob.line_containing("*** bob joined #den").await;
    bob.send_line("still moderated?").await;
    bob.line_containing("error: #den is moderated (+m)").await;
    alice.send_line("/mode #den -m").await;
    bob.line_containing("* alice let everyone speak again")
        .await;
    bob.send_line("/topic #den an open topic").await;
    alice
        .line_containing("*** bob set the topic of #den: an open topic")
        .await;

    // +t locks it again: IRC's TOPIC is refused with 482 and the channel.
    let mut irc = irc_guest(server.addr("irc"), "ircguest").await;
    irc.send_raw(b"JOIN #den\r\n").await;
    irc.line_containing(":ircguest!ircguest@switchboard JOIN #den")
        .await;
    alice.send_line("/mode #den +t").await;
    irc.line_containing("locked the topic (only operators set it)")
        .await;
    irc.send_raw(b"TOPIC #den :mine now\r\nMODE #den\r\n").await;
    let refused = irc.line_containing(" 482 ").await;
    assert!(
        refused.contains(" 482 ircguest #den :only #den's owner and operators set its topic (+t)"),
        "{refused}"
    );
    let modes = irc.line_containing(" 324 ").await;
    assert!(modes.ends_with(" #den +t"), "{modes}");
    bob.send_line("/topic #den bob again").await;
    bob.line_containing("error: only #den's owner and operators set its topic (+t)")
        .await;
    server.stop().await;
}
