//! Snapshots of the translation table, so that sessions survive a restart of the gateway.
//!
//! [`Engine::snapshot`] writes every live session (with its mapping) into a self-contained byte
//! string; [`Engine::restore`] recreates them in a fresh engine: each mapping gets back its exact
//! public address and port, each session its remote endpoint, TCP state, flags and counters.
//! Records the current configuration no longer allows (public address or port gone, inside
//! address outside the inside prefixes, a removed forward), records that have expired meanwhile,
//! and records that conflict with what the table already holds are skipped and counted in the
//! [`RestoreReport`]. A corrupt, truncated or foreign file is refused as a whole with a
//! [`SnapshotError`], before anything is changed; it never panics.
//!
//! # Format, version 1
//!
//! All integers big-endian.
//!
//! ```text
//! offset        size  field
//! 0             8     magic "RNATSNAP"
//! 8             2     version (1)
//! 10            2     record length in bytes (46)
//! 12            8     the table's hash seed (lets the next start keep paired pooling)
//! 20            4     number of records N
//! 24            46·N  records
//! 24 + 46·N     4     CRC-32 (IEEE 802.3, as zlib's crc32) of all preceding bytes
//! ```
//!
//! A record (one session):
//!
//! ```text
//! 0   1  protocol: IP protocol number (1 ICMP, 6 TCP, 17 UDP)
//! 1   1  TCP state (1 SYN_SENT .. 7 RESET, see tcp::TcpState), 0 for UDP and ICMP
//! 2   1  session flags: bit 0 created by an inbound packet
//! 3   1  mapping flags: bit 0 static (a port forward)
//! 4   4  inside address       8   2  inside port (ICMP: query identifier)
//! 10  4  public address       14  2  public port
//! 16  4  remote address       20  2  remote port
//! 22  8  idle age in milliseconds when the snapshot was taken
//! 30  4  packets out          34  4  packets in          38  8  bytes
//! ```
//!
//! Times are stored as idle ages, not engine times: the engine clock starts afresh with each
//! process. A restored session's `last_seen` is `now - idle` (clamped at the engine's time zero).

use super::engine::Quota;
use super::portmap::M_PCP;
use super::table::{F_INBOUND_CREATED, M_STATIC, map_hash, owner_word};
use super::tcp::TcpState;
use super::{Engine, Proto, Time};
use crate::wire::bytes::{be16, be32};
use std::time::Duration;

/// The first bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"RNATSNAP";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
const HEADER: usize = 24;
const RECORD: usize = 46;
const TRAILER: usize = 4;

/// Why a snapshot was refused. Nothing in the table changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not an rnat snapshot (bad magic)")]
    NotASnapshot,
    #[error("snapshot truncated: {len} bytes, at least {need} needed")]
    Truncated { len: usize, need: usize },
    #[error("snapshot format version {found}, this rnat reads version {supported}")]
    Version { found: u16, supported: u16 },
    #[error("snapshot record length {found}, version {VERSION} has {RECORD}")]
    RecordLength { found: u16 },
    #[error("snapshot length {len} bytes does not match its {records} records ({expected} bytes)")]
    Length {
        len: usize,
        records: u32,
        expected: usize,
    },
    #[error("snapshot checksum mismatch (corrupt file)")]
    Checksum,
    #[error("snapshot record {index}: {what}")]
    BadRecord { index: usize, what: &'static str },
}

/// What [`Engine::restore`] did with the records of a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Records in the snapshot.
    pub records: usize,
    /// Sessions recreated.
    pub sessions: usize,
    /// Mappings recreated (each with its former public port).
    pub mappings: usize,
    /// Skipped: idle past their timeout by now.
    pub expired: usize,
    /// Skipped: the configuration no longer allows them (public address or port not configured,
    /// inside address outside the inside prefixes, forward removed).
    pub invalid: usize,
    /// Skipped: the public port or the inside endpoint is taken by something else, or the
    /// session exists already.
    pub conflicts: usize,
    /// Skipped: no room (table full, or a per-subscriber quota reached).
    pub no_room: usize,
}

impl RestoreReport {
    /// Records not restored, for whatever reason.
    pub fn dropped(&self) -> usize {
        self.expired + self.invalid + self.conflicts + self.no_room
    }
}

/// One decoded record.
#[derive(Debug, Clone, Copy)]
struct Record {
    proto: Proto,
    state: u8,
    s_flags: u8,
    m_flags: u16,
    in_ip: u32,
    in_port: u16,
    pub_ip: u32,
    pub_port: u16,
    rem_ip: u32,
    rem_port: u16,
    idle: Duration,
    pkts_out: u32,
    pkts_in: u32,
    bytes: u64,
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE), the same as zlib's `crc32`.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

fn be64(b: &[u8], at: usize) -> u64 {
    (be32(b, at) as u64) << 32 | be32(b, at + 4) as u64
}

/// Checks magic, version, length and checksum; returns the seed and the record bytes.
fn open(bytes: &[u8]) -> Result<(u64, &[u8]), SnapshotError> {
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(SnapshotError::NotASnapshot);
    }
    if bytes.len() < HEADER + TRAILER {
        return Err(SnapshotError::Truncated {
            len: bytes.len(),
            need: HEADER + TRAILER,
        });
    }
    let version = be16(bytes, 8);
    if version != VERSION {
        return Err(SnapshotError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let rec_len = be16(bytes, 10);
    if rec_len as usize != RECORD {
        return Err(SnapshotError::RecordLength { found: rec_len });
    }
    let records = be32(bytes, 20);
    let expected = (records as usize)
        .checked_mul(RECORD)
        .and_then(|r| r.checked_add(HEADER + TRAILER))
        .unwrap_or(usize::MAX);
    if bytes.len() < expected {
        return Err(SnapshotError::Truncated {
            len: bytes.len(),
            need: expected,
        });
    }
    if bytes.len() != expected {
        return Err(SnapshotError::Length {
            len: bytes.len(),
            records,
            expected,
        });
    }
    let body = &bytes[..expected - TRAILER];
    if crc32(body) != be32(bytes, expected - TRAILER) {
        return Err(SnapshotError::Checksum);
    }
    Ok((be64(bytes, 12), &body[HEADER..]))
}

/// The table seed stored in a valid snapshot (the gateway starts its engine with it, so that
/// paired pooling and shard placement stay as they were).
pub fn seed(bytes: &[u8]) -> Result<u64, SnapshotError> {
    open(bytes).map(|(s, _)| s)
}

fn decode(index: usize, r: &[u8]) -> Result<Record, SnapshotError> {
    let bad = |what| SnapshotError::BadRecord { index, what };
    let proto = Proto::from_ip(r[0]).ok_or(bad("unknown protocol"))?;
    let state = r[1];
    match proto {
        Proto::Tcp if TcpState::from_u8(state).is_none() => return Err(bad("bad TCP state")),
        Proto::Udp | Proto::Icmp if state != 0 => return Err(bad("TCP state on a non-TCP record")),
        _ => {}
    }
    let s_flags = r[2];
    if s_flags & !F_INBOUND_CREATED != 0 {
        return Err(bad("unknown session flags"));
    }
    let m_flags = r[3] as u16;
    if m_flags & !M_STATIC != 0 {
        return Err(bad("unknown mapping flags"));
    }
    Ok(Record {
        proto,
        state,
        s_flags,
        m_flags,
        in_ip: be32(r, 4),
        in_port: be16(r, 8),
        pub_ip: be32(r, 10),
        pub_port: be16(r, 14),
        rem_ip: be32(r, 16),
        rem_port: be16(r, 20),
        idle: Duration::from_millis(be64(r, 22)),
        pkts_out: be32(r, 30),
        pkts_in: be32(r, 34),
        bytes: be64(r, 38),
    })
}

impl Engine {
    /// Every live session of the table, in the snapshot format (see the module documentation).
    /// Sessions already expired at `now` are left out. Allocates; control plane only. Each shard
    /// is locked in turn, briefly: traffic keeps flowing while a snapshot is taken.
    pub fn snapshot(&self, now: Time) -> Vec<u8> {
        let t = &self.table;
        let publics = &self.config().public_addrs;
        let mut out = Vec::with_capacity(HEADER + TRAILER);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(RECORD as u16).to_be_bytes());
        out.extend_from_slice(&t.seed.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let mut n: u32 = 0;
        for shard in t.shards.iter() {
            let sh = shard.lock();
            out.reserve(sh.sessions.live() * RECORD);
            for id in 0..sh.sessions.high_water() as u32 {
                let s = *sh.sessions.get(id);
                if s.proto == 0 || self.session_expired(s.proto, s.state, s.last_seen, now) {
                    continue;
                }
                let m = *sh.mappings.get(s.mapping);
                let Some(public) = publics.get(m.pub_idx as usize) else {
                    continue;
                };
                let idle = now.saturating_sub(s.last_seen).as_millis();
                out.push(s.proto);
                out.push(s.state);
                out.push(s.flags & F_INBOUND_CREATED);
                // An explicit (PCP) mapping's session is written as an ordinary one: the client
                // re-creates the mapping after the restart (the PCP epoch starts again).
                let forward = m.flags & M_STATIC != 0 && m.flags & M_PCP == 0;
                out.push(forward as u8);
                out.extend_from_slice(&s.in_ip.to_be_bytes());
                out.extend_from_slice(&s.in_port.to_be_bytes());
                out.extend_from_slice(&u32::from(*public).to_be_bytes());
                out.extend_from_slice(&m.pub_port.to_be_bytes());
                out.extend_from_slice(&s.rem_ip.to_be_bytes());
                out.extend_from_slice(&s.rem_port.to_be_bytes());
                out.extend_from_slice(&(idle.min(u64::MAX as u128) as u64).to_be_bytes());
                out.extend_from_slice(&s.pkts_out.to_be_bytes());
                out.extend_from_slice(&s.pkts_in.to_be_bytes());
                out.extend_from_slice(&s.bytes.to_be_bytes());
                n += 1;
            }
        }
        out[20..24].copy_from_slice(&n.to_be_bytes());
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Recreates the sessions of a snapshot taken by [`Engine::snapshot`] (usually by an earlier
    /// process) at engine time `now`. The whole file is checked first: on error nothing changes.
    /// Then each record is restored or skipped (and counted) on its own; see [`RestoreReport`].
    pub fn restore(&self, bytes: &[u8], now: Time) -> Result<RestoreReport, SnapshotError> {
        let (_, body) = open(bytes)?;
        let records: Vec<Record> = body
            .chunks_exact(RECORD)
            .enumerate()
            .map(|(i, r)| decode(i, r))
            .collect::<Result<_, _>>()?;
        let mut rep = RestoreReport {
            records: records.len(),
            ..RestoreReport::default()
        };
        for r in &records {
            match self.restore_one(r, now) {
                Ok(fresh_mapping) => {
                    rep.sessions += 1;
                    rep.mappings += fresh_mapping as usize;
                }
                Err(Skip::Expired) => rep.expired += 1,
                Err(Skip::Invalid) => rep.invalid += 1,
                Err(Skip::Conflict) => rep.conflicts += 1,
                Err(Skip::NoRoom) => rep.no_room += 1,
            }
        }
        Ok(rep)
    }

    /// Restores one record; `Ok(true)` when it also created its mapping.
    fn restore_one(&self, r: &Record, now: Time) -> Result<bool, Skip> {
        let t = &self.table;
        let seed = t.seed;
        let p = r.proto.ip_number();
        // Expired by now? (`idle >= timeout`, asked without needing a representable last_seen.)
        if self.session_expired(p, r.state, Time::ZERO, Time::ZERO + r.idle) {
            return Err(Skip::Expired);
        }
        let pub_idx = t.addrs.public_index(r.pub_ip).ok_or(Skip::Invalid)?;
        if !t.addrs.in_port_ranges(r.pub_port) || !t.addrs.is_inside_source(r.in_ip) {
            return Err(Skip::Invalid);
        }
        let last_seen = Time::from_nanos(
            now.as_nanos()
                .saturating_sub(r.idle.as_nanos().min(u64::MAX as u128) as u64),
        );
        let si = t.shard_of(map_hash(seed, p, r.in_ip, r.in_port));
        let mut guard = t.shards[si].lock();
        let sh = &mut *guard;
        let (mid, fresh) = match sh.find_mapping(seed, p, r.in_ip, r.in_port) {
            Some(mid) => {
                let m = *sh.mappings.get(mid);
                if m.pub_idx != pub_idx || m.pub_port != r.pub_port {
                    return Err(Skip::Conflict);
                }
                if sh
                    .find_session(seed, p, r.in_ip, r.in_port, r.rem_ip, r.rem_port)
                    .is_some()
                {
                    return Err(Skip::Conflict);
                }
                (mid, false)
            }
            None => {
                // A forward's session whose forward is gone from the configuration.
                if r.m_flags & M_STATIC != 0 {
                    return Err(Skip::Invalid);
                }
                if !self.quota(r.in_ip, true) {
                    return Err(Skip::NoRoom);
                }
                let Some(mid) = sh.add_mapping(seed, p, r.in_ip, r.in_port, pub_idx, r.pub_port)
                else {
                    self.unquota(r.in_ip, true);
                    return Err(Skip::NoRoom);
                };
                if !self.claim_single(
                    pub_idx,
                    r.proto,
                    r.pub_port,
                    owner_word(si, mid),
                    now.secs_u32(),
                ) {
                    sh.drop_empty_mapping(seed, mid);
                    self.unquota(r.in_ip, true);
                    return Err(Skip::Conflict);
                }
                (mid, true)
            }
        };
        let undo_mapping = |sh: &mut super::table::Shard| {
            if fresh {
                sh.drop_empty_mapping(seed, mid);
                t.ports.release(pub_idx, r.proto, r.pub_port, 0);
                self.unquota(r.in_ip, true);
            }
        };
        if !self.quota(r.in_ip, false) {
            undo_mapping(sh);
            return Err(Skip::NoRoom);
        }
        let Some(sid) = sh.add_session(
            seed, mid, r.rem_ip, r.rem_port, r.state, r.s_flags, last_seen,
        ) else {
            self.unquota(r.in_ip, false);
            undo_mapping(sh);
            return Err(Skip::NoRoom);
        };
        let s = sh.sessions.get_mut(sid);
        s.pkts_out = r.pkts_out;
        s.pkts_in = r.pkts_in;
        s.bytes = r.bytes;
        Ok(fresh)
    }

    /// Takes one port (`ports`) or session from `ip`'s quota, if quotas are configured.
    fn quota(&self, ip: u32, ports: bool) -> bool {
        let q = if ports { Quota::Port } else { Quota::Session };
        self.quota_take(ip, q).is_ok()
    }

    fn unquota(&self, ip: u32, ports: bool) {
        self.quota_give(ip, if ports { Quota::Port } else { Quota::Session });
    }
}

enum Skip {
    Expired,
    Invalid,
    Conflict,
    NoRoom,
}
