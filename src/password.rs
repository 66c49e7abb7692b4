//! Password hashing with argon2id, off the async runtime and bounded in concurrency.
//!
//! Every hash and verify runs on a dedicated pool of `password.max_concurrent_hashes` threads
//! (never on the async runtime), admitted by a semaphore with a bounded queue, carrying the
//! caller's tracing span. Unknown accounts are
//! verified against a dummy hash made at start-up with the same parameters, so a wrong email
//! costs the same time as a wrong password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::config::PasswordConfig;
use crate::domain::Password;

/// Failures of the hasher itself (never "wrong password", which is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The parameters were refused by argon2.
    #[error("invalid argon2 parameters")]
    Params,
    /// Hashing failed, or a stored hash could not be parsed.
    #[error("password hashing failed")]
    Hash,
    /// The blocking task panicked or was cancelled.
    #[error("password hashing task failed")]
    Task,
    /// Too many hashes are already waiting: answer 503 now rather than queue without bound.
    #[error("password hashing queue full")]
    Busy,
}

/// Hashes and verifies passwords. Cheap to share: clone the `Arc`.
pub struct Hasher {
    argon: Argon2<'static>,
    pool: std::sync::mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    dummy_hash: String,
    /// Lets a unit test hold a password check after its hash, before its answer.
    #[cfg(test)]
    pub(crate) hold: crate::testing::HoldPoint,
}

/// Counts a request waiting for a hashing permit; uncounts it however the wait ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", self.argon.params())
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// Builds the hasher and its dummy hash. Takes one hash's time: call it off the runtime
    /// (as [`Hasher::build`] does) when the runtime is serving.
    pub fn new(cfg: &PasswordConfig) -> Result<Hasher, PasswordError> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|_| PasswordError::Params)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        // The dummy's password is random and thrown away: nothing can match it. It is made on
        // a hashing thread, like every other hash, so its work area is the one reused later.
        let mut junk = [0u8; 32];
        aws_lc_rs::rand::fill(&mut junk).map_err(|_| PasswordError::Hash)?;
        let pool = start_pool(cfg.max_concurrent_hashes);
        let (tx, rx) = std::sync::mpsc::channel();
        let dummy_argon = argon.clone();
        pool.send(Box::new(move || {
            let _ = tx.send(hash_in_place(&dummy_argon, &junk));
        }))
        .map_err(|_| PasswordError::Task)?;
        let dummy_hash = rx.recv().map_err(|_| PasswordError::Task)??;
        Ok(Hasher {
            argon,
            pool,
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_hashes)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: cfg.max_queued_hashes,
            dummy_hash,
            #[cfg(test)]
            hold: Default::default(),
        })
    }

    /// [`Hasher::new`] on the blocking pool.
    pub async fn build(cfg: &PasswordConfig) -> Result<Hasher, PasswordError> {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Hasher::new(&cfg))
            .await
            .map_err(|_| PasswordError::Task)?
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        let argon = self.argon.clone();
        let password = password.clone();
        self.run(move || timed(|| hash_in_place(&argon, password.expose().as_bytes())))
            .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no account,
    /// so both cases take the same time. `Ok(false)` for a wrong password. `stored` may be an
    /// argon2 PHC string or an imported bcrypt hash (`$2a$`, `$2b$`, `$2y$`); bcrypt, like the
    /// libraries that wrote those hashes, reads only the first 72 bytes of the password.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let argon = self.argon.clone();
        let password = password.clone();
        let exists = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy_hash).to_owned();
        let matched = self
            .run(move || {
                timed(|| {
                    if is_bcrypt(&hash) {
                        return Ok(
                            bcrypt::verify(password.expose().as_bytes(), &hash).unwrap_or(false)
                        );
                    }
                    verify_in_place(&argon, password.expose().as_bytes(), &hash)
                })
            })
            .await?;
        #[cfg(test)]
        self.hold.pass().await;
        Ok(exists && matched)
    }

    /// Requests waiting for a hashing thread.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether `stored` should be replaced by a hash with the current parameters: any bcrypt
    /// hash, any argon2 variant other than argon2id v19, or other costs than configured.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(hash) = argon2::PasswordHash::new(stored) else {
            return true;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return true;
        };
        let current = self.argon.params();
        hash.algorithm.as_str() != "argon2id"
            || hash.version != Some(Version::V0x13.into())
            || params.m_cost() != current.m_cost()
            || params.t_cost() != current.t_cost()
            || params.p_cost() != current.p_cost()
    }

    /// Runs other CPU-heavy password work (the strength check) on the hashing threads, under
    /// the same limits as a hash: it never blocks the runtime, and it allocates in the memory
    /// those few threads keep instead of in one more thread's.
    pub async fn run_cpu<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        self.run(move || Ok(work())).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(PasswordError::Busy);
                }
                let _waiting = Waiting(self.waiting.clone());
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PasswordError::Task)?
            }
        };
        let span = tracing::Span::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool
            .send(Box::new(move || {
                let _ = tx.send(span.in_scope(work));
            }))
            .map_err(|_| PasswordError::Task)?;
        rx.instrument(tracing::Span::current())
            .await
            .map_err(|_| PasswordError::Task)?
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs one hash or verification, recording its time in `keygate_password_hash_seconds`.
fn timed<T>(work: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = work();
    crate::metrics::password_hash(started.elapsed());
    result
}

thread_local! {
    /// Each hashing thread's argon2 work area, allocated once at the configured size.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `count` argon2 blocks: the thread's own work area when the configured size
/// holds them (grown once), else a temporary one (only imported hashes with bigger costs).
fn with_blocks<R>(count: usize, configured: usize, f: impl FnOnce(&mut [argon2::Block]) -> R) -> R {
    if count > configured {
        let mut tmp = vec![argon2::Block::default(); count];
        return f(&mut tmp);
    }
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        if blocks.len() < count {
            blocks.resize(count, argon2::Block::default());
        }
        f(&mut blocks[..count])
    })
}

/// argon2id of `password` with a fresh 16-byte salt, in this thread's work area.
fn hash_in_place(argon: &Argon2<'static>, password: &[u8]) -> Result<String, PasswordError> {
    use argon2::password_hash::phc::{Output, ParamsString, Salt};
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| PasswordError::Hash)?;
    let params = argon.params().clone();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let count = params.block_count();
    with_blocks(count, count, |blocks| {
        argon.hash_password_into_with_memory(password, &salt, &mut out, blocks)
    })
    .map_err(|_| PasswordError::Hash)?;
    let phc = argon2::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|_| PasswordError::Params)?,
        salt: Some(Salt::new(&salt).map_err(|_| PasswordError::Hash)?),
        hash: Some(Output::new(&out).map_err(|_| PasswordError::Hash)?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against an argon2 PHC string (its own algorithm, version and costs), in
/// this thread's work area; the comparison is constant-time.
fn verify_in_place(
    argon: &Argon2<'static>,
    password: &[u8],
    phc: &str,
) -> Result<bool, PasswordError> {
    let hash = argon2::PasswordHash::new(phc).map_err(|_| PasswordError::Hash)?;
    let params = Params::try_from(&hash).map_err(|_| PasswordError::Hash)?;
    let algorithm = Algorithm::new(hash.algorithm.as_str()).map_err(|_| PasswordError::Hash)?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|_| PasswordError::Hash)?,
        None => Version::V0x10,
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err(PasswordError::Hash);
    };
    let mut out = vec![0u8; expected.len()];
    let ctx = Argon2::new(algorithm, version, params.clone());
    let configured = argon.params().block_count();
    with_blocks(params.block_count(), configured, |blocks| {
        ctx.hash_password_into_with_memory(password, salt.as_ref(), &mut out, blocks)
    })
    .map_err(|_| PasswordError::Hash)?;
    Ok(out.ct_eq(expected.as_bytes()).into())
}

/// The threads that hash: exactly `max_concurrent_hashes` of them, for the server's lifetime.
/// Dedicated rather than tokio's blocking pool so that the 19 MiB argon2 works areas are
/// allocated by the same few threads again and again (the allocator keeps and reuses them)
/// instead of by whichever of up to 512 blocking threads is free — which multiplied the peak
/// memory. They end when the hasher is dropped.
fn start_pool(threads: usize) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..threads {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("keygate-hash-{i}"))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking job (a bug in a hashing or policy library) must not
                        // take a hashing thread with it: its caller gets an error when the
                        // job's reply is dropped, and the thread serves the next job.
                        Ok(job) => {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                tracing::error!("a hashing job panicked");
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a hashing thread");
        }
    }
    tx
}

/// Whether `hash` is a bcrypt hash of a variant Keygate accepts on import.
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// The largest argon2 memory cost (KiB) an imported hash may ask for: 256 MiB, thirteen times
/// the default. Above it one login could take a hashing thread's share of memory many times
/// over.
pub const IMPORT_MAX_ARGON2_M_KIB: u32 = 256 * 1024;
/// The largest argon2 time cost (passes) an imported hash may ask for.
pub const IMPORT_MAX_ARGON2_T: u32 = 16;
/// The largest argon2 parallelism an imported hash may ask for (it runs on one thread here).
pub const IMPORT_MAX_ARGON2_P: u32 = 16;
/// The largest bcrypt cost an imported hash may have: 2^14 rounds, about a second per login.
pub const IMPORT_MAX_BCRYPT_COST: u32 = 14;

/// Whether an imported hash is one Keygate can verify at a bounded price: a well-formed bcrypt
/// hash (`$2a$`/`$2b$`/`$2y$`) of cost at most [`IMPORT_MAX_BCRYPT_COST`], or an argon2 PHC
/// string (argon2id, argon2i or argon2d) within the `IMPORT_MAX_ARGON2_*` costs, so that one
/// imported row cannot become a memory or CPU bomb on every login attempt for it.
/// The error is the message for the import report.
pub fn check_importable_hash(hash: &str) -> Result<(), String> {
    const UNKNOWN: &str = "password_hash is not a bcrypt ($2a$, $2b$, $2y$) or argon2 PHC hash";
    if is_bcrypt(hash) {
        let parts = hash
            .parse::<bcrypt::HashParts>()
            .map_err(|_| UNKNOWN.to_owned())?;
        if parts.get_cost() > IMPORT_MAX_BCRYPT_COST {
            return Err(format!(
                "password_hash has bcrypt cost {}; at most {IMPORT_MAX_BCRYPT_COST} is accepted",
                parts.get_cost()
            ));
        }
        return Ok(());
    }
    let parsed = argon2::PasswordHash::new(hash).map_err(|_| UNKNOWN.to_owned())?;
    if !matches!(
        parsed.algorithm.as_str(),
        "argon2id" | "argon2i" | "argon2d"
    ) || parsed.salt.is_none()
        || parsed.hash.is_none()
    {
        return Err(UNKNOWN.to_owned());
    }
    let params = Params::try_from(&parsed).map_err(|_| UNKNOWN.to_owned())?;
    if params.m_cost() > IMPORT_MAX_ARGON2_M_KIB {
        return Err(format!(
            "password_hash has argon2 memory cost m={} KiB; at most {IMPORT_MAX_ARGON2_M_KIB} KiB (256 MiB) is accepted",
            params.m_cost()
        ));
    }
    if params.t_cost() > IMPORT_MAX_ARGON2_T {
        return Err(format!(
            "password_hash has argon2 time cost t={}; at most {IMPORT_MAX_ARGON2_T} is accepted",
            params.t_cost()
        ));
    }
    if params.p_cost() > IMPORT_MAX_ARGON2_P {
        return Err(format!(
            "password_hash has argon2 parallelism p={}; at most {IMPORT_MAX_ARGON2_P} is accepted",
            params.p_cost()
        ));
    }
    Ok(())
}

/// Whether [`check_importable_hash`] accepts `hash`.
pub fn is_importable_hash(hash: &str) -> bool {
    check_importable_hash(hash).is_ok()
}

/// Checks a new password against the policy beyond its length: it must not be or contain the
/// email, its local part or the username, and zxcvbn must score it at least `min_score`
/// (zxcvbn knows tens of thousands of common and breached passwords, names and words).
/// Returns the message for `fields.<password field>`.
pub fn check_policy(
    password: &Password,
    email: &str,
    username: Option<&str>,
    min_score: u8,
) -> Result<(), String> {
    let lower = password.expose().to_lowercase();
    let local = email.split('@').next().unwrap_or("");
    let mut personal = vec![email];
    if local.chars().count() >= 4 {
        personal.push(local);
    }
    if let Some(u) = username.filter(|u| u.chars().count() >= 3) {
        personal.push(u);
    }
    if personal
        .iter()
        .any(|p| !p.is_empty() && lower.contains(&p.to_lowercase()))
    {
        return Err("must not contain your email address or username".to_owned());
    }
    // zxcvbn's cost grows with length; its authors advise scoring the first 100 characters.
    let head: String = password.expose().chars().take(100).collect();
    let estimate = zxcvbn::zxcvbn(&head, &personal);
    if (estimate.score() as u8) < min_score {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(format!(
            "is too easy to guess{hint}: use a longer passphrase of several unrelated words"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hasher() -> Hasher {
        Hasher::new(&Config::from_toml("").unwrap().password).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_fail() {
        let h = hasher();
        let pw = Password::new("correct horse battery", 8, 256).unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(h.verify(&pw, Some(&hash)).await.unwrap());
        let wrong = Password::presented("correct horse battery!", 256).unwrap();
        assert!(!h.verify(&wrong, Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_hashing_threads_survive_it() {
        let cfg = Config::from_toml("password.max_concurrent_hashes = 1")
            .unwrap()
            .password;
        let hasher = Hasher::new(&cfg).unwrap();
        let failed = hasher
            .run_cpu(|| -> u8 { panic!("a bug in a library") })
            .await;
        assert!(matches!(failed, Err(PasswordError::Task)));
        // The one hashing thread is still there.
        let pw = Password::presented("correct horse battery staple", 256).unwrap();
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(hasher.verify(&pw, Some(&hash)).await.unwrap());
    }

    fn policy(pw: &str) -> Result<(), String> {
        check_policy(
            &Password::presented(pw, 256).unwrap(),
            "ada.lovelace@example.com",
            Some("countess"),
            3,
        )
    }

    #[test]
    fn common_and_personal_passwords_are_refused() {
        for weak in [
            "password",
            "password123",
            "qwertyuiop",
            "iloveyou1",
            "12345678",
            "letmein!",
        ] {
            assert!(policy(weak).is_err(), "{weak}");
        }
        for personal in [
            "ada.lovelace@example.com",
            "xxada.lovelacexx99",
            "Countess-1843-zz",
        ] {
            let e = policy(personal).unwrap_err();
            assert!(
                e.contains("email") || e.contains("guess"),
                "{personal}: {e}"
            );
        }
        for strong in [
            "correct horse battery staple",
            "a brand new passphrase",
            "pässwörd-pässwörd",
        ] {
            assert!(policy(strong).is_ok(), "{strong}: {:?}", policy(strong));
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let mut cfg = Config::from_toml("").unwrap().password;
        cfg.max_concurrent_hashes = 1;
        cfg.max_queued_hashes = 1;
        let h = Arc::new(Hasher::new(&cfg).unwrap());
        let pw = Password::presented("anything at all", 256).unwrap();
        let running: Vec<_> = (0..2)
            .map(|_| {
                let (h, pw) = (h.clone(), pw.clone());
                tokio::spawn(async move { h.verify(&pw, None).await })
            })
            .collect();
        for _ in 0..10_000 {
            if h.waiting.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // One hashing, one waiting: the third is refused without waiting.
        let third = h.verify(&pw, None).await;
        assert!(matches!(third, Err(PasswordError::Busy)), "{third:?}");
        for r in running {
            assert!(r.await.unwrap().is_ok());
        }
    }

    /// Hashes written by other implementations: Python's `bcrypt` 5.0 (`$2b$`, `$2a$`, and a
    /// `$2b$` relabelled `$2y$` as PHP writes it), OpenBSD's classic test vector, and
    /// argon2-cffi 25.1 with its own defaults (m=65536, t=3, p=4).
    pub(crate) const FOREIGN_HASHES: &[(&str, &str)] = &[
        (
            "imported passphrase one",
            "$2b$10$C347REkkhmmXABq/iwrXS.lUSq3xzh6oz2hG0xVKqUwFYhcS/wQge",
        ),
        (
            "imported passphrase two",
            "$2a$10$8GYDYpSC/R4tZnXr9xV/reFIsfPyJedtNPyypr5lBUxwtqM2R3ceG",
        ),
        (
            "imported passphrase three",
            "$2y$10$tYtFqhI./E6VOtmbX91teua9eANQsSrow2gMqgRYueE3pnToGfrGS",
        ),
        (
            "U*U",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
        ),
        (
            "imported passphrase four",
            "$argon2id$v=19$m=65536,t=3,p=4$jtf6Y8eWtoeV2mtpprCwQw$AF+ZR3ebspbBuJMDKBoZO1Ww1HL/cWDAb3aa01CFr/0",
        ),
    ];

    #[tokio::test]
    async fn hashes_from_other_implementations_verify_and_ask_for_an_upgrade() {
        let h = hasher();
        for (password, hash) in FOREIGN_HASHES {
            assert!(is_importable_hash(hash), "{hash}");
            let right = Password::presented(password, 256).unwrap();
            assert!(h.verify(&right, Some(hash)).await.unwrap(), "{hash}");
            let wrong = Password::presented("not it at all", 256).unwrap();
            assert!(!h.verify(&wrong, Some(hash)).await.unwrap(), "{hash}");
            assert!(h.needs_rehash(hash), "{hash}");
        }
        let own = h
            .hash(&Password::presented("fresh", 256).unwrap())
            .await
            .unwrap();
        assert!(!h.needs_rehash(&own));
        for bad in [
            "",
            "plaintext",
            "$1$md5crypt$abc",
            "$2b$10$short",
            "$argon2id$v=19$garbage",
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
        ] {
            assert!(!is_importable_hash(bad), "{bad}");
        }
    }

    #[test]
    fn imported_hashes_with_extreme_costs_are_refused_with_the_reason() {
        let argon = |m: u32, t: u32, p: u32| {
            format!(
                "$argon2id$v=19$m={m},t={t},p={p}$jtf6Y8eWtoeV2mtpprCwQw$AF+ZR3ebspbBuJMDKBoZO1Ww1HL/cWDAb3aa01CFr/0"
            )
        };
        assert_eq!(check_importable_hash(&argon(262_144, 3, 4)), Ok(()));
        let e = check_importable_hash(&argon(262_145, 3, 4)).unwrap_err();
        assert!(e.contains("memory cost m=262145"), "{e}");
        assert!(e.contains("256 MiB"), "{e}");
        let e = check_importable_hash(&argon(4_194_304, 1, 1)).unwrap_err();
        assert!(e.contains("memory cost"), "{e}");
        let e = check_importable_hash(&argon(65_536, 17, 1)).unwrap_err();
        assert!(e.contains("time cost t=17"), "{e}");
        let e = check_importable_hash(&argon(65_536, 3, 17)).unwrap_err();
        assert!(e.contains("parallelism p=17"), "{e}");

        let bcrypt_at = |cost: u32| {
            format!("$2b${cost:02}$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")
        };
        assert_eq!(check_importable_hash(&bcrypt_at(14)), Ok(()));
        let e = check_importable_hash(&bcrypt_at(15)).unwrap_err();
        assert!(e.contains("bcrypt cost 15"), "{e}");
        let e = check_importable_hash(&bcrypt_at(31)).unwrap_err();
        assert!(e.contains("at most 14"), "{e}");
        let e = check_importable_hash("$2b$10$short").unwrap_err();
        assert!(e.contains("not a bcrypt"), "{e}");
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let h = hasher();
        let pw = Password::presented("anything at all", 256).unwrap();
        assert!(!h.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        let h = hasher();
        let pw = Password::presented("anything at all", 256).unwrap();
        assert!(h.verify(&pw, Some("$argon2id$garbage")).await.is_err());
    }
}
