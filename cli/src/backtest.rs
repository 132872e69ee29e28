//! `signalbox backtest`: judge a recorded analysis input again, through the same code as a
//! live deploy (`signalbox_analysis::judge`), optionally under another policy; and
//! `signalbox backtest export`, which reads such an input from a deploy's history: the engine's
//! own input for a deploy it judged (`health.analyze`), else a conversion of the first-version
//! gate's windows (`health.evaluate`).
//!
//! Exit codes: 0 pass, 1 fail, 3 inconclusive, 2 bad input (the error names the field).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use signalbox_analysis::{AnalysisInput, Decision, Policy, Verdict, judge};
use signalbox_metrics::recorded::{Analysis, analyses, analysis_input, default_policy, evaluations, under_policy};

/// `signalbox backtest --input FILE [--policy FILE]`, or `signalbox backtest export ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A recorded `AnalysisInput` (JSON; the schema is in analysis/README.md), `-` for stdin.
    #[arg(long, required = true)]
    input: Option<PathBuf>,
    /// A policy (JSON) to judge under instead of the input's own; data of metrics it leaves
    /// out is ignored.
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print what a deploy's batch was judged on as an `AnalysisInput` (JSON) on stdout: for a
    /// deploy judged by the analysis engine, exactly the input the engine judged; else the
    /// first-version gate's windows, converted.
    Export(Export),
}

#[derive(Debug, clap::Args)]
struct Export {
    /// Temporal frontend, `host:port`; by default the SDK's envconfig (`TEMPORAL_ADDRESS`,
    /// `temporal.toml`, else 127.0.0.1:7233), which also gives the namespace.
    #[arg(long = "temporal")]
    address: Option<String>,
    /// The deploy's id, as printed by `deploy start`.
    id: String,
    /// Which judged batch to export, from 1 (the n-th analysis or health evaluation the deploy
    /// completed); by default the last, which decided.
    #[arg(long)]
    batch: Option<usize>,
    /// A policy (JSON) to write into the input. By default the deploy's own analysis policy
    /// (for a deploy judged by the engine), else the engine's defaults with the deploy gate's
    /// noise floors, minimum traffic and sample counts.
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
        input = under_policy(input, read_policy(&policy)?);
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
    let client = match &export.address {
        Some(address) => signalbox_client::connect_to(address).await?,
        None => signalbox_client::connect().await?,
    };
    let history = signalbox_client::history(&client, &export.id).await.with_context(|| format!("reading the history of deploy {}", export.id))?;
    // A deploy judged by the engine recorded the engine's own input: nothing to convert.
    let analysed = analyses(&history)?;
    if !analysed.is_empty() {
        return export_analysis(&export, &analysed);
    }
    let found = evaluations(&history)?;
    let n = found.len();
    if n == 0 {
        bail!("deploy {}: no completed health evaluation or analysis to export", export.id);
    }
    let index = pick(export.batch, n)?;
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

/// Exports the input `health.analyze` recorded, as it is or under `--policy`.
fn export_analysis(export: &Export, analysed: &[Analysis]) -> anyhow::Result<ExitCode> {
    let n = analysed.len();
    let index = pick(export.batch, n)?;
    let analysis = &analysed[index];
    let Some(recorded) = analysis.output.input.clone() else {
        bail!(
            "deploy {}: analysis {} of {n} recorded no input (a dry run, or a deploy from before health.analyze kept the engine's input): nothing to export",
            export.id,
            index + 1
        );
    };
    let input = match &export.policy {
        Some(path) => {
            let input = under_policy(recorded, read_policy(path)?);
            input.validate().context("--policy does not fit the recorded analysis")?;
            input
        }
        None => recorded,
    };
    eprintln!(
        "exported analysis {} of {n}: {} samples of canary {} against {} stable instances; the deploy decided {}",
        index + 1,
        input.timestamps.len(),
        analysis.input.canary.join(","),
        analysis.input.stable.len(),
        analysis.output.report.summary
    );
    println!("{}", serde_json::to_string_pretty(&input)?);
    Ok(ExitCode::SUCCESS)
}

/// The index of `--batch` among `n` judged batches; the last by default.
fn pick(batch: Option<usize>, n: usize) -> anyhow::Result<usize> {
    match batch {
        None => Ok(n - 1),
        Some(b) if (1..=n).contains(&b) => Ok(b - 1),
        Some(b) => Err(anyhow!("--batch: {b} is not between 1 and {n}, the batches this deploy judged")),
    }
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

    #[test]
    fn batches_count_from_one_and_default_to_the_last() {
        assert_eq!((pick(None, 3).unwrap(), pick(Some(1), 3).unwrap()), (2, 0));
        for wrong in [0, 4] {
            assert_eq!(pick(Some(wrong), 3).unwrap_err().to_string(), format!("--batch: {wrong} is not between 1 and 3, the batches this deploy judged"));
        }
    }
}
