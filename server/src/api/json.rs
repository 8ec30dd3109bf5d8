//! A JSON body extractor whose every rejection is one of our JSON errors.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Like [`axum::Json`], but a bad body answers an [`ApiError`]: 400 for malformed JSON,
/// 415 for a missing `Content-Type: application/json`, 413 past the size limit, 422 for
/// JSON of the wrong shape (with the path of the offending field).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => {
            // serde's message says which field and what it expected.
            let detail = std::error::Error::source(&err).map_or_else(|| err.body_text(), ToString::to_string);
            ApiError::invalid("invalid_request", "", detail)
        }
        JsonRejection::JsonSyntaxError(err) => {
            let detail = std::error::Error::source(&err).map_or_else(|| err.body_text(), ToString::to_string);
            ApiError::BadRequest(format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("send the body as JSON with `Content-Type: application/json`".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is larger than this server accepts".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}
