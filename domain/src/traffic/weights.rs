//! Server weights: which integer weights give a group of servers a share of the requests.

use std::collections::BTreeMap;

/// Server name (the instance id) to weight.
pub type Weights = BTreeMap<String, u32>;

/// Highest weight a load balancer server takes (HAProxy's limit).
pub const MAX_WEIGHT: u32 = 256;

/// Per-server weights of two groups such that `group`'s servers together take `percent` of the
/// traffic and `rest` the remainder, as close as integer weights in 1..=[`MAX_WEIGHT`] allow.
/// At 0% the group gets weight 0 and the rest 1; at 100% the reverse.
pub fn split_weights(group: &[String], rest: &[String], percent: f64) -> Weights {
    let (g, r) = if percent <= 0.0 || group.is_empty() {
        (0, 1)
    } else if percent >= 100.0 || rest.is_empty() {
        (1, 0)
    } else {
        best_pair(group.len() as f64, rest.len() as f64, percent / 100.0)
    };
    group.iter().map(|s| (s.clone(), g)).chain(rest.iter().map(|s| (s.clone(), r))).collect()
}

/// The integer weights (per group server, per rest server) whose share is nearest `target`;
/// ties go to the smaller group weight.
fn best_pair(n_group: f64, n_rest: f64, target: f64) -> (u32, u32) {
    let share = |g: u32, r: u32| n_group * f64::from(g) / (n_group * f64::from(g) + n_rest * f64::from(r));
    let mut best = (1, MAX_WEIGHT, f64::INFINITY);
    for g in 1..=MAX_WEIGHT {
        let ideal = f64::from(g) * n_group * (1.0 - target) / (target * n_rest);
        let r = (ideal.round() as u32).clamp(1, MAX_WEIGHT);
        let error = (share(g, r) - target).abs();
        if error < best.2 - 1e-12 {
            best = (g, r, error);
        }
    }
    (best.0, best.1)
}

/// The share of traffic, in percent, that `weights` send to `group`.
pub fn share_percent(weights: &Weights, group: &[String]) -> f64 {
    let total: u64 = weights.values().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return 0.0;
    }
    let in_group: u64 = group.iter().filter_map(|s| weights.get(s)).map(|&w| u64::from(w)).sum();
    100.0 * in_group as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn canary_weights_give_the_configured_share() {
        let (canary, base) = (names("c", 2), names("b", 8));
        for p in [1.0, 5.0, 25.0, 50.0, 100.0] {
            let w = split_weights(&canary, &base, p);
            assert!((share_percent(&w, &canary) - p).abs() < 0.01, "{p}%: {w:?}");
            assert!(w.values().all(|&x| x <= MAX_WEIGHT));
        }
        // 1% of traffic on 2 of 10 servers: each canary 4, each baseline 99.
        assert_eq!(split_weights(&canary, &base, 1.0)["c0"], 4);
        assert_eq!(split_weights(&canary, &base, 1.0)["b0"], 99);
        assert_eq!(share_percent(&split_weights(&canary, &base, 0.0), &canary), 0.0);
    }

    #[test]
    fn shares_that_integers_cannot_hit_come_as_close_as_they_can() {
        let (canary, base) = (names("c", 1), names("b", 200));
        let w = split_weights(&canary, &base, 0.1);
        assert!((share_percent(&w, &canary) - 0.1).abs() < 0.05, "{w:?}");
    }
}
