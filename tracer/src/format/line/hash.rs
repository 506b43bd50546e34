//! Fast hashing for the report's hot maps: keys read from one's own trace
//! (pids, pointers, names), hashed millions of times.

use std::hash::Hasher;

/// A hash map for small integer keys (pids, tids, pointers, short names), hashed per
/// call: SipHash costs more than the rest of the per-call work. rustc's FxHash is
/// not DoS-resistant, which does not matter for keys read from one's own trace.
pub type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

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
