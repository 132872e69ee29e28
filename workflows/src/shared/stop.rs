//! Why a run stops: a failed step, a bad verdict, an abort, in words; and the failures a
//! workflow ends with.

use signalbox_domain::InvalidField;
use temporalio_common::error::{ApplicationFailure, IncomingError};
use temporalio_sdk::{ActivityExecutionError, WorkflowTermination};

/// Why a rollout stopped, in words: the reason the deploy ends with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stop(pub(crate) String);

impl From<ActivityExecutionError> for Stop {
    fn from(e: ActivityExecutionError) -> Self {
        match e {
            ActivityExecutionError::Cancelled(_) => Stop("aborted while a step was running".into()),
            other => Stop(failure_message(&other)),
        }
    }
}

/// The most useful message of an activity failure: the application error's own words.
pub(crate) fn failure_message(e: &ActivityExecutionError) -> String {
    match e {
        ActivityExecutionError::Failed(_) => e.cause().map_or_else(|| e.to_string(), |c| c.to_string()),
        other => other.to_string(),
    }
}

/// The request field an activity refused, when its failure says so (type `InvalidArgument`,
/// message `<field>: <rule>`).
pub(crate) fn invalid_field(e: &ActivityExecutionError) -> Option<InvalidField> {
    let Some(IncomingError::Application(failure)) = e.cause() else { return None };
    if failure.type_name() != Some(signalbox_contract::activities::INVALID_ARGUMENT) {
        return None;
    }
    let message = failure.source_error().to_string();
    let (field, rule) = message.split_once(": ")?;
    Some(InvalidField { field: field.to_owned(), rule: rule.to_owned() })
}

/// A request refused before anything changed: the reason, and the field when it names one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refused {
    /// The reason the deploy fails with.
    pub(crate) reason: String,
    /// The refused field of the request, if the refusal names one.
    pub(crate) invalid: Option<InvalidField>,
}

impl Refused {
    /// The refusal of a failed activity (a read of the world), with the field it names, if any,
    /// under `prefix` (`strategy.` for a balancer read for a strategy).
    pub(crate) fn of(e: &ActivityExecutionError, prefix: &str) -> Self {
        let invalid = invalid_field(e).map(|f| InvalidField { field: format!("{prefix}{}", f.field), rule: f.rule });
        let reason = invalid.as_ref().map_or_else(|| failure_message(e), |f| format!("{}: {}", f.field, f.rule));
        Self { reason, invalid }
    }

    /// The refusal of a field by a domain rule.
    pub(crate) fn field(e: signalbox_domain::Error) -> Self {
        let signalbox_domain::Error::Invalid { field, rule } = e;
        Self { reason: format!("{field}: {rule}"), invalid: Some(InvalidField { field, rule }) }
    }
}

/// The workflow failure for a request refused before anything changed: never retried.
pub(crate) fn refuse(reason: impl Into<String>) -> WorkflowTermination {
    WorkflowTermination::failed_application(ApplicationFailure::non_retryable(reason.into()))
}
