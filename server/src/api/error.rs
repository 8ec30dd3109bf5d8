//! The one mapping from what went wrong to an HTTP answer.
//!
//! Every error body is an [`ApiErrorBody`]: `detail` for people (the prototype's field),
//! `code` for programs, `errors` for per-field problems. 5xx bodies say nothing of the
//! cause; the cause goes to the server's log.

use axum::{
    extract::rejection::QueryRejection,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use weft_app::wire::{ApiErrorBody, Problem};

use crate::runner::RunnerError;

/// Answers the server-rendered page being rendered with a 404: its data was not found.
pub fn page_not_found() {
    if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(StatusCode::NOT_FOUND);
    }
}

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON, or lacks what the request needs.
    BadRequest(String),
    /// 404: the thing named does not exist.
    NotFound {
        /// A stable code such as `run_not_found`.
        code: &'static str,
        /// What was not found.
        detail: String,
    },
    /// 403: the request may not be made from where it comes (its Host, its Origin).
    Forbidden {
        /// A stable code such as `host_not_allowed`.
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// 401: the request needs a token, and brought none, or one that is not (or no
    /// longer) valid.
    Unauthorized {
        /// `token_required` or `invalid_token`.
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// 429: this principal started runs faster than allowed; retry after the seconds.
    TooManyRequests {
        /// Why.
        detail: String,
        /// Seconds to wait before retrying.
        retry_after: u32,
    },
    /// 408: the request took longer than the server's request timeout.
    Timeout,
    /// 405: the path exists, but not for this method.
    MethodNotAllowed,
    /// 409: the request conflicts with where the thing stands (a run already ended).
    Conflict {
        /// A stable code such as `run_ended`.
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// 503: at capacity; the client should retry after the given seconds.
    Unavailable {
        /// Why.
        detail: String,
        /// Seconds to wait before retrying.
        retry_after: u32,
    },
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge(String),
    /// 415: the body is not sent as `application/json`.
    UnsupportedMediaType(String),
    /// 422: well-formed JSON whose content is wrong.
    Invalid {
        /// A stable code such as `invalid_graph`.
        code: &'static str,
        /// A summary.
        detail: String,
        /// Each problem, with where it is.
        errors: Vec<Problem>,
    },
    /// 500: our fault; details are logged, not sent.
    Internal,
}

impl ApiError {
    /// A 422 with one problem.
    pub fn invalid(code: &'static str, path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Invalid {
            code,
            detail: if path.is_empty() {
                message.clone()
            } else {
                format!("{path}: {message}")
            },
            errors: vec![Problem {
                path: path.to_owned(),
                message,
            }],
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!("bad query: {}", rejection.body_text()))
    }
}

impl From<RunnerError> for ApiError {
    fn from(err: RunnerError) -> Self {
        match err {
            RunnerError::GraphNotFound(_) => Self::NotFound {
                code: "graph_not_found",
                detail: err.to_string(),
            },
            RunnerError::RunNotFound(_) => Self::NotFound {
                code: "run_not_found",
                detail: err.to_string(),
            },
            RunnerError::UnknownPreset(ref name) => {
                let known: Vec<&str> = crate::tools::presets::PRESETS.iter().map(|p| p.name).collect();
                Self::invalid(
                    "unknown_preset",
                    "/preset",
                    format!("no preset named `{name}` (known: {})", known.join(", ")),
                )
            }
            RunnerError::PresetUnavailable(why) => Self::Invalid {
                code: "preset_unavailable",
                detail: why.clone(),
                errors: vec![Problem {
                    path: "/preset".into(),
                    message: why,
                }],
            },
            RunnerError::InvalidGraph(graph) => Self::Invalid {
                code: "invalid_graph",
                detail: graph.to_string(),
                errors: graph.problems,
            },
            RunnerError::AlreadyEnded(_) => Self::Conflict {
                code: "run_ended",
                detail: err.to_string(),
            },
            RunnerError::RunLive(_) => Self::Conflict {
                code: "run_live",
                detail: err.to_string(),
            },
            RunnerError::GraphHasLiveRuns(_) => Self::Conflict {
                code: "graph_has_live_runs",
                detail: err.to_string(),
            },
            RunnerError::QueueFull { .. } | RunnerError::ShuttingDown => Self::Unavailable {
                detail: err.to_string(),
                retry_after: 1,
            },
            RunnerError::InvalidFork(ref why) => Self::invalid("invalid_fork", "", why.clone()),
            RunnerError::InterruptNotFound { .. } => Self::NotFound {
                code: "interrupt_not_found",
                detail: err.to_string(),
            },
            RunnerError::InterruptResolved(_) => Self::Conflict {
                code: "interrupt_resolved",
                detail: err.to_string(),
            },
            RunnerError::InvalidAnswer(problems) => Self::Invalid {
                code: "invalid_input",
                detail: format!(
                    "the input does not match the question's schema: {}",
                    crate::tools::schema::summary(&problems)
                ),
                errors: problems,
            },
            RunnerError::InvalidInitialState(problems) => Self::Invalid {
                code: "invalid_input",
                detail: format!(
                    "the initial state does not match the preset's input schema: {}",
                    crate::tools::schema::summary(&problems)
                ),
                errors: problems,
            },
            RunnerError::InvalidMaxSteps => Self::invalid("invalid_request", "/max_steps", err.to_string()),
            RunnerError::Store(store) => {
                tracing::error!(error = %store, "store error");
                Self::Internal
            }
        }
    }
}

impl ApiError {
    /// The status and the body this error answers with.
    fn parts(self) -> (StatusCode, ApiErrorBody) {
        let (status, code, detail, errors) = match self {
            Self::Conflict { code, detail } => (StatusCode::CONFLICT, code, detail, Vec::new()),
            Self::Unavailable { detail, .. } => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity", detail, Vec::new()),
            Self::BadRequest(detail) => (StatusCode::BAD_REQUEST, "bad_request", detail, Vec::new()),
            Self::NotFound { code, detail } => (StatusCode::NOT_FOUND, code, detail, Vec::new()),
            Self::Forbidden { code, detail } => (StatusCode::FORBIDDEN, code, detail, Vec::new()),
            Self::Unauthorized { code, detail } => (StatusCode::UNAUTHORIZED, code, detail, Vec::new()),
            Self::TooManyRequests { detail, .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail, Vec::new()),
            Self::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request took longer than this server allows".to_owned(),
                Vec::new(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method".to_owned(),
                Vec::new(),
            ),
            Self::PayloadTooLarge(detail) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail, Vec::new()),
            Self::UnsupportedMediaType(detail) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                detail,
                Vec::new(),
            ),
            Self::Invalid { code, detail, errors } => (StatusCode::UNPROCESSABLE_ENTITY, code, detail, errors),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side; it has been logged".to_owned(),
                Vec::new(),
            ),
        };
        let body = ApiErrorBody {
            detail,
            code: code.to_owned(),
            errors,
        };
        (status, body)
    }

    /// The body this error answers with, for callers that speak no HTTP (the
    /// server-rendered UI).
    pub fn into_body(self) -> ApiErrorBody {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Self::Unavailable { retry_after, .. } | Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let unauthorized = matches!(self, Self::Unauthorized { .. });
        let (status, body) = self.parts();
        let mut response = (status, Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weft\""),
            );
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
