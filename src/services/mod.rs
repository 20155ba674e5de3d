//! Echo, uppercase and random-reply services (being written).

/// `switchboard echo` flags.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {}

pub async fn run(_args: EchoArgs) -> anyhow::Result<()> {
    anyhow::bail!("the echo services are not built yet")
}
