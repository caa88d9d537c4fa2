//! Byte tests eight bytes at a time ("SIMD within a register") for the short strings of a
//! head: field names and values. A byte loop costs ~4–9 instructions a byte; a word test is
//! ~12 instructions for eight.

/// `0x01` in every byte.
pub const REP: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte.
pub const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit set in each byte of `w` that is zero (and maybe in bytes above one that is:
/// exact as to whether there is one, not as to where the later ones are).
#[inline(always)]
pub fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(REP) & !w & HI
}

/// `f` of the words that cover `b`, OR-ed: whole words from the start and a last word that
/// overlaps the one before; from four to seven bytes, two overlapping four-byte halves with
/// the high half `pad`; below four bytes, one word of them and `pad`. `f` must flag bytes
/// independently (a byte of `pad`, which it must not flag, or one seen twice, changes
/// nothing).
#[inline(always)]
pub fn or_words(b: &[u8], pad: u8, f: impl Fn(u64) -> u64) -> u64 {
    let n = b.len();
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let high = (REP * u64::from(pad)) << 32;
    let half = |i: usize| u64::from(u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4])));
    match n {
        0..4 => {
            let mut w = REP * u64::from(pad);
            for (i, &c) in b.iter().enumerate() {
                w = (w & !(0xff << (8 * i))) | u64::from(c) << (8 * i);
            }
            f(w)
        }
        4..8 => f(half(0) | high) | f(half(n - 4) | high),
        _ => {
            let mut acc = f(word(n - 8));
            let mut i = 0;
            while i + 8 < n {
                acc |= f(word(i));
                i += 8;
            }
            acc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_cover_every_byte_and_only_those() {
        // A flag for `x`: every position of every length is seen, and the padding never is.
        let is_x = |w: u64| zero_bytes(w ^ (REP * u64::from(b'x')));
        for len in 0..40 {
            assert_eq!(or_words(&vec![b'a'; len], b'a', is_x), 0, "{len}");
            for at in 0..len {
                let mut b = vec![b'a'; len];
                b[at] = b'x';
                assert_ne!(or_words(&b, b'a', is_x), 0, "{len} at {at}");
            }
        }
    }
}
