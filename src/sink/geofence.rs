//! The geofence sink: keeps Azuga's geomarks in step with the fence
//! commands, with bulk calls per tenant (one `POST`, one `PUT`, one
//! `DELETE /v1/geomarks` per batch at most), because Azuga allows one call
//! per API per minute.
//!
//! Invariants:
//! - Per appointment the ledger keeps `fence/{appointment}`: the Azuga
//!   geomark id and the last revision applied. A command whose revision is
//!   not above it is superseded (it was applied, or a later one was).
//! - Within a batch an appointment's commands collapse to their net effect
//!   (create + update = one create with the update's content; create +
//!   delete = no call), so Azuga sees each appointment at most once.
//! - Exactly once: intents are recorded for every command before its call;
//!   with an intent present the sink first lists Azuga's geomarks and
//!   adopts one of the same name (a create that landed before a crash) or
//!   skips a delete whose geomark is gone.
//! - Azuga's geomarks are circles: a polygon fence is sent as the circle
//!   around its vertices (the processor still tests the exact polygon).
//!   Radii above ten miles fail here, without a call.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::call::{azuga_auth, azuga_interval_ms, CallError, Cx, Request};
use super::ledger::{LedgerError, Step};
use super::{now, Decided, Executor, Pending, SinkKind};
use crate::connect::tenants::{AzugaTenant, Tenant};
use crate::engine::{Action, FenceChange};
use crate::geo::{haversine_m, LatLon, Shape};
use crate::kafka::records::Outcome;
use crate::sim::azuga::check_geomark;

#[derive(Default)]
pub struct GeofenceSink;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Mapping {
    id: Option<u64>,
    revision: u32,
}

/// The circle Azuga is sent for `shape`: (centre, radius m).
pub fn circle_of(shape: &Shape) -> (LatLon, f64) {
    match shape {
        Shape::Circle { center, radius_m } => (*center, *radius_m),
        Shape::Polygon { ring } => {
            let (mut lo, mut hi) = (LatLon::new(90.0, 180.0), LatLon::new(-90.0, -180.0));
            for p in ring {
                lo = LatLon::new(lo.lat.min(p.lat), lo.lon.min(p.lon));
                hi = LatLon::new(hi.lat.max(p.lat), hi.lon.max(p.lon));
            }
            let c = LatLon::new((lo.lat + hi.lat) / 2.0, (lo.lon + hi.lon) / 2.0);
            let r = ring.iter().map(|p| haversine_m(c, *p)).fold(0.0, f64::max);
            (c, (r * 10.0).ceil() / 10.0)
        }
    }
}

/// The geomark for a fence (without `id`).
pub fn geomark(f: &FenceChange) -> Value {
    let (c, r) = circle_of(&f.shape);
    json!({
        "name": f.name, "latitude": c.lat, "longitude": c.lon, "address": "",
        "fenceType": "Circular", "geofenceRadius": r, "radiusUnit": "meters", "alertType": "BOTH",
        "activationDate": f.active_from.millis(), "inActivationDate": f.active_to.millis(),
    })
}

fn same_geomark(remote: &Value, want: &Value) -> bool {
    ["name", "latitude", "longitude", "geofenceRadius", "activationDate", "inActivationDate"]
        .iter()
        .all(|k| remote.get(*k) == want.get(*k))
}

/// What an appointment needs from Azuga after its commands.
enum Plan {
    Create(Value),
    Update(u64, Value),
    Delete(u64),
    Nothing(String),
}

struct Group {
    appointment: String,
    mapping: Mapping,
    /// Commands above the mapping's revision, in order.
    live: Vec<Pending>,
    decided: Vec<Decided>,
    recovering: bool,
    plan: Option<Plan>,
}

impl GeofenceSink {
    fn request(az: &AzugaTenant, api: &'static str, method: &'static str, body: Option<Value>) -> Request {
        Request {
            api,
            method,
            url: format!("{}/v1/geomarks", az.base_url),
            headers: vec![azuga_auth(az)],
            body: body.map(|b| b.to_string()),
            interval_ms: azuga_interval_ms(az),
        }
    }

    fn groups(&self, cx: &Cx, tenant: &str, batch: Vec<Pending>) -> Result<Vec<Group>, LedgerError> {
        let mut order: Vec<String> = Vec::new();
        let mut by: HashMap<String, Vec<Pending>> = HashMap::new();
        for p in batch {
            let a = p.command.appointment.to_string();
            if !by.contains_key(&a) {
                order.push(a.clone());
            }
            by.entry(a).or_default().push(p);
        }
        let mut out = Vec::with_capacity(order.len());
        for appointment in order {
            let mapping: Mapping = cx
                .ledger
                .extra(tenant, &format!("fence/{appointment}"))?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let mut g =
                Group { appointment, mapping, live: Vec::new(), decided: Vec::new(), recovering: false, plan: None };
            for p in by.remove(&g.appointment).unwrap_or_default() {
                let rev = revision(&p.command.action);
                if rev <= g.mapping.revision {
                    let why = format!("revision {rev} not above the applied revision {}", g.mapping.revision);
                    g.decided.push(Decided {
                        result: p.result(SinkKind::Geofence, Outcome::Superseded, why, None, 0, now()),
                        dead: false,
                    });
                    continue;
                }
                g.recovering |= matches!(cx.ledger.step(tenant, &p.command.id)?, Some(Step::Intent { .. }));
                g.live.push(p);
            }
            out.push(g);
        }
        Ok(out)
    }

    fn plan(g: &Group, remote: &Option<Vec<Value>>) -> Plan {
        let Some(last) = g.live.last() else { return Plan::Nothing(String::new()) };
        let names: Vec<&str> =
            g.live.iter().filter_map(|p| fence_of(&p.command.action).map(|f| f.name.as_str())).collect();
        let mut id = g.mapping.id;
        let mut remote_same: Option<&Value> = None;
        if let (true, Some(list)) = (g.recovering, remote) {
            if id.is_none() {
                id = list
                    .iter()
                    .find(|m| m["name"].as_str().is_some_and(|n| names.contains(&n)))
                    .and_then(|m| m["id"].as_u64());
            }
            remote_same = id.and_then(|i| list.iter().find(|m| m["id"].as_u64() == Some(i)));
            if let (Some(_), None) = (id, remote_same) {
                // Our geomark is gone from Azuga (a delete that landed).
                id = None;
            }
        }
        match fence_of(&last.command.action) {
            Some(f) => {
                let want = geomark(f);
                match id {
                    None => Plan::Create(want),
                    Some(i) if remote_same.is_some_and(|r| same_geomark(r, &want)) => {
                        Plan::Nothing(format!("geomark {i} already as commanded"))
                    }
                    Some(i) => Plan::Update(i, want),
                }
            }
            None => match id {
                Some(i) => Plan::Delete(i),
                None => Plan::Nothing("no geomark to remove".into()),
            },
        }
    }
}

fn revision(a: &Action) -> u32 {
    match a {
        Action::CreateGeofence(f) | Action::UpdateGeofence(f) => f.revision,
        Action::DeleteGeofence { revision, .. } => *revision,
        _ => 0,
    }
}

fn fence_of(a: &Action) -> Option<&FenceChange> {
    match a {
        Action::CreateGeofence(f) | Action::UpdateGeofence(f) => Some(f),
        _ => None,
    }
}

/// Checks what Azuga would refuse, so one bad fence cannot sink a bulk call.
fn local_check(g: &Value) -> Result<(), String> {
    // The simulator's checks are Azuga's documented ones (radius ≤ 10 miles,
    // coordinates in range, a name, `Circular`).
    check_geomark(g).map_err(|e| format!("Azuga would reject the geofence: {e}"))
}

impl Executor for GeofenceSink {
    fn execute(&self, cx: &Cx, tenant: &Tenant, batch: Vec<Pending>) -> Result<Vec<Decided>, LedgerError> {
        let Some(az) = &tenant.azuga else {
            return Ok(super::unconfigured(SinkKind::Geofence, batch, "no [tenants.azuga] in the tenants file"));
        };
        let t = tenant.name.as_str();
        let mut groups = self.groups(cx, t, batch)?;
        let mut attempts = 0u32;
        let remote = if groups.iter().any(|g| g.recovering) {
            let req = Self::request(az, "GET /v1/geomarks", "GET", None);
            match cx.call(t, &req, &mut attempts) {
                Ok(a) => serde_json::from_str::<Value>(&a.body).ok().and_then(|v| v["data"].as_array().cloned()),
                Err(e) => {
                    tracing::warn!(tenant = t, error = %e, "cannot list geomarks for recovery; retrying the batch later");
                    None
                }
            }
        } else {
            None
        };
        for g in &mut groups {
            if g.recovering && remote.is_none() {
                // Unknown whether the earlier call landed: decide nothing now.
                continue;
            }
            let plan = Self::plan(g, &remote);
            let bad = match &plan {
                Plan::Create(v) | Plan::Update(_, v) => local_check(v).err(),
                _ => None,
            };
            if let Some(why) = bad {
                for p in g.live.drain(..) {
                    g.decided.push(Decided {
                        result: p.result(SinkKind::Geofence, Outcome::Failed, why.clone(), None, 0, now()),
                        dead: true,
                    });
                }
                continue;
            }
            g.plan = Some(plan);
        }
        // Intents for every command about to be acted on, in one write.
        let intents: Vec<(&str, &str, Step)> = groups
            .iter()
            .filter(|g| matches!(g.plan, Some(Plan::Create(_) | Plan::Update(..) | Plan::Delete(_))))
            .flat_map(|g| g.live.iter().map(|p| (t, p.command.id.as_str(), Step::Intent { calls: 1 })))
            .collect();
        if !intents.is_empty() {
            cx.ledger.record(&intents, &[])?;
        }
        let creates: Vec<usize> =
            (0..groups.len()).filter(|i| matches!(groups[*i].plan, Some(Plan::Create(_)))).collect();
        let updates: Vec<usize> =
            (0..groups.len()).filter(|i| matches!(groups[*i].plan, Some(Plan::Update(..)))).collect();
        let deletes: Vec<usize> =
            (0..groups.len()).filter(|i| matches!(groups[*i].plan, Some(Plan::Delete(_)))).collect();
        let mut outcome: HashMap<usize, Result<Option<u64>, CallError>> = HashMap::new();
        for chunk in creates.chunks(100) {
            let items: Vec<Value> = chunk
                .iter()
                .filter_map(|i| match &groups[*i].plan {
                    Some(Plan::Create(v)) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            let r =
                cx.call(t, &Self::request(az, "POST /v1/geomarks", "POST", Some(Value::Array(items))), &mut attempts);
            let ids: Vec<Option<u64>> = match &r {
                Ok(a) => serde_json::from_str::<Value>(&a.body)
                    .ok()
                    .and_then(|v| v["data"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|m| m["id"].as_u64())
                    .collect(),
                Err(_) => Vec::new(),
            };
            for (k, i) in chunk.iter().enumerate() {
                outcome.insert(*i, r.clone().map(|_| ids.get(k).copied().flatten()));
            }
        }
        for chunk in updates.chunks(100) {
            let items: Vec<Value> = chunk
                .iter()
                .filter_map(|i| match &groups[*i].plan {
                    Some(Plan::Update(id, v)) => {
                        let mut v = v.clone();
                        v["id"] = json!(id);
                        Some(v)
                    }
                    _ => None,
                })
                .collect();
            let r = cx.call(t, &Self::request(az, "PUT /v1/geomarks", "PUT", Some(Value::Array(items))), &mut attempts);
            for i in chunk {
                let id = match &groups[*i].plan {
                    Some(Plan::Update(id, _)) => Some(*id),
                    _ => None,
                };
                outcome.insert(*i, r.clone().map(|_| id));
            }
        }
        for chunk in deletes.chunks(100) {
            let ids: Vec<u64> = chunk
                .iter()
                .filter_map(|i| match &groups[*i].plan {
                    Some(Plan::Delete(id)) => Some(*id),
                    _ => None,
                })
                .collect();
            let r = cx.call(
                t,
                &Self::request(az, "DELETE /v1/geomarks", "DELETE", Some(json!({"ids": ids}))),
                &mut attempts,
            );
            for i in chunk {
                outcome.insert(*i, r.clone().map(|_| None));
            }
        }
        let mut decided = Vec::new();
        for (i, mut g) in groups.into_iter().enumerate() {
            decided.append(&mut g.decided);
            let Some(plan) = g.plan.take() else { continue };
            let last_rev = g.live.last().map_or(g.mapping.revision, |p| revision(&p.command.action));
            // What the appointment's commands come to: the mapping to keep
            // and one verdict for all of them (none: no answer yet).
            let (mapping, verdict) = match (plan, outcome.remove(&i)) {
                (Plan::Nothing(why), _) => {
                    let id =
                        g.mapping.id.filter(|_| g.live.last().is_some_and(|p| fence_of(&p.command.action).is_some()));
                    (Some(Mapping { id, revision: last_rev }), Some((Outcome::Done, why, id)))
                }
                (Plan::Delete(_), Some(Ok(_))) => {
                    (Some(Mapping { id: None, revision: last_rev }), Some((Outcome::Done, String::new(), None)))
                }
                (_, Some(Ok(id))) => {
                    (Some(Mapping { id, revision: last_rev }), Some((Outcome::Done, String::new(), id)))
                }
                (_, Some(Err(e))) => (None, Some((Outcome::Failed, format!("Azuga rejected geofence: {e}"), None))),
                (_, None) => (None, None),
            };
            let results: Vec<Decided> = verdict.map_or_else(Vec::new, |(outcome, why, id)| {
                g.live
                    .iter()
                    .map(|p| Decided {
                        result: p.result(
                            SinkKind::Geofence,
                            outcome,
                            why.clone(),
                            id.map(|i| i.to_string()),
                            attempts,
                            now(),
                        ),
                        dead: outcome == Outcome::Failed,
                    })
                    .collect()
            });
            let steps: Vec<(&str, &str, Step)> = results
                .iter()
                .map(|d| (t, d.result.command_id.as_str(), Step::Done { result: d.result.clone(), reported: false }))
                .collect();
            let key = format!("fence/{}", g.appointment);
            let extras: Vec<(&str, &str, Option<Value>)> = mapping
                .map(|m| (t, key.as_str(), Some(serde_json::to_value(m).unwrap_or(Value::Null))))
                .into_iter()
                .collect();
            cx.ledger.record(&steps, &extras)?;
            decided.extend(results);
        }
        Ok(decided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygons_go_to_azuga_as_the_circle_around_them() {
        let ring = vec![
            LatLon::new(35.0, -80.0),
            LatLon::new(35.0, -79.99),
            LatLon::new(35.01, -79.99),
            LatLon::new(35.01, -80.0),
        ];
        let (c, r) = circle_of(&Shape::Polygon { ring: ring.clone() });
        assert!((c.lat - 35.005).abs() < 1e-9 && (c.lon + 79.995).abs() < 1e-9);
        for p in ring {
            assert!(haversine_m(c, p) <= r);
        }
        let (c2, r2) = circle_of(&Shape::Circle { center: LatLon::new(1.0, 2.0), radius_m: 150.0 });
        assert_eq!((c2, r2), (LatLon::new(1.0, 2.0), 150.0));
    }
}
