//! Batch planning: how a rollout grows across the fleet.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One step of a batch plan: the cumulative share of the fleet that runs the new version once
/// the step is done.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStep {
    /// A percentage of the fleet, in (0, 100]; rounded up to whole instances.
    Percent(f64),
    /// An absolute number of instances.
    Count(u32),
}

/// The cumulative steps of a rollout; the last one must cover the whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPlan {
    /// Steps in order, each strictly larger than the one before.
    pub steps: Vec<BatchStep>,
}

impl Default for BatchPlan {
    /// 1% -> 10% -> 50% -> 100%: a bad build is caught while at most a tenth of the fleet runs it.
    fn default() -> Self {
        Self { steps: [1.0, 10.0, 50.0, 100.0].map(BatchStep::Percent).to_vec() }
    }
}

impl BatchPlan {
    /// Checks what can be checked without knowing the fleet size.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(Error::invalid("batch_plan.steps", "must not be empty"));
        }
        crate::bounds::check_count("batch_plan.steps", self.steps.len(), crate::bounds::MAX_ITEMS)?;
        let mut last_percent = 0.0;
        let mut last_count = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("batch_plan.steps[{i}]");
            match *step {
                BatchStep::Percent(p) => {
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(Error::invalid(format!("{field}.percent"), "must be in (0, 100]"));
                    }
                    if p <= last_percent {
                        return Err(Error::invalid(format!("{field}.percent"), "must be larger than the step before"));
                    }
                    last_percent = p;
                }
                BatchStep::Count(c) => {
                    if c == 0 || c <= last_count {
                        return Err(Error::invalid(format!("{field}.count"), "must be larger than 0 and than the count before"));
                    }
                    last_count = c;
                }
            }
        }
        if let Some(BatchStep::Percent(p)) = self.steps.last()
            && *p < 100.0
        {
            return Err(Error::invalid(
                format!("batch_plan.steps[{}].percent", self.steps.len() - 1),
                "the last step must reach 100% of the fleet",
            ));
        }
        Ok(())
    }

    /// Cumulative instance counts after each batch for a fleet of `fleet_size` instances.
    ///
    /// Steps that would not add an instance on a small fleet are dropped, so every batch updates
    /// at least one instance; the last count is always `fleet_size`.
    pub fn cumulative_counts(&self, fleet_size: u32) -> Result<Vec<u32>> {
        self.validate()?;
        if fleet_size == 0 {
            return Err(Error::invalid("fleet", "has no instances"));
        }
        let mut counts: Vec<u32> = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let n = match *step {
                BatchStep::Percent(p) => ((f64::from(fleet_size) * p / 100.0).ceil() as u32).clamp(1, fleet_size),
                BatchStep::Count(c) if c > fleet_size => {
                    return Err(Error::invalid(
                        format!("batch_plan.steps[{i}].count"),
                        format!("is {c}, more than the fleet's {fleet_size} instances"),
                    ));
                }
                BatchStep::Count(c) => c,
            };
            // Mixed percent and count steps may overlap on a given fleet; keep the plan monotone.
            if counts.last().is_none_or(|&last| n > last) {
                counts.push(n);
            }
        }
        if counts.last() != Some(&fleet_size) {
            return Err(Error::invalid(
                format!("batch_plan.steps[{}]", self.steps.len() - 1),
                format!("the last step must reach all {fleet_size} instances (100%)"),
            ));
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_on_twenty_instances_first_batch_is_one() {
        assert_eq!(BatchPlan::default().cumulative_counts(20).unwrap(), vec![1, 2, 10, 20]);
    }

    #[test]
    fn small_fleets_drop_empty_batches() {
        assert_eq!(BatchPlan::default().cumulative_counts(3).unwrap(), vec![1, 2, 3]);
        assert_eq!(BatchPlan::default().cumulative_counts(1).unwrap(), vec![1]);
    }

    #[test]
    fn plan_not_reaching_100_percent_is_refused() {
        let plan = BatchPlan { steps: vec![BatchStep::Percent(10.0), BatchStep::Percent(50.0)] };
        let err = plan.validate().unwrap_err();
        assert_eq!(err.field(), "batch_plan.steps[1].percent");
        assert!(err.to_string().contains("100%"));
        let counts = BatchPlan { steps: vec![BatchStep::Count(2), BatchStep::Count(5)] };
        assert!(counts.validate().is_ok());
        assert_eq!(counts.cumulative_counts(10).unwrap_err().field(), "batch_plan.steps[1]");
        assert_eq!(counts.cumulative_counts(5).unwrap(), vec![2, 5]);
    }

    #[test]
    fn steps_must_grow_and_stay_in_range() {
        let shrink = BatchPlan { steps: vec![BatchStep::Percent(50.0), BatchStep::Percent(10.0), BatchStep::Percent(100.0)] };
        assert_eq!(shrink.validate().unwrap_err().field(), "batch_plan.steps[1].percent");
        let zero = BatchPlan { steps: vec![BatchStep::Percent(0.0), BatchStep::Percent(100.0)] };
        assert_eq!(zero.validate().unwrap_err().field(), "batch_plan.steps[0].percent");
        assert_eq!(BatchPlan { steps: vec![] }.validate().unwrap_err().field(), "batch_plan.steps");
        let too_many = BatchPlan { steps: vec![BatchStep::Count(30)] };
        assert_eq!(too_many.cumulative_counts(20).unwrap_err().field(), "batch_plan.steps[0].count");
    }

    #[test]
    fn ten_equal_batches_on_a_thousand() {
        let plan = BatchPlan { steps: (1..=10).map(|i| BatchStep::Percent(f64::from(i) * 10.0)).collect() };
        let counts = plan.cumulative_counts(1000).unwrap();
        assert_eq!(counts, (1..=10).map(|i| i * 100).collect::<Vec<_>>());
    }
}
