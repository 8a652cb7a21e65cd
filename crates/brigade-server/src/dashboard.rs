//! The web dashboard at `/`: a single page of plain JavaScript and CSS,
//! embedded in the binary so it works with no network and no build step.
//!
//! The page reads everything from the public REST API and `/v1/events`
//! (the same calls any client makes, with the bearer token the user types in),
//! so this module only serves files:
//!
//! - `GET /` — the page. `Cache-Control: no-cache`, so a new binary's page is
//!   picked up at once; it names its scripts and styles with a content hash.
//! - `GET /assets/{name}` — the scripts, styles and icon. With the current
//!   `?v=` hash they are cached for a year (`immutable`); without it, they are
//!   revalidated by `ETag`.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file the page uses, except the page itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "run.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/run.js"),
    },
    // CodeMirror 6, bundled once from npm (editor/: package.json, its lock
    // file and entry.js); loaded by run.js on the Run page only.
    Asset {
        name: "codemirror.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/codemirror.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("../assets/index.html");

/// Content security policy of the page: nothing from elsewhere, no inline script.
/// Inline styles are allowed: the Run page's editor (CodeMirror) writes its
/// theme into `<style>` elements it makes at run time; styles cannot run code.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// Hashes worked out once per process.
struct Built {
    /// The page with `{{v}}` replaced by the assets' combined hash.
    index: String,
    /// ETag of the page.
    index_etag: String,
    /// Combined hash of all assets (the `?v=` value).
    version: String,
    /// ETag of each asset, in the order of [`ASSETS`].
    etags: Vec<String>,
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(&h.finalize()[..8])
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bodies: Vec<&[u8]> = ASSETS.iter().map(|a| a.body).collect();
        let version = short_hash(&bodies);
        let index = INDEX_TEMPLATE.replace("{{v}}", &version);
        Built {
            index_etag: format!("\"{}\"", short_hash(&[index.as_bytes()])),
            index,
            version,
            etags: ASSETS
                .iter()
                .map(|a| format!("\"{}\"", short_hash(&[a.body])))
                .collect(),
        }
    })
}

/// Routes of the dashboard; merge them into the application's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn respond(
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    cache: &'static str,
    body: impl Into<axum::body::Body>,
) -> Response {
    let mut res = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(body.into());
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

async fn index(headers: HeaderMap) -> Response {
    let b = built();
    let mut res = respond(
        &headers,
        &b.index_etag,
        "text/html; charset=utf-8",
        "no-cache",
        b.index.clone(),
    );
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn asset(
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::error::ApiError::new(StatusCode::NOT_FOUND, "no such dashboard asset")
            .into_response();
    };
    let b = built();
    let a = &ASSETS[i];
    let versioned = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == format!("v={}", b.version)));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    respond(&headers, &b.etags[i], a.content_type, cache, a.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        let req = match req.body(Body::empty()) {
            Ok(r) => r,
            Err(e) => panic!("request: {e}"),
        };
        match router::<()>().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    fn header_of(res: &Response, name: header::HeaderName) -> String {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn page_names_versioned_assets_and_nothing_external() {
        let res = get("/", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(header_of(&res, header::CONTENT_TYPE).starts_with("text/html"));
        assert_eq!(header_of(&res, header::CACHE_CONTROL), "no-cache");
        let v = &built().version;
        assert!(built().index.contains(&format!("/assets/app.js?v={v}")));
        assert!(!built().index.contains("{{v}}"));
        for a in ASSETS {
            // The SVG namespace is a name, not an address anything is fetched from.
            let text = String::from_utf8_lossy(a.body).replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://"), "{} links outside", a.name);
            assert!(!text.contains("https://"), "{} links outside", a.name);
        }
    }

    #[tokio::test]
    async fn assets_have_types_cache_headers_and_etags() {
        let v = built().version.clone();
        let res = get(&format!("/assets/app.js?v={v}"), None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(header_of(&res, header::CONTENT_TYPE).starts_with("text/javascript"));
        assert!(header_of(&res, header::CACHE_CONTROL).contains("immutable"));
        let etag = header_of(&res, header::ETAG);
        let res = get("/assets/app.css", Some(&etag)).await;
        assert_eq!(res.status(), StatusCode::OK, "another file's etag");
        assert_eq!(header_of(&res, header::CACHE_CONTROL), "no-cache");
        let res = get("/assets/app.js", Some(&etag)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            get("/assets/nope.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
