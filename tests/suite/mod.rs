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
mod faults;
pub(crate) mod interop;
mod keys;
mod link_binding;
mod logout;
mod mfa;
mod nodes;
pub(crate) mod oauth;
mod operations;
pub(crate) mod proxy;
mod reauth;
mod recovery;
mod redis;
mod refresh;
mod resource_server;
mod rotation_race;
mod services;
mod sessions;
pub(crate) mod smtp;
mod state_machine;
mod store;
mod tokens;
pub(crate) mod totp;
mod ui;
