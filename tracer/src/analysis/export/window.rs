//! The `--steps A..B` / `--time A..B` window: parsing the range strings and
//! turning them into the span of session time whose calls are exported.

use super::steps::Step;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WindowError {
    #[error(
        "{option} {value:?}: {problem}; write START..END such as {example} (END excluded; START..=END includes it; \
         either end may be left out)"
    )]
    Syntax { option: &'static str, value: String, problem: String, example: &'static str },
    #[error("{option} {value:?}: the range is empty (START must be below END)")]
    Empty { option: &'static str, value: String },
    #[error("--steps {value:?}: no step of the trace is in this range; it has {count} steps (indices {first}..={last}); pick a range inside, or use --time")]
    NoSteps { value: String, count: usize, first: u64, last: u64 },
    #[error("--steps {0:?}: no steps found in the trace (no event synchronize ends a step); use --time START..END in ms instead")]
    TraceHasNoSteps(String),
}

/// A parsed `START..END`: `None` is an open end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub end_included: bool,
}

impl Range {
    pub fn contains(&self, x: f64) -> bool {
        self.start.is_none_or(|s| x >= s) && self.end.is_none_or(|e| if self.end_included { x <= e } else { x < e })
    }
}

/// Parses `START..END`, `START..=END`, `START..` or `..END`; `integers` for
/// step indices.
pub fn parse_range(option: &'static str, value: &str, integers: bool) -> Result<Range, WindowError> {
    let example = if integers { "100..150" } else { "2000..4500" };
    let syntax = |problem: String| WindowError::Syntax { option, value: value.to_string(), problem, example };
    let text = value.trim();
    let Some((start, rest)) = text.split_once("..") else {
        let problem = if text.contains('-') || text.contains(':') {
            "ranges use `..`, not `-` or `:`".to_string()
        } else {
            "no `..` between START and END".to_string()
        };
        return Err(syntax(problem));
    };
    let (end, end_included) = match rest.strip_prefix('=') {
        Some(end) => (end, true),
        None => (rest, false),
    };
    let number = |s: &str, which: &str| -> Result<Option<f64>, WindowError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let parsed = if integers { s.parse::<u64>().map(|v| v as f64).ok() } else { s.parse::<f64>().ok() };
        match parsed {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
            _ if integers => Err(syntax(format!("{which} {s:?} is not a step index (a whole number >= 0)"))),
            _ => Err(syntax(format!("{which} {s:?} is not a time in milliseconds (a number >= 0)"))),
        }
    };
    let range = Range { start: number(start, "START")?, end: number(end, "END")?, end_included };
    if end_included && range.end.is_none() {
        return Err(syntax("`..=` needs an END".to_string()));
    }
    if let (Some(s), Some(e)) = (range.start, range.end) {
        if s > e || (s == e && !end_included) {
            return Err(WindowError::Empty { option, value: value.to_string() });
        }
    }
    Ok(range)
}

/// What is exported: calls that start in `start_ms..=end_ms`, and the steps
/// listed (all steps overlapping the span when the window is by time).
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub start_ms: f64,
    pub end_ms: f64,
    pub end_included: bool,
    pub steps: Vec<Step>,
}

impl Window {
    pub fn contains(&self, ts_ms: f64) -> bool {
        ts_ms >= self.start_ms && if self.end_included { ts_ms <= self.end_ms } else { ts_ms < self.end_ms }
    }
}

/// The whole trace, or the window `--steps`/`--time` asks for. `span` is the
/// first call's start and the last call's end.
pub fn resolve(
    steps_arg: Option<&str>,
    time_arg: Option<&str>,
    steps: Vec<Step>,
    span: (f64, f64),
) -> Result<Window, WindowError> {
    if let Some(value) = steps_arg {
        let range = parse_range("--steps", value, true)?;
        if steps.is_empty() {
            return Err(WindowError::TraceHasNoSteps(value.to_string()));
        }
        let (first, last) = steps.iter().fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.index), hi.max(s.index)));
        let count = steps.len();
        let chosen: Vec<Step> = steps.into_iter().filter(|s| range.contains(s.index as f64)).collect();
        if chosen.is_empty() {
            return Err(WindowError::NoSteps { value: value.to_string(), count, first, last });
        }
        let start_ms = chosen.iter().map(|s| s.start_ms).fold(f64::INFINITY, f64::min);
        let end_ms = chosen.iter().map(|s| s.end_ms).fold(f64::NEG_INFINITY, f64::max);
        return Ok(Window { start_ms, end_ms, end_included: true, steps: chosen });
    }
    let (start_ms, end_ms, end_included) = match time_arg {
        Some(value) => {
            let r = parse_range("--time", value, false)?;
            (r.start.unwrap_or(span.0), r.end.unwrap_or(span.1), r.end_included || r.end.is_none())
        }
        None => (span.0, span.1, true),
    };
    let steps = steps.into_iter().filter(|s| s.end_ms >= start_ms && s.start_ms <= end_ms).collect();
    Ok(Window { start_ms, end_ms, end_included, steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::export::steps::Phase;

    fn step(index: u64, start_ms: f64) -> Step {
        Step {
            pid: 1,
            index,
            start_ms,
            end_ms: start_ms + 5.0,
            phase: Phase::Decode,
            num_launches: 3,
            graph_replays: 1,
            nccl: Default::default(),
        }
    }

    #[test]
    fn parses_the_range_forms() {
        let r = parse_range("--steps", "100..150", true).unwrap();
        assert_eq!(r, Range { start: Some(100.0), end: Some(150.0), end_included: false });
        assert!(r.contains(100.0) && r.contains(149.0) && !r.contains(150.0));
        assert!(parse_range("--steps", "100..=150", true).unwrap().contains(150.0));
        assert_eq!(parse_range("--time", "..2.5", false).unwrap().start, None);
        assert_eq!(parse_range("--time", " 1500.5.. ", false).unwrap().end, None);
    }

    #[test]
    fn bad_ranges_name_the_problem_and_the_fix() {
        let e = parse_range("--steps", "100-150", true).unwrap_err().to_string();
        assert!(e.contains("not `-`") && e.contains("100..150"), "{e}");
        let e = parse_range("--steps", "1.5..3", true).unwrap_err().to_string();
        assert!(e.contains("not a step index"), "{e}");
        let e = parse_range("--time", "abc..4", false).unwrap_err().to_string();
        assert!(e.contains("not a time in milliseconds") && e.contains("2000..4500"), "{e}");
        let e = parse_range("--time", "5..5", false).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        assert!(parse_range("--time", "5..=5", false).is_ok());
        assert!(parse_range("--time", "5..=", false).is_err());
    }

    #[test]
    fn steps_become_the_span_of_the_chosen_steps() {
        let steps = (0..10).map(|i| step(i, i as f64 * 10.0)).collect::<Vec<_>>();
        let w = resolve(Some("2..4"), None, steps.clone(), (0.0, 100.0)).unwrap();
        assert_eq!((w.start_ms, w.end_ms, w.steps.len()), (20.0, 35.0, 2));
        let e = resolve(Some("100..150"), None, steps.clone(), (0.0, 100.0)).unwrap_err().to_string();
        assert!(e.contains("10 steps") && e.contains("0..=9"), "{e}");
        let e = resolve(Some("1..2"), None, Vec::new(), (0.0, 1.0)).unwrap_err().to_string();
        assert!(e.contains("--time"), "{e}");
        let w = resolve(None, Some("12..31"), steps, (0.0, 100.0)).unwrap();
        assert_eq!(w.steps.iter().map(|s| s.index).collect::<Vec<_>>(), [1, 2, 3]);
    }
}
