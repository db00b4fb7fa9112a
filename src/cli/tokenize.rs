//! `rkinfer tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos]
//! [--parse-special]`: prints the token ids of a text like llama-tokenize.

use std::io::Write;
use std::path::PathBuf;

use crate::tokenizer::Tokenizer;
use crate::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model whose vocabulary to use.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub prompt: Option<String>,
    /// Read the text from this file (UTF-8, used as is).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Print only the ids, as a list: [1, 2, 3].
    #[arg(long)]
    pub ids: bool,
    /// Do not add BOS/EOS even if the model asks for them.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn control-token strings in the text (e.g. "<|im_start|>") into those tokens.
    #[arg(long)]
    pub parse_special: bool,
    /// Print the number of tokens at the end.
    #[arg(long)]
    pub show_count: bool,
}

/// Reads a text file, refusing invalid UTF-8 with the offending byte offset.
pub fn read_text_file(path: &std::path::Path) -> crate::Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: not valid UTF-8 (first bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

pub fn run(args: Args) -> crate::Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => read_text_file(f)?,
        _ => {
            return Err(Error::InvalidArgument(
                "give exactly one of -p TEXT or -f FILE".to_string(),
            ))
        }
    };
    let file = gguf::GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&text, !args.no_bos, args.parse_special)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io_err = |source| Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };
    if args.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", ")).map_err(io_err)?;
    } else {
        for &id in &ids {
            write!(out, "{id:6} -> '").map_err(io_err)?;
            out.write_all(tok.token_to_piece(id)).map_err(io_err)?;
            writeln!(out, "'").map_err(io_err)?;
        }
    }
    if args.show_count {
        writeln!(out, "Total number of tokens: {}", ids.len()).map_err(io_err)?;
    }
    out.flush().map_err(io_err)
}
