//! Webhook delivery with the vendors' failure modes.
//!
//! Items (one entity change, one GPS message) are queued on an [`Outbox`];
//! a worker batches what is queued (up to `max_batch` items per message),
//! wraps the batch in the vendor's envelope and POSTs it to every registered
//! hook. Faults, as the vendors document or as integrators report them:
//! - a message may be lost (`drop_rate`): never sent;
//! - a message may be sent twice (`duplicate_rate`), same message id;
//! - a message may be held back and sent after the next one (`reorder_rate`);
//! - a receiver that does not answer 2xx within `timeout_ms` is retried up
//!   to `attempts` times in all (3 for ServiceTrade), then the message is
//!   dropped for that hook.
//!
//! A hook is registered with the headers to send with every delivery (a
//! shared secret, Basic credentials) and optionally a signing secret: each
//! body is then signed with HMAC-SHA256 (`X-Geoclock-Signature`, see
//! [`crate::config::webhook`]), as the connector's registration asks.
//!
//! Invariants: the fate of the n-th message (dropped, duplicated, held back)
//! is a pure function of `(seed, n)` ([`fate`]); how items are grouped into
//! messages depends on timing. Every message's outcome is recorded
//! ([`Delivery`]), with the keys of the items it carried, so a test can tell
//! exactly what a receiver was handed. [`Outbox::idle`] is true once every
//! queued item's message has reached its outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::rng::Rng;

/// Misbehaviour of a webhook sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub seed: u64,
    pub drop_rate: f64,
    pub duplicate_rate: f64,
    pub reorder_rate: f64,
    pub max_batch: usize,
    pub attempts: u32,
    pub retry_backoff_ms: u64,
    pub timeout_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 1,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            max_batch: 20,
            attempts: 3,
            retry_backoff_ms: 500,
            timeout_ms: 5000,
        }
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    pub drop: bool,
    pub duplicate: bool,
    pub hold_back: bool,
}

/// The fate of message number `n` (1-based).
pub fn fate(faults: &Faults, n: u64) -> Fate {
    let mut r = Rng::stream(faults.seed, n);
    let drop = r.chance(faults.drop_rate);
    let duplicate = r.chance(faults.duplicate_rate);
    let hold_back = r.chance(faults.reorder_rate);
    Fate { drop, duplicate, hold_back }
}

/// A registered receiver.
#[derive(Clone, PartialEq)]
pub struct Hook {
    pub id: u64,
    pub url: String,
    /// Sent with every delivery (`Authorization`, `X-Geoclock-Key`, ...).
    pub headers: Vec<(String, String)>,
    /// Each body is signed with this (`X-Geoclock-Signature`) when set.
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Hook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("headers", &names)
            .field("signed", &self.signing_secret.is_some())
            .finish()
    }
}

/// The delivery settings of a hook registration's JSON: `headers`
/// (name → value), `signingSecret`, and Azuga's `authorization` (sent as
/// the `Authorization` header).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookAuth {
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub signing_secret: Option<String>,
    #[serde(default)]
    pub authorization: Option<String>,
}

impl HookAuth {
    fn headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(a) = &self.authorization {
            h.push(("Authorization".into(), a.clone()));
        }
        h
    }
}

/// One queued change: a key naming it (for the delivery log) and its JSON.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer (at least once, twice when duplicated).
    Delivered,
    /// Lost on purpose (`drop_rate`).
    Lost,
    /// No 2xx after every attempt.
    Failed,
    /// No hook was registered.
    NoHook,
}

/// The outcome of one message to one hook.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub message_id: String,
    pub hook: Option<u64>,
    pub keys: Vec<String>,
    pub attempts: u32,
    pub copies: u32,
    pub outcome: Outcome,
    pub last_status: Option<u16>,
}

/// Wraps a batch in the vendor's envelope: `(message id, items) -> body`.
pub type Envelope = Arc<dyn Fn(&str, Vec<Value>) -> Value + Send + Sync>;

struct Shared {
    pending: AtomicUsize,
    deliveries: Mutex<Vec<Delivery>>,
    hooks: RwLock<Vec<Hook>>,
}

/// A webhook sender. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
}

struct Message {
    id: String,
    keys: Vec<String>,
    body: String,
    duplicate: bool,
}

impl Outbox {
    /// Starts the worker on the current tokio runtime. Message ids are
    /// `{prefix}-{n}`.
    pub fn start(faults: Faults, prefix: &str, envelope: Envelope) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            deliveries: Mutex::new(Vec::new()),
            hooks: RwLock::new(Vec::new()),
        });
        tokio::spawn(worker(faults, prefix.to_string(), envelope, rx, shared.clone()));
        Outbox { tx, shared }
    }

    pub fn enqueue(&self, item: Item) {
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(item).is_err() {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn add_hook(&self, url: String, auth: &HookAuth) -> Hook {
        let mut hooks = self.shared.hooks.write().unwrap_or_else(|e| e.into_inner());
        let id = hooks.iter().map(|h| h.id).max().unwrap_or(0) + 1;
        let hook = Hook { id, url, headers: auth.headers(), signing_secret: auth.signing_secret.clone() };
        hooks.push(hook.clone());
        hook
    }

    pub fn remove_hook(&self, id: u64) -> bool {
        let mut hooks = self.shared.hooks.write().unwrap_or_else(|e| e.into_inner());
        let before = hooks.len();
        hooks.retain(|h| h.id != id);
        hooks.len() != before
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.shared.hooks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn has_hooks(&self) -> bool {
        !self.shared.hooks.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Items queued or in flight.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    pub fn idle(&self) -> bool {
        self.pending() == 0
    }
}

async fn worker(
    faults: Faults,
    prefix: String,
    envelope: Envelope,
    mut rx: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(faults.timeout_ms.max(1))))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut n: u64 = 0;
    let mut held: Option<Message> = None;
    let max_batch = faults.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        n += 1;
        let id = format!("{prefix}-{n}");
        let f = fate(&faults, n);
        let keys: Vec<String> = batch.iter().map(|i| i.key.clone()).collect();
        let count = batch.len();
        let body = envelope(&id, batch.into_iter().map(|i| i.value).collect()).to_string();
        let msg = Message { id, keys, body, duplicate: f.duplicate };
        if f.drop {
            record(&shared, &msg, None, 0, 0, Outcome::Lost, None);
            shared.pending.fetch_sub(count, Ordering::SeqCst);
            continue;
        }
        if f.hold_back && held.is_none() && !rx.is_empty() {
            held = Some(msg);
            continue;
        }
        send(&agent, &faults, &shared, &msg).await;
        shared.pending.fetch_sub(count, Ordering::SeqCst);
        if let Some(h) = held.take() {
            send(&agent, &faults, &shared, &h).await;
            shared.pending.fetch_sub(h.keys.len(), Ordering::SeqCst);
        }
    }
}

fn record(
    shared: &Shared,
    msg: &Message,
    hook: Option<u64>,
    attempts: u32,
    copies: u32,
    outcome: Outcome,
    last_status: Option<u16>,
) {
    let d =
        Delivery { message_id: msg.id.clone(), hook, keys: msg.keys.clone(), attempts, copies, outcome, last_status };
    shared.deliveries.lock().unwrap_or_else(|e| e.into_inner()).push(d);
}

async fn send(agent: &ureq::Agent, faults: &Faults, shared: &Shared, msg: &Message) {
    let hooks = shared.hooks.read().unwrap_or_else(|e| e.into_inner()).clone();
    if hooks.is_empty() {
        record(shared, msg, None, 0, 0, Outcome::NoHook, None);
        return;
    }
    for hook in hooks {
        let copies = if msg.duplicate { 2 } else { 1 };
        let mut delivered = 0;
        let mut attempts = 0;
        let mut last = None;
        for _ in 0..copies {
            let mut ok = false;
            for attempt in 0..faults.attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(faults.retry_backoff_ms)).await;
                }
                attempts += 1;
                let status = post(agent, &hook, &msg.body).await;
                last = status;
                if matches!(status, Some(s) if (200..300).contains(&s)) {
                    ok = true;
                    break;
                }
                tracing::debug!(message = %msg.id, hook = hook.id, ?status, "webhook attempt failed");
            }
            if ok {
                delivered += 1;
            } else {
                break;
            }
        }
        let outcome = if delivered > 0 { Outcome::Delivered } else { Outcome::Failed };
        record(shared, msg, Some(hook.id), attempts, delivered, outcome, last);
    }
}

/// POSTs `body`; the status, or `None` when no answer came.
async fn post(agent: &ureq::Agent, hook: &Hook, body: &str) -> Option<u16> {
    let (agent, hook, body) = (agent.clone(), hook.clone(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let mut req = agent.post(&hook.url).header("Content-Type", "application/json");
        for (name, value) in &hook.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(secret) = &hook.signing_secret {
            req = req.header("X-Geoclock-Signature", crate::config::webhook::sign(secret, body.as_bytes()));
        }
        req.send(body).ok().map(|r| r.status().as_u16())
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_are_a_function_of_seed_and_number() {
        let f = Faults { seed: 9, drop_rate: 0.2, duplicate_rate: 0.3, reorder_rate: 0.1, ..Faults::default() };
        let a: Vec<Fate> = (1..500).map(|n| fate(&f, n)).collect();
        let b: Vec<Fate> = (1..500).map(|n| fate(&f, n)).collect();
        assert_eq!(a, b);
        let drops = a.iter().filter(|x| x.drop).count();
        let dups = a.iter().filter(|x| x.duplicate).count();
        assert!((60..140).contains(&drops), "{drops}");
        assert!((100..200).contains(&dups), "{dups}");
        assert!(
            (1..500).all(|n| fate(&Faults::default(), n) == Fate { drop: false, duplicate: false, hold_back: false })
        );
    }
}
