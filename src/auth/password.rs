//! Password hashing with argon2id (RustCrypto `argon2`), off the async
//! runtime and with a bound on how many hashes run or wait at once: each
//! hash takes ~19 MiB and tens of milliseconds, so a flood of log-ins must
//! queue or be refused (503), never exhaust memory or stall the server.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::ChatError;

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;
/// Hashes computed at once.
const CONCURRENT_HASHES: usize = 2;
/// Hash requests allowed to wait; more get `Busy` (503).
const QUEUED_HASHES: usize = 64;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Refuses passwords that are too short or too long.
pub fn check_strength(password: &str) -> Result<(), ChatError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ChatError::WeakPassword(format!("a password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ChatError::WeakPassword(format!("a password has at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// Runs hashes on the blocking pool, a few at a time.
#[derive(Clone)]
pub struct Hasher {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::with_limits(CONCURRENT_HASHES, QUEUED_HASHES)
    }
}

impl Hasher {
    /// At most `running` hashes at once and `queued` admitted in all.
    pub fn with_limits(running: usize, queued: usize) -> Self {
        Self { running: Arc::new(Semaphore::new(running)), waiting: Arc::new(Semaphore::new(queued)) }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ChatError> {
        let _queued = self.waiting.clone().try_acquire_owned().map_err(|_| ChatError::Busy)?;
        let _running = self.running.clone().acquire_owned().await.map_err(|_| ChatError::Busy)?;
        tokio::task::spawn_blocking(work).await.map_err(|e| ChatError::Internal(e.to_string()))
    }

    /// The argon2id PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, ChatError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
        })
        .await?
        .map_err(|e| ChatError::Internal(format!("hashing failed: {e}")))
    }

    /// Whether `password` matches `phc`. With `phc = None` (unknown user)
    /// it checks against a dummy hash, so both cases take the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ChatError> {
        self.run(move || {
            let stored = phc.as_deref().unwrap_or_else(|| dummy_hash());
            let Ok(parsed) = PasswordHash::new(stored) else {
                tracing::error!("a stored password hash could not be parsed");
                return false;
            };
            let matches = argon2().verify_password(password.as_bytes(), &parsed).is_ok();
            matches && phc.is_some()
        })
        .await
    }
}

/// A hash of a random password, made once, for unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let random = SaltString::generate(&mut OsRng);
        argon2().hash_password(random.as_str().as_bytes(), &salt).expect("hashing works").to_string()
    })
}

/// Computes the dummy hash now, so the first unknown-user log-in is not
/// faster than the rest.
pub fn warm_up() {
    let _ = dummy_hash();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let hasher = Hasher::default();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_flood_of_hashes_is_refused_beyond_the_queue() {
        let hasher = Hasher::with_limits(1, 2);
        let attempts: Vec<_> = (0..10)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify("guess".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(matched) => assert!(!matched),
                Err(ChatError::Busy) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(busy >= 8, "only 2 may be admitted, {busy} were refused");
    }

    #[test]
    fn password_length_is_checked() {
        assert!(check_strength("1234567").is_err());
        assert!(check_strength("12345678").is_ok());
        assert!(check_strength(&"x".repeat(129)).is_err());
    }
}
