//! Starts the command of `cuda-tracer record` so that it is traced from its
//! first instruction.

use crate::daemon::probes::loader::{LoadError, Probes};

/// Why the command could not be started traced.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start `{command}`: {source}")]
    Start { command: String, source: std::io::Error },
    #[error(transparent)]
    Probes(#[from] LoadError),
}

/// Spawns `argv`. With fork following, the tracer puts itself in the traced
/// set for the instant of the spawn: the kernel's fork hook then adds the
/// child before it runs, and the tracer takes itself out again. Without
/// fork following the child is added right after the spawn.
pub fn spawn_traced(probes: &mut Probes, argv: &[String]) -> Result<tokio::process::Child, SpawnError> {
    let (program, args) = argv.split_first().ok_or_else(|| SpawnError::Start {
        command: String::new(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given after `--`"),
    })?;
    let me = std::process::id();
    if probes.follows_forks {
        probes.trace_pid(me)?;
    }
    let spawned = tokio::process::Command::new(program).args(args).spawn();
    if probes.follows_forks {
        probes.untrace_pid(me)?;
    }
    let child = spawned.map_err(|source| SpawnError::Start { command: argv.join(" "), source })?;
    if let Some(pid) = child.id() {
        if !probes.follows_forks {
            probes.trace_pid(pid)?;
        }
    }
    Ok(child)
}
