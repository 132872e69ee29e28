//! The canary strategy's plan: a few instances take a growing share of the requests, step by
//! step, while the rest of the serving servers are their baseline.

use serde::{Deserialize, Serialize};

use super::weights::{Weights, split_weights};
use crate::{Error, Result};

/// What a canary does once it serves 100% of the traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// Update the baseline instances while they take no traffic, then give every server its
    /// original weight back: the whole fleet serves the new build.
    #[default]
    UpdateRest,
    /// Leave it there: the canary set serves alone; the baseline idles at weight 0 on the old
    /// build, a warm standby (what blue/green keeps after its flip).
    KeepCanary,
}

/// The canary steps used unless a request says otherwise: 1% -> 5% -> 25% -> 50% -> 100%.
pub fn default_canary_steps() -> Vec<f64> {
    vec![1.0, 5.0, 25.0, 50.0, 100.0]
}

/// Checks canary steps: each in (0, 100], growing, the last 100. `field` is their path.
pub fn validate_steps(field: &str, steps: &[f64]) -> Result<()> {
    if steps.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    crate::bounds::check_count(field, steps.len(), crate::bounds::MAX_ITEMS)?;
    let mut last = 0.0;
    for (i, &p) in steps.iter().enumerate() {
        if !(p > last && p <= 100.0) {
            return Err(Error::invalid(format!("{field}[{i}]"), "must be in (0, 100] and larger than the step before"));
        }
        last = p;
    }
    if last < 100.0 {
        return Err(Error::invalid(format!("{field}[{}]", steps.len() - 1), "the last step must send 100% of the traffic to the canary"));
    }
    Ok(())
}

/// The canaries of a request that names none: one of every twenty serving servers (5%), at
/// least one, the first ones in the balancer's order.
pub fn default_canaries(current: &Weights) -> Vec<String> {
    let serving: Vec<&String> = current.iter().filter(|(_, w)| **w > 0).map(|(s, _)| s).collect();
    let n = serving.len().div_ceil(20).max(1).min(serving.len().saturating_sub(1));
    serving.into_iter().take(n).cloned().collect()
}

/// The weights of each step of a canary, decided before any of them is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryPlan {
    /// The weights the balancer had: what a rollback returns to.
    pub original: Weights,
    /// Serving servers that are not canaries: the control group.
    pub baseline: Vec<String>,
    /// Canaries out of rotation, baseline serving: the state while canaries are updated.
    pub off: Weights,
    /// Per step: (percent, weights).
    pub steps: Vec<(f64, Weights)>,
}

/// Plans a canary on a backend whose servers have `current` weights. The baseline is every
/// *serving* server (weight above 0) that is not a canary; idle servers are left alone.
/// Errors name the request's fields (`canary[i]`, `steps[i]`) under `prefix` (empty: at the top).
pub fn plan_canary(prefix: &str, current: &Weights, canary: &[String], steps: &[f64]) -> Result<CanaryPlan> {
    let at = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    validate_steps(&at("steps"), steps)?;
    for (i, c) in canary.iter().enumerate() {
        if !current.contains_key(c) {
            return Err(Error::invalid(at(&format!("canary[{i}]")), format!("{c} is not a server of the backend")));
        }
        if canary[..i].contains(c) {
            return Err(Error::invalid(at(&format!("canary[{i}]")), format!("{c} is named twice")));
        }
    }
    let baseline: Vec<String> = current.iter().filter(|(s, w)| **w > 0 && !canary.contains(s)).map(|(s, _)| s.clone()).collect();
    if canary.is_empty() || baseline.is_empty() {
        return Err(Error::invalid(at("canary"), "must leave at least one serving server as baseline, and name at least one canary"));
    }
    let original = current.iter().filter(|(s, _)| canary.contains(s) || baseline.contains(s)).map(|(s, w)| (s.clone(), *w)).collect();
    Ok(CanaryPlan {
        original,
        off: split_weights(canary, &baseline, 0.0),
        steps: steps.iter().map(|&p| (p, split_weights(canary, &baseline, p))).collect(),
        baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_plan_keeps_idle_servers_out_and_refuses_strangers() {
        let current = Weights::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1), ("idle".into(), 0)]);
        let plan = plan_canary("strategy", &current, &["a".into()], &default_canary_steps()).unwrap();
        assert_eq!(plan.baseline, vec!["b".to_owned(), "c".to_owned()]);
        assert!(!plan.original.contains_key("idle") && !plan.off.contains_key("idle"));
        assert_eq!(plan.off["a"], 0);
        assert_eq!(plan.steps.last().unwrap().1["b"], 0);
        assert_eq!(plan_canary("strategy", &current, &["x".into()], &[100.0]).unwrap_err().field(), "strategy.canary[0]");
        let all = ["a".into(), "b".into(), "c".into()];
        assert_eq!(plan_canary("strategy", &current, &all, &[100.0]).unwrap_err().field(), "strategy.canary");
    }

    #[test]
    fn steps_must_grow_to_100() {
        assert!(validate_steps("steps", &default_canary_steps()).is_ok());
        assert_eq!(validate_steps("steps", &[5.0, 1.0, 100.0]).unwrap_err().field(), "steps[1]");
        assert_eq!(validate_steps("steps", &[5.0, 50.0]).unwrap_err().field(), "steps[1]");
        assert_eq!(validate_steps("steps", &[]).unwrap_err().field(), "steps");
    }

    #[test]
    fn without_named_canaries_one_in_twenty_serving_servers_is_one() {
        let ten: Weights = (0..10).map(|i| (format!("s{i:02}"), 1)).collect();
        assert_eq!(default_canaries(&ten), vec!["s00".to_owned()]);
        let fifty: Weights = (0..50).map(|i| (format!("s{i:02}"), 1)).collect();
        assert_eq!(default_canaries(&fifty).len(), 3);
        let one = Weights::from([("only".into(), 1)]);
        assert!(default_canaries(&one).is_empty(), "a lone server cannot be its own baseline");
    }
}
