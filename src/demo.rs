//! `geoclock demo`: the whole pipeline in one process, on a simulated day.
//!
//! An embedded Kafka-protocol broker (librdkafka's mock cluster, in memory)
//! unless `brokers` names a real one; the ServiceTrade and Azuga simulators
//! holding a generated working day; a mail receiver; both connectors, the
//! processor, the three sinks and the report server with the live map,
//! wired exactly as the separate processes would be (topics, HTTP, SMTP).
//!
//! Time: simulated time starts 30 minutes before the first departure and
//! runs `speed` times faster than the wall clock. The driver releases each
//! technician's En Route press (ServiceTrade) and each GPS fix (Azuga) when
//! simulated time reaches it; the connectors pick them up through webhooks
//! and polling as they would in production. Nothing in the pipeline reads
//! the simulated clock: decisions use event time only. With
//! [`DemoOptions::retention_days`] set (`geoclock soak`), the sinks' ledger
//! retention, which is by the wall clock, is scaled to simulated days.
//!
//! Days: with [`DemoOptions::days`] > 1 the same fleet works that many days
//! ([`crate::sim::fleet::generate_days`]); each later day's appointments
//! are entered at ServiceTrade six simulated hours before its first
//! departure, as a dispatcher would the evening before, and ServiceTrade
//! tells time by the simulated clock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::tenants::{self, Tenant};
use crate::connect::{self, Connector, Vendor};
use crate::engine::Event;
use crate::http::server::Running;
use crate::kafka::admin::ensure_topics;
use crate::kafka::registry::{FileRegistry, SchemaRegistry};
use crate::kafka::topics::Catalogue;
use crate::model::Ts;
use crate::processor::{self, Processor, Tenants};
use crate::sim::azuga::{self, AzugaSim};
use crate::sim::fleet::{generate_days, FleetConfig};
use crate::sim::servicetrade::{self as st, ServiceTradeSim};
use crate::sim::smtp::SmtpSim;
use crate::sim::SimClock;
use crate::sink::runner::{Sink, SinkConfig};
use crate::sink::SinkKind;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {what}: {message}")]
    Start { what: &'static str, message: String },
}

fn start_err(what: &'static str) -> impl Fn(String) -> DemoError {
    move |message| DemoError::Start { what, message }
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A real broker; `None` runs the embedded mock cluster.
    pub brokers: Option<String>,
    pub technicians: usize,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    pub seed: u64,
    /// Working days simulated (1: the demo's day).
    pub days: u32,
    /// Short retention for a multi-day run: the tenant's `retention_days`,
    /// the sinks' ledger keep (scaled to simulated days) and the Azuga
    /// connector's ping memory. `None`: 30 days, 14 days, and a year of
    /// ping age (the demo's day may be replayed late).
    pub retention_days: Option<u32>,
    pub state_dir: PathBuf,
    /// Where the report and metrics listen (port 0: any).
    pub report_listen: String,
    pub metrics_listen: SocketAddr,
}

/// What the demo prints and tests read: where everything is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoints {
    pub brokers: String,
    pub embedded_broker: bool,
    pub report: String,
    /// For `Authorization: Bearer` (the report takes no token in its URL).
    pub report_token: String,
    /// A signed link to the simulated day's HTML report, valid for
    /// [`crate::config::link::LINK_TTL_S`].
    pub report_link: String,
    /// A signed link to the demo tenant's live map, valid for
    /// [`crate::config::link::LINK_TTL_S`].
    pub map: String,
    pub metrics: String,
    pub mailbox: String,
    pub servicetrade: String,
    pub azuga: String,
    pub tenant: String,
}

/// Progress, from the simulators and the mailbox (what the outside world saw).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Progress {
    pub sim_time: String,
    pub fixes_released: usize,
    pub fixes_total: usize,
    pub geofences: usize,
    pub arrivals_clocked: usize,
    pub clock_changes: usize,
    pub emails: usize,
    pub day_over: bool,
    /// Simulated day (0-based) of `sim_time`.
    pub day: u32,
}

pub const TENANT: &str = "acme";
const DAY_MS: i64 = 86_400_000;
const REPORT_TOKEN: &str = "demo-report-token";

pub struct Demo {
    pub endpoints: Endpoints,
    _mock: Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    st: Arc<ServiceTradeSim>,
    az: Arc<AzugaSim>,
    smtp: SmtpSim,
    servers: Vec<Running>,
    connectors: Vec<Connector>,
    processor: Option<Processor>,
    sinks: Vec<Sink>,
    report: Option<crate::report::serve::Server>,
    driver: tokio::task::JoinHandle<()>,
    progress: Arc<std::sync::Mutex<Progress>>,
    clock: SimClock,
    day_start: Ts,
}

fn tenants_text(st: &str, az: &str, smtp: SocketAddr, azuga_budget_ms: u64, retention_days: Option<u32>) -> String {
    let (retention, max_ping_age_s) = match retention_days {
        Some(d) => (format!(", retention_days = {d}"), d as u64 * 86_400),
        None => (String::new(), 31_536_000),
    };
    format!(
        r#"
[[tenants]]
name = "{TENANT}"
timezone = "America/New_York"
settings = {{ window_hours = 2{retention} }}
[tenants.servicetrade]
base_url = "{st}"
username = "geoclock-admin"
password = {{ value = "secret" }}
webhook_secret = {{ value = "demo-st-hook" }}
reconcile_interval_ms = 5000
api_interval_ms = 0
[tenants.azuga]
base_url = "{az}"
api_key = {{ value = "azuga-key" }}
webhook_secret = {{ value = "demo-az-hook" }}
rate_limit_ms = {azuga_budget_ms}
poll_interval_ms = 5000
entity_sync_interval_ms = 10000
max_ping_age_s = {max_ping_age_s}
max_ping_future_s = 31536000
[tenants.email]
from = "Acme Field Service <service@acme.example>"
smtp_url = {{ value = "smtp://{smtp}" }}
report_token = {{ value = "{REPORT_TOKEN}" }}
servicetrade_web_url = "{st}"
"#
    )
}

impl Demo {
    /// Starts everything on `runtime`. Blocking calls stay off its workers.
    pub fn start(opts: &DemoOptions, runtime: &tokio::runtime::Runtime) -> Result<Demo, DemoError> {
        // Scratch state: wiped at start, but only a directory the demo made.
        let marker = opts.state_dir.join(".geoclock-demo");
        let occupied = std::fs::read_dir(&opts.state_dir).is_ok_and(|mut d| d.next().is_some());
        if occupied && !marker.exists() {
            return Err(start_err("state dir")(format!(
                "{} is not empty and was not made by the demo; choose another --state-dir",
                opts.state_dir.display()
            )));
        }
        let _ = std::fs::remove_dir_all(&opts.state_dir);
        std::fs::create_dir_all(&opts.state_dir).map_err(|e| start_err("state dir")(e.to_string()))?;
        std::fs::write(&marker, b"").map_err(|e| start_err("state dir")(e.to_string()))?;
        let (mock, brokers) = match &opts.brokers {
            Some(b) => (None, b.clone()),
            None => {
                let m =
                    rdkafka::mocking::MockCluster::new(1).map_err(|e| start_err("embedded broker")(e.to_string()))?;
                let b = m.bootstrap_servers();
                (Some(m), b)
            }
        };
        // On a real broker every run is a fresh day: its own topics and groups.
        let prefix = match &mock {
            Some(_) => "geoclock".to_string(),
            None => format!("geoclock-demo-{}", chrono::Utc::now().timestamp()),
        };
        let catalogue = Catalogue { prefix, partitions: 3, replication: 1 };
        if let Some(m) = &mock {
            // The mock cluster has no CreateTopics: create them directly.
            for t in crate::kafka::topics::Topic::ALL {
                m.create_topic(&catalogue.name(t), catalogue.partitions, 1)
                    .map_err(|e| start_err("embedded broker topics")(e.to_string()))?;
            }
        }
        runtime
            .block_on(ensure_topics(&brokers, &catalogue, Duration::from_secs(30)))
            .map_err(|e| start_err("topics")(e.to_string()))?;
        let today = chrono::Utc::now().timestamp().div_euclid(86_400) * 86_400;
        let day_start = Ts::from_secs(today + 12 * 3600);
        let mut days = generate_days(
            &FleetConfig { tenant: TENANT.into(), ..FleetConfig::demo(opts.seed, opts.technicians, day_start) },
            opts.days.max(1),
        );
        // En Route presses are released by the driver as simulated time
        // passes; the Azuga simulator holds every day's fixes until
        // `advance`; later days' work is entered by the driver.
        let mut world = days.remove(0);
        let mut dispatch: Vec<(Ts, Event)> = Vec::new();
        for (d, w) in days.into_iter().enumerate() {
            let at = day_start.plus_millis((d as i64 + 1) * DAY_MS - 6 * 3_600_000);
            dispatch.extend(w.appointments.into_iter().map(|a| (at, Event::Appointment(a))));
            world.clocks.extend(w.clocks);
            world.pings.extend(w.pings);
        }
        let mut clocks = std::mem::take(&mut world.clocks);
        clocks.sort_by_key(|c| c.time);
        world.pings.sort_by_key(|f| f.release_at);
        let fixes = world.pings.clone();
        let start = fixes.first().map_or(Ts(today * 1000), |f| f.release_at).minus_millis(30 * 60_000);
        let end = fixes.last().map_or(start, |f| f.release_at).plus_millis(30 * 60_000);
        // ServiceTrade tells time by the simulated clock in a multi-day run
        // (its stamps and `Date` date what the connector keeps).
        let clock = SimClock::default();
        clock.set(start.millis());
        let st_cfg = st::Config { clock: (opts.days > 1).then(|| clock.clone()), ..st::Config::default() };
        let azuga_budget_ms = ((60_000.0 / opts.speed.max(1.0)) as u64).max(100);
        let (st, st_run) = runtime
            .block_on(ServiceTradeSim::start(st_cfg, &world, "127.0.0.1:0"))
            .map_err(|e| start_err("servicetrade simulator")(e.to_string()))?;
        let az_cfg = azuga::Config { rate_limit_ms: azuga_budget_ms, ..azuga::Config::default() };
        let (az, az_run) = runtime
            .block_on(AzugaSim::start(az_cfg, &world, "127.0.0.1:0"))
            .map_err(|e| start_err("azuga simulator")(e.to_string()))?;
        let smtp = runtime
            .block_on(SmtpSim::start("127.0.0.1:0", "127.0.0.1:0"))
            .map_err(|e| start_err("mail receiver")(e.to_string()))?;
        let text = tenants_text(&st_run.url(), &az_run.url(), smtp.smtp_addr, azuga_budget_ms, opts.retention_days);
        let tenants: Vec<Tenant> = tenants::parse(&text, "demo").map_err(|e| start_err("tenants")(e.to_string()))?;
        std::fs::write(opts.state_dir.join("tenants.toml"), &text).map_err(|e| start_err("tenants")(e.to_string()))?;
        let registry: Arc<dyn SchemaRegistry> = Arc::new(FileRegistry::in_memory());

        let mut connectors = Vec::new();
        for vendor in [Vendor::ServiceTrade, Vendor::Azuga] {
            let o = connect::Options {
                brokers: brokers.clone(),
                catalogue: catalogue.clone(),
                registry: registry.clone(),
                listen: "127.0.0.1:0".into(),
                public_url: None,
                register_webhooks: true,
                policy: Default::default(),
                state_dir: opts.state_dir.join("connect"),
            };
            let c = runtime
                .block_on(connect::start(vendor, o, &tenants))
                .map_err(|e| start_err("connector")(e.to_string()))?;
            connectors.push(c);
        }
        let mut pc =
            processor::Config::new(&brokers, catalogue.clone(), opts.state_dir.join("processor"), registry.clone());
        pc.tenants = Tenants {
            tenants: tenants.iter().map(|t| (t.name.clone(), t.settings.clone())).collect(),
            ..Tenants::default()
        };
        pc.limits.commit_interval = Duration::from_millis(200);
        pc.group_id = format!("{}-processor", catalogue.prefix);
        let processor = Processor::start(pc).map_err(|e| start_err("processor")(e.to_string()))?;
        let mut sinks = Vec::new();
        // One registry for the three sinks: one /metrics family each.
        let sink_metrics = crate::sink::metrics::Metrics::new(
            &["geofence", "clock", "email"],
            tenants.iter().map(|t| t.name.as_str()),
        );
        for kind in [SinkKind::Geofence, SinkKind::Clock, SinkKind::Email] {
            let mut c = SinkConfig::new(
                kind,
                &brokers,
                catalogue.clone(),
                opts.state_dir.join("sinks"),
                tenants.clone(),
                registry.clone(),
            );
            c.sync = false;
            c.metrics = Some(sink_metrics.clone());
            if let Some(d) = opts.retention_days {
                // The ledger dates what it keeps by the wall clock (results'
                // `executed_at`): a simulated day is 86 400 / speed seconds.
                let sim_day = Duration::from_secs_f64(86_400.0 / opts.speed.max(1.0));
                c.retention =
                    crate::sink::ledger::Retention { keep: sim_day * d, extra_margin: sim_day, ..Default::default() };
            }
            sinks.push(Sink::start(c).map_err(|e| start_err("sink")(e.to_string()))?);
        }
        let report = crate::report::serve::start(
            crate::report::serve::Options {
                brokers: brokers.clone(),
                catalogue: catalogue.clone(),
                registry: registry.clone(),
                listen: opts.report_listen.clone(),
                state_dir: opts.state_dir.join("report"),
            },
            tenants.clone(),
            runtime.handle().clone(),
        )
        .map_err(|e| start_err("report server")(e.to_string()))?;
        // One /metrics for the whole process: every component's registry,
        // merged (the sinks share one).
        let (pm, sm): (Arc<processor::metrics::Metrics>, Vec<_>) =
            (processor.metrics(), sinks.iter().map(|s| s.metrics.clone()).take(1).collect());
        let cm: Vec<_> = connectors.iter().map(|c| c.metrics.clone()).collect();
        let rm = report.metrics_source();
        let metrics_addr = crate::telemetry::serve_metrics(
            opts.metrics_listen,
            move || {
                let report_registry = rm();
                let mut all = vec![pm.registry(), &report_registry];
                all.extend(sm.iter().map(|m| m.registry()));
                all.extend(cm.iter().map(|m| m.registry()));
                crate::telemetry::metrics::render_all(&all)
            },
            crate::telemetry::healthy,
        )
        .map_err(|e| start_err("metrics")(e.to_string()))?;

        let progress = Arc::new(std::sync::Mutex::new(Progress { fixes_total: fixes.len(), ..Progress::default() }));
        let driver = {
            let (st, az, progress, speed, clock) =
                (st.clone(), az.clone(), progress.clone(), opts.speed, clock.clone());
            runtime.spawn(async move {
                let began = Instant::now();
                let mut clocks = clocks.into_iter().peekable();
                let mut dispatch = dispatch.into_iter().peekable();
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    let now = start.plus_millis((began.elapsed().as_secs_f64() * speed * 1000.0) as i64);
                    while let Some((_, e)) = dispatch.next_if(|(at, _)| *at <= now) {
                        if let Err(e) = st.apply(e, None) {
                            tracing::warn!(error = %e, "demo: the next day's work was refused by the simulator");
                        }
                    }
                    while let Some(c) = clocks.next_if(|c| c.time <= now) {
                        let _ = st.apply(Event::Clock(c), None);
                    }
                    let released = az.advance(now.min(end));
                    clock.set(now.millis());
                    let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                    p.sim_time = now.min(end).to_rfc3339();
                    p.day = (now.min(end).millis() - day_start.millis()).div_euclid(DAY_MS).max(0) as u32;
                    p.fixes_released += released;
                    p.day_over = now >= end;
                }
            })
        };
        let endpoints = Endpoints {
            embedded_broker: mock.is_some(),
            brokers,
            report: format!("{}/report/{TENANT}", report.url()),
            report_token: REPORT_TOKEN.into(),
            report_link: {
                let day = Ts::from_secs(today).to_rfc3339()[..10].to_string();
                let expires = chrono::Utc::now().timestamp() + crate::config::link::LINK_TTL_S;
                let token = crate::config::secret::Secret::new(REPORT_TOKEN);
                let q = crate::config::link::query(&token, TENANT, &crate::config::link::report_scope(&day), expires);
                format!("{}/report/{TENANT}?day={day}&{q}", report.url())
            },
            map: {
                let expires = chrono::Utc::now().timestamp() + crate::config::link::LINK_TTL_S;
                let token = crate::config::secret::Secret::new(REPORT_TOKEN);
                let q = crate::config::link::query(&token, TENANT, crate::config::link::MAP_SCOPE, expires);
                format!("{}/map/{TENANT}?{q}", report.url())
            },
            metrics: format!("http://{metrics_addr}/metrics"),
            mailbox: format!("{}/messages", smtp.http.url()),
            servicetrade: st_run.url(),
            azuga: az_run.url(),
            tenant: TENANT.into(),
        };
        Ok(Demo {
            endpoints,
            _mock: mock,
            st,
            az,
            smtp,
            servers: vec![st_run, az_run],
            connectors,
            processor: Some(processor),
            sinks,
            report: Some(report),
            driver,
            progress,
            clock,
            day_start,
        })
    }

    /// Noon UTC of the first day: technicians leave 0–30 minutes after.
    pub fn day_start(&self) -> Ts {
        self.day_start
    }

    /// The simulated time the driver has reached.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// What the outside world has seen so far.
    pub fn progress(&self) -> Progress {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let posted: Vec<_> = self.st.snapshot().clocks.into_iter().filter(|c| c.lat.is_some()).collect();
        p.clock_changes = posted.len();
        p.arrivals_clocked = posted
            .iter()
            .filter(|c| {
                c.event.activity == crate::model::Activity::Onsite && c.event.action == crate::model::ClockAction::In
            })
            .count();
        p.geofences = self.az.snapshot().geomarks.len();
        p.emails = self.smtp.mailbox.mails().len();
        p
    }

    /// Stops everything, in pipeline order, committing what is in hand.
    pub fn stop(mut self, runtime: &tokio::runtime::Runtime) {
        self.driver.abort();
        for c in self.connectors.drain(..) {
            runtime.block_on(c.stop());
        }
        if let Some(p) = self.processor.take() {
            if let Err(e) = p.stop() {
                tracing::warn!(error = %e, "processor stop");
            }
        }
        for s in self.sinks.drain(..) {
            if let Err(e) = s.stop() {
                tracing::warn!(error = %e, "sink stop");
            }
        }
        if let Some(r) = self.report.take() {
            runtime.block_on(r.stop());
        }
        for s in self.servers.drain(..) {
            runtime.block_on(s.stop());
        }
        runtime.block_on(self.smtp.stop());
    }
}
