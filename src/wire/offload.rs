//! Software versions of the two NIC offloads rnat meets on Linux: partial transport checksums
//! (`CHECKSUM_PARTIAL`, virtio `NEEDS_CSUM`) and TCP segmentation of GSO super-frames.
//!
//! A datapath that gets offload metadata with each frame (AF_PACKET with `PACKET_VNET_HDR`) hands
//! both jobs back to the kernel on transmit. A datapath without it (the pnet fallback) uses this
//! module: [`looks_partial`] recognises a partial checksum from the bytes alone, and on transmit
//! [`complete_partial_checksum`] and [`segment_tcp`] do what the device would have done.
//!
//! Everything here works on Ethernet frames (optionally one 802.1Q tag) carrying IPv4, is pure,
//! and returns an [`Error`] instead of panicking on malformed input.

use super::checksum::{fold, pseudo_header, sum};
use super::{Error, ethertype, proto};

const ETH_HLEN: usize = 14;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Where the IPv4 header of an Ethernet frame starts (after an optional 802.1Q tag), or `None` for
/// anything that is not IPv4.
pub fn ipv4_offset(frame: &[u8]) -> Option<usize> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match et {
        ethertype::IPV4 => Some(ETH_HLEN),
        ethertype::VLAN => {
            let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
            (inner == ethertype::IPV4).then_some(ETH_HLEN + 4)
        }
        _ => None,
    }
}

/// The parts of an IPv4 + TCP/UDP frame the offload helpers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Info {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the transport header (= `csum_start`).
    pub l4: usize,
    /// End of the IP datagram (Ethernet padding excluded).
    pub end: usize,
    pub protocol: u8,
    /// Offset of the checksum field inside the transport header (= `csum_offset`).
    pub csum_offset: usize,
}

/// Parses an IPv4 TCP/UDP frame. Fragments are refused (a fragment's transport checksum cannot be
/// checked or completed alone).
pub fn l4_info(frame: &[u8]) -> Result<L4Info, Error> {
    let l3 = ipv4_offset(frame).ok_or(Error::Malformed)?;
    let ip = frame.get(l3..).ok_or(Error::Truncated)?;
    if ip.len() < 20 {
        return Err(Error::Truncated);
    }
    if ip[0] >> 4 != 4 {
        return Err(Error::Malformed);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl {
        return Err(Error::Malformed);
    }
    if total > ip.len() {
        return Err(Error::Truncated);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Err(Error::Malformed);
    }
    let protocol = ip[9];
    let (csum_offset, min) = match protocol {
        proto::TCP => (16, 20),
        proto::UDP => (6, 8),
        _ => return Err(Error::Malformed),
    };
    if total - ihl < min {
        return Err(Error::Truncated);
    }
    Ok(L4Info {
        l3,
        l4: l3 + ihl,
        end: l3 + total,
        protocol,
        csum_offset,
    })
}

fn pseudo(frame: &[u8], i: &L4Info) -> u64 {
    let src = [
        frame[i.l3 + 12],
        frame[i.l3 + 13],
        frame[i.l3 + 14],
        frame[i.l3 + 15],
    ];
    let dst = [
        frame[i.l3 + 16],
        frame[i.l3 + 17],
        frame[i.l3 + 18],
        frame[i.l3 + 19],
    ];
    // The length fits in u16: `end - l4` is below an IPv4 total length.
    pseudo_header(src, dst, i.protocol, (i.end - i.l4) as u16)
}

fn read16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Recognises a partial checksum without metadata: the transport checksum does not verify, but the
/// field holds the folded, not inverted, pseudo-header sum (what Linux leaves for the device).
/// Returns `(csum_start, csum_offset)` relative to the frame start, or `None` when the checksum is
/// complete, absent (UDP zero), wrong in some other way, or the frame is not IPv4 TCP/UDP.
pub fn looks_partial(frame: &[u8]) -> Option<(u16, u16)> {
    let i = l4_info(frame).ok()?;
    let field = read16(frame, i.l4 + i.csum_offset);
    if i.protocol == proto::UDP && field == 0 {
        return None;
    }
    let ph = pseudo(frame, &i);
    if fold(sum(&frame[i.l4..i.end]) + ph) == 0xffff {
        return None; // complete and valid
    }
    if field != fold(ph) {
        return None;
    }
    Some((u16::try_from(i.l4).ok()?, i.csum_offset as u16))
}

/// Completes a partial checksum as a device would: sums the bytes from `csum_start` to the end of
/// the IP datagram (the field holds the pseudo-header sum, so it takes part) and stores the inverted
/// result at `csum_start + csum_offset`. A UDP result of zero is sent as `0xffff`.
pub fn complete_partial_checksum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), Error> {
    // The datagram end excludes Ethernet padding when the frame is IPv4; otherwise the frame end.
    let end = match ipv4_offset(frame) {
        Some(l3) if frame.len() >= l3 + 4 => {
            let total = usize::from(read16(frame, l3 + 2));
            (l3 + total).min(frame.len())
        }
        _ => frame.len(),
    };
    let at = csum_start
        .checked_add(csum_offset)
        .ok_or(Error::Malformed)?;
    if at + 2 > end || csum_start > end {
        return Err(Error::Truncated);
    }
    let mut c = !fold(sum(&frame[csum_start..end]));
    if c == 0 && csum_offset == 6 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Fills a full (not partial) transport checksum of an IPv4 TCP/UDP frame.
pub fn fill_l4_checksum(frame: &mut [u8]) -> Result<(), Error> {
    let i = l4_info(frame)?;
    let at = i.l4 + i.csum_offset;
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = !fold(sum(&frame[i.l4..i.end]) + pseudo(frame, &i));
    if c == 0 && i.protocol == proto::UDP {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Splits an IPv4 TCP super-frame into segments carrying at most `mss` payload bytes each, as TSO
/// does: per segment the IP total length, an incrementing IP id, the IP checksum, the TCP sequence
/// number and a full TCP checksum are rewritten; FIN and PSH stay only on the last segment, CWR only
/// on the first. Each segment is built in `buf` (reused: no allocation once it has grown to one
/// segment) and passed to `emit`. A frame whose payload already fits in `mss` is emitted as one
/// segment with its checksum completed. Returns the number of segments.
pub fn segment_tcp(
    frame: &[u8],
    mss: usize,
    buf: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, Error> {
    let i = l4_info(frame)?;
    if i.protocol != proto::TCP || mss == 0 {
        return Err(Error::Malformed);
    }
    let doff = usize::from(frame[i.l4 + 12] >> 4) * 4;
    if doff < 20 || i.l4 + doff > i.end {
        return Err(Error::Malformed);
    }
    let hdr_end = i.l4 + doff;
    let payload = &frame[hdr_end..i.end];
    let ip_id = read16(frame, i.l3 + 4);
    let seq = u32::from_be_bytes([
        frame[i.l4 + 4],
        frame[i.l4 + 5],
        frame[i.l4 + 6],
        frame[i.l4 + 7],
    ]);
    let flags = frame[i.l4 + 13];
    let ihl = i.l4 - i.l3;
    let nseg = payload.len().div_ceil(mss).max(1);
    for (n, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&[][..]))
        .enumerate()
    {
        buf.clear();
        buf.extend_from_slice(&frame[..hdr_end]);
        buf.extend_from_slice(chunk);
        let ip_total = (ihl + doff + chunk.len()) as u16;
        buf[i.l3 + 2..i.l3 + 4].copy_from_slice(&ip_total.to_be_bytes());
        buf[i.l3 + 4..i.l3 + 6].copy_from_slice(&ip_id.wrapping_add(n as u16).to_be_bytes());
        buf[i.l3 + 10..i.l3 + 12].copy_from_slice(&[0, 0]);
        let ipc = !fold(sum(&buf[i.l3..i.l4]));
        buf[i.l3 + 10..i.l3 + 12].copy_from_slice(&ipc.to_be_bytes());
        let s = seq.wrapping_add((n * mss) as u32);
        buf[i.l4 + 4..i.l4 + 8].copy_from_slice(&s.to_be_bytes());
        let mut f = flags;
        if n + 1 != nseg {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if n != 0 {
            f &= !TCP_CWR;
        }
        buf[i.l4 + 13] = f;
        let seg = L4Info {
            end: i.l4 + doff + chunk.len(),
            ..i
        };
        buf[i.l4 + 16..i.l4 + 18].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&buf[i.l4..seg.end]) + pseudo(buf, &seg));
        buf[i.l4 + 16..i.l4 + 18].copy_from_slice(&c.to_be_bytes());
        emit(buf);
    }
    Ok(nseg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::verify;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const A: [u8; 4] = [192, 168, 1, 2];
    const B: [u8; 4] = [10, 1, 2, 3];

    fn tcp_frame(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(A, B, 64)
            .tcp(40000, 80, 0xffff_fff0, 64240)
            .ack(77);
        if flags & TCP_FIN != 0 {
            b = b.fin();
        }
        if flags & TCP_PSH != 0 {
            b = b.psh();
        }
        if flags & TCP_CWR != 0 {
            b = b.cwr();
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(A, B, 64)
            .udp(5353, 53);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Turns a frame's valid transport checksum into a Linux-style partial one.
    fn make_partial(frame: &mut [u8]) {
        let i = l4_info(frame).unwrap();
        let at = i.l4 + i.csum_offset;
        let ph = fold(pseudo(frame, &i));
        frame[at..at + 2].copy_from_slice(&ph.to_be_bytes());
    }

    fn l4_valid(frame: &[u8]) -> bool {
        let i = l4_info(frame).unwrap();
        verify(&frame[i.l4..i.end], pseudo(frame, &i))
    }

    #[test]
    fn detects_and_completes_partial_tcp_and_udp() {
        let payload: Vec<u8> = (0..999u32).map(|x| (x * 7) as u8).collect();
        for orig in [tcp_frame(&payload, 0), udp_frame(&payload), udp_frame(b"x")] {
            assert!(l4_valid(&orig));
            assert_eq!(
                looks_partial(&orig),
                None,
                "complete checksum is not partial"
            );
            let mut f = orig.clone();
            make_partial(&mut f);
            let (start, off) = looks_partial(&f).expect("partial detected");
            assert_eq!(usize::from(start), 34);
            complete_partial_checksum(&mut f, start.into(), off.into()).unwrap();
            assert_eq!(f, orig);
        }
    }

    #[test]
    fn padding_is_excluded_and_garbage_is_not_partial() {
        let orig = udp_frame(b"hi");
        let mut f = orig.clone();
        make_partial(&mut f);
        f.extend_from_slice(&[0xab; 16]); // Ethernet padding, non-zero
        let (s, o) = looks_partial(&f).unwrap();
        complete_partial_checksum(&mut f, s.into(), o.into()).unwrap();
        assert_eq!(&f[..orig.len()], &orig[..]);
        let mut bad = orig.clone();
        bad[40] ^= 0x55; // checksum now wrong, but not a pseudo-header sum
        assert_eq!(looks_partial(&bad), None);
        // UDP without checksum
        let mut z = orig;
        z[40] = 0;
        z[41] = 0;
        assert_eq!(looks_partial(&z), None);
    }

    #[test]
    fn malformed_input_never_panics() {
        let f = tcp_frame(b"abc", 0);
        for n in 0..f.len() {
            let mut t = f[..n].to_vec();
            let _ = looks_partial(&t);
            let _ = complete_partial_checksum(&mut t, 34, 16);
            let _ = complete_partial_checksum(&mut t, usize::MAX, 16);
            let _ = segment_tcp(&t, 1, &mut Vec::new(), |_| {});
            let _ = fill_l4_checksum(&mut t);
        }
        let mut g = f.clone();
        g[46] = 0xf0; // data offset 60 > segment
        assert!(segment_tcp(&g, 100, &mut Vec::new(), |_| {}).is_err());
        assert!(segment_tcp(&f, 0, &mut Vec::new(), |_| {}).is_err());
    }

    #[test]
    fn segments_like_tso() {
        let payload: Vec<u8> = (0..10_001u32).map(|x| (x * 13 + 1) as u8).collect();
        let mut f = tcp_frame(&payload, TCP_FIN | TCP_PSH | TCP_CWR);
        make_partial(&mut f);
        let mss = 1448;
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let mut buf = Vec::new();
        let n = segment_tcp(&f, mss, &mut buf, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(n, 7);
        assert_eq!(segs.len(), 7);
        let mut joined = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let ip = match p.net.unwrap() {
                etherparse::NetSlice::Ipv4(ip) => ip,
                _ => panic!(),
            };
            assert_eq!(ip.header().identification(), k as u16);
            assert!(
                crate::wire::checksum::verify(ip.header().slice(), 0),
                "ip checksum"
            );
            let TransportSlice::Tcp(t) = p.transport.unwrap() else {
                panic!()
            };
            assert_eq!(
                t.sequence_number(),
                0xffff_fff0u32.wrapping_add((k * mss) as u32)
            );
            let last = k == 6;
            assert_eq!(t.fin(), last);
            assert_eq!(t.psh(), last);
            assert_eq!(t.cwr(), k == 0);
            assert!(t.ack());
            assert_eq!(t.acknowledgment_number(), 77);
            let expect = t
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap();
            assert_eq!(t.checksum(), expect, "tcp checksum of segment {k}");
            assert!(l4_valid(s));
            assert!(t.payload().len() <= mss);
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn small_frame_is_one_segment_with_completed_checksum() {
        let orig = tcp_frame(b"hello", TCP_PSH);
        let mut f = orig.clone();
        make_partial(&mut f);
        let mut out = Vec::new();
        let n = segment_tcp(&f, 1460, &mut Vec::new(), |s| out = s.to_vec()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(out, orig);
        let empty = tcp_frame(b"", 0);
        let n = segment_tcp(&empty, 1460, &mut Vec::new(), |s| out = s.to_vec()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(out, empty);
    }
}
