//! Putting the calls in entry-time order (the trace is written in return
//! order, and files and threads interleave): integer keys sorted while each
//! chunk is in cache, then only the seams between chunks fixed.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Sorts a chunk's calls by time while they are still in cache. Lines are
/// written in return order, so most of a chunk is out of entry-time order
/// (a runtime call returns after the driver call it made); sorted here, the
/// whole trace is left with disorder only across chunk boundaries.
/// `keys` holds each slot's (time, index in the chunk); ties stay in line
/// order.
pub(super) fn sort_chunk<T>(slots: &mut [MaybeUninit<T>], keys: &mut [(u64, u32)]) {
    if keys.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    keys.sort_unstable();
    let mut source: Vec<u32> = keys.iter().map(|k| k.1).collect();
    permute(slots, &mut source);
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

/// Sorts by entry time, stable (ties keep file order), where `time` gives
/// an item's [`time_order`] and each chunk (starting at `chunk_starts`) is
/// sorted already by [`sort_chunk`]. A trace is nearly in order, so first
/// only the seams between chunks are sorted; when calls are displaced
/// further (sessions or files that overlap in time, bad lines), everything
/// is sorted. Holes (infinite time) end up last. Returns whether sorting
/// the seams sufficed.
pub(super) fn sort_by_time<T: Send + Sync>(
    items: &mut [T],
    chunk_starts: &[usize],
    time: impl Fn(&T) -> u64 + Sync,
) -> bool {
    if sort_seams(items, chunk_starts, &time) {
        debug_assert!(items.windows(2).all(|w| time(&w[0]) <= time(&w[1])));
        return true;
    }
    // Equal times are in file order within each chunk, and chunks are in
    // file order: ordering by (time, position) is stable.
    let mut keys: Vec<(u64, u32)> = items.par_iter().enumerate().map(|(i, item)| (time(item), i as u32)).collect();
    keys.par_sort_unstable();
    let mut source: Vec<u32> = keys.into_par_iter().map(|(_, i)| i).collect();
    permute_in_parts(items, &mut source);
    false
}

/// Sorts each seam: the end of a chunk A later than the next chunk B's first
/// item, with the start of B earlier than A's last. `false`, touching
/// nothing, when a seam spans a whole chunk or meets another seam.
///
/// Otherwise everything is sorted after: the seams are apart, each chunk's
/// parts outside them are sorted and unmoved, and at each seam's edges the
/// item before it is no later than B's first (the seam's least) and the
/// item after it no earlier than A's last (the seam's greatest).
fn sort_seams<T: Send>(items: &mut [T], chunk_starts: &[usize], time: &(impl Fn(&T) -> u64 + Sync)) -> bool {
    let mut seams = Vec::new();
    let ends = chunk_starts.iter().skip(1).copied().chain(std::iter::once(items.len()));
    let chunks: Vec<(usize, usize)> = chunk_starts.iter().copied().zip(ends).filter(|(s, e)| e > s).collect();
    for pair in chunks.windows(2) {
        let ((a_start, seam), (_, b_end)) = (pair[0], pair[1]);
        let (a, b) = (&items[a_start..seam], &items[seam..b_end]);
        let (a_last, b_first) = (time(&a[a.len() - 1]), time(&b[0]));
        if a_last <= b_first {
            continue;
        }
        // Ties: A's items come first in file order.
        let lo = a_start + a.partition_point(|x| time(x) <= b_first);
        let hi = seam + b.partition_point(|x| time(x) < a_last);
        // Apart by at least one item: that item keeps the seams' edges in order.
        let after_last_seam = seams.last().is_none_or(|&(_, end)| end < lo);
        if lo == a_start || hi == b_end || !after_last_seam {
            return false;
        }
        seams.push((lo, hi));
    }
    let mut parts = Vec::with_capacity(seams.len());
    let (mut rest, mut at) = (items, 0);
    for (lo, hi) in seams {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(lo - at);
        let (seam, tail) = tail.split_at_mut(hi - lo);
        parts.push(seam);
        (rest, at) = (tail, hi);
    }
    parts.into_par_iter().for_each(|seam| {
        let mut keys: Vec<(u64, u32)> = seam.iter().enumerate().map(|(i, x)| (time(x), i as u32)).collect();
        keys.sort_unstable();
        let mut source: Vec<u32> = keys.iter().map(|k| k.1).collect();
        permute(seam, &mut source);
    });
    true
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

    /// Sorts `times` in chunks of `chunk` as the reader does, then whole;
    /// also says whether sorting the seams sufficed.
    fn sorted(times: &[u64], chunk: usize) -> (Vec<(u64, u32)>, bool) {
        let mut items: Vec<(u64, u32)> = times.iter().enumerate().map(|(i, &t)| (t, i as u32)).collect();
        let starts: Vec<usize> = (0..times.len()).step_by(chunk).collect();
        for &start in &starts {
            let end = (start + chunk).min(times.len());
            let mut slots: Vec<MaybeUninit<(u64, u32)>> =
                items[start..end].iter().map(|&i| MaybeUninit::new(i)).collect();
            let mut keys: Vec<(u64, u32)> = (0..).zip(&items[start..end]).map(|(i, item)| (item.0, i)).collect();
            sort_chunk(&mut slots, &mut keys);
            // SAFETY: every slot was initialized above.
            items[start..end].copy_from_slice(&slots.iter().map(|s| unsafe { s.assume_init() }).collect::<Vec<_>>());
        }
        let seams_sufficed = sort_by_time(&mut items, &starts, |item| item.0);
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
        // Random displacements and chunk sizes, seams or not: always sorted.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..300u64 {
            let times: Vec<u64> = (0..400u64)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    i + x % (1 + round % 40)
                })
                .collect();
            assert_eq!(sorted(&times, 5 + (round % 60) as usize).0, expected(&times), "round {round}");
        }
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
