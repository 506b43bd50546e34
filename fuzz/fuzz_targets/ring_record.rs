//! Fuzzes the ring-buffer record decoder and what the daemon does with a
//! record it accepts: a name is demangled, and the call is formatted as a
//! trace line that both line readers must read back with the same values.
#![no_main]

use cuda_tracer::{
    daemon::ingest::{error_names, kernel_names::demangle},
    format::line::{self, intern, read, Annotations, JsonStr, LineFormatter},
};
use cuda_tracer_fuzz::same_call;
use libfuzzer_sys::fuzz_target;
use tracer_common::{
    abi::CallEvent,
    decode::{decode, Event},
    funcs::{self, Role},
};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Event::Call(ev)) => write_and_read_back(&ev, None),
        Ok(Event::CallName(ev, name)) => write_and_read_back(&ev, Some(name.as_bytes())),
        Ok(Event::Proc(_)) | Err(_) => {}
    }
});

/// The line the daemon writes for `ev`, with what the annotator could add:
/// the demangled name as a launch's kernel (the annotator keeps it from an
/// earlier lookup), a free's size, the error's name.
fn write_and_read_back(ev: &CallEvent, name: Option<&[u8]>) {
    let spec = funcs::by_id(ev.func_id).expect("decode checked the function id");
    let ret = ev.ret as u32 as i32;
    let demangled = name.map(|n| demangle(&String::from_utf8_lossy(n)));
    if let (Some(name), Some(demangled)) = (name, &demangled) {
        // Bounded work per record: what the readers keep of a name at most.
        assert!(
            demangled.len() <= intern::MAX_NAME_BYTES,
            "a {}-byte name demangled to {} bytes",
            name.len(),
            demangled.len()
        );
    }
    let kernel = demangled.filter(|_| spec.role == Role::Launch);
    let ann = Annotations {
        kernel: kernel.as_deref().map(JsonStr::new),
        freed_bytes: (spec.role == Role::Free).then_some(ev.out),
        error: error_names::name(spec.layer, ret),
        // The annotator names a caller from the return address, when a file maps it.
        caller: (ev.caller != 0).then(|| JsonStr::new("libcublasLt.so.12")),
        // Any bytes a module name may hold: the kernel's, escaped the same way.
        module: kernel.as_deref().map(JsonStr::new),
    };
    let mut out = Vec::new();
    // Session start at 0: every entry time is after it.
    LineFormatter { start_ns: 0 }.write_call(&mut out, ev, name, &ann);
    let text = out.strip_suffix(b"\n").expect("a line ends with its newline");
    let shown = String::from_utf8_lossy(text);
    assert!(!text.contains(&b'\n'), "one record, one line: {shown}");
    let slow = line::parse_line(text);
    // A call of more than MAX_TIME microseconds (31 years) is refused as
    // corrupt by the readers; the kernel cannot measure one. Within a
    // microsecond above the bound the decimal may round to it, either way.
    let max_ns = line::MAX_TIME as u64 * 1000;
    if ev.dur_ns > max_ns {
        assert!(slow.is_err() || ev.dur_ns <= max_ns + 1000, "{shown}");
        return;
    }
    let slow = slow.unwrap_or_else(|e| panic!("the tracer's own line is refused ({e}): {shown}"));
    assert_eq!((slow.pid, slow.tid, slow.ret, slow.name()), (ev.pid, ev.tid, ret, spec.name), "{shown}");
    assert_eq!(slow.error_name(), ann.error, "{shown}");
    assert_eq!(slow.args.caller(), (ev.caller != 0).then_some("libcublasLt.so.12"), "{shown}");
    if spec.role == Role::Launch {
        // (`cuLibraryGetKernel` writes its handle under the same key.)
        assert_eq!(slow.args.kernel(), kernel.as_deref(), "{shown}");
    }
    if let Some(fast) = read::parse(text, &mut read::Interner::default()) {
        assert!(same_call(&fast, &slow), "the readers disagree on {shown}:\n{fast:?}\n{slow:?}");
    }
}
