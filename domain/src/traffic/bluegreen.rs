//! The blue/green strategy's plan: the serving servers are blue, the idle ones green; the flip
//! sends everything to green in one write.

use serde::{Deserialize, Serialize};

use super::weights::Weights;
use crate::{Error, Result};

/// The two sets of a blue/green backend and the weights of the flip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenPlan {
    /// Serving servers (weight above 0).
    pub blue: Vec<String>,
    /// Idle servers (weight 0): they get the new build.
    pub green: Vec<String>,
    /// Weights before the flip: what a flip back returns to.
    pub original: Weights,
    /// After the flip: every green server takes the largest blue weight, blue takes none.
    pub flipped: Weights,
}

/// Splits a backend into blue (serving) and green (idle) and plans the flip. Errors name the
/// balancer's field under `prefix`.
pub fn plan_blue_green(prefix: &str, current: &Weights) -> Result<BlueGreenPlan> {
    let blue: Vec<String> = current.iter().filter(|(_, w)| **w > 0).map(|(s, _)| s.clone()).collect();
    let green: Vec<String> = current.iter().filter(|(_, w)| **w == 0).map(|(s, _)| s.clone()).collect();
    if blue.is_empty() {
        return Err(Error::invalid(format!("{prefix}.backend"), "has no serving server (weight above 0) to be blue"));
    }
    if green.is_empty() {
        return Err(Error::invalid(format!("{prefix}.backend"), "has no idle server (weight 0) to be green"));
    }
    let serving = current.values().copied().max().unwrap_or(1);
    let flipped = blue.iter().map(|s| (s.clone(), 0)).chain(green.iter().map(|s| (s.clone(), serving))).collect();
    Ok(BlueGreenPlan { blue, green, original: current.clone(), flipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::share_percent;

    #[test]
    fn blue_serves_green_idles_and_the_flip_swaps_them() {
        let current = Weights::from([("b1".into(), 10), ("b2".into(), 10), ("g1".into(), 0), ("g2".into(), 0)]);
        let plan = plan_blue_green("lb", &current).unwrap();
        assert_eq!((plan.blue.len(), plan.green.len()), (2, 2));
        assert_eq!(share_percent(&plan.flipped, &plan.green), 100.0);
        assert_eq!(plan.flipped["g1"], 10);
        let all_serving = Weights::from([("b1".into(), 1)]);
        let err = plan_blue_green("lb", &all_serving).unwrap_err();
        assert_eq!(err.field(), "lb.backend");
        assert!(err.to_string().contains("idle"));
    }
}
