//! Reading the Numenta Anomaly Benchmark corpus: series, labelled windows, scoring profiles.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;

/// One NAB series, e.g. `realTweets/Twitter_volume_AAPL.csv`.
pub struct Series {
    /// Path under `data/`, as NAB's label files name it.
    pub name: String,
    /// Unix seconds (NAB timestamps read as UTC).
    pub times: Vec<i64>,
    /// The values.
    pub values: Vec<f64>,
}

/// Every series under `<dir>/data/*/`, sorted by name so runs are reproducible.
pub fn corpus(dir: &Path) -> Result<Vec<Series>> {
    let data = dir.join("data");
    let mut names = Vec::new();
    for category in
        std::fs::read_dir(&data).with_context(|| format!("reading {}", data.display()))?
    {
        let category = category?;
        if !category.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(category.path())? {
            let file = file?.file_name().to_string_lossy().into_owned();
            if file.ends_with(".csv") {
                names.push(format!("{}/{file}", category.file_name().to_string_lossy()));
            }
        }
    }
    names.sort();
    names.iter().map(|n| load(dir, n)).collect()
}

/// One series by its name under `data/`.
pub fn load(dir: &Path, name: &str) -> Result<Series> {
    let path = dir.join("data").join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut series = Series {
        name: name.to_owned(),
        times: Vec::new(),
        values: Vec::new(),
    };
    for (n, line) in text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (time, value) = line
            .split_once(',')
            .with_context(|| format!("{}:{}: expected `timestamp,value`", path.display(), n + 1))?;
        series
            .times
            .push(parse_time(time).with_context(|| format!("{}:{}", path.display(), n + 1))?);
        series.values.push(
            value
                .trim()
                .parse()
                .with_context(|| format!("{}:{}: bad value", path.display(), n + 1))?,
        );
    }
    Ok(series)
}

/// Labelled anomaly windows per series, as `[start, end]` unix seconds.
pub fn windows(dir: &Path) -> Result<BTreeMap<String, Vec<(i64, i64)>>> {
    let path = dir.join("labels/combined_windows.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let raw: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    raw.into_iter()
        .map(|(name, ws)| {
            let ws = ws
                .iter()
                .map(|(a, b)| Ok((parse_time(a)?, parse_time(b)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok((name, ws))
        })
        .collect()
}

/// NAB's cost matrix for a profile: weights of true positives, false positives and false
/// negatives.
pub struct Costs {
    /// Weight of a detected window.
    pub tp: f64,
    /// Weight of a false positive.
    pub fp: f64,
    /// Weight of a missed window.
    pub fn_: f64,
}

/// The cost matrix of `profile` (`standard` is the one NAB's scoreboard quotes).
pub fn costs(dir: &Path, profile: &str) -> Result<Costs> {
    let path = dir.join("config/profiles.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let all: serde_json::Value = serde_json::from_str(&text)?;
    let m = &all[profile]["CostMatrix"];
    let weight = |k: &str| {
        m[k].as_f64()
            .with_context(|| format!("{}: {profile}.CostMatrix.{k}", path.display()))
    };
    Ok(Costs {
        tp: weight("tpWeight")?,
        fp: weight("fpWeight")?,
        fn_: weight("fnWeight")?,
    })
}

/// `2014-04-10 00:04:00` or `2014-04-10 07:15:00.000000`, read as UTC.
fn parse_time(s: &str) -> Result<i64> {
    let s = s.trim();
    let (date, time) = s
        .split_once(' ')
        .with_context(|| format!("bad timestamp `{s}`"))?;
    let d: Vec<u32> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad date `{s}`"))?;
    let t: Vec<f64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad time `{s}`"))?;
    if d.len() != 3 || t.len() != 3 {
        bail!("bad timestamp `{s}`");
    }
    let at = NaiveDate::from_ymd_opt(d[0] as i32, d[1], d[2])
        .and_then(|d| d.and_hms_opt(t[0] as u32, t[1] as u32, t[2] as u32))
        .with_context(|| format!("bad timestamp `{s}`"))?;
    Ok(at.and_utc().timestamp())
}

/// A series on a regular grid of `step` seconds aligned to multiples of `step`, linearly
/// interpolated; grid points inside a gap longer than `max_gap` are NaN.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Series name.
    pub name: String,
    /// Unix seconds of the first grid point.
    pub start: i64,
    /// Grid step in seconds.
    pub step: i64,
    /// Values, NaN inside gaps.
    pub values: Vec<f64>,
    /// Median of the finite values, the series' typical level.
    pub median: f64,
}

impl Grid {
    /// Regrids `series`.
    pub fn new(series: &Series, step: i64, max_gap: i64) -> Grid {
        let (times, values) = (&series.times, &series.values);
        let start = times[0].div_euclid(step) * step + if times[0] % step == 0 { 0 } else { step };
        let end = *times.last().unwrap_or(&start);
        let mut grid = Vec::new();
        let mut j = 0;
        let mut t = start;
        while t <= end {
            while j + 1 < times.len() && times[j + 1] <= t {
                j += 1;
            }
            let v = if times[j] == t {
                values[j]
            } else if j + 1 < times.len() && times[j + 1] - times[j] <= max_gap {
                let f = (t - times[j]) as f64 / (times[j + 1] - times[j]) as f64;
                values[j] + f * (values[j + 1] - values[j])
            } else {
                f64::NAN
            };
            grid.push(v);
            t += step;
        }
        let mut finite: Vec<f64> = grid.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        let median = finite.get(finite.len() / 2).copied().unwrap_or(f64::NAN);
        Grid {
            name: series.name.clone(),
            start,
            step,
            values: grid,
            median,
        }
    }

    /// Unix seconds of grid point `i`.
    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_utc() {
        assert_eq!(parse_time("2014-04-14 09:30:00").unwrap(), 1_397_467_800);
        assert_eq!(
            parse_time("2014-04-14 09:30:00.000000").unwrap(),
            1_397_467_800
        );
    }

    #[test]
    fn regrid_interpolates_and_marks_gaps() {
        let s = Series {
            name: "x".into(),
            times: vec![0, 600, 900, 9000],
            values: vec![0.0, 6.0, 9.0, 90.0],
        };
        let g = Grid::new(&s, 300, 3600);
        assert_eq!(&g.values[..4], &[0.0, 3.0, 6.0, 9.0]);
        assert!(g.values[4].is_nan());
        assert_eq!(g.values.last(), Some(&90.0));
    }
}
