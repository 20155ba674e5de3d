//! End to end in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/chat.mjs` (playwright-core), opens the page served by the real
//! server (in the test's process), picks a nickname, receives a message from a TCP
//! line client and sends one back, then survives a server restart by reconnecting on
//! its own. Screenshots land in `test-output/`.
//!
//! Needs `/usr/bin/chromium` (apt-get install chromium) and
//! `npm ci --prefix tests/browser`; missing either is a failure, not a skip.

mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use support::device::Device;
use support::inproc::InProcess as Server;
use support::web::{Lines, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn browser_and_netcat_user_chat_in_general() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    let server = Server::start(&[]).await;
    let mut tcp = Lines::line_login(server.addr("line"), "tcpuser").await;

    let (mut node, mut steps) = browser_script("chat.mjs", &server.url("web"));

    assert_eq!(next_step(&mut steps).await.as_deref(), Some("READY"));
    tcp.line_containing("webuser joined").await;
    tcp.send_line("hello from tcp").await;
    tcp.send_line("<img src=x onerror=alert(1)>").await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("SENT"));
    assert_eq!(
        tcp.line_containing("[webuser]").await,
        "[webuser] hello from the browser"
    );
    tcp.send_line("/msg webuser just between us").await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("SCREENSHOTS"));

    // Restart the server on the same web address: the page must reconnect on its own.
    let web = server.addr("web").to_string();
    drop(tcp);
    server.stop().await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("OFFLINE"));
    let server = Server::start(&["--web", &web]).await;
    let mut tcp = Lines::line_login(server.addr("line"), "tcpuser").await;
    // The page may reconnect before or after this client: ask until it is there (its
    // backoff between attempts grows to about 15 s).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        tcp.send_line("/who").await;
        if tcp
            .line_containing("#general has")
            .await
            .contains("webuser")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not reconnect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tcp.send_line("back again").await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("DONE"));
    script_succeeded(&mut node).await;
    assert!(root.join("test-output/browser-chat.png").is_file());
    server.stop().await;
}

/// Accounts on the page: `tests/browser/signin.mjs` signs in to a name registered
/// over the line door, sees the message kept for it while it was away, is signed in
/// again by its token after a reload, and logs out.
#[tokio::test]
async fn the_page_signs_in_sees_what_was_kept_and_logs_out() {
    let server = Server::start(&[]).await;
    register_alice(&server).await;
    let mut bob = Lines::line_login(server.addr("line"), "bob").await;
    // Messages are kept for offline accounts from accounts only.
    bob.send_line("/register bob's own password").await;
    bob.line_containing("is registered to you").await;
    bob.send_line("/msg alice kept for you").await;
    bob.line_containing("your message is kept").await;

    let (mut node, mut steps) = browser_script("signin.mjs", &server.url("web"));
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("SIGNED_IN"));
    bob.line_containing("*** alice joined #general").await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("RELOADED"));
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("LOGGED_OUT"));
    bob.line_containing("*** alice left #general (logged out)")
        .await;
    script_succeeded(&mut node).await;
    server.stop().await;
}

/// Moderation from the page: `tests/browser/moderate.mjs` signs in as alice, makes a
/// room (she owns it), and mutes, lists the rules for, sets the modes of (`+m-t`),
/// kicks and bans bob, a guest on the line door, who sees each of it.
#[tokio::test]
async fn the_page_moderates_a_room_it_owns() {
    let server = Server::start(&[]).await;
    register_alice(&server).await;

    let (mut node, mut steps) = browser_script("moderate.mjs", &server.url("web"));
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("OWNER"));
    let mut bob = Lines::line_login(server.addr("line"), "bob").await;
    bob.send_line("/join #den").await;
    bob.line_containing("*** bob joined #den").await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("MUTED"));
    bob.line_containing("* alice muted bob (guest) for 10m (too loud)")
        .await;
    bob.send_line("/join #den").await;
    bob.send_line("let me speak").await;
    bob.line_containing("error: you are muted in #den").await;
    go_on(&mut node).await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("RULES"));
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("MODES"));
    bob.line_containing(
        "* alice made the room moderated (only its operators speak) and let members set the topic",
    )
    .await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("BANNED"));
    bob.line_containing("*** bob left #den (kicked by alice: bye now)")
        .await;
    bob.send_line("/join #den").await;
    bob.line_containing("error: you are banned from #den").await;
    script_succeeded(&mut node).await;
    server.stop().await;
}

/// Devices from the page: `tests/browser/command.mjs` signs in as alice and adds device
/// drone5; this test is the device, over real UDP: its telemetry shows on the page, and
/// the command the page sends arrives by datagram, is answered, and the answer shows.
#[tokio::test]
async fn the_page_commands_a_device_over_udp() {
    let server = Server::start(&[]).await;
    register_alice(&server).await;
    let (mut node, mut steps) = browser_script("command.mjs", &server.url("web"));
    let step = next_step(&mut steps).await.unwrap_or_default();
    let token = step
        .strip_prefix("TOKEN ")
        .expect("the script printed the token");
    let mut drone = Device::new(server.addr("udp"), token).await;
    drone
        .send(
            json!({"type": "say", "room": "#devices", "text": "battery 97",
                     "data": {"battery_pct": 97}}),
        )
        .await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("TELEMETRY"));
    let command = drone.receive_of_type("command").await;
    assert_eq!(
        (&command["from"], &command["name"], &command["args"]),
        (&json!("alice"), &json!("land"), &json!({"speed": 2}))
    );
    drone
        .send(
            json!({"type": "command_result", "id": command["id"], "ok": true,
                     "result": {"landed": true}}),
        )
        .await;
    assert_eq!(next_step(&mut steps).await.as_deref(), Some("ANSWERED"));
    script_succeeded(&mut node).await;
    server.stop().await;
}

/// Register `alice` (password `correct horse battery`) over the line door, and leave.
async fn register_alice(server: &Server) {
    let mut alice = Lines::line_login(server.addr("line"), "alice").await;
    alice.send_line("/register correct horse battery").await;
    alice.line_containing("is registered to you").await;
    alice.send_line("/quit").await;
    while alice.line().await.is_some() {}
}

/// The browser script ends, in time, and successfully.
async fn script_succeeded(node: &mut tokio::process::Child) {
    let status = tokio::time::timeout(WAIT * 3, node.wait())
        .await
        .expect("the browser script finished in time")
        .unwrap();
    assert!(status.success(), "browser script failed: {status}");
}

type Steps = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Start `tests/browser/SCRIPT` against the page at `url` (screenshots go to
/// `test-output/`), after checking its dependencies are there: a missing one is a
/// failure that says how to install it, not a skip.
fn browser_script(script: &str, url: &str) -> (tokio::process::Child, Steps) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_dir = root.join("tests/browser");
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "browser test dependencies are missing: run `npm ci --prefix tests/browser`"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Chromium is missing: run `apt-get install -y --no-install-recommends chromium`"
    );
    let mut node = tokio::process::Command::new("node")
        .arg(script_dir.join(script))
        .arg(url)
        .arg(root.join("test-output"))
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (is Node.js installed?)");
    let steps = BufReader::new(node.stdout.take().unwrap()).lines();
    (node, steps)
}

/// Tell a script waiting in `waitForGo()` (tests/browser/launch.mjs) to move on.
async fn go_on(node: &mut tokio::process::Child) {
    use tokio::io::AsyncWriteExt;
    let stdin = node.stdin.as_mut().expect("the script's stdin is piped");
    stdin
        .write_all(b"GO\n")
        .await
        .expect("write GO to the script");
    stdin.flush().await.expect("flush GO to the script");
}

/// The next line the browser script prints (READY, SENT, DONE).
async fn next_step(steps: &mut Steps) -> Option<String> {
    tokio::time::timeout(WAIT * 6, steps.next_line())
        .await
        .expect("the browser script moved on in time")
        .unwrap()
}
