//! Typed decoding of ring-buffer records: length and kind are checked before
//! any bytes are reinterpreted.

use std::boxed::Box;

use crate::abi::{
    kind, CallEvent, CallNameEvent, EventHeader, NameBuf, ProcEvent, CALL_EVENT_SIZE, CALL_NAME_EVENT_SIZE, NAME_MAX,
    PROC_EVENT_SIZE,
};

// SAFETY: all three are #[repr(C)], made only of integers, with no implicit
// padding (asserted in `abi`), so every bit pattern is a valid value.
unsafe impl aya::Pod for CallEvent {}
unsafe impl aya::Pod for ProcEvent {}
unsafe impl aya::Pod for EventHeader {}
unsafe impl aya::Pod for crate::abi::EntryKey {}
unsafe impl aya::Pod for crate::abi::EntryState {}
unsafe impl aya::Pod for NameBuf {}
unsafe impl aya::Pod for CallNameEvent {}

/// A decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Call(CallEvent),
    /// A call with its string argument (kernel or symbol name).
    CallName(CallEvent, Box<NameBuf>),
    Proc(ProcEvent),
}

impl NameBuf {
    /// The bytes read, without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(NAME_MAX);
        let bytes = &self.bytes[..len];
        bytes.split(|b| *b == 0).next().unwrap_or(bytes)
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the 8-byte header")]
    ShortHeader { len: usize },
    #[error("record kind {kind} is unknown (tracer and BPF object from different builds?)")]
    UnknownKind { kind: u32 },
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    BadLength { kind: u32, len: usize, expected: usize },
    #[error("call record names function id {func_id}, beyond the {known} known functions")]
    UnknownFunction { func_id: u32, known: usize },
}

fn read<T: Copy>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= core::mem::size_of::<T>());
    // SAFETY: callers check the length first; read_unaligned needs no alignment,
    // and T is a padding-free integer struct (see the Pod impls above).
    unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Decodes one record as delivered by the ring buffer.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < core::mem::size_of::<EventHeader>() {
        return Err(DecodeError::ShortHeader { len: bytes.len() });
    }
    let header: EventHeader = read(bytes);
    let expected = match header.kind {
        kind::CALL => CALL_EVENT_SIZE,
        kind::PROC => PROC_EVENT_SIZE,
        kind::CALL_NAME => CALL_NAME_EVENT_SIZE,
        other => return Err(DecodeError::UnknownKind { kind: other }),
    };
    if bytes.len() < expected || header.size as usize != expected {
        return Err(DecodeError::BadLength { kind: header.kind, len: bytes.len(), expected });
    }
    let known = |call: &CallEvent| {
        if crate::funcs::by_id(call.func_id).is_none() {
            return Err(DecodeError::UnknownFunction { func_id: call.func_id, known: crate::funcs::FUNCS.len() });
        }
        Ok(())
    };
    match header.kind {
        kind::CALL => {
            let call: CallEvent = read(bytes);
            known(&call)?;
            Ok(Event::Call(call))
        }
        kind::CALL_NAME => {
            let ev: CallNameEvent = read(bytes);
            known(&ev.call)?;
            Ok(Event::CallName(ev.call, Box::new(ev.name)))
        }
        _ => Ok(Event::Proc(read(bytes))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a padding-free Pod value.
        unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }.to_vec()
    }

    fn call() -> CallEvent {
        CallEvent {
            header: EventHeader { kind: kind::CALL, size: CALL_EVENT_SIZE as u32 },
            entry_ns: 5,
            pid: 7,
            tid: 8,
            func_id: 2,
            caller: 0x7f3a_1c2b_4d1b,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_a_call() {
        let c = call();
        assert_eq!(decode(&bytes_of(&c)), Ok(Event::Call(c)));
        // The caller is the record's last word: a record one word short is refused.
        let Ok(Event::Call(back)) = decode(&bytes_of(&c)) else { panic!("decoded above") };
        assert_eq!(back.caller, 0x7f3a_1c2b_4d1b);
        let mut short = bytes_of(&c);
        short.truncate(CALL_EVENT_SIZE - 8);
        short[4..8].copy_from_slice(&((CALL_EVENT_SIZE - 8) as u32).to_le_bytes());
        assert!(matches!(decode(&short), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn rejects_short_records_before_reading() {
        assert_eq!(decode(&[1, 0, 0]), Err(DecodeError::ShortHeader { len: 3 }));
        let b = bytes_of(&call());
        assert!(matches!(decode(&b[..20]), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn rejects_unknown_kind_and_function() {
        let mut c = call();
        c.header.kind = 99;
        assert_eq!(decode(&bytes_of(&c)), Err(DecodeError::UnknownKind { kind: 99 }));
        let mut c = call();
        c.func_id = 10_000;
        assert!(matches!(decode(&bytes_of(&c)), Err(DecodeError::UnknownFunction { .. })));
    }

    #[test]
    fn rejects_size_field_mismatch() {
        let mut c = call();
        c.header.size = 12;
        assert!(matches!(decode(&bytes_of(&c)), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn decodes_a_proc_event() {
        let p = ProcEvent {
            header: EventHeader { kind: kind::PROC, size: PROC_EVENT_SIZE as u32 },
            pid: 3,
            ppid: 2,
            op: crate::abi::proc_op::FORK,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&p)), Ok(Event::Proc(p)));
    }

    #[test]
    fn decodes_a_call_with_name() {
        let mut ev = CallNameEvent { call: call(), name: NameBuf::default() };
        ev.call.header = EventHeader { kind: kind::CALL_NAME, size: CALL_NAME_EVENT_SIZE as u32 };
        ev.name.bytes[..5].copy_from_slice(b"gemm\0");
        ev.name.len = 5;
        let decoded = decode(&bytes_of(&ev));
        let Ok(Event::CallName(c, name)) = decoded else { panic!("not decoded: {decoded:?}") };
        assert_eq!(c.pid, 7);
        assert_eq!(name.as_bytes(), b"gemm");
        // A CALL_NAME record cut to the size of a plain call is rejected.
        assert!(matches!(decode(&bytes_of(&ev)[..CALL_EVENT_SIZE]), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn the_fuzz_seed_records_decode() {
        // `fuzz/corpus/ring_record`: seeds are named for what they hold
        // (`call_`, `name_`, `proc_`) and must stay valid records as the ABI
        // changes; inputs the fuzzer found are named by hash and may be anything.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/ring_record");
        let is_seed = |name: &str| ["call_", "name_", "proc_"].iter().any(|kind| name.starts_with(kind));
        let seeds: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| is_seed(&path.file_name().unwrap().to_string_lossy()))
            .collect();
        for path in &seeds {
            let decoded = decode(&std::fs::read(path).unwrap());
            assert!(decoded.is_ok(), "{}: {decoded:?}", path.display());
        }
        assert!(seeds.len() >= 10, "{} seed records in {dir}", seeds.len());
    }

    #[test]
    fn cookie_round_trips() {
        let c = crate::abi::Cookie {
            func_id: 513,
            stack_words: 6,
            out_arg: 2,
            deref_arg: 1,
            str_arg: 3,
            deref_at: 19,
            out2_arg: 2,
        };
        assert_eq!(crate::abi::Cookie::decode(c.encode()), c);
    }

    #[test]
    fn function_names_are_unique() {
        let f = crate::funcs::FUNCS;
        for (i, a) in f.iter().enumerate() {
            // One name has several rows only when each is for another
            // runtime major version (a library never sees two of them), and
            // they agree on everything but how arguments are read.
            for b in f[i + 1..].iter().filter(|b| b.name == a.name) {
                let disjoint =
                    a.runtime_major.is_some() && b.runtime_major.is_some() && a.runtime_major != b.runtime_major;
                assert!(disjoint, "{} twice for one library", a.name);
                assert_eq!((a.layer, a.role, a.group), (b.layer, b.role, b.group), "{}", a.name);
            }
            for arg in a.args {
                let limit = match arg.fmt {
                    // Indexes in 32-bit units.
                    crate::funcs::Fmt::Dim3U32 | crate::funcs::Fmt::U32At => 2 * crate::abi::MAX_ARGS,
                    _ => crate::abi::MAX_ARGS,
                };
                assert!((arg.word as usize) < limit, "{}.{}", a.name, arg.name);
            }
        }
    }
}
