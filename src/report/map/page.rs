//! The map page: one self-contained HTML document (its style and script
//! are in the binary: `page.css`, `page.js`) whose script draws the map
//! on a canvas in Web Mercator, with the tenant's raster tiles behind it
//! when a tile server answers and a plain background when none does.
//! Pure.
//!
//! Invariants: the page loads nothing but its GeoJSON, its event stream
//! (same origin) and, for images only, tiles from the tenant's tile
//! origin; [`content_security_policy`] allows exactly that, its own style
//! and script by hash, and no framing. The page's settings travel as a
//! JSON data block (not executed, so outside `script-src`) with `<`
//! escaped, so no value can end the block.

use base64::Engine as _;
use chrono::NaiveDate;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::view::FenceState;
use crate::config::tenants::Tenant;
use crate::model::MapSettings;
use crate::report::render::escape;

/// The page's style.
pub const STYLE: &str = include_str!("page.css");
/// The page's script: the renderer.
pub const SCRIPT: &str = include_str!("page.js");

fn sha256_source(s: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes())))
}

/// The page's `Content-Security-Policy` (see the module docs).
pub fn content_security_policy(map: &MapSettings) -> String {
    let img = map.tile_origin().unwrap_or_else(|| "'none'".into());
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src {img}; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
}

/// The page's settings (the JSON data block); `link` is the signed link's
/// query (`expires=…&sig=…`) the script adds to its requests.
pub fn config(tenant: &Tenant, day: Option<NaiveDate>, link: &str) -> serde_json::Value {
    let states: Vec<_> =
        FenceState::ALL.iter().map(|s| json!({"key": s.as_str(), "label": s.label(), "color": s.color()})).collect();
    json!({
        "tenant": tenant.name,
        "day": day.map(|d| d.to_string()),
        "link": link,
        "base": format!("/map/{}", tenant.name),
        "report": format!("/report/{}", tenant.name),
        "tileUrl": tenant.map.tile_url,
        "attribution": tenant.map.tile_attribution,
        "staleAfterS": tenant.map.stale_after_s,
        "timezone": tenant.timezone.as_deref().unwrap_or("UTC"),
        "states": states,
    })
}

/// The page of `tenant`'s map for `day` (`None`: the live day), its
/// requests signed with `link`.
pub fn page(tenant: &Tenant, day: Option<NaiveDate>, link: &str) -> String {
    // `<` cannot appear in the block, so neither can `</script>`.
    let data = config(tenant, day, link).to_string().replace('<', "\\u003c");
    let t = escape(&tenant.name);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Dispatch map · {t}</title>\n<style>{STYLE}</style></head>\n<body data-stream=\"connecting\">\n\
<header><h1>Dispatch map: {t}</h1><span id=\"day\">{day}</span>\
<a id=\"report-link\" href=\"#\">Activity Report</a><span id=\"status\">connecting</span></header>\n\
<aside><div id=\"controls\">\
<select id=\"f-sort\" aria-label=\"Sort\"><option value=\"window\">late first, by window</option>\
<option value=\"status\">late first, by status</option></select>\
<select id=\"f-status\" aria-label=\"Status\"><option value=\"\">every status</option></select>\
<select id=\"f-tech\" aria-label=\"Technician\"><option value=\"\">every technician</option></select>\
<span id=\"count\"></span></div>\
<div id=\"list\"><table><tbody></tbody></table></div></aside>\n\
<main id=\"map\"><canvas id=\"base\"></canvas><canvas id=\"top\"></canvas>\
<div id=\"zoom\"><button id=\"zoom-in\" title=\"Zoom in\">+</button><button id=\"zoom-out\" title=\"Zoom out\">\u{2212}</button>\
<button id=\"zoom-fit\" title=\"Fit\">\u{2922}</button></div>\
<div id=\"legend\"></div><div id=\"attribution\"></div><div id=\"banner\" hidden></div>\
<div id=\"panel\" hidden><button class=\"close\" id=\"panel-close\" title=\"Close\">\u{d7}</button><div id=\"panel-content\"></div></div>\
</main>\n\
<script type=\"application/json\" id=\"geoclock-config\">{data}</script>\n\
<script>{SCRIPT}</script>\n</body></html>\n",
        day = day.map(|d| d.to_string()).unwrap_or_else(|| "today".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::map::test_tenant;

    #[test]
    fn the_page_is_self_contained_and_its_policy_allows_only_its_own_code_and_the_tiles() {
        let t = test_tenant("");
        let html = page(&t, Some("2026-11-28".parse().unwrap()), "expires=1&sig=ab");
        assert_eq!(html.matches("<script").count(), 2, "the data block and the script");
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        assert!(!SCRIPT.contains("</") && !STYLE.contains("</"), "neither can end its element");
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "nothing loaded from elsewhere");
        let csp = content_security_policy(&t.map);
        assert!(csp.contains(&sha256_source(SCRIPT)) && csp.contains(&sha256_source(STYLE)));
        assert!(csp.contains("img-src https://tile.openstreetmap.org;"), "{csp}");
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        let cfg: serde_json::Value = serde_json::from_str(
            html.split("id=\"geoclock-config\">").nth(1).unwrap().split("</script>").next().unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["day"], "2026-11-28");
        assert_eq!(cfg["base"], "/map/acme");
        assert_eq!(cfg["link"], "expires=1&sig=ab");
        assert_eq!(cfg["timezone"], "America/New_York");
        assert_eq!(cfg["states"].as_array().unwrap().len(), FenceState::ALL.len());
    }

    #[test]
    fn without_tiles_no_image_is_allowed_and_no_value_escapes_the_data_block() {
        let t =
            test_tenant("[tenants.map]\ntile_url = \"\"\ntile_attribution = \"</script><script>alert(1)</script>\"\n");
        let csp = content_security_policy(&t.map);
        assert!(csp.contains("img-src 'none'"), "{csp}");
        let html = page(&t, None, "");
        assert_eq!(html.matches("</script>").count(), 2);
        assert!(html.contains("\\u003c/script>\\u003cscript>alert(1)"));
    }
}
