//! Incremental Internet checksum updates (RFC 1624) for the XDP program's header rewrites;
//! `no_std`, and here rather than in lb-ebpf so that they are unit-tested against a full
//! recomputation.
//!
//! Words are raw: read from the packet in native byte order, as the checksum field itself is.
//! One's-complement sums do not depend on byte order, so no conversion is needed.

/// The checksum `csum` after one 16-bit word at an even offset changes from `old` to `new`
/// (HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub fn replace16(csum: u16, old: u16, new: u16) -> u16 {
    let mut s = (!csum) as u32 + (!old) as u32 + new as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// The checksum `csum` after four bytes at offset `at` (counted from where the summed data
/// starts) change from `old` to `new`. At an odd offset the bytes straddle the words; their
/// contribution is then that of the byte-swapped words, since a one's-complement sum commutes
/// with rotating its words by 8 bits.
#[inline(always)]
pub fn replace32(csum: u16, at: usize, old: [u8; 4], new: [u8; 4]) -> u16 {
    let word = |b: [u8; 4], i: usize| if at.is_multiple_of(2) { u16::from_ne_bytes([b[i], b[i + 1]]) } else { u16::from_ne_bytes([b[i + 1], b[i]]) };
    let c = replace16(csum, word(old, 0), word(new, 0));
    replace16(c, word(old, 2), word(new, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum of `data`, as raw bytes for the packet (big-endian).
    fn full(data: &[u8]) -> [u8; 2] {
        let mut s: u32 = data.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        (!(s as u16)).to_be_bytes()
    }

    #[test]
    fn updates_match_a_full_recomputation_at_every_offset() {
        let mut data: Vec<u8> = (0..40u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for at in 0..36 {
            for new in [[0, 0, 0, 0], [0xff, 0xff, 0xff, 0xff], [0x12, 0x34, 0xfe, 0x01], [at as u8, 7, 0x80, 0]] {
                let before = u16::from_ne_bytes(full(&data));
                let old: [u8; 4] = data[at..at + 4].try_into().unwrap();
                data[at..at + 4].copy_from_slice(&new);
                let want = full(&data);
                let got = replace32(before, at, old, new).to_ne_bytes();
                // 0x0000 and 0xffff are the same one's-complement number.
                let same = got == want || (u16::from_ne_bytes(got) | u16::from_ne_bytes(want)) == 0xffff && (got == [0, 0] || want == [0, 0]);
                assert!(same, "offset {at}, {old:?} -> {new:?}: {got:?}, want {want:?}");
            }
        }
        let before = u16::from_ne_bytes(full(&data));
        let old = u16::from_ne_bytes([data[6], data[7]]);
        data[6..8].copy_from_slice(&[0xab, 0xcd]);
        assert_eq!(replace16(before, old, u16::from_ne_bytes([0xab, 0xcd])).to_ne_bytes(), full(&data));
    }
}
