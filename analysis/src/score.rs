//! The Kayenta-style score of one sample: the weighted share of passing metrics.

/// One metric's part in a sample's score.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vote {
    /// Index of the metric's group (groups numbered in order of first appearance).
    pub(crate) group: usize,
    /// Weight of the group.
    pub(crate) group_weight: f64,
    /// Weight of the metric within its group.
    pub(crate) weight: f64,
    /// `Some(passed)` when the metric was judged; `None` leaves it out of the score.
    pub(crate) passed: Option<bool>,
}

/// Score 0-100: each group scores the weighted share of its judged metrics that passed, and
/// groups are averaged by weight. Groups without a judged metric are left out; `None` when no
/// metric was judged. `O(groups * metrics)` without allocating: groups are few.
pub(crate) fn score(votes: impl Iterator<Item = Vote> + Clone, groups: usize) -> Option<f64> {
    let (mut weighted, mut total) = (0.0, 0.0);
    for g in 0..groups {
        let (mut passed, mut judged, mut group_weight) = (0.0, 0.0, 0.0);
        for v in votes.clone().filter(|v| v.group == g) {
            if let Some(p) = v.passed {
                judged += v.weight;
                group_weight = v.group_weight;
                if p {
                    passed += v.weight;
                }
            }
        }
        if judged > 0.0 {
            weighted += group_weight * passed / judged;
            total += group_weight;
        }
    }
    (total > 0.0).then(|| 100.0 * weighted / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(group: usize, group_weight: f64, weight: f64, passed: Option<bool>) -> Vote {
        Vote {
            group,
            group_weight,
            weight,
            passed,
        }
    }

    #[test]
    fn groups_and_metrics_are_weighted() {
        // Group 0 (weight 3): metrics weighing 1 (pass) and 3 (fail) -> 25%.
        // Group 1 (weight 1): one passing metric -> 100%.
        let votes = [
            vote(0, 3.0, 1.0, Some(true)),
            vote(0, 3.0, 3.0, Some(false)),
            vote(1, 1.0, 1.0, Some(true)),
        ];
        let s = score(votes.into_iter(), 2).unwrap();
        assert!((s - (3.0 * 25.0 + 100.0) / 4.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn unjudged_metrics_and_empty_groups_are_left_out() {
        let votes = [
            vote(0, 1.0, 1.0, Some(true)),
            vote(0, 1.0, 1.0, None),
            vote(1, 5.0, 1.0, None),
        ];
        assert_eq!(score(votes.into_iter(), 2), Some(100.0));
        assert_eq!(score([vote(0, 1.0, 1.0, None)].into_iter(), 1), None);
    }
}
