//! Keygate: a self-hostable authentication server.
//!
//! It logs users in, issues short-lived JWT access tokens and long-lived rotating refresh
//! tokens, keeps sessions per device, detects stolen refresh tokens and publishes its keys as
//! JWKS. This crate is both the `keygate` binary and a library: [`App::build`] starts the same
//! server inside any tokio program, and [`App::router`] mounts it in an existing axum app.
//!
//! Layers, top to bottom (data flows one way): [`http`] and [`cli`] → [`auth`] (use cases) →
//! [`store`], [`token`], [`password`]. See `docs/ARCHITECTURE.md`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
mod conns;
pub mod domain;
pub mod envelope;
pub mod http;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod password;
pub mod store;
#[cfg(test)]
mod testing;
pub mod token;

pub use app::App;
pub use config::Config;
