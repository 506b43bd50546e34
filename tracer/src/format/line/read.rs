//! A fast path for the lines the tracer itself writes: one scan over the
//! bytes, no whitespace, no escapes, the writer's separators
//! ([`super::schema`]) matched as literals. Anything it does not recognise
//! (other spacing, escaped strings, nested values in unknown keys) returns
//! `None` and the caller falls back to serde_json ([`super::fallback`]),
//! which also explains errors. It exists because `report` must read a 1 GB
//! trace far faster than jq.

use std::sync::{LazyLock, OnceLock};

use tracer_common::funcs::{self, Layer};

use super::{
    hash::{FastMap, NameKey},
    intern, plausible_time,
    schema::{self, arg, key},
    Args, Call, CopyKind, ErrorName, Hex, Launch,
};

/// A launch's kernel name, grid and block, and the line's caller, as bytes.
type LaunchKey<'a> = (Option<NameKey<'a>>, Option<[u32; 3]>, Option<[u32; 3]>, Option<NameKey<'a>>);

/// What a line's `args` hold of a [`Launch`], as read.
type LaunchParts<'a> = (Option<&'a [u8]>, Option<[u32; 3]>, Option<[u32; 3]>);

/// The launches and error names seen in one chunk, with their global ids:
/// the global tables are locked once per distinct value per chunk.
#[derive(Default)]
pub struct Interner<'a> {
    launches: FastMap<LaunchKey<'a>, u32>,
    errors: FastMap<&'a [u8], ErrorName>,
}

impl<'a> Interner<'a> {
    /// The id of the launch `parts` of a line and its `caller`.
    fn launch(&mut self, (kernel, grid, block): LaunchParts<'a>, caller: Option<&'a [u8]>) -> Option<u32> {
        let key = (kernel.map(NameKey), grid, block, caller.map(NameKey));
        if let Some(&id) = self.launches.get(&key) {
            return Some(id);
        }
        let text = |bytes: Option<&[u8]>| match bytes {
            Some(bytes) => std::str::from_utf8(bytes).ok().map(|text| Some(intern::name(text))),
            None => Some(None),
        };
        let id = Launch { kernel: text(kernel)?, grid, block, caller: text(caller)? }.id();
        self.launches.insert(key, id);
        Some(id)
    }

    fn error(&mut self, bytes: &'a [u8]) -> Option<ErrorName> {
        if let Some(&name) = self.errors.get(bytes) {
            return Some(name);
        }
        let name = ErrorName::new(std::str::from_utf8(bytes).ok()?)?;
        self.errors.insert(bytes, name);
        Some(name)
    }
}

/// The id of function `name` of `layer`: its table row's, else (a
/// function traced name-only) the id the name-only registry gives it.
fn func_id(name: &[u8], layer: Layer) -> Option<u16> {
    static IDS: OnceLock<FastMap<NameKey<'static>, u16>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        // A name with a row per runtime version reads as its first row, as
        // `funcs::by_name` (the other reader) has it: the rows share layer,
        // role and group.
        let mut ids = FastMap::default();
        for (i, spec) in funcs::FUNCS.iter().enumerate() {
            ids.entry(NameKey(spec.name.as_bytes())).or_insert(i as u16);
        }
        ids
    });
    match ids.get(&NameKey(name)) {
        Some(&id) => Some(id),
        None => funcs::extra::intern(std::str::from_utf8(name).ok()?, layer),
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string without escapes; the cursor is on its opening quote.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let (b, start) = (self.b, self.i);
        let end = quote_or_backslash(&b[start..])? + start;
        if b[end] == b'\\' {
            return None;
        }
        self.i = end + 1;
        Some(&b[start..end])
    }

    /// Steps over `text` if the cursor is on it.
    fn lit(&mut self, text: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(text).then(|| self.i += text.len())
    }

    /// Whether the cursor is at the end of a value.
    fn at_delimiter(&self) -> bool {
        matches!(self.peek(), None | Some(b',' | b'}' | b']'))
    }

    /// The bytes of a number (or literal) up to the next delimiter.
    fn scalar(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while !self.at_delimiter() {
            self.i += 1;
        }
        (self.i > start).then(|| &self.b[start..self.i])
    }

    fn f64(&mut self) -> Option<f64> {
        // Plain decimals of up to 15 digits (what the tracer writes), in one
        // pass: the digits as an exact integer over an exact power of ten;
        // one IEEE division rounds correctly, so this equals `str::parse`.
        const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
        let (b, start) = (self.b, self.i);
        let (mut m, mut digits, mut frac, mut dot) = (0u64, 0usize, 0usize, false);
        let mut j = start;
        while let Some(&c) = b.get(j) {
            if c.is_ascii_digit() {
                m = m.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                digits += 1;
                frac += usize::from(dot);
            } else if c == b'.' && !dot && digits > 0 {
                dot = true;
            } else {
                break;
            }
            j += 1;
        }
        self.i = j;
        if digits > 0 && digits <= 15 && self.at_delimiter() {
            return Some(m as f64 / POW10[frac]);
        }
        // Exponents, signs, long mantissas: the standard parser.
        self.i = start;
        std::str::from_utf8(self.scalar()?).ok()?.parse().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        let (b, start) = (self.b, self.i);
        let mut n = 0u64;
        let mut j = start;
        while let Some(&c) = b.get(j).filter(|c| c.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            j += 1;
        }
        self.i = j;
        (j > start && self.at_delimiter()).then_some(n)
    }

    fn i32(&mut self) -> Option<i32> {
        if self.peek()? == b'-' {
            self.i += 1;
            return i32::try_from(-i64::try_from(self.u64()?).ok()?).ok();
        }
        i32::try_from(self.u64()?).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    fn hex(&mut self) -> Option<Hex> {
        if self.peek()? != b'"' {
            return self.u64().map(Hex);
        }
        let b = self.b;
        let mut j = self.i + 1;
        if b.get(j..j + 2) == Some(b"0x") {
            j += 2;
        }
        let start = j;
        let mut v = 0u64;
        loop {
            let d = match *b.get(j)? {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'a'..=b'f' => c - b'a' + 10,
                c @ b'A'..=b'F' => c - b'A' + 10,
                b'"' => break,
                _ => return None,
            };
            if j - start == 16 {
                return None;
            }
            v = (v << 4) | u64::from(d);
            j += 1;
        }
        if j == start {
            return None;
        }
        self.i = j + 1;
        Some(Hex(v))
    }

    fn dim3(&mut self) -> Option<[u32; 3]> {
        self.eat(b'[')?;
        let x = self.u32()?;
        self.eat(b',')?;
        let y = self.u32()?;
        self.eat(b',')?;
        let z = self.u32()?;
        self.eat(b']')?;
        Some([x, y, z])
    }

    /// Skips a value of a key we do not use: a string, scalar or flat array.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => None,
            b'[' => {
                let end = memchr::memchr(b']', &self.b[self.i..])?;
                let inner = &self.b[self.i..self.i + end];
                if inner.contains(&b'[') || inner.contains(&b'{') || inner.contains(&b'"') {
                    return None;
                }
                self.i += end + 1;
                Some(())
            }
            _ => self.scalar().map(drop),
        }
    }

    /// Iterates `"key":value,` pairs of an object until its `}`.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// The first `"` or `\\` in `b`, eight bytes at a time (most strings are
/// short words, where this beats the setup of a SIMD search).
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `w` equal to `c` (and possibly in bytes
    // after the first such byte, which `trailing_zeros` never reaches).
    let equal = |w: u64, c: u8| {
        let x = w ^ (ONES * u64::from(c));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut words = b.chunks_exact(8);
    for (n, word) in words.by_ref().take(SWAR_WORDS).enumerate() {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        let hits = equal(w, b'"') | equal(w, b'\\');
        if hits != 0 {
            return Some(n * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    // A long string (a kernel name): SIMD pays off now.
    let seen = (b.len() / 8).min(SWAR_WORDS) * 8;
    memchr::memchr2(b'"', b'\\', &b[seen..]).map(|i| seen + i)
}

/// Words searched eight bytes at a time before [`quote_or_backslash`]
/// switches to SIMD.
const SWAR_WORDS: usize = 3;

/// Reads `args` into `a`, but for the launch fields, which are returned (the
/// caller interns them with the line's `caller`: [`Interner::launch`]).
fn args<'a>(c: &mut Cursor<'a>, a: &mut Args) -> Option<LaunchParts<'a>> {
    let (mut kernel, mut grid, mut block) = (None, None, None);
    c.object(|c, key| {
        match key {
            arg::BYTES => a.set_bytes(Some(c.u64()?)).ok()?,
            arg::DPTR => a.set_dptr(Some(c.hex()?)).ok()?,
            arg::PTR => a.set_ptr(Some(c.hex()?)).ok()?,
            arg::KIND if c.peek()? == b'"' => a.set_kind(Some(CopyKind::from_name(c.string()?))),
            arg::KIND => a.set_kind(Some(CopyKind::from_number(c.u64()?))),
            arg::STREAM => a.set_stream(Some(c.hex()?)).ok()?,
            arg::EVENT => a.set_event(Some(c.hex()?)).ok()?,
            arg::GRAPH => a.set_graph(Some(c.hex()?)).ok()?,
            arg::EXEC => a.set_exec(Some(c.hex()?)).ok()?,
            arg::KERNEL => kernel = Some(c.string()?),
            arg::GRID => grid = Some(c.dim3()?),
            arg::BLOCK => block = Some(c.dim3()?),
            arg::SHARED_MEM => a.set_shared_mem(Some(c.u64()?)).ok()?,
            arg::F | arg::FUNC => a.set_f(Some(c.hex()?)).ok()?,
            arg::COMM => a.set_comm(Some(c.hex()?)).ok()?,
            _ => c.skip()?,
        }
        Some(())
    })?;
    Some((kernel, grid, block))
}

/// Sets the launch fields and `caller` of a line read.
fn set_launch<'a>(
    names: &mut Interner<'a>,
    a: &mut Args,
    parts: LaunchParts<'a>,
    caller: Option<&'a [u8]>,
) -> Option<()> {
    if parts != (None, None, None) || caller.is_some() {
        a.set_launch_id(names.launch(parts, caller)?);
    }
    Some(())
}

/// Parses one line the tracer wrote, or `None` to let serde_json decide.
pub fn parse<'a>(line: &'a [u8], names: &mut Interner<'a>) -> Option<Call> {
    let mut call = Call::hole();
    parse_into(line, names, &mut call).then_some(call)
}

/// [`parse`] into a call in place (a call is 150+ bytes: moving it through
/// `Option`s costs as much as parsing its numbers). `out` must be a
/// [`Call::hole`]; on `false` it holds garbage.
pub fn parse_into<'a>(line: &'a [u8], names: &mut Interner<'a>, out: &mut Call) -> bool {
    if in_writing_order(line, names, out).is_some() {
        return true;
    }
    *out = Call::hole();
    any_order(line, names, out).is_some()
}

/// `,"type":"<layer>","func":` for each layer: `type` is one of a few
/// words, matched with the keys around it rather than scanned.
static TYPE_THEN_FUNC: LazyLock<Vec<(Layer, Vec<u8>)>> = LazyLock::new(|| {
    Layer::ALL
        .iter()
        .map(|&layer| {
            (layer, [schema::BEFORE_TYPE, b"\"", layer.type_name().as_bytes(), b"\"", schema::BEFORE_FUNC].concat())
        })
        .collect()
});

/// The keys in the order the tracer writes them ([`super::write`]), matched
/// as literals: no key is scanned or looked up.
pub(super) fn in_writing_order<'a>(line: &'a [u8], names: &mut Interner<'a>, out: &mut Call) -> Option<()> {
    let mut c = Cursor { b: line, i: 0 };
    c.lit(schema::BEFORE_TS)?;
    out.ts_ms = c.f64().filter(|&t| plausible_time(t))?;
    c.lit(schema::BEFORE_PID)?;
    out.pid = c.u32()?;
    c.lit(schema::BEFORE_TID)?;
    out.tid = c.u32()?;
    let layer = TYPE_THEN_FUNC.iter().find_map(|(layer, lit)| c.lit(lit).map(|()| *layer))?;
    out.func = func_id(c.string()?, layer)?;
    c.lit(schema::PHASE_THEN_DUR_US)?;
    out.dur_us = c.f64().filter(|&d| plausible_time(d))?;
    c.lit(schema::BEFORE_RET)?;
    out.ret = c.i32()?;
    if c.lit(schema::BEFORE_ERROR).is_some() {
        out.error = Some(names.error(c.string()?)?);
    }
    let caller = if c.lit(schema::BEFORE_CALLER).is_some() { Some(c.string()?) } else { None };
    c.lit(schema::BEFORE_ARGS)?;
    let parts = args(&mut c, &mut out.args)?;
    set_launch(names, &mut out.args, parts, caller)?;
    c.lit(schema::END)?;
    (c.i == line.len()).then_some(())
}

/// Any key order (and keys the tracer does not write, which are skipped).
fn any_order<'a>(line: &'a [u8], names: &mut Interner<'a>, call: &mut Call) -> Option<()> {
    let mut c = Cursor { b: line, i: 0 };
    let (mut ts, mut pid, mut tid, mut func, mut layer) = (None, None, None, None, None);
    let (mut parts, mut caller) = ((None, None, None), None);
    (call.dur_us, call.ret) = (0.0, 0);
    c.object(|c, key| {
        match key {
            key::TS => ts = Some(c.f64()?),
            key::PID => pid = Some(c.u32()?),
            key::TID => tid = Some(c.u32()?),
            key::FUNC => func = Some(c.string()?),
            key::TYPE => layer = Layer::from_type_name(c.string()?),
            key::DUR_US => call.dur_us = c.f64().filter(|&d| plausible_time(d))?,
            key::RET => call.ret = c.i32()?,
            key::ERROR => call.error = Some(names.error(c.string()?)?),
            key::CALLER => caller = Some(c.string()?),
            key::ARGS => parts = args(c, &mut call.args)?,
            _ => c.skip()?,
        }
        Some(())
    })?;
    if c.i != line.len() {
        return None;
    }
    set_launch(names, &mut call.args, parts, caller)?;
    // A time too large for f64 would sort among the holes of bad lines.
    call.ts_ms = ts.filter(|&t| plausible_time(t))?;
    call.pid = pid?;
    call.tid = tid.unwrap_or(call.pid);
    // A name without a row takes the line's `type` (the driver's if none).
    call.func = func_id(func?, layer.unwrap_or(Layer::Driver))?;
    Some(())
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
