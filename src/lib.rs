//! Switchboard: a real-time chat hub and socket toolkit.
//!
//! One hub, several front doors: plain text lines over TCP (netcat, telnet, the seed
//! clients), JSON lines for programs and devices, IRC for existing IRC clients, and
//! WebSocket for the built-in web page, each with TLS, all leading to the same rooms.
//!
//! # Layout
//!
//! - [`chat`]: the shared vocabulary (messages, requests, replies, events, error
//!   codes, close reasons); a leaf every other module may import.
//! - [`hub`]: the chat core. One task owns rooms, nicknames and clients; it receives
//!   [`hub::Command`]s and fans [`chat::Event`]s out to bounded per-client outboxes
//!   (the fan-out engine in `hub/fanout.rs`). It knows events, not bytes.
//! - [`door`]: front doors. Each is a pure framing and a pure protocol run by the one
//!   session driver ([`door::session`]) over the shared connection pump
//!   (`door::conn`); `door::listen` is the door list and the one accept path (slot,
//!   TLS handshake, door). [`door::line`] is the text protocol, [`door::json`] the JSON
//!   protocol (over TCP, and over WebSocket in `door::web`, which also serves the
//!   chat page, `/healthz` and `/metrics`), [`door::irc`] the IRC protocol, and
//!   [`door::udp`] the devices' datagrams (not a stream: its own receive task).
//! - [`outbox`]: a connection's bounded output queue, between the hub (or a service)
//!   that fills it and the connection pump that drains it.
//! - `tls`: PEM certificate loading (rustls, ring provider).
//! - `metrics`: per-server Prometheus metrics.
//! - [`store`]: durable history: a SQLite file written by one thread in batched
//!   transactions; the hub delivers a message only once it is committed.
//! - `accounts`: registered names, Argon2id password hashes, sign-in tokens, the
//!   offline mailbox and failed-login limits; its work runs on blocking threads.
//! - [`text`]: nickname, room-name and message-text rules, shared by every door.
//! - [`device`]: `switchboard device`, a device simulator for the UDP door.
//! - [`config`]: settings from defaults, file, environment and flags.
//! - [`server`]: binds listeners and runs hub and doors inside one shutdown scope.
//! - [`client`]: the `chat` terminal client.
//! - [`services`]: echo, uppercase and random-reply services over TCP and UDP.
//! - [`send`]: the one-shot `send` client.
//! - [`bench`](mod@bench): the `bench` load generator (fan-out, idle memory, connect rate).
//! - [`memory`]: the allocator (jemalloc) and handing freed memory back to the system.
//! - [`cli`]: command-line definitions.
//!
//! What is `pub` is what the binary, the benches, the fuzz targets and the
//! integration tests use: the server and its config, the hub's handle and event
//! types, each door's pure framing and protocol, and the subcommands' entry points.
//! The rest (accounts, metrics, TLS, the connection pump, the accept path, the web
//! door, the history writer, the hub's internals) is `pub(crate)`, so nothing
//! outside can come to depend on it.
//!
//! `docs/ARCHITECTURE.md` tells the concurrency story: who owns what, which queues
//! exist and how big they are, how shutdown propagates.

pub(crate) mod accounts;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod config;
pub mod device;
pub mod door;
pub mod hub;
pub mod memory;
pub(crate) mod metrics;
pub mod outbox;
pub mod send;
pub mod server;
pub mod services;
pub mod store;
pub mod text;
pub(crate) mod tls;
