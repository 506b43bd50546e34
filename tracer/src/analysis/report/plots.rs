//! The report's pictures as SVG (plotters, no font files: the SVG backend
//! writes `<text>` elements and the viewer's sans-serif font draws them):
//! device memory over time, step latency over time, kernel launch rate.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::decimate;

const SIZE: (u32, u32) = (960, 540);
const DECODE_COLOR: RGBColor = RGBColor(31, 119, 180);
const PREFILL_COLOR: RGBColor = RGBColor(255, 127, 14);

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: cannot draw the plot: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("{path}: nothing to plot ({what}); the plot is written only when the trace has {what}")]
    NoData { path: PathBuf, what: &'static str },
}

/// Device memory in use per process: one step line per pid.
pub fn memory_over_time(path: &Path, series: &[(u32, Vec<(f64, f64)>)]) -> Result<(), PlotError> {
    let max_bytes = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(0.0, f64::max);
    let (unit, scale) = byte_unit(max_bytes);
    // Memory changes at each call and stays until the next: draw steps.
    let stepped: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(pid, s)| {
            let mut pts = Vec::with_capacity(s.len() * 2);
            for (i, &(x, y)) in s.iter().enumerate() {
                if i > 0 {
                    pts.push((x, s[i - 1].1 / scale));
                }
                pts.push((x, y / scale));
            }
            (format!("pid {pid}"), pts)
        })
        .collect();
    lines(path, "Device memory in use", &format!("device memory in use ({unit})"), &stepped, "allocations or frees")
}

/// Kernel launches per second per process.
pub fn launch_rate(path: &Path, series: &[(u32, Vec<(f64, f64)>)]) -> Result<(), PlotError> {
    let named: Vec<(String, Vec<(f64, f64)>)> =
        series.iter().filter(|(_, s)| !s.is_empty()).map(|(pid, s)| (format!("pid {pid}"), s.clone())).collect();
    lines(path, "Kernel launch rate", "kernel launches per second", &named, "kernel launches")
}

/// Each step's duration at its start time; decode and prefill in two colors.
pub fn step_latency(path: &Path, points: &[(f64, f64, bool)]) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::NoData { path: path.to_path_buf(), what: "model steps" });
    }
    let err = draw_error(path);
    let (x, y) = bounds(points.iter().map(|p| (p.0, p.1)));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = chart(&root, "Step latency", x, y).map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("session time (s)")
        .y_desc("step duration (ms)")
        .y_label_formatter(&short)
        .draw()
        .map_err(err)?;
    for (decode, label, color) in [(false, "prefill", PREFILL_COLOR), (true, "decode", DECODE_COLOR)] {
        let phase: Vec<(f64, f64)> = points.iter().filter(|p| p.2 == decode).map(|p| (p.0, p.1)).collect();
        if phase.is_empty() {
            continue;
        }
        // Dots are 6 px wide: one per 2 px cell looks the same.
        let drawn = decimate::scatter(&phase, x, y, (SIZE.0 / 2, SIZE.1 / 2));
        chart
            .draw_series(drawn.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?
            .label(format!("{label} ({} steps)", phase.len()))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    legend(&mut chart).map_err(err)?;
    root.present().map_err(err)
}

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One line per named series, a legend, axis labels.
fn lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    what: &'static str,
) -> Result<(), PlotError> {
    if series.is_empty() {
        return Err(PlotError::NoData { path: path.to_path_buf(), what });
    }
    let err = draw_error(path);
    let (x, y) = bounds(series.iter().flat_map(|(_, s)| s.iter().copied()));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = chart(&root, title, x, y).map_err(err)?;
    chart.configure_mesh().x_desc("session time (s)").y_desc(y_desc).y_label_formatter(&short).draw().map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let drawn = decimate::m4(points, x, SIZE.0 as usize);
        chart
            .draw_series(LineSeries::new(drawn, color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart).map_err(err)?;
    root.present().map_err(err)
}

fn chart<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<Chart<'a>, DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
}

fn legend(chart: &mut Chart<'_>) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

fn draw_error<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + Copy + '_ {
    move |e| PlotError::Draw { path: path.to_path_buf(), message: e.to_string() }
}

/// An axis label without a trailing `.0`.
/// Tick labels: at most 6 significant digits, without float noise such as
/// `0.30000000000000004`.
fn short(v: &f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Axis ranges around the points, from 0 on the value axis, never empty.
fn bounds(points: impl Iterator<Item = (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64);
    for (x, y) in points.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        (x0, x1, y1) = (x0.min(x), x1.max(x), y1.max(y));
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    ((x0, x1), (0.0, y1))
}

/// The unit the largest value reads best in, and its size in bytes.
fn byte_unit(max_bytes: f64) -> (&'static str, f64) {
    const UNITS: [(&str, f64); 4] =
        [("GiB", 1024.0 * 1024.0 * 1024.0), ("MiB", 1024.0 * 1024.0), ("KiB", 1024.0), ("bytes", 1.0)];
    UNITS.into_iter().find(|&(_, size)| max_bytes >= size).unwrap_or(("bytes", 1.0))
}

#[cfg(test)]
mod tests {

    #[test]
    fn tick_labels_have_no_float_noise() {
        assert_eq!(short(&0.30000000000000004), "0.3");
        assert_eq!(short(&7000.0), "7000");
        assert_eq!(short(&0.0), "0");
    }

    use super::*;

    fn svg(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{text}");
        text
    }

    #[test]
    fn memory_plot_has_title_units_and_a_line_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.svg");
        let mib = 1024.0 * 1024.0;
        let series = vec![(11, vec![(0.0, 0.0), (1.0, 64.0 * mib), (2.0, 32.0 * mib)]), (12, vec![(0.5, 8.0 * mib)])];
        memory_over_time(&path, &series).unwrap();
        let text = svg(&path);
        for expected in ["Device memory in use", "device memory in use (MiB)", "session time (s)", "pid 11", "pid 12"] {
            assert!(text.contains(expected), "missing {expected:?}");
        }
        assert!(text.matches("<polyline").count() >= 2, "one line per process");
    }

    #[test]
    fn step_latency_plot_has_a_legend_per_phase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step_latency.svg");
        let points = [(0.1, 30.0, false), (0.2, 8.0, true), (0.3, 7.5, true)];
        step_latency(&path, &points).unwrap();
        let text = svg(&path);
        for expected in ["Step latency", "step duration (ms)", "prefill (1 steps)", "decode (2 steps)"] {
            assert!(text.contains(expected), "missing {expected:?}");
        }
        assert!(text.matches("<circle").count() >= 3);
    }

    #[test]
    fn launch_rate_plot_and_empty_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch_rate.svg");
        launch_rate(&path, &[(7, vec![(0.0, 100.0), (1.0, 2500.0)])]).unwrap();
        let text = svg(&path);
        assert!(text.contains("Kernel launch rate") && text.contains("kernel launches per second"));
        let e = launch_rate(&path, &[]).unwrap_err().to_string();
        assert!(e.contains("nothing to plot"), "{e}");
        assert!(step_latency(&path, &[]).is_err());
    }

    #[test]
    fn a_long_series_is_drawn_thinned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.svg");
        let series = vec![(1, (0..200_000).map(|i| (f64::from(i) / 1000.0, f64::from(i % 97) * 1e6)).collect())];
        memory_over_time(&path, &series).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes < 200_000, "{bytes} bytes for 400000 drawn points");
        let points: Vec<(f64, f64, bool)> =
            (0..100_000).map(|i| (f64::from(i), f64::from(i % 50), i % 2 == 0)).collect();
        step_latency(&path, &points).unwrap();
        let text = svg(&path);
        assert!(text.contains("decode (50000 steps)"), "the legend counts every step");
        // 50 distinct durations × 480 columns of 2 px, plus the legend.
        assert!(text.matches("<circle").count() <= 480 * 50 + 2, "{}", text.matches("<circle").count());
    }

    #[test]
    fn byte_units_follow_the_largest_value() {
        assert_eq!(byte_unit(3.0 * 1024.0 * 1024.0 * 1024.0).0, "GiB");
        assert_eq!(byte_unit(500.0).0, "bytes");
    }
}
