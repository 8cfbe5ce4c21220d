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
    #[serde(default)]
    iat: i64,
    exp: i64,
}

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
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.lifetime.seconds()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: Some(user.id.as_str().to_owned()),
            legacy_user_id: Some(user.id.as_str().to_owned()),
            username: user.username.as_str().to_owned(),
            iat: now,
            exp: now.saturating_add(ttl),
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
        let claims = data.claims;
        let id = claims
            .sub
            .or(claims.legacy_user_id)
            .ok_or(TokenError::Invalid)?;
        Ok(TokenClaims {
            user_id: UserId::parse(&id).map_err(|_| TokenError::Invalid)?,
            username: Username::parse(&claims.username).map_err(|_| TokenError::Invalid)?,
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }
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
        assert_eq!(claims.expires_at - claims.issued_at, 3600);
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
        let claims =
            serde_json::json!({"sub": "u1", "username": "alice", "iat": now - 120, "exp": now - 1});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(svc.verify(&token), Err(TokenError::Expired)));
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
