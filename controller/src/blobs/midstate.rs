//! SHA-256 whose state can be written down between parts: a multipart
//! upload to S3 that was cut off goes on from its last whole part on any
//! controller, and the digest of the whole still covers every byte without
//! reading the parts back (S3 cannot read an unfinished upload).
//!
//! Parts are whole 64-byte blocks (the part size is a multiple of 64), so
//! between parts the state is the eight words and the length alone.

//!
//! The compression function is written out here (FIPS 180-4, 6.2.2):
//! sha2 exposes its own only behind a feature that would rebuild every
//! crate depending on sha2; the tests check it against sha2.

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Compresses whole 64-byte blocks into `state`.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

const INITIAL: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

#[derive(Debug, Clone)]
pub struct Midstate {
    state: [u32; 8],
    /// Bytes hashed, `pending` included.
    len: u64,
    pending: Vec<u8>,
}

impl Default for Midstate {
    fn default() -> Self {
        Self { state: INITIAL, len: 0, pending: Vec::with_capacity(64) }
    }
}

impl Midstate {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            compress(&mut self.state, &block);
        }
        let whole = data.len() / 64 * 64;
        compress(&mut self.state, &data[..whole]);
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The state between whole blocks as text (`len:hex words`); `None`
    /// in the middle of a block.
    pub fn save(&self) -> Option<String> {
        if !self.pending.is_empty() {
            return None;
        }
        let words: String = self.state.iter().map(|w| format!("{w:08x}")).collect();
        Some(format!("{}:{words}", self.len))
    }

    /// A state [`Midstate::save`] wrote.
    pub fn load(text: &str) -> Option<Self> {
        let (len, words) = text.split_once(':')?;
        let len: u64 = len.parse().ok()?;
        if words.len() != 64 || !len.is_multiple_of(64) {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, word) in state.iter_mut().enumerate() {
            *word = u32::from_str_radix(words.get(i * 8..i * 8 + 8)?, 16).ok()?;
        }
        Some(Self { state, len, pending: Vec::with_capacity(64) })
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.len
    }

    /// The digest, hex: the padding of FIPS 180-4 (0x80, zeros, the
    /// length in bits big-endian) over the last block(s).
    pub fn finish(mut self) -> String {
        let bits = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &tail);
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn agrees_with_sha2_across_saves_and_odd_writes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for cut in [0usize, 1, 55, 56, 63, 64, 65, 119, 128, 4096, 9_999, 10_000] {
            let mut h = Midstate::default();
            for chunk in data[..cut].chunks(37) {
                h.update(chunk);
            }
            h.update(&data[cut..]);
            assert_eq!(h.finish(), hex::encode(Sha256::digest(&data)), "cut at {cut}");
        }
        let mut h = Midstate::default();
        h.update(&data[..4096]);
        let saved = h.save().unwrap();
        let mut again = Midstate::load(&saved).unwrap();
        again.update(&data[4096..]);
        assert_eq!(again.hashed(), data.len() as u64);
        assert_eq!(again.finish(), hex::encode(Sha256::digest(&data)));
        assert_eq!(Midstate::default().finish(), hex::encode(Sha256::digest(b"")));
        h.update(b"x");
        assert!(h.save().is_none(), "mid-block");
        assert!(Midstate::load("65:00").is_none() && Midstate::load("nonsense").is_none());
    }
}
