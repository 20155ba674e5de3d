//! The `fanout` scenario: N registered clients in one room, the first S of them
//! sending. Closed loop (each sender keeps at most `window` messages not yet delivered
//! to every receiver) or paced (a total rate, latency measured from the intended send
//! time so a stalled server cannot hide its queueing). After a warm-up, a measured
//! window counts deliveries and records latency; after it, senders stop and the run
//! drains, then lost, duplicated and reordered messages are counted over the whole run.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::door::{DeliveryReader, PayloadWriter};
use super::payload::{encode, this_run, Payload, MAX_HEADER_BYTES};
use super::progress::Progress;
use super::stats::{latency_histogram, latency_summary, Arrival, SeqTracker};
use super::{check_file_limit, ratio, seconds, Clock, Target, TargetArgs};
use crate::config::Seconds;

/// Messages one sender writes with one write at most.
const MAX_BATCH: u64 = 64;
/// The largest payload a run may ask for (the server's line cap is usually smaller).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// `switchboard bench fanout` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Clients in the room (senders included).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub clients: usize,
    /// How many of the clients send.
    #[arg(long, short = 's', default_value_t = 10)]
    pub senders: usize,
    /// Closed loop: messages per sender not yet delivered to every receiver.
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Paced instead of closed loop: total messages per second over all senders.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Payload bytes per message (the header is never cut; padding fills the rest).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Sending before the measured window starts.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub warmup: Seconds,
    /// The measured window.
    #[arg(long, short = 'd', default_value = "10s", value_name = "DURATION")]
    pub duration: Seconds,
    /// After sending stops, how long to wait for messages still on their way.
    #[arg(long, default_value = "3s", value_name = "DURATION")]
    pub drain: Seconds,
}

struct SenderState {
    /// Closed loop: free window slots.
    permits: Semaphore,
    /// Closed loop: receivers still owed message `seq`, at slot `seq % window`.
    owed: Box<[AtomicU32]>,
    /// Messages completely written.
    sent: AtomicU64,
}

struct Shared {
    clock: Clock,
    /// The measured window, in clock nanoseconds; u64::MAX until known.
    measure_from: AtomicU64,
    measure_until: AtomicU64,
    /// Distinct deliveries so far (progress and drain).
    delivered: AtomicU64,
    senders: Vec<SenderState>,
    closed_loop: bool,
    window: u64,
    /// Receivers owed each message.
    receivers_per_message: u32,
    /// A sender hit a write error.
    send_failed: AtomicBool,
    /// Latency histograms shared by the receivers, a few of them so that threads
    /// rarely meet on a lock. Not one per receiver: a thousand 400 KB histograms miss
    /// the cache on every sample, which made the generator the bottleneck.
    latencies: Box<[Mutex<Histogram<u64>>]>,
}

/// How many latency histograms the receivers share.
const LATENCY_SHARDS: usize = 4;

struct ReceiverResult {
    tracker: SeqTracker,
    measured: u64,
    /// The server closed this connection (or it failed) before the run ended.
    disconnected: bool,
}

fn lock(histogram: &Mutex<Histogram<u64>>) -> MutexGuard<'_, Histogram<u64>> {
    // Only counts live behind the lock; a panicked receiver leaves them usable.
    histogram
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn receive(
    mut reader: Box<dyn DeliveryReader>,
    shared: Arc<Shared>,
    index: usize,
    stop: CancellationToken,
) -> ReceiverResult {
    let senders = shared.senders.len();
    let latencies = &shared.latencies[index % shared.latencies.len()];
    let mut result = ReceiverResult {
        tracker: SeqTracker::new(senders),
        measured: 0,
        disconnected: false,
    };
    let mut payloads: Vec<Payload> = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            read = reader.read(&mut payloads) => match read {
                Ok(0) | Err(_) => {
                    result.disconnected = true;
                }
                Ok(_) => {}
            },
        }
        if payloads.is_empty() && !result.disconnected {
            continue;
        }
        let now = shared.clock.now_ns();
        let measuring = now >= shared.measure_from.load(Ordering::Relaxed)
            && now < shared.measure_until.load(Ordering::Relaxed);
        let mut unique = 0;
        let mut histogram = measuring.then(|| lock(latencies));
        for payload in payloads.drain(..) {
            let sender = payload.sender as usize;
            if sender >= senders {
                continue;
            }
            if result.tracker.observe(sender, payload.seq) == Arrival::Duplicate {
                continue;
            }
            unique += 1;
            if shared.closed_loop {
                let state = &shared.senders[sender];
                let slot = &state.owed[(payload.seq % shared.window) as usize];
                if slot.fetch_sub(1, Ordering::AcqRel) == 1 {
                    state.permits.add_permits(1);
                }
            }
            if let Some(histogram) = histogram.as_mut() {
                result.measured += 1;
                let _ = histogram.record(now.saturating_sub(payload.sent_ns).max(1));
            }
        }
        drop(histogram);
        shared.delivered.fetch_add(unique, Ordering::Relaxed);
        if result.disconnected {
            break;
        }
    }
    result
}

/// Closed loop: send whenever window slots are free, many per write when several are.
async fn send_closed_loop(
    index: usize,
    writer: &mut dyn PayloadWriter,
    shared: &Shared,
    size: usize,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let state = &shared.senders[index];
    let mut seq: u64 = 0;
    let mut scratch = Vec::with_capacity(size.max(MAX_HEADER_BYTES));
    let mut framed = Vec::with_capacity((size + 16) * MAX_BATCH as usize);
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            permit = state.permits.acquire() => permit,
        };
        let Ok(permit) = permit else { return Ok(()) };
        permit.forget();
        let mut batch = 1;
        while batch < MAX_BATCH {
            match state.permits.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    batch += 1;
                }
                Err(_) => break,
            }
        }
        framed.clear();
        let now = shared.clock.now_ns();
        for _ in 0..batch {
            shared.senders[index].owed[(seq % shared.window) as usize]
                .store(shared.receivers_per_message, Ordering::Release);
            scratch.clear();
            encode(
                &Payload {
                    run: this_run(),
                    sender: index as u32,
                    seq,
                    sent_ns: now,
                },
                size,
                &mut scratch,
            );
            writer.frame(&scratch, &mut framed);
            seq += 1;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            written = writer.send(&framed) => written?,
        }
        state.sent.store(seq, Ordering::Release);
    }
}

/// Paced: each sender sends its share of `rate`, staggered, catching up in batches
/// when it falls behind; the send time in the payload is the intended one.
async fn send_paced(
    index: usize,
    writer: &mut dyn PayloadWriter,
    shared: &Shared,
    size: usize,
    rate: f64,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let state = &shared.senders[index];
    let period_ns = shared.senders.len() as f64 * 1e9 / rate;
    let start =
        shared.clock.now_ns() as f64 + period_ns * index as f64 / shared.senders.len() as f64;
    let intended = |seq: u64| (start + period_ns * seq as f64) as u64;
    let mut seq: u64 = 0;
    let mut scratch = Vec::with_capacity(size.max(MAX_HEADER_BYTES));
    let mut framed = Vec::with_capacity((size + 16) * MAX_BATCH as usize);
    loop {
        let now = shared.clock.now_ns();
        if intended(seq) > now {
            let wake = shared.clock.instant(intended(seq));
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(wake.into()) => continue,
            }
        }
        framed.clear();
        let mut batch = 0;
        while batch < MAX_BATCH && intended(seq) <= now {
            scratch.clear();
            encode(
                &Payload {
                    run: this_run(),
                    sender: index as u32,
                    seq,
                    sent_ns: intended(seq),
                },
                size,
                &mut scratch,
            );
            writer.frame(&scratch, &mut framed);
            seq += 1;
            batch += 1;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            written = writer.send(&framed) => written?,
        }
        state.sent.store(seq, Ordering::Release);
    }
}

pub async fn run(args: FanoutArgs, file_limit: u64) -> anyhow::Result<serde_json::Value> {
    // The target first: an address off loopback is refused before anything else.
    let target = Target::resolve(&args.target).await?;
    if args.senders == 0 || args.senders > args.clients {
        anyhow::bail!(
            "--senders must be between 1 and --clients ({})",
            args.clients
        );
    }
    if args.window == 0 {
        anyhow::bail!("--window must be at least 1");
    }
    if args.size > MAX_PAYLOAD_BYTES {
        anyhow::bail!("--size is at most {MAX_PAYLOAD_BYTES} bytes");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            anyhow::bail!("--rate must be a positive number of messages per second");
        }
    }
    if !args.target.hard_cap.0.is_zero()
        && args.warmup.0 + args.duration.0 + args.drain.0 >= args.target.hard_cap.0
    {
        anyhow::bail!("--warmup + --duration + --drain must stay under --hard-cap");
    }
    check_file_limit(args.clients, file_limit)?;
    let echoes = target.door.echoes();
    let receivers_per_message = if echoes {
        args.clients
    } else {
        args.clients - 1
    } as u32;
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        measure_from: AtomicU64::new(u64::MAX),
        measure_until: AtomicU64::new(u64::MAX),
        delivered: AtomicU64::new(0),
        senders: (0..args.senders)
            .map(|_| SenderState {
                permits: Semaphore::new(args.window as usize),
                owed: (0..args.window).map(|_| AtomicU32::new(0)).collect(),
                sent: AtomicU64::new(0),
            })
            .collect(),
        closed_loop: args.rate.is_none(),
        window: u64::from(args.window),
        receivers_per_message,
        send_failed: AtomicBool::new(false),
        latencies: (0..LATENCY_SHARDS)
            .map(|_| Mutex::new(latency_histogram()))
            .collect(),
    });
    let progress = Progress::start();
    let stop_receiving = CancellationToken::new();

    // Set up: every connection's reader starts as soon as it is registered, so the
    // join notices of later clients never pile up in the server.
    let opened = Arc::new(AtomicU64::new(0));
    {
        let opened = opened.clone();
        let total = args.clients;
        progress.show(Box::new(move || {
            let done = opened.load(Ordering::Relaxed);
            (
                done as f64 / total as f64,
                format!("connecting {done}/{total}"),
            )
        }));
    }
    let setup_started = Instant::now();
    // By connection index, which registrations finishing out of order do not keep:
    // the accounting pairs receiver `i` with sender `i` (a sender is not owed its own
    // messages where the server does not echo).
    let mut receivers = Vec::with_capacity(args.clients);
    let mut writers: Vec<Option<Box<dyn PayloadWriter>>> =
        (0..args.clients).map(|_| None).collect();
    target
        .open_all(args.clients, |index, session| {
            let task = tokio::spawn(receive(
                session.reader,
                shared.clone(),
                index,
                stop_receiving.clone(),
            ));
            receivers.push((index, task));
            writers[index] = Some(session.writer);
            opened.fetch_add(1, Ordering::Relaxed);
        })
        .await?;
    let setup_time = setup_started.elapsed();

    // Send: warm-up, then the measured window.
    let stop_sending = CancellationToken::new();
    let mut sender_tasks = Vec::with_capacity(args.senders);
    for (index, slot) in writers.iter_mut().enumerate().take(args.senders) {
        let Some(mut writer) = slot.take() else {
            continue;
        };
        let shared = shared.clone();
        let stop = stop_sending.clone();
        let (size, rate) = (args.size, args.rate);
        sender_tasks.push(tokio::spawn(async move {
            let result = match rate {
                None => send_closed_loop(index, writer.as_mut(), &shared, size, &stop).await,
                Some(rate) => send_paced(index, writer.as_mut(), &shared, size, rate, &stop).await,
            };
            if result.is_err() {
                shared.send_failed.store(true, Ordering::Relaxed);
            }
            writer
        }));
    }
    let started = Instant::now();
    let planned = args.warmup.0 + args.duration.0;
    {
        let shared = shared.clone();
        progress.show(Box::new(move || {
            let elapsed = started.elapsed();
            let phase = if elapsed < args.warmup.0 {
                "warm-up"
            } else {
                "measuring"
            };
            (
                elapsed.as_secs_f64() / planned.as_secs_f64(),
                format!(
                    "{phase} {:.1}/{:.1}s  {} deliveries",
                    elapsed.as_secs_f64(),
                    planned.as_secs_f64(),
                    shared.delivered.load(Ordering::Relaxed)
                ),
            )
        }));
    }
    let sent_total = |shared: &Shared| -> u64 {
        shared
            .senders
            .iter()
            .map(|state| state.sent.load(Ordering::Acquire))
            .sum()
    };
    tokio::time::sleep(args.warmup.0).await;
    let server_cpu_before = target.server_cpu();
    let own_cpu_before = super::system::own_cpu();
    let sent_before = sent_total(&shared);
    let measure_from = shared.clock.now_ns();
    shared.measure_from.store(measure_from, Ordering::Relaxed);
    tokio::time::sleep(args.duration.0).await;
    let measure_until = shared.clock.now_ns();
    shared.measure_until.store(measure_until, Ordering::Relaxed);
    let server_cpu_after = target.server_cpu();
    let own_cpu = super::system::own_cpu().saturating_sub(own_cpu_before);
    let sent_in_window = sent_total(&shared) - sent_before;
    stop_sending.cancel();
    for (index, task) in sender_tasks.into_iter().enumerate() {
        if let Ok(writer) = task.await {
            writers[index] = Some(writer);
        }
    }

    // Drain: wait for what is still on its way, up to --drain.
    let sent = sent_total(&shared);
    let owed = sent * u64::from(receivers_per_message);
    {
        let shared = shared.clone();
        progress.show(Box::new(move || {
            let delivered = shared.delivered.load(Ordering::Relaxed);
            (
                delivered as f64 / owed.max(1) as f64,
                format!("draining {delivered}/{owed}"),
            )
        }));
    }
    let drain_until = Instant::now() + args.drain.0;
    while shared.delivered.load(Ordering::Relaxed) < owed && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_receiving.cancel();
    receivers.sort_unstable_by_key(|(index, _)| *index);
    let mut results = Vec::with_capacity(receivers.len());
    for (_, task) in receivers {
        results.push(task.await?);
    }
    progress.finish().await;
    // Leave politely, all at once, bounded in time by each writer's close.
    let closing: Vec<_> = writers
        .into_iter()
        .flatten()
        .map(|writer| tokio::spawn(writer.close(false)))
        .collect();
    for task in closing {
        let _ = task.await;
    }

    // Account.
    let mut histogram = latency_histogram();
    for shard in shared.latencies.iter() {
        let _ = histogram.add(&*lock(shard));
    }
    let (mut measured, mut duplicated, mut reordered, mut lost, mut disconnected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for (receiver, result) in results.iter().enumerate() {
        measured += result.measured;
        duplicated += result.tracker.duplicated;
        reordered += result.tracker.reordered;
        disconnected += u64::from(result.disconnected);
        for (sender, state) in shared.senders.iter().enumerate() {
            if sender == receiver && !echoes {
                continue;
            }
            let sent = state.sent.load(Ordering::Acquire);
            lost += sent.saturating_sub(result.tracker.unique(sender));
        }
    }
    let window = Duration::from_nanos(measure_until - measure_from);
    let server_cpu = match (server_cpu_before, server_cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let window_s = window.as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "fanout",
        "target": target.door.name(),
        "addr": target.addr.to_string(),
        "clients": args.clients,
        "senders": args.senders,
        "mode": if args.rate.is_some() { "paced" } else { "closed-loop" },
        "window": if args.rate.is_some() { serde_json::Value::Null } else { args.window.into() },
        "rate": args.rate,
        "size": args.size,
        "setup_s": seconds(setup_time),
        "warmup_s": seconds(args.warmup.0),
        "duration_s": seconds(window),
        "sent": sent,
        "sent_per_s": ratio(sent_in_window as f64, window_s),
        "deliveries": measured,
        "deliveries_per_s": ratio(measured as f64, window_s),
        "latency_us": latency_summary(&histogram),
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "disconnected": disconnected,
        "send_failed": shared.send_failed.load(Ordering::Relaxed),
        "server_cpu_s": server_cpu.map(seconds),
        "server_cpu_us_per_delivery": server_cpu
            .map(|cpu| ratio(cpu.as_secs_f64() * 1e6, measured as f64)),
        "bench_cpu_s": seconds(own_cpu),
        "bench_cpu_us_per_delivery": ratio(own_cpu.as_secs_f64() * 1e6, measured as f64),
    }))
}
