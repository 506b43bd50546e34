//! The tracer daemon (`run`) and its one-command form (`record`): probes in
//! the kernel, ring-buffer ingest, the outputs that keep what it saw, and
//! [`run()`], the one owner of a session and every task around it.

pub mod config;
pub mod fd_limit;
pub mod ingest;
pub mod outcome;
pub mod output;
pub mod privileges;
pub mod probes;
mod run;
mod session;
pub mod supervise;
pub mod target_files;
mod tasks;

pub use config::{DaemonConfig, SessionConfig, Target, UploadConfig};
pub use outcome::Outcome;
pub use run::run;
pub use session::SessionError;
