//! Password hashing with argon2id (OWASP parameters), verifying legacy bcrypt too.
//!
//! Hashing costs ~19 MiB and tens of milliseconds of CPU, so every call runs on
//! tokio's blocking pool, and a semaphore caps how many run at once: a burst of
//! logins queues instead of allocating gigabytes or starving the runtime.

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
    permits: Arc<Semaphore>,
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
        Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, p),
            params,
            permits: Arc::new(Semaphore::new(workers * 2)),
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, PasswordHashError>
    where
        F: FnOnce(&Argon2<'static>) -> Result<T, PasswordHashError> + Send + 'static,
        T: Send + 'static,
    {
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
