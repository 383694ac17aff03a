//! `Restamper`: decides which of a source's frames a hub emits, and with which timestamp and sequence number,
//! so that subscribers see one continuous stream across publisher reconnects, mesh failovers and origin
//! restarts. Sequence numbers come from the network on a mesh source, so nothing here trusts them: a jump
//! no honest origin makes is refused rather than allowed to pin the stream, and arithmetic never wraps.

use crate::frame::{Frame, FrameKind};

/// How a source's frames relate to what the hub already emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// A new encoder session (an RTMP publisher): its timestamps start anywhere, so the hub shifts them to
    /// continue after the last emitted frame, and numbers the frames itself.
    Rebase,
    /// The same origin's frames through another path (a mesh upstream): sequence numbers are the origin's;
    /// frames already emitted are dropped, and a gap is bridged at the next keyframe.
    SameOrigin,
}

/// Timestamp distance between the last frame of one publisher (or origin session) and the first of the next.
const REBASE_GAP_MS: u32 = 40;

/// The largest step in the origin's sequence numbers a mesh source may make. An origin numbers about 80
/// frames a second, and a hub waits for a lost source for 30 s: an honest step is a few thousand frames. A
/// larger one is refused: accepting a forged `u64::MAX` would make every honest frame after it look old.
pub const MAX_SEQ_JUMP: u64 = 1 << 16;

/// What the restamper made of one frame.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Emit this frame (restamped when the source is rebased).
    Emit(Frame),
    /// Already emitted through an earlier path: drop silently.
    Duplicate,
    /// Dropped while waiting for a keyframe after a gap: counts as a dropped frame.
    Gap,
    /// A sequence number no honest origin sends (see [`MAX_SEQ_JUMP`]): dropped and counted.
    Implausible,
}

/// Which non-media frame a frame is (each kind is deduplicated on its own, see [`Restamper::admit`]).
fn side_slot(frame: &Frame) -> Option<usize> {
    match frame.kind() {
        FrameKind::Data => Some(0),
        FrameKind::Video if frame.is_sequence_header() => Some(1),
        FrameKind::Audio if frame.is_sequence_header() => Some(2),
        _ => None,
    }
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
    /// Sequence number of the last frame emitted (any kind), in emission order: a media frame that does not
    /// follow it was preceded by frames we never got.
    last_seq: Option<u64>,
    /// Highest sequence number of an emitted audio or video frame: anything at or below it is old.
    last_media_seq: Option<u64>,
    /// Sequence numbers of the metadata, video header and audio header emitted last. Those are deduplicated
    /// by identity rather than order: a new subscriber's start bundle sends them before the keyframe, even
    /// when a metadata update is newer than the keyframe.
    last_side_seq: [Option<u64>; 3],
    /// Timestamp of the last emitted frame, as emitted.
    last_ts: Option<u32>,
    /// The origin publish session a same-origin source belongs to, once one was named.
    session: Option<u64>,
    /// What is added to a same-origin source's timestamps: 0 in the hub's first session (latency probes read
    /// the origin's clock), set at the first frame of a later session so that players see time go forward.
    shift: Option<u32>,
}

impl Restamper {
    pub(crate) fn new() -> Self {
        Restamper {
            continuity: Continuity::Rebase,
            rebase: None,
            await_keyframe: false,
            next_seq: 1,
            last_seq: None,
            last_media_seq: None,
            last_side_seq: [None; 3],
            last_ts: None,
            session: None,
            shift: None,
        }
    }

    /// A new source attached; `session` names the origin's publish its frames belong to (a mesh source),
    /// if known. Returns true when this begins a new origin session after frames of another (the origin
    /// restarted, or a local publisher came before): what the hub cached then belongs to another stream.
    pub(crate) fn start(&mut self, continuity: Continuity, session: Option<u64>) -> bool {
        let previous = self.continuity;
        self.continuity = continuity;
        self.rebase = None;
        // Rebased frames are numbered by us; same-origin frames after our last one join up seamlessly and
        // anything else waits for a keyframe (decided per frame).
        self.await_keyframe = false;
        if continuity == Continuity::Rebase {
            self.session = None;
            return false;
        }
        let emitted = self.last_ts.is_some();
        let other_session = match (self.session, session) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        let new_session = emitted && (previous == Continuity::Rebase || other_session);
        if session.is_some() {
            self.session = session;
        }
        if new_session {
            self.last_seq = None;
            self.last_media_seq = None;
            self.last_side_seq = [None; 3];
            self.shift = None;
        }
        new_session
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
                if side_slot(&frame).is_none() {
                    self.last_media_seq = Some(seq);
                }
                frame.restamped(ts, seq)
            }
            Continuity::SameOrigin => match self.same_origin(frame, has_video) {
                Ok(f) => f,
                Err(a) => return a,
            },
        };
        self.last_seq = Some(frame.seq());
        self.last_ts = Some(frame.timestamp());
        Admit::Emit(frame)
    }

    fn same_origin(&mut self, frame: Frame, has_video: bool) -> Result<Frame, Admit> {
        let seq = frame.seq();
        let newest = self.last_seq.max(self.last_media_seq);
        if newest.is_some_and(|n| seq > n && seq - n > MAX_SEQ_JUMP) {
            return Err(Admit::Implausible);
        }
        match side_slot(&frame) {
            Some(slot) => {
                if self.last_side_seq[slot] == Some(seq) {
                    return Err(Admit::Duplicate);
                }
                self.last_side_seq[slot] = Some(seq);
            }
            None => {
                if self.last_media_seq.is_some_and(|last| seq <= last) {
                    return Err(Admit::Duplicate);
                }
                let follows = self
                    .last_seq
                    .is_none_or(|last| last.checked_add(1) == Some(seq));
                if !follows && !frame.is_keyframe() && has_video {
                    self.await_keyframe = true;
                }
                if self.await_keyframe {
                    if !frame.is_keyframe() {
                        return Err(Admit::Gap);
                    }
                    self.await_keyframe = false;
                }
                self.last_media_seq = Some(seq);
            }
        }
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        let last_ts = self.last_ts;
        let shift = *self.shift.get_or_insert_with(|| match last_ts {
            Some(last) => last
                .wrapping_add(REBASE_GAP_MS)
                .wrapping_sub(frame.timestamp()),
            None => 0,
        });
        Ok(frame.shown_at(frame.timestamp().wrapping_add(shift)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn f(kind: FrameKind, body: &'static [u8], ts: u32, seq: u64) -> Frame {
        Frame::new(kind, ts, seq, Bytes::from_static(body))
    }
    fn key(ts: u32, seq: u64) -> Frame {
        f(FrameKind::Video, &[0x17, 1, 0, 0, 0], ts, seq)
    }
    fn inter(ts: u32, seq: u64) -> Frame {
        f(FrameKind::Video, &[0x27, 1, 0, 0, 0], ts, seq)
    }
    fn vheader(seq: u64) -> Frame {
        f(FrameKind::Video, &[0x17, 0, 0, 0, 0], 0, seq)
    }
    fn meta(seq: u64) -> Frame {
        f(FrameKind::Data, b"onMetaData", 0, seq)
    }

    fn emitted(a: Admit) -> Frame {
        match a {
            Admit::Emit(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn a_forged_huge_sequence_number_is_refused_and_does_not_pin_the_stream() {
        let mut r = Restamper::new();
        r.start(Continuity::SameOrigin, Some(1));
        emitted(r.admit(key(0, 10), true));
        emitted(r.admit(inter(33, 11), true));
        assert!(matches!(
            r.admit(inter(66, u64::MAX), true),
            Admit::Implausible
        ));
        assert!(matches!(
            r.admit(inter(66, 11 + MAX_SEQ_JUMP + 1), true),
            Admit::Implausible
        ));
        // Honest frames go on as if the forgery never came.
        assert_eq!(emitted(r.admit(inter(66, 12), true)).seq(), 12);
        // A large but plausible step (a failover after a long gap) waits for a keyframe, then plays.
        let far = 12 + MAX_SEQ_JUMP - 5;
        assert!(matches!(r.admit(inter(9000, far), true), Admit::Gap));
        assert_eq!(emitted(r.admit(key(9033, far + 1), true)).seq(), far + 1);
    }

    #[test]
    fn an_origin_restart_starts_over_with_time_going_forward() {
        let mut r = Restamper::new();
        assert!(!r.start(Continuity::SameOrigin, Some(7)));
        emitted(r.admit(vheader(1), true));
        assert_eq!(emitted(r.admit(key(5000, 2), true)).timestamp(), 5000);
        emitted(r.admit(inter(5033, 3), true));
        // The same session through another path: no reset, duplicates dropped.
        assert!(!r.start(Continuity::SameOrigin, Some(7)));
        assert!(matches!(r.admit(inter(5033, 3), true), Admit::Duplicate));
        // The origin restarted: its numbering and clock start again at 1 and 0.
        assert!(r.start(Continuity::SameOrigin, Some(8)));
        assert_eq!(emitted(r.admit(vheader(1), true)).seq(), 1);
        let k = emitted(r.admit(key(0, 2), true));
        assert_eq!((k.seq(), k.timestamp()), (2, 5033 + REBASE_GAP_MS));
        assert_eq!(emitted(r.admit(inter(33, 3), true)).timestamp(), 5106);
    }

    #[test]
    fn a_start_bundle_whose_metadata_is_newer_than_its_keyframe_passes_whole() {
        let mut r = Restamper::new();
        r.start(Continuity::SameOrigin, Some(1));
        // Metadata updated after the keyframe: the bundle is metadata 50, header 3, keyframe 40, 41.
        for fr in [meta(50), vheader(3), key(1000, 40), inter(1033, 41)] {
            emitted(r.admit(fr, true));
        }
        assert_eq!(emitted(r.admit(inter(1066, 42), true)).seq(), 42);
        // A failover replays the bundle: nothing is emitted twice.
        r.start(Continuity::SameOrigin, Some(1));
        for fr in [meta(50), vheader(3), key(1000, 40), inter(1066, 42)] {
            assert!(matches!(r.admit(fr, true), Admit::Duplicate));
        }
        // A metadata update between media frames is not a gap.
        emitted(r.admit(meta(43), true));
        assert_eq!(emitted(r.admit(inter(1099, 44), true)).seq(), 44);
    }

    #[test]
    fn sequence_numbers_saturate_instead_of_wrapping() {
        let mut r = Restamper::new();
        r.start(Continuity::SameOrigin, None);
        emitted(r.admit(key(0, u64::MAX - 1), true));
        emitted(r.admit(inter(33, u64::MAX), true));
        assert!(matches!(
            r.admit(inter(66, u64::MAX), true),
            Admit::Duplicate
        ));
        assert_eq!(r.next_seq, u64::MAX);
    }
}
