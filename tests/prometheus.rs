//! The dashboards and alerts against a real Prometheus server (Debian's
//! `prometheus`, installed by scripts/install-nisshi.sh) scraping a running
//! `geoclock demo`: every panel query of every dashboard returns data, no
//! alert fires on the healthy day, and a vendor taken down mid-run fires the
//! alert that says so.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn query(prom: &str, expr: &str) -> Value {
    let url = format!("{prom}/api/v1/query");
    let body = ureq::get(&url).query("query", expr).call().expect("query").body_mut().read_to_string().expect("body");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].clone()
}

/// Grafana's variables as the test evaluates them.
fn concrete(expr: &str) -> String {
    expr.replace("$tenant", ".*")
        .replace("$__rate_interval", "30s")
        .replace("$__range", "10m")
        .replace("$__interval", "5s")
}

fn panel_queries(file: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("{} / {}", d["title"], p["title"]), concrete(e)));
            }
        }
    }
    out
}

fn alert_rules(file: &Path) -> Vec<(String, String)> {
    let v: Value = geoclock::config::yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for g in v["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            if let (Some(a), Some(e)) = (r["alert"].as_str(), r["expr"].as_str()) {
                out.push((a.to_string(), e.to_string()));
            }
        }
    }
    out
}

#[test]
fn dashboards_and_alerts_work_on_a_real_prometheus_scraping_the_demo() {
    let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus is installed (scripts/install-nisshi.sh installs Debian's package)");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("geoclock-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let metrics_port = free_port();
    let demo = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["demo", "--technicians", "6", "--speed", "600", "--json", "--report", "127.0.0.1:0"])
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        .arg("--state-dir")
        .arg(dir.join("demo"))
        .env("GEOCLOCK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("geoclock demo starts");
    let mut demo = Kill(demo);
    let (tx, rx) = mpsc::channel::<String>();
    let out = demo.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let endpoints: Value = serde_json::from_str(&rx.recv_timeout(Duration::from_secs(180)).unwrap()).unwrap();

    // Prometheus with the deployment's own rules, scraping the demo every second.
    std::fs::copy(root.join("deploy/prometheus/alerts.yml"), dir.join("alerts.yml")).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: processor\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n        labels: {{service: demo}}\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let prom = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    let _prom = Kill(prom);
    let p = format!("http://127.0.0.1:{prom_port}");

    // A healthy day: wait until arrivals are clocked and effects done, and
    // Prometheus has a few minutes of it.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "the demo clocked no arrival");
        let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) else { continue };
        let progress: Value = serde_json::from_str(&line).unwrap();
        if progress["arrivals_clocked"].as_u64().unwrap_or(0) >= 3 && progress["emails"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
    }
    let up = query(&p, "up{job=\"processor\"}");
    assert_eq!(up[0]["value"][1], "1", "Prometheus scrapes the demo: {up}");
    std::thread::sleep(Duration::from_secs(20));

    let mut empty = Vec::new();
    let dashboards = ["deploy/grafana/dashboards/geoclock.json", "deploy/grafana/dashboards/geoclock-business.json"];
    let mut n = 0;
    for d in dashboards {
        for (panel, expr) in panel_queries(&root.join(d)) {
            n += 1;
            if query(&p, &expr).as_array().is_none_or(|r| r.is_empty()) {
                empty.push(format!("{panel}: {expr}"));
            }
        }
    }
    eprintln!("prometheus: {n} panel queries evaluated");
    assert!(empty.is_empty(), "panels without data on a running pipeline:\n{}", empty.join("\n"));

    let rules = alert_rules(&root.join("deploy/prometheus/alerts.yml"));
    let firing: Vec<String> = rules
        .iter()
        .filter(|(_, e)| query(&p, e).as_array().is_some_and(|r| !r.is_empty()))
        .map(|(a, _)| a.clone())
        .collect();
    eprintln!("prometheus: {} alert expressions evaluated on the healthy day", rules.len());
    assert!(firing.is_empty(), "alerts on a healthy day: {firing:?}");

    // A vendor down: ServiceTrade answers every call 503 — the connector's
    // periodic reconciliation stops succeeding and its API error share soars.
    let st = endpoints["servicetrade"].as_str().unwrap();
    ureq::post(&format!("{st}/admin/chaos"))
        .header("Content-Type", "application/json")
        .send(r#"{"outage_s": 600, "status": 503}"#)
        .expect("chaos");
    let expr = rules.iter().find(|(a, _)| a == "GeoclockConnectorJobFailing").map(|(_, e)| e.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = query(&p, &expr);
        if let Some(hit) = r.as_array().and_then(|r| r.iter().find(|s| s["metric"]["connector"] == "servicetrade")) {
            eprintln!("prometheus: GeoclockConnectorJobFailing fires during the outage: {}", hit["metric"]);
            break;
        }
        assert!(Instant::now() < deadline, "the job alert never fired for the ServiceTrade outage");
        std::thread::sleep(Duration::from_secs(2));
    }
    let errors = rules.iter().find(|(a, _)| a == "GeoclockConnectorApiErrors").map(|(_, e)| e.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&p, &errors).as_array().is_none_or(|r| r.is_empty()) {
        assert!(Instant::now() < deadline, "the API error alert never fired for the ServiceTrade outage");
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = Command::new("kill").args(["-INT", &demo.0.id().to_string()]).status();
    let _ = demo.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
