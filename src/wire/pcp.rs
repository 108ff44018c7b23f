//! The Port Control Protocol (RFC 6887, version 2) and NAT-PMP (RFC 6886, version 0) message
//! formats: pure parsing and encoding, no I/O. Whatever the bytes, [`parse`] returns a value and
//! never panics: every read is bounds-checked against the received length.
//!
//! PCP carries addresses in 128-bit fields; IPv4 addresses are IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`). rnat translates IPv4 only.

use crate::wire::bytes::{be16, be32, put16, put32};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The UDP port PCP and NAT-PMP servers listen on.
pub const SERVER_PORT: u16 = 5351;
/// The PCP version this module speaks.
pub const VERSION: u8 = 2;
/// NAT-PMP's version number.
pub const NATPMP_VERSION: u8 = 0;
/// Longest PCP message (RFC 6887 §7).
pub const MAX_LEN: usize = 1100;
const HEADER: usize = 24;
const MAP_LEN: usize = 36;
const PEER_LEN: usize = 56;

/// PCP opcodes.
pub mod opcode {
    pub const ANNOUNCE: u8 = 0;
    pub const MAP: u8 = 1;
    pub const PEER: u8 = 2;
}

/// PCP option codes.
pub mod option {
    pub const THIRD_PARTY: u8 = 1;
    pub const PREFER_FAILURE: u8 = 2;
    pub const FILTER: u8 = 3;
}

/// PCP result codes (RFC 6887 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResultCode {
    Success = 0,
    UnsuppVersion = 1,
    NotAuthorized = 2,
    MalformedRequest = 3,
    UnsuppOpcode = 4,
    UnsuppOption = 5,
    MalformedOption = 6,
    NetworkFailure = 7,
    NoResources = 8,
    UnsuppProtocol = 9,
    UserExQuota = 10,
    CannotProvideExternal = 11,
    AddressMismatch = 12,
    ExcessiveRemotePeers = 13,
}

impl ResultCode {
    pub const ALL: [ResultCode; 14] = [
        ResultCode::Success,
        ResultCode::UnsuppVersion,
        ResultCode::NotAuthorized,
        ResultCode::MalformedRequest,
        ResultCode::UnsuppOpcode,
        ResultCode::UnsuppOption,
        ResultCode::MalformedOption,
        ResultCode::NetworkFailure,
        ResultCode::NoResources,
        ResultCode::UnsuppProtocol,
        ResultCode::UserExQuota,
        ResultCode::CannotProvideExternal,
        ResultCode::AddressMismatch,
        ResultCode::ExcessiveRemotePeers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ResultCode::Success => "success",
            ResultCode::UnsuppVersion => "unsupp_version",
            ResultCode::NotAuthorized => "not_authorized",
            ResultCode::MalformedRequest => "malformed_request",
            ResultCode::UnsuppOpcode => "unsupp_opcode",
            ResultCode::UnsuppOption => "unsupp_option",
            ResultCode::MalformedOption => "malformed_option",
            ResultCode::NetworkFailure => "network_failure",
            ResultCode::NoResources => "no_resources",
            ResultCode::UnsuppProtocol => "unsupp_protocol",
            ResultCode::UserExQuota => "user_ex_quota",
            ResultCode::CannotProvideExternal => "cannot_provide_external",
            ResultCode::AddressMismatch => "address_mismatch",
            ResultCode::ExcessiveRemotePeers => "excessive_remote_peers",
        }
    }

    /// Errors a client should not retry soon (RFC 6887 §7.4 "long lifetime" errors) get a
    /// long error lifetime, the others a short one.
    pub fn error_lifetime(self) -> u32 {
        match self {
            ResultCode::Success => 0,
            ResultCode::NetworkFailure
            | ResultCode::NoResources
            | ResultCode::UserExQuota
            | ResultCode::CannotProvideExternal
            | ResultCode::ExcessiveRemotePeers => 30,
            _ => 1800,
        }
    }
}

/// The opcode-specific part of MAP (and the first part of PEER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapData {
    pub nonce: [u8; 12],
    /// IANA protocol number; 0: all protocols.
    pub protocol: u8,
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port.
    pub external_port: u16,
    /// Suggested (request) or assigned (response) external address.
    pub external_addr: Ipv6Addr,
}

/// The opcode-specific part of PEER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerData {
    pub map: MapData,
    pub remote_port: u16,
    pub remote_addr: Ipv6Addr,
}

/// A PCP request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcpOp {
    Announce,
    Map(MapData),
    Peer(PeerData),
}

/// A well-formed PCP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpRequest {
    pub lifetime: u32,
    /// The client's own idea of its address (must match the packet's source).
    pub client: Ipv6Addr,
    pub op: PcpOp,
    /// PREFER_FAILURE was present (MAP only).
    pub prefer_failure: bool,
}

impl PcpRequest {
    pub fn opcode(&self) -> u8 {
        match self.op {
            PcpOp::Announce => opcode::ANNOUNCE,
            PcpOp::Map(_) => opcode::MAP,
            PcpOp::Peer(_) => opcode::PEER,
        }
    }
}

/// A well-formed NAT-PMP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatPmpRequest {
    /// Opcode 0: what is my public address?
    PublicAddress,
    /// Opcodes 1 (UDP) and 2 (TCP).
    Map {
        tcp: bool,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
}

/// NAT-PMP result codes (RFC 6886 §3.5).
pub mod natpmp_result {
    pub const SUCCESS: u16 = 0;
    pub const UNSUPP_VERSION: u16 = 1;
    pub const NOT_AUTHORIZED: u16 = 2;
    pub const NETWORK_FAILURE: u16 = 3;
    pub const OUT_OF_RESOURCES: u16 = 4;
    pub const UNSUPP_OPCODE: u16 = 5;
}

/// What a received datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not to be answered (shorter than 2 bytes, a response, a NAT-PMP opcode of 128 or more, a
    /// truncated NAT-PMP request).
    Ignore,
    Pcp(PcpRequest),
    /// A PCP-versioned request refused before its contents could be used: answer with
    /// [`pcp_error`].
    PcpError(ResultCode),
    NatPmp(NatPmpRequest),
    /// A NAT-PMP request with an unknown opcode: answer with [`natpmp_error`].
    NatPmpUnsuppOpcode(u8),
}

fn addr(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

fn map_data(b: &[u8]) -> MapData {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&b[..12]);
    MapData {
        nonce,
        protocol: b[12],
        internal_port: be16(b, 16),
        external_port: be16(b, 18),
        external_addr: addr(b, 20),
    }
}

/// Classifies and parses one received datagram (PCP or NAT-PMP, by its version byte).
pub fn parse(b: &[u8]) -> Parsed {
    if b.len() < 2 {
        return Parsed::Ignore;
    }
    match b[0] {
        NATPMP_VERSION => parse_natpmp(b),
        VERSION => parse_pcp(b),
        // A response of any version is never answered.
        _ if b[1] & 0x80 != 0 => Parsed::Ignore,
        _ => Parsed::PcpError(ResultCode::UnsuppVersion),
    }
}

fn parse_natpmp(b: &[u8]) -> Parsed {
    let op = b[1];
    match op {
        0 => Parsed::NatPmp(NatPmpRequest::PublicAddress),
        1 | 2 if b.len() >= 12 => Parsed::NatPmp(NatPmpRequest::Map {
            tcp: op == 2,
            internal_port: be16(b, 4),
            external_port: be16(b, 6),
            lifetime: be32(b, 8),
        }),
        1 | 2 => Parsed::Ignore,
        128.. => Parsed::Ignore,
        _ => Parsed::NatPmpUnsuppOpcode(op),
    }
}

fn parse_pcp(b: &[u8]) -> Parsed {
    if b[1] & 0x80 != 0 {
        return Parsed::Ignore;
    }
    if b.len() < HEADER || b.len() > MAX_LEN || !b.len().is_multiple_of(4) {
        return Parsed::PcpError(ResultCode::MalformedRequest);
    }
    let op = b[1] & 0x7f;
    let need = match op {
        opcode::ANNOUNCE => 0,
        opcode::MAP => MAP_LEN,
        opcode::PEER => PEER_LEN,
        _ => return Parsed::PcpError(ResultCode::UnsuppOpcode),
    };
    if b.len() < HEADER + need {
        return Parsed::PcpError(ResultCode::MalformedRequest);
    }
    let body = &b[HEADER..HEADER + need];
    let pcp_op = match op {
        opcode::ANNOUNCE => PcpOp::Announce,
        opcode::MAP => PcpOp::Map(map_data(body)),
        _ => PcpOp::Peer(PeerData {
            map: map_data(body),
            remote_port: be16(body, 36),
            remote_addr: addr(body, 40),
        }),
    };
    let mut prefer_failure = false;
    let mut at = HEADER + need;
    while at < b.len() {
        if b.len() - at < 4 {
            return Parsed::PcpError(ResultCode::MalformedOption);
        }
        let (code, len) = (b[at], be16(b, at + 2) as usize);
        let padded = len.div_ceil(4) * 4;
        if padded > b.len() - at - 4 {
            return Parsed::PcpError(ResultCode::MalformedOption);
        }
        match code {
            option::PREFER_FAILURE => {
                if op != opcode::MAP || len != 0 || prefer_failure {
                    return Parsed::PcpError(ResultCode::MalformedOption);
                }
                prefer_failure = true;
            }
            // Optional to process: ignored.
            128.. => {}
            // THIRD_PARTY, FILTER and unknown mandatory options are not supported.
            _ => return Parsed::PcpError(ResultCode::UnsuppOption),
        }
        at += 4 + padded;
    }
    Parsed::Pcp(PcpRequest {
        lifetime: be32(b, 4),
        client: addr(b, 8),
        op: pcp_op,
        prefer_failure,
    })
}

/// The IPv4 address in an IPv4-mapped IPv6 address.
pub fn mapped_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    a.to_ipv4_mapped()
}

/// The IPv4-mapped IPv6 form of `a`.
pub fn v4_mapped(a: Ipv4Addr) -> Ipv6Addr {
    a.to_ipv6_mapped()
}

fn header(out: &mut [u8], op: u8, result: ResultCode, lifetime: u32, epoch: u32) {
    out[0] = VERSION;
    out[1] = 0x80 | op;
    out[2] = 0;
    out[3] = result as u8;
    put32(out, 4, lifetime);
    put32(out, 8, epoch);
    out[12..24].fill(0);
}

fn put_map(out: &mut [u8], m: &MapData) {
    out[..12].copy_from_slice(&m.nonce);
    out[12] = m.protocol;
    out[13..16].fill(0);
    put16(out, 16, m.internal_port);
    put16(out, 18, m.external_port);
    out[20..36].copy_from_slice(&m.external_addr.octets());
}

/// A PCP response to `req`: `data` is the opcode data with the assigned external port and address
/// (for errors: the request's data, as RFC 6887 §8.3 asks).
pub fn pcp_response(
    req: &PcpRequest,
    data: &PcpOp,
    result: ResultCode,
    lifetime: u32,
    epoch: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    header(&mut out, req.opcode(), result, lifetime, epoch);
    match data {
        PcpOp::Announce => {}
        PcpOp::Map(m) => {
            let mut d = [0u8; MAP_LEN];
            put_map(&mut d, m);
            out.extend_from_slice(&d);
        }
        PcpOp::Peer(p) => {
            let mut d = [0u8; PEER_LEN];
            put_map(&mut d, &p.map);
            put16(&mut d, 36, p.remote_port);
            d[40..56].copy_from_slice(&p.remote_addr.octets());
            out.extend_from_slice(&d);
        }
    }
    out
}

/// A PCP error response to the raw request `req`: the request copied (at most 1100 bytes, padded
/// to a multiple of 4 and to the header length) with the response header written over it.
pub fn pcp_error(req: &[u8], result: ResultCode, epoch: u32) -> Vec<u8> {
    let n = req.len().min(MAX_LEN);
    let mut out = req[..n].to_vec();
    out.resize(n.div_ceil(4).max(HEADER / 4) * 4, 0);
    let op = req.get(1).map_or(0, |o| o & 0x7f);
    header(&mut out, op, result, result.error_lifetime(), epoch);
    out
}

/// The NAT-PMP answer to a public-address request (12 bytes).
pub fn natpmp_public_address(result: u16, epoch: u32, public: Ipv4Addr) -> [u8; 12] {
    let mut o = [0u8; 12];
    o[1] = 128;
    put16(&mut o, 2, result);
    put32(&mut o, 4, epoch);
    o[8..12].copy_from_slice(&public.octets());
    o
}

/// The NAT-PMP answer to a mapping request (16 bytes).
pub fn natpmp_mapping(
    tcp: bool,
    result: u16,
    epoch: u32,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[1] = 128 + if tcp { 2 } else { 1 };
    put16(&mut o, 2, result);
    put32(&mut o, 4, epoch);
    put16(&mut o, 8, internal_port);
    put16(&mut o, 10, external_port);
    put32(&mut o, 12, lifetime);
    o
}

/// The NAT-PMP error answer carrying only the common header (8 bytes).
pub fn natpmp_error(op: u8, result: u16, epoch: u32) -> [u8; 8] {
    let mut o = [0u8; 8];
    o[1] = 128 | op;
    put16(&mut o, 2, result);
    put32(&mut o, 4, epoch);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map_request(lifetime: u32, client: Ipv4Addr, proto: u8, iport: u16, eport: u16) -> Vec<u8> {
        let mut b = vec![2, 1, 0, 0];
        b.extend_from_slice(&lifetime.to_be_bytes());
        b.extend_from_slice(&v4_mapped(client).octets());
        b.extend_from_slice(&[7; 12]);
        b.extend_from_slice(&[proto, 0, 0, 0]);
        b.extend_from_slice(&iport.to_be_bytes());
        b.extend_from_slice(&eport.to_be_bytes());
        b.extend_from_slice(&v4_mapped(Ipv4Addr::UNSPECIFIED).octets());
        b
    }

    #[test]
    fn rfc6887_map_request_parses() {
        let b = map_request(3600, Ipv4Addr::new(192, 168, 1, 2), 6, 8080, 9090);
        assert_eq!(b.len(), 60);
        let Parsed::Pcp(r) = parse(&b) else {
            panic!("{:?}", parse(&b))
        };
        assert_eq!(r.lifetime, 3600);
        assert_eq!(mapped_v4(r.client), Some(Ipv4Addr::new(192, 168, 1, 2)));
        assert!(!r.prefer_failure);
        let PcpOp::Map(m) = r.op else { panic!() };
        assert_eq!(
            (m.nonce, m.protocol, m.internal_port, m.external_port),
            ([7; 12], 6, 8080, 9090)
        );
        assert_eq!(mapped_v4(m.external_addr), Some(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn rfc6887_options_prefer_failure_and_unsupported() {
        let base = map_request(60, Ipv4Addr::new(192, 168, 1, 2), 17, 5000, 5000);
        let mut b = base.clone();
        b.extend_from_slice(&[option::PREFER_FAILURE, 0, 0, 0]);
        assert!(matches!(parse(&b), Parsed::Pcp(r) if r.prefer_failure));
        // Twice, or with data: malformed.
        b.extend_from_slice(&[option::PREFER_FAILURE, 0, 0, 0]);
        assert_eq!(parse(&b), Parsed::PcpError(ResultCode::MalformedOption));
        // An optional (>= 128) option is skipped, with its padded data.
        let mut b = base.clone();
        b.extend_from_slice(&[200, 0, 0, 3, 1, 2, 3, 0]);
        assert!(matches!(parse(&b), Parsed::Pcp(r) if !r.prefer_failure));
        // Data longer than the message: malformed option.
        let mut b = base.clone();
        b.extend_from_slice(&[200, 0, 0, 8, 1, 2, 3, 4]);
        assert_eq!(parse(&b), Parsed::PcpError(ResultCode::MalformedOption));
        for code in [option::THIRD_PARTY, option::FILTER, 99] {
            let mut b = base.clone();
            b.extend_from_slice(&[code, 0, 0, 0]);
            assert_eq!(parse(&b), Parsed::PcpError(ResultCode::UnsuppOption));
        }
    }

    #[test]
    fn rfc6887_header_errors() {
        let ok = map_request(60, Ipv4Addr::new(192, 168, 1, 2), 17, 5000, 0);
        assert_eq!(parse(&[2]), Parsed::Ignore, "shorter than 2 bytes");
        let mut resp = ok.clone();
        resp[1] |= 0x80;
        assert_eq!(parse(&resp), Parsed::Ignore, "a response");
        for v in [1u8, 3, 255] {
            let mut b = ok.clone();
            b[0] = v;
            assert_eq!(parse(&b), Parsed::PcpError(ResultCode::UnsuppVersion));
        }
        assert_eq!(
            parse(&ok[..58]),
            Parsed::PcpError(ResultCode::MalformedRequest),
            "not a multiple of 4"
        );
        assert_eq!(
            parse(&ok[..56]),
            Parsed::PcpError(ResultCode::MalformedRequest),
            "MAP data cut short"
        );
        assert_eq!(
            parse(&ok[..20]),
            Parsed::PcpError(ResultCode::MalformedRequest)
        );
        let mut big = ok.clone();
        big.resize(1104, 0);
        assert_eq!(parse(&big), Parsed::PcpError(ResultCode::MalformedRequest));
        let mut b = ok.clone();
        b[1] = 9;
        assert_eq!(parse(&b), Parsed::PcpError(ResultCode::UnsuppOpcode));
        let mut announce = ok[..24].to_vec();
        announce[1] = 0;
        assert!(matches!(
            parse(&announce),
            Parsed::Pcp(PcpRequest {
                op: PcpOp::Announce,
                ..
            })
        ));
    }

    #[test]
    fn rfc6887_peer_parses_and_responds() {
        let mut b = map_request(120, Ipv4Addr::new(192, 168, 1, 2), 17, 4000, 0);
        b[1] = opcode::PEER;
        b.extend_from_slice(&7000u16.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&v4_mapped(Ipv4Addr::new(198, 51, 100, 20)).octets());
        let Parsed::Pcp(r) = parse(&b) else { panic!() };
        let PcpOp::Peer(mut p) = r.op else { panic!() };
        assert_eq!(p.remote_port, 7000);
        assert_eq!(
            mapped_v4(p.remote_addr),
            Some(Ipv4Addr::new(198, 51, 100, 20))
        );
        // PREFER_FAILURE is for MAP only.
        let mut bad = b.clone();
        bad.extend_from_slice(&[option::PREFER_FAILURE, 0, 0, 0]);
        assert_eq!(parse(&bad), Parsed::PcpError(ResultCode::MalformedOption));
        p.map.external_port = 4444;
        p.map.external_addr = v4_mapped(Ipv4Addr::new(203, 0, 113, 1));
        let out = pcp_response(&r, &PcpOp::Peer(p), ResultCode::Success, 300, 42);
        assert_eq!(out.len(), 80);
        assert_eq!(&out[..4], &[2, 0x82, 0, 0]);
        assert_eq!(be32(&out, 4), 300);
        assert_eq!(be32(&out, 8), 42);
        assert_eq!(&out[24..36], &[7; 12], "nonce echoed");
        assert_eq!(be16(&out, 42), 4444);
        assert_eq!(
            &out[44..60],
            &v4_mapped(Ipv4Addr::new(203, 0, 113, 1)).octets()
        );
        assert_eq!(be16(&out, 60), 7000);
        assert_eq!(
            &out[64..80],
            &v4_mapped(Ipv4Addr::new(198, 51, 100, 20)).octets()
        );
    }

    #[test]
    fn rfc6887_error_response_copies_the_request() {
        let req = map_request(60, Ipv4Addr::new(192, 168, 1, 2), 17, 5000, 0);
        let out = pcp_error(&req, ResultCode::AddressMismatch, 9);
        assert_eq!(out.len(), req.len());
        assert_eq!(&out[..12], &[2, 0x81, 0, 12, 0, 0, 0x07, 0x08, 0, 0, 0, 9]);
        assert_eq!(&out[12..24], &[0; 12]);
        assert_eq!(&out[24..], &req[24..], "opcode data copied");
        // Short and odd-length requests are padded to the header's length.
        let out = pcp_error(&[1, 1, 0], ResultCode::UnsuppVersion, 9);
        assert_eq!(out.len(), 24);
        assert_eq!(out[0], VERSION, "the version the server speaks");
        let out = pcp_error(&vec![2u8; 2000], ResultCode::MalformedRequest, 9);
        assert_eq!(out.len(), MAX_LEN);
    }

    #[test]
    fn rfc6886_natpmp_requests_and_responses() {
        assert_eq!(parse(&[0, 0]), Parsed::NatPmp(NatPmpRequest::PublicAddress));
        let b = [0, 2, 0, 0, 0x1f, 0x90, 0x23, 0x82, 0, 0, 0x0e, 0x10];
        assert_eq!(
            parse(&b),
            Parsed::NatPmp(NatPmpRequest::Map {
                tcp: true,
                internal_port: 8080,
                external_port: 9090,
                lifetime: 3600
            })
        );
        assert_eq!(parse(&b[..11]), Parsed::Ignore, "truncated");
        assert_eq!(parse(&[0, 3]), Parsed::NatPmpUnsuppOpcode(3));
        assert_eq!(parse(&[0, 129, 0, 0]), Parsed::Ignore, "a response");
        assert_eq!(
            natpmp_public_address(0, 5, Ipv4Addr::new(203, 0, 113, 1)),
            [0, 128, 0, 0, 0, 0, 0, 5, 203, 0, 113, 1]
        );
        assert_eq!(
            natpmp_mapping(false, 0, 5, 5000, 5001, 7200),
            [
                0, 129, 0, 0, 0, 0, 0, 5, 0x13, 0x88, 0x13, 0x89, 0, 0, 0x1c, 0x20
            ]
        );
        assert_eq!(natpmp_error(3, 5, 1), [0, 131, 0, 5, 0, 0, 0, 1]);
    }

    proptest! {
        /// Arbitrary bytes never panic, and whatever is accepted or refused can be answered.
        #[test]
        fn parse_never_panics(
            version in prop_oneof![Just(0u8), Just(2u8), any::<u8>()],
            op in prop_oneof![0u8..4, any::<u8>()],
            rest in proptest::collection::vec(any::<u8>(), 0..1300),
        ) {
            let mut b = vec![version, op];
            b.extend_from_slice(&rest);
            b.truncate(rest.len());
            match parse(&b) {
                Parsed::Pcp(r) => {
                    let out = pcp_response(&r, &r.op, ResultCode::Success, r.lifetime, 1);
                    prop_assert!(out.len() >= 24 && out.len().is_multiple_of(4));
                }
                Parsed::PcpError(code) => {
                    let out = pcp_error(&b, code, 1);
                    prop_assert!(out.len() >= 24 && out.len() <= MAX_LEN && out.len().is_multiple_of(4));
                    prop_assert_eq!(out[3], code as u8);
                }
                Parsed::NatPmp(_) | Parsed::NatPmpUnsuppOpcode(_) | Parsed::Ignore => {}
            }
        }

        /// Mutations of a valid MAP request never panic either.
        #[test]
        fn mutated_map_never_panics(flips in proptest::collection::vec((0usize..72, any::<u8>()), 1..8),
                                    extra in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut b = map_request(60, Ipv4Addr::new(192, 168, 1, 2), 17, 5000, 0);
            b.extend_from_slice(&extra);
            for (i, v) in flips {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            let _ = parse(&b);
        }
    }
}
