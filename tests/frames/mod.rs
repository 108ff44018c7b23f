//! Byte-level test frames (built with etherparse) and independent checksum verification.
#![allow(dead_code)]

use etherparse::{Icmpv4Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

pub const MAC_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const MAC_GW: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const H1: [u8; 4] = [192, 168, 1, 2];
pub const H2: [u8; 4] = [192, 168, 1, 3];
pub const GW_IN: [u8; 4] = [192, 168, 1, 1];
pub const PUB: [u8; 4] = [203, 0, 113, 1];
pub const SRV: [u8; 4] = [198, 51, 100, 20];
pub const SRV2: [u8; 4] = [198, 51, 100, 21];

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_HOST, MAC_GW)
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_HOST, MAC_GW)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(5000);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn echo_request(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_HOST, MAC_GW)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(id, seq);
    let mut v = Vec::new();
    b.write(&mut v, b"abcdefgh").unwrap();
    v
}

pub fn echo_reply(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_HOST, MAC_GW)
        .ipv4(src, dst, 64)
        .icmpv4_echo_reply(id, seq);
    let mut v = Vec::new();
    b.write(&mut v, b"abcdefgh").unwrap();
    v
}

/// The header fields tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hdr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
}

/// Parses a frame, asserting that every checksum is correct by full recomputation.
pub fn check(frame: &[u8]) -> Hdr {
    let p = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let iph = ip.header().to_header();
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (sport, dport) = match p.transport.as_ref().expect("transport") {
        TransportSlice::Tcp(t) => {
            let h = t.to_header();
            let want = h.calc_checksum_ipv4(&iph, t.payload()).unwrap();
            assert!(
                same_csum(h.checksum, want),
                "TCP checksum {:#x} != {:#x}",
                h.checksum,
                want
            );
            (h.source_port, h.destination_port)
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            if h.checksum != 0 {
                let want = h.calc_checksum_ipv4(&iph, u.payload()).unwrap();
                assert!(
                    same_csum(h.checksum, want),
                    "UDP checksum {:#x} != {:#x}",
                    h.checksum,
                    want
                );
            }
            (h.source_port, h.destination_port)
        }
        TransportSlice::Icmpv4(i) => {
            let h = i.header();
            let want = Icmpv4Header::with_checksum(h.icmp_type.clone(), i.payload()).checksum;
            assert!(
                same_csum(h.checksum, want),
                "ICMP checksum {:#x} != {:#x}",
                h.checksum,
                want
            );
            let id = u16::from_be_bytes([i.slice()[4], i.slice()[5]]);
            (id, id)
        }
        other => panic!("unexpected transport {other:?}"),
    };
    Hdr {
        src: iph.source,
        dst: iph.destination,
        sport,
        dport,
        ttl: iph.time_to_live,
    }
}

/// 0x0000 and 0xffff are the same one's-complement value (except for UDP's "no checksum").
pub fn same_csum(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

/// A reply from the remote: addresses and ports swapped.
pub fn reply_to(h: &Hdr, proto: &str, payload: &[u8]) -> Vec<u8> {
    match proto {
        "udp" => udp(h.dst, h.dport, h.src, h.sport, payload),
        "tcp" => tcp(h.dst, h.dport, h.src, h.sport, ACK, payload),
        "icmp" => echo_reply(h.dst, h.src, h.sport, 1),
        _ => unreachable!(),
    }
}

/// An ICMP error (type, code, bytes 4..8) from `src` to `dst` quoting `quote` (an IP packet or its
/// first bytes), built by etherparse with a correct checksum.
pub fn icmp_error(
    src: [u8; 4],
    dst: [u8; 4],
    typ: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let t = etherparse::Icmpv4Type::Unknown {
        type_u8: typ,
        code_u8: code,
        bytes5to8: rest,
    };
    let b = PacketBuilder::ethernet2(MAC_HOST, MAC_GW)
        .ipv4(src, dst, 64)
        .icmpv4(t);
    let mut v = Vec::new();
    b.write(&mut v, quote).unwrap();
    v
}

/// The IP packet inside an Ethernet frame, truncated to its header plus `n` bytes (what a router
/// quotes in an ICMP error).
pub fn quote_of(frame: &[u8], n: usize) -> Vec<u8> {
    let ihl = ((frame[14] & 0x0f) as usize) * 4;
    frame[14..(14 + ihl + n).min(frame.len())].to_vec()
}

/// Asserts the IPv4 header at the start of `ip` has a correct checksum (independent computation).
pub fn check_quoted_header(ip: &[u8]) -> etherparse::Ipv4Header {
    let (h, _) = etherparse::Ipv4Header::from_slice(ip).expect("quoted header parses");
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "quoted IPv4 header checksum"
    );
    h
}
