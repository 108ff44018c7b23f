//! The PCP server (RFC 6887) with NAT-PMP (RFC 6886) on the same port: a tokio task on the
//! control plane, never in the packet path. It listens on UDP 5351 of the gateway's inside address
//! and turns requests into calls of the engine's explicit-mapping API (`Engine::map`,
//! `Engine::unmap_all`, `Worker::peer`).
//!
//! [`Responder::handle`] holds all the protocol logic (request bytes and source in, response
//! bytes out, time passed in), so it is tested without sockets; [`serve`] is the socket loop.
//!
//! Rules applied beyond the wire format ([`crate::wire::pcp`]):
//! - the PCP client address must be the packet's source (else ADDRESS_MISMATCH); the internal
//!   address of a MAP or PEER is the client itself (THIRD_PARTY is not supported);
//! - only hosts of the inside prefixes are served (else NOT_AUTHORIZED);
//! - lifetimes are clamped to the configured maximum; lifetime 0 deletes (MAP, NAT-PMP);
//! - MAP protocol 0 ("all protocols") is only accepted as "delete all my mappings";
//!   internal port 0 likewise ("all ports");
//! - the epoch time counts seconds since this server started: after a restart clients see it
//!   go back and re-create their mappings (RFC 6887 §8.5).

use crate::nat::{Engine, MapError, MapRequest, Proto, Time, Worker};
use crate::wire::pcp::{
    self, MapData, NatPmpRequest, Parsed, PcpOp, PcpRequest, ResultCode, mapped_v4,
    natpmp_result as nr, v4_mapped,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Request kinds counted by [`PcpStats`].
const KINDS: [&str; 7] = [
    "pcp_announce",
    "pcp_map",
    "pcp_peer",
    "pcp_refused",
    "natpmp_address",
    "natpmp_map",
    "natpmp_other",
];
const NATPMP_RESULTS: [&str; 6] = [
    "success",
    "unsupp_version",
    "not_authorized",
    "network_failure",
    "out_of_resources",
    "unsupp_opcode",
];

/// Counters of the PCP/NAT-PMP server (read by `rnat stats` and the metrics endpoint).
#[derive(Default)]
pub struct PcpStats {
    /// By kind (see `KINDS`); `pcp_refused`: refused before its opcode could be read.
    requests: [AtomicU64; 7],
    /// Datagrams not answered (too short, responses, truncated NAT-PMP).
    ignored: AtomicU64,
    /// PCP responses by result code.
    pcp_results: [AtomicU64; 14],
    /// NAT-PMP responses by result code.
    natpmp_results: [AtomicU64; 6],
}

/// [`PcpStats`] as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcpReport {
    /// Requests by kind.
    pub requests: BTreeMap<String, u64>,
    pub ignored: u64,
    /// PCP responses by result code name.
    pub pcp_results: BTreeMap<String, u64>,
    /// NAT-PMP responses by result code name.
    pub natpmp_results: BTreeMap<String, u64>,
    /// Live explicit mappings.
    pub mappings: u64,
}

impl PcpStats {
    fn request(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.requests[i].fetch_add(1, Relaxed);
        }
    }

    pub fn report(&self, mappings: u64) -> PcpReport {
        let ld = |c: &AtomicU64| c.load(Relaxed);
        PcpReport {
            requests: KINDS
                .iter()
                .zip(&self.requests)
                .map(|(k, c)| (k.to_string(), ld(c)))
                .collect(),
            ignored: ld(&self.ignored),
            pcp_results: ResultCode::ALL
                .iter()
                .zip(&self.pcp_results)
                .map(|(r, c)| (r.name().to_string(), ld(c)))
                .collect(),
            natpmp_results: NATPMP_RESULTS
                .iter()
                .zip(&self.natpmp_results)
                .map(|(r, c)| (r.to_string(), ld(c)))
                .collect(),
            mappings,
        }
    }
}

/// The server's protocol logic.
pub struct Responder {
    worker: Worker,
    max_lifetime: u32,
    stats: Arc<PcpStats>,
}

fn pcp_code(e: MapError) -> ResultCode {
    match e {
        MapError::NotAuthorized => ResultCode::NotAuthorized,
        MapError::UnsupportedProtocol => ResultCode::UnsuppProtocol,
        MapError::Quota => ResultCode::UserExQuota,
        MapError::NoResources => ResultCode::NoResources,
        MapError::CannotProvideExternal => ResultCode::CannotProvideExternal,
    }
}

fn natpmp_code(e: MapError) -> u16 {
    match e {
        MapError::NotAuthorized => nr::NOT_AUTHORIZED,
        _ => nr::OUT_OF_RESOURCES,
    }
}

impl Responder {
    /// `worker`: the server's own engine handle (PEER creates sessions through it).
    pub fn new(worker: Worker, max_lifetime: u32, stats: Arc<PcpStats>) -> Self {
        Responder {
            worker,
            max_lifetime: max_lifetime.max(1),
            stats,
        }
    }

    fn engine(&self) -> &Arc<Engine> {
        self.worker.engine()
    }

    /// The answer to one datagram from `src` (`None`: none is sent). `now`: engine time;
    /// `epoch`: seconds since the server started.
    pub fn handle(&self, src: SocketAddrV4, b: &[u8], now: Time, epoch: u32) -> Option<Vec<u8>> {
        let out = match pcp::parse(b) {
            Parsed::Ignore => {
                self.stats.ignored.fetch_add(1, Relaxed);
                return None;
            }
            Parsed::PcpError(code) => {
                self.stats.request("pcp_refused");
                self.pcp_count(code);
                pcp::pcp_error(b, code, epoch)
            }
            Parsed::Pcp(r) => {
                let out = self.pcp(src, &r, b, now, epoch);
                self.pcp_count(ResultCode::ALL[out[3] as usize % 14]);
                out
            }
            Parsed::NatPmp(r) => {
                let out = self.natpmp(src, r, now, epoch);
                self.natpmp_count(u16::from_be_bytes([out[2], out[3]]));
                out
            }
            Parsed::NatPmpUnsuppOpcode(op) => {
                self.stats.request("natpmp_other");
                self.natpmp_count(nr::UNSUPP_OPCODE);
                pcp::natpmp_error(op, nr::UNSUPP_OPCODE, epoch).to_vec()
            }
        };
        Some(out)
    }

    fn pcp_count(&self, c: ResultCode) {
        self.stats.pcp_results[c as usize].fetch_add(1, Relaxed);
    }

    fn natpmp_count(&self, c: u16) {
        if let Some(x) = self.stats.natpmp_results.get(c as usize) {
            x.fetch_add(1, Relaxed);
        }
    }

    fn clamp(&self, lifetime: u32) -> u32 {
        lifetime.min(self.max_lifetime)
    }

    fn pcp(&self, src: SocketAddrV4, r: &PcpRequest, raw: &[u8], now: Time, epoch: u32) -> Vec<u8> {
        self.stats.request(match r.op {
            PcpOp::Announce => "pcp_announce",
            PcpOp::Map(_) => "pcp_map",
            PcpOp::Peer(_) => "pcp_peer",
        });
        let err = |code: ResultCode| pcp::pcp_error(raw, code, epoch);
        if mapped_v4(r.client) != Some(*src.ip()) {
            return err(ResultCode::AddressMismatch);
        }
        let client = *src.ip();
        if !self.engine().is_subscriber(client) {
            return err(ResultCode::NotAuthorized);
        }
        match r.op {
            PcpOp::Announce => pcp::pcp_response(r, &r.op, ResultCode::Success, 0, epoch),
            PcpOp::Map(m) => match self.pcp_map(client, r, &m, now) {
                Ok((data, lifetime)) => {
                    pcp::pcp_response(r, &PcpOp::Map(data), ResultCode::Success, lifetime, epoch)
                }
                Err(code) => err(code),
            },
            PcpOp::Peer(mut p) => {
                let proto = match p.map.protocol {
                    6 => Proto::Tcp,
                    17 => Proto::Udp,
                    _ => return err(ResultCode::UnsuppProtocol),
                };
                let Some(remote) = mapped_v4(p.remote_addr) else {
                    return err(ResultCode::MalformedRequest);
                };
                let inside = SocketAddrV4::new(client, p.map.internal_port);
                let remote = SocketAddrV4::new(remote, p.remote_port);
                match self.worker.peer(proto, inside, remote, now) {
                    Ok((public, life)) => {
                        p.map.external_port = public.port();
                        p.map.external_addr = v4_mapped(*public.ip());
                        let life = self.clamp(life.as_secs().min(u32::MAX as u64) as u32);
                        pcp::pcp_response(r, &PcpOp::Peer(p), ResultCode::Success, life, epoch)
                    }
                    Err(e) => err(pcp_code(e)),
                }
            }
        }
    }

    fn pcp_map(
        &self,
        client: Ipv4Addr,
        r: &PcpRequest,
        m: &MapData,
        now: Time,
    ) -> Result<(MapData, u32), ResultCode> {
        let e = self.engine();
        let delete_all = r.lifetime == 0 && m.internal_port == 0;
        let protos: &[Proto] = match m.protocol {
            6 => &[Proto::Tcp],
            17 => &[Proto::Udp],
            0 if delete_all => &[Proto::Tcp, Proto::Udp],
            _ => return Err(ResultCode::UnsuppProtocol),
        };
        if delete_all {
            for p in protos {
                e.unmap_all(*p, client, now);
            }
            let mut d = *m;
            d.external_port = 0;
            d.external_addr = v4_mapped(Ipv4Addr::UNSPECIFIED);
            return Ok((d, 0));
        }
        if m.internal_port == 0 {
            // An "all ports" mapping is not offered.
            return Err(ResultCode::NotAuthorized);
        }
        // An IPv6 or unspecified suggestion is no suggestion (rnat maps IPv4 only).
        let suggested_addr = mapped_v4(m.external_addr).filter(|a| !a.is_unspecified());
        let req = MapRequest {
            proto: protos[0],
            inside: SocketAddrV4::new(client, m.internal_port),
            suggested_port: m.external_port,
            suggested_addr,
            lifetime: Duration::from_secs(self.clamp(r.lifetime) as u64),
            prefer_failure: r.prefer_failure,
            nonce: Some(m.nonce),
        };
        let g = e.map(&req, now).map_err(pcp_code)?;
        let mut d = *m;
        d.external_port = g.public.port();
        d.external_addr = v4_mapped(*g.public.ip());
        Ok((d, g.lifetime.as_secs() as u32))
    }

    fn natpmp(&self, src: SocketAddrV4, r: NatPmpRequest, now: Time, epoch: u32) -> Vec<u8> {
        let e = self.engine();
        let client = *src.ip();
        let allowed = e.is_subscriber(client);
        match r {
            NatPmpRequest::PublicAddress => {
                self.stats.request("natpmp_address");
                let (code, a) = if allowed {
                    (nr::SUCCESS, e.paired_public(client))
                } else {
                    (nr::NOT_AUTHORIZED, Ipv4Addr::UNSPECIFIED)
                };
                pcp::natpmp_public_address(code, epoch, a).to_vec()
            }
            NatPmpRequest::Map {
                tcp,
                internal_port,
                external_port,
                lifetime,
            } => {
                self.stats.request("natpmp_map");
                let proto = if tcp { Proto::Tcp } else { Proto::Udp };
                let reply = |code, ext, life| {
                    pcp::natpmp_mapping(tcp, code, epoch, internal_port, ext, life).to_vec()
                };
                if !allowed {
                    return reply(nr::NOT_AUTHORIZED, 0, 0);
                }
                if lifetime == 0 && internal_port == 0 {
                    e.unmap_all(proto, client, now);
                    return reply(nr::SUCCESS, 0, 0);
                }
                if internal_port == 0 {
                    return reply(nr::NOT_AUTHORIZED, 0, 0);
                }
                let req = MapRequest {
                    proto,
                    inside: SocketAddrV4::new(client, internal_port),
                    suggested_port: external_port,
                    suggested_addr: None,
                    lifetime: Duration::from_secs(self.clamp(lifetime) as u64),
                    prefer_failure: false,
                    nonce: None,
                };
                match e.map(&req, now) {
                    // A deletion answers with external port 0 (RFC 6886 §3.4).
                    Ok(g) if g.lifetime.is_zero() => reply(nr::SUCCESS, 0, 0),
                    Ok(g) => reply(nr::SUCCESS, g.public.port(), g.lifetime.as_secs() as u32),
                    Err(err) => reply(natpmp_code(err), 0, 0),
                }
            }
        }
    }
}

/// Binds the server's socket on `addr` (the inside address, port 5351).
pub fn bind(addr: SocketAddrV4) -> std::io::Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}

/// The socket loop: answers each datagram from an IPv4 source. `clock` gives the engine time.
pub async fn serve(
    socket: tokio::net::UdpSocket,
    responder: Responder,
    clock: impl Fn() -> Time,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let SocketAddr::V4(src) = from else {
            continue;
        };
        let epoch = started.elapsed().as_secs().min(u32::MAX as u64) as u32;
        if let Some(out) = responder.handle(src, &buf[..n], clock(), epoch)
            && let Err(e) = socket.send_to(&out, from).await
        {
            tracing::debug!(%from, "PCP: cannot answer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Config, Prefix};
    use crate::wire::pcp::{natpmp_mapping, natpmp_public_address, opcode};

    const H1: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    fn responder(max_lifetime: u32) -> Responder {
        let e = Engine::new(Config {
            public_addrs: vec![PUBLIC],
            inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
            inside_addr: Some(Ipv4Addr::new(192, 168, 1, 1)),
            max_sessions: 1024,
            shards: 2,
            ..Config::default()
        })
        .unwrap();
        Responder::new(e.worker(), max_lifetime, Arc::new(PcpStats::default()))
    }

    fn map_req(client: Ipv4Addr, proto: u8, iport: u16, eport: u16, life: u32) -> Vec<u8> {
        let mut b = vec![2, opcode::MAP, 0, 0];
        b.extend_from_slice(&life.to_be_bytes());
        b.extend_from_slice(&v4_mapped(client).octets());
        b.extend_from_slice(&[9; 12]);
        b.extend_from_slice(&[proto, 0, 0, 0]);
        b.extend_from_slice(&iport.to_be_bytes());
        b.extend_from_slice(&eport.to_be_bytes());
        b.extend_from_slice(&[0; 16]);
        b
    }

    fn from(ip: Ipv4Addr) -> SocketAddrV4 {
        SocketAddrV4::new(ip, 40000)
    }

    #[test]
    fn rfc6886_natpmp_address_map_delete() {
        let r = responder(3600);
        let now = Time::from_secs(5);
        assert_eq!(
            r.handle(from(H1), &[0, 0], now, 7).unwrap(),
            natpmp_public_address(0, 7, PUBLIC)
        );
        // UDP 5000 -> suggested 6000, lifetime longer than the maximum.
        let req = [0, 1, 0, 0, 0x13, 0x88, 0x17, 0x70, 0, 1, 0, 0];
        assert_eq!(
            r.handle(from(H1), &req, now, 7).unwrap(),
            natpmp_mapping(false, 0, 7, 5000, 6000, 3600)
        );
        assert_eq!(r.engine().explicit_count(), 1);
        // Delete all UDP mappings of h1: internal port and lifetime 0.
        let del = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            r.handle(from(H1), &del, now, 8).unwrap(),
            natpmp_mapping(false, 0, 8, 0, 0, 0)
        );
        assert_eq!(r.engine().explicit_count(), 0);
        // Not an inside host: refused.
        let out = r.handle(from(Ipv4Addr::new(10, 1, 1, 1)), &req, now, 8);
        assert_eq!(out.unwrap(), natpmp_mapping(false, 2, 8, 5000, 0, 0));
        // Unknown opcode, truncated request, a response.
        assert_eq!(
            r.handle(from(H1), &[0, 9], now, 8).unwrap(),
            pcp::natpmp_error(9, 5, 8)
        );
        assert_eq!(r.handle(from(H1), &req[..8], now, 8), None);
        assert_eq!(r.handle(from(H1), &[0, 128], now, 8), None);
        let rep = r.stats.report(0);
        assert_eq!(rep.natpmp_results["success"], 3);
        assert_eq!(rep.natpmp_results["not_authorized"], 1);
        assert_eq!(rep.natpmp_results["unsupp_opcode"], 1);
        assert_eq!(rep.ignored, 2);
    }

    #[test]
    fn rfc6887_map_success_and_result_codes() {
        let r = responder(7200);
        let now = Time::from_secs(5);
        let req = map_req(H1, 6, 8080, 0, 100_000);
        let out = r.handle(from(H1), &req, now, 3).unwrap();
        assert_eq!(out.len(), 60);
        assert_eq!(&out[..4], &[2, 0x81, 0, 0]);
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 7200);
        assert_eq!(u32::from_be_bytes(out[8..12].try_into().unwrap()), 3);
        assert_eq!(&out[24..36], &[9; 12]);
        assert_eq!(u16::from_be_bytes([out[42], out[43]]), 8080);
        assert_eq!(&out[44..60], &v4_mapped(PUBLIC).octets());
        // Another nonce for the same mapping: NOT_AUTHORIZED.
        let mut other = req.clone();
        other[24] = 1;
        assert_eq!(r.handle(from(H1), &other, now, 3).unwrap()[3], 2);
        let code = |src: Ipv4Addr, b: &[u8]| r.handle(from(src), b, now, 3).unwrap()[3];
        let h2 = Ipv4Addr::new(192, 168, 1, 3);
        assert_eq!(code(h2, &req), ResultCode::AddressMismatch as u8);
        let outsider = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(
            code(outsider, &map_req(outsider, 6, 1, 0, 60)),
            ResultCode::NotAuthorized as u8
        );
        assert_eq!(
            code(H1, &map_req(H1, 1, 1, 0, 60)),
            ResultCode::UnsuppProtocol as u8
        );
        assert_eq!(
            code(H1, &map_req(H1, 0, 0, 0, 60)),
            ResultCode::UnsuppProtocol as u8
        );
        assert_eq!(
            code(H1, &map_req(H1, 6, 0, 0, 60)),
            ResultCode::NotAuthorized as u8
        );
        assert_eq!(code(H1, &req[..40]), ResultCode::MalformedRequest as u8);
        // Protocol 0, port 0, lifetime 0: delete all of h1's mappings.
        assert_eq!(code(H1, &map_req(H1, 0, 0, 0, 0)), 0);
        assert_eq!(r.engine().explicit_count(), 0);
        let rep = r.stats.report(0);
        assert_eq!(rep.requests["pcp_map"], 8);
        assert_eq!(rep.requests["pcp_refused"], 1);
        assert_eq!(rep.pcp_results["success"], 2);
    }
}
