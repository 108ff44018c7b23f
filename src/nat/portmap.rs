//! Explicit port mappings requested by subscribers (RFC 6888 REQ-9, served by PCP/NAT-PMP in the
//! control plane): create, renew and delete an inbound mapping for an inside endpoint, and PEER
//! (create or refresh the session towards one remote).
//!
//! An explicit mapping is an ordinary table `Mapping` pinned like a port forward (`M_STATIC`, so
//! the packet path treats it exactly like one: open to any remote, kept when its last session
//! ends, reachable by hairpinning) and marked `M_PCP`. Its lifetime lives in a control-plane side
//! table ([`Explicit`], one mutex, never touched per packet); [`Engine::expire`] unpins the
//! mappings whose lifetime is over: a mapping without sessions then ends (its port rests for the
//! cool-down), one with sessions becomes ordinary and ends with its last session.
//!
//! A request for an endpoint that already has a dynamic mapping pins that mapping: the same public
//! port (endpoint-independent mapping, RFC 4787 REQ-1). A new mapping takes a port from the
//! subscriber's port quota, on the subscriber's paired public address, the suggested port when it
//! lies in the port ranges and is free, else another one chosen like a dynamic mapping's.
//! Explicit mappings are not written to snapshots (their sessions are, as ordinary ones): after a
//! restart the PCP epoch starts again and clients re-create their mappings (RFC 6887 §8.5).

use super::engine::{Flow, Quota};
use super::table::{M_STATIC, Shard, map_hash, mix, owner_word};
use super::tcp::TcpState;
use super::{DropReason, Engine, Proto, Time, Worker};
use crate::wire::proto;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Mapping flag: an explicit (PCP/NAT-PMP) mapping, pinned with `M_STATIC` while it lives.
pub(crate) const M_PCP: u16 = 2;

/// At most this many explicit mappings per inside address (besides the port quota).
pub const EXPLICIT_PER_SUBSCRIBER: usize = 128;

/// A request for an explicit inbound mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// TCP or UDP.
    pub proto: Proto,
    /// The inside endpoint to map.
    pub inside: SocketAddrV4,
    /// Preferred public port; 0: none (the inside port is tried first).
    pub suggested_port: u16,
    /// Preferred public address; `None` (or the unspecified address): none.
    pub suggested_addr: Option<Ipv4Addr>,
    /// How long the mapping should live; zero deletes it.
    pub lifetime: Duration,
    /// Fail rather than give another port or address than the suggested ones (PCP PREFER_FAILURE).
    pub prefer_failure: bool,
    /// PCP's mapping nonce: a renewal or deletion must carry the nonce the mapping was created
    /// with. `None` (NAT-PMP): not checked.
    pub nonce: Option<[u8; 12]>,
}

/// What was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapGrant {
    pub proto: Proto,
    pub inside: SocketAddrV4,
    /// The public endpoint (unspecified after a deletion of a mapping that did not exist).
    pub public: SocketAddrV4,
    /// Zero after a deletion.
    pub lifetime: Duration,
}

/// Why a request was refused (each maps onto a PCP result code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("not authorized (not an inside address, another owner, or a static forward)")]
    NotAuthorized,
    #[error("protocol not supported")]
    UnsupportedProtocol,
    #[error("the subscriber is at its quota")]
    Quota,
    #[error("no resources (table full or no public port left)")]
    NoResources,
    #[error("the suggested external address or port cannot be provided")]
    CannotProvideExternal,
}

/// An explicit mapping as the control plane lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    pub proto: Proto,
    pub inside: SocketAddrV4,
    pub public: SocketAddrV4,
    pub expires_in: Duration,
    /// Live sessions using the mapping.
    pub sessions: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    expires: Time,
    nonce: Option<[u8; 12]>,
}

/// The lifetimes of the explicit mappings, keyed by (IP protocol, inside address, inside port).
/// Control plane only.
#[derive(Default)]
pub(crate) struct Explicit {
    entries: HashMap<(u8, u32, u16), Entry>,
}

impl Explicit {
    fn count_for(&self, ip: u32) -> usize {
        self.entries.keys().filter(|k| k.1 == ip).count()
    }
}

/// Addresses that are never an inside host: 0/8, loopback, multicast and reserved, the gateway's.
fn never_inside(sets: &super::table::AddrSets, ip: u32) -> bool {
    let top = ip >> 24;
    top == 0 || top == 127 || top >= 224 || sets.is_local(ip)
}

fn refused(r: DropReason) -> MapError {
    match r {
        DropReason::Quota => MapError::Quota,
        DropReason::Martian | DropReason::Spoofed => MapError::NotAuthorized,
        _ => MapError::NoResources,
    }
}

impl Engine {
    /// The public address an inside address is paired with (RFC 4787 REQ-2).
    pub fn paired_public(&self, inside: Ipv4Addr) -> Ipv4Addr {
        self.config().public_addrs[self.paired_index(u32::from(inside)) as usize]
    }

    /// Whether `ip` is a host rnat serves: in the inside prefixes, and not a special address or
    /// one of the gateway's own.
    pub fn is_subscriber(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.table.addrs.is_inside_source(ip) && !never_inside(&self.table.addrs, ip)
    }

    fn paired_index(&self, ip: u32) -> u8 {
        let n = self.config().public_addrs.len() as u64;
        (mix(self.table.seed, ip as u64, 0x9a1) % n) as u8
    }

    /// Creates, renews (`lifetime` > 0) or deletes (`lifetime` 0) an explicit inbound mapping;
    /// see the module docs. Control plane only (takes the explicit-mapping lock and one shard's).
    pub fn map(&self, req: &MapRequest, now: Time) -> Result<MapGrant, MapError> {
        let p = match req.proto {
            Proto::Tcp | Proto::Udp => req.proto.ip_number(),
            Proto::Icmp => return Err(MapError::UnsupportedProtocol),
        };
        let (ip, port) = (u32::from(*req.inside.ip()), req.inside.port());
        let sets = &self.table.addrs;
        if port == 0 || !sets.is_inside_source(ip) || never_inside(sets, ip) {
            return Err(MapError::NotAuthorized);
        }
        let seed = self.table.seed;
        let pub_idx = self.paired_index(ip);
        let paired = self.config().public_addrs[pub_idx as usize];
        let other_addr = req
            .suggested_addr
            .is_some_and(|a| !a.is_unspecified() && a != paired);
        let mut ex = self.explicit.lock();
        let key = (p, ip, port);
        let si = self.table.shard_of(map_hash(seed, p, ip, port));
        let mut guard = self.table.shards[si].lock();
        let sh: &mut Shard = &mut guard;
        let existing = sh.find_mapping(seed, p, ip, port);
        let entry = ex.entries.get(&key).copied();
        if let (Some(e), Some(n)) = (entry, req.nonce)
            && e.nonce.is_some_and(|x| x != n)
        {
            return Err(MapError::NotAuthorized);
        }
        let public_of = |sh: &Shard, mid: u32| {
            let m = sh.mappings.get(mid);
            SocketAddrV4::new(self.config().public_addrs[m.pub_idx as usize], m.pub_port)
        };
        if req.lifetime.is_zero() {
            let public = match existing {
                Some(mid) => {
                    let m = *sh.mappings.get(mid);
                    if m.flags & M_STATIC != 0 && m.flags & M_PCP == 0 {
                        return Err(MapError::NotAuthorized);
                    }
                    let public = public_of(sh, mid);
                    if entry.is_some() {
                        ex.entries.remove(&key);
                        self.unpin(sh, mid, now);
                    }
                    public
                }
                None => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            };
            return Ok(MapGrant {
                proto: req.proto,
                inside: req.inside,
                public,
                lifetime: Duration::ZERO,
            });
        }
        if entry.is_none() && ex.count_for(ip) >= EXPLICIT_PER_SUBSCRIBER {
            return Err(MapError::Quota);
        }
        let mid = match existing {
            Some(mid) => {
                let m = sh.mappings.get_mut(mid);
                if m.flags & M_STATIC != 0 && m.flags & M_PCP == 0 {
                    // A port forward: permanent already, and not ours to change.
                    let public = public_of(sh, mid);
                    return Ok(MapGrant {
                        proto: req.proto,
                        inside: req.inside,
                        public,
                        lifetime: req.lifetime,
                    });
                }
                let moved = req.suggested_port != 0 && req.suggested_port != m.pub_port;
                if req.prefer_failure && (moved || other_addr) {
                    return Err(MapError::CannotProvideExternal);
                }
                m.flags |= M_STATIC | M_PCP;
                mid
            }
            None => {
                if req.prefer_failure && other_addr {
                    return Err(MapError::CannotProvideExternal);
                }
                self.quota_take(ip, Quota::Port).map_err(refused)?;
                let Some(mid) = sh.add_mapping(seed, p, ip, port, pub_idx, 0) else {
                    self.quota_give(ip, Quota::Port);
                    return Err(MapError::NoResources);
                };
                let (word, now_s) = (owner_word(si, mid), now.secs_u32());
                let want = if req.suggested_port != 0 {
                    req.suggested_port
                } else {
                    port
                };
                let claimed = if sets.in_port_ranges(want)
                    && self.claim_single(pub_idx, req.proto, want, word, now_s)
                {
                    Ok(want)
                } else if req.prefer_failure && req.suggested_port != 0 {
                    Err(MapError::CannotProvideExternal)
                } else {
                    self.claim_port(sh, pub_idx, req.proto, want, word, now_s)
                        .ok_or(MapError::NoResources)
                };
                match claimed {
                    Ok(pp) => {
                        let m = sh.mappings.get_mut(mid);
                        m.pub_port = pp;
                        m.flags = M_STATIC | M_PCP;
                    }
                    Err(e) => {
                        sh.drop_empty_mapping(seed, mid);
                        self.quota_give(ip, Quota::Port);
                        return Err(e);
                    }
                }
                mid
            }
        };
        let nonce = req.nonce.or(entry.and_then(|e| e.nonce));
        ex.entries.insert(
            key,
            Entry {
                expires: now + req.lifetime,
                nonce,
            },
        );
        Ok(MapGrant {
            proto: req.proto,
            inside: req.inside,
            public: public_of(sh, mid),
            lifetime: req.lifetime,
        })
    }

    /// Deletes every explicit mapping of `inside` for `proto` (PCP/NAT-PMP "all ports" delete).
    /// Returns how many were deleted.
    pub fn unmap_all(&self, proto: Proto, inside: Ipv4Addr, now: Time) -> usize {
        let (p, ip) = (proto.ip_number(), u32::from(inside));
        let mut ex = self.explicit.lock();
        let keys: Vec<(u8, u32, u16)> = ex
            .entries
            .keys()
            .filter(|k| k.0 == p && k.1 == ip)
            .copied()
            .collect();
        for k in &keys {
            ex.entries.remove(k);
            self.unpin_key(*k, now);
        }
        keys.len()
    }

    /// Ends the explicit mappings whose lifetime is over (called by [`Engine::expire`]).
    pub(super) fn expire_explicit(&self, now: Time) -> usize {
        let mut ex = self.explicit.lock();
        if ex.entries.is_empty() {
            return 0;
        }
        let gone: Vec<(u8, u32, u16)> = ex
            .entries
            .iter()
            .filter(|(_, e)| now >= e.expires)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            ex.entries.remove(k);
            self.unpin_key(*k, now);
        }
        gone.len()
    }

    fn unpin_key(&self, (p, ip, port): (u8, u32, u16), now: Time) {
        let seed = self.table.seed;
        let si = self.table.shard_of(map_hash(seed, p, ip, port));
        let mut sh = self.table.shards[si].lock();
        if let Some(mid) = sh.find_mapping(seed, p, ip, port) {
            self.unpin(&mut sh, mid, now);
        }
    }

    /// Makes an explicit mapping ordinary again: without sessions it ends now (its port rests for
    /// the cool-down and goes back to the subscriber's quota), else with its last session.
    fn unpin(&self, sh: &mut Shard, mid: u32, now: Time) {
        let m = sh.mappings.get_mut(mid);
        if m.flags & M_PCP == 0 {
            return;
        }
        m.flags &= !(M_STATIC | M_PCP);
        if m.sessions == 0 {
            let m = *m;
            sh.drop_empty_mapping(self.table.seed, mid);
            let until = (now + self.live.cooldown()).secs_u32().saturating_add(1);
            self.release_mapping_port(&m, until);
            self.quota_give(m.in_ip, Quota::Port);
        }
    }

    /// The explicit mappings, for display (allocates; control plane only).
    pub fn explicit_mappings(&self, now: Time) -> Vec<MappingInfo> {
        let seed = self.table.seed;
        let ex = self.explicit.lock();
        let mut out = Vec::with_capacity(ex.entries.len());
        for (&(p, ip, port), e) in &ex.entries {
            let Some(proto) = Proto::from_ip(p) else {
                continue;
            };
            let si = self.table.shard_of(map_hash(seed, p, ip, port));
            let sh = self.table.shards[si].lock();
            let Some(mid) = sh.find_mapping(seed, p, ip, port) else {
                continue;
            };
            let m = sh.mappings.get(mid);
            out.push(MappingInfo {
                proto,
                inside: SocketAddrV4::new(ip.into(), port),
                public: SocketAddrV4::new(
                    self.config().public_addrs[m.pub_idx as usize],
                    m.pub_port,
                ),
                expires_in: e.expires.saturating_sub(now),
                sessions: m.sessions,
            });
        }
        out.sort_by_key(|m| (m.proto as u8, m.inside));
        out
    }

    /// Number of live explicit mappings.
    pub fn explicit_count(&self) -> usize {
        self.explicit.lock().entries.len()
    }
}

impl Worker {
    /// PCP PEER: creates (or refreshes) the session from `inside` to `remote` as an outbound
    /// packet would, and returns its public endpoint and how long it lives without traffic (the
    /// session's idle timeout). Counted like a session created by traffic.
    pub fn peer(
        &self,
        proto: Proto,
        inside: SocketAddrV4,
        remote: SocketAddrV4,
        now: Time,
    ) -> Result<(SocketAddrV4, Duration), MapError> {
        let e = self.engine();
        let p = match proto {
            Proto::Tcp | Proto::Udp => proto.ip_number(),
            Proto::Icmp => return Err(MapError::UnsupportedProtocol),
        };
        let (src, dst) = (u32::from(*inside.ip()), u32::from(*remote.ip()));
        let sets = &e.table.addrs;
        if inside.port() == 0 || !sets.is_inside_source(src) || never_inside(sets, src) {
            return Err(MapError::NotAuthorized);
        }
        if remote.port() == 0 || sets.is_martian_remote(dst) {
            return Err(MapError::NotAuthorized);
        }
        let fl = Flow {
            proto,
            l4: 0,
            src,
            dst,
            sport: inside.port(),
            dport: remote.port(),
            tcp_flags: if p == proto::TCP {
                crate::wire::Tcp::SYN
            } else {
                0
            },
            ip_len: 0,
            hairpin: false,
        };
        let (pub_ip, pub_port) = self.lookup_out(&fl, now).map_err(refused)?;
        // The session's state after the lookup decides its timeout.
        let seed = e.table.seed;
        let si = e.table.shard_of(map_hash(seed, p, src, inside.port()));
        let state = {
            let sh = e.table.shards[si].lock();
            sh.find_session(seed, p, src, inside.port(), dst, remote.port())
                .map_or(TcpState::SynOut as u8, |id| sh.sessions.get(id).state)
        };
        let state = if p == proto::TCP { state } else { 0 };
        Ok((
            SocketAddrV4::new(pub_ip.into(), pub_port),
            e.live.timeout(p, state),
        ))
    }
}
