//! Keeps the session's `metadata.json` current: at start, at each closed
//! file, and once more when the session ends.

use std::time::SystemTime;

use super::Session;
use crate::{
    clock,
    daemon::config::Target,
    daemon::output::stats::Stats,
    format::{
        counts::{Counts, Drops},
        metadata::{hostname, Kubernetes, Metadata, MetadataError},
        metadata_store::{self, EndMark},
    },
};

impl Session {
    /// What the kernel side counted, with the processes userspace could
    /// not add to the traced-pid map either.
    pub(super) fn drops(&self) -> Drops {
        let mut drops = self.probes.drops().unwrap_or_default();
        drops.traced_map_full += self.untraceable.len() as u64;
        drops
    }

    /// Rewrites metadata.json; failures are logged, never fatal mid-session.
    /// Returns the kernel's drop counts it wrote.
    pub(in crate::daemon) fn write_metadata(&self) -> Drops {
        let (drops, written) = self.try_write_metadata();
        if let Err(e) = written {
            tracing::error!(error = %e, "metadata not written");
        }
        drops
    }

    /// Rewrites metadata.json; returns the kernel's drop counts it holds.
    fn try_write_metadata(&self) -> (Drops, Result<(), MetadataError>) {
        let drops = self.drops();
        let (mode, command, pattern) = match &self.cfg.target {
            Target::Command(argv) if self.cfg.redact_cmdlines => {
                ("record", Some(crate::secrets::redact_argv(argv)), None)
            }
            Target::Command(argv) => ("record", Some(argv.clone()), None),
            Target::Daemon { pattern, .. } => ("daemon", None, pattern.as_ref().map(|r| r.as_str().to_string())),
        };
        let running = self.status == "running";
        let meta = Metadata {
            session_id: self.cfg.session_id.clone(),
            tracer_version: env!("CARGO_PKG_VERSION").into(),
            hostname: hostname(),
            kubernetes: Kubernetes::from_env(),
            status: self.status.into(),
            mode: mode.into(),
            command,
            cmdlines_redacted: self.cfg.redact_cmdlines,
            target_pattern: pattern,
            start_wall_clock: clock::rfc3339(self.clock.start_wall),
            start_unix_ns: self
                .clock
                .start_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            start_boot_ns: Some(self.clock.start_boot_ns),
            boot_id: clock::boot_id(),
            start_wall_max_error_us: self.clock.wall_max_error_us,
            ts_unit: "milliseconds since start_boot_ns (CLOCK_BOOTTIME); one line per completed call, stamped at entry"
                .into(),
            end_wall_clock: (!running).then(|| clock::rfc3339(SystemTime::now())),
            function_groups: self.cfg.selection.groups().map(Into::into).collect(),
            follows_forks: self.probes.follows_forks,
            ringbuf_bytes: self.cfg.ringbuf_bytes,
            processes: self.past_processes.iter().chain(self.processes.values()).cloned().collect(),
            libraries: self.attacher.libraries(),
            late_libraries: self.late_libraries.clone(),
            missed_libraries: self.missed_libraries.clone(),
            library_holds: self.load_watch.as_ref().map(|w| w.holds().to_vec()).unwrap_or_default(),
            deleted_for_disk_budget: self.deleted_for_budget.lock().map(|d| d.clone()).unwrap_or_default(),
            files: self.files.clone(),
            counts: self.counts,
            drops,
            dropped_by_function: self
                .probes
                .drops_by_function()
                .unwrap_or_default()
                .into_iter()
                .map(|(name, n)| (name.into(), n))
                .collect(),
            dropped_events: self.counts.dropped(&drops),
            summary: self.stats.as_ref().map(|s| s.rows()).unwrap_or_default(),
            kv_cache: self.kv.as_ref().map(|k| k.status()),
        };
        (drops, meta.write(&self.cfg.dir))
    }

    /// Ends the session: `finished`, or `failed` when a task it could not do
    /// without failed. Writes metadata.json a last time and returns what the
    /// summary reports, from the same numbers.
    pub(in crate::daemon) fn finish(&mut self, failed: bool) -> (Stats, Counts, Drops) {
        self.status = if failed { "failed" } else { "finished" };
        let (drops, written) = self.try_write_metadata();
        if let Err(e) = written {
            // Its counts stay those of the last write; its status must not stay `running`.
            let marked = metadata_store::mark_ended(self.end_guard.dir_fd(), EndMark::Failed);
            tracing::error!(error = %e, marked_failed = marked, "the final metadata.json could not be written");
        }
        let stats = self.stats.take().map(|s| *s).unwrap_or_default();
        (stats, self.counts, drops)
    }
}
