//! Server settings: defaults < TOML file (`--config`) < `SWITCHBOARD_*` environment <
//! command-line flags, validated once into one [`Config`].
//!
//! Flags and environment variables are parsed by clap into [`ServeArgs`] (every field
//! optional, so "not given" is visible); the same struct is read from the TOML file;
//! [`ServeArgs::over`] layers them and [`Config::from_args`] fills defaults and checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A duration written as `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("{text:?} is not a duration; write e.g. 30s, 500ms, 2m or a number of seconds")
        })?;
        let seconds = match unit.trim() {
            "" | "s" => value,
            "ms" => value / 1000.0,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?}; use ms, s, m, h or d"
                ))
            }
        };
        // Past a century it is a typo (and past ~5e11 years it is not a Duration).
        if !(0.0..=100.0 * 365.0 * 86_400.0).contains(&seconds) {
            return Err(format!("{text:?} is longer than 100 years"));
        }
        Ok(Seconds(Duration::from_secs_f64(seconds)))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(seconds) if seconds >= 0.0 => Ok(Seconds(Duration::from_secs_f64(seconds))),
            Raw::Number(_) => Err(serde::de::Error::custom("a duration cannot be negative")),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Where a door listens: an address, or `off` to disable the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if matches!(text, "off" | "none" | "disabled") {
            return Ok(Listen(None));
        }
        text.parse().map(|addr| Listen(Some(addr))).map_err(|_| {
            format!("{text:?} is not an address; write e.g. 0.0.0.0:9998, 127.0.0.1:0 or off")
        })
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `switchboard serve` flags. Each can also come from `SWITCHBOARD_<NAME>` or from the
/// TOML file given with `--config` (keys are the flag names with `_` for `-`).
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys like `max_line_bytes = 4096`).
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Plain-text line door (netcat, telnet, seed clients), or `off` [default: 0.0.0.0:9999].
    #[arg(long, env = "SWITCHBOARD_LINE", value_name = "ADDR|off")]
    pub line: Option<Listen>,

    /// Room every client joins once named [default: #general].
    #[allow(rustdoc::broken_intra_doc_links)] // the text is --help's, not a link
    #[arg(long, env = "SWITCHBOARD_DEFAULT_ROOM", value_name = "ROOM")]
    pub default_room: Option<String>,

    /// Longest accepted input line in bytes; longer lines are discarded with an error [default: 4096].
    #[arg(long, env = "SWITCHBOARD_MAX_LINE_BYTES", value_name = "BYTES")]
    pub max_line_bytes: Option<usize>,

    /// Per-client bound on unsent output; a client over it is disconnected as a slow consumer [default: 1048576].
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUE_BYTES", value_name = "BYTES")]
    pub max_queue_bytes: Option<usize>,

    /// Most simultaneous connections over all doors [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_CLIENTS", value_name = "N")]
    pub max_clients: Option<usize>,

    /// Most simultaneous connections from one IP address [default: 64].
    #[arg(long, env = "SWITCHBOARD_MAX_CLIENTS_PER_IP", value_name = "N")]
    pub max_clients_per_ip: Option<usize>,

    /// Disconnect a connection that has not chosen a name after this long [default: 60s].
    #[arg(long, env = "SWITCHBOARD_REGISTER_TIMEOUT", value_name = "DURATION")]
    pub register_timeout: Option<Seconds>,

    /// Close a line-door connection that sends nothing for this long; 0 = never (half-open
    /// peers are found by TCP keepalive instead; JSON devices may be quiet for long, and
    /// the WebSocket keepalive finds dead browsers) [default: 0].
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<Seconds>,

    /// Messages per second a client may send in the long run; over it its input is
    /// delayed; 0 turns flood control off (benchmarks) [default: 10].
    #[arg(long, env = "SWITCHBOARD_FLOOD_RATE", value_name = "PER_SECOND")]
    pub flood_rate: Option<f64>,

    /// Messages a client may send in one burst before flood control delays it [default: 20].
    #[arg(long, env = "SWITCHBOARD_FLOOD_BURST", value_name = "N")]
    pub flood_burst: Option<u32>,

    /// A client throttled without pause for this long is disconnected for flooding [default: 10s].
    #[arg(long, env = "SWITCHBOARD_FLOOD_PATIENCE", value_name = "DURATION")]
    pub flood_patience: Option<Seconds>,

    /// How long shutdown waits for goodbyes to be flushed before closing anyway [default: 3s].
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<Seconds>,

    /// Writers are woken in rounds: the next round starts once the last one is written,
    /// or after this long at most. A quiet server writes at once; a busy room costs one
    /// write per member per round instead of one per message. 0 wakes writers after
    /// every batch of commands [default: 20ms].
    #[arg(long, env = "SWITCHBOARD_FLUSH_INTERVAL", value_name = "DURATION")]
    pub flush_interval: Option<Seconds>,

    /// Directory for the history database (created if missing) [default: ./switchboard-data].
    #[arg(long, env = "SWITCHBOARD_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Keep history in memory only (bounded, lost on exit) instead of on disk under --data.
    #[arg(long, env = "SWITCHBOARD_MEMORY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub memory: Option<bool>,

    /// Messages replayed to a client when it joins a room; 0 disables replay [default: 20].
    #[arg(long, env = "SWITCHBOARD_REPLAY", value_name = "N")]
    pub replay: Option<usize>,

    /// Keep at most this many messages per room and per private conversation [default: unlimited].
    #[arg(long, env = "SWITCHBOARD_RETAIN_MESSAGES", value_name = "N")]
    pub retain_messages: Option<usize>,

    /// Delete messages older than this, e.g. 30d or 12h [default: unlimited].
    #[arg(long, env = "SWITCHBOARD_RETAIN_AGE", value_name = "DURATION")]
    pub retain_age: Option<Seconds>,
    /// JSON-lines door for programs, or `off` [default: 0.0.0.0:9998].
    #[arg(long, env = "SWITCHBOARD_JSON", value_name = "ADDR|off")]
    pub json: Option<Listen>,

    /// Web door: chat page at /, WebSocket at /ws, /healthz, /metrics; or `off`.
    /// HTTPS and WSS when --tls-cert is given [default: 0.0.0.0:8080].
    #[arg(long, env = "SWITCHBOARD_WEB", value_name = "ADDR|off")]
    pub web: Option<Listen>,

    /// TLS-only line door (needs --tls-cert and --tls-key) [default: off].
    #[arg(long, env = "SWITCHBOARD_LINE_TLS", value_name = "ADDR")]
    pub line_tls: Option<SocketAddr>,

    /// TLS-only JSON-lines door (needs --tls-cert and --tls-key) [default: off].
    #[arg(long, env = "SWITCHBOARD_JSON_TLS", value_name = "ADDR")]
    pub json_tls: Option<SocketAddr>,

    /// IRC door for irssi, WeeChat, HexChat and bots, or `off` [default: 0.0.0.0:6667].
    #[arg(long, env = "SWITCHBOARD_IRC", value_name = "ADDR|off")]
    pub irc: Option<Listen>,

    /// TLS-only IRC door (needs --tls-cert and --tls-key; 6697 is customary) [default: off].
    #[arg(long, env = "SWITCHBOARD_IRC_TLS", value_name = "ADDR")]
    pub irc_tls: Option<SocketAddr>,

    /// UDP door for devices: one JSON object per datagram, each with the device's token
    /// (`/device add NAME` makes one), or `off` [default: 0.0.0.0:9996].
    #[arg(long, env = "SWITCHBOARD_UDP", value_name = "ADDR|off")]
    pub udp: Option<Listen>,

    /// Largest device datagram in bytes; bigger ones are dropped unanswered [default: 1200].
    #[arg(long, env = "SWITCHBOARD_UDP_MAX_BYTES", value_name = "BYTES")]
    pub udp_max_bytes: Option<usize>,

    /// A device silent this long is signed out until its next datagram [default: 60s].
    #[arg(long, env = "SWITCHBOARD_UDP_IDLE", value_name = "DURATION")]
    pub udp_idle: Option<Seconds>,

    /// Datagrams per second one device may send (bursts of twice that); more are
    /// dropped and counted [default: 50].
    #[arg(long, env = "SWITCHBOARD_UDP_DEVICE_RATE", value_name = "N")]
    pub udp_device_rate: Option<f64>,

    /// A command not answered within this gets a command_timeout error; over UDP it is
    /// resent every second until then [default: 10s].
    #[arg(long, env = "SWITCHBOARD_COMMAND_TIMEOUT", value_name = "DURATION")]
    pub command_timeout: Option<Seconds>,

    /// Message of the day for IRC clients: a text file, shown on registering and by
    /// MOTD [default: a built-in line].
    #[arg(long, env = "SWITCHBOARD_IRC_MOTD", value_name = "FILE")]
    pub irc_motd: Option<PathBuf>,

    /// Server password IRC clients must send with PASS before registering (wrong or
    /// missing: 464 and the link is closed) [default: none asked].
    #[arg(long, env = "SWITCHBOARD_IRC_PASSWORD", value_name = "PASSWORD")]
    pub irc_password: Option<String>,

    /// PEM certificate chain (leaf first); turns on TLS with --tls-key.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Largest JSON message (TCP line or WebSocket frame) in bytes; bigger ones are refused [default: 65536].
    #[arg(long, env = "SWITCHBOARD_MAX_JSON_BYTES", value_name = "BYTES")]
    pub max_json_bytes: Option<usize>,

    /// Each HTTP request head must arrive whole within this, or the connection is closed
    /// (slowloris defence; WebSockets are exempt once upgraded) [default: 10s].
    #[arg(long, env = "SWITCHBOARD_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    pub http_header_timeout: Option<Seconds>,

    /// A TLS handshake that has not finished by then is dropped; the connection holds its
    /// slot (counted against --max-clients and --max-clients-per-ip) until then [default: 10s].
    #[arg(
        long,
        env = "SWITCHBOARD_TLS_HANDSHAKE_TIMEOUT",
        value_name = "DURATION"
    )]
    pub tls_handshake_timeout: Option<Seconds>,

    /// WebSocket keepalive ping interval; a socket that neither sends anything nor takes its
    /// output for three intervals is closed [default: 30s].
    #[arg(long, env = "SWITCHBOARD_WS_PING_INTERVAL", value_name = "DURATION")]
    pub ws_ping_interval: Option<Seconds>,

    /// A web page origin (like `https://chat.example.com`) whose scripts may open
    /// WebSockets here, besides pages this server serves itself; repeat it or separate
    /// with commas, `*` allows any. Clients that send no Origin (programs, not browsers)
    /// are never refused. This server's own pages count only under an IP address,
    /// `localhost` or a name on its TLS certificate: any other name could be a hostile
    /// site's, pointed here (DNS rebinding), so list the origin of each other name it
    /// is served under [default: same origin only].
    #[arg(
        long = "ws-origin",
        env = "SWITCHBOARD_WS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub ws_origins: Option<Vec<String>>,

    /// An account that is a server operator: signed in, it moderates every room, sees
    /// addresses in /whois and may disconnect anyone (/kill). Repeat it or separate
    /// with commas; in the config file, `operators = ["alice"]`. Register the account
    /// before you name it: until it exists, whoever registers the name first is a
    /// server operator (startup warns about it) [default: none].
    #[arg(
        long = "operator",
        env = "SWITCHBOARD_OPERATORS",
        value_name = "ACCOUNT",
        value_delimiter = ','
    )]
    pub operators: Option<Vec<String>>,
}

impl ServeArgs {
    /// Layer `self` (flags and environment) over `lower` (the file): set fields win.
    pub fn over(self, lower: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config.or(lower.config),
            line: self.line.or(lower.line),
            default_room: self.default_room.or(lower.default_room),
            max_line_bytes: self.max_line_bytes.or(lower.max_line_bytes),
            max_queue_bytes: self.max_queue_bytes.or(lower.max_queue_bytes),
            max_clients: self.max_clients.or(lower.max_clients),
            max_clients_per_ip: self.max_clients_per_ip.or(lower.max_clients_per_ip),
            register_timeout: self.register_timeout.or(lower.register_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            flush_interval: self.flush_interval.or(lower.flush_interval),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            flood_rate: self.flood_rate.or(lower.flood_rate),
            flood_burst: self.flood_burst.or(lower.flood_burst),
            flood_patience: self.flood_patience.or(lower.flood_patience),
            data: self.data.or(lower.data),
            memory: self.memory.or(lower.memory),
            replay: self.replay.or(lower.replay),
            retain_messages: self.retain_messages.or(lower.retain_messages),
            retain_age: self.retain_age.or(lower.retain_age),
            json: self.json.or(lower.json),
            web: self.web.or(lower.web),
            line_tls: self.line_tls.or(lower.line_tls),
            json_tls: self.json_tls.or(lower.json_tls),
            irc: self.irc.or(lower.irc),
            irc_tls: self.irc_tls.or(lower.irc_tls),
            udp: self.udp.or(lower.udp),
            udp_max_bytes: self.udp_max_bytes.or(lower.udp_max_bytes),
            udp_idle: self.udp_idle.or(lower.udp_idle),
            udp_device_rate: self.udp_device_rate.or(lower.udp_device_rate),
            command_timeout: self.command_timeout.or(lower.command_timeout),
            irc_motd: self.irc_motd.or(lower.irc_motd),
            irc_password: self.irc_password.or(lower.irc_password),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            max_json_bytes: self.max_json_bytes.or(lower.max_json_bytes),
            ws_ping_interval: self.ws_ping_interval.or(lower.ws_ping_interval),
            http_header_timeout: self.http_header_timeout.or(lower.http_header_timeout),
            tls_handshake_timeout: self.tls_handshake_timeout.or(lower.tls_handshake_timeout),
            ws_origins: self.ws_origins.or(lower.ws_origins),
            operators: self.operators.or(lower.operators),
        }
    }
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain-text line door; `None` when off.
    pub line: Option<SocketAddr>,
    pub default_room: String,
    pub max_line_bytes: usize,
    pub max_queue_bytes: usize,
    pub max_clients: usize,
    pub max_clients_per_ip: usize,
    pub register_timeout: Duration,
    pub shutdown_grace: Duration,
    pub flush_interval: Duration,
    /// `None`: no idle timeout.
    pub idle_timeout: Option<Duration>,
    pub flood: crate::door::flood::FloodSettings,
    /// History directory; `None` with `--memory` (history in RAM only).
    pub data: Option<PathBuf>,
    /// Messages replayed on join (0: none).
    pub replay: usize,
    pub retention: crate::store::Retention,
    /// JSON-lines door; `None` when off.
    pub json: Option<SocketAddr>,
    /// Web door; `None` when off.
    pub web: Option<SocketAddr>,
    pub line_tls: Option<SocketAddr>,
    pub json_tls: Option<SocketAddr>,
    /// IRC door; `None` when off.
    pub irc: Option<SocketAddr>,
    pub irc_tls: Option<SocketAddr>,
    /// UDP door for devices; `None` when off.
    pub udp: Option<SocketAddr>,
    pub udp_max_bytes: usize,
    pub udp_idle: Duration,
    pub udp_device_rate: f64,
    pub command_timeout: Duration,
    /// The IRC message of the day, read from --irc-motd (`None`: the built-in line).
    pub irc_motd: Option<Vec<String>>,
    pub irc_password: Option<String>,
    /// Loaded certificate and key, when TLS is on.
    pub tls: Option<crate::tls::TlsSettings>,
    pub max_json_bytes: usize,
    pub ws_ping_interval: Duration,
    pub http_header_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub tls_handshake_timeout: Duration,
    /// Origins besides the server's own whose pages may open WebSockets.
    pub ws_origins: Vec<String>,
    /// Server operators' account names.
    pub operators: Vec<String>,
}

/// A setting that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the {setting} file {path}: {source}")]
    ReadSetting {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{setting} {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
}

/// The message of the day's lines, from a text file (not UTF-8: shown lossily).
fn read_motd(path: &Path) -> Result<Vec<String>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadSetting {
        setting: "--irc-motd",
        path: path.into(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.into(),
        message: error.to_string(),
    })
}

fn at_least(setting: &'static str, value: usize, min: usize) -> Result<usize, ConfigError> {
    if value < min {
        return Err(ConfigError::Invalid {
            setting,
            problem: format!("must be at least {min} (got {value})"),
        });
    }
    Ok(value)
}

fn flood_rate(rate: f64) -> Result<f64, ConfigError> {
    if rate.is_finite() && rate >= 0.0 {
        return Ok(rate);
    }
    Err(ConfigError::Invalid {
        setting: "--flood-rate",
        problem: format!("must be a number of messages per second, 0 or more (got {rate})"),
    })
}

/// Load the certificate and key when TLS is asked for, and check that every TLS
/// listener has them.
fn tls_settings(merged: &ServeArgs) -> Result<Option<crate::tls::TlsSettings>, ConfigError> {
    match (&merged.tls_cert, &merged.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsSettings::load(cert, key)?)),
        (Some(_), None) => Err(ConfigError::Invalid {
            setting: "--tls-cert",
            problem: "needs --tls-key too".into(),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            setting: "--tls-key",
            problem: "needs --tls-cert too".into(),
        }),
        (None, None) => {
            let wants_tls = [
                ("--line-tls", merged.line_tls),
                ("--json-tls", merged.json_tls),
                ("--irc-tls", merged.irc_tls),
            ];
            match wants_tls.iter().find(|(_, addr)| addr.is_some()) {
                Some((setting, _)) => Err(ConfigError::Invalid {
                    setting,
                    problem: "needs --tls-cert FILE and --tls-key FILE".into(),
                }),
                None => Ok(None),
            }
        }
    }
}

impl Config {
    /// Read the config file named by `args` (if any), layer, fill defaults, validate.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let merged = args.over(file);
        let tls = tls_settings(&merged)?;
        let default_room = merged.default_room.unwrap_or_else(|| "#general".into());
        let default_room =
            crate::text::normalize_room(&default_room).map_err(|error| ConfigError::Invalid {
                setting: "--default-room",
                problem: error.to_string(),
            })?;
        Ok(Config {
            line: merged
                .line
                .unwrap_or(Listen(Some(SocketAddr::from(([0, 0, 0, 0], 9999)))))
                .0,
            default_room,
            max_line_bytes: at_least(
                "--max-line-bytes",
                merged.max_line_bytes.unwrap_or(4096),
                16,
            )?,
            max_queue_bytes: at_least(
                "--max-queue-bytes",
                merged.max_queue_bytes.unwrap_or(1 << 20),
                1024,
            )?,
            max_clients: at_least("--max-clients", merged.max_clients.unwrap_or(10_000), 1)?,
            max_clients_per_ip: at_least(
                "--max-clients-per-ip",
                merged.max_clients_per_ip.unwrap_or(64),
                1,
            )?,
            register_timeout: merged
                .register_timeout
                .map_or(Duration::from_secs(60), |s| s.0),
            shutdown_grace: merged
                .shutdown_grace
                .map_or(Duration::from_secs(3), |s| s.0),
            flush_interval: match merged.flush_interval {
                Some(Seconds(interval)) if interval > Duration::from_secs(1) => {
                    return Err(ConfigError::Invalid {
                        setting: "--flush-interval",
                        problem: format!(
                            "{interval:?} would hold chat lines back for over a second; \
                             use a few milliseconds (e.g. 2ms), or 0"
                        ),
                    })
                }
                Some(Seconds(interval)) => interval,
                None => crate::hub::DEFAULT_FLUSH_INTERVAL,
            },
            idle_timeout: merged.idle_timeout.map(|s| s.0).filter(|d| !d.is_zero()),
            flood: crate::door::flood::FloodSettings {
                rate: flood_rate(merged.flood_rate.unwrap_or(10.0))?,
                burst: merged.flood_burst.unwrap_or(20).max(1),
                patience: merged
                    .flood_patience
                    .map_or(Duration::from_secs(10), |s| s.0),
            },
            data: if merged.memory.unwrap_or(false) {
                None
            } else {
                Some(
                    merged
                        .data
                        .unwrap_or_else(|| PathBuf::from("switchboard-data")),
                )
            },
            replay: merged.replay.unwrap_or(20),
            retention: crate::store::Retention {
                max_messages: match merged.retain_messages {
                    Some(n) => Some(at_least("--retain-messages", n, 1)?),
                    None => None,
                },
                max_age: match merged.retain_age {
                    Some(age) if age.0.is_zero() => {
                        return Err(ConfigError::Invalid {
                            setting: "--retain-age",
                            problem: "must be longer than 0".into(),
                        })
                    }
                    Some(age) => Some(age.0),
                    None => None,
                },
            },
            json: merged
                .json
                .unwrap_or(Listen(Some(SocketAddr::from(([0, 0, 0, 0], 9998)))))
                .0,
            web: merged
                .web
                .unwrap_or(Listen(Some(SocketAddr::from(([0, 0, 0, 0], 8080)))))
                .0,
            line_tls: merged.line_tls,
            json_tls: merged.json_tls,
            irc: merged
                .irc
                .unwrap_or(Listen(Some(SocketAddr::from(([0, 0, 0, 0], 6667)))))
                .0,
            irc_tls: merged.irc_tls,
            udp: merged
                .udp
                .unwrap_or(Listen(Some(SocketAddr::from(([0, 0, 0, 0], 9996)))))
                .0,
            udp_max_bytes: match merged.udp_max_bytes.unwrap_or(1200) {
                bytes @ 256..=65_507 => bytes,
                other => {
                    return Err(ConfigError::Invalid {
                        setting: "--udp-max-bytes",
                        problem: format!(
                            "must be from 256 to 65507 (the largest UDP payload), got {other}"
                        ),
                    })
                }
            },
            udp_idle: match merged.udp_idle {
                None => Duration::from_secs(60),
                Some(Seconds(idle)) if idle >= Duration::from_secs(1) => idle,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        setting: "--udp-idle",
                        problem: "must be at least 1s".into(),
                    })
                }
            },
            udp_device_rate: match merged.udp_device_rate.unwrap_or(50.0) {
                rate if rate.is_finite() && (0.01..=1e9).contains(&rate) => rate,
                other => {
                    return Err(ConfigError::Invalid {
                        setting: "--udp-device-rate",
                        problem: format!(
                            "must be from 0.01 to 1e9 datagrams per second (got {other})"
                        ),
                    })
                }
            },
            command_timeout: match merged.command_timeout {
                None => crate::hub::DEFAULT_COMMAND_TIMEOUT,
                Some(Seconds(timeout)) if timeout >= Duration::from_millis(100) => timeout,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        setting: "--command-timeout",
                        problem: "must be at least 100ms".into(),
                    })
                }
            },
            irc_motd: match &merged.irc_motd {
                Some(path) => Some(read_motd(path)?),
                None => None,
            },
            irc_password: match merged.irc_password.clone() {
                Some(password) if password.is_empty() || password.contains(char::is_whitespace) => {
                    return Err(ConfigError::Invalid {
                        setting: "--irc-password",
                        problem: "must be one word, not empty (IRC's PASS carries one)".into(),
                    })
                }
                password => password,
            },
            tls,
            max_json_bytes: at_least(
                "--max-json-bytes",
                merged.max_json_bytes.unwrap_or(65_536),
                64,
            )?,
            operators: {
                let operators = merged.operators.clone().unwrap_or_default();
                for name in &operators {
                    crate::text::validate_nick(name).map_err(|error| ConfigError::Invalid {
                        setting: "--operator",
                        problem: format!("{name:?} cannot be an account name: {error}"),
                    })?;
                }
                operators
            },
            ws_origins: merged
                .ws_origins
                .unwrap_or_default()
                .into_iter()
                .map(|origin| normalize_origin(&origin))
                .filter(|origin| !origin.is_empty())
                .collect(),
            http_header_timeout: match merged.http_header_timeout {
                None => Duration::from_secs(10),
                Some(Seconds(timeout)) if timeout >= Duration::from_millis(10) => timeout,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        setting: "--http-header-timeout",
                        problem: "must be at least 10ms".into(),
                    })
                }
            },
            tls_handshake_timeout: match merged.tls_handshake_timeout {
                None => Duration::from_secs(10),
                Some(Seconds(timeout)) if timeout >= Duration::from_millis(10) => timeout,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        setting: "--tls-handshake-timeout",
                        problem: "must be at least 10ms".into(),
                    })
                }
            },
            ws_ping_interval: match merged.ws_ping_interval {
                None => Duration::from_secs(30),
                Some(Seconds(interval)) if interval >= Duration::from_millis(10) => interval,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        setting: "--ws-ping-interval",
                        problem: "must be at least 10ms".into(),
                    })
                }
            },
        })
    }
}

/// An origin as browsers send it: lowercase, no trailing slash, no default port.
fn normalize_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let default_port = if origin.starts_with("https://") {
        ":443"
    } else if origin.starts_with("http://") {
        ":80"
    } else {
        return origin;
    };
    match origin.strip_suffix(default_port) {
        Some(without) => without.to_owned(),
        None => origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        for (given, kept) in [
            ("https://Chat.Example/", "https://chat.example"),
            ("http://chat.lan:80", "http://chat.lan"),
            ("https://chat.example:443/", "https://chat.example"),
            ("http://[::1]:80", "http://[::1]"),
            ("http://chat.lan:8080", "http://chat.lan:8080"),
            ("https://chat.example:80", "https://chat.example:80"),
            ("https://chat.example:4430", "https://chat.example:4430"),
            ("http://chat.example:1080", "http://chat.example:1080"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_origin(given), kept, "{given}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!("30s".parse::<Seconds>().unwrap().0, Duration::from_secs(30));
        assert_eq!(
            "250ms".parse::<Seconds>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("2m".parse::<Seconds>().unwrap().0, Duration::from_secs(120));
        assert_eq!(
            "1.5".parse::<Seconds>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert!("soon".parse::<Seconds>().is_err());
        assert!("3 days".parse::<Seconds>().is_err());
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchboard.toml");
        std::fs::write(
            &path,
            "max_line_bytes = 100\nmax_clients = 5\nregister_timeout = \"5s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            max_clients: Some(7),
            ..Default::default()
        };
        let config = Config::from_args(args).unwrap();
        assert_eq!(config.max_line_bytes, 100);
        assert_eq!(config.max_clients, 7);
        assert_eq!(config.register_timeout, Duration::from_secs(5));
        assert_eq!(config.line.map(|addr| addr.port()), Some(9999));
        assert_eq!(config.default_room, "#general");
    }

    #[test]
    fn irc_motd_and_password_are_checked_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let args = ServeArgs {
            irc_motd: Some(missing.clone()),
            ..Default::default()
        };
        let error = Config::from_args(args).unwrap_err().to_string();
        assert!(
            error.contains("--irc-motd") && error.contains("nope.txt"),
            "{error}"
        );
        let motd = dir.path().join("motd.txt");
        std::fs::write(&motd, "one\r\ntwo\n").unwrap();
        let args = ServeArgs {
            irc_motd: Some(motd),
            irc_password: Some("sesame".into()),
            ..Default::default()
        };
        let config = Config::from_args(args).unwrap();
        assert_eq!(config.irc_motd, Some(vec!["one".into(), "two".into()]));
        assert_eq!(config.irc_password.as_deref(), Some("sesame"));
        for bad in ["", "two words"] {
            let args = ServeArgs {
                irc_password: Some(bad.into()),
                ..Default::default()
            };
            let error = Config::from_args(args).unwrap_err().to_string();
            assert!(error.contains("--irc-password must be one word"), "{error}");
        }
    }

    #[test]
    fn every_plain_door_has_its_customary_port_and_tls_doors_are_opt_in() {
        let config = Config::from_args(ServeArgs::default()).unwrap();
        let port = |door: Option<SocketAddr>| door.map(|addr| addr.port());
        assert_eq!(port(config.line), Some(9999));
        assert_eq!(port(config.json), Some(9998));
        assert_eq!(port(config.web), Some(8080));
        assert_eq!(port(config.irc), Some(6667));
        assert_eq!(
            (config.line_tls, config.json_tls, config.irc_tls),
            (None, None, None)
        );
        let args = ServeArgs {
            irc: Some("off".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(Config::from_args(args).unwrap().irc, None);
    }

    #[test]
    fn history_settings() {
        let config = Config::from_args(ServeArgs::default()).unwrap();
        assert_eq!(config.data, Some(PathBuf::from("switchboard-data")));
        assert_eq!(config.replay, 20);
        assert_eq!(config.retention, crate::store::Retention::default());
        let config = Config::from_args(ServeArgs {
            data: Some("/somewhere".into()),
            memory: Some(true),
            replay: Some(0),
            retain_messages: Some(100),
            retain_age: Some("30d".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.data, None);
        assert_eq!(config.replay, 0);
        assert_eq!(config.retention.max_messages, Some(100));
        assert_eq!(
            config.retention.max_age,
            Some(Duration::from_secs(30 * 86_400))
        );
        let zero = Config::from_args(ServeArgs {
            retain_messages: Some(0),
            ..Default::default()
        });
        assert!(zero.unwrap_err().to_string().contains("--retain-messages"));
    }

    #[test]
    fn bad_files_and_values_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "max_line_byte = 100\n").unwrap();
        let error = Config::from_args(ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("bad.toml") && error.to_string().contains("max_line_byte"),
            "{error}"
        );
        let missing = Config::from_args(ServeArgs {
            config: Some(dir.path().join("nope.toml")),
            ..Default::default()
        });
        assert!(missing.unwrap_err().to_string().contains("nope.toml"));
        let tiny = Config::from_args(ServeArgs {
            max_line_bytes: Some(1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            tiny.to_string()
                .contains("--max-line-bytes must be at least"),
            "{tiny}"
        );
    }

    #[test]
    fn flush_interval_defaults_and_bounds() {
        let config = Config::from_args(ServeArgs::default()).unwrap();
        assert_eq!(config.flush_interval, crate::hub::DEFAULT_FLUSH_INTERVAL);
        let zero = Config::from_args(ServeArgs {
            flush_interval: Some("0".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(zero.flush_interval, Duration::ZERO);
        let long = Config::from_args(ServeArgs {
            flush_interval: Some("2s".parse().unwrap()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(long.to_string().contains("--flush-interval"), "{long}");
    }
}
