//! Users and the newtypes that make an invalid user unrepresentable.
//!
//! Every value here is parsed once, at the edge, and trusted afterwards: a
//! `Username` in hand is always 3-32 characters of `[A-Za-z0-9_.-]`.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

/// Why a raw username was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsernameError {
    #[error("username must be between 3 and 32 characters")]
    Length,
    #[error("username may only contain letters, digits, '_', '.' and '-'")]
    Characters,
}

/// A login name: 3-32 characters of `[A-Za-z0-9_.-]`, compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;
    /// The characters [`Username::parse`] accepts, as a regular expression
    /// (for the OpenAPI spec; the length is `MIN_LEN..=MAX_LEN`).
    pub const PATTERN: &'static str = "^[A-Za-z0-9_.-]+$";

    /// Parses a username exactly as given; surrounding whitespace is an error,
    /// not something to trim silently, so the stored name is what the user typed.
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(UsernameError::Length);
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(UsernameError::Characters);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with case folded: what uniqueness is checked on, so `Alice`
    /// cannot register once `alice` exists (login still compares exactly).
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a raw email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("email must be a valid address like name@example.com (at most 254 characters)")]
pub struct EmailAddressError;

/// An email address, trimmed and lower-cased so that uniqueness and login by
/// email do not depend on how the user capitalised it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_LEN: usize = 254;

    /// Accepts `local@domain.tld` shapes: one `@`, a non-empty local part, a
    /// dotted domain of letters, digits and hyphens, no whitespace. Full RFC 5322
    /// is deliberately not the goal; rejecting what a mail server would bounce is.
    pub fn parse(raw: &str) -> Result<Self, EmailAddressError> {
        let email = raw.trim().to_ascii_lowercase();
        if email.is_empty() || email.len() > Self::MAX_LEN {
            return Err(EmailAddressError);
        }
        let (local, domain) = email.split_once('@').ok_or(EmailAddressError)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local.chars().all(|c| {
                c.is_ascii_graphic()
                    && !matches!(
                        c,
                        '@' | '(' | ')' | ',' | ';' | ':' | '<' | '>' | '[' | ']' | '\\' | '"'
                    )
            });
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
        if local_ok
            && domain_ok
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
        {
            Ok(Self(email))
        } else {
            Err(EmailAddressError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a raw password was refused at registration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("password must be between 8 and 128 characters")]
pub struct PasswordError;

/// A plaintext password on its way to the hasher. Its `Debug` never shows the
/// value, so it cannot leak through a log line or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 128;

    /// Parses a new password (registration): 8-128 characters.
    pub fn parse(raw: &str) -> Result<Self, PasswordError> {
        let len = raw.chars().count();
        if (Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(PasswordError)
        }
    }

    /// Wraps a password offered at login without the registration rules:
    /// accounts migrated from the Node server may predate them, and a login
    /// must fail on the hash comparison, never on a length rule that would
    /// tell an attacker something. Over-long input is still cut off at 4 KiB
    /// so nobody can make the server hash megabytes.
    pub fn for_login(raw: &str) -> Self {
        let mut end = raw.len().min(4096);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        Self(raw[..end].to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A stored password hash in PHC (`$argon2id$...`) or legacy bcrypt (`$2b$...`) form.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(hash: impl Into<String>) -> Self {
        Self(hash.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hashes written by the Node server (bcryptjs) start with `$2a$`, `$2b$` or `$2y$`.
    pub fn is_legacy_bcrypt(&self) -> bool {
        ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| self.0.starts_with(p))
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// Why a raw user id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("user id must be 1-64 characters of letters, digits, '_' or '-'")]
pub struct UserIdError;

/// A user's stable identifier as the store assigned it (a MongoDB ObjectId in
/// hex for both stores, so ids look the same wherever a user came from).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, UserIdError> {
        if super::id::is_valid_id(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(UserIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user typed into the "username" box at login: a username or an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginName {
    Username(Username),
    Email(EmailAddress),
}

impl LoginName {
    /// Anything with an `@` is treated as an email (usernames cannot contain one).
    /// Returns `None` when the input can be neither, so the caller answers with the
    /// same "invalid credentials" it gives for a wrong password.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.contains('@') {
            EmailAddress::parse(raw).ok().map(Self::Email)
        } else {
            Username::parse(raw).ok().map(Self::Username)
        }
    }
}

/// A registered user as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: EmailAddress,
    pub password_hash: PasswordHash,
    pub created_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub role: UserRole,
}

impl User {
    /// Whether this user may take conversations over from the bot.
    pub fn is_agent(&self) -> bool {
        self.role == UserRole::Agent
    }

    /// Whether this user may hold a conversation now: an active agent. One
    /// who no longer may (demoted, deactivated) gives back what they hold.
    pub fn may_hold_conversations(&self) -> bool {
        self.is_active && self.is_agent()
    }
}

/// Why a raw role name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("role must be `user` or `agent`")]
pub struct RoleError;

/// What a user may do beyond chatting. Stores without the field (documents
/// written by the Node.js server) mean [`UserRole::User`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UserRole {
    /// A customer: chats with the bot and, on request, with an agent.
    #[default]
    User,
    /// A human who claims queued conversations and answers in the bot's place.
    Agent,
}

impl UserRole {
    /// Parses the stored or typed name, exactly (`user` or `agent`).
    pub fn parse(raw: &str) -> Result<Self, RoleError> {
        match raw {
            "user" => Ok(Self::User),
            "agent" => Ok(Self::Agent),
            _ => Err(RoleError),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for UserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user about to be stored; the store assigns the id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    pub username: Username,
    pub email: EmailAddress,
    pub password_hash: PasswordHash,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_exactly_and_read_back() {
        for role in [UserRole::User, UserRole::Agent] {
            assert_eq!(UserRole::parse(role.as_str()), Ok(role));
        }
        assert_eq!(UserRole::parse("Agent"), Err(RoleError));
        assert_eq!(UserRole::parse(""), Err(RoleError));
        assert_eq!(UserRole::default(), UserRole::User, "absent means user");
    }

    #[test]
    fn username_accepts_the_documented_alphabet_and_bounds() {
        assert!(Username::parse("abc").is_ok());
        assert!(Username::parse("A.b_c-9").is_ok());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert_eq!(Username::parse("ab"), Err(UsernameError::Length));
        assert_eq!(Username::parse(&"a".repeat(33)), Err(UsernameError::Length));
        assert_eq!(Username::parse("bad name"), Err(UsernameError::Characters));
        assert_eq!(Username::parse("émile"), Err(UsernameError::Characters));
        assert_eq!(Username::parse("a@b.c"), Err(UsernameError::Characters));
    }

    #[test]
    fn email_is_normalised_and_validated() {
        assert_eq!(
            EmailAddress::parse("  Alice@Example.COM ")
                .unwrap()
                .as_str(),
            "alice@example.com"
        );
        assert!(EmailAddress::parse("a.b+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@b.c",
            "a b@example.com",
            "a@@example.com",
            "a@exa_mple.com",
            "a@-x.com",
            ".a@example.com",
            "a..b@example.com",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn password_bounds_count_characters_not_bytes() {
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        let h = PasswordHash::new("$argon2id$v=19$secret");
        assert!(!format!("{h:?}").contains("secret"));
    }

    #[test]
    fn login_password_is_capped_on_a_char_boundary() {
        let raw = "é".repeat(3000);
        let p = Password::for_login(&raw);
        assert!(p.expose().len() <= 4096);
        assert!(p.expose().chars().all(|c| c == 'é'));
    }

    #[test]
    fn legacy_bcrypt_prefixes_are_recognised() {
        for p in ["$2a$10$x", "$2b$12$x", "$2y$10$x"] {
            assert!(PasswordHash::new(p).is_legacy_bcrypt());
        }
        assert!(!PasswordHash::new("$argon2id$v=19$m=19456").is_legacy_bcrypt());
    }

    #[test]
    fn login_name_picks_email_or_username() {
        assert!(matches!(
            LoginName::parse("bob"),
            Some(LoginName::Username(_))
        ));
        assert!(matches!(
            LoginName::parse("Bob@Example.com"),
            Some(LoginName::Email(_))
        ));
        assert_eq!(LoginName::parse("x"), None);
        assert_eq!(LoginName::parse("not an email@"), None);
    }

    #[test]
    fn user_id_rejects_injection_shapes() {
        assert!(UserId::parse("65f1c0ffee0123456789abcd").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse("{\"$gt\":\"\"}").is_err());
    }
}

/// What registration and login accept from anyone: every accepted value
/// meets its rule, and what was accepted reads back as itself.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Mostly strings near the rules (the username alphabet, an `@`, dots),
    /// with anything at all mixed in.
    fn near_a_login() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_.-]{0,40}",
            "[ A-Za-z0-9_.+@-]{0,20}@[A-Za-z0-9.-]{0,20}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn usernames_meet_the_rule_and_read_back(raw in near_a_login()) {
            match Username::parse(&raw) {
                Ok(name) => {
                    let len = name.as_str().chars().count();
                    prop_assert!((Username::MIN_LEN..=Username::MAX_LEN).contains(&len));
                    prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
                    prop_assert_eq!(name.as_str(), raw.as_str(), "never altered");
                    prop_assert_eq!(Username::parse(&name.to_string()), Ok(name));
                }
                Err(UsernameError::Length) => {
                    let len = raw.chars().count();
                    prop_assert!(!(Username::MIN_LEN..=Username::MAX_LEN).contains(&len));
                }
                Err(UsernameError::Characters) => {
                    prop_assert!(raw.chars().any(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(c))));
                }
            }
        }

        #[test]
        fn every_name_of_the_alphabet_and_length_is_a_username(raw in "[A-Za-z0-9_.-]{3,32}") {
            prop_assert!(Username::parse(&raw).is_ok());
        }

        #[test]
        fn emails_are_normalised_bounded_and_read_back(raw in near_a_login()) {
            if let Ok(email) = EmailAddress::parse(&raw) {
                let e = email.as_str();
                prop_assert!(e.len() <= EmailAddress::MAX_LEN);
                prop_assert_eq!(e, raw.trim().to_ascii_lowercase());
                prop_assert_eq!(e.matches('@').count(), 1);
                prop_assert!(!e.chars().any(|c| c.is_whitespace() || c.is_control()));
                prop_assert_eq!(EmailAddress::parse(&email.to_string()), Ok(email));
            }
        }

        #[test]
        fn login_names_are_what_their_parsers_accept(raw in near_a_login()) {
            match LoginName::parse(&raw) {
                Some(LoginName::Email(e)) => prop_assert_eq!(EmailAddress::parse(&raw), Ok(e)),
                Some(LoginName::Username(u)) => prop_assert_eq!(Username::parse(&raw), Ok(u)),
                None => prop_assert!(
                    EmailAddress::parse(&raw).is_err() || !raw.contains('@')
                ),
            }
        }

        #[test]
        fn passwords_count_characters(raw in any::<String>()) {
            let len = raw.chars().count();
            let ok = (Password::MIN_LEN..=Password::MAX_LEN).contains(&len);
            prop_assert_eq!(Password::parse(&raw).is_ok(), ok);
            let login = Password::for_login(&raw);
            prop_assert!(login.expose().len() <= 4096);
            prop_assert!(raw.starts_with(login.expose()));
            prop_assert!(raw.len() > 4096 || login.expose() == raw);
            prop_assert_eq!(format!("{login:?}"), "Password(<redacted>)");
        }

        #[test]
        fn user_ids_are_short_url_safe_words(raw in prop_oneof!["[A-Za-z0-9_-]{0,70}", any::<String>()]) {
            match UserId::parse(&raw) {
                Ok(id) => {
                    prop_assert!(super::super::id::is_valid_id(id.as_str()));
                    prop_assert_eq!(UserId::parse(&id.to_string()), Ok(id));
                }
                Err(UserIdError) => prop_assert!(!super::super::id::is_valid_id(&raw)),
            }
        }
    }
}
