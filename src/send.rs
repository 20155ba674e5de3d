//! The one-shot `send` client (being written).

/// `switchboard send` flags.
#[derive(Debug, clap::Args)]
pub struct SendArgs {}

pub async fn run(_args: SendArgs) -> anyhow::Result<()> {
    anyhow::bail!("send is not built yet")
}
