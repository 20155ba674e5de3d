//! `switchboard echo` over real sockets: the seed clients against each mode, binary
//! and maximum-size payloads, many concurrent clients, a client that never reads, the
//! connection cap, the idle timeout and a clean exit on SIGINT/SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod support;

/// Generous: only there so a broken build fails instead of hanging.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A running `switchboard echo`; killed on drop if a test failed before stopping it.
struct Service {
    child: Child,
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn drain(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
}

impl Service {
    fn start(args: &[&str]) -> Service {
        let mut child = Command::new(support::binary())
            .arg("echo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard echo");
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), stderr.clone());
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let (mut tcp, mut udp) = (None, None);
        let mut printed = String::new();
        let mut line = String::new();
        // Wait for readiness: the listening lines, then the first line that is not one.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!(
                    "switchboard echo exited before listening; stdout:\n{printed}\nstderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
            printed.push_str(&line);
            match support::listening(&line) {
                Some(("echo tcp", place)) => tcp = support::socket_addr(place),
                Some(("echo udp", place)) => udp = support::socket_addr(place),
                _ => {}
            }
            let wants_tcp = !args.contains(&"--udp") || args.contains(&"--tcp");
            let wants_udp = !args.contains(&"--tcp") || args.contains(&"--udp");
            if tcp.is_some() == wants_tcp && udp.is_some() == wants_udp {
                break;
            }
        }
        let stdout = Arc::new(Mutex::new(printed));
        drain(reader, stdout.clone());
        Service {
            child,
            tcp,
            udp,
            stdout,
            stderr,
        }
    }

    fn tcp(&self) -> SocketAddr {
        self.tcp.expect("tcp listening")
    }

    fn udp(&self) -> SocketAddr {
        self.udp.expect("udp listening")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: sending a signal to our own child by its PID.
        let result = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill failed");
    }

    /// Wait (bounded) for the process to exit and return its status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < HANG_GUARD, "switchboard did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the service logged. Its stderr is a pipe, so it must carry no terminal
    /// colour codes.
    fn logs(&self) -> String {
        let logs = self.stderr.lock().unwrap().clone();
        assert!(
            !logs.contains('\u{1b}'),
            "escape codes in logs written to a pipe: {logs:?}"
        );
        logs
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tcp_args(mode: &str) -> Vec<&str> {
    vec!["--tcp", "127.0.0.1:0", "--mode", mode]
}

/// Run a seed client program with `input` on stdin; return its stdout.
fn seed_client(program: &str, addr: SocketAddr, input: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-u")
        .arg(program)
        .current_dir(support::seeds_dir())
        .env("SEED_HOST", addr.ip().to_string())
        .env("SEED_PORT", addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("seed client {program} hung");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{program} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    stream
}

/// Read exactly `length` bytes.
fn read_exactly(stream: &mut TcpStream, length: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; length];
    stream.read_exact(&mut buffer).unwrap();
    buffer
}

fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    all
}

fn random_bytes(length: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(length as u64);
    (0..length).map(|_| rng.u8(..)).collect()
}

#[test]
fn seed_echo_client_gets_every_message_back() {
    let service = Service::start(&tcp_args("echo"));
    let out = seed_client("echo.py", service.tcp(), "hello\n안녕 world\nend\n");
    assert!(out.contains("recv : b'hello'"), "{out}");
    assert!(
        out.contains(r"recv : b'\xec\x95\x88\xeb\x85\x95 world'"),
        "{out}"
    );
    assert!(out.contains("client closed!"), "{out}");
}

#[test]
fn seed_udp_upper_client_gets_its_sentence_uppercased() {
    let service = Service::start(&["--udp", "127.0.0.1:0", "--mode", "upper"]);
    assert!(service.tcp.is_none(), "only --udp given: no TCP");
    let out = seed_client("udp_upper.py", service.udp(), "hello straße 안녕\n");
    assert!(out.contains("HELLO STRASSE 안녕"), "{out}");
}

#[test]
fn seed_tcp_upper_client_works_with_and_without_once() {
    for once in [false, true] {
        let mut args = tcp_args("upper");
        if once {
            args.push("--once");
        }
        let service = Service::start(&args);
        let out = seed_client("tcp_upper.py", service.tcp(), "good morning, straße\n");
        assert!(out.contains("From Server:  GOOD MORNING, STRASSE"), "{out}");
    }
}

#[test]
fn once_answers_one_message_then_closes() {
    let service = Service::start(&[&tcp_args("upper")[..], &["--once"]].concat());
    let mut stream = connect(service.tcp());
    stream.write_all(b"first\nsecond\n").unwrap();
    assert_eq!(read_to_close(&mut stream), b"FIRST\n");
}

#[test]
fn seed_random_client_gets_replies_from_the_list() {
    let service = Service::start(&tcp_args("random"));
    let out = seed_client("client.py", service.tcp(), "hi\nhow are you\nexit\n");
    let replies: Vec<&str> = out
        .split("server reply: ")
        .skip(1)
        .map(|rest| rest.split("message (exit").next().unwrap().trim())
        .collect();
    assert_eq!(replies.len(), 2, "{out}");
    for reply in replies {
        assert!(
            switchboard::services::mode::BUILT_IN_REPLIES.contains(&reply),
            "{reply:?} in {out}"
        );
    }
    assert!(out.contains("client closing."), "{out}");
}

#[test]
fn random_replies_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replies.txt");
    std::fs::write(&path, "only this one\n\n").unwrap();
    let path = path.to_str().unwrap();
    let service = Service::start(&[&tcp_args("random")[..], &["--replies", path]].concat());
    let out = seed_client("client.py", service.tcp(), "hi\nagain\nexit\n");
    assert_eq!(
        out.matches("server reply: only this one").count(),
        2,
        "{out}"
    );
    let mut stream = connect(service.tcp());
    stream.write_all(b"a line\n").unwrap();
    assert_eq!(read_exactly(&mut stream, 14), b"only this one\n");
}

#[test]
fn upper_answers_each_line_and_explains_invalid_utf8() {
    let service = Service::start(&tcp_args("upper"));
    let mut stream = connect(service.tcp());
    stream.write_all(b"abc\r\nstra\xc3\x9fe\n").unwrap();
    assert_eq!(read_exactly(&mut stream, 12), b"ABC\nSTRASSE\n");
    stream.write_all(b"bad \xff byte\n").unwrap();
    stream.write_all("안녕 hi\n".as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut error = String::new();
    reader.read_line(&mut error).unwrap();
    assert!(error.starts_with("error: not UTF-8"), "{error}");
    let mut next = String::new();
    reader.read_line(&mut next).unwrap();
    assert_eq!(
        next, "안녕 HI\n",
        "the connection carries on after bad input"
    );
    // A message over the cap gets an error, and memory stays bounded.
    stream.write_all(&vec![b'x'; 200_000]).unwrap();
    stream.write_all(b"\nok\n").unwrap();
    let mut too_long = String::new();
    reader.read_line(&mut too_long).unwrap();
    assert!(too_long.starts_with("error: message over"), "{too_long}");
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert_eq!(ok, "OK\n");
}

#[test]
fn upper_never_splits_a_character_across_unframed_sends() {
    let service = Service::start(&tcp_args("upper"));
    let mut stream = connect(service.tcp());
    stream.set_nodelay(true).unwrap();
    // The sender pauses inside "ß" (0xC3 0x9F) for longer than the burst gap.
    stream.write_all(b"stra\xc3").unwrap();
    thread::sleep(Duration::from_millis(150));
    stream.write_all(b"\x9fe").unwrap();
    assert_eq!(read_exactly(&mut stream, 7), b"STRASSE");
}

#[test]
fn tcp_echo_is_binary_safe_byte_for_byte() {
    let service = Service::start(&tcp_args("echo"));
    let mut stream = connect(service.tcp());
    let every_byte: Vec<u8> = (0..=255u8).collect();
    stream.write_all(&every_byte).unwrap();
    assert_eq!(read_exactly(&mut stream, 256), every_byte);
    // Larger than every buffer on the way: written and read concurrently.
    let payload = random_bytes(4 << 20);
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let echoed = read_to_close(&mut stream);
    sender.join().unwrap();
    assert!(echoed == payload, "echoed bytes differ");
}

#[test]
fn udp_echo_returns_binary_and_maximum_size_datagrams() {
    let service = Service::start(&["--udp", "127.0.0.1:0"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(HANG_GUARD)).unwrap();
    socket.connect(service.udp()).unwrap();
    let mut buffer = vec![0u8; 70_000];
    for payload in [vec![0u8, 255, 10, 13, 0], random_bytes(65_507), Vec::new()] {
        socket.send(&payload).unwrap();
        let length = socket.recv(&mut buffer).unwrap();
        assert!(buffer[..length] == payload[..], "{} bytes", payload.len());
    }
}

#[test]
fn udp_upper_answers_invalid_utf8_with_an_error() {
    let service = Service::start(&["--udp", "127.0.0.1:0", "--mode", "upper"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(HANG_GUARD)).unwrap();
    socket.connect(service.udp()).unwrap();
    let mut buffer = vec![0u8; 2048];
    socket.send(b"\xc3(").unwrap();
    let length = socket.recv(&mut buffer).unwrap();
    assert!(buffer[..length].starts_with(b"error: not UTF-8"));
    socket.send("añb".as_bytes()).unwrap();
    let length = socket.recv(&mut buffer).unwrap();
    assert_eq!(&buffer[..length], "AÑB".as_bytes());
}

#[test]
fn two_hundred_concurrent_clients_each_get_their_own_answers() {
    let service = Service::start(&tcp_args("upper"));
    let addr = service.tcp();
    let clients: Vec<_> = (0..200)
        .map(|client| {
            thread::spawn(move || {
                let mut stream = connect(addr);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                for round in 0..5 {
                    stream
                        .write_all(format!("client {client} round {round}\n").as_bytes())
                        .unwrap();
                    let mut reply = String::new();
                    reader.read_line(&mut reply).unwrap();
                    assert_eq!(reply, format!("CLIENT {client} ROUND {round}\n"));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn a_client_that_never_reads_stalls_nobody_and_is_not_buffered_unboundedly() {
    let service = Service::start(&tcp_args("echo"));
    let addr = service.tcp();
    let hog = TcpStream::connect(addr).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let offered = 64 << 20;
    let hog_thread = thread::spawn(move || {
        let mut hog = hog;
        let chunk = vec![b'z'; 64 * 1024];
        let mut written = 0usize;
        while written < offered {
            match hog.write(&chunk) {
                Ok(count) => written += count,
                Err(_) => break, // Blocked for 2 s: the server stopped reading.
            }
        }
        (hog, written)
    });
    // Meanwhile, everyone else is served.
    for client in 0..20 {
        let mut stream = connect(addr);
        let message = format!("still served {client}");
        stream.write_all(message.as_bytes()).unwrap();
        assert_eq!(read_exactly(&mut stream, message.len()), message.as_bytes());
    }
    let (_hog, written) = hog_thread.join().unwrap();
    assert!(
        written < offered,
        "the server read all {written} bytes from a client that never reads"
    );
    let mut late = connect(addr);
    late.write_all(b"after the hog").unwrap();
    assert_eq!(read_exactly(&mut late, 13), b"after the hog");
}

#[test]
fn connection_cap_refuses_with_a_reason() {
    let service = Service::start(&[&tcp_args("echo")[..], &["--max-clients", "2"]].concat());
    let mut first = connect(service.tcp());
    let mut second = connect(service.tcp());
    for stream in [&mut first, &mut second] {
        stream.write_all(b"in").unwrap();
        assert_eq!(read_exactly(stream, 2), b"in");
    }
    let mut third = connect(service.tcp());
    let refusal = String::from_utf8(read_to_close(&mut third)).unwrap();
    assert!(refusal.starts_with("error: server full"), "{refusal}");
    drop(first);
    // The freed slot is reusable (the close is noticed asynchronously).
    let started = Instant::now();
    loop {
        let mut again = connect(service.tcp());
        let _ = again.write_all(b"back");
        let mut reply = [0u8; 4];
        if again.read_exact(&mut reply).is_ok() && &reply == b"back" {
            break;
        }
        assert!(started.elapsed() < HANG_GUARD, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_connections_are_closed_and_the_reason_logged() {
    let service = Service::start(&[&tcp_args("echo")[..], &["--idle-timeout", "300ms"]].concat());
    let mut stream = connect(service.tcp());
    let local = stream.local_addr().unwrap();
    assert_eq!(read_to_close(&mut stream), b"");
    let started = Instant::now();
    let wanted = format!("peer={local}");
    while !(service.logs().contains(&wanted) && service.logs().contains("idle_timeout")) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "no close log: {}",
            service.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_and_sigterm_stop_the_services_cleanly() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut service = Service::start(&[
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--mode",
            "upper",
        ]);
        // An open connection in the middle of a line does not hold shutdown up.
        let mut open = connect(service.tcp());
        open.write_all(b"abc\nhalf a li").unwrap();
        assert_eq!(read_exactly(&mut open, 4), b"ABC\n");
        service.signal(signal);
        let status = service.wait();
        assert_eq!(status.code(), Some(0), "signal {signal}: {status:?}");
        assert_eq!(read_to_close(&mut open), b"");
        let started = Instant::now();
        while !service.stdout.lock().unwrap().contains("echo: stopped") {
            assert!(started.elapsed() < HANG_GUARD, "no stop message");
            thread::sleep(Duration::from_millis(20));
        }
    }
}
