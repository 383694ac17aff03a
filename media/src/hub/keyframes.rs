//! `KeyframeCache`: what a new subscriber needs to start decoding at once: the stream's metadata, its codec
//! sequence headers and the frames since the last keyframe (bounded in frames and bytes).

use crate::frame::{Frame, FrameKind};
use std::collections::VecDeque;

/// The start bundle of one hub.
#[derive(Debug)]
pub(crate) struct KeyframeCache {
    metadata: Option<Frame>,
    video_header: Option<Frame>,
    audio_header: Option<Frame>,
    /// Frames since the last keyframe, valid only while `gop_valid`.
    gop: Vec<Frame>,
    gop_bytes: usize,
    /// False until the first keyframe, and after a GOP outgrew the limits (until the next keyframe).
    gop_valid: bool,
    /// The stream has carried video (so players must start on a keyframe).
    has_video: bool,
    max_frames: usize,
    max_bytes: usize,
}

impl KeyframeCache {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        KeyframeCache {
            metadata: None,
            video_header: None,
            audio_header: None,
            gop: Vec::new(),
            gop_bytes: 0,
            gop_valid: false,
            has_video: false,
            max_frames,
            max_bytes,
        }
    }

    /// Forgets the cached GOP (a new encoder session: old keyframes do not decode with its headers).
    pub(crate) fn reset_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_valid = false;
    }

    /// Forgets everything: a new origin session's metadata and headers will come with its first frames,
    /// and the old ones belong to another encoder session.
    pub(crate) fn reset_all(&mut self) {
        self.metadata = None;
        self.video_header = None;
        self.audio_header = None;
        self.reset_gop();
    }

    /// True once the stream carried video.
    pub(crate) fn has_video(&self) -> bool {
        self.has_video
    }

    /// True when a new subscriber can start from the cache (false: it must wait for the next keyframe).
    pub(crate) fn joinable(&self) -> bool {
        self.gop_valid || !self.has_video
    }

    /// The latest `onMetaData`.
    pub(crate) fn metadata(&self) -> Option<&Frame> {
        self.metadata.as_ref()
    }

    /// Metadata, headers and the cached GOP, in the order a player needs them.
    pub(crate) fn start_bundle(&self) -> VecDeque<Frame> {
        let mut start = VecDeque::with_capacity(self.gop.len() + 3);
        start.extend(self.metadata.iter().cloned());
        start.extend(self.video_header.iter().cloned());
        start.extend(self.audio_header.iter().cloned());
        if self.gop_valid {
            start.extend(self.gop.iter().cloned());
        }
        start
    }

    /// Takes note of an emitted frame.
    pub(crate) fn remember(&mut self, frame: &Frame) {
        if frame.kind() == FrameKind::Data {
            self.metadata = Some(frame.clone());
            return;
        }
        if frame.kind() == FrameKind::Video {
            self.has_video = true;
        }
        if frame.is_sequence_header() {
            match frame.kind() {
                FrameKind::Video => self.video_header = Some(frame.clone()),
                _ => self.audio_header = Some(frame.clone()),
            }
            return;
        }
        if frame.is_keyframe() {
            self.gop.clear();
            self.gop_bytes = 0;
            self.gop_valid = true;
        }
        if self.gop_valid {
            if self.gop.len() >= self.max_frames || self.gop_bytes + frame.len() > self.max_bytes {
                // An over-long GOP is dropped, not grown: joiners wait for the next keyframe.
                self.reset_gop();
                return;
            }
            self.gop_bytes += frame.len();
            self.gop.push(frame.clone());
        }
    }

    #[cfg(test)]
    pub(crate) fn gop_len(&self) -> usize {
        self.gop.len()
    }

    #[cfg(test)]
    pub(crate) fn gop_valid(&self) -> bool {
        self.gop_valid
    }
}
