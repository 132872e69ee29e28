//! The release workflow (`signalbox.release`): services promoted through a pipeline's
//! stages, each target of a stage deployed by a child deploy workflow (`signalbox.deploy`).
//!
//! | name     | kind  | effect                                                  |
//! |----------|-------|---------------------------------------------------------|
//! | `status` | query | the whole tree: stage, target, service, deploy, soak end |
//! | `approve`| update| approves the open stage gate (`{"approver", "reason"}`) |
//! | `bypass` | update| emergency bypass of a stage (`{"by", "reason", "expiry_ms", "stage", "override_failed_verdict"}`) |
//! | `abort`  | update| stops promotion; deploys in flight roll back (`{"by", "reason"}`) |
//! | `deploy_succeeded` | signal | from a deploy of the release that succeeded with its rollback window open |
//!
//! With the `temporal` CLI: `temporal workflow query --workflow-id <id> --type status`, and
//! `temporal workflow update execute --workflow-id <id> --name approve --input '{"approver": "alice", "reason": "ok"}'`.

use signalbox_domain::release_control::BypassStage;
use signalbox_domain::{Approve, Command, ReleaseRequest, ReleaseStatus, Target, deploy_id};

workflow!(
    /// A release of one or more services through a pipeline of stages.
    ReleaseRun = "signalbox.release": ReleaseRequest => ReleaseStatus
);
query!(
    /// Where the release stands: every stage, and every deploy of every stage.
    ReleaseStatusQuery = "status" on ReleaseRun: () => ReleaseStatus
);
signal!(
    /// Sent by a deploy of the release when it succeeded and holds its rollback window open
    /// (its id): the release goes on without waiting for the window to close.
    DeploySucceeded = "deploy_succeeded" on ReleaseRun: String
);
update!(
    /// Approve the stage gate that is open.
    ApproveStage = "approve" on ReleaseRun: Approve => ReleaseStatus
);
update!(
    /// Emergency bypass of a stage: its gate and soak, and with a second flag its verdicts.
    BypassRelease = "bypass" on ReleaseRun: BypassStage => ReleaseStatus
);
update!(
    /// Stop promotion: deploys in flight roll back; no later stage starts.
    AbortRelease = "abort" on ReleaseRun: Command => ReleaseStatus
);

/// The workflow id of a release of `pipeline`: `release/<pipeline>/<suffix>`.
pub fn release_id(pipeline: &str, suffix: &str) -> String {
    format!("release/{pipeline}/{suffix}")
}

/// The workflow id of the deploy of `service` on `target` in the release with id `release`:
/// a deploy id ending with the release's suffix, so the deploy is found like any other (a
/// pipeline deploys each target once).
pub fn release_deploy_id(release: &str, service: &str, target: &Target) -> String {
    let suffix = release.rsplit('/').next().unwrap_or(release);
    deploy_id(service, target, suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_deploy_is_named_like_any_deploy() {
        let release = release_id("web", "r1");
        assert_eq!(release, "release/web/r1");
        assert_eq!(release_deploy_id(&release, "checkout", &Target::local("test")), "deploy/checkout/test/r1");
    }
}
