//! Weighted choice of a live deployment.
//!
//! Built only from traffic maps the control plane validated (integers summing to 100), with
//! zero weights dropped, so picking needs no checks: one number and a scan over at most 20
//! entries. The number is random, or, for a request carrying the endpoint's
//! `traffic_affinity` header, a stable hash of that header's value (sticky assignment).
//!
//! **Why sticky assignment is monotone.** The split is a row of bands over `0..100`, one per
//! deployment, always in the same order (by name: the control plane's traffic map is sorted),
//! each as wide as its weight. A user's point in `0..100` depends only on the header's value.
//! When one deployment's share grows and every other share shrinks or stays (what each step
//! of a rollout does), the bands before it can only end earlier and the bands after it can
//! only start later, so its band only widens at both edges: every user it served still lands
//! in it, and the users who move are exactly those whose point falls in the added width. With
//! two deployments (blue/green) that is also the whole story for the other side: raising
//! green from 10 to 25 moves exactly the users with points in the 15 newly green percent, and
//! none from green back to blue (`tests/properties.rs` checks both on random weights). With
//! three or more deployments the shrinking ones may trade users among themselves (their bands
//! shift along the row); none ever takes a user from the growing one.

use std::sync::Arc;

use crate::deployment::Deployment;

/// Deployments with live traffic and their cumulative percent bounds.
#[derive(Clone)]
pub struct WeightedSplit<T = Arc<Deployment>> {
    /// `(upper bound, deployment)` with increasing bounds; the last bound is the total.
    entries: Vec<(u32, T)>,
}

impl<T> Default for WeightedSplit<T> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<T> WeightedSplit<T> {
    /// Builds the split from `(deployment, percent)` pairs, in the order given (the control
    /// plane gives them by name, which sticky assignment relies on); zero weights are left out
    /// so they can never be picked.
    pub fn new(weights: impl IntoIterator<Item = (T, u32)>) -> Self {
        let mut total = 0;
        let entries = weights
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(d, w)| {
                total += w;
                (total, d)
            })
            .collect();
        Self { entries }
    }

    /// Picks a deployment in proportion to its weight; `None` when no deployment has traffic.
    pub fn pick(&self) -> Option<&T> {
        self.pick_with(|total| fastrand::u32(0..total))
    }

    /// Picks the deployment whose band holds `key`'s point: the same key gets the same
    /// deployment for as long as the weights hold (see the module notes for what happens when
    /// they change).
    pub fn pick_sticky(&self, key: &[u8]) -> Option<&T> {
        self.pick_with(|total| affinity_point(key, total))
    }

    /// [`pick`](Self::pick) with a given source of the point in `0..total` (for tests and
    /// benchmarks).
    pub fn pick_with(&self, point_below: impl FnOnce(u32) -> u32) -> Option<&T> {
        let total = self.entries.last()?.0;
        let r = point_below(total);
        self.entries.iter().find(|(bound, _)| r < *bound).map(|(_, d)| d)
    }

    /// The deployments that receive live traffic.
    pub fn deployments(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, d)| d)
    }
}

/// A stable 64-bit hash of a sticky key: FNV-1a (64-bit offset basis and prime) over the bytes,
/// then SplitMix64's finaliser so that keys differing in one character spread over the whole
/// range. Fixed constants, no per-process random key (unlike the standard library's SipHash
/// `RandomState`), so a user maps to the same point in every process and after every restart.
pub fn affinity_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `key`'s point in `0..total`: its hash as a fraction of 2^64 (a point in [0, 1)) scaled to
/// the split's total, by a multiply and a shift.
pub fn affinity_point(key: &[u8], total: u32) -> u32 {
    ((u128::from(affinity_hash(key)) * u128::from(total)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_and_spreads() {
        // Pinned values: changing the hash would move every sticky user at upgrade.
        assert_eq!(affinity_hash(b"user-1"), 0xc499_b5f8_a721_df58);
        assert_eq!(affinity_point(b"user-1", 100), 76);
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[affinity_point(format!("user-{i}").as_bytes(), 10) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "uneven: {counts:?}");
    }
}
