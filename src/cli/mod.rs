//! The `rkinfer` command line: one module per subcommand, each with its
//! clap `Args` and a `run` function. Flags follow llama.cpp's.

use clap::{Parser, Subcommand};

pub mod info;

/// rkinfer: GGUF inference on the RK3588 NPU and the CPU.
#[derive(Parser, Debug)]
#[command(name = "rkinfer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Summarise a GGUF model: architecture, sizes, tokenizer, tensor types.
    Info(info::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Info(args) => info::run(args),
    }
}
