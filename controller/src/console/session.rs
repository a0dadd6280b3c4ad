//! Console sessions: who is signed in, with what, until when.
//!
//! Signing in exchanges a credential (an API token, or an access key's id
//! and secret) for a session: a random secret in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure`, and named `__Host-…`, over HTTPS).
//! The controller keeps only the secret's hash, the session's public id
//! (what the audit log names), the credential it was opened with (a
//! token's hash or an access key's id, never the secret) and a CSRF token
//! that every form carries. Each request looks the credential up again,
//! so revoking a token or a key ends its sessions at once, and the user's
//! permissions are always those of the moment.
//!
//! Sessions live in memory: a restart signs everyone out. They end after
//! [`IDLE_SECS`] without a request, [`LIFETIME_SECS`] after sign-in, or at
//! sign-out. At most [`MAX_SESSIONS`] are kept; the least recently used
//! goes first. One credential keeps at most [`MAX_PER_CREDENTIAL`]: its
//! oldest ends when it signs in again, so one token cannot push everyone
//! else out. A live refresh of an open page does not count as use, so a
//! tab left open still idles out.

use crate::auth::Caller;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A session unused this long ends (seconds).
pub const IDLE_SECS: u64 = 8 * 3600;
/// A session ends this long after sign-in, used or not (seconds).
pub const LIFETIME_SECS: u64 = 24 * 3600;
/// Sessions kept at most; signing in past it ends the least recently used.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions one credential keeps at most; its oldest ends first.
pub const MAX_PER_CREDENTIAL: usize = 20;

/// What a session was opened with, looked up again on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API token, by its hash ([`crate::auth::hash`]).
    Token(String),
    /// An access key, by its id.
    AccessKey(String),
}

/// A message shown once on the next page (the answer to a form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub kind: FlashKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    Done,
    Failed,
}

impl Flash {
    pub fn done(text: impl Into<String>) -> Self {
        Self { kind: FlashKind::Done, text: text.into() }
    }

    pub fn failed(text: impl Into<String>) -> Self {
        Self { kind: FlashKind::Failed, text: text.into() }
    }
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Public: named in the audit log (`session:ID`) and nowhere a secret.
    pub id: String,
    pub credential: Credential,
    /// Every form carries it; a form without it is refused.
    pub csrf: String,
    pub created: u64,
    pub last_seen: u64,
    pub flash: Option<Flash>,
}

impl Session {
    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.last_seen) >= IDLE_SECS || now.saturating_sub(self.created) >= LIFETIME_SECS
    }
}

/// The sessions, by the hash of their cookie's secret. Sans-IO: time is
/// passed in.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: HashMap<String, Session>,
}

impl Sessions {
    /// Opens a session; returns the cookie's secret (shown once) and the
    /// session.
    pub fn open(&mut self, credential: Credential, now: u64) -> (String, Session) {
        self.by_hash.retain(|_, s| !s.expired(now));
        let mut own: Vec<(u64, String)> =
            self.by_hash.iter().filter(|(_, s)| s.credential == credential).map(|(h, s)| (s.created, h.clone())).collect();
        if own.len() >= MAX_PER_CREDENTIAL {
            own.sort();
            for (_, hash) in own.iter().take(own.len() + 1 - MAX_PER_CREDENTIAL) {
                self.by_hash.remove(hash);
            }
        }
        while self.by_hash.len() >= MAX_SESSIONS {
            let oldest = self.by_hash.iter().min_by_key(|(_, s)| s.last_seen).map(|(h, _)| h.clone());
            match oldest {
                Some(hash) => self.by_hash.remove(&hash),
                None => break,
            };
        }
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let session = Session {
            id: hex::encode(rand::random::<[u8; 6]>()),
            credential,
            csrf: hex::encode(rand::random::<[u8; 24]>()),
            created: now,
            last_seen: now,
            flash: None,
        };
        self.by_hash.insert(hash_secret(&secret), session.clone());
        (secret, session)
    }

    /// The session of a cookie's secret, if it is open, marked as used
    /// now. An expired one is removed.
    pub fn touch(&mut self, secret: &str, now: u64) -> Option<Session> {
        let hash = hash_secret(secret);
        let session = self.by_hash.get_mut(&hash)?;
        if session.expired(now) {
            self.by_hash.remove(&hash);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// The session of a cookie's secret, if it is open, without marking it
    /// used (a live refresh, the event stream's checks). An expired one is
    /// removed.
    pub fn peek(&mut self, secret: &str, now: u64) -> Option<Session> {
        let hash = hash_secret(secret);
        let session = self.by_hash.get(&hash)?;
        if session.expired(now) {
            self.by_hash.remove(&hash);
            return None;
        }
        Some(session.clone())
    }

    /// Takes the session's message to show, if any.
    pub fn take_flash(&mut self, secret: &str) -> Option<Flash> {
        self.by_hash.get_mut(&hash_secret(secret))?.flash.take()
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&mut self, secret: &str, flash: Flash) {
        if let Some(session) = self.by_hash.get_mut(&hash_secret(secret)) {
            session.flash = Some(flash);
        }
    }

    /// Ends a session (sign-out, or its credential is gone).
    pub fn close(&mut self, secret: &str) -> Option<Session> {
        self.by_hash.remove(&hash_secret(secret))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The console's shared state, in [`crate::api::ApiState`].
#[derive(Clone, Debug)]
pub struct Console {
    pub sessions: Arc<Mutex<Sessions>>,
    /// Whether the API is served over HTTPS: then the cookie is `Secure`
    /// and named `__Host-…` (plain HTTP is allowed on loopback only).
    pub secure: bool,
}

impl Console {
    pub fn new(scheme: crate::https::Scheme) -> Self {
        Self { sessions: Arc::default(), secure: scheme == crate::https::Scheme::Https }
    }

    pub fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().expect("console sessions lock")
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure { "__Host-sluice-session" } else { "sluice-session" }
    }

    /// `Set-Cookie` for a new session.
    pub fn set_cookie(&self, secret: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}{secure}", self.cookie_name())
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}", self.cookie_name())
    }

    /// The session secret a request's `Cookie` headers carry.
    pub fn secret_in(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty() && v.len() <= 128)
    }
}

/// The caller a credential stands for now, if it still exists.
pub fn resolve(state: &crate::api::ApiState, credential: &Credential) -> Option<Caller> {
    match credential {
        Credential::Token(hash) => state.tokens.lookup_hash(hash),
        Credential::AccessKey(id) => state.aws.keys.lookup(id).map(|(_, caller)| caller),
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_secret_until_it_idles_out_or_lives_out() {
        let mut sessions = Sessions::default();
        let (secret, opened) = sessions.open(Credential::Token("h".into()), 1000);
        assert_ne!(secret, opened.csrf);
        assert_eq!(sessions.touch(&secret, 1001).unwrap().id, opened.id);
        assert!(sessions.touch("not-the-secret", 1001).is_none());
        // Used just before the idle limit: still open.
        assert!(sessions.touch(&secret, 1001 + IDLE_SECS - 1).is_some());
        // Idle past it: gone, for good.
        assert!(sessions.touch(&secret, 1001 + 2 * IDLE_SECS).is_none());
        assert!(sessions.is_empty());

        // Kept busy, it still ends at its lifetime.
        let (secret, _) = sessions.open(Credential::AccessKey("AKIA".into()), 0);
        let mut t = 0;
        while t + IDLE_SECS / 2 < LIFETIME_SECS {
            t += IDLE_SECS / 2;
            assert!(sessions.touch(&secret, t).is_some());
        }
        assert!(sessions.touch(&secret, LIFETIME_SECS).is_none());
    }

    #[test]
    fn a_peek_is_not_a_use_so_a_watched_tab_still_idles_out() {
        let mut sessions = Sessions::default();
        let (secret, _) = sessions.open(Credential::Token("h".into()), 0);
        let mut t = 0;
        while t < IDLE_SECS - 60 {
            t += 60;
            assert!(sessions.peek(&secret, t).is_some());
        }
        assert!(sessions.peek(&secret, IDLE_SECS).is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn one_credential_keeps_at_most_its_share_and_loses_its_oldest_not_others() {
        let mut sessions = Sessions::default();
        let (other, _) = sessions.open(Credential::AccessKey("AKSLOTHER".into()), 0);
        let mut mine = Vec::new();
        for t in 1..=(MAX_PER_CREDENTIAL as u64 + 5) {
            mine.push(sessions.open(Credential::Token("flood".into()), t).0);
        }
        assert_eq!(sessions.len(), MAX_PER_CREDENTIAL + 1);
        assert!(sessions.touch(&other, 100).is_some(), "another credential's session survives");
        // The first five (the oldest) are gone, the newest stay.
        for old in &mine[..5] {
            assert!(sessions.peek(old, 100).is_none());
        }
        for new in &mine[5..] {
            assert!(sessions.peek(new, 100).is_some());
        }
    }

    #[test]
    fn a_flash_is_shown_once_and_sign_out_ends_the_session() {
        let mut sessions = Sessions::default();
        let (secret, _) = sessions.open(Credential::Token("h".into()), 0);
        sessions.set_flash(&secret, Flash::done("started"));
        assert_eq!(sessions.take_flash(&secret), Some(Flash::done("started")));
        assert_eq!(sessions.take_flash(&secret), None);
        assert!(sessions.close(&secret).is_some());
        assert!(sessions.touch(&secret, 1).is_none());
    }

    #[test]
    fn the_cookie_is_secure_over_https_and_read_back_by_name() {
        let https = Console::new(crate::https::Scheme::Https);
        let cookie = https.set_cookie("abc");
        assert!(cookie.starts_with("__Host-sluice-session=abc; Path=/; HttpOnly; SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
        let plain = Console::new(crate::https::Scheme::Http);
        assert!(!plain.set_cookie("abc").contains("Secure"));

        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cookie", "other=1; __Host-sluice-session=s3cret; x=y".parse().unwrap());
        assert_eq!(https.secret_in(&headers).as_deref(), Some("s3cret"));
        // The plain cookie's name is not the secure one's.
        assert_eq!(plain.secret_in(&headers), None);
    }
}
