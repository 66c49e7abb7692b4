//! `keygate migrate`

use super::Failure;
use crate::config::Config;
use crate::store::Store;

pub(super) async fn run(config: &Config) -> Result<(), Failure> {
    let store = Store::connect(config)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot open the database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::Runtime(format!("{e}: {}", crate::auth::error_chain(&e))))?;
    store.close().await;
    println!("migrations applied");
    Ok(())
}
