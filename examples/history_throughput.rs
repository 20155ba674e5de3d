//! Throughput with durable history (SQLite, group commit, fsync per batch) versus
//! `--memory`: an in-process server, a few senders bursting into #general, a few
//! receivers counting what arrives. Prints messages per second for both modes.
//!
//! ```text
//! cargo run --release --example history_throughput -- [SENDERS] [MESSAGES_EACH] [RECEIVERS]
//! ```
//! Defaults: 4 senders × 5000 messages, 8 receivers. The database lives in a temp dir
//! (so on whatever disk `$TMPDIR` is: fsync cost depends on it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use switchboard::config::{Config, Listen, ServeArgs};
use switchboard::server::Server;

const TIMEOUT: Duration = Duration::from_secs(300);

fn arg(position: usize, default: usize) -> usize {
    std::env::args()
        .nth(position)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

async fn connect(addr: SocketAddr, nick: &str) -> anyhow::Result<BufReader<TcpStream>> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await?);
    stream
        .get_mut()
        .write_all(format!("{nick}\n").as_bytes())
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            anyhow::bail!("closed before welcome");
        }
        if line.contains("*** welcome") {
            return Ok(stream);
        }
    }
}

/// Messages delivered per second (each message counted once, however many receive it).
async fn run(memory: bool, senders: usize, each: usize, receivers: usize) -> anyhow::Result<f64> {
    let data = tempfile::tempdir()?;
    let config = Config::from_args(ServeArgs {
        line: Some(Listen(Some(SocketAddr::from(([127, 0, 0, 1], 0))))),
        // Only the line door, so the run never collides with a server on the defaults.
        json: Some(Listen(None)),
        web: Some(Listen(None)),
        data: Some(data.path().to_owned()),
        memory: Some(memory),
        replay: Some(0),
        max_queue_bytes: Some(64 << 20),
        ..ServeArgs::default()
    })?;
    let server = Server::bind(config).await?;
    let addr = server
        .listening()
        .first()
        .map(|(_, addr)| *addr)
        .ok_or_else(|| anyhow::anyhow!("no line door"))?;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));

    let total = senders * each;
    let mut counting = Vec::new();
    for n in 0..receivers {
        let mut stream = connect(addr, &format!("r{n}")).await?;
        counting.push(tokio::spawn(async move {
            let mut seen = 0;
            let mut line = String::new();
            while seen < total {
                line.clear();
                if stream.read_line(&mut line).await? == 0 {
                    anyhow::bail!("receiver closed after {seen} messages");
                }
                if line.starts_with("[s") {
                    seen += 1;
                }
            }
            Ok(())
        }));
    }
    let mut streams = Vec::new();
    for n in 0..senders {
        streams.push(connect(addr, &format!("s{n}")).await?);
    }
    let start = Instant::now();
    let mut sending = Vec::new();
    for (n, stream) in streams.into_iter().enumerate() {
        sending.push(tokio::spawn(async move {
            let (mut read, mut write) = stream.into_inner().into_split();
            // Drain the sender's own copies so its outbox never fills.
            let drain = tokio::spawn(async move {
                let mut sink = vec![0; 64 * 1024];
                while tokio::io::AsyncReadExt::read(&mut read, &mut sink).await? > 0 {}
                anyhow::Ok(())
            });
            let mut burst = String::new();
            for i in 0..each {
                burst.push_str(&format!("message {i} from sender {n}\n"));
                if burst.len() > 16 * 1024 {
                    write.write_all(burst.as_bytes()).await?;
                    burst.clear();
                }
            }
            write.write_all(burst.as_bytes()).await?;
            anyhow::Ok((write, drain))
        }));
    }
    let mut keep_open = Vec::new();
    for sender in sending {
        keep_open.push(sender.await??);
    }
    for receiver in counting {
        tokio::time::timeout(TIMEOUT, receiver).await???;
    }
    let elapsed = start.elapsed();
    drop(keep_open);
    shutdown.cancel();
    serving.await??;
    Ok(total as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let senders = arg(1, 4);
    let each = arg(2, 5000);
    let receivers = arg(3, 8);
    println!(
        "{senders} senders x {each} messages, {receivers} receivers (+ the senders) in one room"
    );
    for memory in [true, false] {
        let rate = run(memory, senders, each, receivers).await?;
        let mode = if memory {
            "--memory          "
        } else {
            "SQLite (WAL, FULL)"
        };
        println!(
            "{mode}: {rate:>10.0} messages/s, {:>10.0} deliveries/s",
            rate * (receivers + senders) as f64
        );
    }
    Ok(())
}
