//! The `flood` scenario's attacker: wrong client secrets for a client whose secret is stored
//! as argon2, sent at a fixed pace from another address while logins are measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Method;
use keygate_bench::{Body, Conn};

/// A client with an argon2 secret (as an operator may configure one), the target of the
/// `flood` scenario's wrong secrets.
pub(crate) const FLOOD_CLIENT: &str = "bench-argon2";
pub(crate) const FLOOD_SECRET: &str = "an operator-chosen client secret";
/// The flood: this many connections, each sending a wrong secret every interval (66 is
/// enough to fill the hashing queue of a server that verifies each with argon2).
const FLOOD_CONNECTIONS: usize = 66;
const FLOOD_INTERVAL: Duration = Duration::from_millis(50);

/// Wrong client secrets for [`FLOOD_CLIENT`] from `ip`, [`FLOOD_CONNECTIONS`] connections
/// each sending one every [`FLOOD_INTERVAL`] until `stop`; returns the answers by status.
pub(crate) async fn flood(
    addr: String,
    ip: &'static str,
    stop: Arc<AtomicBool>,
) -> std::collections::BTreeMap<u16, u64> {
    let mut tasks = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let (addr, stop) = (addr.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            use base64::Engine as _;
            let mut seen = std::collections::BTreeMap::new();
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{FLOOD_CLIENT}:not the secret at all"));
            let headers = [
                ("authorization", format!("Basic {basic}")),
                ("x-forwarded-for", ip.to_owned()),
            ];
            let mut tick = tokio::time::interval(FLOOD_INTERVAL);
            let mut conn = Conn::open(&addr).await.ok();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let Some(c) = conn.as_mut() else {
                    conn = Conn::open(&addr).await.ok();
                    continue;
                };
                let status = match c
                    .call_with(
                        Method::POST,
                        "/oauth/introspect",
                        &headers,
                        Body::Form("token=x".to_owned()),
                    )
                    .await
                {
                    Ok((status, _, _)) => status,
                    Err(_) => {
                        conn = None;
                        0
                    }
                };
                *seen.entry(status).or_insert(0u64) += 1;
            }
            seen
        }));
    }
    let mut all = std::collections::BTreeMap::new();
    for t in tasks {
        for (status, n) in t.await.unwrap_or_default() {
            *all.entry(status).or_insert(0) += n;
        }
    }
    all
}
