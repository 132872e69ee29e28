//! Deploys as Temporal's visibility records them: who started what, where, when, and where it
//! ended; the audit trail and the config snapshot are read from each deploy itself.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use signalbox_contract::search;
use signalbox_contract::deploy::DeployRun;
use signalbox_domain::{Command, Phase, bounds};
use temporalio_client::{WorkflowExecutionStatus, WorkflowListOptions};

use crate::{Deploys, Error, Result};

/// Most deploys one page holds.
pub const MAX_PAGE: u32 = 1000;
/// Deploys a page holds when the caller does not say.
pub const DEFAULT_PAGE: u32 = 100;
/// Deepest a page may start: listing further back wants a later `since`.
const MAX_OFFSET: usize = 100_000;

/// Which deploys to list.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The service (required).
    pub service: String,
    /// Started at or after.
    pub since: DateTime<Utc>,
    /// In this phase, if set.
    pub phase: Option<Phase>,
    /// On this target, if set.
    pub target: Option<String>,
}

impl Filter {
    /// The visibility query; every value in it was checked to be a plain name, so none can
    /// change the query's meaning.
    fn query(&self) -> Result<String> {
        bounds::check_name("service", &self.service)?;
        let mut q = format!(
            "WorkflowType = '{}' AND {} = '{}' AND StartTime >= '{}'",
            DeployRun::NAME,
            search::SERVICE.name(),
            self.service,
            self.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        if let Some(target) = &self.target {
            bounds::check_name("target", target)?;
            q.push_str(&format!(" AND {} = '{target}'", search::ENVIRONMENT.name()));
        }
        if let Some(phase) = self.phase {
            q.push_str(&format!(" AND {} = '{}'", search::PHASE.name(), search::phase_value(phase)));
        }
        Ok(q)
    }
}

/// One deploy in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Its id.
    pub deploy_id: String,
    /// The service.
    pub service: String,
    /// The target's name.
    pub target: String,
    /// The phase it last reported (`None` when it never did).
    pub phase: Option<Phase>,
    /// Who started it.
    pub deployer: String,
    /// The build.
    pub artifact_digest: String,
    /// Its commit.
    pub git_sha: String,
    /// The strategy.
    pub strategy: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its workflow closed; `None` while open.
    pub closed_at: Option<DateTime<Utc>>,
    /// Temporal's status of the workflow (a terminated one never reported its end).
    pub status: WorkflowExecutionStatus,
    /// The config snapshot it ran with: SHA-256 of its request, the workflow's input (empty
    /// for deploys started before it was kept).
    pub config_sha256: String,
    /// That snapshot in words.
    pub config: Option<search::ConfigSummary>,
}

/// A page of deploys, and the token of the next one (`None` on the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Newest first.
    pub deploys: Vec<Summary>,
    /// Where the next page starts.
    pub next: Option<String>,
}

fn phase_of(value: &str) -> Option<Phase> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
}

fn utc(t: Option<SystemTime>) -> Option<DateTime<Utc>> {
    t.map(DateTime::<Utc>::from)
}

/// Reads a page token: the offset it stands for.
fn offset(token: &str) -> Result<usize> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("o")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n <= MAX_OFFSET)
        .ok_or_else(|| Error::Invalid { field: "page_token".into(), rule: "must be a next_page_token of an earlier page".into() })
}

impl Deploys {
    /// The page of deploys matching `filter` that `page_token` names (empty: the first), of up
    /// to `page_size` (0: [`DEFAULT_PAGE`]; at most [`MAX_PAGE`]).
    pub async fn list(&self, filter: &Filter, page_size: u32, page_token: &str) -> Result<Page> {
        let query = filter.query()?;
        if page_size > MAX_PAGE {
            return Err(Error::Invalid { field: "page_size".into(), rule: format!("must be at most {MAX_PAGE}") });
        }
        let size = if page_size == 0 { DEFAULT_PAGE } else { page_size } as usize;
        let skip = offset(page_token)?;
        let opts = WorkflowListOptions::builder().limit(skip + size + 1).build();
        let mut stream = self.client().list_workflows(query, opts).skip(skip);
        let mut deploys = Vec::with_capacity(size);
        let mut more = false;
        while let Some(execution) = stream.next().await {
            let execution = execution.map_err(|e| Error::Unavailable(e.to_string()))?;
            if deploys.len() == size {
                more = true;
                break;
            }
            let attrs = execution.search_attributes();
            let memo = execution.memo();
            deploys.push(Summary {
                deploy_id: execution.id().to_owned(),
                service: attrs.get(&search::SERVICE).unwrap_or_default(),
                target: attrs.get(&search::ENVIRONMENT).unwrap_or_default(),
                phase: attrs.get(&search::PHASE).as_deref().and_then(phase_of),
                deployer: attrs.get(&search::DEPLOYER).unwrap_or_default(),
                artifact_digest: attrs.get(&search::ARTIFACT_DIGEST).unwrap_or_default(),
                git_sha: attrs.get(&search::GIT_SHA).unwrap_or_default(),
                strategy: attrs.get(&search::STRATEGY).unwrap_or_default(),
                started_at: utc(execution.start_time()),
                closed_at: utc(execution.close_time()),
                status: execution.status(),
                config_sha256: memo.get::<String>(crate::deploys::REQUEST_MEMO).ok().flatten().unwrap_or_default(),
                config: memo.get::<search::ConfigSummary>(crate::deploys::CONFIG_MEMO).ok().flatten(),
            });
        }
        Ok(Page { next: more.then(|| format!("o{}", skip + size)), deploys })
    }
}

impl Deploys {
    /// Aborts every deploy of `service` still rolling out (open and not yet in a final phase:
    /// a succeeded deploy in its rollback window is left alone) with `cmd`; returns the ids of
    /// those that took it. One that ended meanwhile, or refuses, is left out.
    pub async fn abort_in_flight(&self, service: &str, cmd: Command) -> Result<Vec<String>> {
        bounds::check_name("service", service)?;
        let query = format!("WorkflowType = '{}' AND {} = '{service}' AND ExecutionStatus = 'Running'", DeployRun::NAME, search::SERVICE.name());
        let mut stream = self.client().list_workflows(query, WorkflowListOptions::builder().limit(MAX_PAGE as usize).build());
        let mut ids = Vec::new();
        while let Some(execution) = stream.next().await {
            ids.push(execution.map_err(|e| Error::Unavailable(e.to_string()))?.id().to_owned());
        }
        let mut aborted = Vec::new();
        for id in ids {
            // Visibility trails: the deploy's own status says whether it is still in flight.
            let Ok(status) = self.status(&id).await else { continue };
            if status.phase.is_final() || status.stopping() {
                continue;
            }
            if self.abort(&id, cmd.clone()).await.is_ok() {
                aborted.push(id);
            }
        }
        Ok(aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> Filter {
        Filter { service: "checkout".into(), since: DateTime::from_timestamp(1_700_000_000, 0).unwrap(), phase: None, target: None }
    }

    #[test]
    fn the_query_holds_only_checked_names() {
        assert_eq!(filter().query().unwrap(), "WorkflowType = 'signalbox.deploy' AND SignalboxService = 'checkout' AND StartTime >= '2023-11-14T22:13:20.000Z'");
        let narrowed = Filter { phase: Some(Phase::RolledBack), target: Some("eu-1".into()), ..filter() };
        assert!(narrowed.query().unwrap().ends_with("AND SignalboxEnvironment = 'eu-1' AND SignalboxPhase = 'RolledBack'"));
        let injected = Filter { service: "x' OR WorkflowType != 'y".into(), ..filter() };
        assert!(matches!(injected.query(), Err(Error::Invalid { field, .. }) if field == "service"));
        let injected = Filter { target: Some("a' OR 'b".into()), ..filter() };
        assert!(matches!(injected.query(), Err(Error::Invalid { field, .. }) if field == "target"));
    }

    #[test]
    fn page_tokens_are_offsets_within_bounds() {
        assert_eq!(offset("").unwrap(), 0);
        assert_eq!(offset("o200").unwrap(), 200);
        for bad in ["200", "ox", "o999999999"] {
            assert!(matches!(offset(bad), Err(Error::Invalid { field, .. }) if field == "page_token"), "{bad}");
        }
        assert_eq!(phase_of("RolledBack"), Some(Phase::RolledBack));
    }
}
