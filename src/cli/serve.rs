//! `keygate serve`

use super::{DatabaseArgs, Failure};
use crate::App;
use crate::config::Config;

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(flatten)]
    database: DatabaseArgs,
}

impl ServeArgs {
    pub(super) fn flags(&self) -> Vec<(String, String)> {
        let mut flags = self.database.flags();
        if let Some(listen) = &self.listen {
            flags.push(("listen".to_owned(), listen.clone()));
        }
        flags
    }
}

pub(super) async fn run(config: Config) -> Result<(), Failure> {
    let app = App::build(config)
        .await
        .map_err(|e| Failure::Runtime(format!("{e}")))?;
    if app.state().auth.config().signing.stores_keys_unencrypted() {
        tracing::warn!("{}", crate::config::UNENCRYPTED_KEYS_WARNING);
    }
    tracing::info!(address = %app.local_addr(), "keygate listening");
    app.run()
        .await
        .map_err(|e| Failure::Runtime(format!("server failed: {e}")))
}
