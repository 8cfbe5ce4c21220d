//! Bearer tokens as HS256 JWTs, compatible with the ones the Node server issued.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::application::ports::{IssuedToken, TokenClaims, TokenError, TokenService};
use crate::domain::{TokenLifetime, User, UserId, Username};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id. Tokens from the Node server carried it as `userId` instead;
    /// both are read so users stay logged in across the migration, and both are
    /// written so clients (or a Node server sharing the secret) that read
    /// `userId` keep working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, rename = "userId", skip_serializing_if = "Option::is_none")]
    legacy_user_id: Option<String>,
    username: String,
    /// Required: both servers always wrote it, and without it a token's
    /// lifetime cannot be bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    exp: i64,
    /// Not before: checked when present (the Node server never set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    /// The token's own id, so it can be revoked alone (absent from Node tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// `iat` in milliseconds, so "every token issued before now" holds to the
    /// millisecond (a login right after `logout-all` is not caught by it).
    #[serde(default, rename = "iatMs", skip_serializing_if = "Option::is_none")]
    iat_ms: Option<i64>,
}

/// How far clocks may disagree: how far ahead of ours a token's `iat` may be,
/// and how much longer than `JWT_EXPIRES_IN` its lifetime may be.
const CLOCK_LEEWAY_SECS: i64 = 60;
const MAX_IAT_AHEAD_SECS: i64 = CLOCK_LEEWAY_SECS;

/// 9999-12-31T23:59:59Z: a time claim past it is no time anyone means, and
/// every consumer of the claims may count on times that fit a calendar.
const LAST_TIME: i64 = 253_402_300_799;

/// Signs and verifies HS256 tokens with one shared secret.
pub struct JwtTokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: TokenLifetime,
}

impl JwtTokenService {
    pub fn new(secret: &[u8], lifetime: TokenLifetime) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // HS256 only: `alg: none` and every other algorithm fail before any
        // signature check.
        validation.algorithms = vec![Algorithm::HS256];
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // We sign and verify on the same clock; a grace period would only keep
        // expired tokens alive.
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }
    }
}

impl TokenService for JwtTokenService {
    fn issue(&self, user: &User) -> Result<IssuedToken, TokenError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let now = now_ms.div_euclid(1000);
        // `exp` counts from the next whole second: from `now` it would give a
        // token issued late in a second up to a second less than the
        // `expiresInSeconds` the client is told, and a client refreshing a
        // little before that would find its socket already closed.
        let next_second = now_ms.saturating_add(999).div_euclid(1000);
        let ttl = i64::try_from(self.lifetime.seconds()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: Some(user.id.as_str().to_owned()),
            legacy_user_id: Some(user.id.as_str().to_owned()),
            username: user.username.as_str().to_owned(),
            iat: Some(now),
            exp: next_second.saturating_add(ttl),
            nbf: None,
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            iat_ms: Some(now_ms),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Issue(Box::new(e)))?;
        Ok(IssuedToken {
            token,
            lifetime: self.lifetime.clone(),
        })
    }

    fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        // RFC 7515 4.1.11: `crit` names extensions the recipient must
        // understand or refuse the token; this server understands none.
        if data.header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let claims = data.claims;
        // RFC 7519 4.1.4: not accepted *on or after* `exp` (the crate accepts
        // through that second). The same instant the socket's deadline, the
        // ticket check and the Node server use.
        if claims.exp <= chrono::Utc::now().timestamp() {
            return Err(TokenError::Expired);
        }
        let issued_at = self.issued_at(&claims)?;
        // A millisecond claim must agree with its `iat` second, so it cannot
        // move a token out of a `logout-all` by more than that second.
        let issued_at_ms = match claims.iat_ms {
            Some(ms) if ms.div_euclid(1000) == issued_at => ms,
            Some(_) => return Err(TokenError::Invalid),
            None => issued_at.checked_mul(1000).ok_or(TokenError::Invalid)?,
        };
        let token_id = match claims.jti {
            Some(jti) if crate::domain::id::is_valid_id(&jti) => jti,
            Some(_) => return Err(TokenError::Invalid),
            None => legacy_token_id(token),
        };
        let id = claims
            .sub
            .or(claims.legacy_user_id)
            .ok_or(TokenError::Invalid)?;
        Ok(TokenClaims {
            user_id: UserId::parse(&id).map_err(|_| TokenError::Invalid)?,
            username: Username::parse(&claims.username).map_err(|_| TokenError::Invalid)?,
            issued_at,
            expires_at: claims.exp,
            token_id,
            issued_at_ms,
        })
    }
}

impl JwtTokenService {
    /// The token's `iat`, once its times are ones this server could have
    /// signed: issued (within the leeway) no later than now, before the end
    /// of year 9999, and living no longer than `JWT_EXPIRES_IN`. A correctly
    /// signed token with `exp` a billion years away is a leaked secret or a
    /// forged lifetime, and would survive every `JWT_EXPIRES_IN` change.
    fn issued_at(&self, claims: &Claims) -> Result<i64, TokenError> {
        let iat = claims.iat.ok_or(TokenError::Invalid)?;
        let now = chrono::Utc::now().timestamp();
        if iat > now + MAX_IAT_AHEAD_SECS || iat > LAST_TIME || claims.exp > LAST_TIME {
            return Err(TokenError::Invalid);
        }
        let longest = i64::try_from(self.lifetime.seconds())
            .unwrap_or(i64::MAX)
            .saturating_add(CLOCK_LEEWAY_SECS);
        match claims.exp.checked_sub(iat) {
            Some(lived) if (0..=longest).contains(&lived) => Ok(iat),
            _ => Err(TokenError::Invalid),
        }
    }
}

/// The id of a token issued without `jti`: a digest of the whole token,
/// which is as unique as the token and reveals nothing of it.
fn legacy_token_id(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    format!("sha-{}", &digest[..40])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn user() -> User {
        fixtures::user("65f1c0ffee0123456789abcd", "x")
    }

    fn lifetime(secs: u64) -> TokenLifetime {
        TokenLifetime::parse(&secs.to_string()).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        base64_url_nopad(&serde_json::to_vec(v).unwrap())
    }

    /// Minimal base64url without padding, to hand-craft hostile tokens.
    fn base64_url_nopad(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn issued_token_round_trips_with_expected_claims() {
        let svc = JwtTokenService::new(SECRET, lifetime(3600));
        let issued = svc.issue(&user()).unwrap();
        assert_eq!(issued.lifetime.seconds(), 3600);
        let claims = svc.verify(&issued.token).unwrap();
        use base64::Engine as _;
        let payload = issued.token.split('.').nth(1).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["sub"], "65f1c0ffee0123456789abcd");
        assert_eq!(
            payload["userId"], "65f1c0ffee0123456789abcd",
            "Node clients read userId"
        );
        assert_eq!(claims.user_id.as_str(), "65f1c0ffee0123456789abcd");
        assert_eq!(claims.username.as_str(), "alice");
        let lived = claims.expires_at - claims.issued_at;
        assert!((3600..=3601).contains(&lived), "lived {lived}");
        assert!(
            claims.expires_at * 1000 >= claims.issued_at_ms + 3600 * 1000,
            "a token lives at least its whole lifetime from the millisecond it was issued"
        );
    }

    #[test]
    fn other_secret_and_tampering_are_invalid() {
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let other = JwtTokenService::new(b"another-secret-another-secret-xx", lifetime(60));
        let token = other.issue(&user()).unwrap().token;
        assert!(matches!(svc.verify(&token), Err(TokenError::Invalid)));
        assert!(matches!(svc.verify("not.a.jwt"), Err(TokenError::Invalid)));
        assert!(matches!(svc.verify(""), Err(TokenError::Invalid)));
    }

    #[test]
    fn expired_tokens_are_rejected_as_expired() {
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let now = chrono::Utc::now().timestamp();
        // A second ago, and this very second: RFC 7519 refuses a token *on*
        // or after its `exp` (the crate alone accepts it through that second).
        for exp in [now - 1, now] {
            let claims =
                serde_json::json!({"sub": "u1", "username": "alice", "iat": exp - 30, "exp": exp});
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert!(
                matches!(svc.verify(&token), Err(TokenError::Expired)),
                "exp {exp}, now {now}"
            );
        }
    }

    #[test]
    fn alg_none_other_algorithms_and_missing_exp_are_rejected() {
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let exp = chrono::Utc::now().timestamp() + 600;
        let body = b64(&serde_json::json!({"sub": "u1", "username": "alice", "exp": exp}));
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            body
        );
        assert!(matches!(svc.verify(&none), Err(TokenError::Invalid)));

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "u1", "username": "alice", "exp": exp}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(svc.verify(&hs512), Err(TokenError::Invalid)));

        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1", "username": "alice"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(svc.verify(&no_exp), Err(TokenError::Invalid)));
    }

    fn signed(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn future_nbf_and_iat_far_ahead_are_invalid() {
        let svc = JwtTokenService::new(SECRET, lifetime(7200));
        let now = chrono::Utc::now().timestamp();
        let base = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"sub": "u1", "username": "alice", "iat": now, "exp": now + 7200});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            signed(&c)
        };
        let nbf_ahead = base(serde_json::json!({"nbf": now + 3600}));
        assert!(matches!(svc.verify(&nbf_ahead), Err(TokenError::Invalid)));
        let nbf_past = base(serde_json::json!({"nbf": now - 10}));
        assert!(svc.verify(&nbf_past).is_ok());
        let iat_ahead = base(serde_json::json!({"iat": now + 120}));
        assert!(matches!(svc.verify(&iat_ahead), Err(TokenError::Invalid)));
        let iat_slightly_ahead = base(serde_json::json!({"iat": now + 30}));
        assert!(
            svc.verify(&iat_slightly_ahead).is_ok(),
            "clock skew is tolerated"
        );
        let ms_disagrees = base(serde_json::json!({"iatMs": (now - 100) * 1000}));
        assert!(matches!(
            svc.verify(&ms_disagrees),
            Err(TokenError::Invalid)
        ));
    }

    #[test]
    fn a_lifetime_longer_than_configured_is_invalid() {
        let svc = JwtTokenService::new(SECRET, lifetime(3600));
        let now = chrono::Utc::now().timestamp();
        let token = |iat: i64, exp: i64| {
            signed(&serde_json::json!({"sub": "u1", "username": "alice", "iat": iat, "exp": exp}))
        };
        let longest = 3600 + CLOCK_LEEWAY_SECS;
        assert!(svc.verify(&token(now, now + longest)).is_ok(), "leeway");
        for (iat, exp) in [
            (now, now + longest + 1),
            (now - 10, 1_000_000_000_000_000_000),
            (now, i64::MAX),
            (0, now + 10),
            (i64::MIN / 1000, now + 10),
            (i64::MIN, now + 10),
            // `exp` before `iat`: no lifetime at all.
            (now + 30, now + 10),
        ] {
            assert!(
                matches!(svc.verify(&token(iat, exp)), Err(TokenError::Invalid)),
                "iat {iat}, exp {exp}"
            );
        }
    }

    /// Already implied by the other rules (`iat` at most a minute ahead, a
    /// lifetime of at most `36500d`); this keeps it so should they change.
    #[test]
    fn times_past_the_year_9999_are_invalid() {
        let svc = JwtTokenService::new(SECRET, lifetime(36500 * 86400));
        let now = chrono::Utc::now().timestamp();
        let token = |iat: i64, exp: i64| {
            signed(&serde_json::json!({"sub": "u1", "username": "alice", "iat": iat, "exp": exp}))
        };
        assert!(svc.verify(&token(now, now + 36500 * 86400)).is_ok());
        assert!(matches!(
            svc.verify(&token(LAST_TIME - 10, LAST_TIME + 1)),
            Err(TokenError::Invalid)
        ));
        assert!(matches!(
            svc.verify(&token(LAST_TIME + 1, LAST_TIME + 2)),
            Err(TokenError::Invalid)
        ));
    }

    #[test]
    fn a_token_without_iat_is_invalid() {
        let svc = JwtTokenService::new(SECRET, lifetime(3600));
        let exp = chrono::Utc::now().timestamp() + 60;
        let token = signed(&serde_json::json!({"userId": "u1", "username": "alice", "exp": exp}));
        assert!(matches!(svc.verify(&token), Err(TokenError::Invalid)));
    }

    #[test]
    fn a_crit_header_is_invalid() {
        let svc = JwtTokenService::new(SECRET, lifetime(3600));
        let now = chrono::Utc::now().timestamp();
        let claims =
            serde_json::json!({"sub": "u1", "username": "alice", "iat": now, "exp": now + 60});
        let with_crit = |crit: Vec<String>| {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(crit);
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
        };
        for crit in [vec!["b64".to_owned()], vec!["exp".to_owned()], vec![]] {
            assert!(
                matches!(
                    svc.verify(&with_crit(crit.clone())),
                    Err(TokenError::Invalid)
                ),
                "{crit:?}"
            );
        }
        assert!(svc.verify(&signed(&claims)).is_ok());
    }

    #[test]
    fn an_iat_beyond_milliseconds_is_invalid() {
        // Found by a property test: `iatMs` was saturated to i64::MIN, a
        // millisecond outside the token's own `iat` second.
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let exp = chrono::Utc::now().timestamp() + 60;
        for iat in [i64::MIN / 1000 - 1, i64::MIN] {
            let token = signed(
                &serde_json::json!({"sub": "u1", "username": "alice", "iat": iat, "exp": exp}),
            );
            assert!(
                matches!(svc.verify(&token), Err(TokenError::Invalid)),
                "{iat}"
            );
        }
    }

    #[test]
    fn issued_tokens_have_distinct_ids_and_millisecond_times() {
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let a = svc.verify(&svc.issue(&user()).unwrap().token).unwrap();
        let b = svc.verify(&svc.issue(&user()).unwrap().token).unwrap();
        assert_ne!(a.token_id, b.token_id);
        assert_eq!(a.issued_at_ms.div_euclid(1000), a.issued_at);
    }

    #[test]
    fn tokens_without_jti_get_a_stable_id_of_their_own() {
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let now = chrono::Utc::now().timestamp();
        let t1 = signed(
            &serde_json::json!({"userId": "u1", "username": "alice", "iat": now, "exp": now + 60}),
        );
        let t2 = signed(
            &serde_json::json!({"userId": "u1", "username": "alice", "iat": now, "exp": now + 61}),
        );
        let c1 = svc.verify(&t1).unwrap();
        assert_eq!(c1.token_id, svc.verify(&t1).unwrap().token_id);
        assert_ne!(c1.token_id, svc.verify(&t2).unwrap().token_id);
        assert_eq!(c1.issued_at_ms, now * 1000);
        assert!(crate::domain::id::is_valid_id(&c1.token_id));
    }

    #[test]
    fn node_server_tokens_with_user_id_claim_are_accepted() {
        let svc = JwtTokenService::new(SECRET, lifetime(60));
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"userId": "65f1c0ffee0123456789abcd", "username": "alice", "iat": now, "exp": now + 60});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            svc.verify(&token).unwrap().user_id.as_str(),
            "65f1c0ffee0123456789abcd"
        );
    }
}

/// Tokens as an attacker (or an old server sharing the secret) may present
/// them: never a panic, and a token accepted only with claims that keep
/// every promise [`TokenClaims`] makes.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn service() -> JwtTokenService {
        JwtTokenService::new(SECRET, TokenLifetime::parse("1h").unwrap())
    }

    /// A time claim: near now (either side), at the extremes, or anything.
    fn time() -> impl Strategy<Value = serde_json::Value> {
        let now = chrono::Utc::now().timestamp();
        prop_oneof![
            6 => (-200i64..200).prop_map(move |d| (now + d).into()),
            1 => prop::sample::select(vec![i64::MIN, -1, 0, i64::MAX, i64::MAX / 1000])
                .prop_map(serde_json::Value::from),
            1 => any::<i64>().prop_map(serde_json::Value::from),
            1 => any::<u64>().prop_map(serde_json::Value::from),
            1 => any::<f64>().prop_map(serde_json::Value::from),
            1 => "[0-9]{0,12}".prop_map(serde_json::Value::from),
            1 => Just(serde_json::Value::Null),
        ]
    }

    fn text() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            // Valid as an id and a username, so that many tokens get as far
            // as the checks that come after the signature.
            4 => "[A-Za-z0-9_-]{3,24}".prop_map(serde_json::Value::from),
            1 => "[A-Za-z0-9_.-]{0,40}".prop_map(serde_json::Value::from),
            1 => any::<String>().prop_map(serde_json::Value::from),
            1 => any::<i64>().prop_map(serde_json::Value::from),
            1 => Just(serde_json::Value::Null),
        ]
    }

    /// Claims with any of the fields the server reads, each usually valid
    /// (so that many tokens reach the checks after the signature), sometimes
    /// absent, sometimes anything: the `iatMs` is then and again the one that
    /// agrees with `iat`.
    fn claims() -> impl Strategy<Value = serde_json::Value> {
        let now = chrono::Utc::now().timestamp();
        let near = |from: i64, to: i64| (from..to).prop_map(move |d| (now + d).into()).boxed();
        let field = |name: &'static str,
                     valid: BoxedStrategy<serde_json::Value>,
                     wild: BoxedStrategy<serde_json::Value>| {
            prop_oneof![
                8 => valid.prop_map(Some),
                1 => Just(None),
                1 => wild.prop_map(Some),
            ]
            .prop_map(move |v| (name, v))
        };
        let id = || {
            "[A-Za-z0-9_-]{1,24}"
                .prop_map(serde_json::Value::from)
                .boxed()
        };
        let name = "[A-Za-z0-9_.-]{3,32}"
            .prop_map(serde_json::Value::from)
            .boxed();
        (
            (
                field("sub", id(), text().boxed()),
                field("userId", id(), text().boxed()),
                field("username", name, text().boxed()),
                field("jti", id(), text().boxed()),
            ),
            (
                field("iat", near(-200, 200), time().boxed()),
                field("exp", near(-100, 3600), time().boxed()),
                field("nbf", near(-200, 200), time().boxed()),
                field(
                    "iatMs",
                    Just(serde_json::Value::Null).boxed(),
                    time().boxed(),
                ),
            ),
            0i64..1000,
        )
            .prop_map(|((a, b, c, d), (e, f, g, h), ms)| {
                let mut map: serde_json::Map<String, serde_json::Value> = [a, b, c, d, e, f, g, h]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                    .collect();
                // A "valid" iatMs is the one that agrees with iat.
                if map.get("iatMs") == Some(&serde_json::Value::Null) {
                    let agreeing = map
                        .get("iat")
                        .and_then(serde_json::Value::as_i64)
                        .and_then(|iat| iat.checked_mul(1000)?.checked_add(ms));
                    match agreeing {
                        Some(iat_ms) => map.insert("iatMs".into(), iat_ms.into()),
                        None => map.remove("iatMs"),
                    };
                }
                serde_json::Value::Object(map)
            })
    }

    fn check_accepted(claims: &TokenClaims) -> Result<(), TestCaseError> {
        let now = chrono::Utc::now().timestamp();
        prop_assert!(claims.expires_at > now, "expired token accepted");
        prop_assert!(claims.issued_at <= now + MAX_IAT_AHEAD_SECS);
        prop_assert!(claims.expires_at <= LAST_TIME);
        let lived = claims.expires_at - claims.issued_at;
        prop_assert!(
            (0..=3600 + CLOCK_LEEWAY_SECS).contains(&lived),
            "lifetime {}",
            lived
        );
        prop_assert_eq!(claims.issued_at_ms.div_euclid(1000), claims.issued_at);
        prop_assert!(crate::domain::id::is_valid_id(&claims.token_id));
        prop_assert!(UserId::parse(claims.user_id.as_str()).is_ok());
        prop_assert!(Username::parse(claims.username.as_str()).is_ok());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_strings_are_invalid_tokens(raw in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,43}",
        ]) {
            prop_assert!(matches!(service().verify(&raw), Err(TokenError::Invalid)));
        }

        #[test]
        fn signed_claims_of_any_shape_are_refused_or_keep_their_promises(c in claims()) {
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            if let Ok(claims) = service().verify(&token) {
                check_accepted(&claims)?;
            }
        }

        #[test]
        fn a_tampered_token_is_refused(c in claims(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let Ok(tampered) = String::from_utf8(bytes) else { return Ok(()) };
            if tampered != token {
                if let Ok(claims) = service().verify(&tampered) {
                    // Only a change base64url cannot see (the last character's
                    // unused bits) may keep a token valid.
                    prop_assert_eq!(i, token.len() - 1, "tampering at {} accepted", i);
                    check_accepted(&claims)?;
                }
            }
        }

        #[test]
        fn issued_tokens_read_back(name in "[A-Za-z0-9_.-]{3,32}", id in "[A-Za-z0-9_-]{1,64}") {
            let svc = service();
            let mut user = crate::domain::fixtures::user(&id, "x");
            user.username = Username::parse(&name).unwrap();
            let claims = svc.verify(&svc.issue(&user).unwrap().token).unwrap();
            check_accepted(&claims)?;
            prop_assert_eq!(claims.user_id.as_str(), id.as_str());
            prop_assert_eq!(claims.username.as_str(), name.as_str());
        }
    }
}
