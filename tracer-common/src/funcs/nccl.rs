//! Rows for NCCL (`libnccl.so.2`): collectives, point-to-point, groups and
//! communicators.

use super::FuncSpec;

pub(super) const ROWS: &[FuncSpec] = &[];
