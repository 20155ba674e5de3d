//! `switchboard send` over real sockets: against the seed servers, against
//! `switchboard echo`, against a request/response server that needs the half-close,
//! binary payloads, and the error exits (refused, unresolvable, silent server).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod support;

/// Generous: only there so a broken build fails instead of hanging.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A child process killed (by its PID) and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start a seed server (`python3 -u PROGRAM server`) on a free port and wait until it
/// says it is ready (it prints after `bind`/`listen`; probing by connecting would use
/// up echo.py's single accept).
fn seed_server(program: &str, ready: &str) -> (Guard, u16) {
    let port = free_port();
    let mut child = Command::new("python3")
        .args(["-u", program, "server"])
        .current_dir(support::seeds_dir())
        .env("SEED_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let guard = Guard(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "{program} exited before it was ready"
        );
        if line.contains(ready) {
            break;
        }
    }
    // Keep draining so the server never blocks on a full pipe.
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    (guard, port)
}

/// Start `switchboard echo` with `args`; return it with its TCP and UDP addresses.
fn echo_service(args: &[&str]) -> (Guard, Option<SocketAddr>, Option<SocketAddr>) {
    let mut child = Command::new(support::binary())
        .arg("echo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let guard = Guard(child);
    let (mut tcp, mut udp) = (None, None);
    let mut line = String::new();
    while tcp.is_none() || udp.is_none() {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "echo exited");
        match support::listening(&line) {
            Some(("echo tcp", place)) => tcp = support::socket_addr(place),
            Some(("echo udp", place)) => udp = support::socket_addr(place),
            _ => {}
        }
    }
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    (guard, tcp, udp)
}

/// Run `switchboard send ARGS` with `stdin`, bounded by the hang guard.
fn send(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(support::binary())
        .arg("send")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Fed from a thread: send reads its reply while it is still sending.
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).unwrap();
        all
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("send {args:?} hung");
        }
        thread::sleep(Duration::from_millis(10));
    }
    feeder.join().unwrap();
    let mut output = child.wait_with_output().unwrap();
    output.stdout = reader.join().unwrap();
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "send failed: {}", stderr(output));
}

fn random_bytes(length: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(length as u64 + 7);
    (0..length).map(|_| rng.u8(..)).collect()
}

#[test]
fn against_the_seed_echo_server_the_reply_ends_after_a_quiet_gap() {
    // echo.py never closes the connection: the --wait rule ends the reply.
    let (_server, port) = seed_server("echo.py", "The echo server start");
    let target = format!("127.0.0.1:{port}");
    let output = send(&["--wait", "300ms", &target, "hello", "seed"], b"");
    assert_success(&output);
    assert_eq!(output.stdout, b"hello seed");
}

#[test]
fn against_the_seed_tcp_upper_server() {
    let (_server, port) = seed_server("tcp_upper.py", "ready to receive");
    let target = format!("127.0.0.1:{port}");
    let output = send(&[&target, "good", "morning"], b"");
    assert_success(&output);
    assert_eq!(output.stdout, b"GOOD MORNING");
    // Standard input instead of arguments, one sentence per connection.
    let output = send(&[&target], "straße 안녕".as_bytes());
    assert_success(&output);
    assert_eq!(output.stdout, "STRASSE 안녕".as_bytes());
}

#[test]
fn against_the_seed_udp_upper_server() {
    let (_server, port) = seed_server("udp_upper.py", "ready to receive");
    let target = format!("127.0.0.1:{port}");
    let output = send(&["--udp", &target, "hello", "udp"], b"");
    assert_success(&output);
    assert_eq!(output.stdout, b"HELLO UDP");
}

#[test]
fn a_request_response_server_sees_the_half_close_and_its_reply_is_printed() {
    // Like a web server: reads the whole request (until EOF), answers, closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let body: Vec<u8> = (0..=255u8).chain(b"\r\n\r\nend".iter().copied()).collect();
    let expected_reply = [&b"HTTP/1.0 200 OK\r\n\r\n"[..], &body].concat();
    let reply = expected_reply.clone();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        stream.write_all(&reply).unwrap();
        request
    });
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let output = send(&[&target], request);
    assert_success(&output);
    assert_eq!(output.stdout, expected_reply);
    assert_eq!(server.join().unwrap(), request);
}

#[test]
fn binary_stdin_round_trips_through_the_echo_service() {
    let (_service, tcp, udp) = echo_service(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let payload = random_bytes(2 << 20);
    let output = send(&[&tcp.unwrap().to_string()], &payload);
    assert_success(&output);
    assert!(output.stdout == payload, "TCP bytes differ");

    let udp = udp.unwrap().to_string();
    let datagram = random_bytes(65_507);
    let output = send(&["--udp", &udp], &datagram);
    assert_success(&output);
    assert!(output.stdout == datagram, "UDP bytes differ");

    let output = send(&["--udp", &udp], &random_bytes(65_508));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("65507"), "{}", stderr(&output));
}

#[test]
fn newline_flag_suits_line_servers() {
    let (_service, tcp, _) = echo_service(&[
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--mode",
        "upper",
    ]);
    let output = send(&["-n", &tcp.unwrap().to_string(), "hi", "there"], b"");
    assert_success(&output);
    assert_eq!(output.stdout, b"HI THERE\n");
}

#[test]
fn connection_refused_is_a_clear_error() {
    let port = free_port(); // Bound then released: nothing listens there now.
    let output = send(&[&format!("127.0.0.1:{port}"), "hi"], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = socket.local_addr().unwrap().to_string();
    drop(socket);
    let output = send(&["--udp", &closed, "hi"], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));
}

#[test]
fn unresolvable_host_is_a_clear_error() {
    let output = send(&["no-such-host.invalid:80", "hi"], b"");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot resolve host"),
        "{}",
        stderr(&output)
    );
    let output = send(&["127.0.0.1", "hi"], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no port"), "{}", stderr(&output));
}

#[test]
fn a_silent_server_times_out() {
    // Accepts (the kernel completes the handshake) but never answers or closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let output = send(&["--timeout", "300ms", &target, "anyone?"], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    drop(listener);

    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let output = send(&["--udp", "--timeout", "300ms", &target, "anyone?"], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
}
