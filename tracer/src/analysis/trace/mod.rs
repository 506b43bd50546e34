//! Reading trace files back: finds the files of the inputs (in any tree the
//! tracer or an `aws s3 sync` leaves, [`discover`]), parses them in
//! parallel into typed [`Call`]s (the line's readers live with its writer in
//! [`crate::format::line`]) and sorts them by time; the analyses (`report`,
//! `export`) work on these, never on raw JSON.

pub mod discover;
pub mod filter;
pub mod identity;
pub mod read;
mod sort;
pub mod tally;

pub use crate::format::line::{
    intern, parse_line, Args, Call, CopyKind, ErrorName, FastMap, Hex, Launch, LineError, SlotTaken,
};
pub use read::{read, read_filtered, read_with_progress, Loaded, ReadError, Skipped};

/// The trace files of the inputs ([`discover::discover`]).
pub fn discover(inputs: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, ReadError> {
    Ok(discover::discover(inputs)?)
}
