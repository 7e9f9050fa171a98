//! A schema registry speaking the Confluent Schema Registry REST API (the
//! subset geoclock uses), with the simulators' chaos, so the pipeline can
//! run against a registry that is separate, assigns its own ids, and goes
//! down.
//!
//! - `POST /subjects/{subject}/versions {"schema": "..."}` → `{"id": N}`;
//!   the same text under the same subject gets the same id again; ids are
//!   assigned 1, 2, 3… in registration order (not derived from the text,
//!   unlike the built-in registry).
//! - `GET /schemas/ids/{id}` → `{"schema": "..."}`, or 404 with
//!   `{"error_code": 40403, "message": "Schema not found"}`.
//! - `GET /subjects` → the subjects.
//! - Admin (shared with the vendor simulators): `POST /admin/chaos`
//!   (`{"outage_s": 30}` takes it down), `GET /admin/calls`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::calls::CallLog;
use super::server::{calls_admin, log_calls, serve, Running};
use super::SimError;
use crate::kafka::registry::CONFLUENT_CONTENT_TYPE;

#[derive(Default)]
struct Data {
    ids: HashMap<(String, String), u32>,
    texts: BTreeMap<u32, String>,
}

pub struct RegistrySim {
    data: Mutex<Data>,
    calls: Arc<CallLog>,
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, [("content-type", CONFLUENT_CONTENT_TYPE)], Json(json!({"error_code": code, "message": message})))
        .into_response()
}

impl RegistrySim {
    pub fn new() -> Arc<RegistrySim> {
        Arc::new(RegistrySim { data: Mutex::new(Data::default()), calls: Arc::new(CallLog::default()) })
    }

    pub async fn start(listen: &str) -> Result<(Arc<RegistrySim>, Running), SimError> {
        let sim = RegistrySim::new();
        let running = serve(sim.router(), listen).await?;
        Ok((sim, running))
    }

    pub fn calls(&self) -> &CallLog {
        &self.calls
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/subjects", get(subjects))
            .route("/subjects/{subject}/versions", post(register))
            .route("/schemas/ids/{id}", get(schema))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(self.calls.clone(), log_calls))
            .merge(calls_admin(self.calls.clone()))
    }
}

async fn subjects(State(sim): State<Arc<RegistrySim>>) -> Response {
    let d = sim.data.lock().unwrap_or_else(|e| e.into_inner());
    let mut s: Vec<&String> = d.ids.keys().map(|(s, _)| s).collect();
    s.sort();
    s.dedup();
    Json(json!(s)).into_response()
}

async fn register(State(sim): State<Arc<RegistrySim>>, Path(subject): Path<String>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema: not JSON");
    };
    let Some(text) = v["schema"].as_str() else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema: no schema field");
    };
    if apache_avro::Schema::parse_str(text).is_err() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    }
    let mut d = sim.data.lock().unwrap_or_else(|e| e.into_inner());
    let next = d.texts.keys().next_back().copied().unwrap_or(0) + 1;
    let id = *d.ids.entry((subject, text.to_string())).or_insert(next);
    d.texts.entry(id).or_insert_with(|| text.to_string());
    (StatusCode::OK, [("content-type", CONFLUENT_CONTENT_TYPE)], Json(json!({"id": id}))).into_response()
}

async fn schema(State(sim): State<Arc<RegistrySim>>, Path(id): Path<String>) -> Response {
    let d = sim.data.lock().unwrap_or_else(|e| e.into_inner());
    match id.parse::<u32>().ok().and_then(|i| d.texts.get(&i)) {
        Some(text) => {
            (StatusCode::OK, [("content-type", CONFLUENT_CONTENT_TYPE)], Json(json!({"schema": text}))).into_response()
        }
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}
