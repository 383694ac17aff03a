//! The dashboard's files, compiled into the binary (no CDN, no download, works offline; no npm step at
//! build time: the one vendored library, mpegts.js, is committed minified with its license).

use warp::Reply;
use warp::http::{HeaderValue, header};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../assets/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../assets/icon.svg"),
    },
    Asset {
        name: "mpegts.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/mpegts.js"),
    },
    Asset {
        name: "mpegts.js.LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/mpegts.js.LICENSE"),
    },
];

/// The single page (home, join, settings are views of it).
pub fn page() -> warp::reply::Response {
    let mut r = warp::reply::html(INDEX).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/assets/NAME`, if it exists.
pub fn get(name: &str) -> Option<warp::reply::Response> {
    let a = ASSETS.iter().find(|a| a.name == name)?;
    let mut r = warp::reply::Response::new(a.bytes.into());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    // Revalidated on every load: a new version of the node must not run an old page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

/// Every embedded file: (name, bytes), the page included (for the size budget).
pub fn all() -> Vec<(&'static str, &'static [u8])> {
    std::iter::once(("index.html", INDEX))
        .chain(ASSETS.iter().map(|a| (a.name, a.bytes)))
        .collect()
}
