//! Offices and contacts in the engine's state: who a Service Link goes to
//! and which office an appointment belongs to.
//!
//! Invariants:
//! - An appointment's office is its job's location's first office
//!   ([`crate::model::Location::office`]); an office decides nothing, it
//!   only names report rows, so an office change refreshes no appointment.
//! - A Service Link goes to the job's location's primary contact when that
//!   contact is mirrored with a valid email, else to the location's own
//!   valid email ([`State::link_recipient`]). A contact (or a location's
//!   primary contact) changing refreshes the appointments at the locations
//!   naming it, so a failed link is retried whichever topic arrives last.

use std::collections::BTreeSet;

use super::state::{Reason, State};
use crate::model::{valid_email, Contact, Id, Location, Office};

impl State {
    /// Upserts or removes an office; no appointment depends on one.
    pub fn put_office(&mut self, id: &Id, new: Option<Office>) -> BTreeSet<Id> {
        match new {
            Some(o) => self.offices.insert(id.clone(), o),
            None => self.offices.remove(id),
        };
        BTreeSet::new()
    }

    /// Upserts or removes a contact; returns the appointments at the
    /// locations naming it their primary contact (when it changed).
    pub fn put_contact(&mut self, id: &Id, new: Option<Contact>) -> BTreeSet<Id> {
        let old = match new {
            Some(c) => self.contacts.insert(id.clone(), c),
            None => self.contacts.remove(id),
        };
        if old.as_ref() == self.contacts.get(id) {
            return BTreeSet::new();
        }
        let locations: Vec<Id> = self.index.locations_by_contact.get(id).into_iter().flatten().cloned().collect();
        self.appts_at_locations(&locations)
    }

    /// The address a Service Link for an appointment at `loc` goes to: the
    /// primary contact's valid email, else the location's, trimmed.
    pub fn link_recipient(&self, loc: &Location) -> Result<String, Reason> {
        let contact = loc.primary_contact.as_ref().and_then(|c| self.contacts.get(c));
        contact
            .and_then(|c| c.email.as_deref())
            .into_iter()
            .chain(loc.email.as_deref())
            .find(|e| valid_email(e))
            .map(|e| e.trim().to_string())
            .ok_or(Reason::NoContactEmail)
    }

    /// The office of an appointment (by its job's location) and the
    /// office's name when it is mirrored.
    pub fn office_of(&self, appointment: &Id) -> Option<(Id, Option<String>)> {
        let job = self.appointments.get(appointment)?.job.as_ref()?;
        let loc = self.jobs.get(job)?.location.as_ref()?;
        let office = self.locations.get(loc)?.office()?;
        Some((office.clone(), self.offices.get(office).map(|o| o.name.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Event};
    use crate::model::{Appointment, AppointmentStatus, Job, Settings};

    fn loc(email: Option<&str>, contact: Option<&str>) -> Location {
        Location {
            id: Id::text("L"),
            name: "Plant".into(),
            lat: Some(35.0),
            lon: Some(-80.0),
            email: email.map(Into::into),
            polygon: None,
            timezone: None,
            primary_contact: contact.map(Id::text),
            offices: vec![Id::text("O1"), Id::text("O2")],
        }
    }

    fn contact(email: Option<&str>) -> Contact {
        Contact { id: Id::text("C"), name: "Pat".into(), email: email.map(Into::into), locations: vec![Id::text("L")] }
    }

    #[test]
    fn the_primary_contact_first_then_the_location() {
        let mut st = State::default();
        let l = loc(Some(" fm@plant.example "), Some("C"));
        assert_eq!(st.link_recipient(&l).as_deref(), Ok("fm@plant.example"), "contact not mirrored yet");
        st.put_contact(&Id::text("C"), Some(contact(Some("pat@plant.example"))));
        assert_eq!(st.link_recipient(&l).as_deref(), Ok("pat@plant.example"));
        st.put_contact(&Id::text("C"), Some(contact(Some("pat at plant"))));
        assert_eq!(st.link_recipient(&l).as_deref(), Ok("fm@plant.example"), "invalid contact email");
        assert_eq!(st.link_recipient(&loc(Some("nope"), Some("C"))), Err(Reason::NoContactEmail));
        assert_eq!(st.link_recipient(&loc(None, None)), Err(Reason::NoContactEmail));
    }

    #[test]
    fn a_contact_refreshes_the_appointments_at_its_locations_and_offices_name_rows() {
        let mut e = Engine::new("t", Settings::default()).unwrap();
        let mut out = Vec::new();
        for ev in [
            Event::Location(loc(None, Some("C"))),
            Event::Job(Job { id: Id::text("J"), number: None, location: Some(Id::text("L")) }),
            Event::Appointment(Appointment {
                id: Id::text("A"),
                job: Some(Id::text("J")),
                status: AppointmentStatus::Scheduled,
                window_start: None,
                window_end: None,
                techs: vec![],
            }),
        ] {
            e.handle(&ev, &mut out).unwrap();
        }
        let st = &mut e.state;
        assert_eq!(
            st.put_contact(&Id::text("C"), Some(contact(Some("pat@plant.example")))),
            BTreeSet::from([Id::text("A")])
        );
        assert!(st.put_contact(&Id::text("C"), Some(contact(Some("pat@plant.example")))).is_empty(), "unchanged");
        assert!(
            st.put_contact(&Id::text("X"), Some(Contact { id: Id::text("X"), ..contact(None) })).is_empty(),
            "no location names it"
        );
        assert_eq!(st.office_of(&Id::text("A")), Some((Id::text("O1"), None)));
        st.put_office(&Id::text("O1"), Some(Office { id: Id::text("O1"), name: "Charlotte".into() }));
        assert_eq!(st.office_of(&Id::text("A")), Some((Id::text("O1"), Some("Charlotte".into()))));
        st.put_location(&Id::text("L"), Some(loc(None, None)));
        assert!(st.put_contact(&Id::text("C"), None).is_empty(), "no longer the primary contact");
    }
}
