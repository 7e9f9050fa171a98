//! Schema registries: where writer schemas live, by id.
//!
//! Every Avro record on a geoclock topic names its writer schema by a 32-bit
//! id (see [`super::codec`] for the framing). A [`SchemaRegistry`] assigns
//! those ids ([`SchemaRegistry::register`]) and hands the schema back for an
//! id ([`SchemaRegistry::schema`]). Two implementations:
//!
//! - [`FileRegistry`]: built in, for the embedded default and tests. A JSON
//!   file `{"schemas": {"<id>": {"subject": "...", "schema": "..."}}}`.
//! - [`ConfluentRegistry`]: a client for Confluent Schema Registry (and the
//!   registries that speak its REST API), over blocking HTTP.
//!
//! Invariants:
//! - Registering the same schema text under the same subject again returns
//!   the same id (idempotent), in either implementation.
//! - [`FileRegistry`] ids are a pure function of (subject, schema text): the
//!   first 31 bits of a SHA-256 over both, moved to the next free id in the
//!   astronomically rare case of a collision. So ids are stable across
//!   restarts, and two processes with separate files agree on them.
//! - The schema text is the JSON apache-avro writes for the parsed
//!   [`Schema`] (docs, defaults and logical types included), so the same
//!   schema always yields the same text whatever its source formatting.
//! - Errors never carry credentials: a registry URL of the form
//!   `https://user:pass@host` is kept and shown as `https://host`, and the
//!   credentials travel only in an `Authorization` header.
//! - Schemas are immutable once registered, so both implementations cache
//!   them for the life of the process; ids that are not found are not cached
//!   (a producer may register the schema a moment later).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::client::urlencode as percent_encode;

/// Content type of the Confluent Schema Registry REST API.
pub const CONFLUENT_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where writer schemas are registered and looked up by id.
pub trait SchemaRegistry: Send + Sync {
    /// Registers `schema` under `subject` (or finds it registered) and
    /// returns its id.
    fn register(&self, subject: &str, schema: &Schema) -> Result<u32, RegistryError>;

    /// The schema with this id; [`RegistryError::NotFound`] when there is
    /// none.
    fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError>;
}

/// Why a registry call failed. URLs in these errors never contain
/// credentials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    #[error("schema id {0} is not registered")]
    NotFound(u32),
    #[error("schema registry {url} answered HTTP {status}{}: {message}", code.map(|c| format!(" (error code {c})")).unwrap_or_default())]
    Http { url: String, status: u16, code: Option<i64>, message: String },
    #[error("schema registry {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("schema registry {url} sent an unexpected response: {message}")]
    Protocol { url: String, message: String },
    #[error("{context}: not a usable Avro schema: {message}")]
    InvalidSchema { context: String, message: String },
    #[error("invalid schema registry URL {url}: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("schema registry file {path}: {message}")]
    File { path: String, message: String },
}

/// The text a schema is registered as: apache-avro's JSON for it.
pub fn schema_text(schema: &Schema) -> Result<String, RegistryError> {
    serde_json::to_string(schema)
        .map_err(|e| RegistryError::InvalidSchema { context: "schema to register".into(), message: e.to_string() })
}

fn parse_schema(context: impl Into<String>, text: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(text)
        .map_err(|e| RegistryError::InvalidSchema { context: context.into(), message: e.to_string() })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated
    // (every update is a single insert), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// FileRegistry

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    subject: String,
    schema: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    schemas: BTreeMap<u32, Entry>,
}

#[derive(Default)]
struct FileState {
    entries: BTreeMap<u32, Entry>,
    parsed: HashMap<u32, Arc<Schema>>,
    by_key: HashMap<(String, String), u32>,
}

impl FileState {
    /// Adds entries from `file` not known yet. An id known with a different
    /// entry keeps the in-memory one (first writer wins).
    fn merge(&mut self, file: FileFormat, path: &str) -> Result<(), RegistryError> {
        for (id, entry) in file.schemas {
            if self.entries.contains_key(&id) {
                continue;
            }
            let schema = parse_schema(format!("schema registry file {path}, id {id}"), &entry.schema)?;
            self.by_key.insert((entry.subject.clone(), entry.schema.clone()), id);
            self.parsed.insert(id, Arc::new(schema));
            self.entries.insert(id, entry);
        }
        Ok(())
    }
}

/// The built-in registry, kept in a JSON file (or only in memory).
///
/// Safe to share between threads (one mutex). Several processes may read
/// the same file; when two register new schemas in the same file at the
/// same moment, one entry can be lost from the file (each process still
/// knows its own, and ids, being derived from the content, never conflict);
/// re-registering restores it. Use [`ConfluentRegistry`] for a fleet of
/// processes.
pub struct FileRegistry {
    path: Option<PathBuf>,
    state: Mutex<FileState>,
}

impl fmt::Debug for FileRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRegistry").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FileRegistry {
    /// Opens (or, on first registration, creates) the registry file.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let path = path.into();
        let mut state = FileState::default();
        if let Some(file) = read_file(&path)? {
            state.merge(file, &path.display().to_string())?;
        }
        Ok(FileRegistry { path: Some(path), state: Mutex::new(state) })
    }

    /// A registry that lives only as long as this value (same ids as a file
    /// registry would assign).
    pub fn in_memory() -> Self {
        FileRegistry { path: None, state: Mutex::new(FileState::default()) }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Picks up entries another process added to the file.
    fn reload(&self, state: &mut FileState) -> Result<(), RegistryError> {
        if let Some(path) = &self.path {
            if let Some(file) = read_file(path)? {
                state.merge(file, &path.display().to_string())?;
            }
        }
        Ok(())
    }

    fn persist(&self, state: &FileState) -> Result<(), RegistryError> {
        let Some(path) = &self.path else { return Ok(()) };
        let file_err = |message: String| RegistryError::File { path: path.display().to_string(), message };
        let body = serde_json::to_vec_pretty(&FileFormat { schemas: state.entries.clone() })
            .map_err(|e| file_err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(format!("creating {}: {e}", dir.display())))?;
        }
        // Write a sibling and rename over: readers never see half a file.
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            file_err(e.to_string())
        })
    }
}

fn read_file(path: &Path) -> Result<Option<FileFormat>, RegistryError> {
    let file_err = |message: String| RegistryError::File { path: path.display().to_string(), message };
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| file_err(format!("not a registry file: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_err(e.to_string())),
    }
}

/// The id a [`FileRegistry`] gives (subject, text) when it is free: 31 bits
/// of SHA-256, never 0.
pub fn derived_id(subject: &str, text: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"geoclock.schema-id.v1");
    for part in [subject, text] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    let id = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff;
    id.max(1)
}

impl SchemaRegistry for FileRegistry {
    fn register(&self, subject: &str, schema: &Schema) -> Result<u32, RegistryError> {
        let text = schema_text(schema)?;
        let key = (subject.to_string(), text);
        let mut state = lock(&self.state);
        if let Some(id) = state.by_key.get(&key) {
            return Ok(*id);
        }
        self.reload(&mut state)?;
        if let Some(id) = state.by_key.get(&key) {
            return Ok(*id);
        }
        let mut id = derived_id(&key.0, &key.1);
        while state.entries.contains_key(&id) {
            id = if id >= 0x7fff_ffff { 1 } else { id + 1 };
        }
        // Store the schema as parsed back from its text, so that what
        // `schema(id)` returns now is what it returns after a restart.
        let parsed = parse_schema(format!("schema for subject {subject}"), &key.1)?;
        state.entries.insert(id, Entry { subject: key.0.clone(), schema: key.1.clone() });
        if let Err(e) = self.persist(&state) {
            state.entries.remove(&id);
            return Err(e);
        }
        state.parsed.insert(id, Arc::new(parsed));
        state.by_key.insert(key, id);
        Ok(id)
    }

    fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        let mut state = lock(&self.state);
        if let Some(s) = state.parsed.get(&id) {
            return Ok(s.clone());
        }
        self.reload(&mut state)?;
        state.parsed.get(&id).cloned().ok_or(RegistryError::NotFound(id))
    }
}

// ---------------------------------------------------------------------------
// ConfluentRegistry

/// A Confluent Schema Registry client (blocking HTTP).
///
/// `POST {url}/subjects/{subject}/versions` with `{"schema": "..."}` answers
/// `{"id": N}`; `GET {url}/schemas/ids/{id}` answers `{"schema": "..."}`.
/// Both are cached for the life of the client. Credentials may be given in
/// the URL (`https://user:pass@host:8081`) or with
/// [`ConfluentRegistry::with_basic_auth`]; they are sent as HTTP Basic auth
/// and never appear in errors or `Debug` output.
pub struct ConfluentRegistry {
    /// Base URL without credentials or trailing slash.
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    ids: Mutex<HashMap<(String, String), u32>>,
    schemas: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl fmt::Debug for ConfluentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfluentRegistry")
            .field("url", &self.base)
            .field("auth", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Request timeout unless [`ConfluentRegistry::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

impl ConfluentRegistry {
    /// A client for the registry at `url` (`http://` or `https://`,
    /// optionally with `user:pass@`; percent-escapes in them are decoded).
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let parsed = split_url(url)?;
        let authorization = parsed.userinfo.map(|(u, p)| basic_auth(&u, &p));
        Ok(ConfluentRegistry {
            base: parsed.base,
            authorization,
            agent: agent(DEFAULT_TIMEOUT),
            ids: Mutex::new(HashMap::new()),
            schemas: RwLock::new(HashMap::new()),
        })
    }

    /// Uses HTTP Basic auth (Confluent Cloud: API key and secret).
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.authorization = Some(basic_auth(user, password));
        self
    }

    /// Bounds each request, from connecting to reading the whole answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = agent(timeout);
        self
    }

    /// The registry URL, without credentials.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn url_err(&self, message: String) -> RegistryError {
        RegistryError::Unreachable { url: self.base.clone(), message }
    }

    /// Sends a request; returns the status and the body.
    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<(u16, String), RegistryError> {
        let url = format!("{}{}", self.base, path);
        let result = match body {
            Some(body) => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Content-Type", CONFLUENT_CONTENT_TYPE)
                    .header("Accept", CONFLUENT_CONTENT_TYPE);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.send(body)
            }
            None => {
                let mut req = self.agent.get(&url).header("Accept", CONFLUENT_CONTENT_TYPE);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut resp = result.map_err(|e| self.url_err(format!("{method} {path}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.url_err(format!("{method} {path}: reading the answer: {e}")))?;
        Ok((status, text))
    }

    fn http_error(&self, status: u16, body: &str) -> RegistryError {
        #[derive(Deserialize)]
        struct ErrorBody {
            error_code: Option<i64>,
            message: Option<String>,
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(body) {
            Ok(e) => (e.error_code, e.message.unwrap_or_default()),
            Err(_) => (None, body.chars().take(200).collect()),
        };
        RegistryError::Http { url: self.base.clone(), status, code, message }
    }

    fn protocol(&self, message: String) -> RegistryError {
        RegistryError::Protocol { url: self.base.clone(), message }
    }
}

impl SchemaRegistry for ConfluentRegistry {
    fn register(&self, subject: &str, schema: &Schema) -> Result<u32, RegistryError> {
        let text = schema_text(schema)?;
        let key = (subject.to_string(), text);
        if let Some(id) = lock(&self.ids).get(&key) {
            return Ok(*id);
        }
        let body = serde_json::json!({ "schema": key.1 }).to_string();
        let path = format!("/subjects/{}/versions", percent_encode(subject));
        let (status, answer) = self.call("POST", &path, Some(body))?;
        if !(200..300).contains(&status) {
            return Err(self.http_error(status, &answer));
        }
        #[derive(Deserialize)]
        struct IdBody {
            id: u32,
        }
        let id = serde_json::from_str::<IdBody>(&answer)
            .map_err(|e| self.protocol(format!("POST {path}: expected {{\"id\": N}}: {e}")))?
            .id;
        lock(&self.ids).insert(key, id);
        self.schemas.write().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert_with(|| Arc::new(schema.clone()));
        Ok(id)
    }

    fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.schemas.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(s.clone());
        }
        let path = format!("/schemas/ids/{id}");
        let (status, answer) = self.call("GET", &path, None)?;
        if status == 404 {
            return Err(RegistryError::NotFound(id));
        }
        if !(200..300).contains(&status) {
            return Err(self.http_error(status, &answer));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct SchemaBody {
            schema: String,
            schema_type: Option<String>,
        }
        let body = serde_json::from_str::<SchemaBody>(&answer)
            .map_err(|e| self.protocol(format!("GET {path}: expected {{\"schema\": \"...\"}}: {e}")))?;
        if let Some(t) = body.schema_type.filter(|t| t != "AVRO") {
            return Err(RegistryError::InvalidSchema {
                context: format!("schema id {id}"),
                message: format!("schema type {t}, not AVRO"),
            });
        }
        let schema = Arc::new(parse_schema(format!("schema id {id}"), &body.schema)?);
        let mut cache = self.schemas.write().unwrap_or_else(|e| e.into_inner());
        Ok(cache.entry(id).or_insert(schema).clone())
    }
}

struct SplitUrl {
    base: String,
    userinfo: Option<(String, String)>,
}

/// Shows a URL with any `user:pass@` removed, for error messages about
/// URLs that did not parse.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn split_url(url: &str) -> Result<SplitUrl, RegistryError> {
    let invalid = |message: &str| RegistryError::InvalidUrl { url: redact_url(url), message: message.to_string() };
    let url = url.trim();
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        ("http://", r)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("https://", r)
    } else {
        return Err(invalid("must start with http:// or https://"));
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    if tail.contains(['?', '#']) {
        return Err(invalid("must not have a query or fragment"));
    }
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => {
            let info = &authority[..at];
            let (u, p) = info.split_once(':').unwrap_or((info, ""));
            (Some((percent_decode(u), percent_decode(p))), &authority[at + 1..])
        }
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    let base = format!("{scheme}{host}{}", tail.trim_end_matches('/'));
    Ok(SplitUrl { base, userinfo })
}

fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    fn schema(name: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"{name}","namespace":"t","fields":[{{"name":"a","type":"long","doc":"A."}}]}}"#
        ))
        .unwrap()
    }

    fn temp_path(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("geoclock-registry-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("sub").join("registry.json")
    }

    #[test]
    fn file_registry_is_idempotent_deterministic_and_survives_restart() {
        let path = temp_path("restart");
        let r = FileRegistry::open(&path).unwrap();
        let a = r.register("pings-value", &schema("A")).unwrap();
        assert_eq!(r.register("pings-value", &schema("A")).unwrap(), a);
        let b = r.register("jobs-value", &schema("B")).unwrap();
        assert_ne!(a, b);
        // Same schema, other subject: its own id.
        let a2 = r.register("other-value", &schema("A")).unwrap();
        assert_ne!(a, a2);
        assert_eq!(*r.schema(a).unwrap(), schema("A"));
        assert_eq!(r.schema(12345), Err(RegistryError::NotFound(12345)));
        drop(r);

        let r = FileRegistry::open(&path).unwrap();
        assert_eq!(*r.schema(b).unwrap(), schema("B"));
        assert_eq!(r.register("pings-value", &schema("A")).unwrap(), a);
        // Another process (here: an in-memory registry) derives the same ids.
        assert_eq!(FileRegistry::in_memory().register("jobs-value", &schema("B")).unwrap(), b);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"subject\": \"jobs-value\""), "{text}");
    }

    #[test]
    fn file_registry_sees_what_another_instance_wrote() {
        let path = temp_path("shared");
        let r1 = FileRegistry::open(&path).unwrap();
        let r2 = FileRegistry::open(&path).unwrap();
        let id = r1.register("s-value", &schema("A")).unwrap();
        assert_eq!(*r2.schema(id).unwrap(), schema("A"));
    }

    #[test]
    fn file_registry_is_safe_under_concurrent_registration() {
        let path = temp_path("threads");
        let r = Arc::new(FileRegistry::open(&path).unwrap());
        let ids: Vec<Vec<u32>> = (0..8)
            .map(|t| {
                let r = r.clone();
                thread::spawn(move || {
                    (0..10).map(|i| r.register(&format!("s{}", (i + t) % 10), &schema("A")).unwrap()).collect()
                })
            })
            .map(|h| h.join().unwrap())
            .collect();
        let mut all: Vec<u32> = ids.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10);
        let reopened = FileRegistry::open(&path).unwrap();
        for id in all {
            assert!(reopened.schema(id).is_ok());
        }
    }

    #[test]
    fn file_registry_rejects_a_corrupt_file() {
        let path = temp_path("corrupt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{not json").unwrap();
        let err = FileRegistry::open(&path).unwrap_err();
        assert!(matches!(err, RegistryError::File { .. }), "{err}");
        std::fs::write(&path, r#"{"schemas":{"7":{"subject":"s","schema":"{\"type\":\"nope\"}"}}}"#).unwrap();
        let err = FileRegistry::open(&path).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidSchema { .. }), "{err}");
    }

    #[test]
    fn urls_lose_their_credentials() {
        let u = split_url("https://key:s%40cret@registry.example:8081/base/").unwrap();
        assert_eq!(u.base, "https://registry.example:8081/base");
        assert_eq!(u.userinfo, Some(("key".into(), "s@cret".into())));
        assert_eq!(redact_url("https://key:secret@host/x"), "https://host/x");
        let Err(err) = split_url("ftp://key:secret@host") else { panic!("accepted ftp") };
        let err = err.to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(split_url("http://").is_err());
        assert_eq!(base64(b"key:secret"), "a2V5OnNlY3JldA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        assert_eq!(percent_encode("geoclock.azuga.pings-value"), "geoclock.azuga.pings-value");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("a%2fb%"), "a/b%");
    }

    /// A registry speaking the two Confluent endpoints, on 127.0.0.1:0.
    struct FakeConfluent {
        url: String,
        requests: Arc<AtomicUsize>,
        server: Arc<tiny_http::Server>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl FakeConfluent {
        fn start(required_auth: Option<&'static str>) -> Self {
            let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let port = server.server_addr().to_ip().unwrap().port();
            let requests = Arc::new(AtomicUsize::new(0));
            let (srv, count) = (server.clone(), requests.clone());
            let thread = thread::spawn(move || {
                let mut by_text: HashMap<String, u32> = HashMap::new();
                let mut by_id: HashMap<u32, String> = HashMap::new();
                for mut req in srv.incoming_requests() {
                    count.fetch_add(1, Ordering::SeqCst);
                    let header = |name: &str| {
                        req.headers()
                            .iter()
                            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                            .map(|h| h.value.as_str().to_string())
                    };
                    let json = |status: u16, body: String| {
                        tiny_http::Response::from_string(body).with_status_code(status).with_header(
                            tiny_http::Header::from_bytes(&b"Content-Type"[..], CONFLUENT_CONTENT_TYPE.as_bytes())
                                .unwrap(),
                        )
                    };
                    if let Some(expected) = required_auth {
                        if header("Authorization").as_deref() != Some(expected) {
                            let _ = req.respond(json(401, r#"{"error_code":401,"message":"Unauthorized"}"#.into()));
                            continue;
                        }
                    }
                    let url = req.url().to_string();
                    let resp = if *req.method() == tiny_http::Method::Post
                        && url.starts_with("/subjects/")
                        && url.ends_with("/versions")
                    {
                        assert_eq!(header("Content-Type").as_deref(), Some(CONFLUENT_CONTENT_TYPE));
                        let mut body = String::new();
                        let _ = req.as_reader().read_to_string(&mut body);
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        let text = v["schema"].as_str().unwrap().to_string();
                        if text.contains("Incompatible") {
                            json(
                                409,
                                r#"{"error_code":409,"message":"Schema being registered is incompatible"}"#.into(),
                            )
                        } else {
                            let next = by_text.len() as u32 + 1;
                            let id = *by_text.entry(text.clone()).or_insert(next);
                            by_id.insert(id, text);
                            json(200, format!(r#"{{"id":{id}}}"#))
                        }
                    } else if let Some(id) = url.strip_prefix("/schemas/ids/") {
                        match id.parse::<u32>().ok().and_then(|id| by_id.get(&id)) {
                            Some(text) => json(200, serde_json::json!({ "schema": text }).to_string()),
                            None if id == "666" => json(500, "<html>boom</html>".into()),
                            None => json(404, r#"{"error_code":40403,"message":"Schema not found"}"#.into()),
                        }
                    } else {
                        json(404, r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.into())
                    };
                    let _ = req.respond(resp);
                }
            });
            FakeConfluent { url: format!("http://127.0.0.1:{port}"), requests, server, thread: Some(thread) }
        }
    }

    impl Drop for FakeConfluent {
        fn drop(&mut self) {
            self.server.unblock();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn confluent_registers_fetches_and_caches() {
        let fake = FakeConfluent::start(None);
        let r = ConfluentRegistry::new(&format!("{}/", fake.url)).unwrap();
        let id = r.register("geoclock.azuga.pings-value", &schema("A")).unwrap();
        assert_eq!(r.register("geoclock.azuga.pings-value", &schema("A")).unwrap(), id);
        assert_eq!(fake.requests.load(Ordering::SeqCst), 1, "second register is cached");
        assert_eq!(*r.schema(id).unwrap(), schema("A"));
        assert_eq!(fake.requests.load(Ordering::SeqCst), 1, "own schema is cached");

        // A fresh client fetches by id, once.
        let r2 = ConfluentRegistry::new(&fake.url).unwrap();
        assert_eq!(*r2.schema(id).unwrap(), schema("A"));
        assert_eq!(*r2.schema(id).unwrap(), schema("A"));
        assert_eq!(fake.requests.load(Ordering::SeqCst), 2);
        assert_eq!(r2.schema(99).unwrap_err(), RegistryError::NotFound(99));
        let err = r2.schema(666).unwrap_err();
        assert!(matches!(err, RegistryError::Http { status: 500, .. }), "{err}");
        let err = r2.register("s", &schema("Incompatible")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "schema registry {} answered HTTP 409 (error code 409): Schema being registered is incompatible",
                fake.url
            )
        );
    }

    #[test]
    fn confluent_sends_basic_auth_and_never_shows_it() {
        let fake = FakeConfluent::start(Some("Basic a2V5OnMzY3JldA=="));
        let with_creds = fake.url.replace("http://", "http://key:s3cret@");
        let r = ConfluentRegistry::new(&with_creds).unwrap();
        assert_eq!(r.url(), fake.url);
        assert!(!format!("{r:?}").contains("s3cret"));
        let id = r.register("s", &schema("A")).unwrap();
        assert!(id > 0);

        let wrong = ConfluentRegistry::new(&fake.url.replace("http://", "http://key:wr0ng@")).unwrap();
        let err = wrong.register("s", &schema("A")).unwrap_err();
        assert!(matches!(err, RegistryError::Http { status: 401, .. }), "{err}");
        assert!(!err.to_string().contains("wr0ng"), "{err}");
        let ok = ConfluentRegistry::new(&fake.url).unwrap().with_basic_auth("key", "s3cret");
        assert_eq!(ok.register("s", &schema("A")).unwrap(), id);
    }

    #[test]
    fn confluent_unreachable_is_an_error_without_credentials() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = ConfluentRegistry::new(&format!("http://key:s3cret@127.0.0.1:{port}"))
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let err = r.schema(1).unwrap_err();
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
