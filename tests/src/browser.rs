//! A browser for the console's cross tests that need none of a real one's
//! rendering: curl with a cookie jar of its own, posting forms as a
//! browser posts them (the session's CSRF token read from the page).

use crate::{Cluster, output_text};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// curl with its own cookie jar.
pub struct Browser<'a> {
    pub cluster: &'a Cluster,
    pub jar: PathBuf,
}

/// An answer: its status, `Location`, `Content-Type` and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl<'a> Browser<'a> {
    /// A browser that has not signed in (an empty jar named after `who`).
    pub fn new(cluster: &'a Cluster, who: &str) -> Self {
        Self { cluster, jar: cluster.dir.path().join(format!("{who}.cookies")) }
    }

    /// Signs in with `token`; the browser then holds the session cookie.
    pub fn sign_in(cluster: &'a Cluster, who: &str, token: &str) -> Self {
        let browser = Self::new(cluster, who);
        let answer = browser.send("POST", "/sign-in", &[("token", token), ("next", "/")], &[]);
        assert_eq!(answer.status, 303, "{who} signs in: {}", answer.text());
        assert_eq!(answer.location.as_deref(), Some("/"));
        browser
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], &[])
    }

    /// GETs a page that must be there.
    pub fn page(&self, path: &str) -> String {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
        answer.text()
    }

    /// Posts a form as the page that shows it does: with the session's
    /// CSRF token (read from that page).
    pub fn submit(&self, page: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = csrf_of(&self.page(page));
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send("POST", path, &all, &[])
    }

    /// Sends a request with this browser's cookies, `fields` form-encoded.
    pub fn send(&self, method: &str, path: &str, fields: &[(&str, &str)], headers: &[&str]) -> Answer {
        let head = self.cluster.dir.path().join("curl-headers");
        let mut curl = Command::new("curl");
        curl.arg("--cacert").arg(self.cluster.ca_file()).arg("-b").arg(&self.jar).arg("-c").arg(&self.jar);
        curl.args(["-sS", "-o", "-", "-D"]).arg(&head).args(["-X", method]);
        for (name, value) in fields {
            curl.arg("--data-urlencode").arg(format!("{name}={value}"));
        }
        for header in headers {
            curl.args(["-H", header]);
        }
        let out = curl.arg(format!("{}{path}", self.cluster.api)).output().unwrap();
        assert!(out.status.success(), "curl {method} {path}: {}", output_text(&out));
        let head = std::fs::read_to_string(&head).unwrap();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.trim().to_string())
        };
        Answer { status, location: header("location"), content_type: header("content-type"), body: out.stdout }
    }

    /// Opens an event stream (`curl -N`) with this browser's cookie.
    pub fn stream(&self, path: &str) -> Child {
        let mut curl = Command::new("curl");
        curl.arg("--cacert").arg(self.cluster.ca_file()).arg("-b").arg(&self.jar);
        curl.args(["-sS", "-N", "-o", "/dev/null"]).arg(format!("{}{path}", self.cluster.api));
        curl.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    /// The session cookie's secret in the jar.
    pub fn cookie(&self) -> String {
        let jar = std::fs::read_to_string(&self.jar).unwrap();
        let line = jar.lines().find(|l| l.contains("sluice-session")).expect("a session cookie");
        line.split('\t').next_back().unwrap().to_string()
    }
}

/// The session's CSRF token, as a page's forms carry it.
pub fn csrf_of(page: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = page.find(marker).expect("a form with the CSRF token") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

/// The text of `<main>` (the frame's sign-out button is outside it).
pub fn main_of(page: &str) -> &str {
    let start = page.find("<main").expect("a <main>");
    &page[start..page.rfind("</main>").expect("a </main>")]
}
