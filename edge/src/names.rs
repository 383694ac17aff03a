//! Stream names and the publish key, as users type them into OBS ("Stream Key": `NAME` or `NAME?key=KEY`).

/// A stream key parsed from an RTMP `publish`/`play` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    /// The stream's name, e.g. `alice`.
    pub name: String,
    /// The `key` query parameter, if given.
    pub key: Option<String>,
}

/// Why a stream key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("the stream name is empty: use rtmp://HOST:PORT/live/NAME")]
    Empty,
    /// Too long.
    #[error("the stream name is longer than {MAX_NAME} characters")]
    TooLong,
    /// A character outside the allowed set.
    #[error("the stream name {0:?} may only contain letters, digits, '-', '_' and '.'")]
    BadCharacter(String),
}

/// Longest stream name accepted.
pub const MAX_NAME: usize = 64;

/// Parses `NAME` or `NAME?key=KEY` (other query parameters are ignored).
pub fn parse(raw: &str) -> Result<StreamKey, NameError> {
    let (name, query) = raw.split_once('?').unwrap_or((raw, ""));
    validate(name)?;
    let key = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "key")
        .map(|(_, v)| v.to_string());
    Ok(StreamKey {
        name: name.to_string(),
        key,
    })
}

/// Parses a play request: `NAME`, or `NAME@ORIGIN` where ORIGIN is a node id or its first characters (at
/// least 6), which picks one stream when two nodes publish the same name.
pub fn parse_play(raw: &str) -> Result<StreamKey, NameError> {
    // A player never needs a key: any query is ignored.
    let base = raw.split_once('?').map_or(raw, |(b, _)| b);
    let Some((name, origin)) = base.split_once('@') else {
        return parse(raw);
    };
    validate(name)?;
    if origin.len() < 6 || origin.len() > 64 || !origin.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(NameError::BadCharacter(base.to_string()));
    }
    Ok(StreamKey {
        name: base.to_string(),
        key: None,
    })
}

/// Checks a bare stream name.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(ok) || name.starts_with('.') {
        return Err(NameError::BadCharacter(name.to_string()));
    }
    Ok(())
}

/// Compares a given key with the publish key in constant time: the time depends on the length of the
/// expected key only, never on where the given one differs or how long it is (an early return on a length
/// mismatch would tell a guesser the key's length).
pub fn key_matches(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        // Past the end of the given key, compare with a byte that differs from every key byte's complement:
        // the length difference above already makes the result false.
        let y = b.get(i).copied().unwrap_or(!x);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_keys() {
        assert_eq!(
            parse("alice").unwrap(),
            StreamKey {
                name: "alice".into(),
                key: None
            }
        );
        let k = parse("alice?foo=1&key=s3cret").unwrap();
        assert_eq!(k.name, "alice");
        assert_eq!(k.key.as_deref(), Some("s3cret"));
        assert_eq!(parse(""), Err(NameError::Empty));
        assert!(matches!(parse("../x"), Err(NameError::BadCharacter(_))));
        assert!(matches!(parse("a b"), Err(NameError::BadCharacter(_))));
        assert_eq!(parse(&"a".repeat(65)), Err(NameError::TooLong));
    }

    #[test]
    fn play_names_may_pick_an_origin() {
        assert_eq!(parse_play("alice").unwrap().name, "alice");
        assert_eq!(
            parse_play("alice@12D3KooWabc").unwrap().name,
            "alice@12D3KooWabc"
        );
        assert!(parse_play("alice@12D").is_err());
        assert!(parse_play("alice@12D3Koo!x").is_err());
        assert!(parse_play("a b@12D3KooWabc").is_err());
        assert!(
            parse("alice@12D3KooWabc").is_err(),
            "publish names never carry an origin"
        );
    }

    #[test]
    fn keys_compare() {
        assert!(key_matches("abc", Some("abc")));
        assert!(!key_matches("abc", Some("abd")));
        assert!(!key_matches("abc", Some("ab")));
        assert!(!key_matches("abc", Some("abcd")));
        assert!(!key_matches("abc", Some("")));
        assert!(!key_matches("abc", None));
        assert!(!key_matches("", Some("a")));
        assert!(key_matches("", Some("")));
    }
}
