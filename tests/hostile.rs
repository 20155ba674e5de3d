//! Hostile clients against the line door: floods, endless lines, other protocols,
//! idle and never-registering connections, per-address limits and churn. Each case
//! checks that everyone else keeps being served. The server runs in process
//! (`Background`) except where a test measures its memory or descriptors: those are
//! the whole process's, so it needs one of its own (`Server`, the binary).

mod support;

use std::time::{Duration, Instant};

use support::blocking::*;
use support::inproc::Background;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_flooder_is_throttled_then_disconnected_while_others_chat_on() {
    let server = Background::start(&[
        "--flood-rate",
        "20",
        "--flood-burst",
        "5",
        "--flood-patience",
        "1s",
    ]);
    let mut watcher = server.join("watcher");
    let mut flooder = server.join("flooder");
    watcher.expect("*** flooder joined #general\n");
    // A burst well over the limit: the first messages pass, then the flooder is told
    // to slow down and the rest are delayed, not lost.
    let mut burst = String::new();
    for n in 0..10 {
        burst.push_str(&format!("burst {n}\n"));
    }
    flooder.send(burst.as_bytes());
    flooder.expect("*** slow down: over 20 messages per second");
    for n in 0..10 {
        assert_eq!(watcher.line(), format!("[flooder] burst {n}"));
    }
    // Meanwhile another client is served at once.
    watcher.send_line("still talking");
    watcher.expect("[watcher] still talking\n");
    // A flood that goes on past the patience is disconnected with the reason.
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        let line = "flood flood flood\n".repeat(100);
        while started.elapsed() < Duration::from_secs(20) {
            if std::io::Write::write_all(&mut flooder.stream, line.as_bytes()).is_err() {
                break;
            }
        }
        flooder.expect_closed()
    });
    let left = watcher.lines_until("*** flooder left");
    assert_eq!(left.last().unwrap(), "*** flooder left #general (flooding)");
    assert!(flood
        .join()
        .unwrap()
        .contains("error: disconnected for flooding"));
    watcher.send_line("after the flood");
    watcher.expect("[watcher] after the flood\n");
}

#[test]
fn an_endless_line_is_discarded_with_bounded_memory() {
    let server = Server::start(&["--max-line-bytes", "1024", "--flood-rate", "0"]);
    let pid = server.child.id();
    let mut watcher = server.join("watcher");
    let mut streamer = server.join("streamer");
    watcher.expect("*** streamer joined #general\n");
    let before = rss_kib(pid);
    // 100 MB with no newline at all.
    let chunk = vec![b'A'; 1 << 20];
    let mut sender = streamer.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..100 {
            std::io::Write::write_all(&mut sender, &chunk).unwrap();
        }
        std::io::Write::write_all(&mut sender, b"\nback to normal\n").unwrap();
    });
    streamer.expect("error: line too long (limit 1024 bytes); it was discarded\n");
    writer.join().unwrap();
    assert_eq!(watcher.line(), "[streamer] back to normal");
    let after = rss_kib(pid);
    assert!(
        after < before + 20 * 1024,
        "server memory grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn http_or_tls_at_the_line_port_gets_an_explanation_and_a_close() {
    let server = Background::start(&[]);
    let mut browser = server.connect();
    browser.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let said = browser.expect_closed();
    assert!(
        said.contains("error: this is Switchboard's plain-text chat port, not HTTP"),
        "{said}"
    );
    assert_eq!(
        said.matches("error:").count(),
        1,
        "one explanation, not one per header: {said}"
    );
    let mut tls = server.connect();
    tls.send(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
    let said = tls.expect_closed();
    assert!(said.contains("does not speak TLS"), "{said}");
}

#[test]
fn idle_and_nameless_connections_are_closed_with_a_reason() {
    // Two servers: a register timeout short enough to test quickly would also catch the
    // idler before it had sent its name on a loaded machine.
    let strict = Background::start(&["--register-timeout", "300ms"]);
    let mut nameless = strict.connect();
    assert!(nameless
        .expect_closed()
        .contains("error: no name chosen within 0.3s"));
    let server = Background::start(&["--idle-timeout", "500ms"]);
    let mut idle = server.join("idler");
    let said = idle.expect_closed();
    assert!(said.contains("error: nothing received for 0.5s"), "{said}");
}

#[test]
fn per_address_limit_refuses_with_a_reason() {
    let server = Background::start(&["--max-clients-per-ip", "2"]);
    let mut one = server.connect();
    one.expect("Enter your name: ");
    let mut two = server.connect();
    two.expect("Enter your name: ");
    let mut three = server.connect();
    assert_eq!(
        three.expect_closed(),
        "error: too many connections from your address (limit 2); close one and retry\n"
    );
    drop(one);
    // The slot is freed once the server has seen the close.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = server.connect();
        let first = again.expect(":");
        if first.starts_with("Enter your name") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bidi_overrides_and_zero_width_tricks_are_neutralised() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let mut mallory = server.join("mallory");
    alice.expect("*** mallory joined #general\n");
    // Right-to-left override would flip the rest of the line, prefixes included.
    mallory.send_line("\u{202E}evil\u{202C} text");
    assert_eq!(alice.line(), "[mallory] evil text");
    mallory.expect("[mallory] evil text\n");
    mallory.send_line("/nick ali\u{200B}ce");
    assert!(mallory.line().contains("control or invisible"));
}

#[test]
fn connect_disconnect_churn_leaks_no_descriptors_or_memory() {
    let server = Server::start(&["--flood-rate", "0"]);
    let pid = server.child.id();
    let mut watcher = server.join("watcher");
    let fds_before = open_fds(pid);
    let rss_before = rss_kib(pid);
    for round in 0..300 {
        let mut client = server.join(&format!("churn{round}"));
        client.send_line("hi");
        if round % 2 == 0 {
            client.send_line("/quit");
            client.expect_closed();
        } else {
            client.reset();
        }
    }
    watcher.lines_until("*** churn299 left");
    let deadline = Instant::now() + PATIENCE;
    while open_fds(pid) > fds_before {
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: {} before, {} after",
            fds_before,
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 8 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
