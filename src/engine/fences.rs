//! Fence lifecycle: one fence per scheduled appointment.
//!
//! Rule: an appointment wants a fence when it is `scheduled`, has a window,
//! belongs to a known job whose location has coordinates (or its own
//! polygon, or one the tenants file gives it: `location_polygons`, which
//! wins), and event time has not passed `window_end + window_hours`.
//! [`reconcile`] compares that wish with what Azuga was last told (`live`)
//! and emits the one command that closes the gap: create, update (window,
//! name or geometry changed) or delete. Each command bumps the fence's
//! revision, which is part of its id, so the sequence A→B→A→B emits four
//! distinct commands and a sink never confuses the second B with the first.
//! Reconciling twice in a row emits nothing the second time.

use std::sync::Arc;

use super::command::{command_id, Action, Command, FenceChange};
use super::state::{FenceRecord, Reason, State};
use super::Ctx;
use crate::geo::{LatLon, PreparedFence, Shape};
use crate::model::{AppointmentStatus, Id, Location};

/// The fence an appointment should have (revision 0), or why it has none.
pub fn desired(ctx: &Ctx, st: &State, appt: &Id) -> Result<FenceChange, Reason> {
    let a = st.appointments.get(appt).ok_or(Reason::NotScheduled)?;
    if a.status != AppointmentStatus::Scheduled {
        return Err(Reason::NotScheduled);
    }
    let (ws, we) = a.window().ok_or(Reason::NotScheduled)?;
    let job_id = a.job.as_ref().ok_or(Reason::NoJob)?;
    let job = st.jobs.get(job_id).ok_or(Reason::NoJob)?;
    let loc_id = job.location.as_ref().ok_or(Reason::NoLocationCoordinates)?;
    let loc = st.locations.get(loc_id).ok_or(Reason::NoLocationCoordinates)?;
    let shape = ctx
        .settings
        .location_polygon(loc_id.as_str())
        .or_else(|| location_shape(loc, ctx.settings.fence_radius_m))
        .ok_or(Reason::NoLocationCoordinates)?;
    let number = job.number.as_ref().unwrap_or(job_id);
    let w = ctx.settings.window_ms();
    Ok(FenceChange {
        revision: 0,
        name: format!("{} | {} | {}", loc.name.trim(), number, appt),
        shape,
        window_start: ws,
        window_end: we,
        active_from: ws.minus_millis(w),
        active_to: we.plus_millis(w),
        job: job_id.clone(),
        location: loc_id.clone(),
    })
}

/// The location's own polygon when it is a valid one, else a circle of
/// `radius_m` around its point, else nothing.
pub fn location_shape(loc: &Location, radius_m: f64) -> Option<Shape> {
    let valid = |s: Shape| s.validate().ok().map(|_| s);
    let polygon = loc.polygon.as_ref().and_then(|ring| {
        valid(Shape::Polygon { ring: ring.iter().map(|[lat, lon]| LatLon::new(*lat, *lon)).collect() })
    });
    polygon.or_else(|| {
        let center = LatLon::new(loc.lat?, loc.lon?);
        valid(Shape::Circle { center, radius_m })
    })
}

/// The point a TrackMe link should lead to: the centre of the tenants
/// file's polygon for the location, else of its own shape.
pub fn location_point(ctx: &Ctx, loc: &Location) -> Option<LatLon> {
    ctx.settings.location_polygon(loc.id.as_str()).or_else(|| location_shape(loc, 1.0)).map(|s| s.center())
}

pub fn reconcile(ctx: &Ctx, st: &mut State, appt: &Id, out: &mut Vec<Command>) {
    let want = desired(ctx, st, appt);
    let watermark = st.watermark;
    let rec: &mut FenceRecord = st.fences.entry(appt.clone()).or_default();
    rec.no_fence = want.as_ref().err().copied();
    match &want {
        Ok(spec) if rec.prepared.as_ref().is_none_or(|p| p.shape() != &spec.shape) => {
            // desired() only returns validated shapes; the exit buffer was
            // checked with the settings.
            rec.prepared = PreparedFence::new(&spec.shape, ctx.settings.exit_buffer_m).ok().map(Arc::new);
        }
        Ok(_) => {}
        Err(_) => rec.prepared = None,
    }
    let want_live = want.ok().filter(|s| watermark.is_none_or(|w| w <= s.active_to));
    let action = match (rec.live.take(), want_live) {
        (None, None) => None,
        (None, Some(mut s)) => {
            rec.revision += 1;
            s.revision = rec.revision;
            rec.live = Some(s.clone());
            Some(Action::CreateGeofence(s))
        }
        (Some(old), Some(mut s)) => {
            s.revision = old.revision;
            if s == old {
                rec.live = Some(old);
                None
            } else {
                st.live_until.remove(&(old.active_to, appt.clone()));
                rec.revision += 1;
                s.revision = rec.revision;
                rec.live = Some(s.clone());
                Some(Action::UpdateGeofence(s))
            }
        }
        (Some(old), None) => {
            st.live_until.remove(&(old.active_to, appt.clone()));
            rec.revision += 1;
            Some(Action::DeleteGeofence { revision: rec.revision, name: old.name })
        }
    };
    let Some(action) = action else { return };
    if let Some(live) = &rec.live {
        st.live_until.insert((live.active_to, appt.clone()));
        rec.last = Some(live.clone());
    }
    let id = command_id(&[ctx.tenant, "geofence", appt.as_str(), &rec.revision.to_string()]);
    out.push(Command { id, appointment: appt.clone(), action });
}
