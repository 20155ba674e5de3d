//! The UDP door: devices send one JSON object per datagram (telemetry into rooms,
//! answers to commands), each carrying the device's token and a growing `seq`; the
//! door keeps one hub session per device and sends it commands (retried until
//! answered), errors and replies by datagram to the address it last sent from.
//!
//! One task owns the socket's receiving side and every device's state (sessions,
//! replay windows, token cache, limits); one small pump task per device session drains
//! its outbox into datagrams. Nothing that fails to parse or authenticate is ever
//! answered, so the door cannot be used to amplify a spoofed sender's traffic.

pub mod datagram;
pub mod replay;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{address_group, Accounts};
use crate::chat::{Account, ClientId, CloseReason, ErrorCode, Event, Request, Target};
use crate::door::flood::{FloodSettings, TokenBucket, Verdict};
use crate::door::json::codec::{ClientMessage, JsonRender};
use crate::hub::{Command, Connection, HubHandle, Render};
use crate::metrics::UdpMetrics;
use crate::outbox::{Outbox, Take};
use datagram::{carried_over_udp, Dropped};
use replay::ReplayWindow;

/// The UDP door's settings.
#[derive(Debug, Clone)]
pub struct UdpSettings {
    /// Bigger datagrams are dropped unread.
    pub max_datagram_bytes: usize,
    /// A device silent this long is signed out (it comes back with its next datagram).
    pub idle: Duration,
    /// Each device's datagrams: this many per second, in bursts of twice that.
    pub device_rate: f64,
    /// How long a command datagram is resent while its answer has not come.
    pub command_timeout: Duration,
    /// A device's output queue bound (commands and answers waiting to be sent).
    pub max_queue_bytes: usize,
}

/// Datagrams from addresses without a known device: a burst of this many, then...
const STRANGER_BURST: u32 = 10;
/// ...this many a second, per address (IPv4 address or IPv6 /64).
const STRANGER_RATE: f64 = 2.0;
/// Token lookups in the accounts database, all senders together, per second (and
/// burst): a flood from spoofed addresses cannot turn into a flood of queries.
const LOOKUP_RATE: f64 = 200.0;
/// The most addresses tracked as strangers; past it the map starts over (the global
/// lookup limit still holds).
const MAX_STRANGERS: usize = 65_536;
/// Unknown tokens remembered (so a repeated bad token costs no query), at most...
const MAX_UNKNOWN_TOKENS: usize = 4096;
/// ...for this long.
const UNKNOWN_TOKEN_MEMORY: Duration = Duration::from_secs(10);
/// A known device token is checked against the database again after this long, so a
/// token deleted behind the door's back stops working within it.
const TOKEN_RECHECK: Duration = Duration::from_secs(60);
/// A command datagram not yet answered is sent again this often...
const COMMAND_RESEND: Duration = Duration::from_secs(1);
/// ...this many times at most: a device that answers nothing is not sent a command
/// ten times over, and a sender who forged a device's address (it needs the device's
/// token for that) gets at most four datagrams sent to it per command it paid for.
const MAX_RESENDS: u32 = 3;
/// How often idle sessions are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How device sessions see hub events: commands, replies, errors, notices and private
/// messages, as the JSON door renders them. Room traffic is not sent (a device sends
/// telemetry; it watches rooms, if it wants to, over a connection).
pub struct UdpRender(Arc<JsonRender>);

impl UdpRender {
    pub fn new() -> Arc<Self> {
        Arc::new(UdpRender(JsonRender::new()))
    }
}

impl Render for UdpRender {
    fn render(&self, event: &Event) -> Option<Bytes> {
        match event {
            Event::Command(_)
            | Event::Reply { .. }
            | Event::Error { .. }
            | Event::Notice { .. } => self.0.render(event),
            Event::Message(message) if matches!(message.target, Target::Private(_)) => {
                self.0.render(event)
            }
            _ => None,
        }
    }

    fn echoes_own_messages(&self) -> bool {
        false
    }

    fn carries_commands(&self) -> bool {
        true
    }
}

/// One device's live session.
struct Session {
    client: ClientId,
    /// Where its datagrams go: where it last sent from (shared with its pump).
    peer: Arc<Mutex<SocketAddr>>,
    last_heard: Instant,
    /// Command ids it answered: its pump stops resending them.
    answered: mpsc::Sender<u64>,
}

/// A known device token, with what is kept per token across sessions: a replay must
/// not work because the device went idle in between, and signing out and in again
/// must not reset its rate. Per token, not per name: a device removed and added again
/// under its old name has a new token and starts afresh.
struct KnownToken {
    device: Account,
    checked: Instant,
    window: ReplayWindow,
    bucket: TokenBucket,
}

/// Everything the receiving task owns.
struct UdpDoor {
    socket: Arc<UdpSocket>,
    hub: HubHandle,
    accounts: Accounts,
    settings: UdpSettings,
    device_rate: FloodSettings,
    metrics: UdpMetrics,
    tracker: TaskTracker,
    /// One renderer for every device session: the hub renders an event once per
    /// renderer, so one each would make a room of devices cost a render per member.
    render: Arc<UdpRender>,
    /// By device account key.
    sessions: HashMap<Arc<str>, Session>,
    /// Device tokens that were valid when last checked (so at most one per device).
    tokens: HashMap<String, KnownToken>,
    unknown_tokens: HashMap<String, Instant>,
    strangers: HashMap<IpAddr, TokenBucket>,
    lookups: TokenBucket,
    /// Pumps report here when their session's outbox closed.
    ended_sender: mpsc::UnboundedSender<(Arc<str>, ClientId, CloseReason)>,
}

fn allowed(bucket: &mut TokenBucket, settings: &FloodSettings, now: Instant) -> bool {
    let verdict = bucket.take(settings, now);
    // A dropped datagram is not waiting: there is no throttled stretch to end in a kick.
    bucket.caught_up();
    verdict == Verdict::Allow
}

const STRANGER_SETTINGS: FloodSettings = FloodSettings {
    rate: STRANGER_RATE,
    burst: STRANGER_BURST,
    patience: Duration::from_secs(1),
};

const LOOKUP_SETTINGS: FloodSettings = FloodSettings {
    rate: LOOKUP_RATE,
    burst: LOOKUP_RATE as u32,
    patience: Duration::from_secs(1),
};

/// Serve device datagrams on `socket` until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    hub: HubHandle,
    accounts: Accounts,
    settings: UdpSettings,
    metrics: UdpMetrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let (ended_sender, mut ended) = mpsc::unbounded_channel();
    let now = Instant::now();
    let device_rate = FloodSettings {
        rate: settings.device_rate,
        burst: (settings.device_rate * 2.0).clamp(1.0, f64::from(u32::MAX)) as u32,
        patience: Duration::from_secs(1),
    };
    let mut door = UdpDoor {
        socket: Arc::new(socket),
        hub,
        accounts,
        settings,
        device_rate,
        metrics,
        tracker,
        render: UdpRender::new(),
        sessions: HashMap::new(),
        tokens: HashMap::new(),
        unknown_tokens: HashMap::new(),
        strangers: HashMap::new(),
        lookups: TokenBucket::new(&LOOKUP_SETTINGS, now),
        ended_sender,
    };
    // One byte over the largest datagram there is, so a bigger one is seen as bigger.
    let mut buffer = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((key, client, reason)) = ended.recv() => door.ended(key, client, reason),
            _ = sweep.tick() => door.sweep().await,
            received = door.socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => door.datagram(&buffer[..len], from).await,
                // ICMP port-unreachable from an earlier send shows up here on some
                // systems; it says nothing about the socket itself.
                Err(error) => tracing::debug!(%error, "udp: receive failed"),
            },
        }
    }
}

impl UdpDoor {
    fn drop_datagram(&self, reason: Dropped) {
        self.metrics.dropped(reason.as_str());
    }

    async fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        self.metrics.datagrams_in.increment(1);
        let parsed = match datagram::parse(bytes, self.settings.max_datagram_bytes) {
            Ok(parsed) => parsed,
            Err(reason) => return self.drop_datagram(reason),
        };
        let now = Instant::now();
        let device = match self.device_for(&parsed.token, from, now).await {
            Ok(device) => device,
            Err(reason) => return self.drop_datagram(reason),
        };
        let Some(known) = self.tokens.get_mut(&parsed.token) else {
            return self.drop_datagram(Dropped::BadToken);
        };
        // The rate first, so a datagram dropped for it does not use up its seq.
        if !allowed(&mut known.bucket, &self.device_rate, now) {
            return self.drop_datagram(Dropped::RateLimited);
        }
        if !parsed.seq.is_some_and(|seq| known.window.accept(seq)) {
            return self.drop_datagram(Dropped::Replayed);
        }
        if !self.sessions.contains_key(&device.key) {
            if let Err(reason) = self.start_session(&parsed.token, &device, from, now).await {
                return self.drop_datagram(reason);
            }
        }
        let Some(session) = self.sessions.get_mut(&device.key) else {
            return self.drop_datagram(Dropped::Busy);
        };
        session.last_heard = now;
        *session.peer.lock().unwrap_or_else(|p| p.into_inner()) = from;
        let client = session.client;
        let tag = parsed.decoded.tag;
        let request = match parsed.decoded.message {
            Ok(message) if carried_over_udp(&message) => match message {
                ClientMessage::Hub(request) => request,
                _ => return,
            },
            Ok(_) => {
                let why = "that needs a connection: names, accounts and history are on the \
                           JSON door and the WebSocket; over UDP a device sends say, msg, join, \
                           part, ping, command and command_result";
                return self.answer(client, tag, ErrorCode::NotOverUdp, why).await;
            }
            Err(refusal) => return self.answer(client, tag, refusal.code, &refusal.text).await,
        };
        match &request {
            Request::CommandResult { id, .. } => {
                let _ = session.answered.try_send(*id);
            }
            Request::Quit { .. } => {
                self.sessions.remove(&device.key);
                let _ = self.hub.disconnect(client, CloseReason::ClientQuit).await;
                return;
            }
            _ => {}
        }
        let _ = self.hub.request(client, tag, request).await;
    }

    /// Tell a device something through the hub, in order with its other output.
    async fn answer(
        &self,
        client: ClientId,
        tag: Option<crate::chat::Tag>,
        code: ErrorCode,
        text: &str,
    ) {
        let answer = Command::Answer {
            client,
            tag,
            answer: Err((code, text.into())),
        };
        let _ = self.hub.send(answer).await;
    }

    /// The device `token` belongs to, looked up (under the limits) when not known.
    async fn device_for(
        &mut self,
        token: &str,
        from: SocketAddr,
        now: Instant,
    ) -> Result<Account, Dropped> {
        if let Some(known) = self.tokens.get(token) {
            // A stale entry is checked again when the lookups allow; a flood of
            // strangers must not lock known devices out, so until then it serves.
            let stale = now.duration_since(known.checked) >= TOKEN_RECHECK;
            if !stale || !allowed(&mut self.lookups, &LOOKUP_SETTINGS, now) {
                return Ok(known.device.clone());
            }
            return self.check_token(token, now).await;
        }
        let group = address_group(from.ip());
        if self.strangers.len() >= MAX_STRANGERS && !self.strangers.contains_key(&group) {
            self.strangers.clear();
        }
        let bucket = self
            .strangers
            .entry(group)
            .or_insert_with(|| TokenBucket::new(&STRANGER_SETTINGS, now));
        if !allowed(bucket, &STRANGER_SETTINGS, now) {
            return Err(Dropped::RateLimited);
        }
        if let Some(&seen) = self.unknown_tokens.get(token) {
            if now.duration_since(seen) < UNKNOWN_TOKEN_MEMORY {
                return Err(Dropped::BadToken);
            }
        }
        if !allowed(&mut self.lookups, &LOOKUP_SETTINGS, now) {
            return Err(Dropped::RateLimited);
        }
        let device = self.check_token(token, now).await?;
        // A device that proved itself is no stranger: its address starts afresh.
        self.strangers.remove(&group);
        Ok(device)
    }

    /// Ask the accounts which device `token` is now, and remember the answer.
    async fn check_token(&mut self, token: &str, now: Instant) -> Result<Account, Dropped> {
        match self.accounts.device_for_token(token).await {
            Ok(Some(device)) => {
                match self.tokens.get_mut(token) {
                    Some(known) if known.device == device => known.checked = now,
                    _ => {
                        let known = KnownToken {
                            device: device.clone(),
                            checked: now,
                            window: ReplayWindow::default(),
                            bucket: TokenBucket::new(&self.device_rate, now),
                        };
                        self.tokens.insert(token.to_owned(), known);
                    }
                }
                Ok(device)
            }
            Ok(None) => {
                self.tokens.remove(token);
                if self.unknown_tokens.len() >= MAX_UNKNOWN_TOKENS {
                    self.unknown_tokens
                        .retain(|_, seen| now.duration_since(*seen) < UNKNOWN_TOKEN_MEMORY);
                    if self.unknown_tokens.len() >= MAX_UNKNOWN_TOKENS {
                        self.unknown_tokens.clear();
                    }
                }
                self.unknown_tokens.insert(token.to_owned(), now);
                Err(Dropped::BadToken)
            }
            Err(error) => {
                tracing::warn!(%error, "udp: cannot check a device token");
                Err(Dropped::Busy)
            }
        }
    }

    /// Sign `device` in as a new hub client and start its pump. The token is checked
    /// against the accounts again first: the cache may hold a token whose device was
    /// removed while it had no session here (and its name may be someone else's now).
    async fn start_session(
        &mut self,
        token: &str,
        device: &Account,
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), Dropped> {
        if self.check_token(token, now).await? != *device {
            self.tokens.remove(token);
            return Err(Dropped::BadToken);
        }
        let client = self.hub.next_client_id();
        let outbox = Arc::new(Outbox::new(self.settings.max_queue_bytes));
        let connection = Box::new(Connection {
            client,
            peer: from,
            door: "udp",
            outbox: outbox.clone(),
            render: self.render.clone(),
        });
        let busy = |_| Dropped::Busy;
        self.hub
            .send(Command::Connect(connection))
            .await
            .map_err(busy)?;
        match self
            .hub
            .sign_in(client, None, device.clone(), false, None)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(device = %device.name, %error, "udp: the device could not sign in");
                let _ = self.hub.disconnect(client, CloseReason::BadInput).await;
                self.tokens.retain(|_, known| known.device != *device);
                return Err(Dropped::BadToken);
            }
            Err(_) => return Err(Dropped::Busy),
        }
        tracing::info!(device = %device.name, client, peer = %from, "udp: device signed in");
        let peer = Arc::new(Mutex::new(from));
        let (answered, answers) = mpsc::channel(64);
        let pump = Pump {
            socket: self.socket.clone(),
            outbox,
            peer: peer.clone(),
            answers,
            resend_for: self.settings.command_timeout,
            metrics: self.metrics.clone(),
        };
        let ended = self.ended_sender.clone();
        let key = device.key.clone();
        self.tracker.spawn(async move {
            let reason = pump.run().await;
            let _ = ended.send((key, client, reason));
        });
        self.sessions.insert(
            device.key.clone(),
            Session {
                client,
                peer,
                last_heard: now,
                answered,
            },
        );
        Ok(())
    }

    /// A session's outbox closed (idle, replaced, removed, shutdown).
    fn ended(&mut self, key: Arc<str>, client: ClientId, reason: CloseReason) {
        if self.sessions.get(&key).is_some_and(|s| s.client == client) {
            self.sessions.remove(&key);
        }
        if reason == CloseReason::Revoked {
            self.tokens.retain(|_, known| known.device.key != key);
        }
        tracing::info!(device = %key, client, %reason, "udp: device session ended");
    }

    /// Sign out devices silent for longer than the idle time.
    async fn sweep(&mut self) {
        let now = Instant::now();
        let idle = self.settings.idle;
        let quiet: Vec<Arc<str>> = self
            .sessions
            .iter()
            .filter(|(_, session)| now.duration_since(session.last_heard) >= idle)
            .map(|(key, _)| key.clone())
            .collect();
        for key in quiet {
            if let Some(session) = self.sessions.remove(&key) {
                let _ = self
                    .hub
                    .disconnect(session.client, CloseReason::IdleTimeout)
                    .await;
            }
        }
    }
}

/// Drains one device's outbox into datagrams, one per JSON object, and resends its
/// commands until they are answered or time out.
struct Pump {
    socket: Arc<UdpSocket>,
    outbox: Arc<Outbox>,
    peer: Arc<Mutex<SocketAddr>>,
    answers: mpsc::Receiver<u64>,
    resend_for: Duration,
    metrics: UdpMetrics,
}

/// A command datagram waiting for its answer.
struct Unanswered {
    datagram: Bytes,
    first_sent: Instant,
    resent: u32,
}

impl Pump {
    async fn run(mut self) -> CloseReason {
        let mut batch = VecDeque::new();
        let mut unanswered: HashMap<u64, Unanswered> = HashMap::new();
        let mut resend = tokio::time::interval(COMMAND_RESEND);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                take = std::future::poll_fn(|cx| self.outbox.poll_take(cx, &mut batch)) => {
                    let closed = match take {
                        Take::Data => None,
                        Take::Closed(reason) => Some(reason),
                    };
                    for bytes in batch.drain(..) {
                        for line in bytes.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()) {
                            let datagram = bytes.slice_ref(line);
                            if let Some(id) = command_id(&datagram) {
                                unanswered.insert(id, Unanswered {
                                    datagram: datagram.clone(),
                                    first_sent: Instant::now(),
                                    resent: 0,
                                });
                            }
                            self.send(&datagram).await;
                        }
                        self.outbox.written(bytes.len());
                    }
                    if let Some(reason) = closed {
                        return reason;
                    }
                }
                Some(id) = self.answers.recv() => {
                    unanswered.remove(&id);
                }
                _ = resend.tick(), if !unanswered.is_empty() => {
                    let now = Instant::now();
                    unanswered.retain(|_, waiting| {
                        now.duration_since(waiting.first_sent) < self.resend_for
                            && waiting.resent < MAX_RESENDS
                    });
                    let due: Vec<Bytes> = unanswered
                        .values_mut()
                        .filter(|waiting| now.duration_since(waiting.first_sent) >= COMMAND_RESEND)
                        .map(|waiting| {
                            waiting.resent += 1;
                            waiting.datagram.clone()
                        })
                        .collect();
                    for datagram in due {
                        self.send(&datagram).await;
                    }
                }
            }
        }
    }

    async fn send(&self, datagram: &[u8]) {
        let peer = *self.peer.lock().unwrap_or_else(|p| p.into_inner());
        match self.socket.send_to(datagram, peer).await {
            Ok(_) => self.metrics.datagrams_out.increment(1),
            Err(error) => tracing::debug!(%peer, %error, "udp: send failed"),
        }
    }
}

/// The id of a `command` datagram (the JSON render's), `None` for anything else.
fn command_id(datagram: &[u8]) -> Option<u64> {
    memchr::memmem::find(datagram, br#""type":"command""#)?;
    let value: serde_json::Value = serde_json::from_slice(datagram).ok()?;
    (value.get("type")?.as_str()? == "command")
        .then(|| value.get("id")?.as_u64())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{CommandSent, Reply};

    #[test]
    fn devices_get_commands_and_answers_but_not_room_traffic() {
        let render = UdpRender::new();
        let command = Event::Command(Arc::new(CommandSent {
            id: 9,
            from: "alice".into(),
            name: "land".into(),
            args: None,
        }));
        let bytes = render.render(&command).expect("commands are sent");
        assert_eq!(command_id(bytes.strip_suffix(b"\n").unwrap()), Some(9));
        let pong = Event::Reply {
            tag: Some("1".into()),
            reply: Reply::Pong,
        };
        assert_eq!(command_id(&render.render(&pong).unwrap()), None);
        let joined = Event::Joined {
            room: "#drones".into(),
            nick: "bob".into(),
            client: 2,
            account: None,
        };
        assert!(render.render(&joined).is_none());
    }
}
