//! Integration tests: a real Keygate on port 0, a fresh SQLite file per test, real HTTP.

mod helpers;

mod account;
mod cli;
mod errors;
mod families;
mod logout;
mod operations;
mod refresh;
mod sessions;
mod tokens;
