//! Section 1 of the report: the labelled deploy cases, run through every configuration with
//! and without the stable version's concurrent readings, against the goals.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use signalbox_analysis::Decision;

use crate::cases::{self, Case, HORIZON, Kind, METRICS, Pools};
use crate::deploys::{self, BUCKETS, Mode, Outcome, in_goal, methods};
use crate::nab;

pub fn pools(dir: &Path) -> Result<Pools> {
    let grids = |names: &[&str]| -> Result<Vec<nab::Grid>> {
        names
            .iter()
            .map(|n| Ok(nab::Grid::new(&nab::load(dir, n)?, cases::STEP, 3600)))
            .collect()
    };
    Ok(Pools {
        traffic: grids(cases::TRAFFIC)?,
        cpu: grids(cases::CPU)?,
        latency: grids(cases::LATENCY)?,
        logs: grids(cases::LOGS)?,
    })
}

pub fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / d as f64)
    }
}

/// Case indices by label.
struct Sets {
    clean: Vec<usize>,
    bad: Vec<usize>,
    goal: Vec<usize>,
}

/// Failures decided within `within` samples among `set`.
fn fails(o: &[Outcome], set: &[usize], within: usize) -> usize {
    set.iter()
        .filter(|&&i| o[i].decision == Decision::Fail && o[i].samples <= within)
        .count()
}

fn rate(n: usize, d: usize) -> f64 {
    n as f64 / d.max(1) as f64
}

/// Youden's J: goal regressions caught within 3 samples minus the false-positive rate.
fn youden(o: &[Outcome], sets: &Sets) -> f64 {
    rate(fails(o, &sets.goal, 3), sets.goal.len())
        - rate(fails(o, &sets.clean, usize::MAX), sets.clean.len())
}

fn summary_table(methods: &[deploys::Named], outcomes: &[Vec<Outcome>], sets: &Sets) {
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "detector", "detected", "goal<=3", "FP clean", "paused", "latency", "J(goal,FP)"
    );
    for (m, o) in methods.iter().zip(outcomes) {
        let detected: Vec<usize> = sets
            .bad
            .iter()
            .copied()
            .filter(|&i| o[i].decision == Decision::Fail)
            .collect();
        let latency = detected.iter().map(|&i| o[i].samples).sum::<usize>() as f64
            / detected.len().max(1) as f64;
        let paused = sets
            .clean
            .iter()
            .filter(|&&i| o[i].decision == Decision::Inconclusive)
            .count();
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9.2} {:>11.3}",
            m.name,
            pct(detected.len(), sets.bad.len()),
            pct(fails(o, &sets.goal, 3), sets.goal.len()),
            pct(fails(o, &sets.clean, usize::MAX), sets.clean.len()),
            pct(paused, sets.clean.len()),
            latency,
            youden(o, sets)
        );
    }
}

pub fn deploy_cases(dir: &Path, seed: u64, n: usize) -> Result<()> {
    let t = Instant::now();
    let pools = pools(dir).context("loading NAB backgrounds")?;
    let cases = cases::generate(&pools, n, &mut ChaCha8Rng::seed_from_u64(seed));
    let methods = methods();
    let run = |mode: Mode| -> Vec<Vec<Outcome>> {
        methods
            .iter()
            .map(|m| {
                cases
                    .iter()
                    .map(|c| deploys::run(&m.method, c, mode))
                    .collect()
            })
            .collect()
    };
    let (concurrent, before_after) = (run(Mode::Concurrent), run(Mode::BeforeAfter));
    let sets = Sets {
        clean: (0..cases.len())
            .filter(|&i| cases[i].kind == Kind::Clean)
            .collect(),
        bad: (0..cases.len())
            .filter(|&i| cases[i].kind != Kind::Clean)
            .collect(),
        goal: (0..cases.len())
            .filter(|&i| in_goal(cases[i].kind))
            .collect(),
    };
    let oracle = Oracle::of(&cases, &sets.clean);

    println!("== 1. Labelled deploy cases on NAB backgrounds (seed {seed}) ==");
    println!(
        "{} cases ({} clean, {} with a regression, {} of them in the goal set); {} canary samples of 5 min; the stable version's",
        cases.len(),
        sets.clean.len(),
        sets.bad.len(),
        sets.goal.len(),
        cases::HORIZON
    );
    println!(
        "readings in the {} samples before the deploy are its baseline (the default window keeps the last 12), and",
        cases::BASELINE
    );
    println!("7-14 days up to the deploy its seasonal history.");
    println!(
        "Both versions serve the same real NAB backgrounds (traffic 20-500 rps per version, error rate 0.2-5% modulated by a"
    );
    println!(
        "real CPU series, p99 80-400 ms from travel time / inverted speed, CPU, log lines from Twitter volume) and differ by"
    );
    println!(
        "sampling noise. Regressions from the first canary sample: error rate x(1 + 5..100%) (relative: +20% takes 1.0% to"
    );
    println!(
        "1.2%), p99 +10..200 ms, log volume x1.5..5. Engine rows: one detector each, or the default policy, with the default"
    );
    println!(
        "rules (K=3 consecutive, pass after 10 passing samples); error rate, p99 and log lines critical, CPU not. Plain rows"
    );
    println!(
        "alarm on the first breach on any metric. goal<=3: regressions >= +20% error rate or >= +50 ms p99 failed within 3"
    );
    println!(
        "samples; paused: clean deploys ended inconclusive; latency: mean samples to a Fail.\n"
    );
    println!("1a. Canary analysis: the stable version measured alongside the canary");
    summary_table(&methods, &concurrent, &sets);

    println!("\nDetection within 3 samples by regression size (canary alongside stable):");
    print!("{:<22} {:>6}", "regression", "cases");
    for m in &methods {
        print!(" {:>17}", m.name);
    }
    println!();
    for (label, in_bucket) in BUCKETS {
        let set: Vec<usize> = sets
            .bad
            .iter()
            .copied()
            .filter(|&i| in_bucket(cases[i].kind))
            .collect();
        print!("{label:<22} {:>6}", set.len());
        for o in &concurrent {
            print!(" {:>17}", pct(fails(o, &set, 3), set.len()));
        }
        println!();
    }

    println!(
        "\nGoal regressions caught within 3 samples, by signal-to-noise (the shift over the sampling noise of a"
    );
    println!("canary-minus-stable difference: the z a perfect single-sample detector would see):");
    print!("{:<22} {:>6}", "signal/noise", "cases");
    for m in &methods {
        print!(" {:>17}", m.name);
    }
    println!(" {:>17}", "ORACLE (1% FP)");
    for (label, lo, hi) in [
        ("< 3", 0.0, 3.0),
        ("3 - 6", 3.0, 6.0),
        ("6 - 10", 6.0, 10.0),
        (">= 10", 10.0, f64::INFINITY),
    ] {
        let set: Vec<usize> = sets
            .goal
            .iter()
            .copied()
            .filter(|&i| (lo..hi).contains(&cases[i].snr))
            .collect();
        print!("{label:<22} {:>6}", set.len());
        for o in &concurrent {
            print!(" {:>17}", pct(fails(o, &set, 3), set.len()));
        }
        println!(" {:>17}", pct(oracle.caught(&set), set.len()));
    }
    println!(
        "ORACLE: told every difference's true noise (the generator's model), it sums the samples so far with"
    );
    println!(
        "inverse-variance weights, the most powerful test of a steady shift, and alarms above {:.2} sigma, the",
        oracle.threshold
    );
    println!(
        "level at which exactly 1% of these clean deploys alarm within 12 samples: an upper bound for any detector."
    );

    println!("\n1b. Before/after: the same cases without the stable version's concurrent readings");
    summary_table(&methods, &before_after, &sets);

    let default = methods
        .iter()
        .position(|m| m.name == "DEFAULT POLICY")
        .expect("default policy row");
    let o = &concurrent[default];
    let detect = rate(fails(o, &sets.goal, 3), sets.goal.len());
    let fp = rate(fails(o, &sets.clean, usize::MAX), sets.clean.len());
    let margin = youden(o, &sets)
        - concurrent[methods.len() - 2..]
            .iter()
            .map(|o| youden(o, &sets))
            .fold(f64::MIN, f64::max);
    println!("\nGoals (default policy, canary alongside stable):");
    println!("  {:<60} {:>9} {:>9}", "goal", "target", "measured");
    goal_line(
        "detect >= +20% error rate / >= +50 ms p99 within 3 samples",
        ">= 95%",
        format!("{:.1}%", 100.0 * detect),
        detect >= 0.95,
    );
    let bound = rate(oracle.caught(&sets.goal), sets.goal.len());
    println!(
        "  {:<60} {:>9} {:>9}  ({:.0}% of the bound)",
        "  upper bound at 1% FP (ORACLE above)",
        "",
        format!("{:.1}%", 100.0 * bound),
        100.0 * detect / bound
    );
    goal_line(
        "false positives on clean seasonal deploys",
        "<= 1%",
        format!("{:.1}%", 100.0 * fp),
        fp <= 0.01,
    );
    goal_line(
        "margin over the better plain baseline in J",
        ">= +0.10",
        format!("{margin:+.3}"),
        margin >= 0.10,
    );
    print_misses(o, &sets.goal);
    println!("(section took {:.1} s)\n", t.elapsed().as_secs_f64());
    Ok(())
}

fn goal_line(name: &str, target: &str, measured: String, met: bool) {
    println!(
        "  {name:<60} {target:>9} {measured:>9}  {}",
        if met { "met" } else { "MISSED" }
    );
}

/// Where the default policy missed goal regressions, to say honestly why.
fn print_misses(o: &[Outcome], goal: &[usize]) {
    let missed: Vec<usize> = goal
        .iter()
        .copied()
        .filter(|&i| !(o[i].decision == Decision::Fail && o[i].samples <= 3))
        .collect();
    let (mut late, mut inconclusive, mut passed) = (0, 0, 0);
    for &i in &missed {
        match o[i].decision {
            Decision::Fail => late += 1,
            Decision::Inconclusive => inconclusive += 1,
            _ => passed += 1,
        }
    }
    println!(
        "  missed goal regressions: {} ({} failed later than 3 samples, {} inconclusive, {} passed)",
        missed.len(),
        late,
        inconclusive,
        passed
    );
}

/// The best any detector could do on these cases: see the note printed under the
/// signal-to-noise table.
pub(crate) struct Oracle {
    /// Alarm level, in standard errors.
    pub(crate) threshold: f64,
    /// Per case: the highest cumulative z on a critical metric within the first 3 samples.
    peak3: Vec<f64>,
}

impl Oracle {
    /// The oracle of `cases`, its alarm level set on those of them at `clean`.
    pub(crate) fn of(cases: &[Case], clean: &[usize]) -> Oracle {
        let mut clean: Vec<f64> = clean.iter().map(|&i| peak(&cases[i], HORIZON)).collect();
        clean.sort_by(f64::total_cmp);
        // The level exactly 1% of clean deploys exceed.
        let threshold = clean[clean.len() - clean.len() / 100 - 1];
        Oracle {
            threshold,
            peak3: cases.iter().map(|c| peak(c, 3)).collect(),
        }
    }

    /// Cases in `set` the oracle alarms on within 3 samples.
    pub(crate) fn caught(&self, set: &[usize]) -> usize {
        set.iter()
            .filter(|&&i| self.peak3[i] > self.threshold)
            .count()
    }
}

/// The highest inverse-variance-weighted cumulative z of a canary-minus-stable difference (a
/// stable count scaled to the canary's share), on any critical metric, after each of the first
/// `looks` samples.
fn peak(case: &Case, looks: usize) -> f64 {
    let mut best = f64::MIN;
    for (m, (_, _, critical)) in METRICS.iter().enumerate() {
        if !critical {
            continue;
        }
        let (mut weighted, mut weights) = (0.0, 0.0);
        for k in 0..looks {
            let (Some(c), Some(s)) = (case.canary[m][k].value(), case.stable[m][k].value()) else {
                continue;
            };
            let s = if m == deploys::LOG_LINES {
                s * case.count_ratio[k]
            } else {
                s
            };
            let variance = case.noise[m][k].powi(2);
            if variance > 0.0 {
                weighted += (c - s) / variance;
                weights += 1.0 / variance;
                best = best.max(weighted / weights.sqrt());
            }
        }
    }
    best
}
