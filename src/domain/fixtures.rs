//! The one test user every unit test builds on (compiled for tests only).

use chrono::Utc;

use super::{EmailAddress, PasswordHash, Session, SessionId, SessionUser, User, UserId, Username};

/// An active user `alice` with the given id and stored hash.
pub fn user(id: &str, hash: &str) -> User {
    User {
        id: UserId::parse(id).expect("fixture ids are valid"),
        username: Username::parse("alice").expect("fixture name is valid"),
        email: EmailAddress::parse("alice@example.com").expect("fixture email is valid"),
        password_hash: PasswordHash::new(hash),
        created_at: Utc::now(),
        last_login: None,
        is_active: true,
        role: super::UserRole::User,
    }
}

/// An empty session of [`user`]`("u1", ..)`.
pub fn session(id: &SessionId) -> Session {
    Session::new(
        id.clone(),
        SessionUser {
            id: UserId::parse("u1").expect("fixture ids are valid"),
            username: Username::parse("alice").expect("fixture name is valid"),
        },
        Utc::now(),
    )
}
