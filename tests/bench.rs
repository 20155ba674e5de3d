//! `switchboard bench` end to end: the real bench binary against a real server on
//! 127.0.0.1 port 0 (line, JSON, WebSocket and IRC doors, and the IRC peers ngircd
//! and InspIRCd it is compared with), small sizes, its one-line JSON summary checked;
//! and the refusal of targets that are not on loopback.

mod support;

use std::process::{Command, Output};

use support::blocking::*;

/// Run `switchboard bench ARGS...`, bounded by the bench's own hard cap.
fn bench(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchboard bench")
}

/// The one JSON line on stdout of a successful run.
fn summary(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one summary line, got {stdout:?}");
    serde_json::from_str(lines[0]).expect("the summary is JSON")
}

/// A load generator floods by design: flood control off, as the benchmark docs say.
const BENCH_LIMITS: [&str; 4] = ["--max-clients-per-ip", "1000", "--flood-rate", "0"];

fn start_server() -> Server {
    Server::start(&BENCH_LIMITS)
}

/// A server with only the JSON and web doors open, on port 0.
fn start_json_and_web_server() -> Server {
    let mut named = vec!["--json", "127.0.0.1:0", "--web", "127.0.0.1:0"];
    named.extend(BENCH_LIMITS);
    Server::spawn(serve_command(&named, "off"), &[], &["json", "web"])
}

/// Every message reached every receiver, once and in order, and some in the window.
fn assert_delivered_cleanly(summary: &serde_json::Value) {
    assert!(summary["deliveries"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["deliveries_per_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    for count in ["lost", "reordered", "duplicated", "disconnected"] {
        assert_eq!(summary[count], 0, "{count}: {summary}");
    }
}

#[test]
fn fanout_delivers_everything_in_order_and_reports_it() {
    let server = start_server();
    let addr = server.line_addr().to_string();
    let pid = server.child.id().to_string();
    let output = bench(&[
        "fanout",
        "--addr",
        &addr,
        "--clients",
        "12",
        "--senders",
        "3",
        "--warmup",
        "0.5s",
        "--duration",
        "2s",
        "--server-pid",
        &pid,
        "--hard-cap",
        "60s",
    ]);
    let summary = summary(&output);
    assert_eq!(summary["scenario"], "fanout");
    assert_eq!(summary["target"], "switchboard");
    assert_eq!(summary["mode"], "closed-loop");
    assert_delivered_cleanly(&summary);
    // Every message was echoed to all 12 clients, so deliveries are a multiple of sends
    // only over the whole run; in the window, latency percentiles must be ordered.
    let latency = &summary["latency_us"];
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
    assert!(summary["server_cpu_s"].is_number(), "{summary}");
}

#[test]
fn fanout_over_the_json_and_websocket_doors_delivers_everything_in_order() {
    let server = start_json_and_web_server();
    for (target, door) in [("json", "json"), ("ws", "web")] {
        let addr = server.doors[door].to_string();
        let summary = small_fanout(target, &addr, server.child.id(), &[]);
        assert_eq!(summary["target"], target);
        assert_delivered_cleanly(&summary);
        assert!(summary["server_cpu_s"].is_number(), "{summary}");
    }
}

/// A small closed-loop fan-out (20 clients, 3 senders, about a second) over
/// `--target TARGET` against `addr`, with `extra` flags.
fn small_fanout(target: &str, addr: &str, pid: u32, extra: &[&str]) -> serde_json::Value {
    let pid = pid.to_string();
    let mut args = vec![
        "fanout",
        "--target",
        target,
        "--addr",
        addr,
        "--clients",
        "20",
        "--senders",
        "3",
        "--warmup",
        "0.3s",
        "--duration",
        "1s",
        "--server-pid",
        &pid,
        "--hard-cap",
        "60s",
    ];
    args.extend(extra);
    summary(&bench(&args))
}

/// [`small_fanout`] over `--target irc`, opening 8 connections at a time: ngircd's
/// listen backlog is 10 (see benches/compare.sh).
fn irc_fanout(addr: &str, pid: u32) -> serde_json::Value {
    small_fanout("irc", addr, pid, &["--open-concurrency", "8"])
}

#[test]
fn fanout_over_the_irc_door_delivers_everything_and_nothing_back_to_the_sender() {
    let mut args = vec!["--irc", "127.0.0.1:0"];
    args.extend(BENCH_LIMITS);
    let server = Server::spawn(serve_command(&args, "off"), &[], &["irc"]);
    let summary = irc_fanout(&server.doors["irc"].to_string(), server.child.id());
    assert_eq!(summary["target"], "irc");
    // No echo: a message is owed to every client but its sender, and `lost` counts
    // any that did not come.
    assert_delivered_cleanly(&summary);
}

/// The IRC servers the IRC door is measured against, started from the configs
/// benches/compare.sh uses, on a free loopback port; stopped by PID on drop.
struct IrcPeer {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl IrcPeer {
    fn start(name: &str) -> IrcPeer {
        let program = format!("/usr/sbin/{name}");
        assert!(
            std::path::Path::new(&program).exists(),
            "{program} is missing: run `apt-get install -y ngircd inspircd` (.ci/run does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        // ngircd drops root for nobody, who must be able to write its pid file.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("benches/peers/{name}.conf.in"));
        let config = std::fs::read_to_string(template)
            .unwrap()
            .replace("@PORT@", &port.to_string())
            .replace("@DIR@", &dir.path().display().to_string());
        let config_path = dir.path().join(format!("{name}.conf"));
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(&program);
        match name {
            "ngircd" => command.arg("--nodaemon").arg("--config").arg(&config_path),
            _ => command
                .args(["--nofork", "--runasroot"])
                .arg(format!("--config={}", config_path.display())),
        };
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {program}: {error}"));
        let addr = format!("127.0.0.1:{port}");
        let peer = IrcPeer {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(&peer.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not listen on {}",
                peer.addr
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        peer
    }
}

impl Drop for IrcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_irc_target_drives_ngircd_and_inspircd_as_it_drives_switchboard() {
    for name in ["ngircd", "inspircd"] {
        let peer = IrcPeer::start(name);
        let summary = irc_fanout(&peer.addr, peer.child.id());
        assert_delivered_cleanly(&summary);
    }
}

#[test]
fn paced_fanout_sends_about_the_rate_asked() {
    let server = start_server();
    let addr = server.line_addr().to_string();
    let output = bench(&[
        "fanout", "--addr", &addr, "-n", "5", "-s", "2", "--rate", "200", "--warmup", "0.2s", "-d",
        "2s",
    ]);
    let summary = summary(&output);
    assert_eq!(summary["mode"], "paced");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["reordered"], 0, "{summary}");
    let sent = summary["sent"].as_u64().unwrap();
    // 2.2 s at 200/s: 440 planned; generous bounds, only to catch a pacing bug.
    assert!((200..=700).contains(&sent), "{summary}");
}

#[test]
fn idle_and_connect_scenarios_report_their_numbers() {
    let server = start_server();
    let addr = server.line_addr().to_string();
    let pid = server.child.id().to_string();
    let idle = summary(&bench(&[
        "idle",
        "--addr",
        &addr,
        "--connections",
        "50",
        "--server-pid",
        &pid,
        "--measure-after",
        "200ms",
    ]));
    assert_eq!(idle["connections"], 50);
    assert!(
        idle["server_bytes_per_connection_at_quiet"].is_number(),
        "{idle}"
    );
    assert_eq!(idle["still_open"], 50, "{idle}");
    assert!(
        idle["server_rss_after_bytes"].as_u64().unwrap() > 0,
        "{idle}"
    );
    assert!(idle["server_bytes_per_connection"].is_number(), "{idle}");

    let connect = summary(&bench(&[
        "connect",
        "--addr",
        &addr,
        "--concurrency",
        "4",
        "--warmup",
        "0.2s",
        "-d",
        "1s",
    ]));
    assert!(connect["connects"].as_u64().unwrap() > 0, "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
    // The server is still serving after thousands of resets.
    let mut client = server.join("after");
    client.send_line("still here");
    client.expect("[after] still here\n");
}

/// `bench connect` against `addr` for a short window.
fn connect_briefly(target: &str, addr: &str, concurrency: &str) -> serde_json::Value {
    summary(&bench(&[
        "connect",
        "--target",
        target,
        "--addr",
        addr,
        "--concurrency",
        concurrency,
        "--warmup",
        "0.2s",
        "-d",
        "0.5s",
    ]))
}

#[test]
fn connect_registers_over_the_json_and_websocket_doors() {
    let server = start_json_and_web_server();
    let json = connect_briefly("json", &server.doors["json"].to_string(), "4");
    let ws = connect_briefly("ws", &server.doors["web"].to_string(), "4");
    for connect in [json, ws] {
        assert!(connect["connects"].as_u64().unwrap() > 0, "{connect}");
        assert_eq!(connect["failed"], 0, "{connect}");
        assert!(
            connect["latency_us"]["p50"].as_f64().unwrap() > 0.0,
            "{connect}"
        );
    }
    // The server still serves after thousands of resets.
    let mut client = LineClient::connect(server.doors["json"]);
    client.send_line(r#"{"type":"nick","nick":"after"}"#);
    client.send_line(r#"{"type":"say","text":"still here"}"#);
    client.expect("still here");
}

#[test]
fn connect_counts_and_quotes_the_registrations_the_server_refuses() {
    // Two connections from one address are allowed, and two are held: every
    // connection the bench makes is refused.
    let server = Server::start(&["--max-clients-per-ip", "2", "--flood-rate", "0"]);
    let _held = [server.join("held1"), server.join("held2")];
    let connect = connect_briefly("switchboard", &server.line_addr().to_string(), "8");
    assert_eq!(connect["connects"], 0, "{connect}");
    // Each refusal ends in a close the bench reads at once, not at the 15 s deadline.
    assert!(connect["failed"].as_u64().unwrap() > 8, "{connect}");
    let first_error = connect["first_error"].as_str().unwrap();
    assert!(
        first_error.contains("registration failed (connection closed)")
            && first_error.contains("too many connections from your address"),
        "{connect}"
    );
}

#[test]
fn connect_to_a_peer_without_registration_counts_finished_connects() {
    // `raw` registers nothing: a connection counts once its connect has finished. The
    // peer only accepts, with a long queue: connects that wait for nothing outrun a
    // server doing real work per connection, and once its accept queue overflows they
    // stall in SYN retries for a second or more (seen under CI load).
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&loopback.into()).expect("bind");
    listener.listen(4096).expect("listen");
    let listener = std::net::TcpListener::from(listener);
    let addr = listener.local_addr().unwrap().to_string();
    // Ends with the test process.
    std::thread::spawn(move || listener.incoming().for_each(drop));
    let connect = connect_briefly("raw", &addr, "4");
    assert!(connect["connects"].as_u64().unwrap() > 0, "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
}

#[test]
fn connect_to_a_closed_port_fails_every_attempt_and_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    // JSON sends first, so the refusal shows at that send, as the connect opens; raw
    // sends nothing and waits for nothing, so only the connect's own result tells.
    for target in ["json", "switchboard", "raw"] {
        let connect = connect_briefly(target, &addr, "4");
        assert_eq!(connect["connects"], 0, "{connect}");
        // Refused slots wait for the next sweep (every 50 ms), not a tight loop.
        let failed = connect["failed"].as_u64().unwrap();
        assert!((4..=4 * 40).contains(&failed), "{connect}");
        let first_error = connect["first_error"].as_str().unwrap();
        assert!(first_error.contains("refused"), "{connect}");
    }
}

#[test]
fn targets_off_loopback_are_refused_before_connecting() {
    for addr in ["192.0.2.1:9999", "10.1.2.3:7000", "[2001:db8::1]:9999"] {
        for scenario in ["fanout", "idle", "connect"] {
            let output = bench(&[scenario, "--addr", addr, "--hard-cap", "10s"]);
            assert!(!output.status.success(), "{scenario} {addr} was accepted");
            assert!(output.stdout.is_empty());
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("refusing to benchmark") && stderr.contains("loopback"),
                "{scenario} {addr}: {stderr}"
            );
        }
    }
}

#[test]
fn a_registration_the_server_refuses_is_reported_clearly() {
    // The default per-IP limit is far below 100 connections from one address.
    let server = Server::start(&["--max-clients-per-ip", "5"]);
    let addr = server.line_addr().to_string();
    let output = bench(&["idle", "--addr", &addr, "--connections", "20"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("--max-clients-per-ip"), "{stderr}");
}

#[test]
fn a_closed_stdout_ends_the_run_with_one_error_line_not_a_panic() {
    let server = start_server();
    let addr = server.line_addr().to_string();
    let mut child = Command::new(binary())
        .args(["bench", "idle", "--addr", &addr, "--connections", "2"])
        .args(["--measure-after", "0s"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run switchboard bench");
    // Nobody will read the summary: the pipe's read end is closed before it is written
    // (the run waits at least half a second for the server to go quiet).
    drop(child.stdout.take());
    let output = child
        .wait_with_output()
        .expect("wait for switchboard bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
    assert!(!output.status.success(), "the summary was lost: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error:") && lines[0].contains("stdout"),
        "{stderr}"
    );
}

/// `bench telemetry`: devices it provisions itself send over the UDP door, then over
/// the JSON door; every watcher gets every message the room accepted, the JSON door
/// (TCP) loses nothing, and each transport reports its rates and latency.
#[test]
fn telemetry_compares_the_udp_door_with_the_json_door() {
    let mut named = vec!["--json", "127.0.0.1:0", "--udp", "127.0.0.1:0"];
    named.extend(BENCH_LIMITS);
    let server = Server::spawn(serve_command(&named, "off"), &[], &["json", "udp"]);
    let output = bench(&[
        "telemetry",
        "--json",
        &server.doors["json"].to_string(),
        "--udp",
        &server.doors["udp"].to_string(),
        "--devices",
        "2",
        "--watchers",
        "3",
        "--rate",
        "40",
        "--duration",
        "1s",
        "--hard-cap",
        "60s",
    ]);
    let summary = summary(&output);
    for transport in ["udp", "json"] {
        let result = &summary["results"][transport];
        let (sent, accepted) = (
            result["sent"].as_u64().unwrap(),
            result["accepted"].as_u64().unwrap(),
        );
        assert_eq!(sent, 80, "{transport}: {summary}");
        assert!(accepted > 0 && accepted <= sent, "{transport}: {summary}");
        assert_eq!(
            result["delivered"].as_u64().unwrap(),
            accepted * 3,
            "{summary}"
        );
        assert!(
            result["latency_us"]["p50"].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
    assert_eq!(summary["results"]["json"]["lost"], 0, "{summary}");
}
