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
//! - Exactly once ([`super::effect`], in bulk): when an appointment's
//!   outcome is unknown (an ambiguous answer to an earlier bulk call, an
//!   intent left by a crash, a partition that moved here) or its geomark id
//!   is not known here while its commands need one (an update or delete of
//!   a fence another instance created), the sink first lists Azuga's
//!   geomarks once for the batch and adopts the one named for the
//!   appointment (`… | {appointmentId}`), or learns that it is gone. So a
//!   bulk create that Azuga applied and then failed to answer is never
//!   created twice. Intents are recorded before every bulk call.
//! - What Azuga would refuse fails here, without a call
//!   ([`crate::vendor::azuga::rules`]).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::effect::{record_intent, Cx};
use super::ledger::LedgerError;
use super::{Decided, Executor, Settle, SinkKind, TenantCx, Verdict, Work};
use crate::engine::{Action, FenceChange};
use crate::kafka::records::Outcome;
use crate::vendor::azuga::rules::{check_geomark, geomark, names_appointment, same_geomark};
use crate::vendor::retry::Fault;
use std::time::Duration;

#[derive(Default)]
pub struct GeofenceSink;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Mapping {
    id: Option<u64>,
    revision: u32,
}

/// What an appointment needs from Azuga after its commands.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    Create(Value),
    Update(u64, Value),
    Delete(u64),
    /// No call: the geomark Azuga holds (if any) is already right.
    Nothing {
        id: Option<u64>,
        note: String,
    },
}

/// One appointment's commands in the batch (indexes into the batch).
struct Group {
    appointment: String,
    mapping: Mapping,
    /// Commands above the mapping's revision, in order.
    live: Vec<usize>,
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

fn mapping_key(appointment: &str) -> String {
    format!("fence/{appointment}")
}

/// The plan for an appointment whose last command is `last`, given the
/// geomark id known here and, when listed, Azuga's geomarks.
fn plan(appointment: &str, known: Option<u64>, last: &Action, remote: Option<&[Value]>) -> Plan {
    let mut id = known;
    let mut held: Option<&Value> = None;
    if let Some(list) = remote {
        if id.is_none() {
            id = list
                .iter()
                .find(|m| m["name"].as_str().is_some_and(|n| names_appointment(n, appointment)))
                .and_then(|m| m["id"].as_u64());
        }
        held = id.and_then(|i| list.iter().find(|m| m["id"].as_u64() == Some(i)));
        if held.is_none() {
            // Our geomark is gone from Azuga (a delete that landed).
            id = None;
        }
    }
    match fence_of(last) {
        Some(f) => {
            let want = geomark(f);
            match id {
                None => Plan::Create(want),
                Some(i) if held.is_some_and(|r| same_geomark(r, &want)) => {
                    Plan::Nothing { id: Some(i), note: format!("geomark {i} already as commanded") }
                }
                Some(i) => Plan::Update(i, want),
            }
        }
        None => match id {
            Some(i) => Plan::Delete(i),
            None => Plan::Nothing { id: None, note: "no geomark to remove".into() },
        },
    }
}

impl GeofenceSink {
    fn groups(
        &self,
        cx: &Cx,
        tenant: &str,
        batch: &[Work],
        out: &mut [Option<Verdict>],
    ) -> Result<Vec<Group>, LedgerError> {
        let mut order: Vec<String> = Vec::new();
        let mut by: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, w) in batch.iter().enumerate() {
            let a = w.command.appointment.to_string();
            if !by.contains_key(&a) {
                order.push(a.clone());
            }
            by.entry(a).or_default().push(i);
        }
        let mut groups = Vec::with_capacity(order.len());
        for appointment in order {
            let mapping: Mapping = cx
                .ledger
                .extra(tenant, &mapping_key(&appointment))?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let mut g = Group { appointment, mapping, live: Vec::new() };
            let mut idx = by.remove(&g.appointment).unwrap_or_default();
            idx.sort_by_key(|i| revision(&batch[*i].command.action));
            for i in idx {
                let rev = revision(&batch[i].command.action);
                if rev <= g.mapping.revision {
                    let why = format!("revision {rev} not above the applied revision {}", g.mapping.revision);
                    let r = batch[i].result(SinkKind::Geofence, Outcome::Superseded, why, None);
                    out[i] = Some(Verdict::Decided(Decided::new(r)));
                } else {
                    g.live.push(i);
                }
            }
            groups.push(g);
        }
        Ok(groups)
    }
}

impl Executor for GeofenceSink {
    fn linger(&self) -> Duration {
        Duration::from_millis(200)
    }

    /// Keeps `geoclock_sink_fences_live{tenant}`: the geomarks this sink
    /// holds at Azuga (mappings with an id) per its ledger.
    fn housekeeping(&self, cx: &Cx, t: &TenantCx, _partition: i32) -> Result<Vec<Decided>, LedgerError> {
        let live = cx.ledger.count_extras(&t.tenant.name, "fence/", |v| v["id"].is_u64())?;
        cx.metrics.fences_live(&t.tenant.name, live as i64);
        Ok(Vec::new())
    }

    fn attempt(&self, cx: &Cx, t: &TenantCx, batch: &mut [Work], settle: &mut Settle<'_>) -> Result<(), LedgerError> {
        let Some(az) = &t.azuga else {
            for w in batch.iter() {
                settle(w, w.failed(SinkKind::Geofence, "no [tenants.azuga] in the tenants file".into()))?;
            }
            return Ok(());
        };
        let tenant = t.tenant.name.as_str();
        let mut out: Vec<Option<Verdict>> = vec![None; batch.len()];
        let mut groups = self.groups(cx, tenant, batch, &mut out)?;
        groups.retain(|g| !g.live.is_empty());
        // Groups whose commands may not act here now wait.
        groups.retain(|g| {
            let ok = g.live.iter().all(|i| cx.fence.may_act(batch[*i].partition));
            if !ok {
                for i in &g.live {
                    out[*i] = Some(Verdict::Retry(Fault::Stopped { api: "fence" }));
                }
            }
            ok
        });
        // Step 1, once for the batch: list Azuga's geomarks when any
        // appointment's outcome is unknown or its geomark id is needed and
        // not known here.
        let needs_list = |g: &Group| {
            let last = &batch[*g.live.last().unwrap_or(&0)].command.action;
            g.live.iter().any(|i| batch[*i].unknown)
                || (g.mapping.id.is_none() && !matches!(last, Action::CreateGeofence(_)))
        };
        // A call whose budget is not free yet is not made now: its
        // commands wait (and more gather for it), nothing is recorded.
        let not_yet = |api: &'static str| {
            let wait = az.caller().ready_in(api);
            (!wait.is_zero()).then_some(Fault::NotYet { api, wait })
        };
        let list_wait = not_yet("GET /v1/geomarks");
        let remote: Option<Result<Vec<Value>, Fault>> = groups.iter().any(needs_list).then(|| match &list_wait {
            Some(f) => Err(f.clone()),
            None => {
                cx.metrics.lookup(cx.sink.name());
                az.geomarks()
            }
        });
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let listed = match (&remote, needs_list(g)) {
                (Some(Ok(list)), true) => Some(list.as_slice()),
                (Some(Err(f)), true) => {
                    for i in &g.live {
                        out[*i] = Some(super::effect::on_fault(
                            &batch[*i],
                            SinkKind::Geofence,
                            "cannot list Azuga's geomarks to check",
                            f.clone(),
                        ));
                    }
                    continue;
                }
                _ => None,
            };
            let last = &batch[*g.live.last().unwrap_or(&0)].command.action;
            let p = plan(&g.appointment, g.mapping.id, last, listed);
            if let Plan::Create(v) | Plan::Update(_, v) = &p {
                if let Err(e) = check_geomark(v) {
                    for i in &g.live {
                        out[*i] =
                            Some(batch[*i].failed(SinkKind::Geofence, format!("Azuga would reject the geofence: {e}")));
                    }
                    continue;
                }
            }
            let api = match &p {
                Plan::Create(_) => Some("POST /v1/geomarks"),
                Plan::Update(..) => Some("PUT /v1/geomarks"),
                Plan::Delete(_) => Some("DELETE /v1/geomarks"),
                Plan::Nothing { .. } => None,
            };
            if let Some(f) = api.and_then(not_yet) {
                for i in &g.live {
                    out[*i] = Some(Verdict::Retry(f.clone()));
                }
                continue;
            }
            plans.push((gi, p));
        }
        // Step 2: intents for every command about to be acted on.
        for (gi, p) in &plans {
            if !matches!(p, Plan::Nothing { .. }) {
                for i in &groups[*gi].live {
                    batch[*i].unknown = false;
                    record_intent(&cx.ledger, &mut batch[*i])?;
                }
            }
        }
        // Step 3: the bulk calls, one per kind per chunk.
        let mut answers: HashMap<usize, Result<Option<u64>, Fault>> = HashMap::new();
        let creates: Vec<(usize, Value)> = plans
            .iter()
            .filter_map(|(gi, p)| if let Plan::Create(v) = p { Some((*gi, v.clone())) } else { None })
            .collect();
        for chunk in creates.chunks(100) {
            let r = az.create_geomarks(chunk.iter().map(|(_, v)| v.clone()).collect());
            for (k, (gi, _)) in chunk.iter().enumerate() {
                answers.insert(*gi, r.clone().map(|ids| ids.get(k).copied().flatten()));
            }
        }
        let updates: Vec<(usize, u64, Value)> = plans
            .iter()
            .filter_map(|(gi, p)| if let Plan::Update(id, v) = p { Some((*gi, *id, v.clone())) } else { None })
            .collect();
        for chunk in updates.chunks(100) {
            let items = chunk
                .iter()
                .map(|(_, id, v)| {
                    let mut v = v.clone();
                    v["id"] = json!(id);
                    v
                })
                .collect();
            let r = az.update_geomarks(items);
            for (gi, id, _) in chunk {
                answers.insert(*gi, r.clone().map(|_| Some(*id)));
            }
        }
        let deletes: Vec<(usize, u64)> =
            plans.iter().filter_map(|(gi, p)| if let Plan::Delete(id) = p { Some((*gi, *id)) } else { None }).collect();
        for chunk in deletes.chunks(100) {
            let ids: Vec<u64> = chunk.iter().map(|(_, id)| *id).collect();
            let r = az.delete_geomarks(&ids);
            for (gi, _) in chunk {
                answers.insert(*gi, r.clone().map(|_| None));
            }
        }
        // Step 3's outcome per appointment, shared by its commands.
        for (gi, p) in plans {
            let g = &groups[gi];
            let last_rev = g.live.last().map_or(g.mapping.revision, |i| revision(&batch[*i].command.action));
            let (id, note) = match (&p, answers.remove(&gi)) {
                (Plan::Nothing { id, note }, _) => (*id, note.clone()),
                (Plan::Delete(_), Some(Ok(_))) => (None, String::new()),
                (_, Some(Ok(id))) => (id, String::new()),
                (_, Some(Err(f))) => {
                    for i in &g.live {
                        batch[*i].unknown = f.maybe_applied();
                        out[*i] = Some(super::effect::on_fault(
                            &batch[*i],
                            SinkKind::Geofence,
                            "Azuga rejected geofence",
                            f.clone(),
                        ));
                    }
                    continue;
                }
                (_, None) => continue,
            };
            let mapping = serde_json::to_value(Mapping { id, revision: last_rev }).unwrap_or(Value::Null);
            for (k, i) in g.live.iter().enumerate() {
                let r = batch[*i].result(SinkKind::Geofence, Outcome::Done, note.clone(), id.map(|i| i.to_string()));
                let mut d = Decided::new(r);
                if k + 1 == g.live.len() {
                    d.extras.push((mapping_key(&g.appointment), Some(mapping.clone())));
                }
                out[*i] = Some(Verdict::Decided(d));
            }
        }
        for (w, v) in batch.iter().zip(out) {
            if let Some(v) = v {
                settle(w, v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{LatLon, Shape};
    use crate::model::{Id, Ts};

    fn fence(rev: u32) -> FenceChange {
        FenceChange {
            revision: rev,
            name: "Plant 7 | J-1 | 7001".into(),
            shape: Shape::Circle { center: LatLon::new(35.0, -80.0), radius_m: 200.0 },
            window_start: Ts(0),
            window_end: Ts(1),
            active_from: Ts(0),
            active_to: Ts(1),
            job: Id::number(1),
            location: Id::number(2),
        }
    }

    #[test]
    fn a_create_that_landed_before_its_answer_was_lost_is_adopted_not_repeated() {
        let create = Action::CreateGeofence(fence(1));
        let mut held = geomark(&fence(1));
        held["id"] = json!(42);
        let other = json!({"id": 7, "name": "Elsewhere | J-2 | 17001"});
        assert_eq!(
            plan("7001", None, &create, Some(&[other.clone(), held.clone()])),
            Plan::Nothing { id: Some(42), note: "geomark 42 already as commanded".into() }
        );
        assert_eq!(plan("7001", None, &create, Some(&[other])), Plan::Create(geomark(&fence(1))));
        // A delete of a fence created elsewhere finds its id by name.
        let delete = Action::DeleteGeofence { revision: 2, name: "Plant 7 | J-1 | 7001".into() };
        assert_eq!(plan("7001", None, &delete, Some(&[held.clone()])), Plan::Delete(42));
        // A delete that landed: the geomark is gone.
        assert_eq!(
            plan("7001", Some(42), &delete, Some(&[])),
            Plan::Nothing { id: None, note: "no geomark to remove".into() }
        );
        // An update with a known id and no listing: update in place.
        let update = Action::UpdateGeofence(fence(3));
        assert!(matches!(plan("7001", Some(42), &update, None), Plan::Update(42, _)));
    }
}
