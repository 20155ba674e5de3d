//! `switchboard bench`: a load generator for Switchboard's front doors (line, JSON,
//! WebSocket) and, for comparison, other chat servers (`ncat --chat`, the seed, a
//! WebSocket broadcast peer), loopback only.
//!
//! Scenarios: `fanout` (N clients in one room, S senders, closed loop or paced,
//! latency and loss accounting), `idle` (memory per registered connection) and
//! `connect` (connect+register rate) and `telemetry` (devices over the UDP door
//! against the JSON door). Every payload carries sender, sequence number
//! and send time ([`payload`]). How a server is spoken to is a `door::Door` adapter.
//! Each run prints a one-line JSON summary on stdout; a progress bar goes to stderr
//! when it is a terminal.

pub(crate) mod connect;
pub(crate) mod door;
pub(crate) mod fanout;
pub(crate) mod idle;
pub mod payload;
pub(crate) mod progress;
pub(crate) mod stats;
pub(crate) mod system;
pub(crate) mod telemetry;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::config::Seconds;
use door::{Door, Session, TargetKind};

/// `switchboard bench` flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// N clients in one room, S of them sending; deliveries/s, latency, loss.
    Fanout(fanout::FanoutArgs),
    /// C registered idle connections; the server's memory per connection.
    Idle(idle::IdleArgs),
    /// Connect, register and leave, `--concurrency` at a time; connections per second.
    Connect(connect::ConnectArgs),
    /// Devices' telemetry into a watched room, over the UDP door and the JSON door.
    Telemetry(telemetry::TelemetryArgs),
}

/// Flags every scenario shares: what to drive and for how long at most.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Server address, HOST:PORT, of the door the target names (for `ws`, the web
    /// listener). Loopback addresses only. Default: Switchboard's port for that door,
    /// 127.0.0.1:9999 (line), :9998 (json) or :8080 (ws, ws-broadcast).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// What kind of server listens there.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub target: TargetKind,
    /// The server's process id: its CPU time per delivery (and in `idle`, its memory
    /// per connection) is read from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Spread connections over the source addresses 127.0.0.1 ..= 127.0.0.K, to
    /// stretch per-IP connection limits and the ephemeral port range.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub source_ips: u8,
    /// Stop the whole run after this long, whatever it is doing.
    #[arg(long, default_value = "120s", value_name = "DURATION")]
    pub hard_cap: Seconds,
    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub open_concurrency: usize,
}

/// The resolved target: where, how to speak to it, from which source addresses.
pub struct Target {
    pub addr: SocketAddr,
    pub door: Arc<dyn Door>,
    pub sources: Vec<Option<IpAddr>>,
    pub server_pid: Option<u32>,
    /// A per-run tag in every nickname, so runs against one server never collide.
    pub run_tag: String,
    pub open_concurrency: usize,
}

impl Target {
    async fn resolve(args: &TargetArgs) -> anyhow::Result<Target> {
        let addr = args.addr.as_deref().unwrap_or(args.target.default_addr());
        let addr = system::loopback_target(addr).await?;
        if let Some(pid) = args.server_pid {
            system::process_cpu(pid)?;
        }
        let door = args.target.door();
        let open_concurrency = match door.max_open_concurrency() {
            Some(max) => args.open_concurrency.clamp(1, max),
            None => args.open_concurrency.max(1),
        };
        Ok(Target {
            addr,
            door,
            sources: system::source_addresses(addr, args.source_ips)?,
            server_pid: args.server_pid,
            run_tag: format!("{:04x}", fastrand::u16(..)),
            open_concurrency,
        })
    }

    /// Nickname of the `index`th connection of this run.
    pub fn nick(&self, index: usize) -> String {
        format!("b{}_{index}", self.run_tag)
    }

    /// Source address for the `index`th connection.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        self.sources[index % self.sources.len()]
    }

    /// Open and register `count` connections, `open_concurrency` at a time, handing
    /// each to `opened` as soon as it is ready (so its reader starts at once). Fails
    /// on the first connection that cannot register, saying which and why.
    pub async fn open_all(
        &self,
        count: usize,
        mut opened: impl FnMut(usize, Session),
    ) -> anyhow::Result<()> {
        let mut attempts = futures_util::stream::iter(0..count)
            .map(|index| {
                let door = self.door.clone();
                let addr = self.addr;
                let source = self.source(index);
                let nick = self.nick(index);
                async move { (index, door.open(addr, source, &nick).await) }
            })
            .buffer_unordered(self.open_concurrency);
        while let Some((index, result)) = attempts.next().await {
            match result {
                Ok(session) => opened(index, session),
                Err(error) => anyhow::bail!(
                    "connection {} of {count} to {} failed: {}{}",
                    index + 1,
                    self.addr,
                    error,
                    limit_hint(&error)
                ),
            }
        }
        Ok(())
    }

    /// The server's CPU time so far, if its PID was given.
    pub fn server_cpu(&self) -> Option<Duration> {
        self.server_pid
            .and_then(|pid| system::process_cpu(pid).ok())
    }
}

fn limit_hint(error: &io::Error) -> &'static str {
    if error.raw_os_error() == Some(libc::EMFILE) {
        " (out of file descriptors: raise `ulimit -n`)"
    } else if error.to_string().contains("too many") || error.to_string().contains("full") {
        " (the server's connection limits: for switchboard pass e.g. `--max-clients 100000 \
         --max-clients-per-ip 100000`, or spread sources with --source-ips)"
    } else {
        ""
    }
}

/// Nanoseconds since the run started, the time base of every payload.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn instant(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds as JSON, rounded to the millisecond.
pub fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `part / whole` rounded to 3 decimals, or null when there is nothing to divide.
pub fn ratio(part: f64, whole: f64) -> serde_json::Value {
    if whole > 0.0 && part.is_finite() {
        serde_json::json!((part / whole * 1000.0).round() / 1000.0)
    } else {
        serde_json::Value::Null
    }
}

/// Run the chosen scenario and print its one-line JSON summary on stdout.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let limit = system::raise_open_file_limit()?;
    let hard_cap = match &args.scenario {
        Scenario::Fanout(args) => args.target.hard_cap.0,
        Scenario::Idle(args) => args.target.hard_cap.0,
        Scenario::Connect(args) => args.target.hard_cap.0,
        Scenario::Telemetry(args) => args.hard_cap.0,
    };
    let work = async {
        match args.scenario {
            Scenario::Fanout(args) => fanout::run(args, limit).await,
            Scenario::Idle(args) => idle::run(args, limit).await,
            Scenario::Connect(args) => connect::run(args).await,
            Scenario::Telemetry(args) => telemetry::run(args).await,
        }
    };
    let summary = tokio::time::timeout(hard_cap, work).await.map_err(|_| {
        anyhow::anyhow!(
            "stopped by the hard cap of {}s (raise --hard-cap, or shorten the run)",
            hard_cap.as_secs_f64()
        )
    })??;
    print_summary(&summary)
}

/// Write the summary line to stdout. A closed stdout (a reader that went away) is an
/// error like any other, not a panic as with `println!`: the result is lost, so the
/// run says so in one line and exits non-zero.
fn print_summary(summary: &serde_json::Value) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{summary}")
        .and_then(|()| stdout.flush())
        .context("cannot write the summary to stdout")
}

/// Refuse a connection count the open-file limit cannot hold.
pub fn check_file_limit(connections: usize, limit: u64) -> anyhow::Result<()> {
    // A few descriptors for stdio, the runtime and /proc reads.
    if connections as u64 + 32 > limit {
        anyhow::bail!(
            "{connections} connections need more file descriptors than the limit of {limit}; \
             raise the hard limit (ulimit -Hn) or use fewer"
        );
    }
    Ok(())
}
