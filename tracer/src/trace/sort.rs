//! Putting the calls in entry-time order (the trace is written in return
//! order, and files and threads interleave): integer keys sorted while each
//! chunk is in cache, then only the seams between chunks fixed.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Sorts a chunk's calls by time while they are still in cache. Lines are
/// written in return order, so most of a chunk is out of entry-time order
/// (a runtime call returns after the driver call it made); sorted here, the
/// whole trace is left with disorder only across chunk boundaries, and the
/// global sort moves almost nothing.
pub(super) fn sort_chunk<T>(slots: &mut [MaybeUninit<T>], keys: &mut [(u64, u32)], first: u32) {
    if keys.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    keys.sort_unstable();
    let mut source: Vec<u32> = keys.iter().map(|k| k.1 - first).collect();
    permute(slots, &mut source);
    for (i, key) in keys.iter_mut().enumerate() {
        key.1 = first + i as u32;
    }
}

/// An integer that orders as the time does (`f64::total_cmp`'s order), so
/// the sort compares integers.
pub(super) fn time_order(ts_ms: f64) -> u64 {
    let bits = ts_ms.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// Sorts by entry time, stable (ties keep file order). `keys` are each
/// position's (time, position), and each chunk (starting at `chunk_starts`)
/// is sorted already by [`sort_chunk`]. A trace is nearly in order, so
/// first only the seams between chunks are sorted; when calls are displaced
/// further (sessions or files that overlap in time, bad lines), every key
/// is sorted. Holes (infinite time) end up last. Returns whether sorting
/// the seams sufficed.
pub(super) fn sort_by_time<T: Send>(items: &mut [T], mut keys: Vec<(u64, u32)>, chunk_starts: &[usize]) -> bool {
    if sort_seams(items, &mut keys, chunk_starts) {
        return true;
    }
    // Seams sorted so far kept equal times in file order, so ordering by
    // (time, current position) is still stable.
    for (i, key) in keys.iter_mut().enumerate() {
        key.1 = i as u32;
    }
    keys.par_sort_unstable();
    let mut source: Vec<u32> = keys.into_par_iter().map(|(_, i)| i).collect();
    permute_in_parts(items, &mut source);
    false
}

/// Sorts each seam: the end of a chunk later than the next chunk's first key
/// with the start of the next chunk earlier than this chunk's last key.
/// Whether that sorted everything; `false` without touching anything when a
/// seam reaches across a whole chunk or into another seam.
fn sort_seams<T: Send>(items: &mut [T], keys: &mut [(u64, u32)], chunk_starts: &[usize]) -> bool {
    let mut seams = Vec::new();
    let ends = chunk_starts.iter().skip(1).copied().chain(std::iter::once(keys.len()));
    let chunks: Vec<(usize, usize)> = chunk_starts.iter().copied().zip(ends).filter(|(s, e)| e > s).collect();
    for pair in chunks.windows(2) {
        let ((a_start, seam), (_, b_end)) = (pair[0], pair[1]);
        let (a, b) = (&keys[a_start..seam], &keys[seam..b_end]);
        let (a_last, b_first) = (a[a.len() - 1], b[0]);
        if a_last <= b_first {
            continue;
        }
        let lo = a_start + a.partition_point(|k| *k <= b_first);
        let hi = seam + b.partition_point(|k| *k < a_last);
        let after_last_seam = seams.last().is_none_or(|&(_, end)| end <= lo);
        if lo == a_start || hi == b_end || !after_last_seam {
            return false;
        }
        seams.push((lo, hi));
    }
    let mut parts = Vec::with_capacity(seams.len());
    let (mut rest_items, mut rest_keys, mut at) = (items, &mut keys[..], 0);
    for (lo, hi) in seams {
        let (_, tail_items) = std::mem::take(&mut rest_items).split_at_mut(lo - at);
        let (_, tail_keys) = std::mem::take(&mut rest_keys).split_at_mut(lo - at);
        let (seam_items, tail_items) = tail_items.split_at_mut(hi - lo);
        let (seam_keys, tail_keys) = tail_keys.split_at_mut(hi - lo);
        parts.push((seam_items, seam_keys, lo as u32));
        (rest_items, rest_keys, at) = (tail_items, tail_keys, hi);
    }
    parts.into_par_iter().for_each(|(items, keys, lo)| {
        keys.sort_unstable();
        let mut source: Vec<u32> = keys.iter().map(|k| k.1 - lo).collect();
        permute(items, &mut source);
    });
    keys.par_windows(2).all(|w| w[0] <= w[1])
}

/// [`permute`] in parallel: cuts where the items before the cut all come
/// from before it (the prefix is a permutation of itself). A trace is nearly
/// sorted, so there are many such cuts and the parts are independent.
fn permute_in_parts<T: Send>(items: &mut [T], source: &mut [u32]) {
    let target = items.len() / (4 * rayon::current_num_threads()) + 1;
    let mut cuts = vec![0];
    let mut max = 0;
    for (i, &from) in source.iter().enumerate() {
        max = max.max(from as usize);
        // `i + 1` distinct sources whose largest is `i`: exactly 0..=i.
        if max == i && i + 1 - cuts[cuts.len() - 1] >= target {
            cuts.push(i + 1);
        }
    }
    let mut parts = Vec::with_capacity(cuts.len());
    let (mut items, mut source) = (items, source);
    let ends = cuts.iter().skip(1).copied().chain(std::iter::once(items.len()));
    for (start, end) in cuts.iter().copied().zip(ends).filter(|(s, e)| e > s) {
        let (part_items, rest_items) = std::mem::take(&mut items).split_at_mut(end - start);
        let (part_source, rest_source) = std::mem::take(&mut source).split_at_mut(end - start);
        parts.push((part_items, part_source, start as u32));
        (items, source) = (rest_items, rest_source);
    }
    parts.into_par_iter().for_each(|(items, source, base)| {
        source.iter_mut().for_each(|s| *s -= base);
        permute(items, source);
    });
}

/// Reorders `items` so that position `i` holds what was at `source[i]`,
/// following each cycle of the permutation with swaps; `source` is used up.
fn permute<T>(items: &mut [T], source: &mut [u32]) {
    const DONE: u32 = u32::MAX;
    for start in 0..items.len() {
        if source[start] == DONE {
            continue;
        }
        let mut at = start;
        loop {
            let from = source[at] as usize;
            source[at] = DONE;
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_moves_each_item_to_its_sorted_place() {
        let mut items = vec!['c', 'a', 'd', 'b', 'e'];
        let mut source = vec![1, 3, 0, 2, 4];
        permute(&mut items, &mut source);
        assert_eq!(items, ['a', 'b', 'c', 'd', 'e']);
    }

    #[test]
    fn time_order_orders_as_the_times_do() {
        let times = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-300, 0.5, 31.2, 1e300, f64::INFINITY];
        let keys: Vec<u64> = times.iter().map(|&t| time_order(t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    /// Sorts `times` in chunks of `chunk` as the reader does, then whole.
    /// Also says whether sorting the seams sufficed.
    fn sorted(times: &[u64], chunk: usize) -> (Vec<(u64, u32)>, bool) {
        let mut items: Vec<(u64, u32)> = times.iter().enumerate().map(|(i, &t)| (t, i as u32)).collect();
        let mut keys = items.clone();
        let starts: Vec<usize> = (0..times.len()).step_by(chunk).collect();
        for &start in &starts {
            let end = (start + chunk).min(times.len());
            let mut slots: Vec<MaybeUninit<(u64, u32)>> =
                items[start..end].iter().map(|&i| MaybeUninit::new(i)).collect();
            sort_chunk(&mut slots, &mut keys[start..end], start as u32);
            // SAFETY: every slot was initialized above.
            items[start..end].copy_from_slice(&slots.iter().map(|s| unsafe { s.assume_init() }).collect::<Vec<_>>());
        }
        let seams_sufficed = sort_by_time(&mut items, keys, &starts);
        (items, seams_sufficed)
    }

    #[test]
    fn seams_and_far_displacements_both_sort_stably() {
        let expected = |times: &[u64]| {
            let mut e: Vec<(u64, u32)> = times.iter().enumerate().map(|(i, &t)| (t, i as u32)).collect();
            e.sort();
            e
        };
        // Nearly sorted with ties: every seam is short.
        let near: Vec<u64> = (0..1000u64).map(|i| i / 3 + (i % 7) * 2).collect();
        assert_eq!(sorted(&near, 100), (expected(&near), true));
        // A second file that overlaps the first in time: seams reach across
        // whole chunks, so every key is sorted.
        let overlapping: Vec<u64> = (0..500u64).chain(0..500).collect();
        assert_eq!(sorted(&overlapping, 100), (expected(&overlapping), false));
        // Holes (bad lines) at a chunk's end.
        let holes: Vec<u64> = (0..1000u64).map(|i| if i % 250 == 249 { u64::MAX } else { i }).collect();
        assert_eq!(sorted(&holes, 250), (expected(&holes), false));
        // One call displaced by most of a chunk: a long seam.
        let late: Vec<u64> = (0..300u64).map(|i| if i == 150 { 20 } else { i }).collect();
        assert_eq!(sorted(&late, 100), (expected(&late), true));
    }

    #[test]
    fn permutes_in_independent_parts() {
        // Pairs swapped everywhere (cuts between pairs), one long cycle in
        // the middle (no cut inside it).
        let n = 10_000u32;
        let mut source: Vec<u32> = (0..n).map(|i| i ^ 1).collect();
        source[4000..6000].rotate_left(1);
        let expected: Vec<u32> = source.clone();
        let mut items: Vec<u32> = (0..n).collect();
        permute_in_parts(&mut items, &mut source);
        assert_eq!(items, expected);
    }
}
