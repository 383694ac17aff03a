//! The trust score: 0-100, computed by the coordinator from what it observed, with a sentence for every
//! point lost. Plain arithmetic, no storage.
//!
//! | part | points | how |
//! |---|---|---|
//! | uptime | 35 | share of the last 7 days (or of the time since registration, if shorter) the node was online |
//! | receipt backing | 30 | verified / claimed bytes over 7 days; full when the node claimed under 10 MB |
//! | reachability, relay service | 15 | public 10, private 6, unknown 3; +5 when receivers signed for its relaying in 7 days |
//! | age | 10 | days since registration / 30, at most 1 |
//! | conduct | 10 | 10 x (1 - rejected / 20) over 7 days: receipts refused and signed requests refused as replays |
//!
//! The score is the rounded sum.

use crate::api::{Reachability, TrustComponents, TrustSnapshot};
use crate::time::DAY_MS;

/// The window uptime, backing and conduct look at.
pub const WINDOW_MS: i64 = 7 * DAY_MS;
/// Claims below this are too small to judge backing.
pub const BACKING_MIN_CLAIM: u64 = 10_000_000;
/// Rejections in the window that take all conduct points.
pub const REJECTIONS_FOR_ZERO: u64 = 20;
/// Age that earns all age points.
pub const FULL_AGE_MS: i64 = 30 * DAY_MS;

/// What the score is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustInputs {
    /// Now (Unix ms).
    pub now_ms: i64,
    /// First registration (Unix ms).
    pub registered_at_ms: i64,
    /// Time online in the window (ms).
    pub online_ms: i64,
    /// Bytes claimed in the window.
    pub claimed_bytes: u64,
    /// Bytes backed by receipts in the window.
    pub verified_bytes: u64,
    /// Last reported reachability.
    pub reachability: Reachability,
    /// Rejected receipts and refused requests attributed to the node in the window.
    pub rejected: u64,
}

/// Computes the score.
pub fn score(i: &TrustInputs) -> TrustSnapshot {
    let mut reasons = Vec::new();
    let age_ms = (i.now_ms - i.registered_at_ms).max(0);
    let window = age_ms.min(WINDOW_MS);
    // Just registered: nothing observed yet, nothing held against it.
    let uptime_share = if window < 60_000 {
        1.0
    } else {
        (i.online_ms as f64 / window as f64).clamp(0.0, 1.0)
    };
    let uptime = 35.0 * uptime_share;
    if uptime_share < 0.99 {
        reasons.push(format!(
            "online {:.0}% of the last {} (-{:.0})",
            uptime_share * 100.0,
            if window >= WINDOW_MS {
                "7 days".to_string()
            } else {
                format!("{:.1} hours since registration", window as f64 / 3.6e6)
            },
            35.0 - uptime
        ));
    }
    let backing_share = if i.claimed_bytes < BACKING_MIN_CLAIM {
        1.0
    } else {
        (i.verified_bytes as f64 / i.claimed_bytes as f64).clamp(0.0, 1.0)
    };
    let receipt_backing = 30.0 * backing_share;
    if backing_share < 0.99 {
        reasons.push(format!(
            "only {:.0}% of the {} MB it reported relaying in 7 days is backed by receivers' receipts (-{:.0})",
            backing_share * 100.0,
            i.claimed_bytes / 1_000_000,
            30.0 - receipt_backing
        ));
    }
    let base = match i.reachability {
        Reachability::Public => 10.0,
        Reachability::Private => 6.0,
        Reachability::Unknown => 3.0,
    };
    let relay = if i.verified_bytes > 0 { 5.0 } else { 0.0 };
    let reachability = base + relay;
    if base < 10.0 {
        reasons.push(format!(
            "reachability is {} (not public) (-{:.0})",
            i.reachability.as_str(),
            10.0 - base
        ));
    }
    if relay == 0.0 {
        reasons.push("no receiver signed for relaying in 7 days (-5)".to_string());
    }
    let age_share = (age_ms as f64 / FULL_AGE_MS as f64).clamp(0.0, 1.0);
    let age = 10.0 * age_share;
    if age_share < 0.95 {
        reasons.push(format!(
            "registered {:.0} days ago; full age points after 30 days (-{:.0})",
            age_ms as f64 / DAY_MS as f64,
            10.0 - age
        ));
    }
    let conduct_share =
        1.0 - (i.rejected.min(REJECTIONS_FOR_ZERO) as f64 / REJECTIONS_FOR_ZERO as f64);
    let conduct = 10.0 * conduct_share;
    if i.rejected > 0 {
        reasons.push(format!(
            "{} rejected receipts or replayed requests in 7 days (-{:.0})",
            i.rejected,
            10.0 - conduct
        ));
    }
    let total = uptime + receipt_backing + reachability + age + conduct;
    TrustSnapshot {
        score: total.round().clamp(0.0, 100.0) as u8,
        components: TrustComponents {
            uptime,
            receipt_backing,
            reachability,
            age,
            conduct,
        },
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veteran() -> TrustInputs {
        let now = 100 * DAY_MS;
        TrustInputs {
            now_ms: now,
            registered_at_ms: now - 60 * DAY_MS,
            online_ms: WINDOW_MS,
            claimed_bytes: 5_000_000_000,
            verified_bytes: 5_000_000_000,
            reachability: Reachability::Public,
            rejected: 0,
        }
    }

    #[test]
    fn a_perfect_node_scores_100_without_reasons() {
        let s = score(&veteran());
        assert_eq!(s.score, 100);
        assert!(s.reasons.is_empty(), "{:?}", s.reasons);
    }

    #[test]
    fn unbacked_claims_cost_points_with_a_reason() {
        let mut i = veteran();
        i.verified_bytes = 1_000_000_000;
        let s = score(&i);
        assert_eq!(s.score, 100 - 24);
        assert!(
            s.reasons.iter().any(|r| r.contains("20%")),
            "{:?}",
            s.reasons
        );
    }

    #[test]
    fn half_uptime_private_and_rejections_add_up() {
        let mut i = veteran();
        i.online_ms = WINDOW_MS / 2;
        i.reachability = Reachability::Private;
        i.rejected = 5;
        let s = score(&i);
        // 17.5 + 30 + 11 + 10 + 7.5 = 76
        assert_eq!(s.score, 76);
        assert_eq!(s.reasons.len(), 3);
    }

    #[test]
    fn a_new_node_is_judged_on_what_can_be_seen() {
        let now = 10 * DAY_MS;
        let s = score(&TrustInputs {
            now_ms: now,
            registered_at_ms: now - 1000,
            reachability: Reachability::Unknown,
            ..Default::default()
        });
        // uptime 35 + backing 30 + reach 3 + age 0 + conduct 10
        assert_eq!(s.score, 78);
    }
}
