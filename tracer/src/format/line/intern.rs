//! Process-wide tables of the few distinct strings and launch shapes a trace
//! repeats millions of times (kernel names, grid/block, calling files, error names): a
//! call stores a small id instead, which keeps [`super::Call`] at 64 bytes
//! (one cache line; at a gigabyte of trace, moving calls is the cost).
//!
//! Entries live as long as the process: a report reads a trace once, and a
//! trace names a few thousand kernels at most.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    num::NonZeroU16,
    sync::{LazyLock, Mutex},
};

/// Values by id (lock-free reads, which the analyses do per call) and ids
/// by value (locked, taken only for a value a chunk has not seen yet).
struct Table<T: 'static> {
    values: boxcar::Vec<T>,
    ids: Mutex<HashMap<T, u32>>,
}

impl<T: Clone + Eq + Hash> Table<T> {
    fn new() -> Self {
        Table { values: boxcar::Vec::new(), ids: Mutex::new(HashMap::new()) }
    }

    /// The id of `value`, adding `own(value)` if new; `None` past `limit`
    /// entries.
    fn intern<Q>(&'static self, value: &Q, own: impl FnOnce(&Q) -> T, limit: usize) -> Option<u32>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // A panic elsewhere while holding the lock leaves the map whole.
        let mut ids = self.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&id) = ids.get(value) {
            return Some(id);
        }
        if ids.len() >= limit {
            return None;
        }
        let owned = own(value);
        let id = u32::try_from(self.values.push(owned.clone())).ok()?;
        ids.insert(owned, id);
        Some(id)
    }

    fn get(&'static self, id: u32) -> &'static T {
        // Ids only come from `intern`, which pushed the value first.
        &self.values[id as usize]
    }
}

static NAMES: LazyLock<Table<&'static str>> = LazyLock::new(Table::new);
static LAUNCHES: LazyLock<Table<Launch>> = LazyLock::new(Table::new);
static ERRORS: LazyLock<Table<&'static str>> = LazyLock::new(Table::new);

/// A kernel name (or `cuLibraryGetKernel` handle), interned: equal names are
/// the same `&'static str`, so its address identifies the kernel.
pub fn name(text: &str) -> &'static str {
    let text = &*cut(text);
    // Leaked on purpose: the table keeps every name for the process's life.
    let leaked = |text: &str| -> &'static str { Box::leak(text.into()) };
    // At most one new name per line, and a read has < 2^32 lines.
    NAMES.get(NAMES.intern(text, leaked, u32::MAX as usize).expect("fewer names than lines"))
}

/// Kernel names longer than this are cut (with a marker) before they are
/// kept: C++ template names run to a few KiB, a hostile line to gigabytes.
pub const MAX_NAME_BYTES: usize = 64 << 10;

/// `text`, or its first [`MAX_NAME_BYTES`] with a marker if longer.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_NAME_BYTES {
        return text.into();
    }
    let mut end = MAX_NAME_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated: {} bytes]", &text[..end], text.len()).into()
}

/// The launch-only arguments of a call, interned together with the file
/// that made the call (any call has one; a trace has a few dozen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Launch {
    pub kernel: Option<&'static str>,
    pub grid: Option<[u32; 3]>,
    pub block: Option<[u32; 3]>,
    /// The line's `caller`.
    pub caller: Option<&'static str>,
}

impl Launch {
    /// Its id, 1-based (0 is "no launch arguments").
    pub(super) fn id(self) -> u32 {
        if self == Launch::default() {
            return 0;
        }
        // Each line adds at most one launch, and a read has < 2^32 lines.
        LAUNCHES.intern(&self, |launch| *launch, u32::MAX as usize - 1).expect("fewer launch shapes than lines") + 1
    }

    pub(super) fn by_id(id: u32) -> Launch {
        match id {
            0 => Launch::default(),
            id => *LAUNCHES.get(id - 1),
        }
    }
}

/// An error name (`CUDA_ERROR_OUT_OF_MEMORY`, `cudaErrorMemoryAllocation`),
/// interned in two bytes: CUDA has about a hundred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorName(NonZeroU16);

impl ErrorName {
    /// `None` once 65 535 distinct error names were seen (no CUDA trace has
    /// that many: such a line is skipped and counted).
    pub fn new(text: &str) -> Option<Self> {
        // Error names share the name table's storage.
        // Cut as `name` cuts, so a long name finds its own entry again.
        let id = ERRORS.intern(&*cut(text), name, usize::from(u16::MAX - 1))?;
        NonZeroU16::new(u16::try_from(id + 1).ok()?).map(ErrorName)
    }

    pub fn as_str(self) -> &'static str {
        ERRORS.get(u32::from(self.0.get()) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_name_is_kept_cut() {
        let kept = name(&"k".repeat(MAX_NAME_BYTES * 3));
        assert!(
            kept.len() < MAX_NAME_BYTES + 64 && kept.ends_with(&format!("[truncated: {} bytes]", MAX_NAME_BYTES * 3))
        );
    }

    #[test]
    fn equal_values_get_one_id() {
        let a = name(&String::from("gemm<float>"));
        let b = name("gemm<float>");
        assert!(std::ptr::eq(a, b), "one allocation per name");
        let launch = Launch { kernel: Some(a), grid: Some([1, 2, 3]), block: None, caller: None };
        assert_eq!(launch.id(), Launch { kernel: Some(b), ..launch }.id());
        assert_ne!(launch.id(), Launch { grid: Some([1, 2, 4]), ..launch }.id());
        assert_ne!(launch.id(), Launch { caller: Some(name("libcublas.so.12")), ..launch }.id());
        assert_eq!(Launch::by_id(launch.id()), launch);
        assert_eq!((Launch::default().id(), Launch::by_id(0)), (0, Launch::default()));
        let oom = ErrorName::new("CUDA_ERROR_OUT_OF_MEMORY").unwrap();
        assert_eq!(oom, ErrorName::new("CUDA_ERROR_OUT_OF_MEMORY").unwrap());
        assert_eq!(oom.as_str(), "CUDA_ERROR_OUT_OF_MEMORY");
    }
}
