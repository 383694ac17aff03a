//! Upstream relays: pull a stream from an RTMP server into a local hub, or push a local hub's stream to an
//! RTMP server. Both reconnect with exponential backoff for as long as the node runs; a failed, timed out or
//! panicking attempt is counted and retried, and logs never show the upstream's stream key.

use crate::client::{ClientError, RtmpClient, RtmpUrl};
use crate::server::{EdgeStats, panic_message};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use streamr_media::{SourceKind, Streams, SubscriberKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delays between attempts: 1 s doubling to 30 s, each stretched by up to as much again at random, so
/// that the nodes pulling from one server after it restarts do not all come back at the same moment.
fn reconnect_delays() -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The longest step of [`reconnect_delays`] before its jitter.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// A connection that lasted this long counts as having worked; the backoff starts over after it.
const STABLE: Duration = Duration::from_secs(30);

/// Counters of the pull and push relays.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Attempts that ended because the upstream went silent or stopped reading (read/write timeouts).
    pub failures_timeout: AtomicU64,
    /// Attempts the upstream ended with bytes beyond our limits (nesting, sizes): a hostile upstream.
    pub failures_limit: AtomicU64,
    /// Other failed attempts (refused, closed, network, protocol).
    pub failures_other: AtomicU64,
    /// Attempts that panicked; the relay carried on.
    pub panics: AtomicU64,
    /// Relay tasks restarted by the node's supervisor after they ended or panicked outside an attempt.
    pub task_restarts: AtomicU64,
}

impl RelayStats {
    fn failure(&self, e: &ClientError) {
        let c = match e {
            ClientError::Timeout(_) => &self.failures_timeout,
            ClientError::Limit(_) => &self.failures_limit,
            _ => &self.failures_other,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Every failure counter with its metric label, for `/metrics`.
    pub fn failures_by_reason(&self) -> [(&'static str, u64); 4] {
        let l = |a: &AtomicU64| a.load(Relaxed);
        [
            ("timeout", l(&self.failures_timeout)),
            ("limit", l(&self.failures_limit)),
            ("other", l(&self.failures_other)),
            ("panic", l(&self.panics)),
        ]
    }
}

/// Runs `attempt` until `cancel`, with backoff between attempts. Each attempt runs under `catch_unwind`: a
/// panic (in rml_rtmp's handshake or anywhere in the attempt) is one more failed attempt, never the end of
/// the relay or of the node. Logs show the URL redacted and errors scrubbed of its key.
async fn retry_loop<F, Fut>(
    what: &str,
    name: &str,
    url: &RtmpUrl,
    stats: &RelayStats,
    cancel: CancellationToken,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut delays = reconnect_delays();
    loop {
        let started = Instant::now();
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = AssertUnwindSafe(attempt()).catch_unwind() => r,
        };
        if started.elapsed() >= STABLE {
            delays = reconnect_delays();
        }
        let delay = delays.next().unwrap_or(RECONNECT_MAX);
        match r {
            Ok(Ok(())) => {
                info!(stream = name, url = %url, retry_in = ?delay, "{what} ended; reconnecting")
            }
            Ok(Err(e)) => {
                stats.failure(&e);
                let error = url.scrub(&e.to_string());
                warn!(stream = name, url = %url, retry_in = ?delay, %error, "{what} failed; retrying")
            }
            Err(panic) => {
                stats.panics.fetch_add(1, Relaxed);
                let panic = url.scrub(&panic_message(&panic));
                error!(stream = name, url = %url, retry_in = ?delay, %panic, "{what} panicked; retrying")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Parses a relay URL, or logs why not (redacted) and waits for `cancel`.
async fn parse_or_wait(
    what: &str,
    name: &str,
    url: &str,
    cancel: &CancellationToken,
) -> Option<RtmpUrl> {
    match RtmpUrl::parse(url) {
        Ok(u) => Some(u),
        Err(e) => {
            warn!(stream = %name, error = %e, "{what} relay not started");
            cancel.cancelled().await;
            None
        }
    }
}

/// Pulls `url` into the local stream `name` until `cancel`.
pub async fn pull(
    name: String,
    url: String,
    streams: Streams,
    stats: Arc<EdgeStats>,
    cancel: CancellationToken,
) {
    let Some(parsed) = parse_or_wait("pull", &name, &url, &cancel).await else {
        return;
    };
    retry_loop("pull", &name, &parsed, &stats.relays, cancel, || async {
        let client = RtmpClient::connect(&parsed, CONNECT_TIMEOUT).await?;
        let mut player = client.play(CONNECT_TIMEOUT).await?;
        let hub = streams.get_or_create(&name);
        let source = hub.attach(SourceKind::Pull);
        info!(stream = %name, url = %parsed, "pulling");
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
pub async fn push(
    name: String,
    url: String,
    streams: Streams,
    stats: Arc<EdgeStats>,
    cancel: CancellationToken,
) {
    let Some(parsed) = parse_or_wait("push", &name, &url, &cancel).await else {
        return;
    };
    retry_loop("push", &name, &parsed, &stats.relays, cancel, || async {
        let hub = streams.get_or_create(&name);
        let mut sub = hub.subscribe(SubscriberKind::Relay);
        drop(hub);
        // Connect only when there is something to send.
        while !sub.wait_live(Duration::from_secs(3600)).await {}
        let client = RtmpClient::connect(&parsed, CONNECT_TIMEOUT).await?;
        let mut publisher = client.publish(CONNECT_TIMEOUT).await?;
        info!(stream = %name, url = %parsed, "pushing");
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

    #[tokio::test(start_paused = true)]
    async fn a_panicking_attempt_is_counted_and_retried() {
        let stats = RelayStats::default();
        let url = RtmpUrl::parse("rtmp://h/live/k3y5ecret").unwrap();
        let cancel = CancellationToken::new();
        let mut attempts = 0;
        let c = cancel.clone();
        retry_loop("pull", "cam", &url, &stats, cancel, || {
            attempts += 1;
            let n = attempts;
            let c = c.clone();
            async move {
                match n {
                    1 => panic!("boom with k3y5ecret"),
                    2 => Err(ClientError::Timeout("reading")),
                    3 => Err(ClientError::Limit("nested".into())),
                    _ => {
                        c.cancel();
                        Ok(())
                    }
                }
            }
        })
        .await;
        assert_eq!(attempts, 4);
        assert_eq!(
            stats.failures_by_reason(),
            [("timeout", 1), ("limit", 1), ("other", 0), ("panic", 1)]
        );
    }

    #[test]
    fn reconnect_delays_double_to_a_cap_with_jitter_of_at_most_their_own_length() {
        let steps: Vec<Duration> = reconnect_delays().take(8).collect();
        let bases = [1, 2, 4, 8, 16, 30, 30, 30].map(Duration::from_secs);
        for (d, base) in steps.iter().zip(bases) {
            assert!(*d >= base && *d < base * 2, "{d:?} for a step of {base:?}");
        }
        let firsts: std::collections::HashSet<Duration> = (0..20)
            .map(|_| reconnect_delays().next().unwrap())
            .collect();
        assert!(firsts.len() > 1, "nodes do not retry in step: {firsts:?}");
    }
}
