//! The mesh benchmark (placeholder until the scenario lands).
use anyhow::Result;

use crate::args::Args;

pub fn run(_a: &Args) -> Result<()> {
    anyhow::bail!("not yet")
}
