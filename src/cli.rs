//! Command-line definitions (clap): the subcommands and their flags.

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;

/// Switchboard: a real-time chat hub and socket toolkit.
///
/// One binary: `serve` runs the chat hub (reach it with netcat, telnet or
/// `switchboard chat`); `chat` is the terminal client; `echo` and `send` are the
/// classic socket services and one-shot client.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup: the size of the serve flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the chat hub.
    Serve(ServeArgs),
    /// Terminal chat client: full duplex, line editing, scrollback.
    Chat(crate::client::ChatArgs),
    /// Echo, uppercase or random-reply service over TCP and UDP.
    Echo(crate::services::EchoArgs),
    /// One-shot client: send one message over TCP or UDP, print the reply.
    Send(crate::send::SendArgs),
    /// Device simulator for the UDP door: sends telemetry, answers commands.
    Device(crate::device::DeviceArgs),
    /// Load generator for the chat doors (and other line chat servers), loopback only.
    Bench(crate::bench::BenchArgs),
}
