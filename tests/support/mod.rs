pub mod broker;
#[allow(dead_code)]
pub mod kafka;

use std::path::{Path, PathBuf};

/// Every scenario file in `tests/scenarios/`, sorted.
#[allow(dead_code)]
pub fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}
