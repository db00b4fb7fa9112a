//! `rkinfer info MODEL.gguf`: a readable summary of a GGUF file.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
}

pub fn run(args: Args) -> crate::Result<()> {
    Err(crate::Error::InvalidArgument(format!(
        "{}: info is not built yet",
        args.model.display()
    )))
}
