//! `geoclock soak`: many simulated days through the whole pipeline, to show
//! that every store stays bounded.
//!
//! It runs [`crate::demo`] (both connectors over the vendor simulators, the
//! processor, the three sinks, the report server; a real broker when one is
//! given) for [`DemoOptions::days`] working days of the same fleet on an
//! accelerated clock, with a short retention ([`DemoOptions::retention_days`])
//! so that it kicks in within the run. Once a simulated day, at the same
//! time of day (seven hours before the next day's first departure: the
//! day's work done, the next day's not yet entered), it scrapes the
//! process's own `/metrics` over HTTP and keeps every
//! `geoclock_store_entries` series, the processor's appointments and the
//! resident memory. The verdict ([`growth`]) is pure: after the warm-up
//! (retention needs about `2 × retention_days + 2` days to reach its steady
//! state: retire, then forget), no series may grow by more than the
//! tolerance over its warm-up value.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::connect::ledger::COMPACT_SLACK;
use crate::demo::{Demo, DemoError, DemoOptions};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error("soak: metrics at {url}: {message}")]
    Metrics { url: String, message: String },
    #[error("soak: simulated day {day} not reached within {waited_s} s (progress: {progress})")]
    Stalled { day: u32, waited_s: u64, progress: String },
}

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub demo: DemoOptions,
    /// Days before the verdict starts looking (`None`: `2 × retention + 2`).
    pub warmup_days: Option<u32>,
    /// Growth allowed over the warm-up value, as a share of it.
    pub tolerance: f64,
}

/// One day's look at the stores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The day whose work is done (0-based).
    pub day: u32,
    pub sim_time: String,
    /// `geoclock_store_entries`, by `store/kind`.
    pub stores: BTreeMap<String, u64>,
    /// `geoclock_processor_state_appointments`, summed over tasks.
    pub appointments: i64,
    pub rss_bytes: u64,
    /// Clock changes posted to ServiceTrade so far (the days did things).
    pub clock_changes: usize,
    /// `geoclock_connector_past_horizon_total`, all actions: appointments
    /// and clock events the connector let go or did not publish so far.
    pub past_horizon: u64,
    pub emails: usize,
}

/// A series that kept growing after the warm-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    pub series: String,
    pub warmup_day: u32,
    pub at_warmup: u64,
    pub max_after: u64,
    pub max_day: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub days: u32,
    pub retention_days: u32,
    pub warmup_days: u32,
    pub tolerance: f64,
    pub samples: Vec<Sample>,
    pub grew: Vec<Growth>,
    pub wall_s: f64,
}

/// The `geoclock_store_entries` series of a Prometheus text exposition, by
/// `store/kind`; and a named gauge family summed.
pub fn store_entries(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("geoclock_store_entries{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            let at = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let rest = &labels[at..];
            Some(rest[..rest.find('"')?].to_string())
        };
        if let (Some(store), Some(kind), Ok(v)) = (label("store"), label("kind"), value.parse::<f64>()) {
            out.insert(format!("{store}/{kind}"), v.max(0.0) as u64);
        }
    }
    out
}

/// The sum of a metric family's samples (`name{...} v` or `name v`).
pub fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Series whose largest value after `warmup` exceeds their value at the
/// first sample from `warmup` on by more than `tolerance` of it (plus
/// `slack` entries, for series that are small). A connector ledger's
/// `journal_lines` rises and falls by design (compacted at twice the live
/// entries plus [`COMPACT_SLACK`]): it is held to that bound instead
/// (`at_warmup` is then the bound). Pure.
pub fn growth(samples: &[Sample], warmup: u32, tolerance: f64, slack: u64) -> Vec<Growth> {
    let Some(base) = samples.iter().find(|s| s.day >= warmup) else { return Vec::new() };
    let mut out = Vec::new();
    let mut names: Vec<&String> = samples.iter().flat_map(|s| s.stores.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if let Some(store) = name.strip_suffix("/journal_lines") {
            out.extend(journal_over_bound(samples, base.day, name, store));
            continue;
        }
        let at_warmup = base.stores.get(name).copied().unwrap_or(0);
        let later = samples.iter().filter(|s| s.day > base.day);
        let Some((max_day, max_after)) =
            later.map(|s| (s.day, s.stores.get(name).copied().unwrap_or(0))).max_by_key(|(_, v)| *v)
        else {
            continue;
        };
        if max_after as f64 > at_warmup as f64 * (1.0 + tolerance) + slack as f64 {
            out.push(Growth { series: name.clone(), warmup_day: base.day, at_warmup, max_after, max_day });
        }
    }
    out
}

/// Samples from `from` on whose journal has more lines than its compaction
/// bound: the worst one.
fn journal_over_bound(samples: &[Sample], from: u32, name: &str, store: &str) -> Option<Growth> {
    let prefix = format!("{store}/");
    samples
        .iter()
        .filter(|s| s.day >= from)
        .filter_map(|s| {
            let live: u64 = s.stores.iter().filter(|(k, _)| k.starts_with(&prefix) && *k != name).map(|(_, v)| v).sum();
            let bound = 2 * live + COMPACT_SLACK as u64;
            let lines = s.stores.get(name).copied().unwrap_or(0);
            (lines > bound).then(|| Growth {
                series: name.to_string(),
                warmup_day: from,
                at_warmup: bound,
                max_after: lines,
                max_day: s.day,
            })
        })
        .max_by_key(|g| g.max_after)
}

fn scrape(url: &str) -> Result<String, SoakError> {
    let err = |message: String| SoakError::Metrics { url: url.to_string(), message };
    let mut r = ureq::get(url).call().map_err(|e| err(e.to_string()))?;
    r.body_mut().read_to_string().map_err(|e| err(e.to_string()))
}

/// Runs the days; `each` sees every sample as it is taken.
pub fn run(
    opts: &SoakOptions,
    runtime: &tokio::runtime::Runtime,
    mut each: impl FnMut(&Sample),
) -> Result<Report, SoakError> {
    let began = Instant::now();
    let days = opts.demo.days.max(1);
    let retention_days = opts.demo.retention_days.unwrap_or(30);
    let warmup_days = opts.warmup_days.unwrap_or(2 * retention_days + 2);
    let demo = Demo::start(&opts.demo, runtime)?;
    let result = sample_days(&demo, opts, days, &mut each);
    demo.stop(runtime);
    let samples = result?;
    let grew = growth(&samples, warmup_days, opts.tolerance, 50);
    Ok(Report {
        days,
        retention_days,
        warmup_days,
        tolerance: opts.tolerance,
        samples,
        grew,
        wall_s: began.elapsed().as_secs_f64(),
    })
}

fn sample_days(
    demo: &Demo,
    opts: &SoakOptions,
    days: u32,
    each: &mut impl FnMut(&Sample),
) -> Result<Vec<Sample>, SoakError> {
    let day_start = demo.day_start();
    let mut samples = Vec::new();
    for day in 0..days {
        // Seven hours before the next day's start (its work is entered six
        // hours before).
        let at = day_start.millis() + (day as i64 + 1) * DAY_MS - 7 * 3_600_000;
        let allowed = Duration::from_secs_f64((DAY_MS as f64 / 1000.0 / opts.demo.speed.max(1.0)) * 3.0 + 120.0);
        let waiting = Instant::now();
        while demo.clock().now_ms() < at {
            if waiting.elapsed() > allowed {
                return Err(SoakError::Stalled {
                    day,
                    waited_s: allowed.as_secs(),
                    progress: serde_json::to_string(&demo.progress()).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = scrape(&demo.endpoints.metrics)?;
        let p = demo.progress();
        let s = Sample {
            day,
            sim_time: crate::model::Ts(demo.clock().now_ms()).to_rfc3339(),
            stores: store_entries(&text),
            appointments: family_sum(&text, "geoclock_processor_state_appointments") as i64,
            rss_bytes: family_sum(&text, "process_resident_memory_bytes") as u64,
            clock_changes: p.clock_changes,
            emails: p.emails,
            past_horizon: family_sum(&text, "geoclock_connector_past_horizon_total") as u64,
        };
        each(&s);
        samples.push(s);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(day: u32, v: &[(&str, u64)]) -> Sample {
        Sample {
            day,
            sim_time: String::new(),
            stores: v.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            appointments: 0,
            rss_bytes: 0,
            clock_changes: 0,
            emails: 0,
            past_horizon: 0,
        }
    }

    #[test]
    fn reads_store_entries_from_an_exposition() {
        let text = "# HELP geoclock_store_entries x\n# TYPE geoclock_store_entries gauge\n\
            geoclock_store_entries{kind=\"commands\",store=\"sink_ledger:sink-clock\"} 42\n\
            geoclock_store_entries{kind=\"pings\",store=\"connector_ledger:azuga-acme.ledger\"} 7\n\
            geoclock_processor_state_appointments{partition=\"a\"} 3\n\
            geoclock_processor_state_appointments{partition=\"b\"} 4\n\
            process_resident_memory_bytes 1.5e6\n";
        let m = store_entries(text);
        assert_eq!(m["sink_ledger:sink-clock/commands"], 42);
        assert_eq!(m["connector_ledger:azuga-acme.ledger/pings"], 7);
        assert_eq!(m.len(), 2);
        assert_eq!(family_sum(text, "geoclock_processor_state_appointments"), 7.0);
        assert_eq!(family_sum(text, "process_resident_memory_bytes"), 1.5e6);
    }

    #[test]
    fn a_series_that_keeps_growing_after_the_warmup_is_named_and_a_flat_one_is_not() {
        let samples: Vec<Sample> = (0..10)
            .map(|d| {
                let flat = if d < 4 { 100 * (d as u64 + 1) } else { 400 + (d as u64 % 2) * 20 };
                sample(d, &[("flat/x", flat), ("grows/y", 300 * (d as u64 + 1)), ("small/z", d as u64)])
            })
            .collect();
        let g = growth(&samples, 4, 0.15, 50);
        assert_eq!(g.len(), 1, "{g:?}");
        let mut journal = samples.clone();
        for (d, s) in journal.iter_mut().enumerate() {
            s.stores.insert("ledger:x/pings".into(), 1000);
            s.stores.insert("ledger:x/journal_lines".into(), 1000 + 3000 * (d as u64 % 4));
        }
        assert_eq!(growth(&journal, 4, 0.15, 50).len(), 1, "a sawtooth under its bound is not growth");
        journal[9].stores.insert("ledger:x/journal_lines".into(), 2 * 1000 + COMPACT_SLACK as u64 + 1);
        let g = growth(&journal, 4, 0.15, 50);
        assert!(g.iter().any(|g| g.series == "ledger:x/journal_lines" && g.max_day == 9), "{g:?}");
        assert_eq!((g[0].series.as_str(), g[0].at_warmup, g[0].max_after, g[0].max_day), ("grows/y", 1500, 3000, 9));
        assert!(growth(&samples[..4], 4, 0.15, 50).is_empty(), "nothing after the warm-up: no verdict");
    }
}
