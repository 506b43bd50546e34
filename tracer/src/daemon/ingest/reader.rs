//! The ring-buffer reader task: waits on the map's fd with tokio `AsyncFd`,
//! drains records through the pipeline, rotates files on a timer, and on
//! stop drains what is left before closing the last file.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, watch},
    time::{interval_at, Instant, MissedTickBehavior},
};
use tracer_common::abi::ProcEvent;

use crate::{daemon::ingest::pipeline::Pipeline, daemon::output::sink::ClosedFile};

/// What the reader tells the session.
#[derive(Debug)]
pub enum ReaderMsg {
    Proc(ProcEvent),
    Closed { file: ClosedFile, calls: u64, decode_errors: u64, write_errors: u64, budget_dropped: u64 },
}

/// Records handled before yielding to other branches, so a flood of events
/// cannot starve rotation or shutdown.
const BATCH: usize = 16 * 1024;

/// Longest a record waits in the ring buffer before it is written.
const POLL_EVERY: Duration = Duration::from_millis(20);

fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline, tx: &mpsc::UnboundedSender<ReaderMsg>) -> bool {
    for _ in 0..BATCH {
        let Some(item) = ring.next() else { return true };
        if let Some(p) = pipeline.handle(&item) {
            let _ = tx.send(ReaderMsg::Proc(p));
        }
    }
    false
}

fn rotate(pipeline: &mut Pipeline, tx: &mpsc::UnboundedSender<ReaderMsg>) {
    if let Some(file) = pipeline.rotate() {
        let s = &pipeline.stats;
        let _ = tx.send(ReaderMsg::Closed {
            file,
            calls: s.calls(),
            decode_errors: s.decode_errors,
            write_errors: s.write_errors,
            budget_dropped: s.budget_dropped,
        });
    }
}

/// Runs until `stop` flips to true; returns the pipeline with its statistics.
pub async fn run(
    ring: RingBuf<MapData>,
    mut pipeline: Pipeline,
    rotate_every: Duration,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<ReaderMsg>,
) -> std::io::Result<Pipeline> {
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the
    // RingBuf, and as_raw_fd always returns that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
    let mut tick = interval_at(Instant::now() + rotate_every, rotate_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The probes wake us only when the ring is a quarter full; this timer
    // collects everything else within POLL_EVERY.
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                if drain(guard.get_inner_mut(), &mut pipeline, &tx) {
                    guard.clear_ready();
                }
            }
            _ = poll.tick() => {
                while !drain(fd.get_mut(), &mut pipeline, &tx) {}
            }
            _ = tick.tick() => {
                while !drain(fd.get_mut(), &mut pipeline, &tx) {}
                rotate(&mut pipeline, &tx);
            }
            _ = stop.changed() => break,
        }
    }
    while !drain(fd.get_mut(), &mut pipeline, &tx) {}
    rotate(&mut pipeline, &tx);
    Ok(pipeline)
}
