//! A real Kafka-protocol broker (nisshi) on 127.0.0.1 for one test.
//!
//! Each `Broker` is its own process on a free port, stopped (SIGKILL) when
//! dropped. The binary is `$GEOCLOCK_NISSHI`, else `nisshi` on `PATH`, else
//! the cache `scripts/install-nisshi.sh` fills (`~/.cache/geoclock/tools/bin`).
//! A test that needs a broker fails with that advice when none is installed:
//! it never passes without one.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    pub port: u16,
    bootstrap: String,
    dir: PathBuf,
    storage: Storage,
}

#[derive(Clone, Debug)]
pub enum Storage {
    Memory,
    /// Keeps its data across restarts (sqlite file in the broker's dir).
    Sqlite,
}

pub fn nisshi_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GEOCLOCK_NISSHI") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nisshi");
            if p.is_file() {
                return p;
            }
        }
    }
    let cache = std::env::var_os("GEOCLOCK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/geoclock"));
    let p = cache.join("tools/bin/nisshi");
    assert!(
        p.is_file(),
        "no nisshi broker found ({} missing): run scripts/install-nisshi.sh (or scripts/test) first",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Broker {
    pub fn start(storage: Storage) -> Broker {
        let dir = std::env::temp_dir().join(format!("geoclock-broker-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        Broker::start_in(dir, free_port(), storage)
    }

    fn start_in(dir: PathBuf, port: u16, storage: Storage) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let engine = match storage {
            Storage::Memory => "memory://nisshi/".to_string(),
            Storage::Sqlite => "sqlite://nisshi.db".to_string(),
        };
        let log = std::fs::File::create(dir.join("broker.log")).expect("log file");
        let child = Command::new(nisshi_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &engine])
            .args(["--group-initial-rebalance-delay", "0s"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nisshi starts");
        let broker = Broker { child, port, bootstrap: format!("127.0.0.1:{port}"), dir, storage };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nisshi did not listen on {} (see {}/broker.log)",
                self.port,
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    pub fn brokers(&self) -> &str {
        &self.bootstrap
    }

    /// Kills the broker and starts it again on the same port and data.
    pub fn restart(mut self) -> Broker {
        let (dir, port, storage) = (self.dir.clone(), self.port, self.storage.clone());
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
        Broker::start_in(dir, port, storage)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
