//! What every room of the web app shares: the handlers' state ([`App`]: the
//! server's [`State`] and the gates that bound concurrent work), the error type
//! and its JSON shape, and the one way to run blocking work.
//!
//! Every error is JSON, `{"error": MESSAGE, "status": CODE}`, with a 4xx code
//! for anything the client can fix. Model and disk work runs on the blocking
//! pool behind a semaphore; a panic there (a bug) becomes a 500 for that
//! request only. Nothing here imports a room, so every room can import it.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use super::state::State;

/// Largest request body (an uploaded query image); larger gives 413.
pub(crate) const MAX_BODY: usize = 64 << 20;
/// Blocking threads (model, decoding, disk) at most.
pub(crate) const MAX_BLOCKING: usize = 64;
/// Searches answered at once (they share passes over the index); below
/// [`MAX_BLOCKING`], so thumbnails and tiles still get threads.
const SEARCHES_IN_FLIGHT: usize = 32;
/// Slide queries ("more slides like this") answered at once; more wait their turn.
pub(crate) const LIKE_IN_FLIGHT: usize = 2;

/// The state every handler gets.
#[derive(Clone)]
pub(super) struct App {
    pub(super) state: Arc<State>,
    /// Searches in flight; more wait their turn. Many, so that concurrent
    /// searches can share one pass over the index (`batch`).
    pub(super) search_gate: Arc<Semaphore>,
    /// Uploaded query images being decoded and embedded; more wait their turn.
    pub(super) upload_gate: Arc<Semaphore>,
    /// Thumbnails and deep-zoom tiles being made; more wait their turn.
    pub(super) thumb_gate: Arc<Semaphore>,
    /// Slide queries ("more slides like this") being answered; few, as each holds
    /// a list of the index's tiles while it runs.
    pub(super) like_gate: Arc<Semaphore>,
}

impl App {
    /// The handlers' state over `state`, with gates sized to this machine.
    pub(super) fn new(state: Arc<State>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        App {
            state,
            search_gate: Arc::new(Semaphore::new(SEARCHES_IN_FLIGHT)),
            upload_gate: Arc::new(Semaphore::new(cores.clamp(2, 16))),
            thumb_gate: Arc::new(Semaphore::new((2 * cores).clamp(2, 32))),
            like_gate: Arc::new(Semaphore::new(LIKE_IN_FLIGHT)),
        }
    }
}

/// An error response: JSON with the status repeated inside.
pub(crate) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The JSON error response `{"error": message, "status": code}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": message.into(), "status": status.as_u16()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A 400 with `message`.
pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// A 200 with `value` as JSON.
pub(super) fn json_ok<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Runs `work` on the blocking pool once `gate` lets it in; its error is the
/// response, and a panic in it (a bug) is a 500 for this request only.
pub(super) async fn on_pool<F>(gate: &Arc<Semaphore>, what: &str, work: F) -> Response
where
    F: FnOnce() -> Result<Response, ApiError> + Send + 'static,
{
    let Ok(_permit) = gate.clone().acquire_owned().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error while {what} (a bug; please report it)"),
        ),
    }
}
