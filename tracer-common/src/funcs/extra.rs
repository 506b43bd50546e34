//! Ids for exported functions without a row in [`super::FUNCS`]: traced
//! name-only (`--functions exported`) and read back from traces that name
//! them. One bounded, append-only registry per process, shared by the
//! daemon (which gives each probed name an id for its BPF cookie) and the
//! readers (which map names in a trace to ids).

use std::{boxed::Box, collections::HashMap, string::String, sync::Mutex, sync::OnceLock};

use super::{FuncSpec, Group, Layer, Role, FUNCS};

/// Most names the registry holds; a name past that gets [`overflow`]'s id.
/// A real libcuda exports about 600 functions, libcudart 12 about 440,
/// libcudart 13 about 460: every CUDA library a session meets fits many
/// times over, and a hostile trace file cannot grow the registry further.
pub const EXTRA_MAX: usize = 16_384;

/// Longest name kept (the longest CUDA export is under 64 bytes).
pub const NAME_MAX: usize = 256;

/// The name that stands for every name past [`EXTRA_MAX`].
pub const OVERFLOW_NAME: &str = "(other exported functions)";

// Ids must stay below the cookie's 16 bits and the readers' hole marker.
const _: () = assert!(FUNCS.len() + EXTRA_MAX < u16::MAX as usize);

static SPECS: [OnceLock<&'static FuncSpec>; EXTRA_MAX] = [const { OnceLock::new() }; EXTRA_MAX];
static IDS: Mutex<Option<HashMap<String, u16>>> = Mutex::new(None);

/// The spec of a name-only function: no arguments, [`Role::Other`],
/// [`Group::Exported`].
const fn name_only(name: &'static str, layer: Layer) -> FuncSpec {
    // Built from the rows' constructor, so a new field gets its default here too.
    FuncSpec { group: Group::Exported, ..super::f(name, layer, Role::Other, 0, &[]) }
}

/// The key under which drops of all name-only functions are counted
/// (they share one per-function drop slot, `drop_slot::FUNC_OTHER`).
pub const DROPS_NAME: &str = "(name-only functions)";

/// What a reader shows for an id nobody registered (never written).
pub const UNKNOWN: FuncSpec = name_only("(unknown)", Layer::Driver);

/// The id of `name` (of `layer`, used when the name is new): its
/// [`FUNCS`] row's, else the registry's, registering it. `None` for a name
/// no function can have (empty, longer than [`NAME_MAX`], a NUL in it).
/// Past [`EXTRA_MAX`] names, every new name gets the id of
/// [`OVERFLOW_NAME`] (its calls still count, under that name).
pub fn intern(name: &str, layer: Layer) -> Option<u16> {
    if let Some((id, _)) = super::by_name(name) {
        return Some(id);
    }
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return None;
    }
    // A poisoned lock only means another thread panicked mid-insert; the
    // map is still consistent (insert is the last step).
    let mut guard = IDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ids = guard.get_or_insert_with(HashMap::new);
    if let Some(&id) = ids.get(name) {
        return Some(id);
    }
    let (slot, shown) = match ids.len() {
        n if n + 1 < EXTRA_MAX => (n, name),
        _ => match ids.get(OVERFLOW_NAME) {
            Some(&id) => return Some(id),
            None => (EXTRA_MAX - 1, OVERFLOW_NAME),
        },
    };
    let id = (FUNCS.len() + slot) as u16;
    let leaked: &'static str = Box::leak(Box::from(shown));
    let spec: &'static FuncSpec = Box::leak(Box::new(name_only(leaked, layer)));
    // Set once: the slot index is the map's size, which only grows.
    let _ = SPECS[slot].set(spec);
    ids.insert(String::from(shown), id);
    Some(id)
}

/// The spec of a registered id beyond [`FUNCS`] (`None` if none has it).
pub fn by_id(id: u32) -> Option<&'static FuncSpec> {
    let slot = (id as usize).checked_sub(FUNCS.len())?;
    SPECS.get(slot)?.get().copied()
}

/// The id of a registered name beyond [`FUNCS`], without registering it.
pub fn lookup(name: &str) -> Option<u16> {
    let guard = IDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.as_ref()?.get(name).copied()
}

/// Whether `id` is a registry id (not a [`FUNCS`] row).
pub fn is_extra(id: u32) -> bool {
    id as usize >= FUNCS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_stable_ids_past_the_table() {
        let a = intern("cudaGetDeviceCount_test_extra", Layer::Runtime).unwrap();
        assert!(usize::from(a) >= FUNCS.len());
        assert_eq!(intern("cudaGetDeviceCount_test_extra", Layer::Driver), Some(a));
        let spec = by_id(u32::from(a)).unwrap();
        assert_eq!(
            (spec.name, spec.layer, spec.group),
            ("cudaGetDeviceCount_test_extra", Layer::Runtime, Group::Exported)
        );
        assert_eq!(lookup("cudaGetDeviceCount_test_extra"), Some(a));
        // A table name keeps its row's id.
        assert_eq!(intern(FUNCS[0].name, Layer::Runtime), Some(0));
        assert_eq!(intern("", Layer::Driver), None);
        assert_eq!(intern(&"x".repeat(NAME_MAX + 1), Layer::Driver), None);
        assert!(by_id((FUNCS.len() + EXTRA_MAX) as u32).is_none());
    }
}
