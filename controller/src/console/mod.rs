//! The web console: server-rendered pages at `/` on the API listener.
//!
//! Pages are HTML built by [`maud`] (escaped by default) and embedded in
//! the binary with their stylesheet and one small script; building needs
//! no Node toolchain. Every page that only shows things works without
//! JavaScript; the script refreshes a page's `<main>` when the event
//! stream says that what it shows changed, and follows logs.
//!
//! Everything the console does is a typed operation sent to the driver
//! with [`crate::api::ask`] as the signed-in user: the same permission
//! checks, the same audit records as the CLI and the REST API. The console
//! decides nothing itself; it only hides the buttons that
//! [`crate::policy::Directory::allows`] says the user may not use.
//!
//! Requests:
//! - a page (`GET`) takes a [`Viewer`]: the signed-in user, or a redirect
//!   to the sign-in page;
//! - a change (`POST`, an HTML form) takes a [`Change`]: the viewer and the
//!   form's fields, after the form's CSRF token and the request's origin
//!   were checked. Its handler calls [`finish`]: a redirect back with a
//!   message (post/redirect/get), or an error page with the operation's
//!   status.

// pages: the ANSI converter of logs and the pages slice (issue 16).
pub mod ansi;
pub mod assets;
pub mod events;
pub mod layout;
// pages (issue 16).
pub mod pages;
pub mod session;
mod signin;
// pipe: the pipelines, a pipeline's page and its changes.
pub mod pipelines;
pub mod steer;

use crate::api::ApiState;
use crate::auth::{Caller, Via};
use crate::ops::{OpError, Operation};
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
pub use session::{Console, Flash};

/// The console's routes (the API listener serves them beside `/v1`).
pub fn routes() -> Router<ApiState> {
    Router::new()
        // The lead's: sign-in, sign-out, assets, the event stream.
        .route("/sign-in", get(signin::form).post(signin::submit))
        .route("/sign-out", post(signin::sign_out))
        .route("/assets/{file}", get(assets::serve))
        .route("/console/events", get(events::stream))
        // pipe: the pipelines and a pipeline's page and its changes.
        .route("/", get(pipelines::list))
        .route("/pipelines/{name}", get(pipelines::page))
        .route("/pipelines/{name}/start", post(steer::start))
        .route("/pipelines/{name}/executions/{id}/stop", post(steer::stop))
        .route("/pipelines/{name}/stages/{stage}/retry", post(steer::retry))
        .route("/pipelines/{name}/stages/{stage}/rollback", post(steer::rollback))
        .route("/pipelines/{name}/stages/{stage}/transition/disable", post(steer::disable))
        .route("/pipelines/{name}/stages/{stage}/transition/enable", post(steer::enable))
        .route("/pipelines/{name}/stages/{stage}/actions/{action}/approval", post(steer::approval))
        // pages: executions, actions and logs, agents, plugins, secrets,
        // audit, the revision flow.
        .route("/pipelines/{name}/executions", get(pages::executions::history))
        .route("/pipelines/{name}/executions/{id}", get(pages::executions::execution))
        .route("/pipelines/{name}/executions/{id}/artifacts/{artifact}", get(pages::executions::download))
        .route("/pipelines/{name}/executions/{id}/actions/{stage}/{action}", get(pages::action::page))
        .route("/pipelines/{name}/executions/{id}/actions/{stage}/{action}/log", get(pages::action::log_lines))
        .route("/agents", get(pages::fleet::agents))
        .route("/agents/{id}/{verb}", post(pages::fleet::agent_change))
        .route("/plugins", get(pages::fleet::plugins))
        .route("/secrets", get(pages::fleet::secrets))
        .route("/audit", get(pages::audit::page))
        .route("/revisions", get(pages::revisions::list))
        .route("/revisions/{revision}", get(pages::revisions::flow))
        .layer(middleware::from_fn(security_headers))
}

/// Headers on every console response: a strict content security policy
/// (scripts and styles only from `/assets`, nothing inline, no framing),
/// no sniffing, no referrer to other sites, and no caching of pages.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The signed-in user of a page or a change.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Who the operations run as: the session's user, as its credential
    /// says now, with `via: Session(id)` and the request's origin.
    pub caller: Caller,
    /// The session's public id.
    pub session: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// The message the last change left, shown once (on a page, not on a
    /// live refresh).
    pub flash: Option<Flash>,
    /// The cookie's secret, to leave a message for the next page.
    secret: String,
}

/// The header the console's script sends when it refreshes a page in
/// place: such a request takes no message meant for the next page.
pub const LIVE_HEADER: &str = "x-sluice-live";

impl Viewer {
    /// Whether the user may call `O` on `resource`: whether to show its
    /// button. The driver checks again when it is pressed.
    pub fn may<O: Operation>(&self, state: &ApiState, resource: &str) -> bool {
        state.directory.allows(&self.caller, O::PERMISSION, resource)
    }

    /// Leaves a message for the next page of this session.
    pub fn leave(&self, state: &ApiState, flash: Flash) {
        state.console.sessions().set_flash(&self.secret, flash);
    }

    /// Resolves the session of a request: `Err` says why the user must
    /// sign in (again).
    fn of(parts: &Parts, state: &ApiState) -> Result<Self, signin::Reason> {
        let secret = state.console.secret_in(&parts.headers).ok_or(signin::Reason::SignIn)?;
        let now = session::now();
        // A live refresh is the page's script, not the user: it does not
        // keep the session from idling out.
        let live = parts.headers.contains_key(LIVE_HEADER);
        let session =
            if live { state.console.sessions().peek(&secret, now) } else { state.console.sessions().touch(&secret, now) };
        let session = session.ok_or(signin::Reason::SignIn)?;
        let Some(caller) = session::resolve(state, &session.credential) else {
            // The token or key was revoked: the session ends with it.
            state.console.sessions().close(&secret);
            return Err(signin::Reason::Revoked);
        };
        let flash = if parts.method == Method::GET && !live { state.console.sessions().take_flash(&secret) } else { None };
        let caller = caller.with_via(Via::Session(session.id.clone())).with_origin(crate::api::origin_of(&parts.extensions));
        Ok(Self { caller, session: session.id, csrf: session.csrf, flash, secret })
    }
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        Self::of(parts, state).map_err(|reason| signin::redirect_to_sign_in(path, reason))
    }
}

/// A form's fields, in order (a name may repeat: a pipeline's variables).
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, when not empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The first value of `name`, or a 400 naming it.
    pub fn require(&self, name: &str) -> Result<&str, ConsoleError> {
        self.text(name).ok_or_else(|| ConsoleError::new(StatusCode::BAD_REQUEST, format!("the form has no {name}")))
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The largest form the console accepts.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The field that carries a form's CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// A change asked by a form: the viewer and the fields, after the checks
/// a browser's cross-site request cannot pass: the session's cookie
/// (`SameSite=Strict`: never sent from another site), the form's CSRF
/// token (never known to another site), and the request's `Origin` and
/// `Sec-Fetch-Site` when the browser sends them.
#[derive(Debug, Clone)]
pub struct Change {
    pub viewer: Viewer,
    pub fields: Fields,
}

impl FromRequest<ApiState> for Change {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let Ok(viewer) = Viewer::of(&parts, state) else {
            return Err(
                ConsoleError::new(StatusCode::UNAUTHORIZED, "sign in first: this change was not made").into_response()
            );
        };
        let path = parts.uri.path().to_string();
        let refuse = |why: &str| {
            let entry = crate::audit::Entry::of_caller(&viewer.caller, "ConsoleForm", &format!("POST {path}"));
            let entry = entry.failed("AccessDeniedException", why);
            (entry, ConsoleError::new(StatusCode::FORBIDDEN, format!("refused: {why}; nothing was changed")))
        };
        if let Err(why) = same_origin(&parts.headers) {
            let (entry, error) = refuse(why);
            crate::api::send_audit_record(state, entry).await;
            return Err(error.into_response());
        }
        let body = match axum::body::to_bytes(axum::body::Body::new(body), MAX_FORM_BYTES).await {
            Ok(body) => body,
            Err(_) => return Err(ConsoleError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response()),
        };
        let fields = Fields::parse(&body);
        let sent = fields.get(CSRF_FIELD).unwrap_or_default();
        if !crate::workers::constant_time_eq(sent.as_bytes(), viewer.csrf.as_bytes()) {
            let (entry, error) =
                refuse("the form's CSRF token is missing or not this session's (a stale page or a forged request)");
            crate::api::send_audit_record(state, entry).await;
            return Err(error.into_response());
        }
        Ok(Self { viewer, fields })
    }
}

/// Refuses a request a browser says came from another site. Browsers send
/// `Sec-Fetch-Site` and, on POST, `Origin`; a request with neither (a
/// script) still needs the session cookie and the CSRF token.
fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), &'static str> {
    let value = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(site) = value("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err("the request came from another site");
    }
    if let (Some(origin), Some(host)) = (value("origin"), value("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin_host != host {
            return Err("the request's Origin is not this console");
        }
    }
    Ok(())
}

/// An error shown as a page of its own, with its HTTP status.
#[derive(Debug, Clone)]
pub struct ConsoleError {
    pub status: StatusCode,
    pub message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<OpError> for ConsoleError {
    fn from(e: OpError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        (self.status, layout::bare(title, &self.message)).into_response()
    }
}

/// The end of a change: on success, a message and a redirect (303) to
/// `back`; on failure, the operation's error as a page with its status
/// (403 for a refusal, 404, 409, ...), saying nothing was done.
pub fn finish(state: &ApiState, viewer: &Viewer, back: &str, result: Result<String, OpError>) -> Response {
    match result {
        Ok(done) => {
            viewer.leave(state, Flash::done(done));
            see_other(back)
        }
        Err(e) => ConsoleError::from(e).into_response(),
    }
}

/// A 303 redirect (the answer to a form: the browser then GETs `to`).
pub fn see_other(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Percent-encodes one path segment or query value (names in links).
pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_sites_request_is_refused_before_its_body_is_read() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&headers(&[])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        let same = [("origin", "https://127.0.0.1:7000"), ("host", "127.0.0.1:7000")];
        assert!(same_origin(&headers(&same)).is_ok());
        let other = [("origin", "https://evil.example"), ("host", "127.0.0.1:7000")];
        assert!(same_origin(&headers(&other)).is_err());
        // A sandboxed frame's `Origin: null` is not this console either.
        assert!(same_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:7000")])).is_err());
    }

    #[test]
    fn fields_keep_order_and_repeats() {
        let f = Fields::parse(b"csrf=t&name=A&value=1&name=B&value=%20two+&empty=");
        assert_eq!(f.get("csrf"), Some("t"));
        assert_eq!(f.all("name").collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(f.all("value").collect::<Vec<_>>(), ["1", " two "]);
        assert_eq!(f.text("empty"), None);
        assert!(f.require("missing").is_err());
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
