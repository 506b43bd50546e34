//! The per-session step window (`PROFILE_STEPS`, the seed webhook's calls
//! 100-150): keeps hard links to the session's trace files from the moment
//! each is opened, so an upload deleting a closed file does not lose the
//! window's calls, and once the window's steps have passed writes their
//! Chrome/Perfetto export into the session dir, where delivery uploads it.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{
    analysis::{
        export::{self, chrome::Source, window, ExportError, Selection},
        report::steps,
        trace,
    },
    format::{metadata::Metadata, names, safe_fs},
};

/// Staged bytes beyond which the window is given up: a workload that never
/// reaches the window's end must not keep every trace file on disk.
pub const MAX_STAGED_BYTES: u64 = 2 << 30;

/// The window, as `PROFILE_STEPS` gives it.
#[derive(Clone, Debug)]
pub struct StepWindowConfig {
    /// `START..END` (END excluded), `START..=END`, `START..`: step indices.
    pub steps: String,
}

impl StepWindowConfig {
    /// Checks the range; `None` for an empty one (the window is off).
    pub fn parse(text: &str) -> Result<Option<Self>, window::WindowError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        window::parse_range("PROFILE_STEPS", text, true)?;
        Ok(Some(Self { steps: text.to_string() }))
    }

    /// Whether a step with this index shows the window has passed.
    fn passed_by(&self, index: u64) -> bool {
        let Ok(range) = window::parse_range("PROFILE_STEPS", &self.steps, true) else { return false };
        range.end.is_some_and(|end| if range.end_included { index as f64 > end } else { index as f64 >= end })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepWindowError {
    #[error("staging {path} for the step window: {source}")]
    Stage { path: PathBuf, source: std::io::Error },
    #[error("reading the step window's trace files: {0}")]
    Read(#[from] trace::ReadError),
    #[error("writing the step window's export: {0}")]
    Export(#[from] ExportError),
    #[error("publishing {path}: {source}")]
    Publish { path: PathBuf, source: std::io::Error },
}

#[derive(Default)]
struct State {
    /// Trace file names linked into the staging dir.
    staged: BTreeSet<String>,
    /// Closed staged files whose steps are counted.
    counted: BTreeSet<String>,
    /// Steps per process, counted file by file: each file is read once, and
    /// a step cut by a rotation is missed, so this never runs ahead of the
    /// whole trace's count.
    steps: HashMap<u32, u64>,
    /// The export is written, or the window was given up.
    done: bool,
}

/// The window of one session.
pub struct StepWindow {
    cfg: StepWindowConfig,
    session_dir: PathBuf,
    staging: PathBuf,
    state: Mutex<State>,
}

impl StepWindow {
    pub fn new(cfg: StepWindowConfig, session_dir: &Path) -> Self {
        let staging = session_dir.join(names::STEP_STAGING_DIR);
        Self { cfg, session_dir: session_dir.to_path_buf(), staging, state: Mutex::default() }
    }

    /// Removes the staging dirs that earlier runs left in `trace_dir`'s
    /// other sessions (a daemon killed before its window passed).
    pub fn clean_stale(trace_dir: &Path, live_session: &Path) {
        let Ok(entries) = std::fs::read_dir(trace_dir) else { return };
        for session in entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p != live_session) {
            let staging = session.join(names::STEP_STAGING_DIR);
            if safe_fs::is_real_dir(&session) && safe_fs::is_real_dir(&staging) {
                // remove_dir_all does not follow symlinks inside.
                if let Err(e) = std::fs::remove_dir_all(&staging) {
                    tracing::warn!(dir = %staging.display(), error = %e, "cannot remove an old step window's staging dir");
                }
            }
        }
    }

    /// One look: links new trace files, and writes the export once a step
    /// past the window exists (or, with `last`, whatever of the window the
    /// session has). Blocking: run it off the event loop.
    pub fn pass(&self, last: bool) -> Result<(), StepWindowError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.done {
            return Ok(());
        }
        let listing = safe_fs::regular_files(&self.session_dir);
        self.stage(&listing, &mut state)?;
        if self.staged_bytes(&state) > MAX_STAGED_BYTES {
            tracing::warn!(steps = %self.cfg.steps, max_bytes = MAX_STAGED_BYTES, "PROFILE_STEPS window not passed within the staging cap: no step export for this session");
            return self.finish(&mut state);
        }
        let closed: Vec<String> =
            state.staged.iter().filter(|name| last || !listing.contains(&names::partial(name))).cloned().collect();
        let passed = self.count_steps(&closed, &mut state)?;
        if closed.is_empty() || (!passed && !last) {
            return Ok(());
        }
        let files: Vec<PathBuf> = closed.iter().map(|name| self.staging.join(names::staged(name))).collect();
        let loaded = trace::read(&files)?;
        match self.export(&loaded, &files) {
            Ok(()) => {}
            // A session whose steps never reached the window: nothing to export.
            Err(StepWindowError::Export(e @ (ExportError::Window(_) | ExportError::NoCalls { .. }))) => {
                tracing::info!(steps = %self.cfg.steps, reason = %e, "no step export for this session");
            }
            Err(e) => return Err(e),
        }
        self.finish(&mut state)
    }

    /// Hard-links every trace file not yet staged, open (`.partial`: the
    /// link keeps the inode the writer goes on appending to) or closed.
    fn stage(&self, listing: &[String], state: &mut State) -> Result<(), StepWindowError> {
        let err = |path: &Path, source| StepWindowError::Stage { path: path.to_path_buf(), source };
        for name in listing {
            let trace = names::closed_name(name).unwrap_or(name);
            if !names::is_trace_file(trace) || state.staged.contains(trace) {
                continue;
            }
            if !safe_fs::is_real_dir(&self.staging) {
                std::fs::create_dir(&self.staging).map_err(|e| err(&self.staging, e))?;
            }
            let link = self.staging.join(names::staged(trace));
            match std::fs::hard_link(self.session_dir.join(name), &link) {
                // Renamed (closed) since the listing: the next pass links the closed name.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(&link, e)),
                Ok(()) => {}
            }
            // linkat does not follow a symlink swapped in after the listing; never keep one.
            if !safe_fs::is_regular_entry(&link) {
                safe_fs::unlink_entry(&link).map_err(|e| err(&link, e))?;
                continue;
            }
            state.staged.insert(trace.to_string());
        }
        Ok(())
    }

    /// Counts the steps of the closed files not counted yet; true once a
    /// step past the window is seen.
    fn count_steps(&self, closed: &[String], state: &mut State) -> Result<bool, StepWindowError> {
        for name in closed {
            if state.counted.contains(name) {
                continue;
            }
            let loaded = trace::read(&[self.staging.join(names::staged(name))])?;
            for step in steps::segment(&loaded.calls) {
                *state.steps.entry(step.pid).or_default() += 1;
            }
            state.counted.insert(name.clone());
        }
        Ok(state.steps.values().any(|&n| n > 0 && self.cfg.passed_by(n - 1)))
    }

    fn staged_bytes(&self, state: &State) -> u64 {
        let size =
            |name: &String| std::fs::symlink_metadata(self.staging.join(names::staged(name))).map_or(0, |m| m.len());
        state.staged.iter().map(size).sum()
    }

    /// Writes the export under its `.partial` name, then renames it, so
    /// delivery never uploads half of it.
    fn export(&self, loaded: &trace::Loaded, files: &[PathBuf]) -> Result<(), StepWindowError> {
        let dest = self.session_dir.join(names::STEP_WINDOW_EXPORT);
        let tmp = self.session_dir.join(names::partial(names::STEP_WINDOW_EXPORT));
        let publish = |source| StepWindowError::Publish { path: dest.clone(), source };
        safe_fs::unlink_entry(&tmp).map_err(publish)?;
        let sources: Vec<Source> = files
            .iter()
            .map(|path| Source { path: path.clone(), shift_ms: 0.0, keep_ms: (f64::NEG_INFINITY, f64::INFINITY) })
            .collect();
        let names: HashMap<u32, String> = Metadata::read(&self.session_dir)
            .map(|m| m.processes.into_iter().map(|p| (p.pid, p.comm)).collect())
            .unwrap_or_default();
        let create = || safe_fs::create_new(&tmp).map_err(safe_fs::SafeFsError::into_io);
        let window = Selection { steps: Some(&self.cfg.steps), time: None };
        let summary = export::write_chrome(loaded, &sources, &names, window, (&tmp, &create))?;
        std::fs::rename(&tmp, &dest).map_err(publish)?;
        tracing::info!(file = %dest.display(), steps = %self.cfg.steps, calls = summary.written.calls, "wrote the PROFILE_STEPS Chrome/Perfetto trace");
        Ok(())
    }

    /// Drops the staging links: the window is done with them.
    fn finish(&self, state: &mut State) -> Result<(), StepWindowError> {
        state.done = true;
        state.staged.clear();
        if safe_fs::is_real_dir(&self.staging) {
            std::fs::remove_dir_all(&self.staging)
                .map_err(|source| StepWindowError::Stage { path: self.staging.clone(), source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_window_is_off_and_a_bad_one_is_named() {
        assert!(StepWindowConfig::parse(" ").unwrap().is_none());
        let e = StepWindowConfig::parse("100-150").unwrap_err().to_string();
        assert!(e.contains("PROFILE_STEPS") && e.contains("100..150"), "{e}");
        let w = StepWindowConfig::parse("100..150").unwrap().unwrap();
        assert!(!w.passed_by(149) && w.passed_by(150));
        let w = StepWindowConfig::parse("100..=150").unwrap().unwrap();
        assert!(!w.passed_by(150) && w.passed_by(151));
        assert!(!StepWindowConfig::parse("100..").unwrap().unwrap().passed_by(u64::MAX >> 12));
    }

    #[test]
    fn open_and_closed_trace_files_are_staged_once_and_survive_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s1");
        std::fs::create_dir_all(&session).unwrap();
        let (one, two) = (names::trace_file(1, "a"), names::trace_file(2, "b"));
        std::fs::write(session.join(&one), b"not a call\n").unwrap();
        std::fs::write(session.join(names::partial(&two)), b"").unwrap();
        std::fs::write(session.join("metadata.json"), b"{}").unwrap();
        let w = StepWindow::new(StepWindowConfig::parse("0..1").unwrap().unwrap(), &session);
        let mut state = State::default();
        w.stage(&safe_fs::regular_files(&session), &mut state).unwrap();
        assert_eq!(state.staged, BTreeSet::from([one.clone(), two.clone()]));
        // Uploaded and deleted: the staged link keeps the bytes.
        std::fs::remove_file(session.join(&one)).unwrap();
        assert_eq!(std::fs::read(w.staging.join(names::staged(&one))).unwrap(), b"not a call\n");
        w.finish(&mut state).unwrap();
        assert!(!w.staging.exists() && state.done);
    }
}
