//! Opaque credentials the server hands out besides JWTs: refresh tokens and
//! WebSocket tickets. Both are 32 random bytes in hex behind a prefix that
//! says what they are; stores only ever see their SHA-256 digest.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Random bytes in every opaque credential.
const SECRET_BYTES: usize = 32;

/// Why a presented refresh token or ticket was refused before any lookup.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a credential this server issues")]
pub struct OpaqueTokenError;

/// The SHA-256 of a credential, in hex: what stores keep and look up by, so a
/// leaked table or Redis dump holds nothing a client could present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenDigest(String);

impl TokenDigest {
    fn of(text: &str) -> Self {
        Self(hex::encode(Sha256::digest(text.as_bytes())))
    }

    /// Re-reads a digest a store wrote; `None` if it is not 64 hex digits.
    pub fn parse(raw: &str) -> Option<Self> {
        is_hex(raw, 64).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_hex(raw: &str, len: usize) -> bool {
    raw.len() == len && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_hex() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Declares a prefixed opaque credential type: generated, parsed, digested,
/// never shown by `Debug`.
macro_rules! opaque_credential {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random credential.
            pub fn generate() -> Self {
                Self(format!("{}{}", Self::PREFIX, random_hex()))
            }

            /// Accepts exactly the shape [`Self::generate`] makes.
            pub fn parse(raw: &str) -> Result<Self, OpaqueTokenError> {
                match raw.strip_prefix(Self::PREFIX) {
                    Some(rest) if is_hex(rest, SECRET_BYTES * 2) => Ok(Self(raw.to_owned())),
                    _ => Err(OpaqueTokenError),
                }
            }

            pub fn digest(&self) -> TokenDigest {
                TokenDigest::of(&self.0)
            }

            /// The credential itself, for the one response that hands it out.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(<redacted>)", stringify!($name))
            }
        }
    };
}

opaque_credential!(
    /// A refresh token: exchanged once for a new access token and its own successor.
    RefreshToken,
    "rt_"
);

opaque_credential!(
    /// A single-use, short-lived ticket that opens one WebSocket.
    WsTicket,
    "wst_"
);

impl RefreshToken {
    /// The token that replaces this one when it is rotated. Derived with a
    /// server-side key rather than drawn at random, so a second refresh with
    /// the same token (two tabs at once) can be answered with the same
    /// successor without the store ever holding a usable token.
    pub fn successor(&self, key: &[u8]) -> Self {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(self.0.as_bytes());
        Self(format!(
            "{}{}",
            Self::PREFIX,
            hex::encode(mac.finalize().into_bytes())
        ))
    }
}

/// Identifies one login's chain of refresh tokens; a reuse revokes the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FamilyId(String);

impl FamilyId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Re-reads a family id a store wrote.
    pub fn parse(raw: &str) -> Option<Self> {
        super::id::is_valid_id(raw).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_parse_and_others_do_not() {
        let t = RefreshToken::generate();
        assert_eq!(RefreshToken::parse(t.expose()), Ok(t.clone()));
        assert!(WsTicket::parse(t.expose()).is_err(), "prefixes differ");
        let w = WsTicket::generate();
        assert_eq!(WsTicket::parse(w.expose()), Ok(w));
        for bad in ["", "rt_", "rt_xyz", &format!("{}A", t.expose()), "rt_ZZ"] {
            assert!(RefreshToken::parse(bad).is_err(), "{bad:?}");
        }
        let upper = t.expose().to_ascii_uppercase().replacen("RT_", "rt_", 1);
        assert!(RefreshToken::parse(&upper).is_err());
    }

    #[test]
    fn digests_are_stable_and_distinct() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_eq!(a.digest(), a.clone().digest());
        assert_ne!(a.digest(), b.digest());
        assert!(TokenDigest::parse(a.digest().as_str()).is_some());
        assert!(!a.digest().as_str().contains(a.expose()));
    }

    #[test]
    fn successors_depend_on_token_and_key() {
        let t = RefreshToken::generate();
        let s = t.successor(b"key-1");
        assert_eq!(s, t.successor(b"key-1"));
        assert_ne!(s, t.successor(b"key-2"));
        assert_ne!(s, t);
        assert!(RefreshToken::parse(s.expose()).is_ok());
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let t = RefreshToken::generate();
        assert!(!format!("{t:?}").contains(&t.expose()[3..]));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Near-misses of a real credential (right prefix, hex of about the right
    /// length, any case) and anything at all.
    fn near_a_credential() -> impl Strategy<Value = String> {
        prop_oneof![
            "(rt_|wst_|RT_|)[0-9a-fA-F]{60,68}",
            "(rt_|wst_)[0-9a-f]{64}",
            any::<String>(),
        ]
    }

    fn shaped(raw: &str, prefix: &str) -> bool {
        raw.strip_prefix(prefix).is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn only_the_issued_shape_parses_and_it_reads_back(raw in near_a_credential()) {
            match RefreshToken::parse(&raw) {
                Ok(t) => {
                    prop_assert!(shaped(&raw, "rt_"));
                    prop_assert_eq!(t.expose(), raw.as_str());
                    prop_assert_eq!(RefreshToken::parse(t.expose()), Ok(t.clone()));
                    prop_assert!(TokenDigest::parse(t.digest().as_str()).is_some());
                    let shown = format!("{t:?}");
                    prop_assert!(!shown.contains(&raw[3..]), "{}", shown);
                }
                Err(OpaqueTokenError) => prop_assert!(!shaped(&raw, "rt_")),
            }
            prop_assert_eq!(WsTicket::parse(&raw).is_ok(), shaped(&raw, "wst_"));
            prop_assert_eq!(TokenDigest::parse(&raw).is_some(), raw.len() == 64 && shaped(&format!("x{raw}"), "x"));
        }

        #[test]
        fn successors_are_credentials_too(key in prop::collection::vec(any::<u8>(), 0..80)) {
            let t = RefreshToken::generate();
            let s = t.successor(&key);
            prop_assert_eq!(RefreshToken::parse(s.expose()), Ok(s));
        }
    }
}
