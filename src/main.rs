//! The `switchboard` binary: parse the command line, set up logging, run the chosen
//! command from the library, and turn errors into a message and an exit code.

use clap::Parser;
use switchboard::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: switchboard::memory::Allocator = switchboard::memory::Allocator {};

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: escape codes in a log file or a
    // journal are noise, and formatting them costs on every connection's log line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // The load generator pinned to one CPU (as docs/benchmarks.md runs it) gains from a
    // single-threaded runtime: no work-stealing machinery between a worker and the
    // thread blocked on the main future. +5 to +9 % deliveries/s at window 16 in three
    // alternating pairs, and faster connects in five of six.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1);
    let runtime = if one_cpu && matches!(cli.command, Command::Bench(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let config = switchboard::config::Config::from_args(args)?;
                switchboard::server::serve(config).await
            }
            Command::Chat(args) => switchboard::client::run(args).await,
            Command::Echo(args) => switchboard::services::run(args).await,
            Command::Send(args) => switchboard::send::run(args).await,
            Command::Bench(args) => switchboard::bench::run(args).await,
            Command::Device(args) => switchboard::device::run(args).await,
        }
    });
    // Do not wait for blocked stdin readers and the like.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
