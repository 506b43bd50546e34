//! One record's way through userspace: decode (checked), count, write.

use tracer_common::{
    abi::ProcEvent,
    decode::{decode, Event},
};

use crate::{daemon::ingest::annotate::Annotator, daemon::output::sink::Sink, daemon::output::stats::Stats};

/// Decoder + annotator + statistics + sink, owned by the reader task.
pub struct Pipeline {
    sink: Box<dyn Sink>,
    annotator: Annotator,
    metrics: Option<std::sync::Arc<crate::daemon::output::metrics::Metrics>>,
    /// Set while the disk budget pauses writing.
    paused: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    pub stats: Stats,
}

impl Pipeline {
    pub fn new(sink: Box<dyn Sink>, metrics: Option<std::sync::Arc<crate::daemon::output::metrics::Metrics>>) -> Self {
        Self { sink, annotator: Annotator::default(), metrics, paused: None, stats: Stats::default() }
    }

    /// Writes pause while `paused` is set; skipped calls are counted.
    pub fn with_pause(mut self, paused: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.paused = Some(paused);
        self
    }

    fn write(&mut self, ev: &tracer_common::abi::CallEvent, name: Option<&[u8]>) {
        self.stats.observe(ev);
        if let Some(m) = &self.metrics {
            m.call(ev.func_id);
        }
        let ann = self.annotator.observe(ev, name);
        if self.paused.as_ref().is_some_and(|p| p.load(std::sync::atomic::Ordering::Relaxed)) {
            self.stats.counts.dropped_disk_budget += 1;
            return;
        }
        if let Err(e) = self.sink.write_call(ev, name, &ann) {
            let before = self.stats.counts.write_errors;
            self.count_lost();
            // One line each time the total passes a power of two: no flood on a full disk.
            if before.checked_ilog2() != self.stats.counts.write_errors.checked_ilog2() {
                tracing::error!(error = %e, lost_lines = self.stats.counts.write_errors, "trace lines not written");
            }
        }
    }

    /// Takes the sink's count of lines lost to write errors (one error can
    /// lose a buffer of lines), into the counts and `/metrics`.
    fn count_lost(&mut self) {
        self.stats.counts.write_errors = self.sink.lines_lost();
        if let Some(m) = &self.metrics {
            m.set_write_errors(self.stats.counts.write_errors);
        }
    }

    /// Handles one ring-buffer record; process events are handed back to
    /// the caller, which owns the process table.
    pub fn handle(&mut self, bytes: &[u8]) -> Option<ProcEvent> {
        match decode(bytes) {
            Ok(Event::Call(ev)) => {
                self.write(&ev, None);
                None
            }
            Ok(Event::CallName(ev, name)) => {
                self.write(&ev, Some(name.as_bytes()));
                None
            }
            Ok(Event::Proc(p)) => {
                match p.op {
                    tracer_common::abi::proc_op::EXIT => self.annotator.forget(p.pid),
                    tracer_common::abi::proc_op::FORK => self.annotator.fork(p.pid, p.ppid),
                    _ => {}
                }
                Some(p)
            }
            Err(e) => {
                self.stats.counts.decode_errors += 1;
                if self.stats.counts.decode_errors.is_power_of_two() {
                    tracing::error!(error = %e, total = self.stats.counts.decode_errors, "ring buffer record rejected");
                }
                None
            }
        }
    }

    /// Closes the open trace files (two with `--format both`).
    pub fn rotate(&mut self) -> Vec<crate::daemon::output::sink::ClosedFile> {
        let rotated = self.sink.rotate_all();
        self.count_lost();
        match rotated {
            Ok(closed) => closed,
            Err(e) => {
                tracing::error!(error = %e, "closing trace file failed; its lines stay in the .partial file");
                Vec::new()
            }
        }
    }
}
