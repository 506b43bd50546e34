//! Fuzzes the ring-buffer record decoder and what the daemon does with a
//! record it accepts: the kernel name is demangled and the call formatted as
//! a trace line, which both line readers must read back with the same values.
#![no_main]

use cuda_tracer::{
    daemon::ingest::{error_names, kernel_names::demangle},
    format::line::{self, intern, read, Annotations, JsonStr, LineFormatter},
};
use libfuzzer_sys::fuzz_target;
use tracer_common::{
    abi::CallEvent,
    decode::{decode, Event},
    funcs,
};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Event::Call(ev)) => write_and_read_back(&ev, None),
        Ok(Event::CallName(ev, name)) => write_and_read_back(&ev, Some(name.as_bytes())),
        Ok(Event::Proc(_)) | Err(_) => {}
    }
});

/// The line the daemon writes for `ev`, with what the annotator could add
/// (a kernel name from the record's string, a freed size, the error name).
fn write_and_read_back(ev: &CallEvent, name: Option<&[u8]>) {
    let spec = funcs::by_id(ev.func_id).expect("decode checked the function id");
    let ret = ev.ret as u32 as i32;
    let kernel = name.map(|n| demangle(&String::from_utf8_lossy(n)));
    if let Some(k) = &kernel {
        // What the readers keep of a name: a longer one is cut.
        assert!(
            k.len() <= intern::MAX_NAME_BYTES,
            "a {}-byte record name demangled to {} bytes",
            name.map_or(0, <[u8]>::len),
            k.len()
        );
    }
    let ann = Annotations {
        kernel: kernel.as_deref().map(JsonStr::new),
        freed_bytes: (spec.role == funcs::Role::Free).then_some(ev.out),
        error: error_names::name(spec.layer, ret),
    };
    // Session start at the first nanosecond: every entry time is at most
    // u64::MAX ns after it (213 503 days).
    let mut out = Vec::new();
    LineFormatter { start_ns: 0 }.write_call(&mut out, ev, name, &ann);
    let text = out.strip_suffix(b"\n").expect("a line ends with its newline");
    assert!(!text.contains(&b'\n'), "one record, one line: {}", String::from_utf8_lossy(text));
    let slow = line::parse_line(text);
    // A call of more than MAX_TIME microseconds (31 years) is refused as
    // corrupt by the readers; the kernel cannot measure one.
    if ev.dur_ns / 1000 > line::MAX_TIME as u64 {
        assert!(slow.is_err());
        return;
    }
    let slow =
        slow.unwrap_or_else(|e| panic!("the tracer's own line is refused ({e}): {}", String::from_utf8_lossy(text)));
    assert_eq!((slow.pid, slow.tid, slow.ret, slow.name()), (ev.pid, ev.tid, ret, spec.name));
    assert_eq!(slow.error_name(), ann.error);
    assert_eq!(slow.args.kernel(), kernel.as_deref());
    if let Some(fast) = read::parse(text, &mut read::Interner::default()) {
        assert_eq!(
            format!("{fast:?}"),
            format!("{slow:?}"),
            "the readers disagree on {}",
            String::from_utf8_lossy(text)
        );
    }
}
