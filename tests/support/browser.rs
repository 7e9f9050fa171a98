//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/install-nisshi.sh): a
//! chromedriver process on a free port and a fantoccini session on it,
//! behind a blocking API (the session has its own runtime).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

fn on_path(names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .find_map(|name| std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file()))
}

pub fn chromium() -> PathBuf {
    on_path(&["chromium", "chromium-browser", "google-chrome"])
        .expect("chromium is installed (scripts/install-nisshi.sh installs it)")
}

pub fn chromedriver() -> PathBuf {
    on_path(&["chromedriver"]).expect("chromedriver is installed (Debian chromium-driver; scripts/install-nisshi.sh)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct Browser {
    client: Client,
    rt: tokio::runtime::Runtime,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// A fresh headless Chromium of `width` × `height` CSS pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (client, driver, profile) = rt.block_on(Browser::session(width, height));
        Browser { client, rt, driver, profile }
    }

    async fn session(width: u32, height: u32) -> (Client, Child, PathBuf) {
        let port = free_port();
        let mut driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{url}/status")).call().is_err() {
            if Instant::now() > deadline {
                let _ = driver.kill();
                panic!("chromedriver did not answer on {url}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("geoclock-chromium-{}-{port}", std::process::id()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--hide-scrollbars", "--mute-audio", "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session");
        (client, driver, profile)
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.client.goto(url)).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` as usual) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.rt.block_on(self.client.execute(script, vec![])).unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Runs an asynchronous `script` (its last argument is the callback).
    pub fn eval_async(&self, script: &str) -> Value {
        self.rt.block_on(self.client.execute_async(script, vec![])).unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Polls `script` until it returns something other than null/false.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            if Instant::now() > deadline {
                let dom = self.eval("return document.body.outerHTML.slice(0, 4000);");
                panic!("timed out waiting for {what}; page: {dom}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        self.rt.block_on(self.client.screenshot()).expect("screenshot")
    }

    /// Ends the session and chromedriver.
    pub fn close(mut self) {
        let _ = self.rt.block_on(self.client.clone().close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    /// Process ids of the browser's processes (chromedriver and its
    /// descendants).
    pub fn pids(&self) -> Vec<u32> {
        let mut parent_of: Vec<(u32, u32)> = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
        let mut out = vec![self.driver.id()];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(parent_of.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
            i += 1;
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// CPU seconds (user + system) used so far by `pids`.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
        })
        .sum()
}
