//! The one session driver every stream door runs on. A door is a pure [`Framing`]
//! (bytes in, [`Unit`]s out) and a pure [`Protocol`] (units in, [`Step`]s out); this
//! module drives the pair over a `Conn` and owns everything doors share: flood
//! control (which pauses reading, never output), the register and idle deadlines,
//! hub sends, metrics, and the one log line per connection.
//!
//! Framing and protocol are separate, so any protocol can ride any framing: the JSON
//! protocol rides newline framing on its TCP door and WebSocket framing on the web door.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::conn::{Conn, Farewell, Input};
use super::flood::{FloodSettings, Stamp, TokenBucket, Verdict};
use super::PeerSlot;
use crate::accounts::AuthError;
use crate::hub::{
    Account, ClientId, CloseReason, Command, Connection, ErrorCode, HubGone, HubHandle, Outbox,
    Render, Reply, Request, Tag,
};
use crate::metrics::{ConnectionGuard, DoorMetrics};
use crate::text::NickError;

/// One unit of input, as a framing cuts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit<Control> {
    /// One protocol message without its framing (a line without its newline, a
    /// WebSocket message's payload).
    Message(Bytes),
    /// A message over the size cap, discarded; `head` is its first bytes (where a
    /// request id may be found), empty where the protocol has no use for it.
    TooLong { head: Bytes },
    /// A transport control frame (a WebSocket ping or pong): it costs a flood-control
    /// token like a message, so a ping flood is throttled like any other, then goes
    /// back to the framing ([`Framing::on_control`]).
    Control(Control),
    /// The peer said it is done (a WebSocket close frame): everything before it is
    /// handled, nothing after it.
    PeerClosed,
    /// The input broke the framing: everything before it is handled, then the
    /// connection closes for this reason.
    Broken(CloseReason),
}

/// A wire framing: cuts bytes into units. Pure except for the transport's own
/// control traffic (pongs, keepalive pings), which it queues on the connection.
pub trait Framing {
    /// Transport control frames ([`std::convert::Infallible`] where there are none).
    type Control;

    /// Cut `chunk` into units, appended to `units`.
    fn push(&mut self, chunk: &Bytes, units: &mut Vec<Unit<Self::Control>>);

    /// The peer closed its sending side: whatever is buffered and complete enough.
    fn finish(&mut self, units: &mut Vec<Unit<Self::Control>>);

    /// When the framing wants [`Framing::on_deadline`] called (a burst gap, a ping).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// A deadline passed (perhaps not the framing's own). Units it completes go to
    /// `units`; `Some` closes the connection for that reason. `input_waiting`: the
    /// driver holds input from the peer that flood control has not let through yet
    /// (and reads nothing more meanwhile), so the peer is anything but silent.
    fn on_deadline<S, F>(
        &mut self,
        _conn: &mut Conn<S, F>,
        _units: &mut Vec<Unit<Self::Control>>,
        _input_waiting: bool,
    ) -> Option<CloseReason>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
        None
    }

    /// A control unit got its flood-control token.
    fn on_control<S, F>(&mut self, _control: Self::Control, _conn: &mut Conn<S, F>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
    }

    /// The peer's [`Unit::PeerClosed`] was reached.
    fn on_peer_closed<S, F>(&mut self, _conn: &mut Conn<S, F>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Farewell,
    {
    }
}

/// What a protocol asks the driver to do, in order.
#[derive(Debug)]
pub enum Step {
    /// Output the door rendered itself (help, a parse error), queued through the hub so
    /// it keeps its place after the client's earlier hub output.
    Send(Bytes),
    /// The same, written by the hub with the client's name at that moment (IRC's
    /// numerics name their reader, who may have changed nick since).
    SendAddressed(crate::hub::Addressed),
    /// Take this name; the answer comes back through [`Protocol::on_registered`].
    Register { tag: Option<Tag>, nick: String },
    /// Register as `account`, whose password was checked before registration (an
    /// [`AccountStep::Verify`]); answered like `Register`.
    RegisterSignedIn { account: Account },
    /// Render this client's events with `render` from now on (before registering
    /// only; see [`Command::Render`]).
    Render(Arc<dyn Render>),
    /// A request for the hub (a `Quit` before a name is a plain leave).
    Request { tag: Option<Tag>, request: Request },
    /// Something about the client's account; answered through the hub.
    Account { tag: Option<Tag>, step: AccountStep },
    /// Close the connection for this reason (the hub announces it).
    Leave(CloseReason),
}

/// What a client asks of its account. Passwords are checked on the accounts'
/// blocking threads, never on the hub; the answer reaches the client as a reply or an
/// error event, in order with its other output.
#[derive(Clone, PartialEq, Eq)]
pub enum AccountStep {
    /// Log in to `name` (choosing no name first, or instead of the one chosen; an
    /// empty `name` is the client's current one, as NickServ's `IDENTIFY PASSWORD`).
    /// `remember`: also issue a sign-in token (the web page keeps it).
    Login {
        name: String,
        password: String,
        remember: bool,
    },
    /// Sign in with a token issued earlier.
    Token { token: String },
    /// Register the client's current name to it, with `password`. `name`: the name
    /// the client means (IRC's REGISTER says it); refused unless it is the current one.
    Register {
        password: String,
        remember: bool,
        name: Option<String>,
    },
    /// Change the signed-in account's password.
    Password { old: String, new: String },
    /// Delete the signed-in account (the password confirms it).
    Drop { password: String },
    /// Forget `token` if one is given, and end the session.
    Logout { token: Option<String> },
    /// Check `name`'s password now and sign in to it at registration (IRC's SASL,
    /// which happens before the client has a name); the answer goes to
    /// [`Protocol::on_verified`].
    Verify { name: String, password: String },
    /// Add a device owned by the signed-in account; the answer carries its token.
    AddDevice { name: String },
    /// Remove one of the account's devices (any, for a server operator).
    RemoveDevice { name: String },
    /// The account's devices.
    ListDevices,
}

/// Never prints a password or a token (steps end up in debug output and logs).
impl std::fmt::Debug for AccountStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            AccountStep::Login { name, .. } => return write!(f, "Login({name:?})"),
            AccountStep::Token { .. } => "Token",
            AccountStep::Register { .. } => "Register",
            AccountStep::Password { .. } => "Password",
            AccountStep::Drop { .. } => "Drop",
            AccountStep::Logout { .. } => "Logout",
            AccountStep::Verify { name, .. } => return write!(f, "Verify({name:?})"),
            AccountStep::AddDevice { name } => return write!(f, "AddDevice({name:?})"),
            AccountStep::RemoveDevice { name } => return write!(f, "RemoveDevice({name:?})"),
            AccountStep::ListDevices => "ListDevices",
        };
        f.write_str(kind)
    }
}

/// Things the driver decides that the client is told in its door's words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Notice {
    /// Input is being delayed by flood control (said once per throttled stretch).
    SlowDown { rate: f64 },
    /// Throttled for longer than the patience: disconnected.
    Flooding,
    /// No name chosen in time.
    RegisterTimeout { limit: Duration },
    /// Nothing received in time.
    IdleTimeout { limit: Duration },
}

/// A chat protocol: units in, steps out, no I/O. Shared by all of a door's
/// connections; per-connection protocol state lives in [`Protocol::State`].
pub trait Protocol: Send + Sync + 'static {
    /// What the protocol remembers per connection beyond what the driver keeps
    /// (whether it is registered, leaving).
    type State: Default + Send;

    /// What a new connection is sent first (the line door's name prompt).
    fn greeting(&self) -> Option<Bytes> {
        None
    }

    /// One complete message; `registered` says whether the client has a name yet.
    fn on_message(
        &self,
        state: &mut Self::State,
        message: &[u8],
        registered: bool,
        steps: &mut Vec<Step>,
    );

    /// A message over the size cap was discarded.
    fn on_too_long(
        &self,
        state: &mut Self::State,
        head: &[u8],
        registered: bool,
        steps: &mut Vec<Step>,
    );

    /// The hub's answer to a [`Step::Register`].
    fn on_registered(
        &self,
        state: &mut Self::State,
        tag: Option<Tag>,
        answer: Result<(), NickError>,
        steps: &mut Vec<Step>,
    );

    /// `notice` in this protocol's words.
    fn notice(&self, notice: Notice) -> Bytes;

    /// The answer to an [`AccountStep::Verify`]: the account (to register as, with
    /// [`Step::RegisterSignedIn`]), or why not.
    fn on_verified(
        &self,
        _state: &mut Self::State,
        _answer: Result<Account, (ErrorCode, Arc<str>)>,
        _steps: &mut Vec<Step>,
    ) {
    }

    /// What to send after an account step was refused (its error is already on its
    /// way): the line door asks for a name again when the client has none yet.
    fn after_account_refusal(&self, _registered: bool) -> Option<Bytes> {
        None
    }
}

/// Session rules every door has, each door with its own values.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub max_queue_bytes: usize,
    pub register_timeout: Duration,
    /// Close a connection that sends nothing for this long (`None`: never; half-open
    /// peers are found by TCP keepalive instead, so idle humans are not kicked).
    pub idle_timeout: Option<Duration>,
    pub flood: FloodSettings,
    /// The accounts service (`None`: this server has no accounts; account steps are
    /// refused with an error).
    pub accounts: Option<crate::accounts::Accounts>,
}

/// Everything a door's connections share: the hub, the rules, how events are
/// rendered for them, their metrics and their protocol.
pub struct Door<P> {
    /// "line", "json", "ws": shown by whois, the metrics label, the log prefix.
    pub name: &'static str,
    pub hub: HubHandle,
    pub settings: SessionSettings,
    pub render: Arc<dyn Render>,
    pub metrics: DoorMetrics,
    pub protocol: P,
}

/// Drive one connection on `door` from connect to close.
///
/// Not an `async fn`: its arguments would be stored in the future and again in the
/// state built from them, and every idle connection holds this future.
pub fn drive<'door, D, P, T, S, F>(
    door: D,
    stream: S,
    peer: PeerSlot,
    framing: T,
    farewell: F,
) -> impl Future<Output = ()> + 'door
where
    D: Deref<Target = Door<P>> + 'door,
    P: Protocol,
    T: Framing + 'door,
    S: AsyncRead + AsyncWrite + Unpin + 'door,
    F: Farewell + 'door,
{
    let outbox = Arc::new(Outbox::new(door.settings.max_queue_bytes));
    drive_conn(
        door,
        Conn::with_farewell(stream, outbox, farewell),
        peer,
        framing,
    )
}

/// [`drive`] over a pump the caller built (with output already queued, in tests).
pub fn drive_conn<'door, D, P, T, S, F>(
    door: D,
    conn: Conn<S, F>,
    peer: PeerSlot,
    framing: T,
) -> impl Future<Output = ()> + 'door
where
    D: Deref<Target = Door<P>> + 'door,
    P: Protocol,
    T: Framing + 'door,
    S: AsyncRead + AsyncWrite + Unpin + 'door,
    F: Farewell + 'door,
{
    let client = door.hub.next_client_id();
    let now = Instant::now();
    let mut session = Session {
        conn,
        framing,
        state: P::State::default(),
        client,
        pending: Vec::new(),
        bucket: TokenBucket::new(&door.settings.flood, now),
        throttled_until: None,
        register_deadline: Stamp::at(now + door.settings.register_timeout),
        last_input: Stamp::at(now),
        registered: false,
        leaving: false,
        peer_done: false,
        peer,
        counted: None,
        door,
    };
    async move { session.run().await }
}

/// Everything one connection holds while it lives (every idle connection holds one,
/// so it is kept small: times as 8-byte stamps, shared settings behind `door`).
struct Session<D, P: Protocol, T: Framing, S, F> {
    door: D,
    conn: Conn<S, F>,
    framing: T,
    state: P::State,
    client: ClientId,
    /// Units received and not yet handled (waiting for flood-control tokens). Newest
    /// first, so the next pops off the end (a `Vec` is smaller than a `VecDeque`).
    /// While any wait, nothing more is read: at most one read's worth.
    pending: Vec<Unit<T::Control>>,
    bucket: TokenBucket,
    throttled_until: Option<Stamp>,
    register_deadline: Stamp,
    last_input: Stamp,
    registered: bool,
    /// Quit or disconnect sent: further input is ignored.
    leaving: bool,
    /// The peer closed its side: leave once pending input is handled.
    peer_done: bool,
    /// The peer, and the connection slot released when the connection ends.
    peer: PeerSlot,
    counted: Option<ConnectionGuard>,
}

impl<D, P, T, S, F> Session<D, P, T, S, F>
where
    D: Deref<Target = Door<P>>,
    P: Protocol,
    T: Framing,
    S: AsyncRead + AsyncWrite + Unpin,
    F: Farewell,
{
    async fn run(&mut self) {
        {
            let door: &Door<P> = &self.door;
            let connection = Box::new(Connection {
                client: self.client,
                peer: self.peer.peer(),
                door: door.name,
                outbox: self.conn.outbox().clone(),
                render: door.render.clone(),
            });
            // Boxed in its own statement, so the unboxed future is not kept in the task.
            let connect = Box::pin(door.hub.send(Command::Connect(connection)));
            if connect.await.is_err() {
                // The hub stopped before it knew us: say goodbye (a WebSocket's close
                // frame), briefly.
                Box::pin(self.goodbye()).await;
                return;
            }
            self.counted = Some(door.metrics.connected(self.conn.outbox()));
            if let Some(greeting) = door.protocol.greeting() {
                self.conn.outbox().push(greeting);
            }
        }
        self.arm_deadline();
        // The handling futures are boxed: they are large (nested hub sends) but live
        // only while input is handled, so an idle connection's task holds just the
        // session, not room for them. Nothing else is kept across the await but `self`.
        let reason = loop {
            // Scoped, so the input is not stored across the handling's await.
            let handling = {
                let input = self.conn.next().await;
                if let Input::Finished(reason) = input {
                    break reason;
                }
                Box::pin(self.on_input(input))
            };
            if handling.await.is_err() {
                // The hub is gone (shutdown finished): close on our own.
                self.conn.outbox().close(CloseReason::Shutdown);
            }
            // Throttled input waits in the peer's socket buffers, not in our memory.
            self.conn.set_reading(self.pending.is_empty());
            self.arm_deadline();
        };
        Box::pin(self.finish(reason)).await;
    }

    async fn goodbye(&mut self) {
        self.conn.outbox().close(CloseReason::Shutdown);
        let conn = &mut self.conn;
        let flush = async move { while !matches!(conn.next().await, Input::Finished(_)) {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    }

    /// After the connection ended: make sure the hub forgets it, whoever closed (a
    /// no-op if it already did), count and log it, once.
    async fn finish(&mut self, reason: CloseReason) {
        let door: &Door<P> = &self.door;
        let (client, peer, name) = (self.client, self.peer.peer(), door.name);
        let _ = door.hub.disconnect(client, reason).await;
        door.metrics.disconnected(reason);
        if reason.is_routine() {
            tracing::debug!(client, %peer, reason = reason.as_str(), "{name}: connection closed");
        } else {
            tracing::info!(client, %peer, reason = reason.as_str(), "{name}: connection closed");
        }
    }

    fn arm_deadline(&mut self) {
        let deadline = self.next_deadline();
        self.conn.set_deadline(deadline);
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.leaving {
            return None;
        }
        let settings = &self.door.settings;
        let register = (!self.registered).then_some(self.register_deadline);
        let idle = settings.idle_timeout.map(|idle| self.last_input + idle);
        let stamped = [register, idle, self.throttled_until]
            .into_iter()
            .flatten()
            .min()
            .map(Stamp::instant);
        [self.framing.deadline(), stamped]
            .into_iter()
            .flatten()
            .min()
    }

    async fn on_input(&mut self, input: Input) -> Result<(), HubGone> {
        let mut units = Vec::new();
        match input {
            Input::Data(chunk) => {
                self.last_input = Stamp::now();
                self.framing.push(&chunk, &mut units);
                drop(chunk);
            }
            Input::Eof => {
                self.peer_done = true;
                self.framing.finish(&mut units);
            }
            Input::ReadFailed(error) => {
                let (client, peer, name) = (self.client, self.peer.peer(), self.door.name);
                tracing::debug!(client, %peer, %error, "{name}: read failed");
                return self.leave(CloseReason::PeerReset).await;
            }
            Input::Deadline => {
                if let Some(closed) = self.on_deadline(&mut units).await? {
                    return self.leave(closed).await;
                }
            }
            Input::Finished(_) => return Ok(()),
        }
        self.queue(units);
        self.process().await
    }

    /// A deadline passed: whichever are due take effect. `Some` closes the connection.
    async fn on_deadline(
        &mut self,
        units: &mut Vec<Unit<T::Control>>,
    ) -> Result<Option<CloseReason>, HubGone> {
        if self.leaving {
            return Ok(None);
        }
        let now = Stamp::now();
        let settings = &self.door.settings;
        if !self.registered && now >= self.register_deadline {
            let limit = settings.register_timeout;
            self.notify(Notice::RegisterTimeout { limit }).await?;
            return Ok(Some(CloseReason::RegisterTimeout));
        }
        if let Some(limit) = settings.idle_timeout {
            if now >= self.last_input + limit {
                self.notify(Notice::IdleTimeout { limit }).await?;
                return Ok(Some(CloseReason::IdleTimeout));
            }
        }
        if self.throttled_until.is_some_and(|until| now >= until) {
            self.throttled_until = None;
        }
        let input_waiting = !self.pending.is_empty();
        Ok(self
            .framing
            .on_deadline(&mut self.conn, units, input_waiting))
    }

    /// Queue units after those already pending.
    fn queue(&mut self, mut units: Vec<Unit<T::Control>>) {
        if units.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            units.reverse();
            self.pending = units;
        } else {
            self.pending.splice(0..0, units.into_iter().rev());
        }
    }

    /// Handle pending units as flood control allows; leave after the last one if the
    /// peer has closed.
    async fn process(&mut self) -> Result<(), HubGone> {
        while !self.leaving && self.throttled_until.is_none() {
            let Some(next) = self.pending.last() else {
                break;
            };
            let costs_a_token = matches!(
                next,
                Unit::Message(_) | Unit::TooLong { .. } | Unit::Control(_)
            );
            if costs_a_token {
                match self.bucket.take(&self.door.settings.flood, Instant::now()) {
                    Verdict::Allow => {}
                    Verdict::Wait { until, first } => {
                        self.throttled_until = Some(Stamp::at(until));
                        if first {
                            let rate = self.door.settings.flood.rate;
                            self.notify(Notice::SlowDown { rate }).await?;
                        }
                        break;
                    }
                    Verdict::Kick => {
                        self.notify(Notice::Flooding).await?;
                        self.pending.clear();
                        return self.leave(CloseReason::Flood).await;
                    }
                }
            }
            if let Some(unit) = self.pending.pop() {
                self.handle(unit).await?;
            }
        }
        if self.leaving {
            self.pending.clear();
        }
        if self.pending.is_empty() {
            // An idle connection keeps no unit queue (thousands of them).
            self.pending = Vec::new();
            self.bucket.caught_up();
            if self.peer_done {
                return self.leave(CloseReason::PeerClosed).await;
            }
        }
        Ok(())
    }

    async fn handle(&mut self, unit: Unit<T::Control>) -> Result<(), HubGone> {
        let mut steps = Vec::new();
        let door: &Door<P> = &self.door;
        match unit {
            Unit::Message(message) => {
                door.protocol
                    .on_message(&mut self.state, &message, self.registered, &mut steps)
            }
            Unit::TooLong { head } => {
                door.protocol
                    .on_too_long(&mut self.state, &head, self.registered, &mut steps)
            }
            Unit::Control(control) => self.framing.on_control(control, &mut self.conn),
            Unit::PeerClosed => {
                self.framing.on_peer_closed(&mut self.conn);
                steps.push(Step::Leave(CloseReason::PeerClosed));
            }
            Unit::Broken(reason) => {
                let (client, peer, name) = (self.client, self.peer.peer(), door.name);
                tracing::debug!(client, %peer, reason = reason.as_str(), "{name}: broken input");
                steps.push(Step::Leave(reason));
            }
        }
        self.run_steps(steps).await
    }

    /// Carry out `steps` in order; a registration's answer is handled before the
    /// steps after it.
    async fn run_steps(&mut self, steps: Vec<Step>) -> Result<(), HubGone> {
        let mut stack: Vec<Step> = steps;
        stack.reverse();
        while let Some(step) = stack.pop() {
            if self.leaving {
                break;
            }
            let door: &Door<P> = &self.door;
            let client = self.client;
            match step {
                Step::Send(bytes) => door.hub.send(Command::Deliver { client, bytes }).await?,
                Step::SendAddressed(write) => {
                    door.hub
                        .send(Command::DeliverAddressed { client, write })
                        .await?
                }
                Step::Render(render) => {
                    door.hub.send(Command::Render { client, render }).await?;
                }
                Step::Register { .. } | Step::RegisterSignedIn { .. } => {
                    let (tag, answer) = match step {
                        Step::RegisterSignedIn { account } => (
                            None,
                            door.hub.sign_in(client, None, account, false, None).await?,
                        ),
                        Step::Register { tag, nick } => {
                            (tag, door.hub.register(client, nick).await?)
                        }
                        _ => unreachable!("matched above"),
                    };
                    if answer.is_ok() {
                        self.registered = true;
                    }
                    let mut more = Vec::new();
                    door.protocol
                        .on_registered(&mut self.state, tag, answer, &mut more);
                    stack.extend(more.into_iter().rev());
                }
                Step::Request { tag, request } => {
                    match &request {
                        // Before a name the hub would refuse it; quitting needs none.
                        Request::Quit { .. } if !self.registered => {
                            self.leave(CloseReason::ClientQuit).await?;
                            continue;
                        }
                        Request::Quit { .. } => self.leaving = true,
                        Request::Say { .. } | Request::Whisper { .. } | Request::Notice { .. } => {
                            door.metrics.message_in()
                        }
                        _ => {}
                    }
                    door.hub.request(client, tag, request).await?
                }
                Step::Account { tag, step } => Box::pin(self.account(tag, step)).await?,
                Step::Leave(reason) => self.leave(reason).await?,
            }
        }
        Ok(())
    }

    /// Carry out an account step. Hashing runs on the accounts' blocking threads; this
    /// connection waits for it (tens of milliseconds), everyone else does not.
    async fn account(&mut self, tag: Option<Tag>, step: AccountStep) -> Result<(), HubGone> {
        let door: &Door<P> = &self.door;
        let Some(accounts) = door.settings.accounts.clone() else {
            let why = "this server has no accounts";
            let refusal = (ErrorCode::AccountsUnavailable, why.into());
            if let AccountStep::Verify { .. } = step {
                // Its answer is the protocol's to give (SASL waits for it).
                let mut steps = Vec::new();
                door.protocol
                    .on_verified(&mut self.state, Err(refusal), &mut steps);
                return Box::pin(self.run_steps(steps)).await;
            }
            return self.answer(tag, Err(refusal)).await;
        };
        let from = self.peer.peer().ip();
        let client = self.client;
        let refuse = |error: AuthError| Err((error.error_code(), error.to_string().into()));
        match step {
            AccountStep::Login {
                name,
                password,
                remember,
            } => {
                let name = match name.is_empty() {
                    true => door
                        .hub
                        .identify(client)
                        .await?
                        .nick
                        .map(|nick| nick.to_string()),
                    false => Some(name),
                };
                let Some(name) = name else {
                    let why = "name the account: IDENTIFY ACCOUNT PASSWORD";
                    return self
                        .answer(tag, Err((ErrorCode::BadRequest, why.into())))
                        .await;
                };
                match accounts.login(&name, &password, from).await {
                    Ok(account) => {
                        let token = Self::token_for(&accounts, &account, remember).await;
                        self.sign_in(tag, account, false, token).await
                    }
                    Err(error) => self.answer(tag, refuse(error)).await,
                }
            }
            AccountStep::Token { token } => match accounts.token_login(&token, from).await {
                Ok(account) => self.sign_in(tag, account, false, None).await,
                Err(error) => self.answer(tag, refuse(error)).await,
            },
            AccountStep::Register {
                password,
                remember,
                name,
            } => {
                let identity = door.hub.identify(client).await?;
                let answer = match (identity.nick, identity.account) {
                    (_, Some(account)) => Err((
                        ErrorCode::AccountExists,
                        format!("you are already logged in as {}", account.name).into(),
                    )),
                    (None, None) => Err((
                        ErrorCode::NotRegistered,
                        "choose a name first, then register it".into(),
                    )),
                    (Some(nick), None)
                        if name
                            .as_deref()
                            .is_some_and(|name| !crate::text::same_folded(name, &nick)) =>
                    {
                        Err((
                            ErrorCode::BadRequest,
                            format!(
                                "the account is your nick: change to it first, or register {nick}"
                            )
                            .into(),
                        ))
                    }
                    (Some(nick), None) => match accounts.create(&nick, &password, from).await {
                        Ok(account) => {
                            let token = Self::token_for(&accounts, &account, remember).await;
                            return self.sign_in(tag, account, true, token).await;
                        }
                        Err(error) => refuse(error),
                    },
                };
                self.answer(tag, answer).await
            }
            AccountStep::Password { old, new } => {
                let answer = match door.hub.identify(client).await?.account {
                    None => Err(not_signed_in()),
                    Some(account) => {
                        match accounts.change_password(&account, &old, &new, from).await {
                            Ok(()) => Ok(Reply::PasswordChanged),
                            Err(error) => refuse(error),
                        }
                    }
                };
                self.answer(tag, answer).await
            }
            AccountStep::Drop { password } => match door.hub.identify(client).await?.account {
                None => self.answer(tag, Err(not_signed_in())).await,
                Some(account) => match accounts.delete(&account, &password, from).await {
                    Ok(devices) => {
                        let dropped = Command::AccountDropped {
                            client,
                            tag,
                            account,
                            devices,
                        };
                        door.hub.send(dropped).await
                    }
                    Err(error) => self.answer(tag, refuse(error)).await,
                },
            },
            AccountStep::Verify { name, password } => {
                let answer = accounts
                    .login(&name, &password, from)
                    .await
                    .map_err(|error| (error.error_code(), error.to_string().into()));
                let mut steps = Vec::new();
                self.door
                    .protocol
                    .on_verified(&mut self.state, answer, &mut steps);
                Box::pin(self.run_steps(steps)).await
            }
            AccountStep::AddDevice { .. }
            | AccountStep::RemoveDevice { .. }
            | AccountStep::ListDevices => self.device_step(tag, step, &accounts).await,
            AccountStep::Logout { token } => {
                if let Some(token) = token {
                    if let Err(error) = accounts.revoke_token(&token).await {
                        let (client, peer) = (self.client, self.peer.peer());
                        tracing::warn!(client, %peer, %error, "logout: the token was not revoked");
                    }
                }
                accounts.metrics().logged_out();
                self.leave(CloseReason::LoggedOut).await
            }
        }
    }

    /// A device step ([`AccountStep::AddDevice`], `RemoveDevice`, `ListDevices`): the
    /// caller must be signed in as a person (a device owns no devices).
    async fn device_step(
        &mut self,
        tag: Option<Tag>,
        step: AccountStep,
        accounts: &crate::accounts::Accounts,
    ) -> Result<(), HubGone> {
        let (hub, client) = (&self.door.hub, self.client);
        let identity = hub.identify(client).await?;
        let owner = match identity.account {
            None => return self.answer(tag, Err(not_signed_in())).await,
            Some(_) if identity.device => {
                let why = "a device owns no devices; sign in as a person to manage them";
                return self
                    .answer(tag, Err((ErrorCode::NotOperator, why.into())))
                    .await;
            }
            Some(owner) => owner,
        };
        let refuse = |error: AuthError| Err((error.error_code(), error.to_string().into()));
        match step {
            AccountStep::AddDevice { name } => match accounts.add_device(&owner, &name).await {
                Ok((device, token)) => {
                    let added = Command::DeviceAdded {
                        client,
                        tag,
                        device,
                        token,
                    };
                    hub.send(added).await
                }
                Err(error) => self.answer(tag, refuse(error)).await,
            },
            AccountStep::RemoveDevice { name } => {
                let any_owner = identity.server_operator;
                match accounts.remove_device(&owner, &name, any_owner).await {
                    Ok(device) => {
                        let removed = Command::DeviceRemoved {
                            client,
                            tag,
                            device,
                        };
                        hub.send(removed).await
                    }
                    Err(error) => self.answer(tag, refuse(error)).await,
                }
            }
            // ListDevices, the only other step sent here.
            _ => {
                let answer = match accounts.devices(&owner).await {
                    Ok(names) => Ok(Reply::Devices(names)),
                    Err(error) => refuse(error),
                };
                self.answer(tag, answer).await
            }
        }
    }

    /// A sign-in token for `account` when one was asked for (none if it cannot be
    /// made: the sign-in still happens, the page just asks again next time).
    async fn token_for(
        accounts: &crate::accounts::Accounts,
        account: &Account,
        remember: bool,
    ) -> Option<crate::chat::IssuedToken> {
        if !remember {
            return None;
        }
        match accounts.issue_token(account).await {
            Ok(token) => Some(token),
            Err(error) => {
                tracing::warn!(account = %account.name, %error, "no sign-in token issued");
                None
            }
        }
    }

    async fn sign_in(
        &mut self,
        tag: Option<Tag>,
        account: Account,
        created: bool,
        token: Option<crate::chat::IssuedToken>,
    ) -> Result<(), HubGone> {
        let door: &Door<P> = &self.door;
        let issued = token.as_ref().map(|token| token.secret.clone());
        let answer = door
            .hub
            .sign_in(self.client, tag, account, created, token)
            .await?;
        if answer.is_ok() {
            self.registered = true;
            return Ok(());
        }
        // Refused (the hub has said why): a token issued for it must not outlive it.
        if let (Some(token), Some(accounts)) = (issued, door.settings.accounts.as_ref()) {
            if let Err(error) = accounts.revoke_token(&token).await {
                tracing::warn!(client = self.client, %error, "a refused sign-in's token was not revoked");
            }
        }
        if let Some(bytes) = door.protocol.after_account_refusal(self.registered) {
            let client = self.client;
            door.hub.send(Command::Deliver { client, bytes }).await?;
        }
        Ok(())
    }

    /// An answer to the client through the hub, in order with its other output.
    async fn answer(
        &mut self,
        tag: Option<Tag>,
        answer: Result<Reply, (ErrorCode, Arc<str>)>,
    ) -> Result<(), HubGone> {
        let client = self.client;
        let refused = answer.is_err();
        let command = Command::Answer {
            client,
            tag,
            answer,
        };
        self.door.hub.send(command).await?;
        if refused {
            if let Some(bytes) = self.door.protocol.after_account_refusal(self.registered) {
                self.door
                    .hub
                    .send(Command::Deliver { client, bytes })
                    .await?;
            }
        }
        Ok(())
    }

    /// Tell the client `notice`, in order with its hub output.
    async fn notify(&mut self, notice: Notice) -> Result<(), HubGone> {
        let door: &Door<P> = &self.door;
        let bytes = door.protocol.notice(notice);
        let client = self.client;
        door.hub.send(Command::Deliver { client, bytes }).await
    }

    /// Tell the hub this connection is going, once.
    async fn leave(&mut self, reason: CloseReason) -> Result<(), HubGone> {
        if self.leaving {
            return Ok(());
        }
        self.leaving = true;
        self.door.hub.disconnect(self.client, reason).await
    }
}

fn not_signed_in() -> (ErrorCode, Arc<str>) {
    let why = "you are not logged in; /login NAME PASSWORD, or /register PASSWORD";
    (ErrorCode::NotSignedIn, why.into())
}
