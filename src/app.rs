//! Assembling and running a Keygate server: `App::build` binds, opens and migrates the
//! database, loads keys, and hands back an app that reports its address before it serves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{Auth, PURGE_INTERVAL, StartupError};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
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
        let store = Store::connect(&config).await?;
        store.migrate().await?;
        let auth = Auth::new(Arc::new(config), store, clock).await?;
        Ok(App {
            listener,
            addr,
            state: Arc::new(AppState { auth }),
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

    /// Serves until `shutdown` completes, then finishes in-flight requests and closes the
    /// database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = http::router(self.state.clone());
        let purger = tokio::spawn(purge_periodically(self.state.clone()));
        let result = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        purger.abort();
        self.state.auth.store().close().await;
        result
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
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
