//! The fast line reader against the tolerant one, key orders and holes.

use super::*;

fn same(line: &str) {
    let mut names = Interner::default();
    let fast = parse(line.as_bytes(), &mut names).expect("fast path takes the tracer's own lines");
    let (mut ordered, mut any) = (Call::hole(), Call::hole());
    in_writing_order(line.as_bytes(), &mut names, &mut ordered).expect("the tracer's own key order");
    any_order(line.as_bytes(), &mut names, &mut any).unwrap();
    assert_eq!(format!("{ordered:?}"), format!("{any:?}"));
    let slow = super::super::parse_line(line.as_bytes()).unwrap();
    assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
}

#[test]
fn agrees_with_serde_on_the_tracers_lines() {
    same(
        r#"{"ts":31.2,"pid":7,"tid":8,"type":"cuda_runtime","func":"cudaLaunchKernel","phase":"entry","dur_us":18.2,"ret":0,"args":{"func":"0x55d1","grid":[128,4,1],"block":[256,1,1],"shared_mem":1024,"stream":"0x1000","kernel":"void gemm<128, float>(float const*, int)"}}"#,
    );
    same(
        r#"{"ts":47.577394,"pid":28331,"tid":28331,"type":"cuda_api","func":"cuMemAlloc_v2","phase":"entry","dur_us":17.760,"ret":2,"error":"CUDA_ERROR_OUT_OF_MEMORY","args":{"bytes":2199023255552}}"#,
    );
    same(
        r#"{"ts":29.46,"pid":1,"tid":1,"type":"cuda_api","func":"cuGetProcAddress_v2","phase":"entry","dur_us":32.850,"ret":0,"args":{"symbol":"cuInit","version":12000,"flags":0}}"#,
    );
    same(
        r#"{"ts":1,"pid":1,"tid":2,"type":"cuda_runtime","func":"cudaMemcpyAsync","phase":"entry","dur_us":3,"ret":-1,"args":{"dst":"0x10","src":"0x20","bytes":64,"kind":"DtoH","stream":"0x1001"}}"#,
    );
}

#[test]
fn decimals_parse_exactly_as_std_does() {
    for text in ["29.463897", "0.1", "17.760", "123456789.123456", "5", "1e3", "-2.5", "0.000001", "1234567890123456.7"]
    {
        let mut c = Cursor { b: text.as_bytes(), i: 0 };
        assert_eq!(c.f64(), Some(text.parse::<f64>().unwrap()), "{text}");
    }
}

#[test]
fn numbers_handles_and_strings_at_their_edges() {
    let cur = |t: &'static str| Cursor { b: t.as_bytes(), i: 0 };
    assert_eq!(cur("18446744073709551615").u64(), Some(u64::MAX));
    assert_eq!(cur("18446744073709551616").u64(), None, "overflow goes to serde");
    assert_eq!(cur("12x").u64(), None);
    assert_eq!(cur("\"0xFFFFffffFFFFffff\"").hex(), Some(Hex(u64::MAX)));
    assert_eq!(cur("\"0x1ffffffffffffffff\"").hex(), None);
    assert_eq!(cur("\"0x\"").hex(), None);
    assert_eq!(cur("\"0xg1\"").hex(), None);
    assert_eq!(cur("4096").hex(), Some(Hex(4096)));
    for len in [0, 1, 23, 24, 25, 200] {
        let text = format!("\"{}\",", "k".repeat(len));
        let mut c = Cursor { b: text.as_bytes(), i: 0 };
        assert_eq!(c.string().map(<[u8]>::len), Some(len));
        assert_eq!(c.peek(), Some(b','));
        let escaped = format!("\"{}\\n\"", "k".repeat(len));
        assert_eq!(Cursor { b: escaped.as_bytes(), i: 0 }.string(), None);
    }
    assert_eq!(cur("\"unterminated").string(), None);
    // Every position within and after the 8-byte words, both stoppers.
    for len in 0..40 {
        for stop in [b'"', b'\\'] {
            let mut text = vec![b'\xe2'; len];
            text.push(stop);
            text.extend_from_slice(b"\"x\\");
            assert_eq!(quote_or_backslash(&text), Some(len), "{len}");
        }
        assert_eq!(quote_or_backslash(&vec![b'a'; len]), None);
    }
}

#[test]
fn non_finite_and_overflowing_times_are_refused_by_both_readers() {
    let line = |ts: &str, dur: &str| {
        format!(
            r#"{{"ts":{ts},"pid":1,"tid":1,"type":"cuda_api","func":"cuInit","phase":"entry","dur_us":{dur},"ret":0,"args":{{}}}}"#
        )
    };
    for (ts, dur) in [("1.5e308", "1"), ("1", "1.5e308"), ("NaN", "1"), ("1", "inf"), ("-1e300", "1"), ("1e999", "1")] {
        let text = line(ts, dur);
        assert!(parse(text.as_bytes(), &mut Interner::default()).is_none(), "{text}");
        assert!(super::super::parse_line(text.as_bytes()).is_err(), "{text}");
    }
    assert!(parse(line("1e12", "1e9").as_bytes(), &mut Interner::default()).is_some());
}

#[test]
fn declines_what_it_does_not_know() {
    let mut names = Interner::default();
    assert!(parse(br#"{"ts": 1,"pid":1,"func":"cuInit"}"#, &mut names).is_none());
    assert!(parse(br#"{"ts":1,"pid":1,"func":"cuInit","args":{"kernel":"a\"b"}}"#, &mut names).is_none());
    // A name no function can have (a name without a row is read name-only).
    assert!(parse(br#"{"ts":1,"pid":1,"func":""}"#, &mut names).is_none());
    assert!(parse(br#"{"ts":1,"pid":1,"func":"cuInit"}x"#, &mut names).is_none());
    assert!(parse(br#"{"ts":1,"pid":1"#, &mut names).is_none());
}

#[test]
fn a_name_with_a_row_per_runtime_version_reads_as_the_same_row_either_way() {
    let line = br#"{"ts":1.000,"pid":7,"tid":7,"type":"cuda_runtime","func":"cudaMemcpyBatchAsync","phase":"entry","dur_us":2.000,"ret":0,"args":{"count":2,"stream":"0xffff"}}"#;
    let fast = parse(line, &mut Interner::default()).expect("the fast reader takes it");
    let slow = super::super::parse_line(line).expect("the tolerant reader takes it");
    assert_eq!(fast.func, slow.func, "the first row of the name, both ways");
    assert_eq!(Some(usize::from(fast.func)), funcs::FUNCS.iter().position(|f| f.name == "cudaMemcpyBatchAsync"));
}
