//! The UDP side of the services: one datagram in, one datagram out, from a single
//! socket. No per-client state, so no client can hold another up.

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::mode::Responder;

/// Largest UDP payload over IPv6 (65535 minus the 8-byte UDP header); IPv4 allows 65507.
/// The receive buffer is one byte bigger so an oversized datagram is noticed.
const MAX_DATAGRAM_BYTES: usize = 65_527;

/// Answer datagrams until `shutdown`.
pub async fn serve(socket: UdpSocket, responder: Responder, shutdown: CancellationToken) {
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    loop {
        let (length, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // Linux reports an earlier send's ICMP error here; it concerns one
                    // peer, never the socket.
                    tracing::debug!(%error, "udp receive failed");
                    continue;
                }
            },
        };
        let message = Bytes::copy_from_slice(&buffer[..length]);
        let mut reply = responder.answer(&message);
        if reply.len() > MAX_DATAGRAM_BYTES {
            // Uppercasing can grow text (e.g. some Greek letters triple in bytes).
            reply = Bytes::from_static(b"error: the reply would not fit in one datagram");
        }
        tracing::debug!(%peer, bytes_in = length, bytes_out = reply.len(), "udp datagram answered");
        if let Err(error) = socket.send_to(&reply, peer).await {
            tracing::debug!(%peer, %error, "udp reply not sent");
        }
    }
}
