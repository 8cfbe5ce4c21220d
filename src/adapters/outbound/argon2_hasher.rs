//! Password hashing with argon2id (OWASP parameters), verifying legacy bcrypt too.
//!
//! Hashing costs ~19 MiB and tens of milliseconds of CPU, so every call runs on
//! tokio's blocking pool, at most one per core at once; a bounded number more
//! wait their turn, and the rest are refused at once
//! ([`PasswordHashError::Busy`]): a login storm can neither starve streaming
//! nor allocate gigabytes.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{
    PasswordHash as PhcHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::application::ports::{PasswordCheck, PasswordHashError, PasswordHasher};
use crate::domain::{Password, PasswordHash};

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Params {
    /// The OWASP Password Storage Cheat Sheet's argon2id baseline.
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP
    }
}

/// The argon2id [`PasswordHasher`].
#[derive(Clone)]
pub struct Argon2Hasher {
    argon2: Argon2<'static>,
    params: Argon2Params,
    /// One per computation that may run at once.
    permits: Arc<Semaphore>,
    /// One per computation running or waiting; none left means refuse.
    admitted: Arc<Semaphore>,
}

/// How many computations may wait per one that runs.
pub const QUEUE_PER_WORKER: usize = 16;

/// Makes glibc serve every allocation of 1 MiB or more (argon2's 19 MiB
/// block) with its own mapping, returned to the system when freed. Without
/// this its adaptive threshold soon keeps such blocks in per-thread arenas,
/// and a login storm leaves hundreds of MiB behind for good. Call once at
/// start-up, before threads start.
pub fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator tuning parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

impl Argon2Hasher {
    /// # Panics
    /// Never for [`Argon2Params::OWASP`]; only for parameters argon2 itself refuses.
    pub fn new(params: Argon2Params) -> Self {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .expect("argon2 parameters are valid");
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_bounds(p, params, workers, workers * QUEUE_PER_WORKER)
    }

    fn with_bounds(p: Params, params: Argon2Params, running: usize, waiting: usize) -> Self {
        Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, p),
            params,
            permits: Arc::new(Semaphore::new(running.max(1))),
            admitted: Arc::new(Semaphore::new(running.max(1) + waiting)),
        }
    }

    /// This hasher with at most `running` computations at once and `waiting`
    /// more queued.
    pub fn bounded(params: Argon2Params, running: usize, waiting: usize) -> Self {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .expect("argon2 parameters are valid");
        Self::with_bounds(p, params, running, waiting)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, PasswordHashError>
    where
        F: FnOnce(&Argon2<'static>) -> Result<T, PasswordHashError> + Send + 'static,
        T: Send + 'static,
    {
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Err(PasswordHashError::Busy);
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| PasswordHashError::Internal(Box::new(e)))?;
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || f(&argon2))
            .await
            .map_err(|e| PasswordHashError::Internal(Box::new(e)))?
    }

    /// Whether a parsed argon2 hash was made with exactly our algorithm and cost.
    fn is_current(&self, hash: &PhcHash<'_>) -> bool {
        let want = self.params;
        hash.algorithm.as_str() == "argon2id"
            && hash.params.get_decimal("m") == Some(want.memory_kib)
            && hash.params.get_decimal("t") == Some(want.iterations)
            && hash.params.get_decimal("p") == Some(want.parallelism)
    }
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, PasswordHashError> {
        let password = password.clone();
        self.blocking(move |argon2| {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| PasswordHash::new(h.to_string()))
                .map_err(|e| PasswordHashError::Internal(e.to_string().into()))
        })
        .await
    }

    async fn verify(
        &self,
        password: &Password,
        hash: &PasswordHash,
    ) -> Result<PasswordCheck, PasswordHashError> {
        let password = password.clone();
        let stored = hash.clone();
        if stored.is_legacy_bcrypt() {
            return self
                .blocking(
                    move |_| match bcrypt::verify(password.expose(), stored.as_str()) {
                        Ok(true) => Ok(PasswordCheck::Match { needs_rehash: true }),
                        Ok(false) => Ok(PasswordCheck::Mismatch),
                        Err(_) => Err(PasswordHashError::Malformed),
                    },
                )
                .await;
        }
        let this = self.clone();
        self.blocking(move |argon2| {
            let parsed = PhcHash::new(stored.as_str()).map_err(|_| PasswordHashError::Malformed)?;
            match argon2.verify_password(password.expose().as_bytes(), &parsed) {
                Ok(()) => Ok(PasswordCheck::Match {
                    needs_rehash: !this.is_current(&parsed),
                }),
                Err(argon2::password_hash::Error::Password) => Ok(PasswordCheck::Mismatch),
                Err(_) => Err(PasswordHashError::Malformed),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::for_login(s)
    }

    #[tokio::test]
    async fn hashes_with_owasp_argon2id_and_verifies() {
        let h = Argon2Hasher::new(Argon2Params::OWASP);
        let hash = h.hash(&pw("correct horse")).await.unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hash.as_str()
        );
        assert_eq!(
            h.verify(&pw("correct horse"), &hash).await.unwrap(),
            PasswordCheck::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&pw("wrong horse"), &hash).await.unwrap(),
            PasswordCheck::Mismatch
        );
    }

    #[tokio::test]
    async fn past_the_queue_computations_are_refused_not_piled_up() {
        let cheap = Argon2Params {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let h = Argon2Hasher::bounded(cheap, 1, 2);
        // The one permit is taken, as by a long computation.
        let busy = h.permits.clone().acquire_owned().await.unwrap();
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(&pw("password1")).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(
            h.hash(&pw("password1")).await,
            Err(PasswordHashError::Busy)
        ));
        drop(busy);
        let mut outcomes = Vec::new();
        for w in waiting {
            outcomes.push(w.await.unwrap().is_ok());
        }
        // The three admitted ones all ran once the permit came back.
        assert_eq!(outcomes, vec![true; 3]);
    }

    #[tokio::test]
    async fn same_password_gets_a_fresh_salt() {
        let h = Argon2Hasher::new(Argon2Params::OWASP);
        let a = h.hash(&pw("password1")).await.unwrap();
        let b = h.hash(&pw("password1")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn legacy_bcrypt_verifies_in_every_prefix_and_asks_for_rehash() {
        let h = Argon2Hasher::new(Argon2Params::OWASP);
        let b = bcrypt::hash("password123", 4).unwrap(); // $2b$
        let body = &b[3..];
        for prefix in ["$2a", "$2b", "$2y"] {
            let legacy = PasswordHash::new(format!("{prefix}{body}"));
            assert_eq!(
                h.verify(&pw("password123"), &legacy).await.unwrap(),
                PasswordCheck::Match { needs_rehash: true },
                "{prefix}"
            );
            assert_eq!(
                h.verify(&pw("password124"), &legacy).await.unwrap(),
                PasswordCheck::Mismatch
            );
        }
    }

    #[tokio::test]
    async fn weaker_argon2_parameters_ask_for_rehash() {
        let weak = Argon2Hasher::new(Argon2Params {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        });
        let hash = weak.hash(&pw("password1")).await.unwrap();
        let h = Argon2Hasher::new(Argon2Params::OWASP);
        assert_eq!(
            h.verify(&pw("password1"), &hash).await.unwrap(),
            PasswordCheck::Match { needs_rehash: true }
        );
    }

    #[tokio::test]
    async fn garbage_hashes_never_match_or_panic() {
        let h = Argon2Hasher::new(Argon2Params::OWASP);
        for junk in ["", "plaintext", "$2b$10$short"] {
            assert!(
                matches!(
                    h.verify(&pw("x"), &PasswordHash::new(junk)).await,
                    Err(PasswordHashError::Malformed)
                ),
                "{junk:?}"
            );
        }
        // A PHC string with no hash part parses; it just can never match.
        assert!(!matches!(
            h.verify(&pw("x"), &PasswordHash::new("$argon2id$broken"))
                .await,
            Ok(PasswordCheck::Match { .. })
        ));
    }
}
