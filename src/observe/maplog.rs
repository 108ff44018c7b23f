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
//! With port blocks (`--port-block-size`, RFC 6888 REQ-14) the log has one line per block
//! claimed and one per block released instead (inside address, public address, port range):
//! every mapping of a subscriber lies in one of its blocks, so the block lines say everything the
//! mapping lines would, in up to N times fewer lines.
//!
//! Lines go to the tracing target `rnat::mapping` at INFO level, plain or JSON (`--log-format`).

use crate::nat::{Engine, PortBlock, Proto, SessionInfo, Time};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::net::SocketAddrV4;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The key of a mapping.
pub type MappingKey = (Proto, SocketAddrV4, SocketAddrV4);

/// The mappings seen at the previous tick and when each was first seen.
#[derive(Default)]
pub struct MappingLog {
    live: HashMap<MappingKey, Instant>,
    blocks: HashMap<BlockKey, Instant>,
}

/// The key of a port block: inside address, public address, first port, size.
pub type BlockKey = (Ipv4Addr, Ipv4Addr, u16, u16);

/// Blocks claimed and released between two ticks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockChanges {
    pub allocated: Vec<BlockKey>,
    /// With how long each block was held.
    pub released: Vec<(BlockKey, std::time::Duration)>,
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

    /// Compares `blocks` with the previous tick.
    pub fn diff_blocks(&mut self, blocks: &[PortBlock], now: Instant) -> BlockChanges {
        let mut current = HashMap::with_capacity(blocks.len());
        let mut ch = BlockChanges::default();
        for b in blocks {
            let k = (b.inside, b.public, b.first_port, b.size);
            let since = match self.blocks.get(&k) {
                Some(t) => *t,
                None => {
                    ch.allocated.push(k);
                    now
                }
            };
            current.insert(k, since);
        }
        for (k, since) in &self.blocks {
            if !current.contains_key(k) {
                ch.released.push((*k, now.duration_since(*since)));
            }
        }
        self.blocks = current;
        ch.allocated.sort();
        ch.released.sort();
        ch
    }

    /// One tick of the log for `engine`: block lines in block mode, else mapping lines.
    pub fn tick_engine(&mut self, engine: &Engine, now: Time) {
        if engine.config().port_block_size != 0 {
            let ch = self.diff_blocks(&engine.port_blocks(), Instant::now());
            log_blocks(&ch);
        } else {
            self.tick(&engine.sessions(now));
        }
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
        let ch = self.diff_blocks(&[], Instant::now());
        log_blocks(&ch);
    }
}

fn log_blocks(ch: &BlockChanges) {
    let t = unix_now();
    for (inside, public, first, size) in &ch.allocated {
        let last = first + (size - 1);
        tracing::info!(
            target: "rnat::mapping",
            event = "block-allocated",
            inside = %inside,
            public = %public,
            ports = %format!("{first}-{last}"),
            time = t,
            "port block allocated"
        );
    }
    for ((inside, public, first, size), held) in &ch.released {
        let last = first + (size - 1);
        tracing::info!(
            target: "rnat::mapping",
            event = "block-released",
            inside = %inside,
            public = %public,
            ports = %format!("{first}-{last}"),
            time = t,
            duration_s = held.as_secs(),
            "port block released"
        );
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

    #[test]
    fn blocks_log_once_per_claim_and_release() {
        use crate::nat::PortBlock;
        let b = |first: u16| PortBlock {
            inside: "192.168.1.2".parse().unwrap(),
            public: "203.0.113.1".parse().unwrap(),
            first_port: first,
            size: 64,
            in_use: 3,
        };
        let mut l = super::MappingLog::new();
        let t = std::time::Instant::now();
        let ch = l.diff_blocks(&[b(1024)], t);
        assert_eq!(ch.allocated.len(), 1);
        // More mappings in the same block: nothing to log.
        let ch = l.diff_blocks(
            &[PortBlock {
                in_use: 40,
                ..b(1024)
            }],
            t,
        );
        assert_eq!(ch, super::BlockChanges::default());
        let ch = l.diff_blocks(&[b(1024), b(4096)], t);
        assert_eq!(
            ch.allocated,
            vec![(b(4096).inside, b(4096).public, 4096, 64)]
        );
        let ch = l.diff_blocks(&[b(4096)], t);
        assert_eq!(ch.released.len(), 1);
        assert_eq!(ch.released[0].0.2, 1024);
    }
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
