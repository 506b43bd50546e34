//! The keys of a trace line and the fixed text between its values, in the
//! order the writer puts them: the writer writes these bytes and the fast
//! reader matches them as literals, so the two cannot drift apart (a test
//! checks each separator against its key, and the round trip in
//! `line::tests` covers every function).
//!
//! A line: `{"ts":…,"pid":…,"tid":…,"type":"…","func":"…","phase":"entry",
//! "dur_us":…,"ret":…[,"error":"…"][,"caller":"…"],"args":{…}}`.

/// Top-level keys, for readers that take any order.
pub mod key {
    pub const TS: &[u8] = b"ts";
    pub const PID: &[u8] = b"pid";
    pub const TID: &[u8] = b"tid";
    pub const TYPE: &[u8] = b"type";
    pub const FUNC: &[u8] = b"func";
    pub const DUR_US: &[u8] = b"dur_us";
    pub const RET: &[u8] = b"ret";
    pub const ERROR: &[u8] = b"error";
    /// The file whose code made the call (`libcublasLt.so.12`); absent when unknown.
    pub const CALLER: &[u8] = b"caller";
    pub const ARGS: &[u8] = b"args";
}

/// Keys of `args` the readers keep: the writer takes argument names from
/// `tracer_common::funcs::FUNCS` and adds [`arg::BYTES`] (a free's size) and
/// [`arg::KERNEL`] (a launch's kernel name) from the annotator.
pub mod arg {
    /// A size: allocated, copied or (from the annotator) freed.
    pub const BYTES: &[u8] = b"bytes";
    /// `cudaMemcpyKind` by name (`HtoD`, …).
    pub const KIND: &[u8] = b"kind";
    /// Pointers and handles, written as `"0x…"`.
    pub const DPTR: &[u8] = b"dptr";
    /// A pinned host pointer.
    pub const PTR: &[u8] = b"ptr";
    pub const STREAM: &[u8] = b"stream";
    pub const EVENT: &[u8] = b"event";
    pub const GRAPH: &[u8] = b"graph";
    pub const EXEC: &[u8] = b"exec";
    /// A launch's kernel name (from the annotator), grid, block and dynamic
    /// shared memory.
    pub const KERNEL: &[u8] = b"kernel";
    pub const GRID: &[u8] = b"grid";
    pub const BLOCK: &[u8] = b"block";
    pub const SHARED_MEM: &[u8] = b"shared_mem";
    /// The launch handle: `f` on the driver, `func` on the runtime.
    pub const F: &[u8] = b"f";
    pub const FUNC: &[u8] = b"func";
    /// An NCCL communicator.
    pub const COMM: &[u8] = b"comm";
    /// The module a launch's kernel came from (from the annotator).
    pub const MODULE: &[u8] = b"module";
}

/// Opens a line, before `ts`.
pub const BEFORE_TS: &[u8] = b"{\"ts\":";
pub const BEFORE_PID: &[u8] = b",\"pid\":";
pub const BEFORE_TID: &[u8] = b",\"tid\":";
/// Before the layer's quoted `type` name (`Layer::type_name`).
pub const BEFORE_TYPE: &[u8] = b",\"type\":";
/// Before the quoted function name.
pub const BEFORE_FUNC: &[u8] = b",\"func\":";
/// The `phase`, always `entry` (the seed's field: one line per completed
/// call, stamped at entry), then the key of `dur_us`.
pub const PHASE_THEN_DUR_US: &[u8] = b",\"phase\":\"entry\",\"dur_us\":";
pub const BEFORE_RET: &[u8] = b",\"ret\":";
/// Before the quoted error name, present only when `ret` is not 0.
pub const BEFORE_ERROR: &[u8] = b",\"error\":";
/// Before the quoted name of the calling file, present when it is known.
pub const BEFORE_CALLER: &[u8] = b",\"caller\":";
/// Before the `args` object.
pub const BEFORE_ARGS: &[u8] = b",\"args\":";
/// Closes a line (the writer adds the newline).
pub const END: &[u8] = b"}";

#[cfg(test)]
mod tests {
    use super::*;

    fn before(key: &[u8]) -> Vec<u8> {
        [b",\"", key, b"\":"].concat()
    }

    #[test]
    fn every_separator_names_its_key() {
        assert_eq!(BEFORE_TS, [b"{", &before(key::TS)[1..]].concat());
        assert_eq!(BEFORE_PID, before(key::PID));
        assert_eq!(BEFORE_TID, before(key::TID));
        assert_eq!(BEFORE_TYPE, before(b"type"));
        assert_eq!(BEFORE_FUNC, before(key::FUNC));
        assert_eq!(PHASE_THEN_DUR_US, [&before(b"phase")[..], b"\"entry\"", &before(key::DUR_US)].concat());
        assert_eq!(BEFORE_RET, before(key::RET));
        assert_eq!(BEFORE_ERROR, before(key::ERROR));
        assert_eq!(BEFORE_CALLER, before(key::CALLER));
        assert_eq!(BEFORE_ARGS, before(key::ARGS));
    }
}
