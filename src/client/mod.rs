//! The `chat` terminal client (being written).

/// `switchboard chat` flags.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Server address [default: 127.0.0.1:9999].
    pub server: Option<String>,
}

pub async fn run(_args: ChatArgs) -> anyhow::Result<()> {
    anyhow::bail!("the chat client is not built yet")
}
