//! The mirrored vendor entities, in the shape the engine needs. Connectors
//! map vendor payloads onto these; scenario files spell them directly.

use serde::{Deserialize, Serialize};

use super::{Id, Ts};

/// A ServiceTrade user (admin or technician).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: Id,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default = "yes")]
    pub tech: bool,
}

/// A ServiceTrade location: a point (`lat`/`lon`) and optionally its own
/// fence polygon as `[[lat, lon], ...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub id: Id,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub polygon: Option<Vec<[f64; 2]>>,
    /// IANA zone used when rendering times for this location.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The location's primary contact ([`Contact`]): who the Service Link
    /// goes to (ServiceTrade's `primaryContactId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_contact: Option<Id>,
    /// The offices ([`Office`]) serving this location, the first being its
    /// own (ServiceTrade's `officeIds`): the office of its jobs' report rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offices: Vec<Id>,
}

impl Location {
    /// The office this location's appointments belong to: the first of `offices`.
    pub fn office(&self) -> Option<&Id> {
        self.offices.first()
    }
}

/// A ServiceTrade office: one of the account's own (vendor) locations,
/// which serve customer locations (`Location::offices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Office {
    pub id: Id,
    #[serde(default)]
    pub name: String,
}

/// A ServiceTrade contact: a person at customer locations, the recipient
/// of a Service Link when a location names them its primary contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub id: Id,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    /// The locations the contact belongs to (`GET /contact?locationId=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Id>,
}

/// A ServiceTrade job, at one location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: Id,
    /// The job number shown to people (`J-1001`); may be numeric.
    pub number: Option<Id>,
    #[serde(default)]
    pub location: Option<Id>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Unscheduled,
    Scheduled,
    CanceledByVendor,
    CanceledByCustomer,
    Completed,
    NoShow,
    /// The appointment was deleted upstream; kept for the report.
    Deleted,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Unscheduled => "unscheduled",
            AppointmentStatus::Scheduled => "scheduled",
            AppointmentStatus::CanceledByVendor => "canceled_by_vendor",
            AppointmentStatus::CanceledByCustomer => "canceled_by_customer",
            AppointmentStatus::Completed => "completed",
            AppointmentStatus::NoShow => "no_show",
            AppointmentStatus::Deleted => "deleted",
        }
    }
}

/// A ServiceTrade appointment: a window on a job, worked by technicians.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appointment {
    pub id: Id,
    #[serde(default)]
    pub job: Option<Id>,
    pub status: AppointmentStatus,
    #[serde(default)]
    pub window_start: Option<Ts>,
    #[serde(default)]
    pub window_end: Option<Ts>,
    #[serde(default)]
    pub techs: Vec<Id>,
}

impl Appointment {
    /// The window, when both ends are present and in order.
    pub fn window(&self) -> Option<(Ts, Ts)> {
        match (self.window_start, self.window_end) {
            (Some(s), Some(e)) if s <= e => Some((s, e)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    Enroute,
    Onsite,
    Offsite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockAction {
    In,
    Out,
}

impl Activity {
    /// The name ServiceTrade and the schemas use (`enroute`, `onsite`, `offsite`).
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Enroute => "enroute",
            Activity::Onsite => "onsite",
            Activity::Offsite => "offsite",
        }
    }
}

impl ClockAction {
    /// `in` or `out`, as ServiceTrade's `eventType` and the schemas say.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockAction::In => "in",
            ClockAction::Out => "out",
        }
    }
}

/// A ServiceTrade clock event (a technician pressing a status, or geoclock
/// acting for them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockEvent {
    pub user: Id,
    pub appointment: Id,
    pub activity: Activity,
    pub action: ClockAction,
    pub time: Ts,
}

/// An Azuga driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Driver {
    pub id: Id,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// An Azuga vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vehicle {
    pub id: Id,
    #[serde(default)]
    pub name: String,
}

/// A driver paired with a vehicle over `[from, to)`; `to: None` is open-ended.
/// Identity is `(driver, vehicle, from)`: an upsert with the same identity
/// replaces the previous record (typically to set `to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pairing {
    pub driver: Id,
    pub vehicle: Id,
    pub from: Ts,
    #[serde(default)]
    pub to: Option<Ts>,
}

/// A GPS position report from a vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    pub vehicle: Id,
    pub time: Ts,
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub speed_mph: Option<f64>,
    /// Reported horizontal accuracy, metres, when the tracker sends it.
    #[serde(default)]
    pub accuracy_m: Option<f64>,
}

fn yes() -> bool {
    true
}

/// The matching key for technician ↔ driver: trimmed and lower-cased.
/// Returns `None` for a missing or blank address.
pub fn normalize_email(email: Option<&str>) -> Option<String> {
    let e = email?.trim();
    if e.is_empty() {
        None
    } else {
        Some(e.to_lowercase())
    }
}

/// A deliverable-looking address: one `@`, a non-empty local part, a dotted
/// domain with no empty labels, no whitespace or control characters.
pub fn valid_email(email: &str) -> bool {
    let e = email.trim();
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|l| !l.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_matching_key() {
        assert_eq!(normalize_email(Some("  Ann@Acme.Example ")), Some("ann@acme.example".into()));
        assert_eq!(normalize_email(Some("   ")), None);
        assert_eq!(normalize_email(None), None);
    }

    #[test]
    fn email_validity() {
        assert!(valid_email("fm@plant.example"));
        assert!(valid_email(" fm@plant.example "));
        for bad in [
            "",
            "fm",
            "fm@",
            "@plant.example",
            "fm@plant",
            "fm@@plant.example",
            "f m@plant.example",
            "fm@plant..example",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
