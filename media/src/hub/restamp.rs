//! `Restamper`: decides which of a source's frames a hub emits, and with which timestamp and sequence number,
//! so that subscribers see one continuous stream across publisher reconnects and mesh failovers.

use crate::frame::{Frame, FrameKind};

/// How a source's frames relate to what the hub already emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// A new encoder session (an RTMP publisher): its timestamps start anywhere, so the hub shifts them to
    /// continue after the last emitted frame, and numbers the frames itself.
    Rebase,
    /// The same origin's frames through another path (a mesh upstream): timestamps and sequence numbers are
    /// the origin's; frames already emitted are dropped, and a gap is bridged at the next keyframe.
    SameOrigin,
}

/// Timestamp distance between the last frame of one publisher and the first of the next.
const REBASE_GAP_MS: u32 = 40;

/// What the restamper made of one frame.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Emit this frame (restamped when the source is rebased).
    Emit(Frame),
    /// Already emitted through an earlier path: drop silently.
    Duplicate,
    /// Dropped while waiting for a keyframe after a gap: counts as a dropped frame.
    Gap,
}

/// The continuity state of one hub.
#[derive(Debug)]
pub(crate) struct Restamper {
    continuity: Continuity,
    /// First timestamp of the current Rebase source, and what it maps to.
    rebase: Option<(u32, u32)>,
    /// Waiting for a keyframe after a source switch whose frames do not join up with ours.
    await_keyframe: bool,
    next_seq: u64,
    last_seq: Option<u64>,
    last_ts: Option<u32>,
}

impl Restamper {
    pub(crate) fn new() -> Self {
        Restamper {
            continuity: Continuity::Rebase,
            rebase: None,
            await_keyframe: false,
            next_seq: 1,
            last_seq: None,
            last_ts: None,
        }
    }

    /// A new source attached.
    pub(crate) fn start(&mut self, continuity: Continuity) {
        self.continuity = continuity;
        self.rebase = None;
        // Rebased frames are numbered by us; same-origin frames after our last one join up seamlessly and
        // anything else waits for a keyframe (decided per frame).
        self.await_keyframe = false;
    }

    /// The last emitted frame's sequence number and timestamp.
    pub(crate) fn position(&self) -> Option<(u64, u32)> {
        Some((self.last_seq?, self.last_ts?))
    }

    /// Decides the fate of one frame; `has_video` says whether this stream carries video (an audio-only
    /// stream has no keyframes to wait for).
    pub(crate) fn admit(&mut self, frame: Frame, has_video: bool) -> Admit {
        let frame = match self.continuity {
            Continuity::Rebase => {
                let ts = match self.rebase {
                    Some((first_in, first_out)) => {
                        first_out.wrapping_add(frame.timestamp().wrapping_sub(first_in))
                    }
                    None => {
                        // The first source keeps its own clock (latency probes rely on it); a later one
                        // continues a little after the last frame so players see time go forward.
                        let out = match self.last_ts {
                            Some(last) => last.wrapping_add(REBASE_GAP_MS),
                            None => frame.timestamp(),
                        };
                        self.rebase = Some((frame.timestamp(), out));
                        out
                    }
                };
                let seq = self.next_seq;
                self.next_seq = self.next_seq.saturating_add(1);
                frame.restamped(ts, seq)
            }
            Continuity::SameOrigin => {
                let media = frame.kind() != FrameKind::Data && !frame.is_sequence_header();
                if let Some(last) = self.last_seq {
                    if frame.seq() <= last {
                        return Admit::Duplicate;
                    }
                    if frame.seq() != last.saturating_add(1)
                        && media
                        && !frame.is_keyframe()
                        && has_video
                    {
                        self.await_keyframe = true;
                    }
                }
                if self.await_keyframe {
                    if frame.is_keyframe() {
                        self.await_keyframe = false;
                    } else if media {
                        return Admit::Gap;
                    }
                }
                self.next_seq = self.next_seq.max(frame.seq().saturating_add(1));
                frame
            }
        };
        self.last_seq = Some(frame.seq());
        self.last_ts = Some(frame.timestamp());
        Admit::Emit(frame)
    }
}
