//! Rows for the memory families: memset, 2D/3D/peer/batch copies, virtual
//! memory (`cuMemCreate`/`cuMemMap`/...) and pinned host memory.

use super::FuncSpec;

pub(super) const ROWS: &[FuncSpec] = &[];
