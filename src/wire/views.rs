//! The views themselves. See the module contract in `wire`.

use super::Error;
use super::bytes::{be16, be32, put16, put32};

macro_rules! view {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T> {
            buf: T,
        }
        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without any check: only for buffers already validated.
            #[inline]
            pub fn new_unchecked(buf: T) -> Self {
                $name { buf }
            }
            /// Gives the buffer back.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buf
            }
            /// The whole underlying buffer.
            #[inline]
            pub fn as_bytes(&self) -> &[u8] {
                self.buf.as_ref()
            }
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// The whole underlying buffer, mutable.
            #[inline]
            pub fn as_bytes_mut(&mut self) -> &mut [u8] {
                self.buf.as_mut()
            }
        }
    };
}

// ---------------------------------------------------------------- Ethernet II

view!(
    /// An Ethernet II frame (no 802.1Q tag handling: tagged frames show EtherType 0x8100).
    Ethernet
);

impl Ethernet<()> {
    pub const HEADER_LEN: usize = 14;
}

impl<T: AsRef<[u8]>> Ethernet<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        if buf.as_ref().len() < Ethernet::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Ethernet { buf })
    }
    pub fn dst(&self) -> [u8; 6] {
        self.buf.as_ref()[0..6].try_into().unwrap()
    }
    pub fn src(&self) -> [u8; 6] {
        self.buf.as_ref()[6..12].try_into().unwrap()
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 12)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[Ethernet::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ethernet<T> {
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[0..6].copy_from_slice(&mac);
    }
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[6..12].copy_from_slice(&mac);
    }
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buf.as_mut(), 12, t)
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[Ethernet::HEADER_LEN..]
    }
}

// ---------------------------------------------------------------- ARP (Ethernet/IPv4 only)

view!(
    /// An ARP packet for Ethernet and IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    Arp
);

impl Arp<()> {
    pub const LEN: usize = 28;
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

impl<T: AsRef<[u8]>> Arp<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < Arp::LEN {
            return Err(Error::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(Error::Malformed);
        }
        Ok(Arp { buf })
    }
    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn sender_mac(&self) -> [u8; 6] {
        self.buf.as_ref()[8..14].try_into().unwrap()
    }
    pub fn sender_ip(&self) -> [u8; 4] {
        self.buf.as_ref()[14..18].try_into().unwrap()
    }
    pub fn target_mac(&self) -> [u8; 6] {
        self.buf.as_ref()[18..24].try_into().unwrap()
    }
    pub fn target_ip(&self) -> [u8; 4] {
        self.buf.as_ref()[24..28].try_into().unwrap()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Arp<T> {
    /// Writes a complete Ethernet/IPv4 ARP packet into the first 28 bytes.
    pub fn fill(&mut self, op: u16, smac: [u8; 6], sip: [u8; 4], tmac: [u8; 6], tip: [u8; 4]) {
        let b = self.buf.as_mut();
        put16(b, 0, 1);
        put16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
        put16(b, 6, op);
        b[8..14].copy_from_slice(&smac);
        b[14..18].copy_from_slice(&sip);
        b[18..24].copy_from_slice(&tmac);
        b[24..28].copy_from_slice(&tip);
    }
}

// ---------------------------------------------------------------- IPv4

view!(
    /// An IPv4 packet. `new_checked` guarantees: version 4, 20 ≤ header length ≤ total length ≤ buffer.
    /// Bytes after the total length (Ethernet padding) are ignored by `payload`.
    Ipv4
);

impl Ipv4<()> {
    pub const MIN_HEADER_LEN: usize = 20;
    pub const FLAG_DF: u16 = 0x4000;
    pub const FLAG_MF: u16 = 0x2000;
}

impl<T: AsRef<[u8]>> Ipv4<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < Ipv4::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let ihl = ((b[0] & 0x0f) as usize) * 4;
        if ihl < Ipv4::MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total = be16(b, 2) as usize;
        if total < ihl {
            return Err(Error::Malformed);
        }
        if b.len() < total {
            return Err(Error::Truncated);
        }
        Ok(Ipv4 { buf })
    }
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[0] & 0x0f) as usize) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn total_len(&self) -> usize {
        be16(self.buf.as_ref(), 2) as usize
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    /// Flags and fragment offset word.
    pub fn frag_word(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn dont_frag(&self) -> bool {
        self.frag_word() & Ipv4::FLAG_DF != 0
    }
    pub fn more_frags(&self) -> bool {
        self.frag_word() & Ipv4::FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        ((self.frag_word() & 0x1fff) as usize) * 8
    }
    pub fn is_fragment(&self) -> bool {
        self.frag_word() & 0x3fff != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }
    pub fn src(&self) -> [u8; 4] {
        self.buf.as_ref()[12..16].try_into().unwrap()
    }
    pub fn dst(&self) -> [u8; 4] {
        self.buf.as_ref()[16..20].try_into().unwrap()
    }
    pub fn src_u32(&self) -> u32 {
        be32(self.buf.as_ref(), 12)
    }
    pub fn dst_u32(&self) -> u32 {
        be32(self.buf.as_ref(), 16)
    }
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
    pub fn verify_checksum(&self) -> bool {
        super::checksum::verify(self.header(), 0)
    }
    /// The payload up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4<T> {
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[8] = v
    }
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v)
    }
    pub fn set_frag_word(&mut self, v: u16) {
        put16(self.buf.as_mut(), 6, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 10, v)
    }
    pub fn set_src_u32(&mut self, v: u32) {
        put32(self.buf.as_mut(), 12, v)
    }
    pub fn set_dst_u32(&mut self, v: u32) {
        put32(self.buf.as_mut(), 16, v)
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = super::checksum::checksum(self.header());
        self.set_checksum(c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buf.as_mut()[h..t]
    }
}

// ---------------------------------------------------------------- TCP

view!(
    /// A TCP segment. `new_checked` guarantees 20 ≤ data offset ≤ buffer length.
    Tcp
);

impl Tcp<()> {
    pub const MIN_HEADER_LEN: usize = 20;
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    /// Offset of the checksum field inside the header.
    pub const CHECKSUM_OFFSET: usize = 16;
}

impl<T: AsRef<[u8]>> Tcp<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < Tcp::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let off = ((b[12] >> 4) as usize) * 4;
        if off < Tcp::MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if off > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Tcp { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[12] >> 4) as usize) * 4
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 16)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tcp<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 0, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 16, v)
    }
}

// ---------------------------------------------------------------- UDP

view!(
    /// A UDP datagram. `new_checked` guarantees 8 ≤ length field ≤ buffer length.
    Udp
);

impl Udp<()> {
    pub const HEADER_LEN: usize = 8;
    pub const CHECKSUM_OFFSET: usize = 6;
}

impl<T: AsRef<[u8]>> Udp<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < Udp::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = be16(b, 4) as usize;
        if len < Udp::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Udp { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn len(&self) -> usize {
        be16(self.buf.as_ref(), 4) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == Udp::HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Udp<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 0, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 6, v)
    }
}

// ---------------------------------------------------------------- ICMP

view!(
    /// An ICMP message. `new_checked` guarantees at least the 8-byte header.
    Icmp
);

impl Icmp<()> {
    pub const HEADER_LEN: usize = 8;
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination unreachable codes.
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    pub const CODE_FRAG_NEEDED: u8 = 4;
    pub const CODE_ADMIN_PROHIBITED: u8 = 13;
}

impl<T: AsRef<[u8]>> Icmp<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        if buf.as_ref().len() < Icmp::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmp { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Query identifier (echo request/reply).
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn seq(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn is_query(&self) -> bool {
        matches!(self.msg_type(), Icmp::ECHO_REQUEST | Icmp::ECHO_REPLY)
    }
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            Icmp::DEST_UNREACHABLE | Icmp::TIME_EXCEEDED | Icmp::PARAMETER_PROBLEM
        )
    }
    pub fn verify_checksum(&self) -> bool {
        super::checksum::verify(self.buf.as_ref(), 0)
    }
    /// What follows the 8-byte header (for errors: the quoted datagram).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[Icmp::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmp<T> {
    pub fn set_type_code(&mut self, t: u8, c: u8) {
        let b = self.buf.as_mut();
        b[0] = t;
        b[1] = c;
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v)
    }
    /// Bytes 4..8: identifier/sequence, or unused/next-hop MTU for errors.
    pub fn set_rest(&mut self, v: u32) {
        put32(self.buf.as_mut(), 4, v)
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[Icmp::HEADER_LEN..]
    }
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = super::checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_rejects_bad_headers_without_panicking() {
        let mut ok = [0u8; 20];
        ok[0] = 0x45;
        ok[3] = 20;
        assert!(Ipv4::new_checked(&ok[..]).is_ok());
        assert_eq!(Ipv4::new_checked(&ok[..19]).unwrap_err(), Error::Truncated);
        let mut bad = ok;
        bad[0] = 0x44; // IHL 4
        assert_eq!(Ipv4::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = ok;
        bad[0] = 0x65; // version 6
        assert_eq!(Ipv4::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let mut bad = ok;
        bad[3] = 60; // total length lies
        assert_eq!(Ipv4::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
        let mut bad = ok;
        bad[0] = 0x46; // IHL 24 > total 20
        assert_eq!(Ipv4::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn tcp_data_offset_past_end_is_truncated() {
        let mut seg = [0u8; 20];
        seg[12] = 0xf0; // 60-byte header in a 20-byte buffer
        assert_eq!(Tcp::new_checked(&seg[..]).unwrap_err(), Error::Truncated);
        seg[12] = 0x40; // 16 bytes
        assert_eq!(Tcp::new_checked(&seg[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn udp_length_is_checked() {
        let mut d = [0u8; 8];
        d[5] = 9;
        assert_eq!(Udp::new_checked(&d[..]).unwrap_err(), Error::Truncated);
        d[5] = 7;
        assert_eq!(Udp::new_checked(&d[..]).unwrap_err(), Error::Malformed);
        d[5] = 8;
        assert!(Udp::new_checked(&d[..]).unwrap().is_empty());
    }

    #[test]
    fn views_never_panic_on_arbitrary_bytes() {
        // Every prefix of a noisy buffer: construction either fails or all accessors work.
        let noise: Vec<u8> = (0..80u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for n in 0..noise.len() {
            let b = &noise[..n];
            if let Ok(p) = Ipv4::new_checked(b) {
                let _ = (
                    p.payload(),
                    p.header(),
                    p.verify_checksum(),
                    p.frag_offset(),
                );
            }
            if let Ok(t) = Tcp::new_checked(b) {
                let _ = (t.flags(), t.header_len(), t.checksum());
            }
            if let Ok(u) = Udp::new_checked(b) {
                let _ = (u.len(), u.checksum());
            }
            if let Ok(i) = Icmp::new_checked(b) {
                let _ = (i.payload(), i.verify_checksum(), i.ident());
            }
            if let Ok(a) = Arp::new_checked(b) {
                let _ = (a.sender_ip(), a.target_mac());
            }
        }
    }
}
