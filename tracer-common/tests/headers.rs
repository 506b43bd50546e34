//! Checks every driver and runtime row of the function table against
//! NVIDIA's real 12.9 and 13.x headers: each decoded argument word is one
//! the exported function takes, out/string/struct arguments point at
//! pointer parameters, and stack words are read only by stack rows, so a
//! wrong register can never be decoded silently.
//!
//! The headers come with the runtime wheels `cargo xtask setup` installs;
//! `CUDA_TRACER_CUDA_INCLUDE12` and `CUDA_TRACER_CUDA_INCLUDE13` name their
//! `include/` directories (`cargo xtask test` sets both).

mod header_parse;

use header_parse::{parse, Prototype, Prototypes};
use tracer_common::funcs::{Fmt, FuncSpec, Layer, FUNCS};

/// The declarations of one CUDA release.
struct Release {
    major: u8,
    driver: Prototypes,
    runtime: Prototypes,
}

fn release(var: &str, major: u8) -> Option<Release> {
    let Some(dir) = std::env::var_os(var) else {
        eprintln!("\n\n*** SKIPPED: {var} is not set: run `cargo xtask setup` and `cargo xtask test` ***\n\n");
        return None;
    };
    let dir = std::path::PathBuf::from(dir);
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} ({var})", path.display()))
    };
    let cuda_h = read("cuda.h");
    let version = cuda_h.lines().find_map(|l| l.strip_prefix("#define CUDA_VERSION")?.trim().parse::<u32>().ok());
    assert_eq!(version.map(|v| v / 1000), Some(u32::from(major)), "{var} names CUDA {version:?}, not {major}.x");
    let driver = parse(&cuda_h, "CUDAAPI");
    let runtime = parse(&read("cuda_runtime_api.h"), "CUDARTAPI");
    // A parser that found nothing would pass every row it cannot see.
    assert!(driver.len() > 400 && runtime.len() > 300, "{var}: {} + {} prototypes", driver.len(), runtime.len());
    Some(Release { major, driver, runtime })
}

/// The declaration behind an exported name: its own, or for a per-thread
/// variant (`_ptsz`, `_ptds`) its base name's.
fn declared<'a>(protos: &'a Prototypes, name: &str) -> Option<&'a Result<Prototype, String>> {
    protos.get(name).or_else(|| {
        let base = name.strip_suffix("_ptsz").or_else(|| name.strip_suffix("_ptds"))?;
        protos.get(base)
    })
}

/// The argument words (indexes into the raw words) an argument reads.
fn words_read(spec: &FuncSpec, fmt: Fmt, word: usize) -> Vec<usize> {
    let words = match fmt {
        Fmt::U64 | Fmt::U32 | Fmt::I32 | Fmt::Hex | Fmt::MemcpyKind | Fmt::NcclType | Fmt::NcclOp => vec![word],
        // The image's header words, copied at entry like a struct.
        Fmt::ImageBytes => vec![word],
        Fmt::NcclBytes(datatype) => vec![word, usize::from(datatype)],
        Fmt::Dim3Regs => vec![word, word + 1],
        Fmt::Dim3Words => vec![word, word + 1, word + 2],
        Fmt::Dim3U32 => vec![word / 2, (word + 2) / 2],
        Fmt::U32At => vec![word / 2],
        Fmt::Product(n) => (word..word + usize::from(n)).collect(),
        // Read through the cookie's out/str arguments, checked on their own.
        Fmt::Out | Fmt::OutI32 | Fmt::OutU64 | Fmt::OutF32 | Fmt::Out2U64 | Fmt::Str | Fmt::Const(_) => vec![],
    };
    // A row that copies a struct at entry reads its fields from the
    // stack-word slots: those are the struct's, not arguments.
    let deref = spec.deref_arg != 0;
    words.into_iter().filter(|&w| !(deref && w >= 6)).collect()
}

/// What is wrong with `spec` against prototype `proto` of release `rel`.
fn check(spec: &FuncSpec, proto: &Prototype, rel: u8, problems: &mut Vec<String>) {
    let at = |what: String| format!("{} (CUDA {rel}): {what}", spec.name);
    for arg in spec.args {
        for w in words_read(spec, arg.fmt, usize::from(arg.word)) {
            match proto.param_at(w) {
                None => problems.push(at(format!(
                    "`{}` reads word {w}, but the function takes {} argument words ({:?})",
                    arg.name,
                    proto.words.len(),
                    proto.params.iter().map(|p| &p.text).collect::<Vec<_>>()
                ))),
                Some(p) if !plausible(arg.name, &p.text) => {
                    problems.push(at(format!("`{}` reads word {w}, which is `{}`", arg.name, p.text)))
                }
                Some(_) => {}
            }
            if w >= 6 && !spec.stack {
                problems.push(at(format!("`{}` reads stack word {w} but the row copies no stack words", arg.name)));
            }
        }
    }
    let pointers = [
        ("out_arg", spec.out_arg),
        ("out2_arg", spec.out2_arg),
        ("str_arg", spec.str_arg),
        ("deref_arg", spec.deref_arg),
    ];
    for (what, index) in pointers {
        if index == 0 {
            continue;
        }
        match proto.param_at(usize::from(index) - 1) {
            Some(p) if p.pointer && (what != "str_arg" || p.text.contains("char")) => {}
            Some(p) => problems.push(at(format!("{what} {index} is `{}`, not a pointer of its kind", p.text))),
            None => problems.push(at(format!("{what} {index} is past the function's arguments"))),
        }
    }
}

/// Argument names that say what kind of parameter they read.
fn plausible(arg: &str, param: &str) -> bool {
    let param = param.to_ascii_lowercase();
    match arg {
        "stream" => param.contains("stream"),
        "event" => param.contains("event"),
        "exec" => param.contains("exec"),
        "grid" | "block" => param.contains("dim") || param.contains("unsigned int"),
        // CUDA 13 replaced `int device` by a location struct under one name.
        "device" => param.contains("dev") && !param.contains("location"),
        "location_type" | "location_id" => param.contains("location"),
        _ => true,
    }
}

/// Checks `spec` against every release it applies to; a row that none
/// declares is a problem of its own.
fn check_row(spec: &FuncSpec, releases: &[Release], problems: &mut Vec<String>) {
    let mut seen = false;
    for rel in releases.iter().filter(|r| spec.applies_to(Some(r.major))) {
        let protos = if spec.layer == Layer::Driver { &rel.driver } else { &rel.runtime };
        match declared(protos, spec.name) {
            Some(Ok(proto)) => check(spec, proto, rel.major, problems),
            Some(Err(why)) => problems.push(format!("{} (CUDA {}): {why}", spec.name, rel.major)),
            None => continue,
        }
        seen = true;
    }
    if !seen {
        let majors: Vec<u8> = releases.iter().filter(|r| spec.applies_to(Some(r.major))).map(|r| r.major).collect();
        problems.push(format!(
            "{}: no header of CUDA {majors:?} declares it (a typo, or a name that needs a mapping here)",
            spec.name
        ));
    }
}

#[test]
fn every_decoded_function_matches_the_real_headers() {
    let releases: Vec<Release> = [("CUDA_TRACER_CUDA_INCLUDE12", 12), ("CUDA_TRACER_CUDA_INCLUDE13", 13)]
        .into_iter()
        .filter_map(|(var, major)| release(var, major))
        .collect();
    if releases.len() < 2 {
        return;
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    // Other layers (NCCL) have headers of their own, not checked here.
    for spec in FUNCS.iter().filter(|s| matches!(s.layer, Layer::Driver | Layer::Runtime)) {
        check_row(spec, &releases, &mut problems);
        checked += 1;
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} rows disagree with the headers:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_parser_lays_out_what_the_abi_says() {
    let header = "
        #define cuFoo cuFoo_v2
        #define cudaBar __CUDART_API_PTSZ(cudaBar_v3)
        /* CUresult CUDAAPI cuCommented(int a); */
        typedef CUresult (CUDAAPI *PFN_cuFoo)(int a);
        CUresult CUDAAPI cuFoo(CUdeviceptr *dptr, size_t bytes); // maps to _v2
        extern __host__ cudaError_t CUDARTAPI cudaBar(const void *f, dim3 grid, dim3 block, void **args,
            size_t shmem __dv(0), cudaStream_t stream __dv(0));
        cudaError_t CUDARTAPI cudaMemset3D(struct cudaPitchedPtr p, int value, struct cudaExtent e);
        cudaError_t CUDARTAPI cudaVoid(void);
        #if defined(__CUDA_API_VERSION_INTERNAL)
        CUresult CUDAAPI cuFoo(unsigned int *dptr, unsigned int bytes);
        #endif
    ";
    let driver = parse(header, "CUDAAPI");
    assert_eq!(driver.keys().collect::<Vec<_>>(), ["cuFoo", "cuFoo_v2"]);
    assert_eq!(driver["cuFoo"].as_ref().unwrap().params[0].text, "unsigned int *dptr");
    assert!(driver["cuFoo_v2"].as_ref().unwrap().params[0].pointer);
    let runtime = parse(header, "CUDARTAPI");
    let bar = runtime["cudaBar_v3_ptsz"].as_ref().unwrap();
    // func, grid (2 words), block (2 words), args in registers; shmem and stream on the stack.
    let at = |w| bar.param_at(w).map(|p| p.text.as_str());
    assert_eq!(
        [at(0), at(1), at(2), at(5), at(6), at(7), at(8)].map(Option::unwrap_or_default),
        ["const void *f", "dim3 grid", "dim3 grid", "void **args", "size_t shmem", "cudaStream_t stream", ""]
    );
    // Structs over 16 bytes go on the stack whole; the int takes a register.
    let memset = runtime["cudaMemset3D"].as_ref().unwrap();
    assert_eq!(memset.param_at(0).unwrap().text, "int value");
    assert_eq!((memset.param_at(6).unwrap().text.as_str(), memset.words.len()), ("struct cudaPitchedPtr p", 8));
    assert!(runtime["cudaVoid"].as_ref().unwrap().params.is_empty());
    assert!(!runtime.contains_key("cuCommented") && !driver.contains_key("PFN_cuFoo"));
}
