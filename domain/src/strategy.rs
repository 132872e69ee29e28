//! How a deploy moves a build onto its target: rolling batches, a canary taking a growing share
//! of the requests, or blue/green with one flip. Every strategy runs under the same operator
//! control, approval gates, health analysis and rollback.

use serde::{Deserialize, Serialize};

use crate::bounds::{MAX_INSTANCES, check_count, check_id};
use crate::traffic::{LbTarget, Promotion, default_canary_steps, validate_steps};
use crate::{BatchPlan, Error, Result};

/// The strategy of a deploy; `{"kind": "rolling"}` unless the request says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    /// Batches of instances updated in place, each judged before the next (`batch_plan`).
    #[default]
    Rolling,
    /// Canaries updated while out of rotation, then given a growing share of the requests by
    /// load-balancer weights, judged against the other serving servers at every step.
    Canary(CanarySpec),
    /// The idle (green) servers updated and verified under a verification load, then every
    /// request flipped to them in one write; blue stays ready for an instant flip back while
    /// the rollback window is open.
    BlueGreen(BlueGreenSpec),
}

/// A canary's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// The balancer in front of the target.
    pub lb: LbTarget,
    /// Servers (instance ids) that become the canary; empty: one of every twenty serving
    /// servers, at least one.
    #[serde(default)]
    pub canary: Vec<String>,
    /// Shares of traffic in percent sent to the canary, step by step; the last must be 100.
    /// Default 1 -> 5 -> 25 -> 50 -> 100.
    #[serde(default = "default_canary_steps")]
    pub steps: Vec<f64>,
    /// What happens at 100%; default: update the rest and restore the original weights.
    #[serde(default)]
    pub promotion: Promotion,
}

/// A blue/green deploy's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueGreenSpec {
    /// The balancer in front of the target: servers with a weight are blue, servers at weight
    /// 0 green.
    pub lb: LbTarget,
    /// Verification requests per second sent to each green and blue instance; default 20.
    #[serde(default = "default_verify_rps")]
    pub verify_rps: u32,
}

fn default_verify_rps() -> u32 {
    DEFAULT_VERIFY_RPS
}

/// Verification requests per second per instance unless the request says.
pub const DEFAULT_VERIFY_RPS: u32 = 20;
/// Most verification requests per second per instance.
pub const MAX_VERIFY_RPS: u32 = 10_000;

impl Strategy {
    /// The strategy's name as the status and the `SignalboxStrategy` search attribute say it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::Canary(_) => "canary",
            Self::BlueGreen(_) => "blue_green",
        }
    }

    /// How many steps the strategy's plan has at most: batches, traffic steps, or the one flip.
    /// Approval gates name these (1-based).
    pub fn steps(&self, batch_plan: &BatchPlan) -> usize {
        match self {
            Self::Rolling => batch_plan.steps.len(),
            Self::Canary(c) => c.steps.len(),
            Self::BlueGreen(_) => 1,
        }
    }

    /// Checks what can be checked without the world; errors name the field under `strategy`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Rolling => Ok(()),
            Self::Canary(c) => {
                c.lb.validate("strategy.lb")?;
                check_count("strategy.canary", c.canary.len(), MAX_INSTANCES)?;
                for (i, id) in c.canary.iter().enumerate() {
                    check_id(&format!("strategy.canary[{i}]"), id)?;
                    if c.canary[..i].contains(id) {
                        return Err(Error::invalid(format!("strategy.canary[{i}]"), format!("{id} is named twice")));
                    }
                }
                validate_steps("strategy.steps", &c.steps)
            }
            Self::BlueGreen(b) => {
                b.lb.validate("strategy.lb")?;
                if !(1..=MAX_VERIFY_RPS).contains(&b.verify_rps) {
                    return Err(Error::invalid("strategy.verify_rps", format!("must be 1 to {MAX_VERIFY_RPS}: a set nobody asked anything is not verified")));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategy_reads_from_the_json_a_person_types() {
        let rolling: Strategy = serde_json::from_str(r#"{"kind": "rolling"}"#).unwrap();
        assert_eq!(rolling, Strategy::Rolling);
        let canary: Strategy = serde_json::from_str(r#"{"kind": "canary", "lb": {"stats_socket": "/run/h.sock", "backend": "web"}}"#).unwrap();
        let Strategy::Canary(spec) = &canary else { panic!("{canary:?}") };
        assert_eq!((spec.steps.clone(), spec.canary.is_empty(), spec.promotion), (default_canary_steps(), true, Promotion::UpdateRest));
        canary.validate().unwrap();
        let bg: Strategy = serde_json::from_str(r#"{"kind": "blue_green", "lb": {"stats_socket": "/run/h.sock", "backend": "web"}}"#).unwrap();
        assert_eq!((bg.name(), bg.steps(&BatchPlan::default())), ("blue_green", 1));
        let typo = serde_json::from_str::<Strategy>(r#"{"kind": "canary", "lb": {"stats_socket": "s", "backend": "b"}, "step": [100]}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field `step`"));
    }

    #[test]
    fn each_rule_names_its_field_under_strategy() {
        let lb = LbTarget { stats_socket: "/run/h.sock".into(), backend: "web".into() };
        let canary = |canary: Vec<&str>, steps: Vec<f64>| {
            Strategy::Canary(CanarySpec { lb: lb.clone(), canary: canary.into_iter().map(String::from).collect(), steps, promotion: Promotion::UpdateRest })
        };
        assert_eq!(canary(vec!["a", "a"], vec![100.0]).validate().unwrap_err().field(), "strategy.canary[1]");
        assert_eq!(canary(vec!["a"], vec![50.0]).validate().unwrap_err().field(), "strategy.steps[0]");
        let no_socket = Strategy::BlueGreen(BlueGreenSpec { lb: LbTarget { stats_socket: " ".into(), ..lb.clone() }, verify_rps: 20 });
        assert_eq!(no_socket.validate().unwrap_err().field(), "strategy.lb.stats_socket");
        let silent = Strategy::BlueGreen(BlueGreenSpec { lb, verify_rps: 0 });
        assert_eq!(silent.validate().unwrap_err().field(), "strategy.verify_rps");
    }
}
