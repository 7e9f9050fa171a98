//! `geoclock report serve`: parsing and wiring only (see src/report/serve.rs).

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ReportCmd {
    /// The Activity Report per tenant and day: GET /report/TENANT?day=YYYY-MM-DD&format=html|csv|json, and the live map at /map/TENANT (token required).
    Serve {
        #[command(flatten)]
        pipeline: crate::cli_connect::PipelineArgs,
        /// Partitions of the processor's topics.
        #[arg(long, env = "GEOCLOCK_PARTITIONS", default_value_t = 6)]
        partitions: i32,
        /// The report, /healthz, /readyz and /metrics.
        #[arg(long, env = "GEOCLOCK_REPORT_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the replicas of the processor's state and of the pings live (DIR/report-replica, DIR/report-positions).
        #[arg(long, env = "GEOCLOCK_STATE_DIR", default_value = "geoclock-state")]
        state_dir: PathBuf,
        /// Also serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, env = "GEOCLOCK_METRICS")]
        metrics: Option<std::net::SocketAddr>,
    },
}

pub fn report(cmd: ReportCmd) -> anyhow::Result<()> {
    let ReportCmd::Serve { pipeline, partitions, listen, state_dir, metrics } = cmd;
    let tenants = pipeline.tenants()?;
    let rt = crate::cli_connect::runtime()?;
    let opts = geoclock::report::serve::Options {
        brokers: pipeline.brokers().to_string(),
        catalogue: pipeline.catalogue(Some(partitions)),
        registry: pipeline.registry()?,
        listen,
        state_dir,
    };
    let server = geoclock::report::serve::start(opts, tenants, rt.handle().clone())?;
    println!(
        "report at {}/report/TENANT, live map at {}/map/TENANT (token required; metrics at /metrics)",
        server.url(),
        server.url()
    );
    if let Some(addr) = metrics {
        let bound = geoclock::telemetry::serve_metrics(addr, server.metrics_renderer(), geoclock::telemetry::healthy)?;
        println!("metrics at http://{bound}/metrics");
    }
    rt.block_on(async {
        crate::cli_connect::shutdown_signal().await;
        server.stop().await;
        Ok::<_, anyhow::Error>(())
    })
}
