//! A device on the UDP door, as the tests drive it: a real UDP socket that sends the
//! door's datagrams (token, growing seq) and reads what the server sends back.

use std::net::SocketAddr;

use serde_json::{json, Value};
use tokio::net::UdpSocket;

use super::web::WAIT;

/// A simulated device's socket: sends datagrams with its token and growing seq.
pub struct Device {
    pub socket: UdpSocket,
    pub token: String,
    pub seq: u64,
}

impl Device {
    /// A device with `token`, talking to the UDP door at `udp` (in process or not).
    pub async fn new(udp: SocketAddr, token: &str) -> Device {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(udp).await.unwrap();
        Device {
            socket,
            token: token.to_owned(),
            seq: 0,
        }
    }

    /// Send `message` with the token and the next seq; returns the seq used.
    pub async fn send(&mut self, mut message: Value) -> u64 {
        self.seq += 1;
        message["token"] = json!(self.token);
        message["seq"] = json!(self.seq);
        self.socket
            .send(message.to_string().as_bytes())
            .await
            .unwrap();
        self.seq
    }

    /// The next datagram, as JSON.
    pub async fn receive(&self) -> Value {
        let mut buffer = vec![0u8; 65_536];
        let len = tokio::time::timeout(WAIT, self.socket.recv(&mut buffer))
            .await
            .expect("a datagram arrived in time")
            .unwrap();
        serde_json::from_slice(&buffer[..len]).expect("a JSON datagram")
    }

    /// Datagrams until one has `"type": kind`.
    pub async fn receive_of_type(&self, kind: &str) -> Value {
        loop {
            let value = self.receive().await;
            if value["type"] == kind {
                return value;
            }
        }
    }
}
