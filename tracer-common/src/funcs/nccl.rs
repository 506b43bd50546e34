//! Rows for NCCL (`libnccl.so.2`): collectives, point-to-point, groups and
//! communicators, and the names of NCCL's datatypes and reduction ops.
//!
//! Signatures are nccl.h's (2.18 to 2.30 agree). NCCL exports each function
//! twice, `ncclX` (weak) and the profiling alias `pncclX`, at one address:
//! attaching to the `ncclX` offset sees calls through either name, so only
//! the `nccl*` names are rows. `ncclCommInitRank*` take the 128-byte
//! `ncclUniqueId` by value: it goes on the stack and takes no register, so
//! `rank` is the third register word.

use super::Fmt::*;
use super::Layer::Nccl;
use super::Role::*;
use super::{a, f, stack, ArgSpec, FuncSpec};

const NONE: &[ArgSpec] = &[];
const VERSION: &[ArgSpec] = &[a("version", OutI32, 0)];
const COMM: &[ArgSpec] = &[a("comm", Hex, 0)];
const INIT_RANK: &[ArgSpec] = &[a("comm", Out, 0), a("nranks", U32, 1), a("rank", U32, 2)];
const INIT_RANK_CONFIG: &[ArgSpec] = &[a("comm", Out, 0), a("nranks", U32, 1), a("rank", U32, 2), a("config", Hex, 3)];
const INIT_ALL: &[ArgSpec] = &[a("comm", Out, 0), a("ndev", U32, 1), a("devlist", Hex, 2)];
/// The arguments of a collective: the two buffers, the count, the
/// datatype and the bytes they make, then `rest` (op, root, comm, stream).
macro_rules! collective {
    ($($rest:expr),*) => {
        &[
            a("sendbuff", Hex, 0),
            a("recvbuff", Hex, 1),
            a("count", U64, 2),
            a("datatype", NcclType, 3),
            a("bytes", NcclBytes(3), 2),
            $($rest),*
        ]
    };
}

/// The arguments of `ncclSend`/`ncclRecv`, whose one buffer is `buffer`.
macro_rules! p2p {
    ($buffer:expr) => {
        &[
            a($buffer, Hex, 0),
            a("count", U64, 1),
            a("datatype", NcclType, 2),
            a("bytes", NcclBytes(2), 1),
            a("peer", U32, 3),
            a("comm", Hex, 4),
            a("stream", Hex, 5),
        ]
    };
}

const ALL_REDUCE: &[ArgSpec] = collective![a("op", NcclOp, 4), a("comm", Hex, 5), a("stream", Hex, 6)];
const ALL_GATHER: &[ArgSpec] = collective![a("comm", Hex, 4), a("stream", Hex, 5)];
const BROADCAST: &[ArgSpec] = collective![a("root", U32, 4), a("comm", Hex, 5), a("stream", Hex, 6)];
const REDUCE: &[ArgSpec] = collective![a("op", NcclOp, 4), a("root", U32, 5), a("comm", Hex, 6), a("stream", Hex, 7)];
const SEND: &[ArgSpec] = p2p!("sendbuff");
const RECV: &[ArgSpec] = p2p!("recvbuff");

/// A row of the NCCL layer.
const fn n(name: &'static str, role: super::Role, out_arg: u8, args: &'static [ArgSpec]) -> FuncSpec {
    f(name, Nccl, role, out_arg, args)
}

pub(super) const ROWS: &[FuncSpec] = &[
    n("ncclGetVersion", CommInit, 1, VERSION),
    n("ncclCommInitRank", CommInit, 1, INIT_RANK),
    n("ncclCommInitRankConfig", CommInit, 1, INIT_RANK_CONFIG),
    n("ncclCommInitAll", CommInit, 1, INIT_ALL),
    n("ncclCommDestroy", CommEnd, 0, COMM),
    n("ncclCommAbort", CommEnd, 0, COMM),
    // Seven and eight arguments: the stream (and comm) are on the stack.
    stack(n("ncclAllReduce", Collective, 0, ALL_REDUCE)),
    n("ncclAllGather", Collective, 0, ALL_GATHER),
    stack(n("ncclReduceScatter", Collective, 0, ALL_REDUCE)),
    stack(n("ncclBroadcast", Collective, 0, BROADCAST)),
    stack(n("ncclReduce", Collective, 0, REDUCE)),
    n("ncclSend", P2p, 0, SEND),
    n("ncclRecv", P2p, 0, RECV),
    n("ncclGroupStart", NcclGroup, 0, NONE),
    n("ncclGroupEnd", NcclGroup, 0, NONE),
];

/// `ncclDataType_t` values in order: name and size in bytes.
const DATATYPES: [(&str, u64); 12] = [
    ("int8", 1),
    ("uint8", 1),
    ("int32", 4),
    ("uint32", 4),
    ("int64", 8),
    ("uint64", 8),
    ("float16", 2),
    ("float32", 4),
    ("float64", 8),
    ("bfloat16", 2),
    ("float8e4m3", 1),
    ("float8e5m2", 1),
];

/// The name and size of an `ncclDataType_t`; `None` for a value nccl.h does
/// not define (written as the number, with no `bytes`).
pub fn datatype(value: u32) -> Option<(&'static str, u64)> {
    DATATYPES.get(value as usize).copied()
}

/// The name of a built-in `ncclRedOp_t`; `None` for the ops
/// `ncclRedOpCreatePreMulSum` makes (written as the number).
pub fn redop(value: u32) -> Option<&'static str> {
    ["sum", "prod", "max", "min", "avg"].get(value as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatypes_and_ops_follow_nccl_h() {
        assert_eq!(datatype(7), Some(("float32", 4)), "ncclFloat32 = 7");
        assert_eq!(datatype(9), Some(("bfloat16", 2)), "ncclBfloat16 = 9");
        assert_eq!(datatype(12), None, "ncclNumTypes");
        assert_eq!((redop(0), redop(4), redop(5)), (Some("sum"), Some("avg"), None));
    }

    #[test]
    fn seven_and_eight_argument_calls_read_the_stack() {
        for row in ROWS {
            let words = row.args.iter().map(|a| a.word).max().unwrap_or(0);
            assert_eq!(row.stack, words >= 6, "{}", row.name);
        }
    }
}
