//! Upstream relays: pull a stream from an RTMP server into a local hub, or push a local hub's stream to an
//! RTMP server. Both reconnect with exponential backoff for as long as the node runs.

use crate::client::{ClientError, RtmpClient, RtmpUrl};
use std::time::Duration;
use streamr_media::{SourceKind, Streams, SubscriberKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exponential backoff with a cap; resets after a connection that lasted.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the minimum delay.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A connection that lasted this long counts as having worked; the backoff starts over after it.
const STABLE: Duration = Duration::from_secs(30);

async fn retry_loop<F, Fut>(
    what: &str,
    name: &str,
    url: &str,
    cancel: CancellationToken,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = attempt() => r,
        };
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        match r {
            Ok(()) => info!(stream = name, url, retry_in = ?delay, "{what} ended; reconnecting"),
            Err(e) => {
                warn!(stream = name, url, retry_in = ?delay, error = %e, "{what} failed; retrying")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Pulls `url` into the local stream `name` until `cancel`.
pub async fn pull(name: String, url: String, streams: Streams, cancel: CancellationToken) {
    let parsed = match RtmpUrl::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            warn!(stream = %name, error = %e, "pull relay not started");
            return cancel.cancelled().await;
        }
    };
    retry_loop("pull", &name, &url, cancel, || async {
        let client = RtmpClient::connect(&parsed, CONNECT_TIMEOUT).await?;
        let mut player = client.play(CONNECT_TIMEOUT).await?;
        let hub = streams.get_or_create(&name);
        let source = hub.attach(SourceKind::Pull);
        info!(stream = %name, %url, "pulling");
        loop {
            let m = player.next().await?;
            if source.push_media(m.kind, m.timestamp, m.payload).is_err() {
                return Err(ClientError::Refused(format!(
                    "a local publisher took over stream {name:?}; the pull stops feeding it"
                )));
            }
        }
    })
    .await;
}

/// Pushes the local stream `name` to `url` until `cancel`.
pub async fn push(name: String, url: String, streams: Streams, cancel: CancellationToken) {
    let parsed = match RtmpUrl::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            warn!(stream = %name, error = %e, "push relay not started");
            return cancel.cancelled().await;
        }
    };
    retry_loop("push", &name, &url, cancel, || async {
        let hub = streams.get_or_create(&name);
        let mut sub = hub.subscribe(SubscriberKind::Relay);
        drop(hub);
        // Connect only when there is something to send.
        while !sub.wait_live(Duration::from_secs(3600)).await {}
        let client = RtmpClient::connect(&parsed, CONNECT_TIMEOUT).await?;
        let mut publisher = client.publish(CONNECT_TIMEOUT).await?;
        info!(stream = %name, %url, "pushing");
        loop {
            let frame = sub
                .next()
                .await
                .map_err(|e| ClientError::Refused(format!("local stream ended: {e}")))?;
            publisher
                .send(frame.kind(), frame.timestamp(), frame.payload().clone())
                .await?;
            publisher.poll_server().await?;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }
}
