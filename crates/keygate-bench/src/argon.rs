//! argon2id as the server runs it, measured by the benchmark (the logins' hashing limit), and
//! a PHC string for the `flood` scenario's client secret.

use std::time::{Duration, Instant};

use crate::PASSWORD;

/// Time of one argon2id verify with the default parameters, measured here the way the server
/// computes it (the work area allocated once and reused), median of 9.
pub(crate) fn argon2_verify_time() -> Duration {
    let params = argon2::Params::new(19_456, 2, 1, None).expect("params");
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    let mut blocks = vec![argon2::Block::default(); params.block_count()];
    let salt = [7u8; 16];
    let mut out = [0u8; 32];
    let mut once = || {
        let t = Instant::now();
        argon
            .hash_password_into_with_memory(PASSWORD.as_bytes(), &salt, &mut out, &mut blocks)
            .expect("argon2");
        t.elapsed()
    };
    once();
    let mut times: Vec<Duration> = (0..9).map(|_| once()).collect();
    times.sort();
    times[4]
}

/// Verifies per second with `threads` threads verifying at once (each with its own work area)
/// and nothing else running: what the machine's memory and cores allow a hashing pool.
pub(crate) fn argon2_pool_rate(threads: usize, per_thread: u32) -> f64 {
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let params = argon2::Params::new(19_456, 2, 1, None).expect("params");
                let argon = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params.clone(),
                );
                let mut blocks = vec![argon2::Block::default(); params.block_count()];
                let mut out = [0u8; 32];
                for _ in 0..per_thread {
                    argon
                        .hash_password_into_with_memory(
                            PASSWORD.as_bytes(),
                            &[7u8; 16],
                            &mut out,
                            &mut blocks,
                        )
                        .expect("argon2");
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    f64::from(per_thread) * threads as f64 / started.elapsed().as_secs_f64()
}

/// An argon2id PHC string of `secret` with the server's default parameters.
pub(crate) fn argon2_phc(secret: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(19_456, 2, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash: argon2::PasswordHash = argon
        .hash_password_with_salt(secret.as_bytes(), b"bench salt 16 by")
        .expect("argon2");
    hash.to_string()
}
