//! What the OpenAPI spec says beyond what poem-openapi derives on its own:
//! plain `application/json` bodies, the bearer security scheme, and strings
//! documented with the rules the domain enforces (without poem-openapi
//! enforcing them first, which would answer `invalid_request` where the
//! domain answers `invalid_username`).

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use poem::http::header;
use poem::{FromRequest, IntoResponse, Request, RequestBody, Response};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, MetaSecurityScheme, Registry};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::Value;

use crate::domain::{EmailAddress, Password, Username};

/// The media type of every JSON body, requests and responses alike. JSON is
/// UTF-8 by definition (RFC 8259), so no `charset` parameter.
pub const JSON_MEDIA_TYPE: &str = "application/json";

/// A JSON request or response body: poem-openapi's `Json`, documented and
/// sent as plain [`JSON_MEDIA_TYPE`] rather than `application/json;
/// charset=utf-8`, so the spec and the `Content-Type` header say the same.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Type> Payload for Json<T> {
    const CONTENT_TYPE: &'static str = JSON_MEDIA_TYPE;

    /// Any `application/json` or `+json` type, parameters allowed.
    fn check_content_type(content_type: &str) -> bool {
        <poem_openapi::payload::Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON> ParsePayload for Json<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        let value = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&data).map_err(|err| ParseRequestPayloadError {
                reason: err.to_string(),
            })?
        };
        let value = T::parse_from_json(Some(value)).map_err(|err| ParseRequestPayloadError {
            reason: err.into_message(),
        })?;
        Ok(Self(value))
    }
}

impl<T: ToJSON> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let body = self.0.to_json_string();
        Response::builder()
            .header(header::CONTENT_TYPE, JSON_MEDIA_TYPE)
            .body(body)
    }
}

poem_openapi::impl_apirequest_for_payload!(Json<T>, T: ParseFromJSON);

/// The name of the bearer security scheme in the spec.
const BEARER_SCHEME: &str = "bearerAuth";

/// The `Authorization: Bearer <token>` of a request, if it has one, declared
/// in the spec as the HTTP bearer (JWT) security scheme, so Swagger UI shows
/// its Authorize button and sends the token. Extraction never fails: a
/// missing or bad token is the operation's own `401` with its own code.
///
/// `OPTIONAL` operations also take the token another way (`verify` reads it
/// from the body too), so the spec lists "no security" as an alternative.
pub struct BearerToken<const OPTIONAL: bool = false>(pub Option<String>);

/// A bearer token the operation can also take from elsewhere.
pub type OptionalBearerToken = BearerToken<true>;

impl<'a, const OPTIONAL: bool> ApiExtractor<'a> for BearerToken<OPTIONAL> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            BEARER_SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "The `token` from register, login or refresh, sent as \
                     `Authorization: Bearer <token>`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME]
    }

    fn has_security_fallback() -> bool {
        OPTIONAL
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(Self(bearer_token(request)))
    }
}

/// The token from `Authorization: Bearer <token>`, if that header is present.
pub fn bearer_token(req: &Request) -> Option<String> {
    let value = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A rule the domain enforces on a string, as the spec states it.
pub trait StringRule: Send + Sync + 'static {
    const MIN_LENGTH: Option<usize> = None;
    const MAX_LENGTH: Option<usize> = None;
    const PATTERN: Option<&'static str> = None;
    const FORMAT: Option<&'static str> = None;
}

/// A string documented with `R`, the rule the domain applies to it.
/// Parsed like any string: the domain judges it and answers with its own code.
pub struct Documented<R>(pub String, PhantomData<fn() -> R>);

impl<R> Documented<R> {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into(), PhantomData)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<R> std::fmt::Debug for Documented<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<R> Clone for Documented<R> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<R: StringRule> Type for Documented<R> {
    const IS_REQUIRED: bool = true;

    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: R::FORMAT,
            min_length: R::MIN_LENGTH,
            max_length: R::MAX_LENGTH,
            pattern: R::PATTERN.map(str::to_owned),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<R: StringRule> ParseFromJSON for Documented<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        String::parse_from_json(value)
            .map(Self::new)
            .map_err(poem_openapi::types::ParseError::propagate)
    }
}

impl<R: StringRule> ToJSON for Documented<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// [`Username::parse`]: 3-32 characters of `[A-Za-z0-9_.-]`.
pub enum UsernameRule {}

impl StringRule for UsernameRule {
    const MIN_LENGTH: Option<usize> = Some(Username::MIN_LEN);
    const MAX_LENGTH: Option<usize> = Some(Username::MAX_LEN);
    const PATTERN: Option<&'static str> = Some(Username::PATTERN);
}

/// [`EmailAddress::parse`]: an address of at most 254 characters (once
/// trimmed; the server trims and lower-cases it).
pub enum EmailRule {}

impl StringRule for EmailRule {
    const MAX_LENGTH: Option<usize> = Some(EmailAddress::MAX_LEN);
    const FORMAT: Option<&'static str> = Some("email");
}

/// [`Password::parse`] at registration: 8-128 characters.
pub enum PasswordRule {}

impl StringRule for PasswordRule {
    const MIN_LENGTH: Option<usize> = Some(Password::MIN_LEN);
    const MAX_LENGTH: Option<usize> = Some(Password::MAX_LEN);
}

/// A time the server wrote with [`crate::domain::time::iso_millis`].
pub enum DateTimeRule {}

impl StringRule for DateTimeRule {
    const FORMAT: Option<&'static str> = Some("date-time");
}

/// An identifier ([`crate::domain::id::is_valid_id`]): 1-64 characters of
/// `[A-Za-z0-9_-]`.
pub enum IdRule {}

impl StringRule for IdRule {
    const MIN_LENGTH: Option<usize> = Some(1);
    const MAX_LENGTH: Option<usize> = Some(crate::domain::id::MAX_ID_LEN);
    const PATTERN: Option<&'static str> = Some(crate::domain::id::ID_PATTERN);
}

/// On the WebSocket (which serialises with serde) the same plain string.
impl<R> serde::Serialize for Documented<R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
