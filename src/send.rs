//! `switchboard send`: the one-shot client. Connect over TCP (or UDP), send one message
//! or standard input, print the reply byte for byte, exit.
//!
//! When the TCP reply is over: the write side is half-closed once everything is sent
//! (so request/response servers such as HTTP answer and close), and the reply ends when
//! the server closes, or, for servers that never close (echo), once the reply has
//! started and the server has then been quiet for `--wait`. Nothing at all arriving
//! within `--timeout` after sending is an error, as are a refused connection, a name
//! that does not resolve and a connect that takes longer than `--timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::config::Seconds;

/// Largest UDP payload over IPv4 (65535 minus the IP and UDP headers).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Bytes read from the socket or standard input per call.
const CHUNK_BYTES: usize = 64 * 1024;

const SEND_AFTER_HELP: &str = "\
TCP: after everything is sent the write side is half-closed, and the reply is printed
byte for byte until the server closes, or, once the reply has started, until the server
has been quiet for --wait (for servers that never close, like echo). Exits non-zero on a
refused connection, a host that does not resolve, or no reply within --timeout.
Example: printf 'GET / HTTP/1.0\\r\\n\\r\\n' | switchboard send 127.0.0.1:8080";

/// `switchboard send` flags.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = SEND_AFTER_HELP)]
pub struct SendArgs {
    /// Server to talk to: HOST:PORT, where HOST is a name or an address ([::1]:7 for IPv6).
    #[allow(rustdoc::broken_intra_doc_links)] // the text is --help's, not a link
    #[arg(value_name = "HOST:PORT")]
    pub target: String,

    /// Message to send, words joined with spaces and sent with no newline (like the seed
    /// clients) [default: standard input, until its end].
    #[arg(value_name = "MESSAGE")]
    pub message: Vec<String>,

    /// Send one UDP datagram (at most 65507 bytes) and print the one datagram that
    /// comes back.
    #[arg(long)]
    pub udp: bool,

    /// Add a newline after MESSAGE, for line-based servers.
    #[arg(short = 'n', long)]
    pub newline: bool,

    /// Give up with an error when connecting, or waiting for any reply after sending,
    /// or a write, takes longer than this.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub timeout: Seconds,

    /// TCP: once the reply has started and everything is sent, stop when the server has
    /// sent nothing more for this long (for servers that never close, like echo);
    /// 0 waits for the server to close.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub wait: Seconds,
}

/// Run `send`: the reply goes to standard output; errors say what went wrong.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let timeout = args.timeout.0;
    let message = message_bytes(&args);
    let addrs = resolve(&args.target, timeout).await?;
    let mut stdout = tokio::io::stdout();
    if args.udp {
        let payload = match message {
            Some(message) => message,
            None => read_datagram_from_stdin().await?,
        };
        let reply = udp_exchange(&addrs, &payload, timeout).await?;
        stdout.write_all(&reply).await?;
    } else {
        let stream = tcp_connect(&addrs, timeout).await?;
        let wait = Some(args.wait.0).filter(|wait| !wait.is_zero());
        match message {
            Some(message) => tcp_exchange(stream, &message[..], &mut stdout, timeout, wait).await?,
            None => tcp_exchange(stream, tokio::io::stdin(), &mut stdout, timeout, wait).await?,
        }
    }
    stdout.flush().await?;
    Ok(())
}

/// The message from the arguments, or `None` for standard input.
fn message_bytes(args: &SendArgs) -> Option<Vec<u8>> {
    if args.message.is_empty() {
        return None;
    }
    let mut message = args.message.join(" ").into_bytes();
    if args.newline {
        message.push(b'\n');
    }
    Some(message)
}

/// Every address `target` names, in resolver order.
async fn resolve(target: &str, timeout: Duration) -> anyhow::Result<Vec<SocketAddr>> {
    let Some((host, port)) = target.rsplit_once(':') else {
        bail!("{target:?} has no port; write HOST:PORT, e.g. 127.0.0.1:7777");
    };
    if port.parse::<u16>().is_err() {
        bail!("{port:?} in {target:?} is not a port number (0-65535)");
    }
    if host.is_empty() {
        bail!("{target:?} has no host; write HOST:PORT, e.g. 127.0.0.1:{port}");
    }
    let lookup = tokio::net::lookup_host(target);
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
        Err(_) => bail!(
            "cannot resolve host {host:?}: timed out after {}",
            show_duration(timeout)
        ),
        Ok(Err(error)) => bail!("cannot resolve host {host:?}: {error}"),
        Ok(Ok(addrs)) => addrs.collect(),
    };
    if addrs.is_empty() {
        bail!("cannot resolve host {host:?}: no addresses");
    }
    Ok(addrs)
}

fn show_duration(duration: Duration) -> String {
    let seconds = format!("{:.3}", duration.as_secs_f64());
    format!("{}s", seconds.trim_end_matches('0').trim_end_matches('.'))
}

/// Connect to the first address that accepts, all within `timeout`.
async fn tcp_connect(addrs: &[SocketAddr], timeout: Duration) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) => last_error = Some((*addr, error)),
            Err(_) => bail!(
                "timed out after {} connecting to {addr}",
                show_duration(timeout)
            ),
        }
    }
    match last_error {
        Some((addr, error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            bail!("connection refused by {addr} (is a server listening there?)")
        }
        Some((addr, error)) => Err(anyhow!(error).context(format!("cannot connect to {addr}"))),
        None => bail!("no address to connect to"),
    }
}

/// Send `input` over `stream`, half-close, and copy the reply to `output` until the
/// server closes or the reply-quiet rule ends it.
pub async fn tcp_exchange<I, O>(
    stream: TcpStream,
    input: I,
    output: &mut O,
    timeout: Duration,
    wait: Option<Duration>,
) -> anyhow::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "the server".to_owned(), |addr| addr.to_string());
    let (mut reader, writer) = stream.into_split();
    let sending = send_all(input, writer, timeout);
    tokio::pin!(sending);
    let mut sent = false;
    let mut send_error: Option<anyhow::Error> = None;
    let mut received_any = false;
    // While sending, only the sender's own write timeout applies.
    let mut deadline: Option<Instant> = None;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        tokio::select! {
            result = &mut sending, if !sent => {
                sent = true;
                if let Err(error) = result {
                    // The server may have answered and closed early; read what it sent.
                    send_error = Some(error);
                }
                deadline = Some(Instant::now() + quiet_limit(received_any, timeout, wait));
            }
            read = reader.read(&mut buffer) => match read {
                Ok(0) => break,
                Ok(read) => {
                    output.write_all(&buffer[..read]).await.context("cannot write the reply")?;
                    received_any = true;
                    if sent {
                        deadline = Some(Instant::now() + quiet_limit(true, timeout, wait));
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    bail!("connection reset by {peer}")
                }
                Err(error) => return Err(anyhow!(error).context(format!("cannot read from {peer}"))),
            },
            _ = sleep_until_or_never(deadline) => {
                if received_any && wait.is_some() {
                    break;
                }
                if let Some(error) = send_error {
                    return Err(error);
                }
                if received_any {
                    bail!("timed out: {peer} sent nothing more for {} and did not close", show_duration(timeout));
                }
                bail!("timed out: no reply from {peer} within {}", show_duration(timeout));
            }
        }
    }
    output.flush().await?;
    match send_error {
        Some(error) if !received_any => Err(error),
        _ => Ok(()),
    }
}

/// After sending: how long the server may stay quiet before the exchange ends.
fn quiet_limit(received_any: bool, timeout: Duration, wait: Option<Duration>) -> Duration {
    match wait {
        Some(wait) if received_any => wait,
        _ => timeout,
    }
}

async fn send_all<I: AsyncRead + Unpin>(
    mut input: I,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = input
            .read(&mut buffer)
            .await
            .context("cannot read standard input")?;
        if read == 0 {
            break;
        }
        match tokio::time::timeout(timeout, writer.write_all(&buffer[..read])).await {
            Err(_) => bail!(
                "timed out: the server took no input for {}",
                show_duration(timeout)
            ),
            Ok(Err(error)) => return Err(anyhow!(error).context("cannot send")),
            Ok(Ok(())) => {}
        }
    }
    // Half-close: tells request/response servers the request is complete.
    writer.shutdown().await.context("cannot finish sending")?;
    // Dropping an owned write half shuts it down again; forget it so it is not
    // reported twice, but keep the socket open for reading.
    writer.forget();
    Ok(())
}

async fn read_datagram_from_stdin() -> anyhow::Result<Vec<u8>> {
    let mut payload = Vec::new();
    tokio::io::stdin()
        .take(MAX_UDP_PAYLOAD as u64 + 1)
        .read_to_end(&mut payload)
        .await
        .context("cannot read standard input")?;
    if payload.len() > MAX_UDP_PAYLOAD {
        bail!("standard input is over {MAX_UDP_PAYLOAD} bytes, the most one UDP datagram holds");
    }
    Ok(payload)
}

/// Why one UDP exchange failed: a refusal lets the next resolved address be tried.
enum UdpFailure {
    Refused(SocketAddr),
    Other(anyhow::Error),
}

/// Send one datagram and wait for one back, trying each resolved address in turn
/// while they refuse (a name like `localhost` may list `::1` first); all within
/// `timeout`.
async fn udp_exchange(
    addrs: &[SocketAddr],
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    if payload.len() > MAX_UDP_PAYLOAD {
        bail!("the message is over {MAX_UDP_PAYLOAD} bytes, the most one UDP datagram holds");
    }
    let deadline = Instant::now() + timeout;
    let mut refused = Vec::new();
    for addr in addrs {
        match tokio::time::timeout_at(deadline, udp_exchange_with(*addr, payload)).await {
            Err(_) => bail!(
                "timed out: no reply from UDP {addr} within {}",
                show_duration(timeout)
            ),
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(UdpFailure::Refused(addr))) => refused.push(addr.to_string()),
            Ok(Err(UdpFailure::Other(error))) => return Err(error),
        }
    }
    bail!(
        "connection refused: nothing listening on UDP {}",
        refused.join(" or ")
    )
}

async fn udp_exchange_with(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, UdpFailure> {
    let other = |context: String| {
        move |error: std::io::Error| UdpFailure::Other(anyhow!(error).context(context))
    };
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(other("cannot open a UDP socket".to_owned()))?;
    // Connected: only the server's replies are accepted, and "port unreachable"
    // comes back as a refused error.
    socket
        .connect(addr)
        .await
        .map_err(other(format!("cannot reach {addr}")))?;
    let classify = |context: String| {
        move |error: std::io::Error| {
            if error.kind() == std::io::ErrorKind::ConnectionRefused {
                UdpFailure::Refused(addr)
            } else {
                UdpFailure::Other(anyhow!(error).context(context))
            }
        }
    };
    socket
        .send(payload)
        .await
        .map_err(classify(format!("cannot send to {addr}")))?;
    let mut buffer = vec![0u8; 65_536];
    let length = socket
        .recv(&mut buffer)
        .await
        .map_err(classify(format!("cannot receive from {addr}")))?;
    buffer.truncate(length);
    Ok(buffer)
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(show_duration(Duration::from_secs(5)), "5s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_duration(Duration::from_millis(250)), "0.25s");
    }

    #[tokio::test]
    async fn bad_targets_are_explained() {
        let timeout = Duration::from_secs(5);
        let no_port = resolve("localhost", timeout).await.unwrap_err();
        assert!(no_port.to_string().contains("no port"), "{no_port}");
        let bad_port = resolve("localhost:http", timeout).await.unwrap_err();
        assert!(bad_port.to_string().contains("not a port"), "{bad_port}");
        let no_host = resolve(":80", timeout).await.unwrap_err();
        assert!(no_host.to_string().contains("no host"), "{no_host}");
    }
}
