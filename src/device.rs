//! `switchboard device`: a small device simulator for the UDP door. It sends telemetry
//! into a room at a steady rate and answers the commands it is sent (`ping`, `status`,
//! `land`, `takeoff`, `set`; anything else fails), answering a resent command with the
//! same answer as the first time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

use crate::config::Seconds;

const DEVICE_AFTER_HELP: &str = "\
Add the device first, signed in on any door: `/device add drone7` answers with its
token, shown once. Then: switchboard device --token TOKEN --udp 127.0.0.1:9996
Its telemetry appears in --room for everyone there; `/command drone7 status` from any
user (or {\"type\":\"command\",\"to\":\"drone7\",\"name\":\"status\"} on the JSON door)
gets an answer from it.";

/// `switchboard device` flags.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = DEVICE_AFTER_HELP)]
pub struct DeviceArgs {
    /// The device's token (from `/device add NAME`).
    #[arg(long, env = "SWITCHBOARD_DEVICE_TOKEN", value_name = "TOKEN")]
    pub token: String,

    /// The server's UDP door.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9996")]
    pub udp: String,

    /// The room the telemetry goes to.
    #[arg(long, value_name = "ROOM", default_value = "#devices")]
    pub room: String,

    /// Telemetry datagrams per second (0: none, only answers to commands).
    #[arg(long, value_name = "N", default_value = "1")]
    pub rate: f64,

    /// Stop after this many telemetry datagrams [default: run until Ctrl+C].
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// With no telemetry to send, send a ping this often so the server keeps the
    /// device signed in (its --udp-idle is 60s by default).
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    pub keepalive: Seconds,
}

/// The simulated device's state: what telemetry reports and commands change.
struct Drone {
    started: std::time::Instant,
    altitude: f64,
    battery: f64,
    flying: bool,
    settings: serde_json::Map<String, Value>,
}

impl Drone {
    fn telemetry(&mut self) -> Value {
        if self.flying {
            self.battery = (self.battery - 0.05).max(0.0);
        }
        json!({
            "altitude_m": (self.altitude * 10.0).round() / 10.0,
            "battery_pct": (self.battery * 10.0).round() / 10.0,
            "flying": self.flying,
            "uptime_s": self.started.elapsed().as_secs(),
        })
    }

    /// Do command `name`: `Ok(result)` or `Err(why)`.
    fn command(&mut self, name: &str, args: Option<&Value>) -> Result<Value, String> {
        match name {
            "ping" => Ok(json!({ "pong": true })),
            "status" => Ok(self.telemetry()),
            "land" if !self.flying => Err("already on the ground".into()),
            "land" => {
                self.flying = false;
                self.altitude = 0.0;
                Ok(json!({ "landed": true }))
            }
            "takeoff" if self.battery < 10.0 => Err("battery too low to take off".into()),
            "takeoff" => {
                self.flying = true;
                self.altitude = args
                    .and_then(|args| args.get("altitude_m"))
                    .and_then(Value::as_f64)
                    .unwrap_or(10.0);
                Ok(json!({ "altitude_m": self.altitude }))
            }
            "set" => match args {
                Some(Value::Object(values)) => {
                    self.settings.extend(values.clone());
                    Ok(Value::Object(self.settings.clone()))
                }
                _ => Err("set needs an object of settings, e.g. {\"lights\":true}".into()),
            },
            other => Err(format!(
                "unknown command {other:?}; this device knows ping, status, land, takeoff and set"
            )),
        }
    }
}

/// Numbers that grow across restarts of the device: microseconds since the epoch, then
/// one more per datagram.
struct Sequence(u64);

impl Sequence {
    fn start() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_micros() as u64);
        Sequence(now)
    }

    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// Answers already given, by command id, so a resent command gets the same answer.
const REMEMBERED_ANSWERS: usize = 256;

pub async fn run(args: DeviceArgs) -> anyhow::Result<()> {
    let target: SocketAddr = tokio::net::lookup_host(&args.udp)
        .await
        .with_context(|| format!("cannot resolve {}", args.udp))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.udp))?;
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        bail!("--rate must be 0 or more datagrams per second");
    }
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socket = UdpSocket::bind(bind)
        .await
        .context("cannot open a UDP socket")?;
    socket
        .connect(target)
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    println!(
        "device: sending to {target} (room {}, {} per second)",
        args.room, args.rate
    );
    let mut drone = Drone {
        started: std::time::Instant::now(),
        altitude: 0.0,
        battery: 100.0,
        flying: false,
        settings: serde_json::Map::new(),
    };
    let mut seq = Sequence::start();
    let mut answers: HashMap<u64, Value> = HashMap::new();
    let mut answered_order: VecDeque<u64> = VecDeque::new();
    let period = if args.rate > 0.0 {
        Duration::from_secs_f64(1.0 / args.rate)
    } else {
        args.keepalive.0.max(Duration::from_millis(100))
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut buffer = vec![0u8; 65_536];
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                if args.count.is_some_and(|count| sent >= count) {
                    break;
                }
                let message = if args.rate > 0.0 {
                    sent += 1;
                    json!({
                        "type": "say",
                        "room": args.room,
                        "text": format!("telemetry {sent}"),
                        "data": drone.telemetry(),
                    })
                } else {
                    json!({ "type": "ping" })
                };
                send(&socket, &args.token, seq.next(), message).await;
            }
            received = socket.recv(&mut buffer) => {
                let Ok(len) = received else { continue };
                let Ok(value) = serde_json::from_slice::<Value>(&buffer[..len]) else { continue };
                match value.get("type").and_then(Value::as_str) {
                    Some("command") => {
                        let Some(id) = value.get("id").and_then(Value::as_u64) else { continue };
                        let answer = match answers.get(&id) {
                            Some(answer) => answer.clone(),
                            None => {
                                let name = value.get("name").and_then(Value::as_str).unwrap_or("");
                                let from = value.get("from").and_then(Value::as_str).unwrap_or("?");
                                let answer = match drone.command(name, value.get("args")) {
                                    Ok(result) => json!({ "ok": true, "result": result }),
                                    Err(why) => json!({ "ok": false, "error": why }),
                                };
                                println!("device: {from} asked {name}: {answer}");
                                answers.insert(id, answer.clone());
                                answered_order.push_back(id);
                                if answered_order.len() > REMEMBERED_ANSWERS {
                                    if let Some(old) = answered_order.pop_front() {
                                        answers.remove(&old);
                                    }
                                }
                                answer
                            }
                        };
                        let mut result = json!({ "type": "command_result", "id": id });
                        if let (Value::Object(result), Value::Object(answer)) = (&mut result, answer) {
                            result.extend(answer);
                        }
                        send(&socket, &args.token, seq.next(), result).await;
                    }
                    Some("error") => {
                        let text = value.get("text").and_then(Value::as_str).unwrap_or("");
                        eprintln!("device: the server says: {text}");
                    }
                    Some("signed_in") => {
                        let name = value.get("account").and_then(Value::as_str).unwrap_or("?");
                        println!("device: signed in as {name}");
                    }
                    _ => {}
                }
            }
        }
    }
    println!("device: stopped after {sent} telemetry datagrams");
    Ok(())
}

/// One datagram: `message` with the token and the next sequence number.
async fn send(socket: &UdpSocket, token: &str, seq: u64, mut message: Value) {
    message["token"] = json!(token);
    message["seq"] = json!(seq);
    let Ok(bytes) = serde_json::to_vec(&message) else {
        return;
    };
    if let Err(error) = socket.send(&bytes).await {
        // No server listening yet shows up as a refused send: keep going, it may start.
        tracing::debug!(%error, "device: send failed");
    }
}
