//! The ring-buffer reader task: waits on the map's fd with tokio `AsyncFd`,
//! drains records through the pipeline, rotates files on a timer, and on
//! stop drains what is left before closing the last file and hands the
//! session its final statistics.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, watch},
    time::{interval_at, Instant, MissedTickBehavior},
};
use tracer_common::abi::ProcEvent;

use crate::{
    daemon::ingest::pipeline::Pipeline, daemon::output::sink::ClosedFile, daemon::output::stats::Stats,
    format::counts::Counts,
};

/// What the reader tells the session.
#[derive(Debug)]
pub enum ReaderMsg {
    Proc(ProcEvent),
    /// A trace file closed; the counters as of its last line.
    Closed {
        file: ClosedFile,
        counts: Counts,
    },
    /// The reader stopped as asked: everything it counted.
    Finished(Box<Stats>),
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
    for file in pipeline.rotate() {
        let _ = tx.send(ReaderMsg::Closed { file, counts: pipeline.stats.counts });
    }
}

/// Runs until `stop` flips to true; then sends [`ReaderMsg::Finished`].
pub async fn run(
    ring: RingBuf<MapData>,
    mut pipeline: Pipeline,
    rotate_every: Duration,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<ReaderMsg>,
) -> std::io::Result<()> {
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
    let _ = tx.send(ReaderMsg::Finished(Box::new(pipeline.stats)));
    Ok(())
}
