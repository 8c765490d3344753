//! The last state transitions of backends (health verdicts, circuit breakers), for the status
//! page and `GET /events`. Written by the control plane only, a few times a minute at most;
//! never on the request path.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many transitions are kept.
pub const KEPT: usize = 50;

/// Longest `why` kept (a filter's explanation is bounded like any input).
const MAX_WHY: usize = 200;

/// One transition of one backend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock time, Unix milliseconds.
    pub at_unix_ms: u64,
    /// `health` or `circuit`.
    pub kind: &'static str,
    /// The upstreams (health) or the filter's scope (circuit) it concerns.
    pub scope: String,
    /// `ip:port`.
    pub backend: String,
    /// The state it left.
    pub from: String,
    /// The state it entered.
    pub to: String,
    /// Why, in the words of whoever decided.
    pub why: String,
}

impl Event {
    /// A transition happening now; `why` is cut to 200 bytes.
    pub fn now(
        kind: &'static str,
        scope: String,
        backend: String,
        from: &str,
        to: &str,
        why: &str,
    ) -> Event {
        let mut end = why.len().min(MAX_WHY);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        Event {
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            kind,
            scope,
            backend,
            from: from.to_string(),
            to: to.to_string(),
            why: why[..end].to_string(),
        }
    }
}

/// The last [`KEPT`] transitions, oldest first.
#[derive(Debug, Default)]
pub struct EventLog(Mutex<VecDeque<Event>>);

impl EventLog {
    /// Remember `e`, forgetting the oldest beyond [`KEPT`].
    pub fn push(&self, e: Event) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == KEPT {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// The transitions kept, newest first.
    pub fn newest_first(&self) -> Vec<Event> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_fifty_newest_first() {
        let log = EventLog::default();
        for i in 0..60 {
            log.push(Event::now(
                "health",
                "u".into(),
                format!("b{i}"),
                "up",
                "down",
                "x",
            ));
        }
        let all = log.newest_first();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].backend, "b59");
        assert_eq!(all[KEPT - 1].backend, "b10");
    }

    #[test]
    fn cuts_a_long_reason_on_a_char_boundary() {
        let why = "é".repeat(150);
        let e = Event::now("circuit", "r".into(), "b".into(), "closed", "open", &why);
        assert_eq!(e.why.len(), 200);
        assert!(e.why.chars().all(|c| c == 'é'));
    }
}
