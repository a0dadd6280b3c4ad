//! Signing in and out of the console.
//!
//! A user signs in with an API token (`sluice token create`) or an access
//! key's id and secret (`sluice access-key create`). Both are checked
//! exactly as the API checks them; a failure is recorded in the audit log
//! (within the refusal budget) and says nothing about which part was
//! wrong. Sign-in and sign-out are recorded as `SignIn` and `SignOut`.

use super::session::{self, Credential};
use super::{Change, ConsoleError, Fields, see_other};
use crate::api::ApiState;
use crate::auth::{Caller, Via};
use crate::ops::OpError;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, html};
use serde::Deserialize;

/// Why the sign-in page is shown, beyond "not signed in".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No session cookie, or one of a session that ended.
    SignIn,
    /// The session's token or key was revoked.
    Revoked,
}

impl Reason {
    fn text(self) -> Option<&'static str> {
        match self {
            Self::SignIn => None,
            Self::Revoked => Some("Your token or access key was revoked: sign in again."),
        }
    }
}

/// A redirect (303) to the sign-in page that comes back to `path` after.
pub fn redirect_to_sign_in(path: &str, reason: Reason) -> Response {
    let mut to = format!("/sign-in?next={}", super::enc(path));
    if reason == Reason::Revoked {
        to.push_str("&reason=revoked");
    }
    see_other(&to)
}

/// Where a sign-in may send the browser next: a path of this console,
/// never another site (`//host`, `/\host`, `https:`), never the sign-in
/// page itself.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.starts_with("/sign-in")
                && path.chars().all(|c| !c.is_control() && c != '\\') =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    reason: Option<String>,
}

/// `GET /sign-in`.
pub async fn form(Query(q): Query<SignInQuery>) -> Html<String> {
    let reason = if q.reason.as_deref() == Some("revoked") { Reason::Revoked } else { Reason::SignIn };
    page(&safe_next(q.next.as_deref()), reason.text())
}

fn page(next: &str, message: Option<&str>) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Sluice" }
                link rel="stylesheet" href=(super::assets::url("console.css"));
            }
            body {
                main #main .bare .sign-in {
                    h1 { "Sign in to Sluice" }
                    @if let Some(message) = message {
                        p.flash.failed role="alert" { (message) }
                    }
                    form method="post" action="/sign-in" {
                        input type="hidden" name="next" value=(next);
                        fieldset {
                            legend { "With an API token" }
                            label for="token" { "API token" }
                            input #token type="password" name="token" autocomplete="current-password" spellcheck="false";
                        }
                        fieldset {
                            legend { "Or with an access key" }
                            label for="access-key-id" { "Access key ID" }
                            input #access-key-id type="text" name="access_key_id" autocomplete="username" spellcheck="false";
                            label for="secret-access-key" { "Secret access key" }
                            input #secret-access-key type="password" name="secret_access_key" autocomplete="current-password";
                        }
                        button.primary type="submit" { "Sign in" }
                    }
                    p.hint { "An administrator gives you a token with " code { "sluice token create --user NAME" } "." }
                }
            }
        }
    };
    Html(markup.into_string())
}

/// The caller and credential a sign-in form proves, if any.
fn check(state: &ApiState, fields: &Fields) -> Option<(Caller, Credential)> {
    if let Some(token) = fields.text("token") {
        let caller = state.tokens.lookup(token)?;
        return Some((caller, Credential::Token(crate::auth::hash(token))));
    }
    let id = fields.text("access_key_id")?;
    let sent = fields.get("secret_access_key").unwrap_or_default().trim();
    let (secret, caller) = state.aws.keys.lookup(id)?;
    crate::workers::constant_time_eq(secret.as_bytes(), sent.as_bytes())
        .then(|| (caller, Credential::AccessKey(id.to_string())))
}

/// `POST /sign-in`.
pub async fn submit(State(state): State<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let origin = crate::api::origin_of(&parts.extensions);
    // Signing a victim in as someone else (login CSRF) needs a post from
    // another site: refused like any other change.
    if let Err(why) = super::same_origin(&parts.headers) {
        return ConsoleError::new(StatusCode::FORBIDDEN, format!("refused: {why}")).into_response();
    }
    let Ok(body) = axum::body::to_bytes(axum::body::Body::new(body), 16 * 1024).await else {
        return ConsoleError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response();
    };
    let fields = Fields::parse(&body);
    let next = safe_next(fields.get("next"));
    let Some((caller, credential)) = check(&state, &fields) else {
        let refusal = OpError::Unauthorized("the token or access key is not valid".into());
        // Recorded as nobody: the form's claim is not an identity. An id
        // shaped like an access key's is named in the message, shortened.
        let anonymous = Caller::new(crate::api::ANONYMOUS, crate::auth::Role::Operator).with_origin(origin);
        let entry = crate::audit::Entry::of_caller(&anonymous, "SignIn", "console");
        let message = failed_sign_in_message(&refusal.to_string(), fields.text("access_key_id"));
        crate::api::send_refusal_record(&state, entry.failed(refusal.aws_type(), &message)).await;
        let mut response = page(&next, Some("That token or access key is not valid.")).into_response();
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    };
    // Signing in again from the same browser ends its previous session
    // (it would otherwise live on, unreachable, until it idled out).
    let previous = state.console.secret_in(&parts.headers);
    let (secret, opened) = {
        let mut sessions = state.console.sessions();
        if let Some(previous) = previous {
            sessions.close(&previous);
        }
        sessions.open(credential, session::now())
    };
    let caller = caller.with_via(Via::Session(opened.id.clone())).with_origin(origin);
    let entry = crate::audit::Entry::of_caller(&caller, "SignIn", &crate::policy::named("user", &caller.user));
    crate::api::send_audit_record(&state, entry).await;
    tracing::info!(user = %caller.user, session = %opened.id, "console sign-in");
    with_cookie(see_other(&next), &state.console.set_cookie(&secret))
}

/// The audit message of a failed sign-in: the refusal, and the access key
/// id the form claimed only when it looks like one (`AKSL` and base32),
/// cut to its public prefix, so that no free text reaches the audit log.
fn failed_sign_in_message(refusal: &str, claimed: Option<&str>) -> String {
    match claimed {
        Some(id) if looks_like_access_key_id(id) => format!("{refusal} (access key id {}…)", &id[..12]),
        _ => refusal.to_string(),
    }
}

fn looks_like_access_key_id(id: &str) -> bool {
    id.len() == 20
        && id.starts_with(crate::aws::keys::KEY_ID_PREFIX)
        && id[4..].bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// `POST /sign-out`.
pub async fn sign_out(State(state): State<ApiState>, change: Change) -> Response {
    let viewer = change.viewer;
    state.console.sessions().close(&viewer.secret);
    let entry =
        crate::audit::Entry::of_caller(&viewer.caller, "SignOut", &crate::policy::named("user", &viewer.caller.user));
    crate::api::send_audit_record(&state, entry).await;
    with_cookie(see_other("/sign-in"), &state.console.clear_cookie())
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_goes_back_to_this_console() {
        assert_eq!(safe_next(Some("/pipelines/web?x=1")), "/pipelines/web?x=1");
        for hostile in ["//evil.example/", "/\\evil.example", "https://evil.example/", "evil", "/sign-in?next=/", "/a\nb"] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_failed_sign_in_names_no_claimed_user_and_only_a_key_shaped_id_shortened() {
        let refusal = "not valid";
        assert_eq!(failed_sign_in_message(refusal, Some("admin")), "not valid");
        assert_eq!(failed_sign_in_message(refusal, Some(&"A".repeat(10_000))), "not valid");
        assert_eq!(failed_sign_in_message(refusal, Some("AKSL<script>alert(1)")), "not valid");
        assert_eq!(failed_sign_in_message(refusal, None), "not valid");
        // 8 and 9 are not base32.
        assert_eq!(failed_sign_in_message(refusal, Some("AKSLABCDEFGH23456789")), "not valid");
        let message = failed_sign_in_message(refusal, Some("AKSLABCDEFGH234567AB"));
        assert_eq!(message, "not valid (access key id AKSLABCDEFGH…)");
    }
}
