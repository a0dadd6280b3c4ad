//! The console's stylesheet and script, embedded in the binary.
//!
//! Each is the concatenation of its parts (one per area of the console,
//! so that areas grow without touching each other) and is served at
//! `/assets/NAME?v=DIGEST`: the digest changes with the content, so a
//! browser may keep a copy for a year and still never run an old one.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const CSS: &str = concat!(
    include_str!("assets/base.css"),
    // pipe
    include_str!("assets/pipe.css"),
    // pages
    include_str!("assets/pages.css"),
);

const JS: &str = concat!(
    include_str!("assets/base.js"),
    // pipe
    include_str!("assets/pipe.js"),
    // pages
    include_str!("assets/pages.js"),
);

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    digest: LazyLock<String>,
}

static ASSETS: [Asset; 2] = [
    Asset { name: "console.css", content_type: "text/css; charset=utf-8", body: CSS, digest: LazyLock::new(|| digest(CSS)) },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: JS,
        digest: LazyLock::new(|| digest(JS)),
    },
];

fn digest(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

/// The URL of an asset, with its digest.
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => format!("/assets/{name}?v={}", *asset.digest),
        None => format!("/assets/{name}"),
    }
}

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn asset_urls_carry_their_digest() {
        let css = super::url("console.css");
        assert!(css.starts_with("/assets/console.css?v=") && css.len() == "/assets/console.css?v=".len() + 16);
        assert_eq!(super::url("nope.css"), "/assets/nope.css");
    }
}
