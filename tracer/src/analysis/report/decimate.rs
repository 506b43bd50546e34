//! Thinning plot series to what a picture can show: a trace has hundreds of
//! thousands of allocations and steps, an SVG of every point is tens of
//! megabytes that no viewer opens smoothly, and the picture is the same.

use std::collections::HashSet;

/// M4 aggregation for a line: in each of `columns` equal slices of `x`, the
/// first, lowest, highest and last point (in their order). The line drawn
/// through them covers the same pixels as the line through every point.
/// `points` must be sorted by x.
pub fn m4(points: &[(f64, f64)], x: (f64, f64), columns: usize) -> Vec<(f64, f64)> {
    if points.len() <= 4 * columns {
        return points.to_vec();
    }
    let width = (x.1 - x.0).max(f64::MIN_POSITIVE);
    let column = |p: &(f64, f64)| (((p.0 - x.0) / width * columns as f64) as usize).min(columns - 1);
    let mut out = Vec::with_capacity(4 * columns);
    let mut start = 0;
    while start < points.len() {
        let col = column(&points[start]);
        let mut end = start + 1;
        let (mut lo, mut hi) = (start, start);
        while end < points.len() && column(&points[end]) == col {
            if points[end].1 < points[lo].1 {
                lo = end;
            }
            if points[end].1 > points[hi].1 {
                hi = end;
            }
            end += 1;
        }
        let mut keep = [start, lo, hi, end - 1];
        keep.sort_unstable();
        let mut last = usize::MAX;
        for i in keep {
            if i != last {
                out.push(points[i]);
                last = i;
            }
        }
        start = end;
    }
    out
}

/// For a scatter: one point per occupied cell of a `cells.0 × cells.1` grid
/// over the ranges (dots a few pixels wide on a grid of that many pixels
/// look the same), in their first order.
pub fn scatter(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64), cells: (u32, u32)) -> Vec<(f64, f64)> {
    let cell = |v: f64, (lo, hi): (f64, f64), n: u32| {
        ((((v - lo) / (hi - lo).max(f64::MIN_POSITIVE)) * f64::from(n)) as i64).min(i64::from(n) - 1)
    };
    let mut seen = HashSet::new();
    points.iter().copied().filter(|&(px, py)| seen.insert((cell(px, x, cells.0), cell(py, y, cells.1)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m4_keeps_each_columns_extremes_and_ends() {
        // 1000 points in 10 columns: a spike in column 3 must survive.
        let mut points: Vec<(f64, f64)> = (0..1000).map(|i| (f64::from(i), 1.0)).collect();
        points[350].1 = 99.0;
        points[351].1 = -5.0;
        let thin = m4(&points, (0.0, 1000.0), 10);
        assert!(thin.len() <= 40, "{}", thin.len());
        assert!(thin.contains(&(350.0, 99.0)) && thin.contains(&(351.0, -5.0)));
        assert_eq!((thin[0], *thin.last().unwrap()), (points[0], points[999]));
        assert!(thin.windows(2).all(|w| w[0].0 <= w[1].0), "order kept");
        let few = &points[..30];
        assert_eq!(m4(few, (0.0, 1000.0), 10), few);
    }

    #[test]
    fn scatter_keeps_one_point_per_cell() {
        let points = [(0.0, 0.0), (0.001, 0.001), (0.5, 0.5), (1.0, 1.0)];
        assert_eq!(scatter(&points, (0.0, 1.0), (0.0, 1.0), (100, 100)), [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]);
    }
}
