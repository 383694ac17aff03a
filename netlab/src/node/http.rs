//! A plain HTTP/1.0 GET, async for netlab's pollers and blocking for tests that check a condition from a
//! synchronous closure. Enough for the node's status and metrics; no client library needed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a GET could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Nothing listens at the address (or the connection failed).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be sent or the answer read.
    #[error("GET {path} on {addr}")]
    Io {
        /// The server address.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the limit.
    #[error("GET {path} on {addr} took longer than {limit:?}")]
    Timeout {
        /// The server address.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// The limit.
        limit: Duration,
    },
    /// The answer is not HTTP.
    #[error("the answer has no HTTP header")]
    NoHeader,
    /// The server answered with another status than 200.
    #[error("GET {path} on {addr}: HTTP {code}")]
    Status {
        /// The server address.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// The HTTP status code (0 when it was not a number).
        code: u16,
    },
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The server asked.
    pub addr: SocketAddr,
    /// The path asked for.
    pub path: String,
    /// The HTTP status code (0 when it was not a number).
    pub code: u16,
    /// The body.
    pub body: String,
}

impl HttpAnswer {
    /// The body of a 200 answer; any other code is an error.
    pub fn ok(self) -> Result<String, HttpError> {
        if self.code == 200 {
            Ok(self.body)
        } else {
            Err(HttpError::Status {
                addr: self.addr,
                path: self.path,
                code: self.code,
            })
        }
    }
}

fn request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n")
}

fn parse(addr: SocketAddr, path: &str, raw: &[u8]) -> Result<HttpAnswer, HttpError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(HttpError::NoHeader)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(HttpAnswer {
        addr,
        path: path.to_string(),
        code,
        body: body.to_string(),
    })
}

/// GET `path` on `addr` within `limit`; the answer whatever its code.
pub async fn get(addr: SocketAddr, path: &str, limit: Duration) -> Result<HttpAnswer, HttpError> {
    let io = |source| HttpError::Io {
        addr,
        path: path.to_string(),
        source,
    };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| HttpError::Connect { addr, source })?;
        s.write_all(request(addr, path).as_bytes())
            .await
            .map_err(io)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io)?;
        parse(addr, path, &buf)
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            addr,
            path: path.to_string(),
            limit,
        })?
}

/// [`get`] for synchronous callers: blocks the thread up to about `limit` (connect, then the answer).
pub fn get_blocking(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<HttpAnswer, HttpError> {
    let io = |source: std::io::Error| {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            HttpError::Timeout {
                addr,
                path: path.to_string(),
                limit,
            }
        } else {
            HttpError::Io {
                addr,
                path: path.to_string(),
                source,
            }
        }
    };
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit)
        .map_err(|source| HttpError::Connect { addr, source })?;
    s.set_read_timeout(Some(limit)).map_err(io)?;
    s.set_write_timeout(Some(limit)).map_err(io)?;
    s.write_all(request(addr, path).as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(io)?;
    parse(addr, path, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each connection with the next of `answers`.
    async fn serve(answers: &'static [&'static str]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_a_body_and_its_code() {
        let addr = serve(&[
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"x\":1}",
            "HTTP/1.0 404 Not Found\r\n\r\nno",
            "garbage",
        ])
        .await;
        let a = get(addr, "/a", Duration::from_secs(2)).await.unwrap();
        assert_eq!((a.code, a.body.as_str()), (200, "{\"x\":1}"));
        assert_eq!(a.ok().unwrap(), "{\"x\":1}");
        let e = get(addr, "/b", Duration::from_secs(2)).await.unwrap();
        assert_eq!(e.code, 404);
        let e = e.ok().unwrap_err();
        assert_eq!(e.to_string(), format!("GET /b on {addr}: HTTP 404"));
        let e = get(addr, "/c", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, HttpError::NoHeader), "{e}");
    }

    #[tokio::test]
    async fn the_blocking_get_reads_the_same() {
        let addr = serve(&["HTTP/1.0 404 Not Found\r\n\r\nno"]).await;
        let a = tokio::task::spawn_blocking(move || {
            get_blocking(addr, "/nope", Duration::from_secs(2))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!((a.code, a.body.as_str()), (404, "no"));
    }

    #[tokio::test]
    async fn nothing_listening_and_silence_are_errors_that_say_so() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        let e = get(closed, "/", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e}");
        // Accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let e = get(addr, "/s", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("GET /s on {addr} took longer than 200ms")
        );
        drop(silent);
    }
}
