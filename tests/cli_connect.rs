//! `geoclock sim …` and `geoclock connect …` from the command line.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn sim_servicetrade_serves_a_generated_day() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["sim", "servicetrade", "--listen", &format!("127.0.0.1:{port}"), "--generate", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = ureq::post(&format!("http://127.0.0.1:{port}/api/auth"))
            .header("Content-Type", "application/json")
            .send(r#"{"username":"geoclock-admin","password":"secret"}"#);
        if let Ok(mut r) = r {
            break r.body_mut().read_to_string().unwrap();
        }
        assert!(Instant::now() < deadline, "simulator did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("authToken"), "{body}");
}

#[test]
fn connect_refuses_a_tenants_file_with_a_missing_secret_and_names_it() {
    let dir = std::env::temp_dir().join(format!("geoclock-cli-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tenants.toml");
    std::fs::write(
        &file,
        "[[tenants]]\nname = \"acme\"\n[tenants.azuga]\nbase_url = \"http://127.0.0.1:1\"\napi_key = { env = \"GEOCLOCK_TEST_MISSING_KEY\" }\nwebhook_secret = { value = \"do-not-print-me\" }\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geoclock"))
        .args(["connect", "azuga", "--tenants"])
        .arg(&file)
        .env_remove("GEOCLOCK_TEST_MISSING_KEY")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(err.contains("GEOCLOCK_TEST_MISSING_KEY") && err.contains("azuga.api_key"), "{err}");
    assert!(!err.contains("do-not-print-me"));
    let _ = std::fs::remove_dir_all(&dir);
}
