//! `geoclock demo` and `geoclock soak`: parsing, printing and signal
//! handling only (see src/demo.rs and src/soak.rs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use geoclock::demo::{Demo, DemoOptions};

#[derive(Args)]
pub struct DemoArgs {
    /// A real Kafka cluster; without it an embedded in-memory broker (librdkafka's mock cluster) is used.
    #[arg(long, env = "GEOCLOCK_BROKERS")]
    brokers: Option<String>,
    /// Technicians in the generated day (about five appointments each).
    #[arg(long, default_value_t = 24)]
    technicians: usize,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 120.0)]
    speed: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scratch state (wiped at start).
    #[arg(long, default_value = "geoclock-demo")]
    state_dir: PathBuf,
    /// The Activity Report server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    report: String,
    /// Prometheus metrics of the whole process.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: SocketAddr,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Print the endpoints and progress as JSON lines.
    #[arg(long)]
    json: bool,
}

pub fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let rt = crate::cli_connect::runtime()?;
    let opts = DemoOptions {
        brokers: a.brokers,
        technicians: a.technicians.max(1),
        speed: a.speed.max(1.0),
        seed: a.seed,
        days: 1,
        retention_days: None,
        state_dir: a.state_dir,
        report_listen: a.report,
        metrics_listen: a.metrics,
    };
    let demo = Demo::start(&opts, &rt)?;
    let e = &demo.endpoints;
    if a.json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        let broker = if e.embedded_broker {
            "embedded (librdkafka mock cluster, in memory)".to_string()
        } else {
            e.brokers.clone()
        };
        println!("geoclock demo: {} technicians, {}x time", opts.technicians, opts.speed);
        println!("  broker         {broker}");
        println!("  report         {}   (a signed link; also &format=csv, &format=json)", e.report_link);
        println!("                 or: curl -H 'Authorization: Bearer {}' '{}?format=csv'", e.report_token, e.report);
        println!("  map            {}   (a signed link)", e.map);
        println!("  metrics        {}", e.metrics);
        println!("  mailbox        {}", e.mailbox);
        println!("  servicetrade   {}/admin/state", e.servicetrade);
        println!("  azuga          {}/admin/state", e.azuga);
        println!("Ctrl-C stops it.");
    }
    let began = Instant::now();
    let stop = rt.block_on(async {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        let signal = crate::cli_connect::shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => return Ok::<_, anyhow::Error>("interrupted or terminated"),
                _ = every.tick() => {
                    let p = demo.progress();
                    if a.json {
                        println!("{}", serde_json::to_string(&p)?);
                    } else {
                        println!(
                            "[{}] fixes {}/{} · geofences {} · arrivals {} · clock changes {} · emails {}{}",
                            p.sim_time.get(11..16).unwrap_or("--:--"), p.fixes_released, p.fixes_total, p.geofences,
                            p.arrivals_clocked, p.clock_changes, p.emails, if p.day_over { " · day over" } else { "" }
                        );
                    }
                    if a.duration_s.is_some_and(|d| began.elapsed() >= Duration::from_secs(d)) {
                        return Ok("duration reached");
                    }
                }
            }
        }
    })?;
    eprintln!("stopping ({stop}): committing and shutting down");
    demo.stop(&rt);
    eprintln!("stopped cleanly");
    Ok(())
}

#[derive(Args)]
pub struct SoakArgs {
    /// A real Kafka cluster; without it the embedded in-memory broker.
    #[arg(long, env = "GEOCLOCK_BROKERS")]
    brokers: Option<String>,
    /// Working days of the same fleet.
    #[arg(long, default_value_t = 10)]
    days: u32,
    /// The tenant's retention_days, the sinks' ledger keep and the connector's ping memory, in simulated days.
    #[arg(long, default_value_t = 1)]
    retention_days: u32,
    #[arg(long, default_value_t = 12)]
    technicians: usize,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 3600.0)]
    speed: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days before the verdict looks (default: 2 × retention + 2).
    #[arg(long)]
    warmup_days: Option<u32>,
    /// Growth allowed after the warm-up, as a share of the warm-up value.
    #[arg(long, default_value_t = 0.25)]
    tolerance: f64,
    /// Scratch state (wiped at start).
    #[arg(long, default_value = "geoclock-soak")]
    state_dir: PathBuf,
    /// Also write the report (every sample) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Exit 0 when every store stayed flat after the warm-up, 1 when one grew.
pub fn soak(a: SoakArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = crate::cli_connect::runtime()?;
    let opts = geoclock::soak::SoakOptions {
        demo: DemoOptions {
            brokers: a.brokers,
            technicians: a.technicians.max(1),
            speed: a.speed.max(1.0),
            seed: a.seed,
            days: a.days.max(1),
            retention_days: Some(a.retention_days.max(1)),
            state_dir: a.state_dir,
            report_listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".parse()?,
        },
        warmup_days: a.warmup_days,
        tolerance: a.tolerance,
    };
    eprintln!(
        "geoclock soak: {} days of {} technicians at {}x, retention {} day(s)",
        opts.demo.days, opts.demo.technicians, opts.demo.speed, a.retention_days
    );
    let report = geoclock::soak::run(&opts, &rt, |s| {
        let total: u64 = s.stores.values().sum();
        println!(
            "day {:>2} ({}): {} store entries in {} series, {} appointments held, RSS {:.0} MiB, {} clock changes, {} emails",
            s.day,
            s.sim_time.get(..16).unwrap_or(""),
            total,
            s.stores.len(),
            s.appointments,
            s.rss_bytes as f64 / 1048576.0,
            s.clock_changes,
            s.emails
        );
    })?;
    println!("\nstore entries at the end of each day (series / day 0, 1, ...):");
    let mut names: Vec<&String> = report.samples.iter().flat_map(|s| s.stores.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let row: Vec<String> =
            report.samples.iter().map(|s| s.stores.get(n).map_or("-".into(), |v| v.to_string())).collect();
        println!("  {n:<60} {}", row.join(" "));
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if report.grew.is_empty() {
        println!(
            "flat: no store grew more than {:.0}% after day {} ({:.0} s)",
            report.tolerance * 100.0,
            report.warmup_days,
            report.wall_s
        );
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        for g in &report.grew {
            println!(
                "GREW: {} from {} on day {} to {} on day {}",
                g.series, g.at_warmup, g.warmup_day, g.max_after, g.max_day
            );
        }
        Ok(std::process::ExitCode::from(1))
    }
}
