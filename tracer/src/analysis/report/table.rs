//! Small writers for the report's tables: RFC 4180 CSV (kernel names are C++
//! templates full of commas, so fields are quoted when needed) and aligned
//! plain-text tables.

use std::fmt::Write as _;

pub use crate::format::line::FastMap;

/// Builds one CSV document in memory.
pub struct Csv {
    buf: String,
}

impl Csv {
    pub fn new(header: &[&str]) -> Self {
        let mut csv = Self { buf: String::new() };
        csv.push(header.iter().copied());
        csv
    }

    fn push<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            if field.contains([',', '"', '\n', '\r']) {
                self.buf.push('"');
                self.buf.push_str(&field.replace('"', "\"\""));
                self.buf.push('"');
            } else {
                self.buf.push_str(field);
            }
        }
        self.buf.push('\n');
    }

    pub fn row(&mut self, fields: &[String]) {
        self.push(fields.iter().map(String::as_str));
    }

    /// A row of fields that never need quoting (numbers), formatted in
    /// place: no string per field for tables of hundreds of thousands of rows.
    pub fn numbers(&mut self, row: std::fmt::Arguments) {
        let _ = self.buf.write_fmt(row);
        self.buf.push('\n');
    }

    pub fn finish(self) -> String {
        self.buf
    }
}

/// A CSV document: `header`, then the cells of each row.
pub fn csv<T>(header: &[&str], rows: impl IntoIterator<Item = T>, cells: impl Fn(T) -> Vec<String>) -> String {
    let mut csv = Csv::new(header);
    for row in rows {
        csv.row(&cells(row));
    }
    csv.finish()
}

/// An aligned [`text`] table of the cells of each row.
pub fn text_of<T>(header: &[&str], rows: impl IntoIterator<Item = T>, cells: impl Fn(T) -> Vec<String>) -> String {
    text(header, &rows.into_iter().map(cells).collect::<Vec<_>>())
}

/// Formats a float with a fixed number of decimals (CSV and text).
pub fn fixed(v: f64, decimals: usize) -> String {
    Fixed(v, decimals).to_string()
}

/// `v` with a fixed number of decimals, exactly as `{v:.decimals$}` prints
/// it, but in integer arithmetic where that is exact: the report writes
/// hundreds of thousands of timestamps, and the standard formatter's exact
/// mode costs more than the rest of writing a row.
#[derive(Clone, Copy, Debug)]
pub struct Fixed(pub f64, pub usize);

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        const POW10: [u64; 10] =
            [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];
        let Fixed(v, decimals) = *self;
        // `v * 10^decimals` is off by at most 2^-53 of itself (< 1.2e-4
        // below 1e12), so away from a rounding tie it rounds as the exact
        // value does. Ties, negatives (-0.000) and large values take the
        // standard path.
        if let Some(&pow) = POW10.get(decimals).filter(|_| v.is_sign_positive()) {
            let scaled = v * pow as f64;
            if scaled < 1e12 && (scaled - scaled.floor() - 0.5).abs() > 1e-3 {
                let n = scaled.round() as u64;
                return match decimals {
                    0 => write!(f, "{n}"),
                    d => write!(f, "{}.{:0d$}", n / pow, n % pow),
                };
            }
        }
        write!(f, "{v:.decimals$}")
    }
}

/// An aligned text table: the first column left-aligned, the others right.
pub fn text(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<w$}");
            } else {
                let _ = write!(text, "  {cell:>w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The p-th percentile (0..=100) of `values`, interpolated linearly between
/// the closest ranks (numpy's and pandas' default, so the seed's users get
/// the numbers they would compute), `None` when empty. The one definition
/// of every table; `values` is reordered in place: two O(n) selections, no
/// sort.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    let last = values.len().checked_sub(1)?;
    let rank = p.clamp(0.0, 100.0) / 100.0 * last as f64;
    let lo = rank.floor() as usize;
    let (_, &mut low, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let fraction = rank - lo as f64;
    match above.iter().copied().min_by(f64::total_cmp) {
        Some(high) if fraction > 0.0 => Some(low + (high - low) * fraction),
        _ => Some(low),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_prints_what_the_standard_formatter_prints() {
        let mut values =
            vec![0.0, -0.0, 0.5, 1.5, 2.5, 0.0000005, 0.0000015, 1e-7, 0.1, 0.7, 123.456, 1e11, 1e13, -1.25];
        values.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE, 999_999.999_999_5]);
        // A spread of magnitudes and digits, ties among them.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 1_000_000_000_000) as f64;
            values.push(digits / 10f64.powi((x >> 40) as i32 % 13));
        }
        for v in values {
            for d in 0..=10 {
                assert_eq!(Fixed(v, d).to_string(), format!("{v:.d$}"), "{v:e} with {d} decimals");
            }
        }
    }

    #[test]
    fn quotes_fields_with_commas_and_quotes() {
        let mut csv = Csv::new(&["kernel", "n"]);
        csv.row(&["void f<128, float>(int)".into(), "3".into()]);
        csv.row(&["say \"hi\"".into(), "1".into()]);
        assert_eq!(csv.finish(), "kernel,n\n\"void f<128, float>(int)\",3\n\"say \"\"hi\"\"\",1\n");
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        // numpy.percentile(range(1, 101), [50, 95, 99, 100])
        assert!(close(percentile(&mut v, 50.0), 50.5));
        assert!(close(percentile(&mut v, 95.0), 95.05));
        assert!(close(percentile(&mut v, 99.0), 99.01));
        assert!(close(percentile(&mut v, 100.0), 100.0));
        assert!(close(percentile(&mut v, 0.0), 1.0));
        let mut four = [4.0, 1.0, 3.0, 2.0];
        assert!(close(percentile(&mut four, 50.0), 2.5));
        assert!(close(percentile(&mut four, 95.0), 3.85));
        assert_eq!(percentile(&mut [7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn text_tables_align() {
        let t = text(&["name", "n"], &[vec!["a".into(), "10".into()], vec!["long".into(), "2".into()]]);
        assert_eq!(t, "name   n\na     10\nlong   2\n");
    }
}
