//! Who made a call: the return address the entry probe read, mapped through
//! the calling process's own `/proc/PID/maps` to the file whose code holds
//! it (`libcublasLt.so.12`), the trace's `caller`. It uses the stub
//! resolver's per-process maps, epochs and work budgets ([`StubResolver`]),
//! and caches every answer (found or not, as the JSON string the line
//! writes) per process and address: one lookup per call.
//!
//! Never a guess: an address is named only from maps of the process that
//! made the call (a forked child is not named from its parent's), checked
//! still mapped while the process lives (an `exec` replaces every mapping).
//! A process that exited before its maps were read has no `caller`.

use std::{sync::Arc, time::Instant};

use super::{
    kernel_names::{read_maps, StubResolver},
    proc_maps::still_mapped,
};
use crate::format::line::JsonStr;

impl StubResolver {
    /// The name of the file whose code holds `addr` in process `pid`, as a
    /// JSON string; `None` when no file maps it, the process is gone
    /// unread, or its share of resolver work is spent.
    pub fn caller(&mut self, pid: u32, addr: u64) -> Option<JsonStr> {
        if addr == 0 {
            return None;
        }
        let now = Instant::now();
        let key = (pid, self.state(pid, now).epoch, addr);
        if let Some(hit) = self.callers.get(&key) {
            return hit.clone();
        }
        let Some(answer) = self.look_up_caller(pid, addr, now) else {
            // Not cached: a later call from there is answered once the budget allows.
            self.deferred += 1;
            return None;
        };
        let json = answer.map(|file| JsonStr::new(&file));
        self.callers.put(key, json.clone());
        json
    }

    /// The answer for an address not cached yet; `None` when the budgets
    /// allow no fresh read of the maps now.
    fn look_up_caller(&mut self, pid: u32, addr: u64, now: Instant) -> Option<Option<Arc<str>>> {
        let known = self.state(pid, now).maps.as_ref().and_then(|maps| maps.find(addr).cloned());
        if let Some(mapping) = &known {
            if still_mapped(pid, mapping) {
                return Some(Some(Arc::clone(&mapping.file)));
            }
        }
        // First need, mapped since the last read (a dlopen), or remapped.
        if !self.may_work(pid, now) {
            return None;
        }
        let maps = self.charged(pid, now, || read_maps(pid));
        if maps.mappings.is_empty() {
            // Gone: what it mapped while it ran is all there is to know.
            return Some(known.map(|mapping| mapping.file));
        }
        let found = maps.find(addr).map(|mapping| Arc::clone(&mapping.file));
        self.state(pid, now).maps = Some(Arc::new(maps));
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn return_address_here() -> u64 {
        // An address inside this test binary's code, as a return address would be.
        return_address_here as *const () as usize as u64 + 1
    }

    #[test]
    fn names_the_file_of_a_code_address_and_caches_misses() {
        let mut r = StubResolver::default();
        let pid = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let want = exe.file_name().unwrap().to_string_lossy().into_owned();
        let json = |name: &str| Some(JsonStr::new(name));
        assert_eq!(r.caller(pid, return_address_here()), json(&want));
        assert_eq!(r.caller(pid, 0), None, "an unread return address");
        assert_eq!(r.caller(pid, 16), None, "no file maps it");
        assert_eq!(r.callers.len(), 2, "both answers are kept");
        // Answered from the cache, still right.
        assert_eq!(r.caller(pid, return_address_here()), json(&want));
    }

    #[test]
    fn a_process_gone_before_its_maps_were_read_has_no_caller() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut r = StubResolver::default();
        assert_eq!(r.caller(pid, return_address_here()), None, "never named from another process's maps");
    }
}
