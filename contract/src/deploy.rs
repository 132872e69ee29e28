//! The deploy workflow (`signalbox.deploy`) and how operators steer it.
//!
//! | name       | kind   | effect                                                                    |
//! |------------|--------|---------------------------------------------------------------------------|
//! | `status`   | query  | where the deploy stands                                                   |
//! | `pause`    | signal | hold before the next step (`paused: true`); the phase keeps saying where  |
//! | `resume`   | signal | lift a pause or a halt                                                    |
//! | `halt`     | update | freeze the target now (`halted: true`): no instance changes, no rollback  |
//! | `abort`    | update | roll back now; ends `RolledBack`, reason `aborted by <who>: <why>`        |
//! | `rollback` | update | like abort while running; after success, within the rollback window      |
//! | `bypass`   | update | skip every remaining gate (approvals, health) and bake timer              |
//! | `approve`  | update | an approval of the open gate                                              |
//! | `pause_update`  | update | `pause` with an answer: what the API sends                           |
//! | `resume_update` | update | `resume` with an answer: what the API sends                          |
//!
//! A deploy started with `control: signed` (by an API holding the control key) takes updates
//! only with the API's grant, and refuses the `pause` and `resume` signals, auditing each.
//!
//! With the `temporal` CLI: `temporal workflow update execute --workflow-id <id> --name abort
//! --input '{"by":"alice","reason":"p99"}'`.

use signalbox_domain::{Approve, Command, DeployRequest, DeployStatus};

workflow!(
    /// A deploy of one build of one service to one target, with any strategy.
    DeployRun = "signalbox.deploy": DeployRequest => DeployStatus
);
query!(
    /// Where the deploy stands: phase, step, instances per version, last verdict, operator control.
    Status = "status" on DeployRun: () => DeployStatus
);
signal!(
    /// Hold before the next step.
    Pause = "pause" on DeployRun: Command
);
signal!(
    /// Lift a pause or a halt.
    Resume = "resume" on DeployRun: Command
);
update!(
    /// Hold before the next step, answered (the API's `pause`).
    PauseUpdate = "pause_update" on DeployRun: Command => DeployStatus
);
update!(
    /// Lift a pause or a halt, answered (the API's `resume`).
    ResumeUpdate = "resume_update" on DeployRun: Command => DeployStatus
);
update!(
    /// Freeze the deploy and its target where they stand.
    Halt = "halt" on DeployRun: Command => DeployStatus
);
update!(
    /// Roll back now.
    Abort = "abort" on DeployRun: Command => DeployStatus
);
update!(
    /// Roll back, also after success while the rollback window is open.
    Rollback = "rollback" on DeployRun: Command => DeployStatus
);
update!(
    /// Skip the remaining gates and bake timers.
    Bypass = "bypass" on DeployRun: Command => DeployStatus
);
update!(
    /// Approve the open approval gate.
    ApproveGate = "approve" on DeployRun: Approve => DeployStatus
);
