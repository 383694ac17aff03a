//! The dashboard's files, compiled into the binary (no CDN, no download, works offline; no npm step at
//! build time: the one vendored library, mpegts.js, is committed minified with its license). They are
//! stored gzipped (build.rs) and sent so to every client that takes gzip (every browser); a client that
//! does not gets them unpacked.

use std::io::Read;
use warp::Reply;
use warp::http::{HeaderValue, header};

/// One embedded file, gzipped.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    gzipped: &'static [u8],
}

macro_rules! gzipped {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz"))
    };
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    gzipped: gzipped!("index.html"),
};

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        gzipped: gzipped!("app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        gzipped: gzipped!("app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        gzipped: gzipped!("icon.svg"),
    },
    Asset {
        name: "mpegts.js",
        content_type: "text/javascript; charset=utf-8",
        gzipped: gzipped!("mpegts.js"),
    },
    Asset {
        name: "mpegts.js.LICENSE",
        content_type: "text/plain; charset=utf-8",
        gzipped: gzipped!("mpegts.js.LICENSE"),
    },
];

/// True when an `Accept-Encoding` header value takes gzip (`gzip` or `*`, without `q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(v) = accept_encoding else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

impl Asset {
    /// The file unpacked.
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.gzipped.len() * 4);
        flate2::read::GzDecoder::new(self.gzipped)
            .read_to_end(&mut out)
            .expect("build.rs gzipped this file");
        out
    }

    /// The response for a client that takes gzip (`gzip`) or not.
    fn response(&self, gzip: bool) -> warp::reply::Response {
        let mut r = if gzip {
            let mut r = warp::reply::Response::new(self.gzipped.into());
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            warp::reply::Response::new(self.bytes().into())
        };
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        // Revalidated on every load: a new version of the node must not run an old page.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

/// The single page (home, join, settings are views of it).
pub fn page(gzip: bool) -> warp::reply::Response {
    INDEX.response(gzip).into_response()
}

/// `/assets/NAME`, if it exists.
pub fn get(name: &str, gzip: bool) -> Option<warp::reply::Response> {
    Some(ASSETS.iter().find(|a| a.name == name)?.response(gzip))
}

/// Every embedded file: (name, bytes unpacked, bytes as stored), the page included (for the size budget).
pub fn all() -> Vec<(&'static str, Vec<u8>, &'static [u8])> {
    std::iter::once(&INDEX)
        .chain(ASSETS.iter())
        .map(|a| (a.name, a.bytes(), a.gzipped))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_as_http_says() {
        for (v, want) in [
            (None, false),
            (Some(""), false),
            (Some("identity"), false),
            (Some("gzip"), true),
            (Some("gzip, deflate, br, zstd"), true),
            (Some("br;q=1.0, GZIP;q=0.5"), true),
            (Some("*"), true),
            (Some("gzip;q=0"), false),
            (Some("gzip; q=0.0, identity"), false),
            (Some("deflate, *;q=0"), false),
        ] {
            assert_eq!(accepts_gzip(v), want, "{v:?}");
        }
    }

    #[test]
    fn every_file_is_stored_as_it_is_in_the_source_tree() {
        for (name, bytes, gzipped) in all() {
            let path = if name.starts_with("mpegts") {
                format!("{}/assets/vendor/{name}", env!("CARGO_MANIFEST_DIR"))
            } else {
                format!("{}/assets/{name}", env!("CARGO_MANIFEST_DIR"))
            };
            let source = std::fs::read(&path).expect("the source file");
            assert_eq!(bytes, source, "{name} differs from {path}");
            assert!(gzipped.len() < source.len(), "{name} is not compressed");
        }
    }
}
