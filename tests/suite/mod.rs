//! The integration suite, run once per database backend by the `sqlite` and `postgres` test
//! targets: a real Keygate on port 0 with a fresh database per test, speaking real HTTP.

pub(crate) mod helpers;

mod abuse;
mod account;
pub(crate) mod admin;
mod cookies;
mod cors;
mod errors;
mod families;
pub(crate) mod interop;
mod keys;
mod logout;
mod nodes;
mod oauth;
mod operations;
pub(crate) mod proxy;
mod redis;
mod refresh;
mod resource_server;
mod services;
mod sessions;
mod store;
mod tokens;
mod ui;
