//! The `idle` scenario: open C registered connections that then say nothing, and
//! report what they cost the server in resident memory (VmRSS before, once the server
//! has gone quiet, and `--measure-after` later, given its PID), plus how fast they
//! were opened. Every connection keeps reading, so join
//! notices do not sit in the server's queues and count as connection memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::door::{DeliveryReader, PayloadWriter};
use super::progress::Progress;
use super::{check_file_limit, ratio, seconds, system, Target, TargetArgs};
use crate::config::Seconds;

/// How long the server's output must stay quiet before memory is read.
const QUIET: Duration = Duration::from_millis(500);

/// `switchboard bench idle` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Registered connections to open and hold.
    #[arg(long, short = 'c', default_value_t = 1000)]
    pub connections: usize,
    /// Longest wait for the server to go quiet after the last registration.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub settle: Seconds,
    /// After the server goes quiet, wait this long before reading its memory: the
    /// steady state, after Switchboard hands freed memory back (every 5 s).
    #[arg(long, default_value = "6s", value_name = "DURATION")]
    pub measure_after: Seconds,
    /// Keep the connections open this long after measuring (e.g. to look around).
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    pub hold: Seconds,
}

async fn drain(
    mut reader: Box<dyn DeliveryReader>,
    bytes: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut ignored = Vec::new();
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = reader.read(&mut ignored) => read,
        };
        ignored.clear();
        match read {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                bytes.fetch_add(read as u64, Ordering::Relaxed);
            }
        }
    }
}

pub async fn run(args: IdleArgs, file_limit: u64) -> anyhow::Result<serde_json::Value> {
    check_file_limit(args.connections, file_limit)?;
    let target = Target::resolve(&args.target).await?;
    let rss_before = match target.server_pid {
        Some(pid) => Some(system::resident_bytes(pid)?),
        None => None,
    };
    let progress = Progress::start();
    let opened = Arc::new(AtomicU64::new(0));
    {
        let opened = opened.clone();
        let total = args.connections;
        progress.show(Box::new(move || {
            let done = opened.load(Ordering::Relaxed);
            (
                done as f64 / total as f64,
                format!("connecting {done}/{total}"),
            )
        }));
    }
    let bytes_read = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut readers = Vec::with_capacity(args.connections);
    let mut writers: Vec<Box<dyn PayloadWriter>> = Vec::with_capacity(args.connections);
    let started = Instant::now();
    target
        .open_all(args.connections, |_, session| {
            readers.push(tokio::spawn(drain(
                session.reader,
                bytes_read.clone(),
                stop.clone(),
            )));
            writers.push(session.writer);
            opened.fetch_add(1, Ordering::Relaxed);
        })
        .await?;
    let open_time = started.elapsed();

    // Settle: until nothing has arrived for a while (or --settle runs out).
    progress.show(Box::new(|| (1.0, "settling".to_string())));
    let settle_until = Instant::now() + args.settle.0;
    let mut last = bytes_read.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < settle_until && quiet_since.elapsed() < QUIET {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = bytes_read.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let settled = quiet_since.elapsed() >= QUIET;
    let rss_at_quiet = match target.server_pid {
        Some(pid) => Some(system::resident_bytes(pid)?),
        None => None,
    };
    if !args.measure_after.0.is_zero() {
        progress.show(Box::new(|| (1.0, "waiting to measure".to_string())));
        tokio::time::sleep(args.measure_after.0).await;
    }
    let rss_after = match target.server_pid {
        Some(pid) => Some(system::resident_bytes(pid)?),
        None => None,
    };
    if !args.hold.0.is_zero() {
        progress.show(Box::new(|| (1.0, "holding".to_string())));
        tokio::time::sleep(args.hold.0).await;
    }
    progress.finish().await;
    // A reader that ended before `stop` saw its connection closed by the server.
    let still_open = readers
        .iter()
        .filter(|reader| !reader.is_finished())
        .count();
    stop.cancel();
    for reader in readers {
        let _ = reader.await;
    }
    let closing: Vec<_> = writers
        .into_iter()
        .map(|writer| tokio::spawn(writer.close(true)))
        .collect();
    for task in closing {
        let _ = task.await;
    }

    let per_connection = |after: Option<u64>| match (rss_before, after) {
        (Some(before), Some(after)) => ratio(after as f64 - before as f64, args.connections as f64),
        _ => serde_json::Value::Null,
    };
    Ok(serde_json::json!({
        "scenario": "idle",
        "target": target.door.name(),
        "addr": target.addr.to_string(),
        "connections": args.connections,
        "open_s": seconds(open_time),
        "connects_per_s": ratio(args.connections as f64, open_time.as_secs_f64()),
        "settled": settled,
        "still_open": still_open,
        "server_rss_before_bytes": rss_before,
        "server_rss_at_quiet_bytes": rss_at_quiet,
        "server_rss_after_bytes": rss_after,
        "measure_after_s": seconds(args.measure_after.0),
        "server_bytes_per_connection_at_quiet": per_connection(rss_at_quiet),
        "server_bytes_per_connection": per_connection(rss_after),
    }))
}
