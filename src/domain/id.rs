//! The one rule every identifier obeys, whoever issued it (a store, this
//! server, a client): safe to put in a URL, a log line or a Redis key as is.

/// Longest identifier accepted.
pub const MAX_ID_LEN: usize = 64;

/// The characters [`is_valid_id`] accepts, as a regular expression (for the
/// OpenAPI spec; the length is 1 to [`MAX_ID_LEN`]).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]+$";

/// 1-64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_url_safe_words() {
        assert!(is_valid_id("sess_3f2a"));
        assert!(is_valid_id("65a1b2c3d4e5f6a7b8c9d0e1"));
        assert!(is_valid_id(&"a".repeat(MAX_ID_LEN)));
        for bad in ["", "a b", "a/b", "é", "a:b", &"a".repeat(MAX_ID_LEN + 1)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The rule, checked against a model of it written another way.
        #[test]
        fn ids_are_exactly_the_short_url_safe_words(raw in prop_oneof!["[A-Za-z0-9_-]{0,70}", any::<String>()]) {
            let model = (1..=MAX_ID_LEN).contains(&raw.chars().count())
                && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            prop_assert_eq!(is_valid_id(&raw), model);
        }
    }
}
