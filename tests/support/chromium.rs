//! Headless Chromium (Debian's `chromium`), driven over the DevTools protocol on loopback: a
//! real browser loads a page, runs its script, and the test reads the DOM, the network
//! requests it made, and a screenshot.

use super::ChildGuard;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// One browser with one page.
pub struct Browser {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Protocol events received so far (`Network.*`, `Page.*`).
    pub events: Vec<Value>,
    _child: ChildGuard,
    _profile: tempfile::TempDir,
}

/// The DevTools port Chromium writes to `DevToolsActivePort` in its profile once it listens.
fn devtools_port(profile: &std::path::Path, deadline: Instant) -> u16 {
    let file = profile.join("DevToolsActivePort");
    loop {
        let port = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        if let Some(p) = port {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The WebSocket URL of the browser's first page.
fn page_socket(port: u16, deadline: Instant) -> String {
    let c = super::client();
    loop {
        let pages: Vec<Value> = c
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        if let Some(url) = pages
            .iter()
            .find(|p| p["type"] == "page")
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
        {
            return url.to_string();
        }
        assert!(Instant::now() < deadline, "chromium shows no page target");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Browser {
    /// Start headless Chromium on a fresh profile, listening for DevTools on 127.0.0.1 only,
    /// with `Page` and `Network` events on. Panics (it never skips) if `chromium` is missing.
    pub fn start() -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromium ({e}): install Debian's `chromium` (scripts/deps.sh does)")
            });
        let child = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = devtools_port(profile.path(), deadline);
        let url = page_socket(port, deadline);
        let (ws, _) =
            tungstenite::connect(url.as_str()).expect("connect to the page's DevTools socket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
        }
        let mut b = Browser {
            ws,
            next_id: 0,
            events: Vec::new(),
            _child: child,
            _profile: profile,
        };
        b.call("Page.enable", json!({}));
        b.call("Network.enable", json!({}));
        b
    }

    /// Call `method` and return its result; events that arrive meanwhile are kept.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).expect("send to chromium");
        loop {
            let m = self.ws.read().expect("read from chromium");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Open `url` in the page.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluate `expr` in the page and return its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Poll `expr` until it is `true` or `timeout` passes; whether it became true. An
    /// exception (e.g. no `document.body` yet while the page loads) counts as false.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return false; }} }})()");
        loop {
            if self.eval(&guarded) == Value::Bool(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the page as it is now, written to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The requests the page made so far: (URL, bytes received on the wire, or 0 while
    /// unfinished).
    pub fn requests(&mut self) -> Vec<(String, f64)> {
        self.call("Runtime.evaluate", json!({ "expression": "1" })); // collect pending events
        let mut out: Vec<(String, String, f64)> = Vec::new();
        for e in &self.events {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Network.requestWillBeSent") => {
                    let url = p["request"]["url"].as_str().unwrap_or("").to_string();
                    out.push((p["requestId"].as_str().unwrap_or("").to_string(), url, 0.0));
                }
                Some("Network.loadingFinished") => {
                    let id = p["requestId"].as_str().unwrap_or("");
                    if let Some(r) = out.iter_mut().rev().find(|r| r.0 == id) {
                        r.2 = p["encodedDataLength"].as_f64().unwrap_or(0.0);
                    }
                }
                _ => {}
            }
        }
        out.into_iter().map(|(_, u, n)| (u, n)).collect()
    }
}
