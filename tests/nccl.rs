//! NCCL: the fixture libnccl.so.2 driven by `nccl-workload` is traced call
//! for call against its ground truth, and `report`'s collectives table adds
//! up to it; NVIDIA's real libnccl.so.2 from PyPI, `dlopen`ed by absolute
//! path through ctypes after the tracer started (so held at the open until
//! attached), shows each call with its arguments and the error it returned.

use std::{collections::BTreeMap, path::Path};

use cuda_tracer_tests::*;
use serde_json::Value;

/// (pid, comm, op) -> (calls, errors, bytes of the successful calls)
type Table = BTreeMap<(u64, String, String), (u64, u64, u64)>;

/// What the collectives table must say, worked out from the ground truth.
fn expected_table(truth: &[Value]) -> Table {
    let transfers = ["AllReduce", "AllGather", "ReduceScatter", "Broadcast", "Reduce", "Send", "Recv"];
    let mut table = Table::new();
    for l in truth {
        let op = l["func"].as_str().unwrap().trim_start_matches("nccl");
        if !transfers.contains(&op) {
            continue;
        }
        let key = (l["pid"].as_u64().unwrap(), l["args"]["comm"].as_str().unwrap().to_string(), op.to_string());
        let row = table.entry(key).or_default();
        row.0 += 1;
        if l["ret"] == 0 {
            row.2 += l["args"]["bytes"].as_u64().unwrap();
        } else {
            row.1 += 1;
        }
    }
    table
}

fn collectives_csv(path: &Path) -> Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("pid,comm,op,calls,errors,bytes,total_call_ms,mean_call_us"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|e| panic!("{l}: {e}"));
            ((n(0), f[1].to_string(), f[2].to_string()), (n(3), n(4), n(5)))
        })
        .collect()
}

#[test]
fn the_fixture_library_is_traced_call_for_call_and_the_collectives_table_adds_up() {
    let (tmp, out, truth_dir) = scratch();
    let workload = fixtures().join("nccl-workload").display().to_string();
    // `--functions nccl`: the fixture CUDA libraries on the loader path are
    // left alone (they select nothing), the NCCL library is attached from
    // the workload's run path before it starts.
    record(&out, &truth_dir, &["--functions", "nccl"], &[&workload, "3"]);

    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    // Version, 4 inits, 3 iterations of 2 steps of 9 calls, 4 refused, 5 ends.
    assert_eq!(truth.len(), 1 + 4 + 3 * 2 * 9 + 4 + 5, "{truth:?}");
    assert_eq!(trace.lines.len(), truth.len(), "every call is traced once");
    assert_matches_truth(&trace.lines, &truth, false);
    for l in &trace.lines {
        assert_line_schema(l);
        assert_eq!(l["type"], "nccl", "{l}");
        if l["ret"] != 0 {
            assert!(matches!(l["error"].as_str(), Some("ncclInvalidArgument" | "ncclInvalidUsage")), "{l}");
        }
    }
    let libs = trace.metadata["libraries"].as_array().expect("libraries");
    assert_eq!(libs.len(), 1, "only NCCL is selected: {libs:?}");
    let nccl = &libs[0];
    assert!(nccl["path"].as_str().is_some_and(|p| p.ends_with("nccl/libnccl.so.2")), "{nccl}");
    assert_eq!(nccl["functions"].as_array().map(Vec::len), Some(15), "{nccl}");
    assert_eq!((nccl["type"].as_str(), nccl["missing"].as_array().map(Vec::len)), (Some("nccl"), Some(0)), "{nccl}");

    let report = tmp.path().join("report");
    let status = tracer_cmd().arg("report").arg(&out).arg("--out").arg(&report).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let table = collectives_csv(&report.join("collectives.csv"));
    assert_eq!(table, expected_table(&truth));
    // Two communicators each carry every op; the refused calls are rows of their own.
    assert_eq!(table.values().map(|r| r.0).sum::<u64>(), 3 * 2 * 7 + 3);
    let json: Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let bytes: u64 = expected_table(&truth).values().map(|r| r.2).sum();
    assert_eq!(json["collectives"]["bytes"], bytes);
    let text = std::fs::read_to_string(report.join("report.txt")).unwrap();
    assert!(text.contains("== NCCL collectives: 45 calls"), "{text}");
}

/// `TRUTH LIB...`: one child process per library (each library is the
/// same soname, so each gets a process of its own), which calls NVIDIA's
/// libnccl.so.2 at LIB through ctypes (no GPU: communicators cannot be made,
/// and every transfer gets the NULL communicator) and writes each call, as
/// the tracer should write it, to TRUTH.<pid>.jsonl. `pncclAllReduce` is
/// NCCL's profiling alias of `ncclAllReduce`, the same code: it is traced
/// under the `nccl` name.
const PY_REAL_NCCL: &str = r#"
import ctypes, json, os, subprocess, sys, threading
if len(sys.argv) > 3:
    for lib in sys.argv[2:]:
        subprocess.run([sys.executable, sys.argv[0], sys.argv[1], lib], check=True)
    sys.exit(0)
nccl = ctypes.CDLL(sys.argv[2])
S, I, P = ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p
tid, lines = threading.get_native_id(), []
def line(func, ret, **args):
    lines.append({"pid": os.getpid(), "tid": tid, "type": "nccl", "func": func, "ret": ret, "args": args})
class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * 128)]
uid, comm, version = UniqueId(), P(0), I(0)
r = nccl.ncclGetVersion(ctypes.byref(version))
line("ncclGetVersion", r, version=version.value)
r = nccl.ncclCommInitRank(ctypes.byref(comm), 2, uid, 5)
line("ncclCommInitRank", r, nranks=2, rank=5)
r = nccl.ncclCommInitRankConfig(ctypes.byref(comm), 2, uid, 1, None)
line("ncclCommInitRankConfig", r, nranks=2, rank=1, config="0x0")
r = nccl.ncclCommInitAll(ctypes.byref(comm), 1, None)
line("ncclCommInitAll", r, ndev=1, devlist="0x0")
buf = dict(sendbuff="0x1000", recvbuff="0x2000")
for name in ["ncclAllReduce", "pncclAllReduce"]:
    r = getattr(nccl, name)(P(0x1000), P(0x2000), S(1024), I(7), I(0), P(0), P(0x5))
    line("ncclAllReduce", r, **buf, count=1024, datatype="float32", bytes=4096, op="sum", comm="0x0", stream="0x5")
r = nccl.ncclAllGather(P(0x1000), P(0x2000), S(16), I(9), P(0), P(0x5))
line("ncclAllGather", r, **buf, count=16, datatype="bfloat16", bytes=32, comm="0x0", stream="0x5")
r = nccl.ncclReduceScatter(P(0x1000), P(0x2000), S(16), I(2), I(2), P(0), P(0x5))
line("ncclReduceScatter", r, **buf, count=16, datatype="int32", bytes=64, op="max", comm="0x0", stream="0x5")
r = nccl.ncclBroadcast(P(0x1000), P(0x2000), S(16), I(8), I(3), P(0), P(0x5))
line("ncclBroadcast", r, **buf, count=16, datatype="float64", bytes=128, root=3, comm="0x0", stream="0x5")
r = nccl.ncclReduce(P(0x1000), P(0x2000), S(16), I(6), I(4), I(1), P(0), P(0x5))
line("ncclReduce", r, **buf, count=16, datatype="float16", bytes=32, op="avg", root=1, comm="0x0", stream="0x5")
r = nccl.ncclSend(P(0x1000), S(8), I(4), I(1), P(0), P(0x5))
line("ncclSend", r, sendbuff="0x1000", count=8, datatype="int64", bytes=64, peer=1, comm="0x0", stream="0x5")
r = nccl.ncclRecv(P(0x2000), S(8), I(4), I(1), P(0), P(0x5))
line("ncclRecv", r, recvbuff="0x2000", count=8, datatype="int64", bytes=64, peer=1, comm="0x0", stream="0x5")
line("ncclGroupStart", nccl.ncclGroupStart())
line("ncclGroupEnd", nccl.ncclGroupEnd())
line("ncclCommDestroy", nccl.ncclCommDestroy(P(0)), comm="0x0")
line("ncclCommAbort", nccl.ncclCommAbort(P(0)), comm="0x0")
with open(sys.argv[1] + "." + str(os.getpid()) + ".jsonl", "w") as f:
    f.write("".join(json.dumps(l) + "\n" for l in lines))
"#;

/// `lib` at a path no search path names: a hard link (the wheels are
/// hundreds of MB), or a copy across file systems.
fn private_nccl(dir: &Path, lib: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let dest = dir.join("libnccl.so.2");
    if std::fs::hard_link(lib, &dest).is_err() {
        std::fs::copy(lib, &dest).unwrap();
    }
    dest.display().to_string()
}

#[test]
fn the_real_library_dlopened_by_path_after_the_tracer_started_is_traced_from_its_first_call() {
    let (tmp, out, truth_dir) = scratch();
    std::fs::create_dir_all(&truth_dir).unwrap();
    // NCCL for CUDA 12 (its own wheel) and for CUDA 13 (PyTorch's).
    let libs = [
        private_nccl(&tmp.path().join("cu12/nvidia/nccl/lib"), &nvidia_nccl()),
        private_nccl(&tmp.path().join("cu13/nvidia/nccl/lib"), &torch_site().join("nvidia/nccl/lib/libnccl.so.2")),
    ];
    let script = tmp.path().join("nccl_calls.py");
    std::fs::write(&script, PY_REAL_NCCL).unwrap();
    let truth_prefix = truth_dir.join("truth").display().to_string();
    // No scan for a minute: only the load watch can find the library.
    let mut argv = vec![script.display().to_string(), truth_prefix];
    argv.extend(libs.iter().cloned());
    let mut cmd = tracer_cmd();
    cmd.args(["record", "--scan-interval-ms", "60000", "-o"]).arg(&out).args(["--", "python3"]).args(&argv);
    let output = cmd.env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let trace = load_trace(&out);
    let truth = load_truth(&truth_dir);
    assert_eq!(truth.len(), 2 * 16, "{truth:?}");
    for calls in truth.chunks(16) {
        assert_eq!(calls[0]["ret"], 0, "ncclGetVersion works without a GPU");
        assert!(calls[0]["args"]["version"].as_i64().unwrap() >= 21800, "{}", calls[0]);
        assert!(calls[4..12].iter().all(|l| l["ret"] == 4), "a NULL communicator is ncclInvalidArgument: {calls:?}");
    }
    // Where a driver is installed NCCL may call it too: those lines are the driver's.
    let nccl: Vec<Value> = trace.lines.iter().filter(|l| l["type"] == "nccl").cloned().collect();
    assert_matches_truth(&nccl, &truth, false);
    for (got, want) in nccl.iter().zip(&truth) {
        if want["ret"] == 4 {
            assert_eq!(got["error"], "ncclInvalidArgument", "{got}");
        }
    }
    let init = nccl.iter().find(|l| l["func"] == "ncclCommInitRank").unwrap();
    assert!(init["ret"] != 0 && init["error"].as_str().is_some_and(|e| e.starts_with("nccl")), "{init}");
    let holds = trace.metadata["library_holds"].as_array().unwrap();
    for lib in &libs {
        let hold = holds.iter().find(|h| h["path"] == lib.as_str()).unwrap_or_else(|| panic!("{lib}: {holds:?}"));
        assert_eq!(hold["outcome"], "attached", "{hold}");
    }
    assert_eq!(trace.metadata["missed_libraries"], serde_json::json!([]));
    assert_eq!(trace.metadata["late_libraries"], serde_json::json!([]));
}
