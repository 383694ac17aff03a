//! Who may ask what, decided as plain code over the facts of a request (Syncthing's GUI is the model):
//! - DNS rebinding: while the server listens on loopback, a request whose `Host` is not a loopback name or
//!   address is refused (a hostile page that rebinds its own name to 127.0.0.1 still sends its name).
//! - CSRF: a request that changes something carries the API key (`X-API-Key`, the CLI and scripts), or the
//!   CSRF token both as a cookie and as the `X-CSRF-Token` header (only a page of this origin can read the
//!   cookie to copy it) together with a same-origin `Origin`.
//! - Beyond loopback: a request from another machine logs in with the password (HTTP Basic, checked
//!   against the argon2 hash in the config); the node refuses to listen beyond loopback without one.
//! - Every answer carries a CSP without inline scripts, `X-Frame-Options: DENY` and `nosniff`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// The Content-Security-Policy of every answer: our own scripts only, no inline code, no framing. Media
/// plays from `blob:` URLs (Media Source Extensions); QR codes are `data:` images.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; \
                       object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The Host header names another site (DNS rebinding).
    #[error(
        "this address is not allowed: open the dashboard as http://127.0.0.1:PORT or http://localhost:PORT"
    )]
    Host,
    /// A state change without the API key or a valid CSRF token and same-origin Origin.
    #[error("{0}")]
    Csrf(&'static str),
    /// A request from another machine without the password.
    #[error("log in with the node's password (user name: anything)")]
    Login,
    /// A request from another machine, and no password is set.
    #[error(
        "this dashboard only answers this computer: set a password with `streamr-node password` to open it \
         from others"
    )]
    NoPassword,
}

/// The facts of a request that the rules look at.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts<'a> {
    /// The method changes state (anything but GET, HEAD, OPTIONS).
    pub unsafe_method: bool,
    /// `Host`.
    pub host: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `X-API-Key`.
    pub api_key: Option<&'a str>,
    /// `X-CSRF-Token`.
    pub csrf_header: Option<&'a str>,
    /// `Cookie`.
    pub cookie: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
}

/// The rules of one server.
#[derive(Debug)]
pub struct Guard {
    /// The server listens on loopback only: the Host check applies.
    loopback_bind: bool,
    /// The port, which names the CSRF cookie (cookies are per host, not per port: two nodes on one
    /// machine must not share one).
    port: u16,
    api_key: String,
    csrf_token: String,
    password_hash: Option<String>,
    /// Credentials already verified (their SHA-256): argon2 is slow on purpose, and a dashboard makes
    /// many requests.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Guard {
    /// Rules for a server bound to `bind`, with the API key and the password hash (argon2 PHC string).
    pub fn new(bind: SocketAddr, api_key: String, password_hash: Option<String>) -> Self {
        // The token is derived from the API key: stable across restarts (open dashboards keep working) and
        // useless for finding the key.
        let csrf_token =
            hex(&Sha256::digest(format!("streamr-node csrf\n{api_key}")))[..32].to_string();
        Guard {
            loopback_bind: bind.ip().is_loopback(),
            port: bind.port(),
            api_key,
            csrf_token,
            password_hash,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// The CSRF cookie's name.
    pub fn cookie_name(&self) -> String {
        format!("streamr_csrf_{}", self.port)
    }

    /// The `Set-Cookie` value that gives a page of this origin its CSRF token.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; SameSite=Strict",
            self.cookie_name(),
            self.csrf_token
        )
    }

    /// Whether the API key was given and is right.
    fn has_api_key(&self, r: &RequestFacts<'_>) -> bool {
        r.api_key
            .is_some_and(|k| constant_time_eq(k.trim().as_bytes(), self.api_key.as_bytes()))
    }

    /// Decides a request.
    pub fn check(&self, r: &RequestFacts<'_>) -> Result<(), Denied> {
        if self.loopback_bind
            && let Some(host) = r.host
            && !is_loopback_host(host)
        {
            return Err(Denied::Host);
        }
        let from_here = r.remote.is_none_or(|a| a.ip().is_loopback());
        if !from_here && !self.has_api_key(r) {
            self.login(r.authorization)?;
        }
        if r.unsafe_method {
            self.check_csrf(r)?;
        }
        Ok(())
    }

    fn check_csrf(&self, r: &RequestFacts<'_>) -> Result<(), Denied> {
        let same_origin = match (r.origin, r.host) {
            (Some(origin), Some(host)) => {
                origin_host(origin).is_some_and(|o| o.eq_ignore_ascii_case(host))
            }
            _ => false,
        };
        if self.has_api_key(r) {
            // A page elsewhere cannot know the key; one that sends it anyway from another origin is refused.
            return match r.origin {
                Some(_) if !same_origin => {
                    Err(Denied::Csrf("requests from other sites are refused"))
                }
                _ => Ok(()),
            };
        }
        if r.api_key.is_some() {
            return Err(Denied::Csrf(
                "wrong API key: use the contents of the api-key file in the node's data folder",
            ));
        }
        if r.origin.is_none() {
            return Err(Denied::Csrf(
                "send X-API-Key (the api-key file in the node's data folder), or use the dashboard",
            ));
        }
        if !same_origin {
            return Err(Denied::Csrf("requests from other sites are refused"));
        }
        let cookie = r.cookie.and_then(|c| cookie_value(c, &self.cookie_name()));
        let ok = match (cookie, r.csrf_header) {
            (Some(c), Some(h)) => {
                constant_time_eq(c.as_bytes(), self.csrf_token.as_bytes())
                    && constant_time_eq(h.trim().as_bytes(), self.csrf_token.as_bytes())
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Denied::Csrf(
                "the page's security token is missing or old: reload the dashboard and try again",
            ))
        }
    }

    fn login(&self, authorization: Option<&str>) -> Result<(), Denied> {
        let Some(hash) = &self.password_hash else {
            return Err(Denied::NoPassword);
        };
        let Some(auth) = authorization else {
            return Err(Denied::Login);
        };
        let digest: [u8; 32] = Sha256::digest(auth.as_bytes()).into();
        if self.verified.lock().contains(&digest) {
            return Ok(());
        }
        let password = auth
            .strip_prefix("Basic ")
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()))
            .ok_or(Denied::Login)?;
        if verify_password(hash, &password) {
            let mut v = self.verified.lock();
            if v.len() > 64 {
                v.clear();
            }
            v.insert(digest);
            Ok(())
        } else {
            Err(Denied::Login)
        }
    }
}

/// The argon2id hash (PHC string) of a password, for the config.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash`; a malformed hash matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Whether a PHC string can be read as a password hash.
pub fn is_password_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok()
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 or ::1, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http://host:port` -> `host:port`.
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    Some(rest.trim_end_matches('/'))
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8080".parse().unwrap(), "k".repeat(32), None)
    }

    fn local<'a>() -> RequestFacts<'a> {
        RequestFacts {
            host: Some("127.0.0.1:8080"),
            remote: Some("127.0.0.1:50000".parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn hosts_other_than_loopback_are_refused_while_bound_to_loopback() {
        let g = guard();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.1.2.3",
            "a.localhost:1",
        ] {
            assert_eq!(
                g.check(&RequestFacts {
                    host: Some(ok),
                    ..local()
                }),
                Ok(()),
                "{ok}"
            );
        }
        for bad in [
            "evil.example:8080",
            "192.168.1.2:8080",
            "localhost.evil.example",
            "[::2]:8080",
        ] {
            assert_eq!(
                g.check(&RequestFacts {
                    host: Some(bad),
                    ..local()
                }),
                Err(Denied::Host),
                "{bad}"
            );
        }
        // Bound beyond loopback, any name serves (the password protects it).
        let wide = Guard::new("0.0.0.0:8080".parse().unwrap(), "k".into(), None);
        assert_eq!(
            wide.check(&RequestFacts {
                host: Some("nas.lan:8080"),
                ..local()
            }),
            Ok(())
        );
    }

    #[test]
    fn state_changes_need_the_api_key_or_token_and_same_origin() {
        let g = guard();
        let key = "k".repeat(32);
        let cookie = format!("other=1; {}", g.set_cookie().split(';').next().unwrap());
        let token = g.csrf_token.clone();
        let post = RequestFacts {
            unsafe_method: true,
            ..local()
        };
        assert!(matches!(g.check(&post), Err(Denied::Csrf(_))));
        assert_eq!(
            g.check(&RequestFacts {
                api_key: Some(&key),
                ..post.clone()
            }),
            Ok(())
        );
        assert!(
            g.check(&RequestFacts {
                api_key: Some("wrong"),
                ..post.clone()
            })
            .is_err()
        );
        let page = RequestFacts {
            origin: Some("http://127.0.0.1:8080"),
            cookie: Some(&cookie),
            csrf_header: Some(&token),
            ..post.clone()
        };
        assert_eq!(g.check(&page), Ok(()));
        // Each part missing or wrong.
        assert!(
            g.check(&RequestFacts {
                origin: Some("http://evil.example"),
                ..page.clone()
            })
            .is_err()
        );
        assert!(
            g.check(&RequestFacts {
                origin: Some("http://127.0.0.1:9090"),
                ..page.clone()
            })
            .is_err()
        );
        assert!(
            g.check(&RequestFacts {
                origin: None,
                ..page.clone()
            })
            .is_err()
        );
        assert!(
            g.check(&RequestFacts {
                cookie: None,
                ..page.clone()
            })
            .is_err()
        );
        assert!(
            g.check(&RequestFacts {
                csrf_header: Some("x"),
                ..page.clone()
            })
            .is_err()
        );
        // The key from a foreign page is refused too.
        assert!(
            g.check(&RequestFacts {
                api_key: Some(&key),
                origin: Some("http://evil.example"),
                ..post
            })
            .is_err()
        );
        // Reading needs none of it.
        assert_eq!(g.check(&local()), Ok(()));
    }

    #[test]
    fn other_machines_need_the_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(is_password_hash(&hash) && !is_password_hash("plain"));
        let g = Guard::new("0.0.0.0:8080".parse().unwrap(), "key".into(), Some(hash));
        let remote = RequestFacts {
            host: Some("192.0.2.1:8080"),
            remote: Some("192.0.2.9:4000".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(g.check(&remote), Err(Denied::Login));
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("me:correct horse")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("me:wrong")
        );
        assert_eq!(
            g.check(&RequestFacts {
                authorization: Some(&good),
                ..remote.clone()
            }),
            Ok(())
        );
        // Again, from the cache of verified credentials.
        assert_eq!(
            g.check(&RequestFacts {
                authorization: Some(&good),
                ..remote.clone()
            }),
            Ok(())
        );
        assert_eq!(
            g.check(&RequestFacts {
                authorization: Some(&bad),
                ..remote.clone()
            }),
            Err(Denied::Login)
        );
        let none = Guard::new("0.0.0.0:8080".parse().unwrap(), "key".into(), None);
        assert_eq!(none.check(&remote), Err(Denied::NoPassword));
    }
}
