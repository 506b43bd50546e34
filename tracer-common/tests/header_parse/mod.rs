//! Reads the prototypes of NVIDIA's `cuda.h` and `cuda_runtime_api.h` and
//! maps each exported name to the argument words it takes (x86-64 System V).
//!
//! Exported names come from two places: a public declaration `name(...)`
//! whose name a `#define name name_v2` (or `__CUDA_API_PTSZ(name_v2)`) maps
//! to the symbol it compiles to, and the block under
//! `#if defined(__CUDA_API_VERSION_INTERNAL)` at the end, which declares
//! the old entry points under their exported names (it wins).

use std::collections::BTreeMap;

/// One parameter of a prototype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The declaration as written (type and name), defaults removed.
    pub text: String,
    pub pointer: bool,
}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `n` integer eightbytes: registers while they last, else the stack.
    Integer(usize),
    /// Passed in memory (a struct over 16 bytes): `n` stack words.
    Memory(usize),
    /// A `float`/`double`: an SSE register, no integer word.
    Sse,
}

/// A parsed prototype: its parameters and, per argument word (six
/// registers, then stack words from index 6), the parameter it holds.
#[derive(Clone, Debug)]
pub struct Prototype {
    pub params: Vec<Param>,
    pub words: BTreeMap<usize, usize>,
}

impl Prototype {
    /// Lays the parameters out in argument words; an error names a by-value
    /// type whose size the parser does not know.
    fn new(params: Vec<Param>) -> Result<Self, String> {
        let mut words = BTreeMap::new();
        let (mut regs, mut stack) = (0usize, 0usize);
        for (i, p) in params.iter().enumerate() {
            let n = match classify(p)? {
                Class::Sse => continue,
                Class::Integer(n) if regs + n <= 6 => {
                    for r in regs..regs + n {
                        words.insert(r, i);
                    }
                    regs += n;
                    continue;
                }
                Class::Integer(n) | Class::Memory(n) => n,
            };
            for s in stack..stack + n {
                words.insert(6 + s, i);
            }
            stack += n;
        }
        Ok(Self { params, words })
    }

    /// The parameter in argument word `word`.
    pub fn param_at(&self, word: usize) -> Option<&Param> {
        self.words.get(&word).map(|&i| &self.params[i])
    }
}

/// By-value structs of the CUDA APIs and their sizes in bytes.
const STRUCTS: [(&str, usize); 8] = [
    ("dim3", 12),
    ("cudaMemLocation", 8),
    ("CUmemLocation", 8),
    ("cudaPitchedPtr", 32),
    ("cudaExtent", 24),
    ("cudaPos", 24),
    ("cudaChannelFormatDesc", 20),
    ("CUmemLocation_v1", 8),
];

fn classify(p: &Param) -> Result<Class, String> {
    if p.pointer {
        return Ok(Class::Integer(1));
    }
    let words: Vec<&str> = p.text.split_whitespace().filter(|w| !matches!(*w, "const" | "struct" | "enum")).collect();
    if let Some(&(_, size)) = words.iter().find_map(|w| STRUCTS.iter().find(|(n, _)| n == w)) {
        let eightbytes = size.div_ceil(8);
        return Ok(if size > 16 { Class::Memory(eightbytes) } else { Class::Integer(eightbytes) });
    }
    if words.first().is_some_and(|w| matches!(*w, "float" | "double")) {
        return Ok(Class::Sse);
    }
    if p.text.split_whitespace().next() == Some("struct") {
        return Err(format!("by-value `{}`: add its size to STRUCTS", p.text));
    }
    Ok(Class::Integer(1))
}

/// Exported name -> prototype (or why it could not be laid out).
pub type Prototypes = BTreeMap<String, Result<Prototype, String>>;

/// Parses one header's text. `api` is the calling-convention macro
/// before each name (`CUDAAPI`, `CUDARTAPI`).
pub fn parse(text: &str, api: &str) -> Prototypes {
    let text = strip_comments(text);
    let marker = text
        .match_indices('\n')
        .rev()
        .map(|(i, _)| i + 1)
        .find(|&i| text[i..].lines().next().is_some_and(|l| l.trim() == "#if defined(__CUDA_API_VERSION_INTERNAL)"))
        .unwrap_or(text.len());
    let (public, internal) = text.split_at(marker);
    let defines = defines(public);
    let mut out = Prototypes::new();
    for (name, proto) in declarations(public, api) {
        let targets = defines.get(&name).cloned().unwrap_or_else(|| vec![name.clone()]);
        for target in targets {
            out.insert(target, proto.clone());
        }
    }
    out.extend(declarations(internal, api));
    out
}

/// `#define NAME TARGET`, TARGET an identifier or a per-thread wrapper
/// `__CUDA_API_PTSZ(x)` (which compiles to `x` or `x_ptsz`).
fn defines(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(target), None) = (words.next(), words.next(), words.next()) else { continue };
        if !name.starts_with("cu") || name.contains('(') {
            continue;
        }
        let targets = match target.split_once('(') {
            Some((wrapper, rest)) if wrapper.ends_with("_PTSZ") || wrapper.ends_with("_PTDS") => {
                let inner = rest.trim_end_matches(')').trim().to_string();
                let suffix = if wrapper.ends_with("_PTSZ") { "_ptsz" } else { "_ptds" };
                vec![inner.clone(), format!("{inner}{suffix}")]
            }
            Some(_) => continue,
            None if is_ident(target) => vec![target.to_string()],
            None => continue,
        };
        out.insert(name.to_string(), targets);
    }
    out
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every `API name(params);` in `text` (not `(API *pfn)` typedefs, not
/// inline definitions).
fn declarations(text: &str, api: &str) -> Vec<(String, Result<Prototype, String>)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices(api) {
        let before = text[..at].chars().next_back();
        let rest = &text[at + api.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') || !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let rest = rest.trim_start();
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let Some(params) = rest[name.len()..].trim_start().strip_prefix('(') else { continue };
        let Some(close) = matching_paren(params) else { continue };
        if name.is_empty() || !params[close + 1..].trim_start().starts_with(';') {
            continue;
        }
        out.push((name, Prototype::new(split_params(&params[..close]))));
    }
    out
}

/// Index of the `)` closing an already opened `(`.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The parameters between the parentheses, split at top-level commas,
/// with `__dv(default)` removed; `(void)` is none.
fn split_params(list: &str) -> Vec<Param> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
        .into_iter()
        .map(|p| {
            let p = p.split("__dv(").next().unwrap_or(p);
            let text = p.split_whitespace().collect::<Vec<_>>().join(" ");
            Param { pointer: text.contains('*') || text.contains('['), text }
        })
        .filter(|p| !p.text.is_empty() && p.text != "void")
        .collect()
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                rest = rest[b + 2..].find("*/").map_or("", |e| &rest[b + 2 + e + 2..]);
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            _ => {
                out.push_str(rest);
                rest = "";
            }
        }
    }
    out
}
