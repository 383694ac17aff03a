//! Judging one receipt against what its series already had credited: plain code, no storage, so every rule
//! is unit-tested. The caller has verified the signature and the receiver's registration.

use crate::api::ReceiptRejection;
use crate::auth::MAX_SKEW_MS;
use crate::receipt::{RECEIPT_INTERVAL_MS, Receipt};

/// More than 1 Gbit/s from one provider to one receiver for one stream is no home link.
pub const MAX_BYTES_PER_MS: u64 = 125_000;

/// What a series has credited so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesState {
    /// Highest accepted counter.
    pub counter: u64,
    /// Bytes credited (the accepted receipt's cumulative bytes).
    pub bytes: u64,
    /// Its window end (Unix ms).
    pub window_end_ms: u64,
}

/// Decides whether `r` is credited, and how many new bytes.
pub fn judge(prev: Option<SeriesState>, r: &Receipt, now_ms: i64) -> Result<u64, ReceiptRejection> {
    let now = u64::try_from(now_ms).unwrap_or(0);
    // Values are stored as signed 64-bit integers.
    let max = i64::MAX as u64;
    if r.bytes > max || r.frames > max || r.counter > max || r.window_end_ms > max {
        return Err(ReceiptRejection::Implausible);
    }
    if r.counter == 0
        || r.window_end_ms < r.window_start_ms
        || r.window_end_ms > now + MAX_SKEW_MS as u64
    {
        return Err(ReceiptRejection::Inconsistent);
    }
    let (since_ms, new_bytes) = match prev {
        None => (r.window_start_ms, r.bytes),
        Some(p) => {
            if r.counter == p.counter {
                return Err(ReceiptRejection::Duplicate);
            }
            if r.counter < p.counter {
                return Err(ReceiptRejection::CounterWentBack);
            }
            if r.bytes < p.bytes || r.window_end_ms < p.window_end_ms {
                return Err(ReceiptRejection::Inconsistent);
            }
            (p.window_end_ms, r.bytes - p.bytes)
        }
    };
    // One receipt interval of slack: the first receipt of a series may cover a little more than its window.
    let elapsed = r.window_end_ms.saturating_sub(since_ms) + RECEIPT_INTERVAL_MS as u64;
    if new_bytes > elapsed.saturating_mul(MAX_BYTES_PER_MS) {
        return Err(ReceiptRejection::Implausible);
    }
    Ok(new_bytes)
}

/// Whether a rejection counts against the submitting node's trust. Duplicates are what an honest client
/// sends when an answer got lost; an offline receiver is not the provider's doing.
pub fn counts_against_provider(reason: ReceiptRejection) -> bool {
    !matches!(
        reason,
        ReceiptRejection::Duplicate
            | ReceiptRejection::ReceiverOffline
            | ReceiptRejection::ReceiverUnregistered
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::PeerId;

    fn r(counter: u64, bytes: u64, end: u64) -> Receipt {
        Receipt {
            stream: "s".into(),
            provider: PeerId::random(),
            receiver: PeerId::random(),
            bytes,
            frames: 1,
            window_start_ms: 1_000_000,
            window_end_ms: end,
            counter,
        }
    }

    const NOW: i64 = 2_000_000;

    #[test]
    fn first_receipt_credits_its_bytes() {
        assert_eq!(judge(None, &r(1, 5_000, 1_010_000), NOW), Ok(5_000));
    }

    #[test]
    fn later_receipts_credit_only_the_difference() {
        let prev = SeriesState {
            counter: 1,
            bytes: 5_000,
            window_end_ms: 1_010_000,
        };
        assert_eq!(judge(Some(prev), &r(2, 8_000, 1_020_000), NOW), Ok(3_000));
        // A skipped counter is fine: receipts can be lost, the next one covers them.
        assert_eq!(judge(Some(prev), &r(5, 9_000, 1_050_000), NOW), Ok(4_000));
    }

    #[test]
    fn replays_and_going_back_are_refused() {
        let prev = SeriesState {
            counter: 3,
            bytes: 5_000,
            window_end_ms: 1_030_000,
        };
        assert_eq!(
            judge(Some(prev), &r(3, 5_000, 1_030_000), NOW),
            Err(ReceiptRejection::Duplicate)
        );
        assert_eq!(
            judge(Some(prev), &r(2, 4_000, 1_020_000), NOW),
            Err(ReceiptRejection::CounterWentBack)
        );
        assert_eq!(
            judge(Some(prev), &r(4, 4_000, 1_040_000), NOW),
            Err(ReceiptRejection::Inconsistent)
        );
    }

    #[test]
    fn impossible_windows_and_rates_are_refused() {
        assert_eq!(
            judge(None, &r(1, 10, 999_999), NOW),
            Err(ReceiptRejection::Inconsistent)
        );
        assert_eq!(
            judge(None, &r(1, 10, NOW as u64 + MAX_SKEW_MS as u64 + 1), NOW),
            Err(ReceiptRejection::Inconsistent)
        );
        assert_eq!(
            judge(None, &r(0, 10, 1_010_000), NOW),
            Err(ReceiptRejection::Inconsistent)
        );
        // 20 s of window + 10 s slack at 1 Gbit/s.
        assert_eq!(
            judge(None, &r(1, 30_000 * MAX_BYTES_PER_MS, 1_020_000), NOW),
            Ok(30_000 * MAX_BYTES_PER_MS)
        );
        assert_eq!(
            judge(None, &r(1, 30_000 * MAX_BYTES_PER_MS + 1, 1_020_000), NOW),
            Err(ReceiptRejection::Implausible)
        );
        assert_eq!(
            judge(None, &r(1, u64::MAX, 1_010_000), NOW),
            Err(ReceiptRejection::Implausible)
        );
    }
}
