//! Server metrics in Prometheus text format: one recorder per server (never a global
//! one, so several servers in one test process keep separate counts), cheap pre-made
//! handles for the hot counters, and the queue-bytes gauge computed at scrape time.
//!
//! Hot paths hold [`metrics::Counter`] handles made once; a broadcast adds its whole
//! delivery count with one `increment(n)`. Rare events (connects, disconnects) look
//! their handle up through the recorder each time.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::chat::CloseReason;
use crate::outbox::Outbox;

/// Connections opened, by door (`line`, `json`, `ws`).
pub const CONNECTIONS: &str = "switchboard_connections_total";
/// Connections open right now, by door.
pub const CONNECTIONS_OPEN: &str = "switchboard_connections_open";
/// Chat messages (say, action, private) received from clients, by door.
pub const MESSAGES_IN: &str = "switchboard_messages_in_total";
/// Chat messages queued to recipients (one per recipient).
pub const MESSAGES_OUT: &str = "switchboard_messages_out_total";
/// Events of any kind queued to recipients (one per recipient).
pub const DELIVERIES: &str = "switchboard_deliveries_total";
/// Bytes waiting in every client's outbound queue, at scrape time.
pub const QUEUE_BYTES: &str = "switchboard_queue_bytes";
/// Connections ended, by door and reason ([`CloseReason::as_str`]).
pub const DISCONNECTS: &str = "switchboard_disconnects_total";
/// Connections turned away before they reached a door, by listener and reason.
pub const REFUSED: &str = "switchboard_refused_total";
/// Messages committed to the history database.
pub const HISTORY_SAVED: &str = "switchboard_history_messages_saved_total";
/// History transactions (batches) committed.
pub const HISTORY_BATCHES: &str = "switchboard_history_batches_total";
/// Messages the history database could not take (refused, not delivered).
pub const HISTORY_FAILED: &str = "switchboard_history_messages_failed_total";
/// Seconds from a message's hand-off to the writer until its batch is committed: what
/// persisting adds to its delivery (the oldest message of each batch).
pub const HISTORY_SAVE_SECONDS: &str = "switchboard_history_save_seconds";
/// Seconds one batch's transaction took, fsync included.
pub const HISTORY_COMMIT_SECONDS: &str = "switchboard_history_commit_seconds";
/// Successful logins, by method (`password`, `token`).
pub const LOGINS: &str = "switchboard_logins_total";
/// Failed logins and account operations, by reason (`auth_failed`, `auth_limited`, ...).
pub const LOGIN_FAILURES: &str = "switchboard_login_failures_total";
/// Accounts registered.
pub const REGISTRATIONS: &str = "switchboard_registrations_total";
/// Other account changes, by kind (`password_changed`, `dropped`, `logout`).
pub const ACCOUNT_CHANGES: &str = "switchboard_account_changes_total";
/// Moderation actions, by action (`kick`, `ban`, `unban`, `mute`, `unmute`, `op`,
/// `deop`, `invite`, `mode`, `kill`).
pub const MODERATION_ACTIONS: &str = "switchboard_moderation_actions_total";
/// Device commands, by outcome (`sent`, `answered`, `failed`, `timed_out`, and
/// `abandoned`: its sender left before the answer).
pub const COMMANDS: &str = "switchboard_commands_total";
/// Datagrams received on the UDP door (every one, dropped or not).
pub const DATAGRAMS_IN: &str = "switchboard_udp_datagrams_total";
/// Datagrams the UDP door dropped, by reason (`oversized`, `bad_json`, `no_token`,
/// `bad_token`, `replayed`, `rate_limited`, `busy`).
pub const DATAGRAMS_DROPPED: &str = "switchboard_udp_dropped_total";
/// Datagrams sent to devices (commands, answers, errors).
pub const DATAGRAMS_OUT: &str = "switchboard_udp_sent_total";

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    queue_bytes: Gauge,
    /// Live outboxes, so queue bytes can be summed when scraped instead of on every push.
    outboxes: Mutex<HashMap<u64, Weak<Outbox>>>,
    next_outbox: AtomicU64,
}

/// One server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let queue_bytes = metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!(CONNECTIONS, "Connections opened, by front door.");
            metrics::describe_gauge!(CONNECTIONS_OPEN, "Connections open now, by front door.");
            metrics::describe_counter!(MESSAGES_IN, "Chat messages received from clients.");
            metrics::describe_counter!(MESSAGES_OUT, "Chat messages queued to recipients.");
            metrics::describe_counter!(DELIVERIES, "Events of any kind queued to recipients.");
            metrics::describe_gauge!(QUEUE_BYTES, "Bytes waiting in outbound queues.");
            metrics::describe_counter!(DISCONNECTS, "Connections ended, by door and reason.");
            metrics::describe_counter!(
                REFUSED,
                "Connections refused before reaching a door (limits, TLS handshake), by listener and reason."
            );
            metrics::describe_counter!(HISTORY_SAVED, "Messages committed to history.");
            metrics::describe_counter!(HISTORY_BATCHES, "History transactions committed.");
            metrics::describe_counter!(HISTORY_FAILED, "Messages history could not save.");
            metrics::describe_histogram!(
                HISTORY_SAVE_SECONDS,
                metrics::Unit::Seconds,
                "From hand-off to the history writer until committed, per batch's oldest."
            );
            metrics::describe_histogram!(
                HISTORY_COMMIT_SECONDS,
                metrics::Unit::Seconds,
                "One history transaction, fsync included."
            );
            metrics::describe_counter!(LOGINS, "Successful logins, by method.");
            metrics::describe_counter!(LOGIN_FAILURES, "Failed logins, by reason.");
            metrics::describe_counter!(REGISTRATIONS, "Accounts registered.");
            metrics::describe_counter!(
                ACCOUNT_CHANGES,
                "Password changes, dropped accounts, logouts."
            );
            metrics::describe_counter!(MODERATION_ACTIONS, "Moderation actions, by action.");
            metrics::describe_counter!(COMMANDS, "Device commands, by outcome.");
            metrics::describe_counter!(DATAGRAMS_IN, "Datagrams received on the UDP door.");
            metrics::describe_counter!(DATAGRAMS_DROPPED, "Datagrams dropped, by reason.");
            metrics::describe_counter!(DATAGRAMS_OUT, "Datagrams sent to devices.");
            metrics::gauge!(QUEUE_BYTES)
        });
        Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                queue_bytes,
                outboxes: Mutex::new(HashMap::new()),
                next_outbox: AtomicU64::new(0),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    /// A connection to `listener` was turned away for `reason` before reaching its door.
    pub fn refused(&self, listener: &'static str, reason: &'static str) {
        self.with(|| metrics::counter!(REFUSED, "listener" => listener, "reason" => reason))
            .increment(1);
    }

    /// Handles for one front door.
    pub fn door(&self, door: &'static str) -> DoorMetrics {
        let (messages_in, connections, open) = self.with(|| {
            (
                metrics::counter!(MESSAGES_IN, "door" => door),
                metrics::counter!(CONNECTIONS, "door" => door),
                metrics::gauge!(CONNECTIONS_OPEN, "door" => door),
            )
        });
        DoorMetrics {
            door,
            metrics: Some(self.clone()),
            messages_in,
            connections,
            open,
        }
    }

    /// Handles for the accounts service.
    pub fn accounts(&self) -> AccountMetrics {
        AccountMetrics {
            metrics: Some(self.clone()),
        }
    }

    /// Handles for the hub's fan-out and its history writer.
    pub fn hub(&self) -> HubMetrics {
        self.with(|| HubMetrics {
            messages_out: metrics::counter!(MESSAGES_OUT),
            deliveries: metrics::counter!(DELIVERIES),
            history: HistoryMetrics {
                saved: metrics::counter!(HISTORY_SAVED),
                batches: metrics::counter!(HISTORY_BATCHES),
                failed: metrics::counter!(HISTORY_FAILED),
                save_seconds: metrics::histogram!(HISTORY_SAVE_SECONDS),
                commit_seconds: metrics::histogram!(HISTORY_COMMIT_SECONDS),
            },
            moderation: ModerationMetrics {
                metrics: Some(self.clone()),
            },
            commands: CommandMetrics {
                metrics: Some(self.clone()),
            },
        })
    }

    pub fn udp(&self) -> UdpMetrics {
        self.with(|| UdpMetrics {
            metrics: Some(self.clone()),
            datagrams_in: metrics::counter!(DATAGRAMS_IN),
            datagrams_out: metrics::counter!(DATAGRAMS_OUT),
        })
    }

    /// Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        let total: usize = {
            let mut outboxes = self
                .inner
                .outboxes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            outboxes.retain(|_, outbox| outbox.strong_count() > 0);
            outboxes
                .values()
                .filter_map(Weak::upgrade)
                .map(|outbox| outbox.pending_bytes())
                .sum()
        };
        self.inner.queue_bytes.set(total as f64);
        self.inner.handle.render()
    }

    fn track(&self, outbox: &Arc<Outbox>) -> u64 {
        let key = self.inner.next_outbox.fetch_add(1, Ordering::Relaxed);
        self.inner
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::downgrade(outbox));
        key
    }

    fn untrack(&self, key: u64) {
        self.inner
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

/// Metric handles for one front door. `Default` records nothing (for doors built
/// without a server, e.g. in unit tests).
#[derive(Clone, Debug)]
pub struct DoorMetrics {
    door: &'static str,
    metrics: Option<Metrics>,
    messages_in: Counter,
    connections: Counter,
    open: Gauge,
}

impl Default for DoorMetrics {
    fn default() -> Self {
        DoorMetrics {
            door: "none",
            metrics: None,
            messages_in: Counter::noop(),
            connections: Counter::noop(),
            open: Gauge::noop(),
        }
    }
}

impl DoorMetrics {
    /// A connection opened on this door; the guard counts it closed and stops tracking
    /// its queue when dropped.
    pub fn connected(&self, outbox: &Arc<Outbox>) -> ConnectionGuard {
        self.connections.increment(1);
        self.open.increment(1.0);
        ConnectionGuard {
            open: self.open.clone(),
            tracked: self.metrics.as_ref().map(|m| (m.clone(), m.track(outbox))),
        }
    }

    /// A chat message arrived from a client on this door.
    pub fn message_in(&self) {
        self.messages_in.increment(1);
    }

    /// A connection on this door ended for `reason`.
    pub fn disconnected(&self, reason: CloseReason) {
        if let Some(metrics) = &self.metrics {
            let door = self.door;
            metrics
                .with(
                    || metrics::counter!(DISCONNECTS, "door" => door, "reason" => reason.as_str()),
                )
                .increment(1);
        }
    }
}

/// Held for a connection's lifetime; see [`DoorMetrics::connected`]. Only what its
/// drop needs (32 bytes, not the door's whole 88), since every connection keeps one.
#[derive(Debug)]
pub struct ConnectionGuard {
    open: Gauge,
    /// The registry and this connection's key in its outbox list.
    tracked: Option<(Metrics, u64)>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.decrement(1.0);
        if let Some((metrics, key)) = &self.tracked {
            metrics.untrack(*key);
        }
    }
}

/// The accounts' counters (rare events: looked up through the recorder each time).
/// `Default` records nothing.
#[derive(Clone, Debug, Default)]
pub struct AccountMetrics {
    metrics: Option<Metrics>,
}

impl AccountMetrics {
    fn count(&self, make: impl FnOnce() -> Counter) {
        if let Some(metrics) = &self.metrics {
            metrics.with(make).increment(1);
        }
    }

    pub fn login(&self, method: &'static str) {
        self.count(|| metrics::counter!(LOGINS, "method" => method));
    }

    pub fn login_failed(&self, reason: &'static str) {
        self.count(|| metrics::counter!(LOGIN_FAILURES, "reason" => reason));
    }

    pub fn registered(&self) {
        self.count(|| metrics::counter!(REGISTRATIONS));
    }

    pub fn password_changed(&self) {
        self.count(|| metrics::counter!(ACCOUNT_CHANGES, "kind" => "password_changed"));
    }

    pub fn dropped(&self) {
        self.count(|| metrics::counter!(ACCOUNT_CHANGES, "kind" => "dropped"));
    }

    pub fn logged_out(&self) {
        self.count(|| metrics::counter!(ACCOUNT_CHANGES, "kind" => "logout"));
    }
}

/// The hub's fan-out counters. `Default` records nothing.
#[derive(Clone, Debug)]
pub struct HubMetrics {
    /// Chat messages queued, one per recipient.
    pub messages_out: Counter,
    /// Events of any kind queued, one per recipient.
    pub deliveries: Counter,
    /// The history writer's, used by its thread.
    pub history: HistoryMetrics,
    pub moderation: ModerationMetrics,
    pub commands: CommandMetrics,
}

impl Default for HubMetrics {
    fn default() -> Self {
        HubMetrics {
            messages_out: Counter::noop(),
            deliveries: Counter::noop(),
            history: HistoryMetrics::default(),
            moderation: ModerationMetrics::default(),
            commands: CommandMetrics::default(),
        }
    }
}

/// Device command counters, by outcome. `Default` records nothing.
#[derive(Clone, Debug, Default)]
pub struct CommandMetrics {
    metrics: Option<Metrics>,
}

impl CommandMetrics {
    pub fn outcome(&self, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics
                .with(|| metrics::counter!(COMMANDS, "outcome" => outcome))
                .increment(1);
        }
    }
}

/// The UDP door's counters: handles made once for the hot ones, drops looked up by
/// reason (each drop is already the exceptional path).
#[derive(Clone, Debug)]
pub struct UdpMetrics {
    metrics: Option<Metrics>,
    pub datagrams_in: Counter,
    pub datagrams_out: Counter,
}

impl Default for UdpMetrics {
    fn default() -> Self {
        UdpMetrics {
            metrics: None,
            datagrams_in: Counter::noop(),
            datagrams_out: Counter::noop(),
        }
    }
}

impl UdpMetrics {
    pub fn dropped(&self, reason: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics
                .with(|| metrics::counter!(DATAGRAMS_DROPPED, "reason" => reason))
                .increment(1);
        }
    }
}

/// Moderation counters, by action (rare: looked up when counted). `Default` records
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct ModerationMetrics {
    metrics: Option<Metrics>,
}

impl ModerationMetrics {
    pub fn action(&self, action: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics
                .with(|| metrics::counter!(MODERATION_ACTIONS, "action" => action))
                .increment(1);
        }
    }
}

/// The history writer's counters and timings, one update per batch. `Default` records
/// nothing.
#[derive(Clone, Debug)]
pub struct HistoryMetrics {
    pub saved: Counter,
    pub batches: Counter,
    pub failed: Counter,
    pub save_seconds: Histogram,
    pub commit_seconds: Histogram,
}

impl Default for HistoryMetrics {
    fn default() -> Self {
        HistoryMetrics {
            saved: Counter::noop(),
            batches: Counter::noop(),
            failed: Counter::noop(),
            save_seconds: Histogram::noop(),
            commit_seconds: Histogram::noop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn two_servers_in_one_process_count_separately() {
        let a = Metrics::new();
        let b = Metrics::new();
        let outbox = Arc::new(Outbox::new(1024));
        let door = a.door("json");
        let guard = door.connected(&outbox);
        door.message_in();
        door.message_in();
        outbox.push(bytes::Bytes::from_static(b"12345"));
        a.hub().deliveries.increment(3);
        let text = a.render();
        assert_eq!(
            value(&text, "switchboard_messages_in_total{door=\"json\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "switchboard_connections_open{door=\"json\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "switchboard_queue_bytes"), Some(5.0));
        assert_eq!(value(&text, "switchboard_deliveries_total"), Some(3.0));
        drop(guard);
        door.disconnected(CloseReason::SlowConsumer);
        let text = a.render();
        assert_eq!(
            value(&text, "switchboard_connections_open{door=\"json\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "switchboard_queue_bytes"), Some(0.0));
        assert_eq!(
            value(
                &text,
                "switchboard_disconnects_total{door=\"json\",reason=\"slow_consumer\"}"
            ),
            Some(1.0)
        );
        assert!(!b.render().contains("switchboard_messages_in_total{"));
    }
}
