//! IPv4 fragmentation (RFC 791), for packets larger than the next link's MTU whose DF bit is clear.

use super::Error;
use super::checksum::checksum;

/// Splits the IPv4 packet that starts at `l3` in `frame` into fragments of at most `mtu` bytes (IP
/// header included), in order. Each fragment is built in `buf` (reused) with the frame's L2 header
/// in front and passed to `emit`. The full header, options included, is repeated in every fragment
/// (RFC 791 allows copying only the options with the "copied" flag; rnat keeps them all, which
/// receivers accept). Returns the number of fragments.
pub fn fragment(
    frame: &[u8],
    l3: usize,
    mtu: usize,
    buf: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, Error> {
    let ip = super::Ipv4::new_checked(frame.get(l3..).ok_or(Error::Truncated)?)?;
    let hl = ip.header_len();
    let total = ip.total_len();
    if ip.dont_frag() {
        return Err(Error::Malformed);
    }
    // Payload bytes per fragment: a multiple of 8.
    let step = mtu.checked_sub(hl).ok_or(Error::Malformed)? & !7;
    if step == 0 {
        return Err(Error::Malformed);
    }
    let word = ip.frag_word();
    let base_off = (word & 0x1fff) as usize * 8;
    let last_mf = word & super::Ipv4::FLAG_MF != 0;
    let payload = &frame[l3 + hl..l3 + total];
    let mut n = 0;
    let mut at = 0;
    while at < payload.len() {
        let len = step.min(payload.len() - at);
        let more = at + len < payload.len() || last_mf;
        buf.clear();
        buf.extend_from_slice(&frame[..l3 + hl]);
        buf.extend_from_slice(&payload[at..at + len]);
        let h = &mut buf[l3..l3 + hl];
        h[2..4].copy_from_slice(&((hl + len) as u16).to_be_bytes());
        let off = ((base_off + at) / 8) as u16 | if more { super::Ipv4::FLAG_MF } else { 0 };
        h[6..8].copy_from_slice(&off.to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        let c = checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        emit(buf);
        n += 1;
        at += len;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_reassemble_to_the_original() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut f = vec![0u8; 14];
        f[12] = 8;
        let mut ip = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&payload);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let n = fragment(&f, 14, 1400, &mut buf, |fr| got.push(fr.to_vec())).unwrap();
        assert_eq!(n, 3);
        let mut re = vec![0u8; payload.len()];
        for (i, fr) in got.iter().enumerate() {
            assert!(fr.len() - 14 <= 1400);
            assert!(super::super::checksum::verify(&fr[14..34], 0));
            let w = u16::from_be_bytes([fr[20], fr[21]]);
            assert_eq!(w & 0x2000 != 0, i < 2, "MF on all but the last");
            assert_eq!(
                u16::from_be_bytes([fr[18], fr[19]]),
                0x1234,
                "same identification"
            );
            let off = (w & 0x1fff) as usize * 8;
            re[off..off + fr.len() - 34].copy_from_slice(&fr[34..]);
        }
        assert_eq!(re, payload);
    }

    #[test]
    fn df_set_is_refused() {
        let mut f = vec![0u8; 14];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0; 8]);
        assert!(fragment(&f, 14, 20, &mut Vec::new(), |_| {}).is_err());
    }
}
