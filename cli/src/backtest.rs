//! `signalbox backtest`: judge a recorded analysis input again, through the same code as a
//! live deploy (`signalbox_analysis::judge`), optionally under another policy; and
//! `signalbox backtest export`, which turns a finished deploy's recorded health windows into
//! such an input.
//!
//! Exit codes: 0 pass, 1 fail, 3 inconclusive, 2 bad input (the error names the field).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use signalbox_analysis::{AnalysisInput, Decision, Policy, Verdict, judge};
use signalbox_metrics::recorded::{analysis_input, default_policy, evaluations};
use temporalio_client::{UntypedWorkflow, WorkflowFetchHistoryOptions};

/// `signalbox backtest --input FILE [--policy FILE]`, or `signalbox backtest export ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A recorded `AnalysisInput` (JSON; the schema is in analysis/README.md), `-` for stdin.
    #[arg(long, required = true)]
    input: Option<PathBuf>,
    /// A policy (JSON) to judge under instead of the input's own.
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a deploy's recorded health windows as an `AnalysisInput` (JSON) on stdout.
    Export(Export),
}

#[derive(Debug, clap::Args)]
struct Export {
    /// Temporal frontend, `host:port`.
    #[arg(long = "temporal", env = "TEMPORAL_ADDRESS", default_value = "127.0.0.1:7233")]
    address: String,
    /// The deploy's id, as printed by `deploy start`.
    id: String,
    /// Which health evaluation (batch) to export, from 1; by default the last, which decided.
    #[arg(long)]
    batch: Option<usize>,
    /// A policy (JSON) to write into the input; by default the analysis engine's defaults
    /// with the deploy gate's noise floors, minimum traffic and sample counts.
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// The verdict as printed: a few lines of summary, then the verdict's fields.
#[derive(Serialize)]
struct Report<'a> {
    summary: String,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

/// Runs `signalbox backtest`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Command::Export(export)) = args.command {
        return run_export(export).await;
    }
    let path = args.input.context("--input is required")?;
    let text = read(&path)?;
    let mut input: AnalysisInput = serde_json::from_str(&text).with_context(|| format!("{}: not a valid AnalysisInput", path.display()))?;
    if let Some(policy) = args.policy {
        input.policy = read_policy(&policy)?;
    }
    // `judge` validates first; its errors name the field, e.g. `policy.metrics[1].weight`.
    let verdict = judge(&input)?;
    let report = Report { summary: verdict.to_string(), verdict: &verdict };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::from(exit_code(verdict.decision)))
}

/// 0 pass, 1 fail, 3 inconclusive (2 is bad input).
fn exit_code(decision: Decision) -> u8 {
    match decision {
        Decision::Pass => 0,
        Decision::Fail => 1,
        Decision::Inconclusive | Decision::Continue => 3,
    }
}

async fn run_export(export: Export) -> anyhow::Result<ExitCode> {
    let client = signalbox_localstack::connect(&export.address).await?;
    let history = client
        .get_workflow_handle::<UntypedWorkflow>(export.id.clone())
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .with_context(|| format!("reading the history of deploy {}", export.id))?;
    let found = evaluations(&history)?;
    let n = found.len();
    if n == 0 {
        bail!("deploy {}: no completed health evaluation to export", export.id);
    }
    let index = match export.batch {
        None => n - 1,
        Some(b) if (1..=n).contains(&b) => b - 1,
        Some(b) => return Err(anyhow!("--batch: {b} is not between 1 and {n}, the evaluations this deploy recorded")),
    };
    let evaluation = &found[index];
    let policy = match &export.policy {
        Some(path) => read_policy(path)?,
        None => default_policy(&evaluation.input.policy),
    };
    let input = analysis_input(evaluation, policy);
    input.validate()?;
    eprintln!(
        "exported evaluation {} of {n}: {} windows of canary {} against {} control instances",
        index + 1,
        input.timestamps.len(),
        evaluation.input.canary.join(","),
        evaluation.input.control.len()
    );
    println!("{}", serde_json::to_string_pretty(&input)?);
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let policy: Policy = serde_json::from_str(&read(path)?).with_context(|| format!("{}: not a valid policy", path.display()))?;
    policy.validate()?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_tell_pass_fail_and_inconclusive_apart_from_bad_input() {
        assert_eq!([Decision::Pass, Decision::Fail, Decision::Inconclusive].map(exit_code), [0, 1, 3]);
    }
}
