//! `geoclock demo`: parsing, printing and signal handling only (see src/demo.rs).

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
