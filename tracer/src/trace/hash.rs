//! Fast hashing for the report's hot maps: keys read from one's own trace
//! (pids, pointers, names), hashed millions of times.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// A hash map for small integer keys (pids, tids, pointers, short names), hashed per
/// call: SipHash costs more than the rest of the per-call work.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The multiply-rotate hash of rustc's FxHash: not DoS-resistant, which
/// does not matter for keys read from one's own trace.
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A name hashed by its length and three 8-byte windows, not every byte:
/// kernel names are C++ templates of 100+ bytes, hashed once per launch.
/// Equal hashes are still compared in full by the map.
#[derive(PartialEq, Eq)]
pub struct NameKey<'a>(pub &'a [u8]);

impl std::hash::Hash for NameKey<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let b = self.0;
        let word = |at: usize| {
            let mut w = [0u8; 8];
            let part = &b[at.min(b.len())..(at + 8).min(b.len())];
            w[..part.len()].copy_from_slice(part);
            u64::from_le_bytes(w)
        };
        h.write_u64(b.len() as u64);
        h.write_u64(word(0));
        h.write_u64(word(b.len() / 2));
        h.write_u64(word(b.len().saturating_sub(8)));
    }
}
