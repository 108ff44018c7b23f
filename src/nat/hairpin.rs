//! Hairpinning (RFC 4787 REQ-9/9a, RFC 5382 REQ-8): an inside host reaches another inside host
//! through the other's public mapping. The packet is translated twice, as if it had left and come
//! back: its source becomes the sender's public endpoint (creating or refreshing the sender's own
//! mapping and session, exactly as an outbound packet would), and its destination, a public
//! endpoint, becomes the inside endpoint that owns it, subject to that mapping's filtering. The
//! receiver therefore sees the sender's public address and port (REQ-9a), never its private one.

use super::engine::{Flow, L3, Side, Worker, rewrite};
use super::stats::Counter;
use super::{FrameMeta, Time, Verdict};
use crate::wire::checksum::update16;

impl Worker {
    pub(super) fn hairpin(&self, f: &mut [u8], fl: &Flow, meta: FrameMeta, now: Time) -> Verdict {
        let (pub_ip, pub_port) = match self.lookup_out(fl, now) {
            Ok(x) => x,
            Err(r) => return Verdict::Drop(r),
        };
        // Seen from the target's mapping, the packet comes from the sender's public endpoint.
        let back = Flow {
            src: pub_ip,
            sport: pub_port,
            hairpin: false,
            ..*fl
        };
        let (in_ip, in_port) = match self.lookup_in(&back, now) {
            Ok(x) => x,
            Err(r) => return Verdict::Drop(r),
        };
        rewrite(
            f,
            fl.l4,
            fl.proto,
            Side::Src,
            pub_ip,
            pub_port,
            meta.csum_partial,
        );
        rewrite(
            f,
            fl.l4,
            fl.proto,
            Side::Dst,
            in_ip,
            in_port,
            meta.csum_partial,
        );
        // One router hop, one TTL decrement: give back the second one.
        let ttl = f[L3 + 8];
        let c = u16::from_be_bytes([f[L3 + 10], f[L3 + 11]]);
        let c = update16(
            c,
            u16::from_be_bytes([ttl, f[L3 + 9]]),
            u16::from_be_bytes([ttl + 1, f[L3 + 9]]),
        );
        f[L3 + 8] = ttl + 1;
        f[L3 + 10..L3 + 12].copy_from_slice(&c.to_be_bytes());
        self.stats.bump(Counter::PktsOut);
        self.stats.add(Counter::BytesOut as usize, fl.ip_len as u64);
        Verdict::Hairpin
    }
}
