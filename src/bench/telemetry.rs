//! The `telemetry` scenario: D devices send paced telemetry into one room watched by W
//! JSON clients, over the UDP door and then, in the same run, over the JSON door (the
//! devices signed in with their tokens), so the two are compared on one machine at one
//! moment. The run provisions its own account and devices. Reported per transport:
//! datagrams (or lines) sent, accepted into the room (what the first watcher got),
//! delivered to all watchers, lost (sent but never accepted), and latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::stats::{latency_histogram, latency_summary};
use super::{ratio, seconds, system, Clock};
use crate::config::Seconds;

/// `switchboard bench telemetry` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// The server's JSON door (the account, the watchers and the TCP comparison).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9998")]
    pub json: String,
    /// The server's UDP door.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9996")]
    pub udp: String,
    /// Devices sending.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub devices: usize,
    /// Watchers in the room, on the JSON door.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub watchers: usize,
    /// Telemetry messages per second, per device (the server's --udp-device-rate and
    /// --flood-rate must allow it; run it with --flood-rate 0).
    #[arg(long, default_value_t = 200.0, value_name = "N")]
    pub rate: f64,
    /// How long each transport sends.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub duration: Seconds,
    /// Which transports to run: `udp`, `json` or `both` (UDP first).
    #[arg(long, default_value = "both", value_name = "WHICH")]
    pub transports: String,
    /// Stop the whole run after this long, whatever it is doing.
    #[arg(long, default_value = "120s", value_name = "DURATION")]
    pub hard_cap: Seconds,
}

/// What the watchers counted, shared by their reader tasks.
#[derive(Default)]
struct Counts {
    /// Messages from this run's devices, every watcher together.
    delivered: AtomicU64,
    /// The same, for the first watcher only: the messages the room accepted.
    accepted: AtomicU64,
    /// Which transport is sending now (an index into the readers' histograms).
    phase: std::sync::atomic::AtomicUsize,
    /// Latency per transport, merged from every reader when it stops.
    latency: Mutex<Vec<hdrhistogram::Histogram<u64>>>,
}

/// A JSON-door client: send objects, read lines.
struct JsonClient {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl JsonClient {
    async fn connect(addr: SocketAddr) -> anyhow::Result<JsonClient> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the JSON door at {addr}"))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(JsonClient {
            lines: BufReader::with_capacity(64 * 1024, reader).lines(),
            writer,
        })
    }

    async fn send(&mut self, value: &Value) -> anyhow::Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        Ok(())
    }

    /// Lines until one of type `kind` (an `error` first is the run's failure).
    async fn expect(&mut self, kind: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .with_context(|| format!("no {kind} from the server in time"))??
                .with_context(|| format!("the server closed before {kind}"))?;
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if value["type"] == kind {
                return Ok(value);
            }
            if value["type"] == "error" {
                bail!("the server refused: {}", value["text"]);
            }
        }
    }
}

pub async fn run(args: TelemetryArgs) -> anyhow::Result<Value> {
    let json_addr = system::loopback_target(&args.json).await?;
    let udp_addr = system::loopback_target(&args.udp).await?;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be above 0");
    }
    let (run_udp, run_json) = match args.transports.as_str() {
        "udp" => (true, false),
        "json" => (false, true),
        "both" => (true, true),
        other => bail!("--transports must be udp, json or both, not {other:?}"),
    };
    let tag = format!("{:04x}", fastrand::u16(..));
    let room = format!("#bt{tag}");

    // An account of the run's own, and its devices.
    let mut owner = JsonClient::connect(json_addr).await?;
    owner
        .send(&json!({"type": "nick", "nick": format!("bt{tag}owner")}))
        .await?;
    owner.expect("welcome").await?;
    let password = format!("bench password {}", fastrand::u64(..));
    owner
        .send(&json!({"type": "auth", "action": "register", "password": password}))
        .await?;
    owner.expect("signed_in").await?;
    let mut tokens = Vec::new();
    for index in 0..args.devices {
        let name = format!("bt{tag}d{index}");
        owner
            .send(&json!({"type": "device", "action": "add", "name": name}))
            .await?;
        let added = owner.expect("device_added").await?;
        tokens.push(added["token"].as_str().unwrap_or_default().to_owned());
    }

    // The watchers, all in the room before anything is sent.
    let clock = Clock::new();
    let counts = Arc::new(Counts {
        latency: Mutex::new(vec![latency_histogram(), latency_histogram()]),
        ..Counts::default()
    });
    let mut readers = Vec::new();
    let stop = tokio_util::sync::CancellationToken::new();
    for index in 0..args.watchers {
        let mut watcher = JsonClient::connect(json_addr).await?;
        watcher
            .send(&json!({"type": "nick", "nick": format!("bt{tag}w{index}")}))
            .await?;
        watcher.expect("welcome").await?;
        watcher
            .send(&json!({"type": "join", "room": room, "id": "j"}))
            .await?;
        watcher.expect("ok").await?;
        let (counts, prefix) = (counts.clone(), format!("bt{tag}d"));
        let JsonClient { mut lines, writer } = watcher;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            // Held: dropping the write half would end the connection.
            let _writer = writer;
            let mut latency = [latency_histogram(), latency_histogram()];
            loop {
                let line = tokio::select! {
                    _ = stop.cancelled() => break,
                    line = lines.next_line() => line,
                };
                let Ok(Some(line)) = line else { break };
                let Some(sent_ns) = sent_at(&line, &prefix) else {
                    continue;
                };
                counts.delivered.fetch_add(1, Ordering::Relaxed);
                if index == 0 {
                    counts.accepted.fetch_add(1, Ordering::Relaxed);
                }
                let phase = counts.phase.load(Ordering::Relaxed);
                let _ = latency[phase].record(clock.now_ns().saturating_sub(sent_ns).max(1));
            }
            let mut total = counts.latency.lock().unwrap();
            for (total, mine) in total.iter_mut().zip(&latency) {
                let _ = total.add(mine);
            }
        }));
    }

    let mut results = serde_json::Map::new();
    let mut phases: Vec<(usize, &str, bool)> = Vec::new();
    if run_udp {
        phases.push((0, "udp", true));
    }
    if run_json {
        phases.push((1, "json", false));
    }
    for (phase, name, over_udp) in phases.iter().copied() {
        counts.phase.store(phase, Ordering::Relaxed);
        let before = (
            counts.delivered.load(Ordering::Relaxed),
            counts.accepted.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        // The JSON devices' connections stay open until their messages are counted:
        // closing one with unread input would reset it, and lose what it sent last.
        let (sent, connections) = if over_udp {
            (
                send_udp(udp_addr, &tokens, &room, &args, clock).await?,
                Vec::new(),
            )
        } else {
            send_json(json_addr, &tokens, &room, &args, clock).await?
        };
        let sending = started.elapsed();
        // What is still on its way arrives, or stops arriving.
        let mut last = counts.delivered.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = counts.delivered.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        drop(connections);
        let delivered = counts.delivered.load(Ordering::Relaxed) - before.0;
        let accepted = counts.accepted.load(Ordering::Relaxed) - before.1;
        let secs = sending.as_secs_f64();
        results.insert(
            name.to_owned(),
            json!({
                "sent": sent,
                "accepted": accepted,
                "lost": sent.saturating_sub(accepted),
                "loss_ratio": ratio(sent.saturating_sub(accepted) as f64, sent as f64),
                "sent_per_s": (sent as f64 / secs).round(),
                "accepted_per_s": (accepted as f64 / secs).round(),
                "delivered": delivered,
                "delivered_per_s": (delivered as f64 / secs).round(),
                "seconds": seconds(sending),
            }),
        );
    }
    // The run's account and its devices go, so runs do not pile them up on a server
    // that keeps its accounts.
    owner
        .send(&json!({"type": "auth", "action": "drop", "password": password, "id": "drop"}))
        .await?;
    owner.expect("account_dropped").await?;
    drop(owner);
    stop.cancel();
    let _ = futures_util::future::join_all(readers).await;
    let latency = counts.latency.lock().unwrap().clone();
    for (phase, name, _) in phases {
        if let Some(Value::Object(result)) = results.get_mut(name) {
            result.insert("latency_us".into(), latency_summary(&latency[phase]));
        }
    }
    let udp_vs_json = match (results.get("udp"), results.get("json")) {
        (Some(udp), Some(json)) => ratio(
            udp["accepted_per_s"].as_f64().unwrap_or(0.0),
            json["accepted_per_s"].as_f64().unwrap_or(0.0),
        ),
        _ => Value::Null,
    };
    Ok(json!({
        "scenario": "telemetry",
        "devices": args.devices,
        "watchers": args.watchers,
        "rate_per_device": args.rate,
        "results": results,
        "udp_vs_json_accepted": udp_vs_json,
    }))
}

/// The send time in a watcher's line when it is one of this run's telemetry messages:
/// text `bench <device> <n> <sent_ns>` from a sender named `<prefix>N`.
fn sent_at(line: &str, prefix: &str) -> Option<u64> {
    if !line.contains(r#""type":"message""#) || !line.contains(prefix) {
        return None;
    }
    let start = line.find(r#""text":"bench "#)? + r#""text":"bench "#.len();
    let text = &line[start..];
    let text = &text[..text.find('"')?];
    text.rsplit(' ').next()?.parse().ok()
}

fn telemetry(room: &str, device: usize, n: u64, clock: Clock) -> Value {
    json!({
        "type": "say",
        "room": room,
        "text": format!("bench {device} {n} {}", clock.now_ns()),
        "data": {"battery_pct": 97, "n": n},
    })
}

/// Each device sends `rate` datagrams a second for the duration; returns how many.
async fn send_udp(
    addr: SocketAddr,
    tokens: &[String],
    room: &str,
    args: &TelemetryArgs,
    clock: Clock,
) -> anyhow::Result<u64> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut devices = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(addr).await?;
        let (token, room, sent) = (token.clone(), room.to_owned(), sent.clone());
        let (rate, duration) = (args.rate, args.duration.0);
        devices.push(tokio::spawn(async move {
            let mut seq = 0u64;
            paced(rate, duration, |n| {
                seq += 1;
                let mut message = telemetry(&room, index, n, clock);
                message["token"] = json!(token);
                message["seq"] = json!(seq);
                let bytes = message.to_string();
                let socket = &socket;
                let sent = &sent;
                async move {
                    if socket.send(bytes.as_bytes()).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await;
        }));
    }
    for device in devices {
        device.await?;
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// The same over the JSON door, each device signed in with its token.
async fn send_json(
    addr: SocketAddr,
    tokens: &[String],
    room: &str,
    args: &TelemetryArgs,
    clock: Clock,
) -> anyhow::Result<(u64, Vec<tokio::net::tcp::OwnedWriteHalf>)> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut devices = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let mut client = JsonClient::connect(addr).await?;
        client
            .send(&json!({"type": "auth", "action": "token", "token": token}))
            .await?;
        client.expect("signed_in").await?;
        let (room, sent) = (room.to_owned(), sent.clone());
        let (rate, duration) = (args.rate, args.duration.0);
        devices.push(tokio::spawn(async move {
            let writer = tokio::sync::Mutex::new(client.writer);
            // Its input is read (and dropped) until the server closes, so the server
            // never finds it slow and no unread input turns the close into a reset.
            let mut lines = client.lines;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            paced(rate, duration, |n| {
                let mut line = telemetry(&room, index, n, clock).to_string();
                line.push('\n');
                let (writer, sent) = (&writer, &sent);
                async move {
                    if writer.lock().await.write_all(line.as_bytes()).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await;
            writer.into_inner()
        }));
    }
    let mut connections = Vec::new();
    for device in devices {
        connections.push(device.await?);
    }
    Ok((sent.load(Ordering::Relaxed), connections))
}

/// Call `send(n)` `rate` times a second for `duration`, catching up after a stall
/// rather than sending less (the schedule is fixed in advance).
async fn paced<F, Fut>(rate: f64, duration: Duration, mut send: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due).await;
        send(n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_send_time_in_a_telemetry_line() {
        let line = r##"{"data":{"n":3},"from":"btab12d0","id":4,"room":"#btab12","text":"bench 0 3 123456","time":1,"type":"message"}"##;
        assert_eq!(sent_at(line, "btab12d"), Some(123_456));
        assert_eq!(sent_at(line, "btffffd"), None);
        assert_eq!(
            sent_at(r#"{"type":"joined","nick":"btab12d0"}"#, "btab12d"),
            None
        );
    }
}
