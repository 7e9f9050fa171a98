//! The webhook inbox under hostile callers.
//!
//! - A wrong secret takes the same time whatever its length and however
//!   much of the secret it gets right: an equivalence test over many
//!   interleaved timings of the inbox's own check
//!   ([`webhook::verify`]), calibrated against a deliberately leaky
//!   comparison that the same harness must catch.
//! - 500 slow connections (headers never finished), and then more than
//!   the connection cap, do not stop a well-behaved webhook from being
//!   accepted within 1 s: the real connector inbox, on a real broker.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoclock::config::secret::Secret;
use geoclock::config::tenants::parse;
use geoclock::config::webhook::{self, Policy, Presented, Verdict, WebhookAuth};
use geoclock::connect::{start, Options, Vendor};
use geoclock::kafka::admin::ensure_topics;
use geoclock::kafka::registry::FileRegistry;
use geoclock::kafka::topics::Catalogue;
use geoclock::sim::azuga::{self, AzugaSim};
use geoclock::sim::fleet::{generate, FleetConfig};
use support::broker::{Broker, Storage};

/// Times `f` on the inputs of two classes in pairs of batches, one of
/// each, back to back in random order (so drift and load hit both alike):
/// per pair, the nanoseconds per call of A minus those of B, and the mean
/// time per call.
fn paired(a: &[String], b: &[String], f: &dyn Fn(&str) -> bool, pairs: usize) -> (Vec<f64>, f64) {
    const BATCH: usize = 32;
    let mut diffs = Vec::with_capacity(pairs);
    let mut total = 0.0;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..pairs {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let a_first = state & 1 == 0;
        let mut t = [0.0f64; 2];
        for pick_a in [a_first, !a_first] {
            let inputs = if pick_a { a } else { b };
            let started = Instant::now();
            let mut any = false;
            for k in 0..BATCH {
                any ^= std::hint::black_box(f(std::hint::black_box(&inputs[(i + k) % inputs.len()])));
            }
            std::hint::black_box(any);
            t[usize::from(!pick_a)] = started.elapsed().as_nanos() as f64 / BATCH as f64;
        }
        total += t[0] + t[1];
        diffs.push(t[0] - t[1]);
    }
    (diffs, total / (2 * pairs) as f64)
}

/// `(mean, standard error)` of the middle 80% of `xs` (a preempted batch
/// makes one difference hugely positive or negative: noise, not signal).
fn trimmed_mean(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let cut = xs.len() / 10;
    let kept = &xs[cut..xs.len() - cut];
    let n = kept.len() as f64;
    let mean = kept.iter().sum::<f64>() / n;
    let var = kept.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[test]
fn a_wrong_secret_of_any_length_takes_the_same_time() {
    let secret: String = (0..40).map(|i| (b'a' + (i * 7 % 26) as u8) as char).collect();
    let policy = Policy {
        tenant: "acme".into(),
        secret: Secret::new(secret.clone()),
        configured: Some(WebhookAuth::Key),
        allowed: webhook::SERVICETRADE,
    };
    let check = |candidate: &str| {
        let p = Presented { key: Some(candidate), ..Default::default() };
        webhook::verify(&policy, &p, None) == Verdict::Accepted
    };
    // What the secret could leak through: how much of a guess matches it
    // (near misses, sharing all but the last byte, against guesses wrong
    // from the first byte), and whether a guess has its length (guesses of
    // its length against guesses a byte shorter or longer). Within a class
    // the guesses' own lengths average the same, since hashing a guess
    // takes time with its length (which the guesser knows anyway).
    let n = secret.len();
    let near: Vec<String> =
        (0..50).map(|i| format!("{}{}", &secret[..n - 1], (b'0' + (i % 10) as u8) as char)).collect();
    let far: Vec<String> = (0..50).map(|i| format!("{}{}", (b'0' + (i % 10) as u8) as char, &secret[1..])).collect();
    let same_len: Vec<String> =
        (0..50).map(|i| format!("{}{}", "y".repeat(n - 1), (b'0' + (i % 10) as u8) as char)).collect();
    let other_len: Vec<String> = (0..50).map(|i| "y".repeat(if i % 2 == 0 { n - 1 } else { n + 1 })).collect();
    assert!(near.iter().chain(&far).chain(&same_len).chain(&other_len).all(|c| !check(c)));

    // The harness first proves it can see a leak: an early-exit comparison
    // of a 4 KiB secret, wrong at the first byte or at the last.
    let long_secret = "k".repeat(4096);
    let leaky = |c: &str| c.as_bytes() == long_secret.as_bytes();
    let first: Vec<String> = (0..8).map(|i| format!("{}{}", (b'0' + i) as char, &long_secret[1..])).collect();
    let last: Vec<String> = (0..8).map(|i| format!("{}{}", &long_secret[..4095], (b'0' + i) as char)).collect();
    let (diff, se, mean) = {
        let (d, mean) = paired(&last, &first, &leaky, 2_000);
        let (diff, se) = trimmed_mean(d);
        (diff, se, mean)
    };
    eprintln!("leaky control: {diff:.1} ns ± {se:.2} (mean {mean:.1} ns)");
    assert!(diff > 10.0 * se && diff > 20.0, "the harness must detect the leaky comparison");

    // Now the inbox's check: the 99% confidence interval of the difference
    // must lie within ±3% of the time a check takes. Repeated once on a
    // failure, for a machine busy with other work.
    for (what, a, b) in [("near vs far misses", &near, &far), ("its length vs ±1 byte", &same_len, &other_len)] {
        let mut last_result = String::new();
        let mut equal = false;
        for attempt in 0..3 {
            let (d, mean) = paired(a, b, &check, 5_000);
            let (diff, se) = trimmed_mean(d);
            last_result = format!("{diff:.2} ns ± {se:.3} (99% CI ±{:.2}) of {mean:.1} ns per check", 2.58 * se);
            eprintln!("{what}, attempt {attempt}: {last_result}");
            if diff.abs() + 2.58 * se < 0.03 * mean {
                equal = true;
                break;
            }
        }
        assert!(equal, "{what} shows in the time: {last_result}");
    }
}

fn inbox_tenants(az_url: &str) -> Vec<geoclock::config::tenants::Tenant> {
    let text = format!(
        r#"
[[tenants]]
name = "acme"
[tenants.azuga]
base_url = "{az_url}"
api_key = {{ value = "azuga-key" }}
webhook_secret = {{ value = "az-hook-secret" }}
webhook_auth = "basic"
rate_limit_ms = 100
max_ping_age_s = 31536000
"#
    );
    parse(&text, "hardening.toml").expect("tenants")
}

/// POSTs one GPS webhook with the right credentials: its status and how
/// long the answer took.
fn good_webhook(addr: std::net::SocketAddr, n: u32) -> (u16, Duration) {
    let now = chrono::Utc::now().timestamp_millis();
    let body = format!(
        r#"[{{"eventType":"GPS_MESSAGE","vehicleId":"veh-000","latitude":35.2,"longitude":-80.8,"speed":{n},"locationTime":{now}}}]"#
    );
    let auth = webhook::basic("acme", "az-hook-secret");
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST /webhook/acme HTTP/1.1\r\nHost: inbox\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, started.elapsed())
}

/// Opens `n` connections that start a request and never finish its headers.
fn slow_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            let _ = s.write_all(b"POST /webhook/acme HTTP/1.1\r\nHost: inbox\r\nX-Slow: ");
            Some(s)
        })
        .collect()
}

#[test]
fn slow_connections_do_not_lock_out_a_good_webhook() {
    let broker = Broker::start(Storage::Memory);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let catalogue = Catalogue { prefix: "slow".into(), partitions: 1, replication: 1 };
    rt.block_on(ensure_topics(&broker.bootstrap(), &catalogue, Duration::from_secs(20))).expect("topics");
    let world = generate(&FleetConfig { technicians: 2, ..FleetConfig::default() });
    let (_az, az_run) = rt
        .block_on(AzugaSim::start(
            azuga::Config { rate_limit_ms: 50, ..azuga::Config::default() },
            &world,
            "127.0.0.1:0",
        ))
        .unwrap();
    let dir: PathBuf = std::env::temp_dir().join(format!("geoclock-slow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = Options {
        brokers: broker.bootstrap(),
        catalogue: catalogue.clone(),
        registry: Arc::new(FileRegistry::in_memory()),
        listen: "127.0.0.1:0".into(),
        public_url: None,
        register_webhooks: false,
        policy: Default::default(),
        state_dir: dir.clone(),
    };
    let c = rt.block_on(start(Vendor::Azuga, opts, &inbox_tenants(&az_run.url()))).expect("connector");
    let addr = c.addr;
    assert_eq!(good_webhook(addr, 1).0, 200, "a webhook is accepted at all");

    // 500 slow connections (the issue's number), then well past the
    // server's connection cap (1024): the oldest idle ones make room.
    for (count, label) in [(500, "500 slow connections"), (1100, "1600 slow connections, past the cap")] {
        let _held = slow_connections(addr, count);
        std::thread::sleep(Duration::from_millis(300));
        for n in 0..5 {
            let (status, took) = good_webhook(addr, n);
            assert_eq!(status, 200, "{label}: webhook #{n}");
            assert!(took < Duration::from_secs(1), "{label}: webhook #{n} took {took:?}");
            eprintln!("{label}: webhook #{n} accepted in {took:?}");
        }
        std::mem::forget(_held);
    }
    rt.block_on(async { tokio::join!(c.stop(), az_run.stop()) });
    let _ = std::fs::remove_dir_all(&dir);
}
