//! The mapping log (`--log-mappings`, RFC 6888 REQ-12): one line when a mapping is created and
//! one when it ends, with protocol, inside endpoint, public endpoint and time — no destination.
//!
//! The engine has no event hook yet, so this is done in the control plane: once a second, after
//! the expiry sweep, the set of mappings (distinct protocol, inside endpoint, public endpoint over
//! [`crate::nat::Engine::sessions`]) is compared with the previous one. Consequences, documented
//! for operators:
//! - one-second resolution: a line's timestamp is the tick that saw the change, up to a second
//!   (plus the expiry sweep's second) after the event;
//! - a mapping created and ended between two ticks is never logged;
//! - each tick copies the whole table (O(sessions)), so this costs control-plane CPU on big
//!   tables. An engine event ring (created/ended records pushed by the workers, drained by the
//!   control plane) would give exact times, miss nothing, and cost O(events) instead.
//!
//! Lines go to the tracing target `rnat::mapping` at INFO level, plain or JSON (`--log-format`).

use crate::nat::{Proto, SessionInfo};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The key of a mapping.
pub type MappingKey = (Proto, SocketAddrV4, SocketAddrV4);

/// The mappings seen at the previous tick and when each was first seen.
#[derive(Default)]
pub struct MappingLog {
    live: HashMap<MappingKey, Instant>,
}

/// What changed between two ticks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<MappingKey>,
    /// With how long each mapping was seen.
    pub ended: Vec<(MappingKey, std::time::Duration)>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl MappingLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares `sessions` with the previous tick and returns the changes (sorted).
    pub fn diff(&mut self, sessions: &[SessionInfo], now: Instant) -> Changes {
        let mut current: HashMap<MappingKey, Instant> = HashMap::with_capacity(self.live.len());
        let mut ch = Changes::default();
        for s in sessions {
            let k = (s.proto, s.inside, s.public);
            if current.contains_key(&k) {
                continue;
            }
            let since = match self.live.get(&k) {
                Some(t) => *t,
                None => {
                    ch.created.push(k);
                    now
                }
            };
            current.insert(k, since);
        }
        for (k, since) in &self.live {
            if !current.contains_key(k) {
                ch.ended.push((*k, now.duration_since(*since)));
            }
        }
        self.live = current;
        ch.created.sort_by_key(|k| (k.0 as u8, k.1, k.2));
        ch.ended.sort_by_key(|(k, _)| (k.0 as u8, k.1, k.2));
        ch
    }

    /// Diffs and logs.
    pub fn tick(&mut self, sessions: &[SessionInfo]) {
        let ch = self.diff(sessions, Instant::now());
        log(&ch);
    }

    /// Logs every live mapping as ended (at shutdown).
    pub fn finish(&mut self) {
        let ch = self.diff(&[], Instant::now());
        log(&ch);
    }
}

fn log(ch: &Changes) {
    let t = unix_now();
    for (p, inside, public) in &ch.created {
        tracing::info!(
            target: "rnat::mapping",
            event = "created",
            proto = p.name(),
            inside = %inside,
            public = %public,
            time = t,
            "mapping created"
        );
    }
    for ((p, inside, public), lived) in &ch.ended {
        tracing::info!(
            target: "rnat::mapping",
            event = "ended",
            proto = p.name(),
            inside = %inside,
            public = %public,
            time = t,
            duration_s = lived.as_secs(),
            "mapping ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn s(p: Proto, inside: &str, public: &str, remote: &str) -> SessionInfo {
        SessionInfo {
            proto: p,
            inside: inside.parse().unwrap(),
            public: public.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state: "ACTIVE",
            idle: Duration::ZERO,
            expires_in: Duration::ZERO,
            pkts_out: 1,
            pkts_in: 0,
            bytes: 0,
            inbound_created: false,
        }
    }

    #[test]
    fn one_mapping_for_many_sessions_created_then_ended() {
        let mut m = MappingLog::new();
        let t0 = Instant::now();
        let a = s(
            Proto::Udp,
            "10.0.0.2:5000",
            "203.0.113.1:5000",
            "1.1.1.1:53",
        );
        let b = s(
            Proto::Udp,
            "10.0.0.2:5000",
            "203.0.113.1:5000",
            "8.8.8.8:53",
        );
        let ch = m.diff(&[a.clone(), b.clone()], t0);
        assert_eq!(ch.created.len(), 1);
        assert!(ch.ended.is_empty());
        let ch = m.diff(&[b], t0 + Duration::from_secs(3));
        assert_eq!(ch, Changes::default());
        let ch = m.diff(&[], t0 + Duration::from_secs(5));
        assert!(ch.created.is_empty());
        assert_eq!(ch.ended.len(), 1);
        assert_eq!(ch.ended[0].1, Duration::from_secs(5));
    }
}
