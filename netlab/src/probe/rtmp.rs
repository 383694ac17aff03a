//! The probe publisher and probe player: the I/O around [`super::media`] and [`super::playback`], on our
//! own RTMP client. Both stop on a deadline or when `stop` resolves (a signal in the agent), and always
//! return a report, never an error: a failure is part of what a scenario measures.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use streamr_edge::client::{ClientError, RtmpClient, RtmpUrl};
use streamr_media::FrameKind;
use tokio::time::{Instant as TokioInstant, sleep_until, timeout};

use super::media::{self, Due, FrameSizes, Schedule, Stamp};
use super::playback::{PlayReport, Playback};

/// Unix time in microseconds (CLOCK_REALTIME, shared by every namespace).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the probe publisher sends.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// `rtmp://HOST:PORT/live/NAME`.
    pub url: String,
    /// Video frames per second.
    pub fps: u32,
    /// A keyframe every this many video frames.
    pub gop: u32,
    /// Total bitrate (audio and video) in kbps.
    pub kbps: u32,
    /// Stop after this long (None: until `stop`).
    pub duration: Option<Duration>,
    /// Limit for connecting and for the server to accept the publish.
    pub connect_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            url: String::new(),
            fps: 30,
            gop: 60,
            kbps: 2500,
            duration: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What the probe publisher did (`netlab agent publish` prints it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishReport {
    /// The URL published to.
    pub url: String,
    /// When the first frame was due, Unix µs (RTMP timestamps count from here).
    pub started_unix_us: Option<u64>,
    /// Video frames sent.
    pub video_frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Audio frames sent.
    pub audio_frames: u64,
    /// Payload bytes sent (media only).
    pub bytes: u64,
    /// Sequence number of the last frame sent.
    pub last_seq: Option<u64>,
    /// Frames sent more than 20 ms after they were due (the machine or the socket was too slow).
    pub late_frames: u64,
    /// The largest lateness, ms.
    pub max_late_ms: f64,
    /// From the first frame to the end, s.
    pub duration_s: f64,
    /// Why it stopped: `duration`, `stopped`, or `error`.
    pub ended: String,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Publishes the probe stream until the duration is over or `stop` resolves.
pub async fn publish(opts: &PublishOptions, stop: impl Future<Output = ()>) -> PublishReport {
    let mut report = PublishReport {
        url: opts.url.clone(),
        ..PublishReport::default()
    };
    tokio::pin!(stop);
    let result = tokio::select! {
        r = publish_inner(opts, &mut report) => r,
        _ = &mut stop => {
            report.ended = "stopped".into();
            Ok(())
        }
    };
    if let Err(e) = result {
        report.ended = "error".into();
        report.error = Some(e.to_string());
    }
    report
}

async fn publish_inner(
    opts: &PublishOptions,
    report: &mut PublishReport,
) -> Result<(), ClientError> {
    let url = RtmpUrl::parse(&opts.url)?;
    let client = RtmpClient::connect(&url, opts.connect_timeout).await?;
    let mut publisher = client.publish(opts.connect_timeout).await?;
    let sizes = FrameSizes::for_bitrate(opts.kbps, opts.fps, opts.gop);
    publisher
        .send(FrameKind::Data, 0, media::metadata(opts.fps, opts.kbps))
        .await?;
    publisher
        .send(FrameKind::Video, 0, media::avc_sequence_header())
        .await?;
    publisher
        .send(FrameKind::Audio, 0, media::aac_sequence_header())
        .await?;
    let start = TokioInstant::now();
    let wall_start = Instant::now();
    report.started_unix_us = Some(unix_us());
    let mut schedule = Schedule::new(opts.fps, opts.gop);
    let mut seq = 0u64;
    let mut last_poll = Instant::now();
    loop {
        let (at, due) = schedule.next_due();
        if opts.duration.is_some_and(|d| at >= d) {
            report.ended = "duration".into();
            break;
        }
        sleep_until(start + at).await;
        let late = wall_start.elapsed().saturating_sub(at);
        if late > Duration::from_millis(20) {
            report.late_frames += 1;
        }
        report.max_late_ms = report.max_late_ms.max(late.as_secs_f64() * 1000.0);
        let stamp = Stamp {
            seq,
            sent_unix_us: unix_us(),
        };
        let (kind, payload) = match due {
            Due::Video { keyframe, .. } => {
                report.video_frames += 1;
                report.keyframes += u64::from(keyframe);
                let size = if keyframe {
                    sizes.keyframe
                } else {
                    sizes.inter
                };
                (FrameKind::Video, media::video_frame(keyframe, stamp, size))
            }
            Due::Audio { .. } => {
                report.audio_frames += 1;
                (FrameKind::Audio, media::audio_frame(stamp, sizes.audio))
            }
        };
        report.bytes += payload.len() as u64;
        // RTMP timestamps are the schedule's milliseconds: exact, monotonic, whatever the lateness.
        publisher.send(kind, at.as_millis() as u32, payload).await?;
        report.last_seq = Some(seq);
        report.duration_s = wall_start.elapsed().as_secs_f64();
        seq += 1;
        if last_poll.elapsed() > Duration::from_millis(100) {
            // Acknowledgements, pings, and an error status (e.g. another publisher took over).
            publisher.poll_server().await?;
            last_poll = Instant::now();
        }
    }
    Ok(())
}

/// How the probe player plays.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// `rtmp://HOST:PORT/live/NAME`.
    pub url: String,
    /// Stop after this long from the player's start (None: until `stop` or idle).
    pub duration: Option<Duration>,
    /// Stop when no media arrived for this long after the first frame.
    pub idle_timeout: Duration,
    /// Keep trying (connect refused, stream not found, closed before the first frame) until this long after
    /// the start; None tries once.
    pub retry_for: Option<Duration>,
    /// Limit for one connect, and for the server to accept the play request.
    pub connect_timeout: Duration,
}

impl Default for PlayOptions {
    fn default() -> Self {
        PlayOptions {
            url: String::new(),
            duration: None,
            idle_timeout: Duration::from_secs(5),
            retry_for: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Pause between two attempts while the stream does not exist yet.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Plays the URL and returns what arrived.
pub async fn play(opts: &PlayOptions, stop: impl Future<Output = ()>) -> PlayReport {
    let started = Instant::now();
    let started_us = unix_us();
    let mut report = PlayReport {
        url: opts.url.clone(),
        ..PlayReport::default()
    };
    let mut playback = Playback::new();
    tokio::pin!(stop);
    let deadline = opts.duration.map(|d| TokioInstant::now() + d);
    let ended = tokio::select! {
        e = play_inner(opts, &mut report, &mut playback, started) => e,
        _ = &mut stop => Ending::Stopped,
        _ = async {
            match deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => Ending::Duration,
    };
    let (name, error) = match ended {
        Ending::Duration => ("duration", None),
        Ending::Stopped => ("stopped", None),
        Ending::Idle => ("idle", None),
        Ending::Closed => ("closed", None),
        Ending::NotFound(e) => ("not-found", Some(e)),
        Ending::Error(e) => ("error", Some(e)),
    };
    report.ended = name.into();
    report.error = error.or(report.error.take());
    playback.fill(&mut report);
    report.first_frame_ms = playback
        .first_video_us()
        .map(|t| t.saturating_sub(started_us) as f64 / 1000.0);
    report.duration_s = started.elapsed().as_secs_f64();
    report
}

/// Why [`play_inner`] returned.
#[derive(Debug)]
enum Ending {
    Duration,
    Stopped,
    Idle,
    Closed,
    NotFound(String),
    Error(String),
}

async fn play_inner(
    opts: &PlayOptions,
    report: &mut PlayReport,
    playback: &mut Playback,
    started: Instant,
) -> Ending {
    let url = match RtmpUrl::parse(&opts.url) {
        Ok(u) => u,
        Err(e) => return Ending::Error(e.to_string()),
    };
    let retry_until = opts.retry_for.map(|d| started + d);
    loop {
        report.attempts += 1;
        let attempt = Instant::now();
        let outcome = attempt_play(&url, opts, report, playback, attempt).await;
        let before_first_frame = playback.media_frames() == 0;
        let error = match outcome {
            Ok(ending) => return ending,
            Err(e) => e,
        };
        // A node answers StreamNotFound (or closes) while the mesh has not found the stream yet: try again
        // until the deadline. After the first frame an error is the stream's end, not a lookup.
        let can_retry = before_first_frame
            && retry_until.is_some_and(|t| Instant::now() + RETRY_PAUSE < t)
            && !matches!(error, ClientError::BadUrl(_) | ClientError::Protocol(_));
        if !can_retry {
            let text = error.to_string();
            report.error = Some(text.clone());
            return match error {
                ClientError::Closed if !before_first_frame => Ending::Closed,
                ClientError::Refused(r) if r.contains("StreamNotFound") => Ending::NotFound(text),
                _ if before_first_frame && retry_until.is_some() => Ending::NotFound(text),
                _ => Ending::Error(text),
            };
        }
        report.error = Some(error.to_string());
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// One connect + play; returns how playing ended, or the error that ended the attempt.
async fn attempt_play(
    url: &RtmpUrl,
    opts: &PlayOptions,
    report: &mut PlayReport,
    playback: &mut Playback,
    attempt: Instant,
) -> Result<Ending, ClientError> {
    let client = RtmpClient::connect(url, opts.connect_timeout).await?;
    let connect_ms = attempt.elapsed().as_secs_f64() * 1000.0;
    let requested_us = unix_us();
    let mut player = client.play(opts.connect_timeout).await?;
    report.connect_ms = Some(connect_ms);
    playback.play_requested(requested_us);
    loop {
        // Before the first frame the node may be looking the stream up: wait as long as it takes to
        // answer (it says StreamNotFound after 10 s); after it, silence longer than idle_timeout ends it.
        let limit = if playback.media_frames() == 0 {
            Duration::from_secs(3600)
        } else {
            opts.idle_timeout
        };
        let m = match timeout(limit, player.next()).await {
            Ok(m) => m?,
            Err(_) => return Ok(Ending::Idle),
        };
        let now = unix_us();
        let had_video = playback.first_video_us().is_some();
        playback.record(m.kind, &m.payload, now);
        if !had_video && let Some(t) = playback.first_video_us() {
            report.first_frame_after_play_ms = Some(t.saturating_sub(requested_us) as f64 / 1000.0);
        }
    }
}
