//! Update notices. A release publishes `latest.json` (version, date, notes URL, artifacts with SHA-256) and
//! its minisign signature `latest.json.minisig`. When an update URL is configured, the node fetches both now
//! and then, verifies the signature against the release public key compiled into the binary, and compares
//! the version with its own. A newer release is logged once and kept for the dashboard, with the download
//! link; nothing is ever downloaded or installed. A forged, corrupt or older manifest is ignored with one
//! warning.
//!
//! The parse/verify/compare logic and the "say it once" bookkeeping are plain code ([`verify`],
//! [`assess`], [`Checker`]); [`spawn`] is the thin fetching shell around them. This file names nothing
//! else of the crate, so `tests/release.rs` can check the manifests that `scripts/dist.sh` writes with it.

use minisign_verify::{PublicKey, Signature};
use semver::Version;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Build-time environment variable holding the minisign public key of official releases (the base64 line
/// of a `minisign.pub` file, or the whole file). The release workflow sets it; a build without it has no
/// release key and therefore makes no update checks.
pub const RELEASE_KEY_ENV: &str = "STREAMR_RELEASE_PUBKEY";

/// The release key this binary was built with, if any (see [`RELEASE_KEY_ENV`]).
const RELEASE_KEY: Option<&str> = option_env!("STREAMR_RELEASE_PUBKEY");

/// A manifest lists a handful of artifacts; anything this large is not one.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// A minisign signature is about 300 bytes with its comments.
pub const MAX_SIGNATURE_BYTES: usize = 4 * 1024;
/// At most this many artifacts are read from a manifest.
const MAX_ARTIFACTS: usize = 64;

/// The first check waits this long after start, so it never competes with the node's startup.
const FIRST_CHECK_AFTER: Duration = Duration::from_secs(30);
/// Time between checks after a good answer: releases are rare, and the server is a static file.
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Time before the next try after a failed check.
const RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Whole-request timeout of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The signed release manifest (`latest.json`). Unknown fields are ignored, so later releases can add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The release's version (semver, no leading `v`).
    pub version: String,
    /// Release date, `YYYY-MM-DD`.
    pub date: String,
    /// Page with the release notes and every download.
    pub notes_url: String,
    /// The downloadable files.
    pub artifacts: Vec<Artifact>,
}

/// One downloadable file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name, e.g. `streamr-node-0.2.0-x86_64-unknown-linux-musl.tar.gz`.
    pub name: String,
    /// Operating system, as Rust's `std::env::consts::OS` names it (`linux`, `macos`, `windows`).
    pub os: String,
    /// CPU architecture, as `std::env::consts::ARCH` names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// `archive` (.tar.gz / .zip) or `deb`; others may come.
    pub kind: String,
    /// Where to download it.
    pub url: String,
    /// SHA-256 of the file, lowercase hex (also listed in the release's signed `SHA256SUMS`).
    pub sha256: String,
}

/// What the dashboard shows when a newer release is out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateNotice {
    /// The newer version.
    pub version: String,
    /// Its release date.
    pub date: String,
    /// Release notes and all downloads.
    pub notes_url: String,
    /// The download for this OS and CPU, or the notes page when the release has none.
    pub download_url: String,
    /// SHA-256 of that download, when it is a file of the release.
    pub sha256: Option<String>,
}

/// Why a manifest was refused ([`verify`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest or its signature is larger than any real one.
    #[error("the release manifest or its signature is larger than {max} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The `.minisig` file is not a minisign signature.
    #[error("the manifest's signature is not a minisign signature ({0})")]
    Signature(#[source] minisign_verify::Error),
    /// Signed with another key, or the bytes were changed after signing.
    #[error("the manifest is not signed with the streamr-node release key ({0}); it may be forged")]
    Forged(#[source] minisign_verify::Error),
    /// Correctly signed, but not a manifest this node understands.
    #[error("the manifest is signed but not valid: {0}")]
    Invalid(String),
}

/// Why a check fetched nothing usable ([`fetch`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Network error, timeout or an HTTP error status.
    #[error("cannot fetch {url}: {reason}")]
    Http {
        /// What was requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer is larger than a manifest or signature can be.
    #[error("{url} is larger than {max} bytes: not a release manifest")]
    TooLarge {
        /// What was requested.
        url: String,
        /// The limit.
        max: usize,
    },
}

/// Why an update URL cannot be used ([`parse_url`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("update URL {url:?} is not a URL ({reason}); expected https://HOST/PATH/latest.json")]
    Malformed {
        /// The configured text.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Plain http beyond this machine, or another scheme: the manifest is signed, but https keeps who
    /// checks for updates private.
    #[error(
        "update URL {0:?} must use https:// (plain http is accepted only for 127.0.0.1 or localhost)"
    )]
    NotHttps(String),
}

/// The outcome of one check, for [`Checker::observe`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Nothing was fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A manifest was fetched but refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// How a verified manifest compares with the running version ([`assess`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A newer release: tell the user.
    Newer(UpdateNotice),
    /// The running version, or a pre-release that a stable node does not offer.
    UpToDate,
    /// Older than what runs: a stale mirror, or an old manifest replayed.
    Older(Version),
}

/// The release key compiled into this binary, if it was built with one.
pub fn release_key() -> Option<PublicKey> {
    parse_key(RELEASE_KEY?)
}

/// A minisign public key given as its base64 line or as a whole `.pub` file; `None` when empty or invalid.
pub fn parse_key(text: &str) -> Option<PublicKey> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let key = if text.contains('\n') {
        PublicKey::decode(text)
    } else {
        PublicKey::from_base64(text)
    };
    key.ok()
}

/// Checks an update URL: https, or http to this machine only (local mirrors and tests).
pub fn parse_url(url: &str) -> Result<reqwest::Url, UrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| UrlError::Malformed {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let host = parsed.host_str().unwrap_or_default();
    let local = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if local => Ok(parsed),
        _ => Err(UrlError::NotHttps(url.to_string())),
    }
}

/// Verifies `manifest` against `signature` (the `.minisig` file) with `key`, then parses and checks it.
/// The signature is checked first: nothing of an unsigned manifest is parsed.
pub fn verify(
    key: &PublicKey,
    manifest: &[u8],
    signature: &[u8],
) -> Result<Manifest, ManifestError> {
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            max: MAX_MANIFEST_BYTES,
        });
    }
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(ManifestError::TooLarge {
            max: MAX_SIGNATURE_BYTES,
        });
    }
    let signature = std::str::from_utf8(signature)
        .map_err(|_| ManifestError::Signature(minisign_verify::Error::InvalidEncoding))?;
    let signature = Signature::decode(signature).map_err(ManifestError::Signature)?;
    // Legacy (non-prehashed) signatures are refused: minisign has not made them by default since 0.10.
    key.verify(manifest, &signature, false)
        .map_err(ManifestError::Forged)?;
    let parsed: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| ManifestError::Invalid(format!("not a release manifest: {e}")))?;
    check_manifest(&parsed)?;
    Ok(parsed)
}

/// The checks a signed manifest must still pass: the dashboard shows its links, so they must be https.
fn check_manifest(m: &Manifest) -> Result<(), ManifestError> {
    let invalid = |s: String| Err(ManifestError::Invalid(s));
    if let Err(e) = Version::parse(&m.version) {
        return invalid(format!(
            "version {:?} is not a semantic version ({e})",
            m.version
        ));
    }
    let date_format = time::format_description::well_known::Iso8601::DATE;
    if time::Date::parse(&m.date, &date_format).is_err() {
        return invalid(format!("date {:?} is not YYYY-MM-DD", m.date));
    }
    if !is_https(&m.notes_url) {
        return invalid(format!("notes_url {:?} is not an https URL", m.notes_url));
    }
    if m.artifacts.len() > MAX_ARTIFACTS {
        return invalid(format!(
            "{} artifacts (at most {MAX_ARTIFACTS})",
            m.artifacts.len()
        ));
    }
    for a in &m.artifacts {
        if a.name.is_empty() || a.os.is_empty() || a.arch.is_empty() {
            return invalid(format!("artifact {:?} lacks a name, os or arch", a.name));
        }
        if !is_https(&a.url) {
            return invalid(format!("artifact {} has no https URL", a.name));
        }
        let hex = a.sha256.len() == 64
            && a.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return invalid(format!(
                "artifact {} has no SHA-256 (64 lowercase hex digits)",
                a.name
            ));
        }
    }
    Ok(())
}

fn is_https(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
}

/// Compares a verified manifest with the running version, and picks the download for `os`/`arch` (an
/// archive first, another kind next, else the notes page).
pub fn assess(manifest: &Manifest, running: &Version, os: &str, arch: &str) -> Verdict {
    let Ok(offered) = Version::parse(&manifest.version) else {
        // verify() refuses these; a hand-built Manifest is treated as nothing new.
        return Verdict::UpToDate;
    };
    if offered < *running {
        return Verdict::Older(offered);
    }
    if offered == *running || (!offered.pre.is_empty() && running.pre.is_empty()) {
        return Verdict::UpToDate;
    }
    let for_us = |a: &&Artifact| a.os == os && a.arch == arch;
    let artifact = manifest
        .artifacts
        .iter()
        .filter(for_us)
        .find(|a| a.kind == "archive")
        .or_else(|| manifest.artifacts.iter().find(for_us));
    Verdict::Newer(UpdateNotice {
        version: manifest.version.clone(),
        date: manifest.date.clone(),
        notes_url: manifest.notes_url.clone(),
        download_url: artifact.map_or_else(|| manifest.notes_url.clone(), |a| a.url.clone()),
        sha256: artifact.map(|a| a.sha256.clone()),
    })
}

/// What the fetch loop should say after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A newer release, seen for the first time: log it (info) with its download link.
    Available(UpdateNotice),
    /// A problem, seen for the first time since the last good check: log it (warning).
    Ignored(String),
}

/// The kinds of problem that are reported once each: a repeat of the same kind stays quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Fetch,
    TooLarge,
    Signature,
    Forged,
    Invalid,
    Older(Version),
}

/// The bookkeeping of repeated checks: which release was announced, which problem was reported.
#[derive(Debug)]
pub struct Checker {
    /// The version that runs.
    running: Version,
    /// This binary's OS and CPU, to pick the download.
    os: String,
    /// See `os`.
    arch: String,
    /// The newest release announced so far.
    latest: Option<UpdateNotice>,
    /// The problem reported last; cleared by a good check.
    reported: Option<Problem>,
}

impl Checker {
    /// A checker for `running` on `os`/`arch` (as `std::env::consts` names them).
    pub fn new(running: Version, os: &str, arch: &str) -> Self {
        Checker {
            running,
            os: os.to_string(),
            arch: arch.to_string(),
            latest: None,
            reported: None,
        }
    }

    /// A checker for this binary.
    pub fn for_this_binary() -> Self {
        let running = Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0));
        Self::new(running, std::env::consts::OS, std::env::consts::ARCH)
    }

    /// Takes one check's outcome; returns what to log, if anything is new.
    pub fn observe(&mut self, outcome: Result<Manifest, CheckError>) -> Option<Event> {
        let manifest = match outcome {
            Ok(m) => m,
            Err(e) => {
                let kind = match &e {
                    CheckError::Fetch(FetchError::Http { .. }) => Problem::Fetch,
                    CheckError::Fetch(FetchError::TooLarge { .. }) => Problem::TooLarge,
                    CheckError::Manifest(ManifestError::TooLarge { .. }) => Problem::TooLarge,
                    CheckError::Manifest(ManifestError::Signature(_)) => Problem::Signature,
                    CheckError::Manifest(ManifestError::Forged(_)) => Problem::Forged,
                    CheckError::Manifest(ManifestError::Invalid(_)) => Problem::Invalid,
                };
                return self.report(kind, e.to_string());
            }
        };
        match assess(&manifest, &self.running, &self.os, &self.arch) {
            Verdict::Older(v) => {
                let running = self.running.clone();
                self.report(
                    Problem::Older(v.clone()),
                    format!(
                        "the release manifest offers {v}, older than the running {running}: ignored \
                         (a stale mirror or a replayed manifest)"
                    ),
                )
            }
            Verdict::UpToDate => {
                self.reported = None;
                None
            }
            Verdict::Newer(notice) => {
                self.reported = None;
                let known = self.latest.as_ref().is_some_and(|l| {
                    Version::parse(&l.version)
                        .is_ok_and(|lv| Version::parse(&notice.version).is_ok_and(|nv| nv <= lv))
                });
                if known {
                    return None;
                }
                self.latest = Some(notice.clone());
                Some(Event::Available(notice))
            }
        }
    }

    fn report(&mut self, kind: Problem, message: String) -> Option<Event> {
        if self.reported.as_ref() == Some(&kind) {
            return None;
        }
        self.reported = Some(kind);
        Some(Event::Ignored(message))
    }
}

/// The newest release announced, shared with the dashboard. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct UpdateNotices(Arc<parking_lot::RwLock<Option<UpdateNotice>>>);

impl UpdateNotices {
    /// The newer release, if one was announced; `None` while up to date or when checks are off.
    pub fn latest(&self) -> Option<UpdateNotice> {
        self.0.read().clone()
    }

    fn set(&self, notice: UpdateNotice) {
        *self.0.write() = Some(notice);
    }
}

/// Fetches `url` and `url.minisig`, each bounded in size.
pub async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<(Vec<u8>, Vec<u8>), FetchError> {
    let signature_url =
        reqwest::Url::parse(&format!("{url}.minisig")).map_err(|e| FetchError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let manifest = get_bounded(client, url, MAX_MANIFEST_BYTES).await?;
    let signature = get_bounded(client, &signature_url, MAX_SIGNATURE_BYTES).await?;
    Ok((manifest, signature))
}

async fn get_bounded(
    client: &reqwest::Client,
    url: &reqwest::Url,
    max: usize,
) -> Result<Vec<u8>, FetchError> {
    let http = |reason: String| FetchError::Http {
        url: url.to_string(),
        reason,
    };
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        max,
    };
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| http(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(http(format!("the server answered {}", response.status())));
    }
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http(error_chain(&e)))? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's top-level message ("error sending request") hides the cause; the chain says what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One check: fetch, verify.
pub async fn check_once(
    client: &reqwest::Client,
    url: &reqwest::Url,
    key: &PublicKey,
) -> Result<Manifest, CheckError> {
    let (manifest, signature) = fetch(client, url).await?;
    Ok(verify(key, &manifest, &signature)?)
}

/// An HTTP client for update checks: rustls with the OS's certificates, a timeout, our user agent.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("streamr-node/", env!("CARGO_PKG_VERSION")))
        .timeout(FETCH_TIMEOUT)
        .build()
}

/// Starts the update checks on the current tokio runtime when `url` is set and this binary has a release
/// key; returns the notices the dashboard reads. With no URL, nothing is fetched, ever.
pub fn spawn(url: Option<reqwest::Url>) -> UpdateNotices {
    let notices = UpdateNotices::default();
    let Some(url) = url else {
        debug!("update checks are off (no update URL)");
        return notices;
    };
    let Some(key) = release_key() else {
        warn!(
            %url,
            "update checks are off: this build has no release key ({RELEASE_KEY_ENV} was not set when it was \
             built); official release builds have one"
        );
        return notices;
    };
    let shared = notices.clone();
    tokio::spawn(async move {
        let client = match client() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %error_chain(&e), "update checks are off: cannot make an HTTP client");
                return;
            }
        };
        let mut checker = Checker::for_this_binary();
        tokio::time::sleep(FIRST_CHECK_AFTER).await;
        loop {
            let outcome = check_once(&client, &url, &key).await;
            let good = outcome.is_ok();
            match checker.observe(outcome) {
                Some(Event::Available(n)) => {
                    info!(
                        version = %n.version,
                        download = %n.download_url,
                        notes = %n.notes_url,
                        "a newer streamr-node is out; download it from the link (the node never installs \
                         anything by itself)"
                    );
                    shared.set(n);
                }
                Some(Event::Ignored(why)) => warn!(%url, "update check: {why}"),
                None => {}
            }
            tokio::time::sleep(if good { CHECK_EVERY } else { RETRY_AFTER }).await;
        }
    });
    notices
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_PUB: &str = include_str!("../tests/data/update/test.pub");
    const OTHER_PUB: &str = include_str!("../tests/data/update/other.pub");
    const NEWER: &[u8] = include_bytes!("../tests/data/update/newer.json");
    const NEWER_SIG: &[u8] = include_bytes!("../tests/data/update/newer.json.minisig");
    const OLDER: &[u8] = include_bytes!("../tests/data/update/older.json");
    const OLDER_SIG: &[u8] = include_bytes!("../tests/data/update/older.json.minisig");
    const FORGED: &[u8] = include_bytes!("../tests/data/update/forged.json");
    const FORGED_SIG: &[u8] = include_bytes!("../tests/data/update/forged.json.minisig");
    const CORRUPT: &[u8] = include_bytes!("../tests/data/update/corrupt.json");
    const CORRUPT_SIG: &[u8] = include_bytes!("../tests/data/update/corrupt.json.minisig");

    fn key() -> PublicKey {
        parse_key(TEST_PUB).expect("test key")
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn a_signed_manifest_verifies_and_offers_the_download_for_this_platform() {
        let m = verify(&key(), NEWER, NEWER_SIG).unwrap();
        assert_eq!(m.version, "9.0.0");
        let Verdict::Newer(n) = assess(&m, &v("0.1.0"), "linux", "x86_64") else {
            panic!("9.0.0 is newer than 0.1.0")
        };
        assert!(
            n.download_url.ends_with("x86_64-unknown-linux-musl.tar.gz"),
            "archive first: {n:?}"
        );
        assert_eq!(n.sha256.as_deref(), Some(m.artifacts[0].sha256.as_str()));
        let Verdict::Newer(w) = assess(&m, &v("0.1.0"), "windows", "x86_64") else {
            panic!()
        };
        assert!(w.download_url.ends_with(".zip"));
        let Verdict::Newer(mac) = assess(&m, &v("0.1.0"), "macos", "aarch64") else {
            panic!()
        };
        assert_eq!(
            mac.download_url, m.notes_url,
            "no file for this platform: the notes page"
        );
        assert_eq!(mac.sha256, None);
    }

    #[test]
    fn the_key_is_read_as_a_file_or_as_its_base64_line() {
        let line = TEST_PUB.lines().nth(1).unwrap();
        verify(&parse_key(line).unwrap(), NEWER, NEWER_SIG).unwrap();
        assert!(parse_key("").is_none());
        assert!(parse_key("RWTnot-a-key").is_none());
    }

    #[test]
    fn forged_tampered_and_corrupt_manifests_are_refused() {
        let e = verify(&key(), FORGED, FORGED_SIG).unwrap_err();
        assert!(matches!(e, ManifestError::Forged(_)), "{e}");
        // The other key does verify it: the vectors are sound and the refusal is about the key.
        verify(&parse_key(OTHER_PUB).unwrap(), FORGED, FORGED_SIG).unwrap();

        let tampered = String::from_utf8(NEWER.to_vec())
            .unwrap()
            .replace("github.com/example", "evil.example");
        let e = verify(&key(), tampered.as_bytes(), NEWER_SIG).unwrap_err();
        assert!(matches!(e, ManifestError::Forged(_)), "{e}");

        let e = verify(&key(), CORRUPT, CORRUPT_SIG).unwrap_err();
        assert!(
            matches!(e, ManifestError::Invalid(_)),
            "signed but not JSON: {e}"
        );

        for bad_sig in [
            &b""[..],
            b"garbage",
            &NEWER_SIG[..NEWER_SIG.len() / 2],
            &[0xff, 0xfe, 0x00],
        ] {
            let e = verify(&key(), NEWER, bad_sig).unwrap_err();
            assert!(matches!(e, ManifestError::Signature(_)), "{e}");
        }
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            verify(&key(), &huge, NEWER_SIG),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    fn manifest_fields_are_checked() {
        let good: Manifest = serde_json::from_slice(NEWER).unwrap();
        check_manifest(&good).unwrap();
        let mut m = good.clone();
        m.version = "v9".into();
        assert!(
            check_manifest(&m)
                .unwrap_err()
                .to_string()
                .contains("semantic version")
        );
        let mut m = good.clone();
        m.date = "1 Dec 2026".into();
        assert!(check_manifest(&m).is_err());
        let mut m = good.clone();
        m.notes_url = "javascript:alert(1)".into();
        assert!(
            check_manifest(&m)
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        let mut m = good.clone();
        m.artifacts[0].url = "http://example.org/x.tar.gz".into();
        assert!(check_manifest(&m).is_err());
        let mut m = good.clone();
        m.artifacts[0].sha256 = m.artifacts[0].sha256.to_uppercase();
        assert!(check_manifest(&m).is_err());
        let mut m = good;
        m.artifacts[0].sha256.pop();
        assert!(check_manifest(&m).is_err());
    }

    #[test]
    fn versions_compare_by_semver() {
        let m = verify(&key(), NEWER, NEWER_SIG).unwrap();
        assert_eq!(
            assess(&m, &v("9.0.0"), "linux", "x86_64"),
            Verdict::UpToDate
        );
        assert_eq!(
            assess(&m, &v("10.0.0"), "linux", "x86_64"),
            Verdict::Older(v("9.0.0"))
        );
        // 9.0.0 > 9.0.0-rc.1 and > 1.10.0 (not a string comparison).
        assert!(matches!(
            assess(&m, &v("9.0.0-rc.1"), "linux", "x86_64"),
            Verdict::Newer(_)
        ));
        let mut pre = m.clone();
        pre.version = "10.0.0-rc.1".into();
        assert_eq!(
            assess(&pre, &v("9.0.0"), "linux", "x86_64"),
            Verdict::UpToDate,
            "a stable node is not offered pre-releases"
        );
        assert!(matches!(
            assess(&pre, &v("9.1.0-beta.2"), "linux", "x86_64"),
            Verdict::Newer(_)
        ));
        let older = verify(&key(), OLDER, OLDER_SIG).unwrap();
        assert_eq!(
            assess(&older, &v("0.1.0"), "linux", "x86_64"),
            Verdict::Older(v("0.0.9"))
        );
    }

    #[test]
    fn a_newer_release_is_announced_once_and_each_problem_warned_once() {
        let mut c = Checker::new(v("0.1.0"), "linux", "x86_64");
        let forged = || verify(&key(), FORGED, FORGED_SIG).map_err(CheckError::from);
        let newer = || verify(&key(), NEWER, NEWER_SIG).map_err(CheckError::from);
        let older = || verify(&key(), OLDER, OLDER_SIG).map_err(CheckError::from);

        let first = c.observe(forged());
        assert!(
            matches!(&first, Some(Event::Ignored(w)) if w.contains("forged")),
            "{first:?}"
        );
        assert_eq!(
            c.observe(forged()),
            None,
            "the same problem is not repeated"
        );
        assert!(matches!(c.observe(older()), Some(Event::Ignored(w)) if w.contains("0.0.9")));
        assert_eq!(c.observe(older()), None);

        let Some(Event::Available(n)) = c.observe(newer()) else {
            panic!("newer release")
        };
        assert_eq!(n.version, "9.0.0");
        assert_eq!(c.latest.as_ref(), Some(&n));
        assert_eq!(c.observe(newer()), None, "announced once");
        // A good check clears the reported problem: a forged manifest later is worth a new warning,
        // and does not take the notice away.
        assert!(matches!(c.observe(forged()), Some(Event::Ignored(_))));
        assert_eq!(c.latest.as_ref(), Some(&n));
        let fetch_failed = Err(CheckError::Fetch(FetchError::Http {
            url: "https://example.org/latest.json".into(),
            reason: "timed out".into(),
        }));
        assert!(
            matches!(c.observe(fetch_failed), Some(Event::Ignored(w)) if w.contains("timed out"))
        );
    }

    #[test]
    fn update_urls_must_be_https_except_on_this_machine() {
        assert!(parse_url("https://github.com/o/r/releases/latest/download/latest.json").is_ok());
        assert!(parse_url("http://127.0.0.1:8000/latest.json").is_ok());
        assert!(parse_url("http://localhost/latest.json").is_ok());
        assert!(parse_url("http://[::1]/latest.json").is_ok());
        assert!(matches!(
            parse_url("http://example.org/latest.json"),
            Err(UrlError::NotHttps(_))
        ));
        assert!(matches!(
            parse_url("file:///etc/passwd"),
            Err(UrlError::NotHttps(_))
        ));
        assert!(matches!(
            parse_url("latest.json"),
            Err(UrlError::Malformed { .. })
        ));
    }

    /// The manifest that `scripts/sign-dist.sh` writes (what the release workflow publishes) verifies and
    /// offers each platform its own download. Needs bash, sha256sum and minisign.
    #[test]
    fn the_manifest_that_sign_dist_writes_is_accepted() {
        use crate::tests_support::tool_or_skip;
        use std::process::Command;
        for tool in ["bash", "sha256sum", "minisign"] {
            if tool_or_skip(tool, "apt-get install bash coreutils minisign").is_none() {
                return;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (key_file, pub_file) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        let made = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&pub_file)
            .arg("-s")
            .arg(&key_file)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist).unwrap();
        for f in [
            "streamr-node-0.2.0-x86_64-unknown-linux-musl.tar.gz",
            "streamr-node-0.2.0-aarch64-apple-darwin.tar.gz",
            "streamr-node-0.2.0-x86_64-pc-windows-msvc.zip",
            "streamr-node_0.2.0-1_amd64.deb",
            "streamr-node_0.2.0-1_arm64.deb",
        ] {
            std::fs::write(dist.join(f), f).unwrap();
        }
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sign-dist.sh"))
            .arg(&dist)
            .arg("0.2.0")
            .env("MINISIGN_KEY_FILE", &key_file)
            .env("MINISIGN_PUB_FILE", &pub_file)
            .env_remove("MINISIGN_PASSWORD")
            .env("DIST_REPOSITORY", "example/streamr-node")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let read = |name: &str| std::fs::read(dist.join(name)).unwrap();
        let key = parse_key(&String::from_utf8(read("streamr-node-release.pub")).unwrap()).unwrap();
        let m = verify(&key, &read("latest.json"), &read("latest.json.minisig")).unwrap();
        assert_eq!((m.version.as_str(), m.artifacts.len()), ("0.2.0", 5));
        let sums = String::from_utf8(read("SHA256SUMS")).unwrap();
        for (os, arch, file) in [
            (
                "linux",
                "x86_64",
                "streamr-node-0.2.0-x86_64-unknown-linux-musl.tar.gz",
            ),
            (
                "macos",
                "aarch64",
                "streamr-node-0.2.0-aarch64-apple-darwin.tar.gz",
            ),
            (
                "windows",
                "x86_64",
                "streamr-node-0.2.0-x86_64-pc-windows-msvc.zip",
            ),
            // No archive for this one: the .deb is the download.
            ("linux", "aarch64", "streamr-node_0.2.0-1_arm64.deb"),
        ] {
            let Verdict::Newer(n) = assess(&m, &v("0.1.0"), os, arch) else {
                panic!("{os} {arch}")
            };
            assert_eq!(
                n.download_url,
                format!("https://github.com/example/streamr-node/releases/download/v0.2.0/{file}")
            );
            let line = format!("{}  {file}", n.sha256.unwrap());
            assert!(sums.lines().any(|l| l == line), "{line} not in\n{sums}");
        }
    }

    /// The fetch shell against a real local HTTP server (warp), with real reqwest.
    #[tokio::test]
    async fn the_fetch_shell_reads_the_manifest_and_its_signature_and_bounds_their_size() {
        use warp::Filter;
        let routes = warp::path!("latest.json")
            .map(|| NEWER.to_vec())
            .or(warp::path!("latest.json.minisig").map(|| NEWER_SIG.to_vec()))
            .or(warp::path!("big.json").map(|| vec![b'x'; MAX_MANIFEST_BYTES + 10]))
            .or(warp::path!("big.json.minisig").map(|| NEWER_SIG.to_vec()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(warp::serve(routes).incoming(listener).run());
        let client = client().unwrap();

        let url = parse_url(&format!("http://{addr}/latest.json")).unwrap();
        let m = check_once(&client, &url, &key()).await.unwrap();
        assert_eq!(m.version, "9.0.0");

        let url = parse_url(&format!("http://{addr}/big.json")).unwrap();
        let e = check_once(&client, &url, &key()).await.unwrap_err();
        assert!(
            matches!(e, CheckError::Fetch(FetchError::TooLarge { .. })),
            "{e}"
        );

        let url = parse_url(&format!("http://{addr}/missing.json")).unwrap();
        let e = check_once(&client, &url, &key()).await.unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        server.abort();
    }
}
