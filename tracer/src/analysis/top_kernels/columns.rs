//! The tally from one Parquet trace file, reading only the columns it
//! needs: `role` (launches only), `kernel`, `dur_ns`, `time` when a time
//! range is asked, and `args` only for launches without a kernel name
//! (their handle names them, as in report). The file's footer and column
//! types are checked against the read caps first
//! ([`crate::format::parquet::ReadLimits`]).

use std::path::Path;

use arrow_array::{
    cast::AsArray,
    types::{Int32Type, Int64Type, TimestampNanosecondType},
    Array, RecordBatch,
};
use parquet::arrow::ProjectionMask;

use super::{Tallies, TopKernelsError};
use crate::{
    analysis::trace::filter::{unix_ns, TraceFilter},
    format::parquet::{
        limits::{within, BATCH_ROWS},
        read::{guarded, open_versioned, Strings},
        schema::col,
        ParquetReadError, ReadLimits,
    },
};

/// The role a launch has in the `role` column.
const LAUNCH_ROLE: &str = "launch";

/// Launches and call time (ns) per kernel name in the file at `path`.
/// `args` (a JSON string per row, the costliest column) is read in a
/// second pass, only when some launch has no kernel name.
pub(super) fn tally_file(path: &Path, filter: &TraceFilter) -> Result<Tallies, TopKernelsError> {
    let mut tallies = Tallies::new();
    let nameless = read_pass(path, filter, Pass::Named, &mut tallies)?;
    if nameless > 0 {
        read_pass(path, filter, Pass::Nameless, &mut tallies)?;
    }
    Ok(tallies)
}

/// One read of the file, a panic of the decoder counted as damage
/// ([`guarded`]).
fn read_pass(path: &Path, filter: &TraceFilter, pass: Pass, tallies: &mut Tallies) -> Result<u64, TopKernelsError> {
    let mut outcome = Ok(0);
    let decoded = guarded(|| {
        outcome = read_pass_unguarded(path, filter, pass, tallies);
        Ok(())
    });
    decoded.map_err(|source| TopKernelsError::Parquet { path: path.to_path_buf(), source })?;
    outcome
}

/// Which launches a pass counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Those with a kernel name (the others are only counted as nameless).
    Named,
    /// Those without, named by their handle in `args`.
    Nameless,
}

/// One read of the file; returns the launches without a kernel name.
fn read_pass_unguarded(
    path: &Path,
    filter: &TraceFilter,
    pass: Pass,
    tallies: &mut Tallies,
) -> Result<u64, TopKernelsError> {
    let limits = ReadLimits::default();
    let parquet = |source| TopKernelsError::Parquet { path: path.to_path_buf(), source };
    let file = crate::format::open::open_session_file(path)
        .map_err(|source| TopKernelsError::Io { path: path.to_path_buf(), source })?;
    let builder = open_versioned(file, &limits).map_err(parquet)?;
    let mut wanted = vec![col::ROLE, col::KERNEL, col::DUR_NS];
    if filter.has_time() {
        wanted.push(col::TIME);
    }
    if pass == Pass::Nameless {
        wanted.push(col::ARGS);
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted.iter().copied());
    let range = time_range(filter);
    let reader = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(damage).map_err(parquet)?;
    let mut nameless = 0;
    for batch in reader {
        let batch = batch.map_err(damage).map_err(parquet)?;
        within("decoded bytes of a batch", batch.get_array_memory_size() as u64, limits.batch_bytes)
            .map_err(parquet)?;
        nameless += tally_batch(&batch, range, pass, tallies);
    }
    Ok(nameless)
}

fn damage(e: impl std::fmt::Display) -> ParquetReadError {
    ParquetReadError::Unreadable(e.to_string())
}

/// `[since, until]` in Unix ns (the `time` column's unit).
fn time_range(filter: &TraceFilter) -> (i128, i128) {
    (filter.since.map_or(i128::MIN, unix_ns), filter.until.map_or(i128::MAX, unix_ns))
}

/// Adds the batch's launches of this pass; returns those without a name.
fn tally_batch(batch: &RecordBatch, (lo, hi): (i128, i128), pass: Pass, tallies: &mut Tallies) -> u64 {
    let role = Strings::of(batch, col::ROLE);
    let kernel = Strings::of(batch, col::KERNEL);
    let args = Strings::of(batch, col::ARGS);
    let dur = batch.column_by_name(col::DUR_NS).and_then(|a| a.as_primitive_opt::<Int64Type>());
    let time = batch.column_by_name(col::TIME).and_then(|a| a.as_primitive_opt::<TimestampNanosecondType>());
    if let (Strings::Dict(role), Strings::Dict(kernel), Pass::Named) = (&role, &kernel, pass) {
        return tally_by_key(role, kernel, dur, time, (lo, hi), tallies);
    }
    let mut nameless = 0;
    for i in 0..batch.num_rows() {
        if role.str(i) != Some(LAUNCH_ROLE) {
            continue;
        }
        if let Some(t) = time {
            let t = i128::from(t.value(i));
            if t < lo || t > hi {
                continue;
            }
        }
        let name = match (kernel.str(i), pass) {
            (Some(name), Pass::Named) => std::borrow::Cow::Borrowed(name),
            (None, Pass::Named) => {
                nameless += 1;
                continue;
            }
            (None, Pass::Nameless) => handle(args.str(i)).into(),
            (Some(_), Pass::Nameless) => continue,
        };
        let ns = dur.filter(|d| d.is_valid(i)).map_or(0, |d| d.value(i));
        if let Some(acc) = tallies.get_mut(name.as_ref()) {
            acc.0 += 1;
            acc.1 += ns as f64;
        } else {
            tallies.insert(name.into_owned(), (1, ns as f64));
        }
    }
    nameless
}

type Dict<'a> = arrow_array::TypedDictionaryArray<'a, Int32Type, arrow_array::StringArray>;

/// The named pass over dictionary-encoded `role` and `kernel` (what the
/// tracer writes): rows are counted per dictionary key and the keys named
/// once per batch, so no row's kernel name (often a long template) is
/// hashed. Returns the launches without a name.
fn tally_by_key(
    role: &Dict<'_>,
    kernel: &Dict<'_>,
    dur: Option<&arrow_array::Int64Array>,
    time: Option<&arrow_array::TimestampNanosecondArray>,
    (lo, hi): (i128, i128),
    tallies: &mut Tallies,
) -> u64 {
    let launch: Vec<bool> =
        (0..role.values().len()).map(|k| role.values().is_valid(k) && role.values().value(k) == LAUNCH_ROLE).collect();
    let (role_keys, kernel_keys) = (role.keys(), kernel.keys());
    let mut per_key = vec![(0u64, 0f64); kernel.values().len()];
    let mut nameless = 0;
    for i in 0..role_keys.len() {
        let is_launch = role_keys.is_valid(i) && launch.get(role_keys.value(i) as usize).copied().unwrap_or(false);
        if !is_launch || time.is_some_and(|t| !(lo..=hi).contains(&i128::from(t.value(i)))) {
            continue;
        }
        let slot = kernel_keys.is_valid(i).then(|| per_key.get_mut(kernel_keys.value(i) as usize)).flatten();
        let Some(acc) = slot else {
            nameless += 1;
            continue;
        };
        acc.0 += 1;
        acc.1 += dur.filter(|d| d.is_valid(i)).map_or(0, |d| d.value(i)) as f64;
    }
    for (k, (launches, ns)) in per_key.into_iter().enumerate().filter(|(_, (n, _))| *n > 0) {
        let name = kernel.values().value(k);
        let acc = match tallies.get_mut(name) {
            Some(acc) => acc,
            None => tallies.entry(name.to_string()).or_default(),
        };
        acc.0 += launches;
        acc.1 += ns;
    }
    nameless
}

/// A launch without a kernel name is named by its handle: `f` on the
/// driver, `func` on the runtime, else "?" (report's `kernel_name`).
fn handle(args: Option<&str>) -> String {
    let value: Option<serde_json::Value> = args.and_then(|a| serde_json::from_str(a).ok());
    let field = |key: &str| match value.as_ref()?.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    field("f").or_else(|| field("func")).unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameless_launch_is_named_by_its_handle() {
        assert_eq!(handle(Some(r#"{"f":"0x50","stream":"0x0"}"#)), "0x50");
        assert_eq!(handle(Some(r#"{"func":"0x55d1"}"#)), "0x55d1");
        assert_eq!(handle(Some("{}")), "?");
        assert_eq!(handle(None), "?");
    }
}
