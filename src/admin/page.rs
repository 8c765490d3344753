//! The status page: `GET /` on the admin listener. Its first paint is rendered here, from the
//! same JSON the API serves, so it reads without JavaScript; `status.js` then redraws it from
//! `GET /overview` every 2 s. The HTML, CSS and script are in the binary: no CDN, no build step.

use crate::observe::events::Event;
use serde_json::Value;
use std::fmt::Write;

const CSS: &str = include_str!("page/status.css");
const JS: &str = include_str!("page/status.js");

/// The page's own headers: no inline script or style runs, no other origin is contacted, and
/// no other site may frame it (its buttons drain backends).
pub(super) const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// The static asset at `path`: content type and bytes.
pub(super) fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/status.css" => Some(("text/css; charset=utf-8", CSS)),
        "/status.js" => Some(("text/javascript; charset=utf-8", JS)),
        _ => None,
    }
}

/// Column headers of a backend table (`status.js` draws the same columns).
const COLUMNS: [&str; 13] = [
    "backend",
    "health",
    "circuit",
    "state",
    "in flight",
    "req/s",
    "errors",
    "EWMA ms",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "ramp",
    "",
];

/// `s` escaped for HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => esc(s),
        Value::Number(n) => n.to_string(),
        other => esc(&other.to_string()),
    }
}

/// Unix milliseconds as RFC 3339 UTC, as the access log writes time.
fn when(unix_ms: u64) -> String {
    let mut out = Vec::with_capacity(32);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    crate::observe::access_log::write_rfc3339(&mut out, t);
    String::from_utf8_lossy(&out).into_owned()
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "—".into(), |f| format!("{f:.2}"))
}

/// The state column: draining, ramping, in rotation or out.
fn state(b: &Value) -> &'static str {
    let ramp = b["ramp"].as_f64();
    if b["enabled"] == Value::Bool(false) {
        "draining"
    } else if ramp.is_some_and(|r| r < 1.0) {
        "ramping"
    } else if b["in_rotation"] == Value::Bool(true) {
        "in rotation"
    } else {
        "out"
    }
}

fn backend_row(out: &mut String, b: &Value) {
    let health = if b["healthy"] == Value::Bool(true) {
        "up"
    } else {
        "down"
    };
    let circuit = b["filters"]["circuit"].as_str().unwrap_or("closed");
    let addr = text(&b["address"]);
    let backup = if b["backup"] == Value::Bool(true) {
        " (backup)"
    } else {
        ""
    };
    let state = state(b);
    let q = &b["latency_ms"];
    let ramp = b["ramp"]
        .as_f64()
        .map_or_else(|| "—".into(), |r| format!("{:.0}%", r * 100.0));
    let circuit = esc(circuit);
    let _ = write!(
        out,
        "<tr data-backend=\"{addr}\" data-health=\"{health}\" data-circuit=\"{circuit}\">\
         <td>{addr}{backup}</td><td class=\"{health}\">{health}</td>\
         <td class=\"{circuit}\">{circuit}</td><td class=\"{}\">{state}</td>\
         <td class=\"n\">{}</td><td class=\"n\">—</td><td class=\"n\">—</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{ramp}</td><td></td></tr>",
        state.replace(' ', "_"),
        text(&b["inflight"]),
        ms(&b["latency_ewma_ms"]),
        ms(&q["p50"]),
        ms(&q["p95"]),
        ms(&q["p99"]),
    );
}

fn upstream_section(out: &mut String, up: &Value) {
    let name = text(&up["name"]);
    let hidden = if up["panic"] == Value::Bool(true) {
        ""
    } else {
        " hidden"
    };
    let _ = write!(
        out,
        "<section><h2>{name} <small>{}</small> <span class=\"panic{hidden}\">panic: \
         every enabled backend serves</span></h2><table data-upstream=\"{name}\"><thead><tr>",
        text(&up["strategy"]),
    );
    for c in COLUMNS {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for b in up["backends"].as_array().into_iter().flatten() {
        backend_row(out, b);
    }
    out.push_str("</tbody></table></section>");
}

fn reload_box(out: &mut String, status: &Value) {
    let r = &status["last_reload"];
    out.push_str("<div id=\"reload\">");
    if r.is_null() {
        out.push_str("<span class=\"muted\">no reload since start</span>");
    } else {
        let result = text(&r["result"]);
        let _ = write!(
            out,
            "<span>{} · {} · </span><span class=\"{result}\">{result}</span><ul class=\"msgs\">",
            when(r["at_unix"].as_u64().unwrap_or(0) * 1000),
            text(&r["trigger"]),
        );
        for m in r["messages"].as_array().into_iter().flatten() {
            let _ = write!(out, "<li>{}</li>", text(m));
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>");
}

fn events_table(out: &mut String, events: &[Event]) {
    out.push_str(
        "<table id=\"events\"><thead><tr><th>at</th><th>kind</th><th>scope</th>\
         <th>backend</th><th>from</th><th>to</th><th>why</th></tr></thead><tbody>",
    );
    for e in events {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            when(e.at_unix_ms),
            e.kind,
            esc(&e.scope),
            esc(&e.backend),
            esc(&e.from),
            esc(&e.to.replace(' ', "_")),
            esc(&e.to),
            esc(&e.why),
        );
    }
    out.push_str("</tbody></table>");
}

/// The whole page for `status` (`GET /status`), `upstreams` (`GET /upstreams`) and the last
/// transitions.
pub(super) fn render(status: &Value, upstreams: &Value, events: &[Event]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>portcullis status</title>\
         <link rel=\"stylesheet\" href=\"/status.css\"><script src=\"/status.js\" defer></script>\
         </head><body><form id=\"auth\" class=\"hidden\"><input type=\"password\" \
         autocomplete=\"off\"> <button>set token</button></form><h1>portcullis</h1>\
         <div class=\"meta\">version {} · pid {} · config {} · generation <span id=\"generation\">{}</span> \
         · up <span id=\"uptime\">{} s</span> · <span id=\"refreshed\">server-rendered</span></div>",
        text(&status["version"]),
        text(&status["pid"]),
        text(&status["config_file"]),
        text(&status["config_generation"]),
        text(&status["uptime_seconds"]),
    );
    for up in upstreams["upstreams"].as_array().into_iter().flatten() {
        upstream_section(&mut out, up);
    }
    out.push_str("<h2>Last reload</h2>");
    reload_box(&mut out, status);
    out.push_str("<h2>Last transitions <small>health and circuit, newest first</small></h2>");
    events_table(&mut out, events);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_what_an_upstream_or_a_reload_message_says() {
        let status = json!({ "version": "0.1.0", "pid": 1, "config_file": "<x>", "config_generation": 2,
            "uptime_seconds": 3, "last_reload": { "at_unix": 4, "trigger": "admin API",
            "result": "failure", "messages": ["a.yaml:3: <script>alert(1)</script>"] } });
        let ups = json!({ "upstreams": [{ "name": "a\"b", "strategy": "round_robin", "panic": false,
            "backends": [{ "address": "127.0.0.1:1", "healthy": false, "enabled": true,
            "in_rotation": false, "inflight": 0, "latency_ms": null, "ramp": null,
            "filters": { "circuit": "open" } }] }] });
        let events = [Event::now(
            "circuit",
            "<r>".into(),
            "127.0.0.1:1".into(),
            "closed",
            "open",
            "5 of 5 failed",
        )];
        let html = render(&status, &ups, &events);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("data-upstream=\"a&quot;b\""));
        assert!(html
            .contains("data-backend=\"127.0.0.1:1\" data-health=\"down\" data-circuit=\"open\""));
        assert!(html.contains("<td>&lt;r&gt;</td>"));
        assert!(html.contains("<span class=\"failure\">failure</span>"));
    }

    #[test]
    fn serves_its_assets_and_nothing_else() {
        assert!(asset("/status.js")
            .is_some_and(|(t, b)| t.starts_with("text/javascript") && b.contains("/overview")));
        assert!(asset("/status.css").is_some());
        assert!(asset("/../Cargo.toml").is_none());
    }
}
