//! An [`Explanation`] as text: what `geoclock explain` prints and the
//! report server shows behind a row. Pure; times in UTC.

use super::explain::{ClockFact, Decision, Explanation, TechView};
use crate::engine::Evidence;
use crate::geo::Shape;
use crate::model::Ts;

fn t(ts: Ts) -> String {
    ts.to_rfc3339()
}

fn opt_t(ts: Option<Ts>) -> String {
    ts.map_or_else(|| "open".to_string(), t)
}

fn evidence(e: &Evidence) -> String {
    format!("{} {} at {:.6}, {:.6}, {} m from the centre", t(e.time), e.vehicle, e.lat, e.lon, e.distance_m)
}

fn clocks(c: &[ClockFact]) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter().map(|f| format!("{} {}", f.action, t(f.time))).collect::<Vec<_>>().join(", ")
}

fn shape(s: &Shape) -> String {
    match s {
        Shape::Circle { center, radius_m } => {
            format!("circle of {radius_m} m around {:.6}, {:.6}", center.lat, center.lon)
        }
        Shape::Polygon { ring } => {
            let c = s.center();
            format!("polygon of {} vertices around {:.6}, {:.6}", ring.len(), c.lat, c.lon)
        }
    }
}

fn decision(out: &mut String, indent: &str, d: &Decision) {
    out.push_str(&format!("{indent}{:<13} {:<8} [{}] {}\n", d.what, d.outcome, d.rule, d.because));
    for id in &d.commands {
        out.push_str(&format!("{indent}{:<13} command {id}\n", ""));
    }
}

impl Explanation {
    /// The explanation as text (see the module docs).
    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "Appointment {} (tenant {}): {}\n",
            self.appointment,
            self.tenant,
            self.status.unwrap_or("not held (never seen, or retired by retention)")
        ));
        let job = match (&self.job, &self.job_number) {
            (Some(j), Some(n)) => format!("job {j} ({n})"),
            (Some(j), None) => format!("job {j}"),
            _ => "no job".into(),
        };
        let site = match &self.location {
            Some(l) => format!(
                "location {} \"{}\"{}{}",
                l.id,
                l.name,
                match (l.lat, l.lon) {
                    (Some(a), Some(b)) => format!(" at {a:.6}, {b:.6}"),
                    _ => " without coordinates".into(),
                },
                l.email.as_deref().map(|e| format!(", email {e}")).unwrap_or_default()
            ),
            None => "no known location".into(),
        };
        out.push_str(&format!("  {job}, {site}\n"));
        match &self.window {
            Some(w) => out.push_str(&format!(
                "  window {} to {}; arrivals count from {} to {} (window_hours {})\n",
                t(w.start),
                t(w.end),
                t(w.earliest),
                t(w.latest),
                self.settings.window_hours
            )),
            None => out.push_str("  no window\n"),
        }
        let s = &self.settings;
        out.push_str(&format!(
            "  settings: fence_radius_m {}, min_dwell_s {}, exit_buffer_m {}, min_exit_dwell_s {}, arrival_requires_enroute {}, auto_clock_out_on_exit {}, service_link {}, max_accuracy_m {}, retention_days {}\n",
            s.fence_radius_m,
            s.min_dwell_s,
            s.exit_buffer_m,
            s.min_exit_dwell_s,
            s.arrival_requires_enroute,
            s.auto_clock_out_on_exit,
            s.service_link,
            s.max_accuracy_m.map_or("none".to_string(), |a| a.to_string()),
            s.retention_days
        ));
        let f = &self.fence;
        out.push_str(&format!("Fence: {} (revision {})", f.state, f.revision));
        if let (Some(name), Some(sh)) = (&f.name, &f.shape) {
            out.push_str(&format!(", \"{name}\", {}", shape(sh)));
        }
        if let (Some(a), Some(b)) = (f.active_from, f.active_to) {
            out.push_str(&format!(", active {} to {}", t(a), t(b)));
        }
        out.push('\n');
        decision(&mut out, "  ", &f.decision);
        if let Some(timeline) = &self.timeline {
            out.push_str("Timeline (input order):\n");
            for m in timeline {
                let rt = m.record_time.map(|r| format!(" record {}", t(r))).unwrap_or_default();
                out.push_str(&format!("  #{:<6}{rt} {}\n", m.input, m.what));
            }
        }
        for tech in &self.technicians {
            technician(&mut out, tech);
        }
        if self.technicians.is_empty() {
            out.push_str("No technician (as asked) on the appointment.\n");
        }
        out
    }
}

fn technician(out: &mut String, v: &TechView) {
    out.push_str(&format!(
        "Technician {}{}{}\n",
        v.user,
        v.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
        v.email.as_deref().map(|e| format!(" <{e}>")).unwrap_or_default()
    ));
    match &v.driver {
        Some(d) => out.push_str(&format!("  Azuga driver {d}\n")),
        None => out.push_str("  no Azuga driver with this email\n"),
    }
    for p in &v.pairings {
        out.push_str(&format!("  drove {} from {} to {}\n", p.vehicle, t(p.from), opt_t(p.to)));
    }
    if let Some(g) = &v.pairing_gap {
        out.push_str(&format!("  no vehicle from {} to {}\n", t(g.from), t(g.to)));
    }
    out.push_str(&format!("  En Route: {}\n  On Site: {}\n", clocks(&v.enroute), clocks(&v.onsite)));
    let last_outside = if v.first_inside.is_some() { "last outside before inside" } else { "last outside" };
    let pings: [(&str, Option<&Evidence>); 6] = [
        ("arrival", v.arrival.as_ref()),
        (last_outside, v.last_outside.as_ref()),
        ("first inside in window", v.first_inside.as_ref()),
        ("inside outside the window", v.inside_outside_window.as_ref()),
        ("closest approach", v.closest_approach.as_ref()),
        ("exit", v.exited.as_ref()),
    ];
    for (label, e) in pings {
        if let Some(e) = e {
            out.push_str(&format!("  {label}: {}\n", evidence(e)));
        }
    }
    if let Some(c) = &v.passed_through {
        out.push_str(&format!("  passed through: {} between {} and {}\n", c.vehicle, t(c.from), t(c.to)));
    }
    if let Some(n) = v.pings_tested {
        out.push_str(&format!("  in-window pings tested against the fence: {n}\n"));
    }
    for d in &v.decisions {
        decision(out, "  ", d);
    }
}
