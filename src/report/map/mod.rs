//! The live dispatch map (design §1.7): a tenant's appointments, their
//! fences and the live vehicle positions on one page, served by the report
//! server at `/map/{tenant}` behind the report's token.
//!
//! - `track`: each vehicle's newest fix and recent path (pure);
//! - `eta`: the ETA of a technician En Route and whether it runs late (pure);
//! - `view`: what the map shows of a tenant's day: fences with their state,
//!   colour and explanation, vehicles with their technician (pure);
//! - `geojson`: the view as RFC 7946 GeoJSON (pure);
//! - `page`: the self-contained page and its Content-Security-Policy (pure;
//!   the renderer is `page.js`);
//! - `positions`: the replica of the pings topic (tracks, breadcrumbs);
//! - `live`: views kept fresh from the replicas and streamed to pages;
//! - `routes`: the HTTP routes.
//!
//! Decisions are made in the pure modules from event time only (the
//! tenant's newest fix); `positions`, `live` and `routes` do the I/O.

pub mod eta;
pub mod geojson;
pub mod live;
pub mod page;
pub mod positions;
pub mod routes;
pub mod track;
pub mod view;

/// Tenant `acme` in New York, with `extra` TOML lines (unit tests).
#[cfg(test)]
pub(crate) fn test_tenant(extra: &str) -> crate::config::tenants::Tenant {
    let text = format!("[[tenants]]\nname = \"acme\"\ntimezone = \"America/New_York\"\n{extra}");
    crate::config::tenants::parse(&text, "t.toml").unwrap().remove(0)
}
