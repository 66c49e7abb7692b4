//! Assembling and running a Keygate server: `App::build` binds, opens and migrates the
//! database, loads keys, and hands back an app that reports its address before it serves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::auth::{Auth, PURGE_INTERVAL, StartupError};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::conns::Connections;
use crate::http::{self, AppState};
use crate::store::Store;

/// A built server, bound but not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

impl App {
    /// Builds the server on the system clock.
    pub async fn build(config: Config) -> Result<App, StartupError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds the server with an injected clock (tests cross time windows with it).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<App, StartupError> {
        // Bind first: a taken port fails before any other work, and port 0 is resolved here.
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
        crate::metrics::install();
        let store = Store::connect(&config).await?;
        store.migrate().await?;
        let auth = Auth::new(Arc::new(config), store, clock).await?;
        Ok(App {
            listener,
            addr,
            state: Arc::new(AppState::new(auth)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (use cases, store), for embedding applications and tests.
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// The router, for mounting Keygate inside another axum application.
    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: `/readyz` answers 503
    /// from that moment, the listener closes, in-flight requests finish (for at most
    /// `shutdown_timeout`; keep-alive connections are closed after their current request),
    /// the background tasks stop, queued writes commit and the database pools close.
    ///
    /// Connections are served by hyper directly rather than `axum::serve` so that slow clients
    /// are bounded: request headers must arrive within `header_read_timeout` (which also
    /// closes an idle keep-alive connection), a connection with no request in flight for
    /// `idle_timeout` is closed (HTTP/2 with a GOAWAY), and connections are admitted per
    /// client address and globally (`max_connections_per_ip`, `max_connections`: a newcomer
    /// replaces the oldest connection without a request, else the one idle the longest).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = http::router(self.state.clone());
        let mut background = vec![
            tokio::spawn(purge_periodically(self.state.clone())),
            tokio::spawn(follow_keys_periodically(self.state.clone())),
            tokio::spawn(metrics_upkeep()),
        ];
        if self.state.auth.mail_health().is_some() {
            background.push(tokio::spawn(send_mail(self.state.clone())));
        }
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.auth.config().header_read_timeout)
            .max_buf_size(64 * 1024)
            // Above the 100 headers the router accepts, so that the router's 431 (in the
            // contract's format) answers, not hyper's bare one.
            .max_headers(1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_header_list_size(64 * 1024);
        // How many connection tasks are running: shutdown waits for it to reach zero.
        let (live, mut live_watch) = tokio::sync::watch::channel(0usize);
        // Turns once the accept loop has stopped: every connection then finishes what is in
        // flight and closes.
        let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
        let config = self.state.auth.config();
        let idle_timeout = config.idle_timeout;
        let connections = Arc::new(Connections::new(
            config.max_connections,
            config.max_connections_per_ip,
            config.rate_limits.ipv6_prefix,
            config.trusted_proxies.clone(),
        ));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => {
                    self.state.begin_draining();
                    break;
                }
            };
            let (admitted, shed) = match connections.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(refused) => {
                    tracing::debug!(?refused, "connection closed at once");
                    continue;
                }
            };
            let activity = admitted.activity().clone();
            let admitted = Arc::new(admitted);
            let _ = stream.set_nodelay(true);
            let service = {
                let (router, admitted) = (router.clone(), admitted.clone());
                tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // In flight until its response is ready: this connection is not idle.
                    let busy = admitted.busy();
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let answer = router.clone().oneshot(req.map(axum::body::Body::new));
                    async move {
                        let response = answer.await;
                        drop(busy);
                        response
                    }
                })
            };
            let conn = builder
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let mut server_closing = closing_rx.clone();
            let counted = Counted::new(&live);
            tokio::spawn(async move {
                let mut conn = std::pin::pin!(conn);
                let mut shed = std::pin::pin!(shed);
                let mut closing = false;
                loop {
                    tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            break;
                        }
                        // Shed for a newcomer: dropping the connection closes it.
                        Ok(()) = &mut shed, if !closing => {
                            tracing::debug!("connection shed for a newcomer");
                            break;
                        }
                        // Shutdown, or idle too long: finish what is in flight, then close
                        // (HTTP/2 says GOAWAY; an idle HTTP/1.1 connection closes at once).
                        _ = server_closing.wait_for(|c| *c), if !closing => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        () = idle_expired(&activity, idle_timeout), if !closing => {
                            tracing::debug!("idle connection closed");
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
                drop(admitted);
                drop(counted);
            });
        }
        drop(self.listener);
        closing_tx.send_replace(true);
        let timeout = self.state.auth.config().shutdown_timeout;
        if tokio::time::timeout(timeout, live_watch.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing anyway");
        }
        for task in background {
            task.abort();
            let _ = task.await;
        }
        // Writes queued for the group commit (by the last requests) commit before the pools
        // close.
        self.state.auth.store().close().await;
        tracing::info!("shut down");
        Ok(())
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// One running connection task, counted in `live` until it is dropped (however the task ends).
struct Counted(tokio::sync::watch::Sender<usize>);

impl Counted {
    fn new(live: &tokio::sync::watch::Sender<usize>) -> Counted {
        live.send_modify(|n| *n += 1);
        Counted(live.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Resolves once the connection has had no request in flight for `timeout`.
async fn idle_expired(activity: &crate::conns::Activity, timeout: Duration) {
    loop {
        let wait = match activity.idle_for() {
            Some(idle) if idle >= timeout => return,
            Some(idle) => timeout - idle,
            None => timeout,
        };
        tokio::time::sleep(wait).await;
    }
}

/// Looks at the database's signing keys every [`crate::auth::KEY_POLL`] (transitions,
/// automatic rotation, reloading the key ring); failures are logged and retried.
async fn follow_keys_periodically(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(crate::auth::KEY_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.auth.follow_keys().await {
            tracing::warn!(error = %e, "could not follow the signing keys; will retry");
        }
    }
}

/// The outbox's sender: delivers due mail whenever this node queues some, and every
/// [`crate::auth::OUTBOX_POLL`] for mail queued by other nodes and retries. Failures are
/// logged and retried.
async fn send_mail(state: Arc<AppState>) {
    loop {
        match state.auth.deliver_due_mail().await {
            // Maybe more is due: look again at once.
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the outbox; will retry"),
        }
        state.auth.mail_queued(crate::auth::OUTBOX_POLL).await;
    }
}

/// Folds the histograms' raw samples into their buckets every second. The recorder keeps
/// each sample (8 bytes) until then, so memory grows with the request rate times this
/// interval: at 100 000 requests a second, under 1 MiB.
async fn metrics_upkeep() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::metrics::upkeep();
    }
}

/// Purges every [`PURGE_INTERVAL`], starting at once; failures are logged and retried later.
async fn purge_periodically(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.auth.purge().await {
            tracing::warn!(error = %e, "purge failed; will retry");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
