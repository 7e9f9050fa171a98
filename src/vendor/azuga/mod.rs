//! Azuga: the one client geoclock calls it with (the connector and the
//! geofence and email sinks alike), its JSON shapes ([`map`]) and what it
//! accepts ([`rules`]).
//!
//! - Auth: v1 `Authorization: Basic base64(apiKey:)`.
//! - Rate limit: documented as one request per minute **per API call**, so
//!   each call (`METHOD /path`) has its own budget, measured from the
//!   previous answer ([`crate::vendor::retry::Budget`]); a 429 waits its
//!   `Retry-After` (capped).
//! - Lists answer `{data:[…]}`. Geomarks: `GET /v1/geomarks` (all),
//!   `POST`/`PUT /v1/geomarks` (bulk create/update), `DELETE /v1/geomarks
//!   {ids}`. TrackMe: `POST /v1/trackme` → `{token, url}`;
//!   `GET /v1/trackme[?vehicleId=]` lists the account's (or a vehicle's)
//!   live links (inferred; the lookup after an unknown answer).
//!
//! Every method is one attempt ([`Fault`]) unless it says it retries.

pub mod map;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::call::{Caller, Observer, Request, Stop, VendorError};
use super::retry::{Fault, Policy};
use crate::config::tenants::AzugaTenant;
use crate::http::client::{urlencode, Http};

/// A TrackMe link.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackMe {
    pub token: String,
    pub url: String,
}

/// One tenant's Azuga API.
pub struct Client {
    caller: Caller,
    cfg: AzugaTenant,
}

fn data_of(api: &'static str, body: &str) -> Result<Value, VendorError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| VendorError::Protocol { api, message: format!("invalid JSON: {e}") })?;
    Ok(v.get("data").cloned().unwrap_or(Value::Null))
}

impl Client {
    pub fn new(cfg: AzugaTenant, timeout: Duration, policy: Policy, stop: Stop, observer: Arc<dyn Observer>) -> Client {
        let caller = Caller::new(Http::new(timeout), policy, cfg.rate_limit_ms as i64, stop, observer);
        Client { caller, cfg }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    fn request(&self, api: &'static str, method: &'static str, path: &str, body: Option<Value>) -> Request {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.cfg.api_key.expose()));
        Request {
            api,
            method,
            url: format!("{}{path}", self.cfg.base_url),
            headers: vec![("Authorization", format!("Basic {token}"))],
            body: body.map(|b| b.to_string()),
        }
    }

    /// A list call's `data` array, retrying transient failures.
    pub fn list(&self, api: &'static str, path: &str) -> Result<Vec<Value>, VendorError> {
        let a = self.caller.retrying(api, || self.caller.once(&self.request(api, "GET", path, None)))?;
        match data_of(api, &a.body)? {
            Value::Array(items) => Ok(items),
            _ => Err(VendorError::Protocol { api, message: "data is not an array".into() }),
        }
    }

    pub fn drivers(&self) -> Result<Vec<Value>, VendorError> {
        self.list("GET /v3/users", "/v3/users?userType=driver")
    }

    pub fn vehicles(&self) -> Result<Vec<Value>, VendorError> {
        self.list("GET /v1/vehicles", "/v1/vehicles")
    }

    pub fn pairings(&self) -> Result<Vec<Value>, VendorError> {
        self.list("GET /v1/pairings", "/v1/pairings")
    }

    pub fn live_locations(&self) -> Result<Vec<Value>, VendorError> {
        self.list("GET /v1/live-locations", "/v1/live-locations")
    }

    /// Every fix with `from_ms <= date < to_ms`.
    pub fn location_history(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Value>, VendorError> {
        self.list("GET /v1/location-history", &format!("/v1/location-history?fromDate={from_ms}&toDate={to_ms}"))
    }

    /// Registers a `GPS_MESSAGE` webhook (retrying), with the headers its
    /// deliveries carry.
    pub fn add_webhook(&self, hook: &crate::config::webhook::Registration) -> Result<(), VendorError> {
        let api = "POST /v1/webhooks";
        let mut body = json!({"url": hook.url, "eventTypes": ["GPS_MESSAGE"]});
        if let Some(b) = body.as_object_mut() {
            b.extend(hook.json_fields());
        }
        self.caller
            .retrying(api, || self.caller.once(&self.request(api, "POST", "/v1/webhooks", Some(body.clone()))))?;
        Ok(())
    }

    /// Every geomark of the account (one attempt).
    pub fn geomarks(&self) -> Result<Vec<Value>, Fault> {
        let api = "GET /v1/geomarks";
        let a = self.caller.once(&self.request(api, "GET", "/v1/geomarks", None))?;
        match serde_json::from_str::<Value>(&a.body).ok().map(|v| v["data"].clone()) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(Fault::Unknown { api, retry_after: None, message: "answer without a data array".into() }),
        }
    }

    /// Creates geomarks (one bulk attempt); their ids, in order (`None`
    /// where the answer did not say).
    pub fn create_geomarks(&self, items: Vec<Value>) -> Result<Vec<Option<u64>>, Fault> {
        let a =
            self.caller.once(&self.request("POST /v1/geomarks", "POST", "/v1/geomarks", Some(Value::Array(items))))?;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        Ok(v["data"].as_array().map(|d| d.iter().map(|m| m["id"].as_u64()).collect()).unwrap_or_default())
    }

    /// Replaces geomarks (items carry `id`; one bulk attempt).
    pub fn update_geomarks(&self, items: Vec<Value>) -> Result<(), Fault> {
        self.caller.once(&self.request("PUT /v1/geomarks", "PUT", "/v1/geomarks", Some(Value::Array(items))))?;
        Ok(())
    }

    /// Deletes geomarks by id (one bulk attempt; ids already gone are fine).
    pub fn delete_geomarks(&self, ids: &[u64]) -> Result<(), Fault> {
        self.caller.once(&self.request("DELETE /v1/geomarks", "DELETE", "/v1/geomarks", Some(json!({"ids": ids}))))?;
        Ok(())
    }

    /// Creates a TrackMe link (one attempt).
    pub fn create_trackme(&self, request: &Value) -> Result<TrackMe, Fault> {
        let api = "POST /v1/trackme";
        let a = self.caller.once(&self.request(api, "POST", "/v1/trackme", Some(request.clone())))?;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        match (v["data"]["token"].as_str(), v["data"]["url"].as_str()) {
            (Some(token), Some(url)) => Ok(TrackMe { token: token.to_string(), url: url.to_string() }),
            // Made, but we cannot tell which: look it up next time.
            _ => Err(Fault::Unknown { api, retry_after: None, message: "answer without data.token/url".into() }),
        }
    }

    /// The account's live TrackMe links, or one vehicle's (one attempt).
    pub fn trackme_links(&self, vehicle: Option<&str>) -> Result<Vec<Value>, Fault> {
        let api = "GET /v1/trackme";
        let path = match vehicle {
            Some(v) => format!("/v1/trackme?vehicleId={}", urlencode(v)),
            None => "/v1/trackme".to_string(),
        };
        let a = self.caller.once(&self.request(api, "GET", &path, None))?;
        match serde_json::from_str::<Value>(&a.body).ok().map(|v| v["data"].clone()) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(Fault::Unknown { api, retry_after: None, message: "answer without a data array".into() }),
        }
    }
}
