//! Reading trace files back: finds the files of the inputs, parses them in
//! parallel into typed [`Call`]s (the line's readers live with its writer in
//! [`crate::format::line`]) and sorts them by time; the analyses (`report`,
//! `export`) work on these, never on raw JSON.

pub mod read;
mod sort;

pub use crate::format::line::{
    intern, parse_line, Args, Call, CopyKind, ErrorName, FastMap, Hex, Launch, LineError, SlotTaken,
};
pub use read::{discover, read, read_with_progress, Loaded, ReadError, Skipped};
