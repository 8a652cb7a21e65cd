//! Request extractors whose every rejection is a problem+json naming the field.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, parsed with the path of any field at fault.
pub struct ApiJson<T>(pub T);

/// Parse a JSON body: malformed JSON is 400, well-formed JSON of the wrong shape 422.
/// The body is exactly one document: anything but whitespace after it is 400, so
/// `{…} xyz` or two documents back to back are never taken for the first alone.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(err) => Err(ApiError::bad_request(format!(
                "the body holds more than one JSON document: trailing content {}",
                position(&err.to_string())
            ))),
        },
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Data => {
                    let msg = strip_position(&inner.to_string());
                    Err(ApiError::field(field_path(&path, &msg), msg))
                }
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::bad_request(
                    format!("the body is not valid JSON: {inner}"),
                )),
            }
        }
    }
}

/// The full path of the field at fault: a missing field is named inside the
/// object that lacks it (serde's path stops at that object).
fn field_path(path: &str, msg: &str) -> String {
    let named = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(f)) => f.to_owned(),
        (".", None) => "body".to_owned(),
        (p, Some(f)) => format!("{p}.{f}"),
        (p, None) => p.to_owned(),
    }
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// " at line 1 column 42" of a serde_json error, without the leading space.
fn position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[i + 1..],
        None => "",
    }
}

/// Map a body that could not be read (too large, cut off) to its problem.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "the request body is larger than the server accepts")
    } else {
        ApiError::new(status, rejection.body_text())
    }
}

/// Whether a `Content-Type` value names JSON: the media type (before any `;`
/// parameters) is `application/json` or `application/<anything>+json`, compared
/// case-insensitively as RFC 9110 says, and nothing looser (`application/jsonx` is not JSON).
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    if !ty.eq_ignore_ascii_case("application") || !is_token(sub) {
        return false;
    }
    let sub = sub.to_ascii_lowercase();
    sub == "json" || (sub.len() > "+json".len() && sub.ends_with("+json"))
}

/// An RFC 9110 token: what a subtype may be made of (no spaces, no separators).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_content_type(req: &Request) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    match value.to_str() {
        Ok(ct) if is_json_media_type(ct) => Ok(()),
        Ok(ct) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type: application/json, got {ct}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json, got a value that is not ASCII",
        )),
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(&req)?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Raw body bytes with the same rejections as [`ApiJson`] (for hashing before parsing).
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(&req)?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        Ok(JsonBytes(bytes))
    }
}

/// Query parameters; a bad one is a 422 naming it.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let msg = text
                    .trim_start_matches("Failed to deserialize query string: ")
                    .to_owned();
                let field = msg
                    .split(':')
                    .next()
                    .filter(|f| !f.contains(' '))
                    .unwrap_or("query")
                    .to_owned();
                Err(ApiError::field(field, msg))
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        kind: String,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        tasks: Vec<Inner>,
    }

    #[test]
    fn malformed_json_is_400() {
        let e = parse_json::<Outer>(b"{\"tasks\": [")
            .err()
            .map(|e| e.status);
        assert_eq!(e, Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn trailing_content_is_400() {
        for body in [
            &br#"{"tasks": []} xyz"#[..],
            br#"{"tasks": []}{"tasks": []}"#,
            br#"{"tasks": []} 1"#,
        ] {
            let e = parse_json::<Outer>(body).err().map(|e| e.status);
            assert_eq!(e, Some(StatusCode::BAD_REQUEST), "{body:?}");
        }
        assert!(parse_json::<Outer>(b"{\"tasks\": []} \n\t ").is_ok());
    }

    #[test]
    fn json_media_types_are_matched_exactly_and_case_insensitively() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
            "APPLICATION/VND.BRIGADE+JSON ; q=1",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "application/jsonx",
            "application/json-seq",
            "text/json",
            "text/plain",
            "application/+json",
            "application",
            "application/x json",
            "",
            "text/plain; note=+json",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn wrong_shape_names_the_field() {
        let e = parse_json::<Outer>(br#"{"tasks": [{"kind": "a"}, {"kind": 5}]}"#).err();
        let e = e.map(|e| (e.status, e.errors[0].field.clone()));
        assert_eq!(
            e,
            Some((StatusCode::UNPROCESSABLE_ENTITY, "tasks[1].kind".to_owned()))
        );
        let e = parse_json::<Outer>(br#"{"tasks": [{}]}"#)
            .err()
            .map(|e| e.errors[0].field.clone());
        assert_eq!(e.as_deref(), Some("tasks[0].kind"));
    }
}
