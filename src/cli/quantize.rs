//! `rkinfer quantize IN.gguf OUT.gguf TYPE [NTHREADS]`: llama-quantize.

use std::path::PathBuf;

use crate::quantize::{quantize_model, FileType, QuantizeError, QuantizeOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model to quantize.
    pub input: PathBuf,
    /// Where to write the quantized model (through a unique temporary file
    /// beside it, renamed when complete).
    pub output: PathBuf,
    /// Target type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S/M/L, Q4_K_S/M,
    /// Q5_K_S/M, Q6_K, F16, BF16, F32 (Q3_K, Q4_K, Q5_K mean the _M mixes),
    /// or the llama_ftype number.
    #[arg(value_name = "TYPE")]
    pub file_type: String,
    /// Threads, as llama-quantize's optional last argument.
    #[arg(value_name = "NTHREADS")]
    pub nthreads: Option<usize>,
    /// Allow requantizing tensors that are already quantized.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Type for token_embd.weight, overriding the mixture's choice.
    #[arg(long, value_name = "GGML_TYPE")]
    pub token_embedding_type: Option<String>,
    /// Type for output.weight, overriding the mixture's choice.
    #[arg(long, value_name = "GGML_TYPE")]
    pub output_tensor_type: Option<String>,
    /// No per-tensor progress lines.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Parses a file type name or llama_ftype number.
pub fn parse_file_type(s: &str) -> Result<FileType, QuantizeError> {
    let by_id = s
        .parse::<u32>()
        .ok()
        .and_then(|id| FileType::ALL.iter().copied().find(|t| t.id() == id));
    by_id
        .or_else(|| FileType::from_name(s))
        .ok_or_else(|| QuantizeError::UnknownFileType {
            name: s.to_string(),
            valid: FileType::valid_names(),
        })
}

fn parse_ggml_type(s: &str) -> crate::Result<gguf::GgmlType> {
    gguf::GgmlType::from_name(s)
        .filter(|t| quant::is_supported(*t))
        .ok_or_else(|| {
            let names: Vec<&str> = quant::TYPE_TABLE.iter().map(|t| t.ty.name()).collect();
            crate::Error::InvalidArgument(format!(
                "unknown tensor type {s:?}; valid types: {}",
                names.join(", ")
            ))
        })
}

pub fn run(args: Args) -> crate::Result<()> {
    let mut opts = QuantizeOptions::new(parse_file_type(&args.file_type)?);
    opts.allow_requantize = args.allow_requantize;
    opts.force = args.force;
    opts.n_threads = args.threads.or(args.nthreads).unwrap_or(0);
    opts.progress = !args.quiet;
    opts.token_embedding_type = args
        .token_embedding_type
        .as_deref()
        .map(parse_ggml_type)
        .transpose()?;
    opts.output_tensor_type = args
        .output_tensor_type
        .as_deref()
        .map(parse_ggml_type)
        .transpose()?;
    // Ctrl-C or SIGTERM stop between tensors and remove the temporary file.
    crate::output_file::stop_on_interrupt()?;
    quantize_model(&args.input, &args.output, &opts).map_err(|e| match e {
        // The library says what is wrong; the flag that changes it is ours.
        crate::Error::Quantize(QuantizeError::OutputExists { .. }) => {
            crate::Error::InvalidArgument(format!("{e} (use --force to overwrite)"))
        }
        crate::Error::Quantize(QuantizeError::RequantizeNotAllowed { .. }) => {
            crate::Error::InvalidArgument(format!("{e}: pass --allow-requantize to do it anyway"))
        }
        other => other,
    })?;
    Ok(())
}
