//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! All functions work on host integers holding big-endian 16-bit words as they appear on the wire.

/// One's-complement sum of `data` as big-endian 16-bit words, not yet folded.
/// An odd trailing byte is padded with zero, as RFC 1071 says.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += (rest[i] as u64) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (whose own checksum field must be zero).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Sum of the IPv4 pseudo-header used by TCP and UDP.
#[inline]
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u64 {
    u32::from_be_bytes(src) as u64
        + u32::from_be_bytes(dst) as u64
        + protocol as u64
        + length as u64
}

/// RFC 1624 equation 3: the new checksum after a 16-bit word changed from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u64 + (!old) as u64 + new as u64)
}

/// RFC 1624 equation 3 for a 32-bit field (two words).
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    !fold(
        (!check) as u64
            + (!(old >> 16) & 0xffff) as u64
            + (!old & 0xffff) as u64
            + (new >> 16) as u64
            + (new & 0xffff) as u64,
    )
}

/// Update of a *partial* checksum field (Linux CHECKSUM_PARTIAL, virtio NEEDS_CSUM): the field holds
/// the folded, not inverted, pseudo-header sum, and the device completes it later. Only pseudo-header
/// fields (addresses, length) may be adjusted this way; ports are summed by the device itself.
#[inline]
pub fn update32_partial(field: u16, old: u32, new: u32) -> u16 {
    !update32(!field, old, new)
}

/// True when `data`, checksum field included, sums to all ones (a valid checksum).
#[inline]
pub fn verify(data: &[u8], extra: u64) -> bool {
    fold(sum(data) + extra) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 numerical example: sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data: Vec<u8> = (0..40u8).map(|b| b.wrapping_mul(37)).collect();
        data[10] = 0;
        data[11] = 0;
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        // change a 32-bit field and a 16-bit field
        let old32 = u32::from_be_bytes(data[12..16].try_into().unwrap());
        let new32: u32 = 0xcb00_7101;
        data[12..16].copy_from_slice(&new32.to_be_bytes());
        let c = update32(c, old32, new32);
        let old16 = u16::from_be_bytes([data[20], data[21]]);
        data[20..22].copy_from_slice(&0xbeefu16.to_be_bytes());
        let c = update16(c, old16, 0xbeef);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&data, 0));
    }

    #[test]
    fn partial_update_tracks_pseudo_header() {
        let (a, b) = ([192, 168, 1, 2], [198, 51, 100, 20]);
        let field = fold(pseudo_header(a, b, 6, 1000));
        let moved = update32_partial(field, u32::from_be_bytes(a), 0xcb00_7101);
        assert_eq!(moved, fold(pseudo_header([203, 0, 113, 1], b, 6, 1000)));
    }
}
