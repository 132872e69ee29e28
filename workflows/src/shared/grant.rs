//! The API's grants as workflows check them ([`signalbox_domain::grant`]).
//!
//! Only update validators verify a grant: Temporal runs them when an update arrives and never
//! on replay, so the worker's keys (configuration, not history) cannot change what a replay
//! decides. The handler then records the grant's nonce, from the update's input, so the same
//! grant is refused if it comes again.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use signalbox_domain::control::Refusal;
use signalbox_domain::grant::{self, Control, ControlKey, Subject};

static KEYS: OnceLock<Vec<ControlKey>> = OnceLock::new();

/// Gives this process's workflows the keys that verify the API's grants, the current one
/// first; the worker calls it once at start. Later calls change nothing.
pub fn install_control_keys(keys: Vec<ControlKey>) {
    let _ = KEYS.set(keys);
}

/// Grants already taken by one workflow, by nonce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Taken(BTreeSet<String>);

impl Taken {
    /// Checks an operation on a workflow under `control`: an open one takes anything; a signed
    /// one takes a valid grant not taken before.
    pub(crate) fn check(&self, control: Control, workflow_id: &str, operation: &str, by: &str, reason: &str, grant: &str) -> Result<(), Refusal> {
        if control.is_open() {
            return Ok(());
        }
        let subject = Subject { workflow_id, operation, by, reason };
        let nonce = grant::verify(KEYS.get().map_or(&[][..], Vec::as_slice), &subject, grant)?;
        if self.0.contains(nonce) {
            return Err(Refusal(format!("{operation}: this grant was used already; ask the API again")));
        }
        Ok(())
    }

    /// Records an accepted operation's grant (from the update's input, so replay records the
    /// same); a grant that cannot be read records nothing (an open workflow took it).
    pub(crate) fn take(&mut self, grant: &str) {
        if let Some(nonce) = grant.split('.').nth(1) {
            self.0.insert(nonce.to_owned());
        }
    }
}
