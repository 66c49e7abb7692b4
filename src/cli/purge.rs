//! `keygate purge`

use super::Failure;
use crate::config::Config;

pub(super) async fn run(config: Config) -> Result<(), Failure> {
    let auth = super::open(config).await?;
    let failed = |e: crate::store::StoreError| Failure::Runtime(format!("purge failed: {e}"));
    let before = auth.store().table_counts().await.map_err(failed)?;
    let purged = auth
        .purge()
        .await
        .map_err(|e| Failure::Runtime(format!("purge failed: {e}")))?;
    let after = auth.store().table_counts().await.map_err(failed)?;
    println!(
        "purged {} ended sessions, {} expired grace records, {} audit events",
        purged.sessions, purged.sealed_successors, purged.audit_events
    );
    println!(
        "sessions: {} -> {}; audit events: {} -> {}",
        before.sessions, after.sessions, before.audit_events, after.audit_events
    );
    auth.store().close().await;
    Ok(())
}
