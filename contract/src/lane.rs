//! Lanes: one deploy at a time per service and target.
//!
//! A deploy holds its lane by running the lane workflow (`signalbox.lane`) as its child under
//! the id [`lane_id`]. Temporal runs at most one workflow per id, so a second deploy cannot
//! start the lane while the first holds it; the holder is the running lane's parent. The lane
//! ends when its holder sends [`Release`], and with its holder in any case (the child's parent
//! close policy terminates it), so a deploy that was terminated never keeps its lane.

use serde::{Deserialize, Serialize};
use signalbox_domain::Target;

workflow!(
    /// The lane of one service on one target, held by the deploy that runs it.
    LaneRun = "signalbox.lane": LaneHold => ()
);
signal!(
    /// The holder is done with the lane: it ends, and the next deploy may take it.
    Release = "release" on LaneRun: ()
);

/// What a lane workflow is started with: what the lane is of, and by whom, for a reader of the
/// Temporal UI (the lane itself needs none of it; the holder Temporal knows is its parent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneHold {
    /// The service.
    pub service: String,
    /// The target.
    pub target: Target,
    /// The holding deploy's workflow id.
    pub holder: String,
}

/// The workflow id of the lane of `service` on `target`: `lane/<kind>/<target>/<service>`.
pub fn lane_id(service: &str, target: &Target) -> String {
    format!("lane/{}/{}/{service}", target.kind, target.name)
}

/// Why a deploy of `service` to `target` was refused while `holder` holds the lane.
pub fn held(holder: &str, service: &str, target: &Target) -> String {
    format!("deploy {holder} is in progress on {target} for {service}; wait for it to end, or start with queue")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_is_one_service_on_one_target() {
        assert_eq!(lane_id("checkout", &Target::local("prod")), "lane/local/prod/checkout");
        assert_ne!(lane_id("checkout", &Target::local("prod")), lane_id("cart", &Target::local("prod")));
    }
}
