//! `cuda-tracer prompt`: OpenAI-compatible client for `deploy.sh test`: one
//! prompt, then a batch sent sequentially and in parallel; results as JSON.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct PromptArgs {
    /// Base URL of the OpenAI-compatible server.
    #[arg(long, env = "VLLM_URL", default_value = "http://127.0.0.1:30800")]
    pub url: String,
    /// Directory for the result JSON files.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt is not implemented yet")]
    Unimplemented,
}

/// Sends the prompts and writes the results.
pub async fn run(args: &PromptArgs) -> Result<(), PromptError> {
    let _ = args;
    Err(PromptError::Unimplemented)
}
