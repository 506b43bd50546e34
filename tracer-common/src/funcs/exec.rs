//! Rows for streams and events, cooperative and host-function launches,
//! graph maintenance, module loading and device/context calls.

use super::FuncSpec;

pub(super) const ROWS: &[FuncSpec] = &[];
