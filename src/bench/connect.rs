//! The `connect` scenario: a few workers each connect, register, and leave (by reset
//! where the server copes, so no TIME_WAIT piles up), over and over; after a warm-up, a
//! measured window counts completed registrations and their latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::stats::{latency_histogram, latency_summary};
use super::{ratio, seconds, Clock, Target, TargetArgs};
use crate::config::Seconds;

/// `switchboard bench connect` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connections being set up at once.
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
    completed: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct WorkerResult {
    histogram: Histogram<u64>,
    measured: u64,
}

async fn worker(
    index: usize,
    concurrency: usize,
    target: Arc<Target>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> WorkerResult {
    let mut result = WorkerResult {
        histogram: latency_histogram(),
        measured: 0,
    };
    // Connection numbers interleave over workers, so every nickname is unique.
    let mut number = index;
    while !stop.is_cancelled() {
        let nick = target.nick(number);
        let source = target.source(number);
        number += concurrency;
        let started = shared.clock.now_ns();
        let opened = tokio::select! {
            _ = stop.cancelled() => break,
            opened = target.door.open(target.addr, source, &nick) => opened,
        };
        match opened {
            Ok(session) => {
                let took = shared.clock.now_ns().saturating_sub(started);
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if shared.measuring.load(Ordering::Relaxed) {
                    result.measured += 1;
                    let _ = result.histogram.record(took.max(1));
                }
                drop(session.reader);
                session.writer.close(true).await;
            }
            Err(error) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = shared
                    .first_error
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
    result
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<serde_json::Value> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let target = Arc::new(Target::resolve(&args.target).await?);
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        measuring: AtomicBool::new(false),
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
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|index| {
            tokio::spawn(worker(
                index,
                args.concurrency,
                target.clone(),
                shared.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(args.warmup.0).await;
    let server_cpu_before = target.server_cpu();
    let window_started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration.0).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = window_started.elapsed();
    let server_cpu_after = target.server_cpu();
    stop.cancel();
    let mut histogram = latency_histogram();
    let mut measured = 0u64;
    for task in workers {
        let result = task.await?;
        let _ = histogram.add(&result.histogram);
        measured += result.measured;
    }
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
        "concurrency": args.concurrency,
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
