//! Section 1b of the report: a small canary next to a large stable group. The same kind of
//! labelled cases as section 1a, on the same NAB backgrounds, with the canary serving 1%, 5%,
//! 10% or 50% of a fleet's requests and each group's readings as noisy as what it served.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use signalbox_analysis::{Decision, Direction, Kind, Metric, Policy};

use crate::cases::{self, FLEET_INSTANCES, HORIZON, METRICS, Split};
use crate::deploy_report::{Oracle, pct, pools};
use crate::deploys::{self, Method, Mode, Named, Outcome, STATIC_INCREASE, default_policy};

/// The canary's shares of the fleet, as the issue sets them.
pub const SHARES: [f64; 4] = [0.01, 0.05, 0.10, 0.50];

/// Whether a case is in this section's goal set: at least +20% error rate, +50 ms p99 or
/// log volume x2.
pub fn in_goal(kind: cases::Kind) -> bool {
    deploys::in_goal(kind) || matches!(kind, cases::Kind::LogVolume(f) if f >= 2.0)
}

/// What each case metric is, as a user would declare it.
pub fn kind_of(metric: &str) -> Kind {
    match metric {
        "error_rate" => Kind::Rate,
        "latency_p99_ms" => Kind::Quantile,
        "log_lines" => Kind::Count,
        _ => Kind::Gauge,
    }
}

/// The policy a new user writes: each metric's name and kind, every other option at its
/// default (no metric critical).
pub fn kinds_policy() -> Policy {
    Policy::new(
        METRICS
            .iter()
            .map(|(name, direction, _)| Metric {
                kind: Some(kind_of(name)),
                ..Metric::new(*name, *direction)
            })
            .collect(),
    )
}

/// The configurations of the heavier-noise cases: the user's policy with and without an A/A
/// period, and the best of the rest.
fn heavy_methods() -> Vec<Named> {
    vec![
        Named {
            name: "KINDS ONLY",
            method: Method::Engine {
                policy: kinds_policy(),
                aa: true,
            },
        },
        Named {
            name: "kinds only, no A/A",
            method: Method::Engine {
                policy: kinds_policy(),
                aa: false,
            },
        },
        Named {
            name: "no kinds, tuned",
            method: Method::Engine {
                policy: default_policy(),
                aa: true,
            },
        },
        Named {
            name: "plain static +25%",
            method: Method::PlainStatic(STATIC_INCREASE),
        },
    ]
}

fn methods() -> Vec<Named> {
    let engine = |policy| Method::Engine { policy, aa: true };
    let mut critical = kinds_policy();
    for (metric, (_, _, is_critical)) in critical.metrics.iter_mut().zip(METRICS) {
        metric.critical = is_critical;
    }
    let bare = Policy::new(
        METRICS
            .iter()
            .map(|(name, _, _)| Metric::new(*name, Direction::Increase))
            .collect(),
    );
    vec![
        Named {
            name: "KINDS ONLY",
            method: engine(kinds_policy()),
        },
        Named {
            name: "kinds, 3 critical",
            method: engine(critical),
        },
        Named {
            name: "no kinds, defaults",
            method: engine(bare),
        },
        Named {
            name: "no kinds, tuned",
            method: engine(default_policy()),
        },
        Named {
            name: "plain static +25%",
            method: Method::PlainStatic(STATIC_INCREASE),
        },
        Named {
            name: "plain 3σ z-score",
            method: Method::PlainZScore(3.0),
        },
    ]
}

/// Per share: the cases, every configuration's outcomes, and the oracle's bound.
pub fn run(dir: &Path, seed: u64, n: usize) -> Result<()> {
    let t = Instant::now();
    let pools = pools(dir).context("loading NAB backgrounds")?;
    let methods = methods();
    println!("1b. A small canary next to a large stable group (seed {seed}, {n} cases per share)");
    println!(
        "The canary serves a share of a fleet of {FLEET_INSTANCES} instances and 1,000-50,000 rps; each group's error rate and p99 are"
    );
    println!(
        "over its own requests, its log lines a count of its own requests' lines, its CPU a mean over its instances; the"
    );
    println!(
        "A/A period reads the canary group and the stable group with both groups' requests. Goal set: >= +20% error rate,"
    );
    println!(
        ">= +50 ms p99, log volume >= x2. KINDS ONLY: each metric's name and kind, nothing else (none critical); no kinds,"
    );
    println!(
        "defaults: each metric's name only; no kinds, tuned: section 1a's default policy (3 critical, noise models set)."
    );
    println!(
        "paused: clean deploys ending inconclusive after {HORIZON} samples; latency: mean samples to a Fail of a goal regression."
    );
    println!(
        "bound: goal regressions an oracle told the true noise catches within 3 samples at 1% false alarms.\n"
    );
    let mut goals = Vec::new();
    for (heavy, methods) in [(false, methods), (true, heavy_methods())] {
        match heavy {
            false => println!(
                "Noise as the textbook models have it (binomial errors, an exponential p99 tail, Poisson lines):"
            ),
            true => println!(
                "\nHeavier noise than those models (a lognormal p99 tail, error rates bursting 30% a sample, log lines 4x Poisson):"
            ),
        }
        println!(
            "{:<7} {:<20} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "canary", "detector", "goal<=3", "FP clean", "paused", "latency", "bound"
        );
        for (i, share) in SHARES.into_iter().enumerate() {
            let stream = 1000 * (i as u64 + 1) + u64::from(heavy) * 10_000;
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(stream));
            let cases = cases::generate_split(&pools, n, Split::Share { share, heavy }, &mut rng);
            let clean: Vec<usize> = (0..n)
                .filter(|&i| cases[i].kind == cases::Kind::Clean)
                .collect();
            let goal: Vec<usize> = (0..n).filter(|&i| in_goal(cases[i].kind)).collect();
            let bound = pct(Oracle::of(&cases, &clean).caught(&goal), goal.len());
            for (m, named) in methods.iter().enumerate() {
                let o: Vec<Outcome> = cases
                    .iter()
                    .map(|c| deploys::run(&named.method, c, Mode::Concurrent))
                    .collect();
                let caught = goal
                    .iter()
                    .filter(|&&i| o[i].decision == Decision::Fail && o[i].samples <= 3)
                    .count();
                let fails = clean
                    .iter()
                    .filter(|&&i| o[i].decision == Decision::Fail)
                    .count();
                let paused = clean
                    .iter()
                    .filter(|&&i| o[i].decision == Decision::Inconclusive)
                    .count();
                let decided: Vec<usize> = goal
                    .iter()
                    .copied()
                    .filter(|&i| o[i].decision == Decision::Fail)
                    .collect();
                let latency = decided.iter().map(|&i| o[i].samples).sum::<usize>() as f64
                    / decided.len().max(1) as f64;
                println!(
                    "{:<7} {:<20} {:>9} {:>9} {:>9} {:>9.2} {:>9}",
                    if m == 0 {
                        format!("{:.0}%", share * 100.0)
                    } else {
                        String::new()
                    },
                    named.name,
                    pct(caught, goal.len()),
                    pct(fails, clean.len()),
                    pct(paused, clean.len()),
                    latency,
                    if m == 0 { bound.clone() } else { String::new() }
                );
                if m == 0 {
                    let label = format!(
                        "{:.0}%{}",
                        share * 100.0,
                        if heavy { ", heavier" } else { "" }
                    );
                    goals.push((
                        label,
                        caught,
                        goal.len(),
                        fails,
                        paused,
                        clean.len(),
                        bound.clone(),
                    ));
                }
            }
        }
    }
    println!("\nGoals, KINDS ONLY, at every share:");
    println!(
        "  {:<14} {:>22} {:>9} {:>22} {:>22}",
        "canary", "goal<=3 (>= 95%)", "bound", "FP clean (<= 1%)", "paused (<= 5%)"
    );
    for (label, caught, goal, fails, paused, clean, bound) in goals {
        let met = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "  {:<14} {:>15} {:>6} {:>9} {:>15} {:>6} {:>15} {:>6}",
            label,
            pct(caught, goal),
            met(caught as f64 >= 0.95 * goal as f64),
            bound,
            pct(fails, clean),
            met(fails as f64 <= 0.01 * clean as f64),
            pct(paused, clean),
            met(paused as f64 <= 0.05 * clean as f64),
        );
    }
    println!("(section took {:.1} s)\n", t.elapsed().as_secs_f64());
    Ok(())
}

/// Cases per series and share in the every-series sweep (half clean).
pub const PER_SERIES: usize = 200;

/// The sweep over every NAB series: each in turn drives the traffic of every case (the
/// requests each group serves, and so its noise), the other roles drawn from their pools as
/// in the main table; KINDS ONLY at every share. Series that cannot hold a case (shorter than
/// a week of history before the baseline, or never positive for three hours) are counted out.
pub fn every_series(dir: &Path, seed: u64) -> Result<()> {
    let t = Instant::now();
    let pools = pools(dir).context("loading NAB backgrounds")?;
    let corpus = crate::nab::corpus(dir).context("loading the NAB corpus")?;
    let all: Vec<crate::nab::Grid> = corpus
        .iter()
        .map(|s| crate::nab::Grid::new(s, cases::STEP, 3600))
        .collect();
    // A traffic level is relative to the series' median: one at or below 0 cannot be one.
    let (grids, flat): (Vec<_>, Vec<_>) = all.into_iter().partition(|g| g.median > 0.0);
    let policy = Method::Engine {
        policy: kinds_policy(),
        aa: true,
    };
    println!(
        "1c. Every NAB series as the traffic of {PER_SERIES} cases per share (KINDS ONLY, seed {seed}; textbook noise)"
    );
    println!(
        "{:<7} {:>8} {:>9} {:>9} {:>9}   {:<44}",
        "canary", "series", "goal<=3", "FP clean", "paused", "highest FP (series)"
    );
    let mut skipped = Vec::new();
    for (i, share) in SHARES.into_iter().enumerate() {
        let (mut caught, mut goals, mut fails, mut paused, mut clean, mut used) =
            (0, 0, 0, 0, 0, 0);
        let mut worst = (0.0, String::new());
        for (g, grid) in grids.iter().enumerate() {
            let series_pools = cases::Pools {
                traffic: vec![grid.clone()],
                cpu: pools.cpu.clone(),
                latency: pools.latency.clone(),
                logs: pools.logs.clone(),
            };
            let stream = seed.wrapping_add(100_000 + 1000 * i as u64 + g as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(stream);
            let split = Split::Share {
                share,
                heavy: false,
            };
            let Some(cases) =
                cases::generate_bounded(&series_pools, PER_SERIES, split, &mut rng, 200)
            else {
                if i == 0 {
                    skipped.push(grid.name.clone());
                }
                continue;
            };
            used += 1;
            let o: Vec<Outcome> = cases
                .iter()
                .map(|c| deploys::run(&policy, c, Mode::Concurrent))
                .collect();
            let mut series_fails = 0;
            for (c, o) in cases.iter().zip(&o) {
                if c.kind == cases::Kind::Clean {
                    clean += 1;
                    series_fails += usize::from(o.decision == Decision::Fail);
                    paused += usize::from(o.decision == Decision::Inconclusive);
                } else if in_goal(c.kind) {
                    goals += 1;
                    caught += usize::from(o.decision == Decision::Fail && o.samples <= 3);
                }
            }
            fails += series_fails;
            let rate = series_fails as f64 / (PER_SERIES / 2) as f64;
            if rate > worst.0 {
                worst = (rate, grid.name.clone());
            }
        }
        println!(
            "{:<7} {:>8} {:>9} {:>9} {:>9}   {:<44}",
            format!("{:.0}%", share * 100.0),
            used,
            pct(caught, goals),
            pct(fails, clean),
            pct(paused, clean),
            format!("{:.1}% ({})", worst.0 * 100.0, worst.1)
        );
    }
    println!("{} series in the corpus", corpus.len());
    if !skipped.is_empty() {
        println!(
            "counted out, no case fits ({}): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    if !flat.is_empty() {
        let names: Vec<&str> = flat.iter().map(|g| g.name.as_str()).collect();
        println!(
            "counted out, median not positive ({}): {}",
            names.len(),
            names.join(", ")
        );
    }
    println!("(section took {:.1} s)\n", t.elapsed().as_secs_f64());
    Ok(())
}
