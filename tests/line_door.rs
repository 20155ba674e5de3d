//! The plain-text door end to end: the real server on 127.0.0.1 port 0, raw TCP
//! clients (as netcat or telnet would be), and the seed Python clients unmodified.
//! The server runs in process (`Background`) unless a test signals it, sets its
//! environment, measures its memory or reads what it prints (`Server`, the binary).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::blocking::*;
use support::inproc::Background;

#[test]
fn asks_for_a_name_and_refuses_taken_or_invalid_ones() {
    let server = Background::start(&[]);
    let _alice = server.join("alice");
    let mut bob = server.connect();
    let prompt = bob.expect("Enter your name: ");
    assert!(prompt.contains("name"));
    bob.send_line("alice");
    bob.expect("already in use");
    bob.expect("Enter your name: ");
    bob.send_line("ALICE");
    bob.expect("already in use");
    bob.expect("Enter your name: ");
    for (bad, why) in [
        ("", "empty"),
        // Two words are a login (NAME PASSWORD): there is no account bob.
        ("bob smith", "no account is called bob"),
        ("bob ", "whitespace"),
        ("bob\u{1b}[31m", "control or invisible"),
        ("bo\u{200B}b", "control or invisible"),
        (&"x".repeat(40), "longer than"),
    ] {
        bob.send_line(bad);
        bob.expect(why);
        bob.expect("Enter your name: ");
    }
    // CRLF (telnet) works as well as LF.
    bob.send(b"bob\r\n");
    bob.expect("*** bob joined #general\n");
}

#[test]
fn joins_messages_and_leaves_are_seen_by_everyone() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    alice.expect("*** bob joined #general\n");
    bob.send_line("hello everyone");
    assert_eq!(alice.line(), "[bob] hello everyone");
    assert_eq!(bob.line(), "[bob] hello everyone");
    alice.send_line("/me waves");
    assert_eq!(bob.line(), "* alice waves");
    assert_eq!(alice.line(), "* alice waves");
    bob.send_line("/quit see you");
    assert_eq!(alice.line(), "*** bob left #general (quit: see you)");
    bob.expect_closed();
}

#[test]
fn broadcast_reaches_many_clients_in_order() {
    let server = Background::start(&[]);
    let mut clients: Vec<LineClient> = (0..20).map(|i| server.join(&format!("user{i}"))).collect();
    // Let every client see the last join so the streams below hold only messages.
    for client in clients.iter_mut().take(19) {
        client.expect("*** user19 joined #general\n");
    }
    for n in 0..50 {
        clients[n % 3].send_line(&format!("message {n}"));
        // Wait for the echo so the three senders' lines have one global order.
        clients[n % 3].expect(&format!("message {n}\n"));
    }
    for client in clients.iter_mut().skip(3) {
        for n in 0..50 {
            assert_eq!(client.line(), format!("[user{}] message {n}", n % 3));
        }
    }
}

#[test]
fn both_quit_words_and_abrupt_disconnects_are_announced() {
    let server = Background::start(&[]);
    let mut watcher = server.join("watcher");
    for (nick, goodbye) in [("ender", "end"), ("quitter", "/q")] {
        let mut client = server.join(nick);
        watcher.expect(&format!("*** {nick} joined #general\n"));
        client.send_line(goodbye);
        assert_eq!(watcher.line(), format!("*** {nick} left #general (quit)"));
        client.expect_closed();
    }
    let eof = server.join("eof");
    watcher.expect("*** eof joined #general\n");
    eof.close_write();
    assert_eq!(watcher.line(), "*** eof left #general (connection closed)");
    let reset = server.join("reset");
    watcher.expect("*** reset joined #general\n");
    reset.reset();
    let left = watcher.line();
    assert!(left.starts_with("*** reset left #general ("), "{left}");
    // Everyone else is undisturbed.
    let mut after = server.join("after");
    watcher.expect("*** after joined #general\n");
    after.send_line("still here");
    assert_eq!(watcher.line(), "[after] still here");
}

#[test]
fn private_messages_reach_only_the_recipient() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    let mut carol = server.join("carol");
    alice.expect("*** carol joined #general\n");
    bob.expect("*** carol joined #general\n");
    alice.send_line("/msg BOB the secret is 42");
    assert_eq!(bob.line(), "[alice -> bob] the secret is 42");
    assert_eq!(alice.line(), "[alice -> bob] the secret is 42");
    alice.send_line("/msg nobody hello?");
    assert_eq!(alice.line(), "error: nobody is called nobody");
    carol.assert_silent_for(Duration::from_millis(300));
}

#[test]
fn rooms_are_separate_and_listed_with_counts() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    alice.expect("*** bob joined #general\n");
    alice.send_line("/join #rust");
    assert_eq!(alice.line(), "*** alice joined #rust");
    // Typed text goes to the room joined last.
    alice.send_line("borrowck is my friend");
    assert_eq!(alice.line(), "#rust [alice] borrowck is my friend");
    alice.send_line("/rooms");
    assert_eq!(alice.line(), "*** rooms: #general (2), #rust (1)");
    alice.send_line("/who #general");
    assert_eq!(alice.line(), "*** #general has 2 members: alice, bob");
    bob.send_line("/join rust");
    assert_eq!(alice.line(), "*** bob joined #rust");
    alice.send_line("/part #rust bye");
    assert_eq!(alice.line(), "*** alice left #rust (bye)");
    assert_eq!(bob.line(), "*** bob joined #rust");
    // Joining replays the room's recent history, marked as such, before live traffic.
    let replayed = bob.line();
    assert!(
        replayed.starts_with("[history ")
            && replayed.ends_with("] #rust [alice] borrowck is my friend"),
        "{replayed}"
    );
    assert_eq!(bob.line(), "*** alice left #rust (bye)");
    alice.send_line("back in general");
    assert_eq!(alice.line(), "[alice] back in general");
    alice.send_line("/join #bad room");
    assert_eq!(alice.line(), "*** alice joined #bad");
}

#[test]
fn commands_whois_nick_help_and_errors() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    alice.expect("*** bob joined #general\n");
    alice.send_line("/whois bob");
    let whois = alice.line();
    assert!(
        whois.starts_with("*** bob is client ")
            && whois.contains("via line")
            && whois.ends_with("in #general"),
        "{whois}"
    );
    alice.send_line("/whois alice");
    let mine = alice.line();
    let id = |line: &str| {
        line.split_whitespace()
            .nth(4)
            .unwrap()
            .trim_end_matches(',')
            .parse::<u64>()
            .unwrap()
    };
    assert_ne!(id(&whois), id(&mine), "client ids are unique");
    bob.send_line("/nick Robert");
    assert_eq!(alice.line(), "*** bob is now known as Robert");
    assert_eq!(bob.line(), "*** bob is now known as Robert");
    bob.send_line("/nick ALICE");
    assert_eq!(bob.line(), "error: ALICE is already in use");
    bob.send_line("/frobnicate now");
    assert!(bob.line().starts_with("error: unknown command /frobnicate"));
    bob.send_line("//etc/motd");
    assert_eq!(alice.line(), "[Robert] /etc/motd");
    bob.expect("[Robert] /etc/motd\n");
    bob.send_line("/help");
    let help = bob.lines_until("/quit");
    assert!(
        help.iter().any(|line| line.contains("/msg NAME text")),
        "{help:?}"
    );
    bob.send_line("/ping");
    assert!(bob
        .lines_until("pong")
        .last()
        .unwrap()
        .ends_with("*** pong"));
}

#[test]
fn overlong_lines_get_an_error_and_the_connection_keeps_working() {
    let server = Background::start(&["--max-line-bytes", "100"]);
    let mut alice = server.join("alice");
    let mut bob = server.join("bob");
    alice.expect("*** bob joined #general\n");
    bob.send_line(&"x".repeat(101));
    assert_eq!(
        bob.line(),
        "error: line too long (limit 100 bytes); it was discarded"
    );
    // An endless line without a newline is discarded as it streams.
    for _ in 0..64 {
        bob.send(&[b'y'; 16 * 1024]);
    }
    bob.send_line("");
    bob.expect("error: line too long");
    bob.send_line(&"z".repeat(100));
    assert_eq!(alice.line(), format!("[bob] {}", "z".repeat(100)));
}

#[test]
fn control_characters_cannot_forge_lines() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let mut mallory = server.join("mallory");
    alice.expect("*** mallory joined #general\n");
    mallory.send(b"hi\r[alice] I owe mallory money\x1b[2J\n");
    assert_eq!(
        alice.line(),
        "[mallory] hi\u{FFFD}[alice] I owe mallory money\u{FFFD}[2J"
    );
    mallory.send(b"bad \xff\xfe utf8\n");
    assert_eq!(alice.line(), "[mallory] bad \u{FFFD}\u{FFFD} utf8");
}

#[test]
fn a_client_that_stops_reading_is_dropped_as_a_slow_consumer() {
    let server = Server::start(&["--max-queue-bytes", "262144", "--flood-rate", "0"]);
    let mut sleeper = server.join("sleeper");
    let mut reader = server.join("reader");
    let mut talker = server.join("talker");
    sleeper.expect("*** talker joined #general\n");
    reader.expect("*** talker joined #general\n");
    let rss_before = rss_kib(server.child.id());
    // The sleeper never reads again. Push 16 MB, well past its queue bound plus what
    // the kernel buffers on loopback. The talker sends in windows and waits for its
    // own echo, so it and the reader keep up; only the sleeper falls behind.
    let line = "m".repeat(1000);
    let total = 16_000;
    let window = 20;
    let reader_progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = reader_progress.clone();
    let reading = std::thread::spawn(move || {
        let mut seen_leave = false;
        for n in 0..total {
            progress.store(n, std::sync::atomic::Ordering::Release);
            let mut got = reader.line();
            if got.starts_with("*** sleeper left #general") {
                assert_eq!(got, "*** sleeper left #general (slow consumer)");
                seen_leave = true;
                got = reader.line();
            }
            assert!(
                got.starts_with(&format!("[talker] {n} ")),
                "message {n} out of order or lost: {got:.40}"
            );
        }
        seen_leave
    });
    for start in (0..total).step_by(window) {
        let mut batch = String::new();
        for n in start..start + window {
            batch.push_str(&format!("{n} {line}\n"));
        }
        talker.send(batch.as_bytes());
        talker.expect(&format!("[talker] {} ", start + window - 1));
        // Closed loop: stay within two windows of the slower of talker and reader.
        let deadline = std::time::Instant::now() + PATIENCE;
        while reader_progress.load(std::sync::atomic::Ordering::Acquire) + 2 * window < start {
            assert!(
                !reading.is_finished() && std::time::Instant::now() < deadline,
                "the reader stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        reading.join().unwrap(),
        "the slow reader was never disconnected"
    );
    // Memory stayed bounded: had the sleeper's 16 MB been queued, it would show.
    let grown = rss_kib(server.child.id()).saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "server memory grew by {grown} KiB");
    // The server closed the sleeper's connection: after what the kernel buffered, EOF.
    sleeper.expect_closed();
}

#[test]
fn connections_over_the_limit_are_refused_with_a_reason() {
    let server = Background::start(&["--max-clients", "2"]);
    let _one = server.join("one");
    let mut two = server.connect();
    two.expect("Enter your name: ");
    let mut three = server.connect();
    let said = three.expect_closed();
    assert_eq!(said, "error: server full (2 clients); try again later\n");
}

#[test]
fn a_connection_that_never_picks_a_name_is_dropped() {
    let server = Background::start(&["--register-timeout", "300ms"]);
    let mut idle = server.connect();
    idle.expect("Enter your name: ");
    let said = idle.expect_closed();
    assert!(said.contains("error: no name chosen"), "{said}");
}

#[test]
fn shutdown_tells_everyone_and_exits_zero() {
    for signal in [SIGINT, SIGTERM] {
        let mut server = Server::start(&[]);
        let mut alice = server.join("alice");
        let mut naming = server.connect();
        naming.expect("Enter your name: ");
        server.signal(signal);
        let said = alice.expect_closed();
        assert!(said.contains("*** server shutting down"), "{said}");
        assert!(naming.expect_closed().contains("server shutting down"));
        assert!(server.wait_exit().success());
    }
}

#[test]
fn settings_come_from_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchboard.toml");
    std::fs::write(&file, "max_clients = 1\nmax_line_bytes = 50\n").unwrap();
    let file = file.to_str().unwrap();
    let refusal = |server: &Server| {
        let mut clients: Vec<LineClient> = Vec::new();
        loop {
            let mut client = server.connect();
            let first = client.expect(":");
            if first.starts_with("error") {
                return client.expect_closed();
            }
            clients.push(client);
        }
    };
    // The file alone.
    let server = Server::start(&["--config", file]);
    assert!(refusal(&server).contains("(1 clients)"));
    // Environment over file.
    let server = Server::start_with_env(&["--config", file], &[("SWITCHBOARD_MAX_CLIENTS", "2")]);
    assert!(refusal(&server).contains("(2 clients)"));
    // Flag over environment.
    let server = Server::start_with_env(
        &["--config", file, "--max-clients", "3"],
        &[("SWITCHBOARD_MAX_CLIENTS", "2")],
    );
    assert!(refusal(&server).contains("(3 clients)"));
    // The file's other setting still applies beside a flag.
    let server = Server::start(&["--config", file, "--max-clients", "5"]);
    let mut client = server.join("someone");
    client.send_line(&"a".repeat(51));
    assert!(client.line().contains("limit 50 bytes"));
}

#[test]
fn help_documents_every_flag_and_bad_config_is_explained() {
    let output = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    // clap wraps long help lines; compare with whitespace collapsed.
    let help = String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for flag in [
        "--line",
        "--config",
        "--max-line-bytes",
        "--max-queue-bytes",
        "--max-clients",
        "--register-timeout",
        "--irc",
        "--irc-tls",
        "--udp",
        "--udp-max-bytes",
        "--udp-idle",
        "--udp-device-rate",
        "--command-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    assert!(help.contains("SWITCHBOARD_LINE") && help.contains("default: 0.0.0.0:9999"));
    assert!(help.contains("SWITCHBOARD_IRC") && help.contains("default: 0.0.0.0:6667"));
    assert!(help.contains("SWITCHBOARD_UDP") && help.contains("default: 0.0.0.0:9996"));
    let output = Command::new(binary())
        .args([
            "serve",
            "--memory",
            "--config",
            "/nonexistent/switchboard.toml",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("/nonexistent/switchboard.toml"), "{error}");
    // A port already in use names the door and the flag to change it.
    let server = Server::start(&[]);
    let taken = server.line_addr().to_string();
    let output = serve_command(&["--line", &taken], "off").output().unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("line door") && error.contains("--line"),
        "{error}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Run a seed client with `stdin_lines` typed into it; returns its stdout.
fn run_seed(script: &str, port: u16, stdin_lines: &[&str]) -> std::process::Child {
    let mut child = Command::new("python3")
        .arg(seeds_dir().join(script))
        .env("SEED_HOST", "127.0.0.1")
        .env("SEED_PORT", port.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the seed client");
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = stdin_lines.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        for line in lines {
            // The seed client sleeps 0.3 s between sends; type at a human pace too.
            std::thread::sleep(Duration::from_millis(400));
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
        }
    });
    child
}

#[test]
fn the_seed_thread_client_works_unmodified() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let port = server.line_addr().port();
    // thread_client.py sends its name and each message with no newline at all.
    let seed = run_seed(
        "thread_client.py",
        port,
        &["bob", "hello from the seed client", "and another", "end"],
    );
    assert_eq!(alice.line(), "*** bob joined #general");
    assert_eq!(alice.line(), "[bob] hello from the seed client");
    assert_eq!(alice.line(), "[bob] and another");
    assert_eq!(alice.line(), "*** bob left #general (quit)");
    alice.send_line("bye bob");
    let output = seed.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("[bob] hello from the seed client"),
        "seed client saw: {printed}"
    );
    assert!(
        printed.contains("*** alice joined") || printed.contains("welcome, bob"),
        "{printed}"
    );
}

#[test]
fn seed_client_refused_name_then_retries() {
    let server = Background::start(&[]);
    let mut alice = server.join("alice");
    let port = server.line_addr().port();
    let seed = run_seed("thread_client.py", port, &["Alice", "bob", "hi", "end"]);
    assert_eq!(alice.line(), "*** bob joined #general");
    assert_eq!(alice.line(), "[bob] hi");
    let output = seed.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("already in use"), "{printed}");
}

/// `switchboard serve | head -2`: once nobody reads its stdout, the server keeps
/// serving and stops cleanly on SIGTERM (its last line has nowhere to go).
#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    use std::io::BufRead as _;
    let mut child = serve_command(&["--line", "127.0.0.1:0"], "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no listening line"
        );
        addr = support::listening(&line)
            .filter(|(door, _)| *door == "line")
            .and_then(|(_, place)| support::socket_addr(place));
    }
    drop(stdout);
    let mut client = LineClient::connect(addr.unwrap());
    client.send_line("alice");
    client.expect("welcome, alice");
    // SAFETY: a signal to our own child, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
