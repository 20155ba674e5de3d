//! Front doors: each turns one wire format into hub commands and renders hub events
//! back. Shared here: the connection pump (`conn`), the session driver every door runs
//! on (`session`), flood control, the door list and accept path (`listen`), and the
//! connection limits.

pub(crate) mod conn;
pub(crate) mod flood;
pub mod irc;
pub mod json;
pub mod line;
pub(crate) mod listen;
pub mod session;
pub mod udp;
pub(crate) mod web;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Set the socket options every chat connection wants on the listening socket, once:
/// Linux copies them to each accepted socket, which saves five system calls per accept
/// (a fifth of a connection's cost on a VM where each costs several microseconds).
///
/// - TCP_NODELAY: chat traffic is small and latency-bound; writes are already coalesced.
/// - TCP keepalive (60 s idle, then 3 probes 10 s apart): finds half-open peers
///   (crashed hosts, pulled cables) without kicking idle users.
pub fn tune_listener(listener: &tokio::net::TcpListener) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    socket.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)
}

/// Accept TCP connections on `listener` until `shutdown`, handing each to `on_accept`
/// (which spawns its task, or queues the connection; the next accept waits for it, so
/// a full queue holds new connections in the kernel's backlog). Accept errors (out of
/// descriptors and the like) back off briefly instead of spinning. Under every door's
/// listener (`listen::serve`).
pub async fn accept_loop<Accepted: std::future::Future<Output = ()>>(
    door: &'static str,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
    mut on_accept: impl FnMut(tokio::net::TcpStream, SocketAddr) -> Accepted,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            // Socket options come from the listener (see `tune_listener`).
            Ok((stream, peer)) => on_accept(stream, peer).await,
            Err(error) => {
                tracing::warn!(%error, "{door}: accept failed; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts live connections across every door, globally and per address, so a flood of
/// connections is refused at accept instead of exhausting memory or descriptors.
#[derive(Debug)]
pub struct ConnectionSlots {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull { max: usize },
    TooManyFromAddress { max: usize },
}

impl Refusal {
    /// Stable snake_case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ServerFull { .. } => "server_full",
            Refusal::TooManyFromAddress { .. } => "too_many_from_address",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ServerFull { max } => {
                write!(f, "server full ({max} clients); try again later")
            }
            Refusal::TooManyFromAddress { max } => {
                write!(
                    f,
                    "too many connections from your address (limit {max}); close one and retry"
                )
            }
        }
    }
}

/// Held by a connection for its lifetime; frees the slot on drop.
#[derive(Debug)]
pub struct Slot {
    /// `None` once handed to a [`PeerSlot`].
    slots: Option<Arc<ConnectionSlots>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release(self.ip);
        }
    }
}

/// A connection's peer address together with its slot, if it holds one: 40 bytes,
/// where the two apart take 64 (the slot's address is the peer's). Every idle
/// connection holds one.
#[derive(Debug)]
pub struct PeerSlot {
    peer: SocketAddr,
    slots: Option<Arc<ConnectionSlots>>,
}

impl PeerSlot {
    /// `slot` must have been acquired for `peer` (or be `None` when the caller keeps it).
    pub fn new(peer: SocketAddr, slot: Option<Slot>) -> Self {
        let slots = slot.and_then(|mut slot| {
            debug_assert_eq!(slot.ip, peer.ip());
            slot.slots.take()
        });
        PeerSlot { peer, slots }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release(self.peer.ip());
        }
    }
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Take a slot for a connection from `peer`, or say why not.
    pub fn acquire(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, Refusal> {
        let ip = peer.ip();
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Acquire) >= self.max_total {
            return Err(Refusal::ServerFull {
                max: self.max_total,
            });
        }
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(Refusal::TooManyFromAddress {
                max: self.max_per_ip,
            });
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            slots: Some(self.clone()),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_options() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tune_listener(&listener).unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        drop(client);
    }

    #[test]
    fn limits_total_and_per_address_and_frees_on_drop() {
        let slots = ConnectionSlots::new(3, 2);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert_eq!(
            slots.acquire(a).unwrap_err(),
            Refusal::TooManyFromAddress { max: 2 }
        );
        let _third = slots.acquire(b).unwrap();
        assert_eq!(
            slots.acquire(b).unwrap_err(),
            Refusal::ServerFull { max: 3 }
        );
        drop(first);
        assert_eq!(slots.in_use(), 2);
        let again = slots.acquire(a).unwrap();
        // Handed to a PeerSlot, the slot is freed when that is dropped, once.
        let held = PeerSlot::new(a, Some(again));
        assert_eq!(slots.in_use(), 3);
        drop(held);
        assert_eq!(slots.in_use(), 2);
        assert!(slots.acquire(a).is_ok());
    }
}
