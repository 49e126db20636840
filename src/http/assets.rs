//! The front end, embedded in the binary from `frontend/` at build time.

use include_dir::{Dir, include_dir};
use warp::http::header::HeaderValue;

use super::reply::HttpResponse;

static FRONTEND: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/frontend");

/// The embedded file at `path` (relative, e.g. `style.css`), if any.
pub fn file(path: &str) -> Option<HttpResponse> {
    let file = FRONTEND.get_file(path)?;
    let mut response = HttpResponse::new(file.contents().into());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type(path)));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    Some(response)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
