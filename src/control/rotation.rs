//! What the control plane remembers about rotation beyond the backends' own state: ejections
//! (an open circuit) with their deadlines, and ramps (slow start) with their start times. Both
//! are keyed by (upstream, address), so one address in two upstreams ramps or is ejected in
//! each on its own terms.

use crate::runtime::ramp::{Rotation, SlowStart};
use crate::runtime::Upstream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Key = (Arc<str>, SocketAddr);

/// One member ramping in.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    start: Instant,
    slow: SlowStart,
}

/// Ejections and ramps, owned by the writer.
#[derive(Default)]
pub struct Rotations {
    ejected: HashMap<Key, Instant>,
    ramps: HashMap<Key, Ramp>,
    /// When the ramps are next refreshed (`None` while nobody ramps).
    next_tick: Option<Instant>,
}

/// One upstream's view of [`Rotations`] at one instant: what its selector is built from.
pub struct View<'a> {
    rot: &'a Rotations,
    upstream: &'a Arc<str>,
    now: Instant,
}

impl Rotation for View<'_> {
    fn ejected(&self, addr: SocketAddr) -> bool {
        self.rot
            .ejected
            .contains_key(&(Arc::clone(self.upstream), addr))
    }

    fn ramp(&self, addr: SocketAddr) -> f32 {
        match self.rot.ramps.get(&(Arc::clone(self.upstream), addr)) {
            Some(r) => r.slow.factor(self.now.saturating_duration_since(r.start)),
            None => 1.0,
        }
    }
}

impl Rotations {
    /// `upstream`'s view now.
    pub fn view<'a>(&'a self, upstream: &'a Arc<str>) -> View<'a> {
        View {
            rot: self,
            upstream,
            now: Instant::now(),
        }
    }

    /// Keep `addr` out of `upstream` until `until`.
    pub fn eject(&mut self, upstream: Arc<str>, addr: SocketAddr, until: Instant) {
        self.ramps.remove(&(Arc::clone(&upstream), addr));
        self.ejected.insert((upstream, addr), until);
    }

    /// Start `addr`'s ramp in `u` now, if `u` ramps members in.
    pub fn start_ramp(&mut self, u: &Upstream, addr: SocketAddr) {
        let Some(slow) = u.slow_start else { return };
        log::info!(
            "backend {addr} of upstream {} ramps in over {:?}",
            u.name,
            slow.window
        );
        let now = Instant::now();
        self.ramps
            .insert((Arc::clone(&u.name), addr), Ramp { start: now, slow });
        let tick = now + slow.tick();
        self.next_tick = Some(self.next_tick.map_or(tick, |t| t.min(tick)));
    }

    /// The next instant something changes by itself: an ejection ends or the ramps move.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ejection = self.ejected.values().min().copied();
        match (ejection, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// End the ejections whose time is up; the (upstream, address) pairs that rejoin.
    pub fn expire(&mut self, now: Instant) -> Vec<Key> {
        let mut ended = Vec::new();
        self.ejected.retain(|key, until| {
            let keep = *until > now;
            if !keep {
                log::info!("backend {} of upstream {} rejoins rotation", key.1, key.0);
                ended.push(key.clone());
            }
            keep
        });
        ended
    }

    /// When the ramps are due: drop those that are complete and name the upstreams whose
    /// selectors must be rebuilt (with the ramps moved on, or complete). Empty when not due.
    pub fn tick(&mut self, now: Instant) -> Vec<Arc<str>> {
        if self.next_tick.is_none_or(|t| t > now) {
            return Vec::new();
        }
        let mut due: Vec<Arc<str>> = Vec::new();
        let mut next: Option<Duration> = None;
        self.ramps.retain(|(u, addr), r| {
            if !due.contains(u) {
                due.push(Arc::clone(u));
            }
            let done = now.saturating_duration_since(r.start) >= r.slow.window;
            if done {
                log::info!("backend {addr} of upstream {u} has ramped in");
            } else {
                next = Some(next.map_or(r.slow.tick(), |t| t.min(r.slow.tick())));
            }
            !done
        });
        self.next_tick = next.map(|t| now + t);
        due
    }

    /// After a reload: forget what concerns upstreams or members that are gone, and take each
    /// remaining ramp's settings from its upstream (a ramp ends where slow start was removed).
    pub fn retain(&mut self, upstreams: &[Arc<Upstream>]) {
        let find = |name: &Arc<str>| upstreams.iter().find(|u| u.name == *name);
        self.ejected.retain(|(u, _), _| find(u).is_some());
        self.ramps.retain(|(u, addr), r| {
            match find(u)
                .filter(|u| u.contains(*addr))
                .and_then(|u| u.slow_start)
            {
                Some(slow) => {
                    r.slow = slow;
                    true
                }
                None => false,
            }
        });
    }
}
