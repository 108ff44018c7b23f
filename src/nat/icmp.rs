//! ICMP error translation (RFC 5508 REQ-3..6, RFC 5382 REQ-9/10, RFC 4787 REQ-12).
//!
//! An ICMP error quotes the packet that caused it. Crossing the NAT, both the outer header and the
//! quoted one must be translated, consistently with the session the quoted packet belongs to:
//! - inbound (a router or host outside reports on a packet rnat sent out): the quoted packet has
//!   the public address and port as its *source*; they become the inside endpoint again, and the
//!   outer destination becomes that inside address (REQ-4);
//! - outbound (an inside host reports on a packet rnat delivered to it): the quoted packet has the
//!   inside endpoint as its *destination*; it becomes the public endpoint, and so does the outer
//!   source (REQ-5).
//!
//! Checks: the ICMP checksum (REQ-3) and the quoted IP header's checksum (REQ-3a) must be right;
//! options of the quoted header are walked (REQ-3b); the quoted transport checksum is not checked
//! (REQ-3c) but is kept consistent when it is present in the quote; ICMP extensions (RFC 4884) are
//! just bytes covered by the ICMP checksum, which is recomputed over the whole message (REQ-3d).
//! Type and code are kept. An error never creates, refreshes or ends a session (REQ-6, RFC 4787
//! REQ-12, RFC 5382 REQ-10): the session is only looked up. An error with no matching session is
//! dropped (REQ-4: SHOULD).

use super::engine::{L3, Worker};
use super::stats::{Counter, DropReason};
use super::table::{Shard, map_hash, owner_parts};
use super::{Direction, Proto, Time, Verdict};
use crate::wire::bytes::{be16, be32, put16, put32};
use crate::wire::checksum::{self, update16, update32};
use crate::wire::{Icmp, proto};

/// Where the pieces of an ICMP error sit in the frame.
struct Quoted {
    /// Offset of the ICMP header, and end of the ICMP message.
    icmp: usize,
    end: usize,
    /// Offset of the quoted IP header and of its transport header.
    ip: usize,
    l4: usize,
    proto: Proto,
    src: u32,
    dst: u32,
    /// Quoted ports (ICMP: the identifier as both).
    sport: u16,
    dport: u16,
}

/// Is `f` (a validated IPv4 frame) an ICMP error message?
pub(super) fn is_icmp_error(f: &[u8]) -> bool {
    if f.len() < L3 + 20 || f[L3 + 9] != proto::ICMP {
        return false;
    }
    let l4 = L3 + ((f[L3] & 0x0f) as usize) * 4;
    f.len() > l4
        && matches!(
            f[l4],
            Icmp::DEST_UNREACHABLE | Icmp::TIME_EXCEEDED | Icmp::PARAMETER_PROBLEM
        )
}

/// Parses and checks an ICMP error frame. The outer IPv4 header was validated by the caller.
fn parse(f: &[u8]) -> Result<Quoted, DropReason> {
    let ihl = ((f[L3] & 0x0f) as usize) * 4;
    let total = be16(f, L3 + 2) as usize;
    let icmp = L3 + ihl;
    let end = L3 + total;
    if end > f.len() || end < icmp + Icmp::HEADER_LEN + 20 {
        return Err(DropReason::Malformed);
    }
    if !checksum::verify(&f[icmp..end], 0) {
        return Err(DropReason::BadChecksum);
    }
    let ip = icmp + Icmp::HEADER_LEN;
    if f[ip] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let qihl = ((f[ip] & 0x0f) as usize) * 4;
    if qihl < 20 || ip + qihl > end {
        return Err(DropReason::Malformed);
    }
    if !checksum::verify(&f[ip..ip + qihl], 0) {
        return Err(DropReason::BadChecksum);
    }
    let l4 = ip + qihl;
    if l4 + 8 > end || be16(f, ip + 6) & 0x1fff != 0 {
        // Too short to hold the ports, or quoting a non-first fragment (no ports there).
        return Err(DropReason::Malformed);
    }
    let (proto, sport, dport) = match f[ip + 9] {
        proto::TCP => (Proto::Tcp, be16(f, l4), be16(f, l4 + 2)),
        proto::UDP => (Proto::Udp, be16(f, l4), be16(f, l4 + 2)),
        proto::ICMP if matches!(f[l4], Icmp::ECHO_REQUEST | Icmp::ECHO_REPLY) => {
            let id = be16(f, l4 + 4);
            (Proto::Icmp, id, id)
        }
        proto::ICMP => return Err(DropReason::UnsupportedIcmp),
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    Ok(Quoted {
        icmp,
        end,
        ip,
        l4,
        proto,
        src: be32(f, ip + 12),
        dst: be32(f, ip + 16),
        sport,
        dport,
    })
}

/// Rewrites the quoted packet's address at `addr_at` (12: source, 16: destination) and its port
/// (or identifier) to `ip`:`port`, keeping the quoted checksums consistent where they are present.
fn rewrite_quoted(f: &mut [u8], q: &Quoted, addr_at: usize, ip: u32, port: u16) {
    let old_ip = be32(f, q.ip + addr_at);
    put32(f, q.ip + addr_at, ip);
    let c = update32(be16(f, q.ip + 10), old_ip, ip);
    put16(f, q.ip + 10, c);
    let (port_at, csum_at, pseudo) = match q.proto {
        Proto::Tcp => (if addr_at == 12 { 0 } else { 2 }, 16, true),
        Proto::Udp => (if addr_at == 12 { 0 } else { 2 }, 6, true),
        Proto::Icmp => (4, 2, false),
    };
    let old_port = be16(f, q.l4 + port_at);
    put16(f, q.l4 + port_at, port);
    let at = q.l4 + csum_at;
    if at + 2 <= q.end {
        let old = be16(f, at);
        if !(q.proto == Proto::Udp && old == 0) {
            let mut c = update16(old, old_port, port);
            if pseudo {
                c = update32(c, old_ip, ip);
            }
            put16(f, at, c);
        }
    }
}

/// Rewrites the outer address at `addr_at`, decrements the TTL, and recomputes the ICMP checksum
/// over the whole message.
fn finish(f: &mut [u8], q: &Quoted, addr_at: usize, ip: u32) {
    let old_ip = be32(f, L3 + addr_at);
    put32(f, L3 + addr_at, ip);
    let ttl = f[L3 + 8];
    let word_old = u16::from_be_bytes([ttl, f[L3 + 9]]);
    let word_new = u16::from_be_bytes([ttl - 1, f[L3 + 9]]);
    f[L3 + 8] = ttl - 1;
    let c = update16(update32(be16(f, L3 + 10), old_ip, ip), word_old, word_new);
    put16(f, L3 + 10, c);
    put16(f, q.icmp + 2, 0);
    let c = checksum::checksum(&f[q.icmp..q.end]);
    put16(f, q.icmp + 2, c);
}

impl Worker {
    /// Translates an ICMP error; `f` holds a validated IPv4 frame that `is_icmp_error` accepted.
    pub(super) fn icmp_error(&self, dir: Direction, f: &mut [u8], now: Time) -> Verdict {
        match self.icmp_error_inner(dir, f, now) {
            Ok(())
                if dir == Direction::Outbound
                    && self
                        .engine()
                        .table
                        .addrs
                        .public_index(be32(f, L3 + 16))
                        .is_some() =>
            {
                // Hairpinned (RFC 5508 REQ-7): an inside host reports on a packet another inside
                // host sent it through its public mapping. Translate the error inbound as well:
                // the outer destination becomes the quoted source after translation (REQ-7a).
                let ttl = f[L3 + 8];
                match self.icmp_error_inner(Direction::Inbound, f, now) {
                    Ok(()) => {
                        // One hop, one TTL decrement: give back the second.
                        let c = update16(
                            be16(f, L3 + 10),
                            u16::from_be_bytes([ttl - 1, f[L3 + 9]]),
                            u16::from_be_bytes([ttl, f[L3 + 9]]),
                        );
                        f[L3 + 8] = ttl;
                        put16(f, L3 + 10, c);
                        self.stats.bump(Counter::PktsOut);
                        self.stats
                            .add(Counter::BytesOut as usize, be16(f, L3 + 2) as u64);
                        Verdict::Hairpin
                    }
                    Err(r) => Verdict::Drop(r),
                }
            }
            Ok(()) => {
                let len = be16(f, L3 + 2) as u64;
                let (p, b) = match dir {
                    Direction::Outbound => (Counter::PktsOut, Counter::BytesOut),
                    Direction::Inbound => (Counter::PktsIn, Counter::BytesIn),
                };
                self.stats.bump(p);
                self.stats.add(b as usize, len);
                Verdict::Forward
            }
            Err(r) => Verdict::Drop(r),
        }
    }

    fn icmp_error_inner(&self, dir: Direction, f: &mut [u8], now: Time) -> Result<(), DropReason> {
        let q = parse(f)?;
        if f[L3 + 8] <= 1 {
            // No error about an error: just drop it.
            return Err(DropReason::TtlExceeded);
        }
        let e = self.engine();
        let seed = e.table.seed;
        let p = q.proto.ip_number();
        match dir {
            Direction::Inbound => {
                // The quoted packet is one rnat sent: public source.
                let outer_dst = be32(f, L3 + 16);
                let pub_idx = e
                    .table
                    .addrs
                    .public_index(q.src)
                    .ok_or(DropReason::NoMapping)?;
                if q.src != outer_dst {
                    return Err(DropReason::NoMapping);
                }
                let word = e.table.ports.owner(pub_idx, q.proto, q.sport);
                let (si, mid) = owner_parts(word).ok_or(DropReason::NoMapping)?;
                let (in_ip, in_port) = {
                    let sh = e.table.shards[si & e.table.shard_mask].lock();
                    if e.table.ports.owner(pub_idx, q.proto, q.sport) != word {
                        return Err(DropReason::NoMapping);
                    }
                    let m = *sh.mappings.get(mid);
                    let rem_port = if q.proto == Proto::Icmp { 0 } else { q.dport };
                    self.live_session(&sh, seed, p, m.in_ip, m.in_port, q.dst, rem_port, now)?;
                    (m.in_ip, m.in_port)
                };
                rewrite_quoted(f, &q, 12, in_ip, in_port);
                finish(f, &q, 16, in_ip);
            }
            Direction::Outbound => {
                // The quoted packet is one rnat delivered: inside destination.
                if q.dst != be32(f, L3 + 12) {
                    return Err(DropReason::Spoofed);
                }
                let mh = map_hash(seed, p, q.dst, q.dport);
                let si = e.table.shard_of(mh);
                let (pub_ip, pub_port) = {
                    let sh = e.table.shards[si].lock();
                    let mid = sh
                        .find_mapping(seed, p, q.dst, q.dport)
                        .ok_or(DropReason::NoMapping)?;
                    let rem_port = if q.proto == Proto::Icmp { 0 } else { q.sport };
                    self.live_session(&sh, seed, p, q.dst, q.dport, q.src, rem_port, now)?;
                    let m = *sh.mappings.get(mid);
                    (
                        u32::from(e.config().public_addrs[m.pub_idx as usize]),
                        m.pub_port,
                    )
                };
                rewrite_quoted(f, &q, 16, pub_ip, pub_port);
                finish(f, &q, 12, pub_ip);
            }
        }
        Ok(())
    }

    /// Checks that a live session exists, without touching it.
    #[allow(clippy::too_many_arguments)] // a 5-tuple plus context
    fn live_session(
        &self,
        sh: &Shard,
        seed: u64,
        p: u8,
        in_ip: u32,
        in_port: u16,
        rem_ip: u32,
        rem_port: u16,
        now: Time,
    ) -> Result<(), DropReason> {
        let id = sh
            .find_session(seed, p, in_ip, in_port, rem_ip, rem_port)
            .ok_or(DropReason::Filtered)?;
        let s = sh.sessions.get(id);
        if self
            .engine()
            .session_expired(s.proto, s.state, s.last_seen, now)
        {
            return Err(DropReason::Filtered);
        }
        Ok(())
    }
}
