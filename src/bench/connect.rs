//! The `connect` scenario: `--concurrency` connections at a time, each connecting,
//! registering and leaving (by reset where the server copes, so no TIME_WAIT piles up),
//! over and over; after a warm-up, a measured window counts completed registrations
//! and their latency.
//!
//! The connections run on an event loop of their own (mio, one thread), not on the
//! async runtime. A connection here lives a few tens of microseconds, and the generator
//! is what limits the rate (docs/benchmarks.md): on the runtime, a task, timers and a
//! writable wake-up per connection cost it 7 µs of user time per connection, against a
//! bare C client's 1, and the rate fell 15-20 % short of that client's. Each door's
//! registration is the same pure [`Registration`] the async adapters drive.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use socket2::{Domain, Socket, Type};

use super::door::tcp::{self, TcpWriting, REGISTER_READ_BYTES};
use super::door::{Registration, Step, REGISTER_TIMEOUT};
use super::progress::Progress;
use super::stats::{latency_histogram, latency_summary};
use super::{ratio, seconds, Clock, Target, TargetArgs};
use crate::config::Seconds;

/// `switchboard bench connect` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connections being set up at once (one for targets that break under more:
    /// `ncat-chat`, `seed-chat`).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Connecting before the measured window starts.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub warmup: Seconds,
    /// The measured window.
    #[arg(long, short = 'd', default_value = "5s", value_name = "DURATION")]
    pub duration: Seconds,
}

struct Shared {
    clock: Clock,
    measuring: AtomicBool,
    stop: AtomicBool,
    completed: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, error: &io::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        first.get_or_insert_with(|| error.to_string());
    }
}

/// Stops the event loop when the run ends, however it ends (the hard cap drops it).
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

struct LoopResult {
    histogram: Histogram<u64>,
    measured: u64,
}

/// How often deadlines are checked and slots whose connect failed are refilled.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// One connection being set up.
struct Slot {
    stream: Option<TcpStream>,
    registration: Option<Box<dyn Registration>>,
    /// Everything received since connecting (kept between connections for its room).
    received: Vec<u8>,
    /// Bytes a step asked to send that the socket did not take yet.
    unsent: Vec<u8>,
    /// True once asked for writable events too (a send had to wait).
    writable_interest: bool,
    /// True once the connection has had an event (so its connect has finished).
    established: bool,
    started_ns: u64,
}

/// What an event said about a connection's input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Nothing new since the last read came back short (or since connecting).
    Unknown,
    /// Something arrived.
    Readable,
    /// The peer closed or the connection failed; reading will say how.
    Ended,
}

/// What a slot's connection did.
enum Outcome {
    Waiting,
    Registered,
    Failed(io::Error),
}

impl Slot {
    /// Send what the registration asks, read what there is, and say where that leaves
    /// the connection.
    fn drive(
        &mut self,
        registry: &Registry,
        index: usize,
        mut readiness: Readiness,
        scratch: &mut [u8],
    ) -> io::Result<Outcome> {
        let Slot {
            stream: Some(stream),
            registration: Some(registration),
            received,
            unsent,
            writable_interest,
            established,
            ..
        } = self
        else {
            // An event for a connection already gone.
            return Ok(Outcome::Waiting);
        };
        loop {
            if !unsent.is_empty() {
                match stream.write(unsent) {
                    Ok(written) => {
                        unsent.drain(..written);
                        continue;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        want_writable(registry, stream, index, writable_interest)?;
                        return Ok(Outcome::Waiting);
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                }
            }
            match registration.step(received)? {
                Step::Send(bytes) => unsent.extend_from_slice(&bytes),
                // Settled with nothing received (a peer with no registration): only
                // once the connect has finished, and if it worked.
                Step::Registered(_) if received.is_empty() && !*established => {
                    want_writable(registry, stream, index, writable_interest)?;
                    return Ok(Outcome::Waiting);
                }
                Step::Registered(_) if received.is_empty() => {
                    return match stream.take_error()? {
                        Some(error) => Err(error),
                        None => Ok(Outcome::Registered),
                    }
                }
                Step::Registered(_) => return Ok(Outcome::Registered),
                Step::Read if readiness == Readiness::Unknown => return Ok(Outcome::Waiting),
                Step::Read => {
                    tcp::check_registration_size(received)?;
                    match stream.read(scratch) {
                        Ok(0) => return Err(tcp::registration_cut_off(received)),
                        Ok(read) => {
                            received.extend_from_slice(&scratch[..read]);
                            if read < scratch.len() && readiness == Readiness::Readable {
                                // A short read drained the socket: more arriving raises
                                // a new event.
                                readiness = Readiness::Unknown;
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(Outcome::Waiting)
                        }
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(error),
                    }
                }
            }
        }
    }
}

/// Ask for writable events on the slot's connection too, once.
fn want_writable(
    registry: &Registry,
    stream: &mut TcpStream,
    index: usize,
    asked: &mut bool,
) -> io::Result<()> {
    if !*asked {
        registry.reregister(
            stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        *asked = true;
    }
    Ok(())
}

/// Leave a connection: by reset where the server copes (no TIME_WAIT left
/// on this side), else with the farewell and a FIN. Closing also takes the socket out
/// of the poll set.
fn leave(stream: TcpStream, writing: &TcpWriting) {
    if writing.may_reset {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    } else {
        // A fresh socket takes a farewell this short at once; it is best effort anyway.
        let _ = (&stream).write(writing.farewell);
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Start connecting to `addr` (from `source`, if given) without waiting for it.
fn connect_nonblocking(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    if let Some(source) = source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The event loop: `concurrency` slots, each connecting, registering and leaving over
/// and over until `shared.stop`.
struct ConnectLoop {
    target: Arc<Target>,
    shared: Arc<Shared>,
    poll: Poll,
    slots: Vec<Slot>,
    next_number: usize,
    writing: TcpWriting,
    /// Where each read lands before it is appended to its slot's `received`.
    scratch: Vec<u8>,
    /// Slots whose connection registered in this round of events, to open again.
    registered: Vec<usize>,
    result: LoopResult,
}

impl ConnectLoop {
    fn new(target: Arc<Target>, shared: Arc<Shared>, concurrency: usize) -> io::Result<Self> {
        let slots = (0..concurrency)
            .map(|_| Slot {
                stream: None,
                registration: None,
                received: Vec::new(),
                unsent: Vec::new(),
                writable_interest: false,
                established: false,
                started_ns: 0,
            })
            .collect();
        Ok(ConnectLoop {
            writing: target.door.writing(),
            target,
            shared,
            poll: Poll::new()?,
            slots,
            next_number: 0,
            scratch: vec![0; REGISTER_READ_BYTES],
            registered: Vec::with_capacity(concurrency),
            result: LoopResult {
                histogram: latency_histogram(),
                measured: 0,
            },
        })
    }

    fn run(mut self) -> io::Result<LoopResult> {
        for index in 0..self.slots.len() {
            self.open(index);
        }
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        while !self.shared.stop.load(Ordering::Relaxed) {
            match self.poll.poll(&mut events, Some(SWEEP_INTERVAL)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in events.iter() {
                let index = event.token().0;
                let readiness = if event.is_read_closed() || event.is_error() {
                    // Read to the end (or the error): no later event will say more.
                    Readiness::Ended
                } else if event.is_readable() {
                    Readiness::Readable
                } else {
                    Readiness::Unknown
                };
                self.slots[index].established = true;
                self.advance(index, readiness);
            }
            // Opened here, not from `advance`: a connection that settles as it opens
            // (a refusal at the first send) would otherwise open the next one from
            // inside itself, without end. Those opened now wait for the next poll.
            for index in std::mem::take(&mut self.registered) {
                self.open(index);
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + SWEEP_INTERVAL;
            }
        }
        for slot in &mut self.slots {
            if let Some(stream) = slot.stream.take() {
                leave(stream, &self.writing);
            }
        }
        Ok(self.result)
    }

    /// Start the slot's next connection.
    fn open(&mut self, index: usize) {
        let number = self.next_number;
        self.next_number += 1;
        let nick = self.target.nick(number);
        let source = self.target.source(number);
        let started_ns = self.shared.clock.now_ns();
        let mut stream = match connect_nonblocking(self.target.addr, source) {
            Ok(stream) => stream,
            Err(error) => return self.shared.fail(&error),
        };
        // Readable only: waking for writability would cost every connection an event;
        // a send that cannot go yet asks for it then (see `Slot::drive`).
        if let Err(error) =
            self.poll
                .registry()
                .register(&mut stream, Token(index), Interest::READABLE)
        {
            return self.shared.fail(&error);
        }
        let slot = &mut self.slots[index];
        slot.stream = Some(stream);
        slot.registration = Some(self.target.door.registration(self.target.addr, &nick));
        slot.received.clear();
        slot.unsent.clear();
        slot.writable_interest = false;
        slot.established = false;
        slot.started_ns = started_ns;
        // Nothing can have arrived yet: the first readable event starts the reading.
        self.advance(index, Readiness::Unknown);
    }

    /// Move the slot's registration on, and finish its connection once settled: a
    /// registered slot is opened again after this round of events, a failed one at
    /// the next sweep (so a server that refuses is not hammered in a tight loop).
    fn advance(&mut self, index: usize, readiness: Readiness) {
        let slot = &mut self.slots[index];
        let outcome = slot
            .drive(self.poll.registry(), index, readiness, &mut self.scratch)
            .unwrap_or_else(Outcome::Failed);
        match outcome {
            Outcome::Waiting => {}
            Outcome::Registered => {
                let took = self.shared.clock.now_ns().saturating_sub(slot.started_ns);
                self.shared.completed.fetch_add(1, Ordering::Relaxed);
                if self.shared.measuring.load(Ordering::Relaxed) {
                    self.result.measured += 1;
                    let _ = self.result.histogram.record(took.max(1));
                }
                if let Some(stream) = slot.stream.take() {
                    leave(stream, &self.writing);
                }
                self.registered.push(index);
            }
            Outcome::Failed(error) => {
                self.shared.fail(&error);
                slot.stream = None;
            }
        }
    }

    /// Fail registrations past their deadline, and refill slots left empty.
    fn sweep(&mut self) {
        let now_ns = self.shared.clock.now_ns();
        let timeout_ns = REGISTER_TIMEOUT.as_nanos() as u64;
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.stream.is_none() {
                self.open(index);
            } else if now_ns.saturating_sub(slot.started_ns) > timeout_ns {
                self.shared
                    .fail(&tcp::registration_timed_out(&slot.received));
                slot.stream = None;
            }
        }
    }
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<serde_json::Value> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let target = Arc::new(Target::resolve(&args.target).await?);
    // Servers that break under concurrent registrations get them one at a time.
    let concurrency = match target.door.max_open_concurrency() {
        Some(max) => args.concurrency.min(max),
        None => args.concurrency,
    };
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let progress = Progress::start();
    let started = Instant::now();
    let planned = args.warmup.0 + args.duration.0;
    {
        let shared = shared.clone();
        progress.show(Box::new(move || {
            let elapsed = started.elapsed();
            (
                elapsed.as_secs_f64() / planned.as_secs_f64(),
                format!(
                    "{:.1}/{:.1}s  {} registered, {} failed",
                    elapsed.as_secs_f64(),
                    planned.as_secs_f64(),
                    shared.completed.load(Ordering::Relaxed),
                    shared.failed.load(Ordering::Relaxed)
                ),
            )
        }));
    }
    let event_loop = ConnectLoop::new(target.clone(), shared.clone(), concurrency)?;
    let (finished, result) = tokio::sync::oneshot::channel();
    let stop = StopOnDrop(shared.clone());
    // A thread of its own rather than spawn_blocking: the runtime waits for blocking
    // tasks when it shuts down, and the hard cap must not wait for anything.
    std::thread::Builder::new()
        .name("bench-connect".into())
        .spawn(move || {
            let _ = finished.send(event_loop.run());
        })?;
    tokio::time::sleep(args.warmup.0).await;
    let server_cpu_before = target.server_cpu();
    let window_started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration.0).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = window_started.elapsed();
    let server_cpu_after = target.server_cpu();
    drop(stop);
    let LoopResult {
        histogram,
        measured,
    } = result
        .await
        .map_err(|_| anyhow::anyhow!("the connect loop ended without a result"))?
        .map_err(|error| anyhow::anyhow!("the connect loop failed: {error}"))?;
    progress.finish().await;
    let server_cpu = match (server_cpu_before, server_cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    Ok(serde_json::json!({
        "scenario": "connect",
        "target": target.door.name(),
        "addr": target.addr.to_string(),
        "concurrency": concurrency,
        "warmup_s": seconds(args.warmup.0),
        "duration_s": seconds(window),
        "connects": measured,
        "connects_per_s": ratio(measured as f64, window.as_secs_f64()),
        "latency_us": latency_summary(&histogram),
        "failed": shared.failed.load(Ordering::Relaxed),
        "first_error": first_error,
        "server_cpu_s": server_cpu.map(seconds),
        "server_cpu_us_per_connect": server_cpu
            .map(|cpu| ratio(cpu.as_secs_f64() * 1e6, measured as f64)),
    }))
}
