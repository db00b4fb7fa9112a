//! Tokenizers built from a GGUF vocabulary, behaving as llama.cpp's
//! `llama-vocab.cpp`: SentencePiece-style ("llama": Llama 2, Gemma),
//! GPT-2-style byte-level BPE ("gpt2": SmolLM2, Llama 3, Qwen2, ...),
//! Gemma 4's BPE over raw UTF-8 ("gemma4") and BERT's WordPiece ("bert").
//!
//! ```no_run
//! let f = rkinfer::gguf::GgufFile::open("model.gguf")?;
//! let tok = rkinfer::tokenizer::Tokenizer::from_gguf(&f)?;
//! let ids = tok.encode("Hello world", true, false)?;
//! let mut stream = rkinfer::tokenizer::StreamDecoder::new();
//! for &id in &ids {
//!     print!("{}", stream.push(&tok, id));
//! }
//! print!("{}", stream.finish());
//! # Ok::<(), rkinfer::Error>(())
//! ```
//!
//! Encoding first cuts the text at special-token strings (user-defined
//! tokens always, control tokens when `parse_special` is set), longest
//! token first, like llama.cpp's `tokenizer_st_partition`; the raw pieces
//! between them go through the model's algorithm.

mod bpe;
mod pretok;
mod spm;
mod unicode;
mod unicode_data;
mod wpm;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

pub use pretok::PreTokenizer;
#[doc(hidden)]
pub use unicode::byte_to_unicode as unicode_byte_table;

/// Token attributes, bit values as llama.cpp's `llama_token_attr`.
pub mod attr {
    /// No known type.
    pub const UNDEFINED: u16 = 0;
    /// The unknown-word token.
    pub const UNKNOWN: u16 = 1 << 0;
    /// A reserved, unused slot.
    pub const UNUSED: u16 = 1 << 1;
    /// An ordinary token.
    pub const NORMAL: u16 = 1 << 2;
    /// A control token (BOS, EOS, turn markers).
    pub const CONTROL: u16 = 1 << 3;
    /// A user-defined token: matched in text before anything else.
    pub const USER_DEFINED: u16 = 1 << 4;
    /// A byte-fallback token `<0xXX>`.
    pub const BYTE: u16 = 1 << 5;
}

/// A fast non-cryptographic hasher (the Fx algorithm of rustc) for the
/// vocabulary maps: their keys are model data, not attacker-chosen input,
/// and lookups dominate tokenization time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    /// The multiply leaves the low bits (the table index) depending only on
    /// low input bits; a final avalanche (murmur3's fmix64) spreads them.
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Why a vocabulary could not become a tokenizer, or a text could not be
/// encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names an algorithm this crate lacks.
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate lacks.
    UnknownPreTokenizer(String),
    /// A pre-tokenizer expression did not compile.
    BadPreTokenizer { expr: String, reason: String },
    /// The vocabulary is empty.
    EmptyVocabulary,
    /// A per-token array is shorter than the token list.
    ShortArray {
        key: String,
        len: usize,
        n_tokens: usize,
    },
    /// Two tokens have the same text.
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    /// A BPE model without `tokenizer.ggml.merges`.
    MissingMerges,
    /// add_bos/add_eos is set but the model has no such token.
    MissingSpecialToken {
        flag: &'static str,
        token: &'static str,
    },
    /// SentencePiece byte fallback needed a byte token the vocabulary lacks.
    MissingByteToken(u8),
    /// A token id beyond the vocabulary.
    InvalidToken { id: u32, n_vocab: usize },
    /// A `tokenizer.ggml.*` key is malformed (the file reader's message).
    Metadata(String),
}

impl From<gguf::GgufError> for TokenizerError {
    fn from(e: gguf::GgufError) -> Self {
        TokenizerError::Metadata(e.to_string())
    }
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::UnknownModel(m) => write!(
                f,
                "tokenizer.ggml.model {} is not supported (supported: 'llama' SentencePiece, 'gpt2' and 'gemma4' BPE, 'bert' WordPiece)",
                gguf::quote(m)
            ),
            TokenizerError::UnknownPreTokenizer(p) => {
                write!(f, "tokenizer.ggml.pre {} is not a known BPE pre-tokenizer", gguf::quote(p))
            }
            TokenizerError::BadPreTokenizer { expr, reason } => {
                write!(f, "pre-tokenizer expression {expr:?} is unusable: {reason}")
            }
            TokenizerError::EmptyVocabulary => write!(f, "tokenizer.ggml.tokens is empty"),
            TokenizerError::ShortArray { key, len, n_tokens } => {
                write!(f, "{key} has {len} entries but there are {n_tokens} tokens")
            }
            TokenizerError::DuplicateToken { text, first, second } => {
                write!(
                    f,
                    "duplicate token in vocabulary: {} has ids {first} and {second}",
                    gguf::quote(text)
                )
            }
            TokenizerError::MissingMerges => write!(f, "BPE vocabulary without tokenizer.ggml.merges"),
            TokenizerError::MissingSpecialToken { flag, token } => {
                write!(f, "{flag} is true, but the model has no {token} token")
            }
            TokenizerError::MissingByteToken(b) => {
                write!(f, "byte fallback needs token <0x{b:02X}>, which the vocabulary lacks")
            }
            TokenizerError::InvalidToken { id, n_vocab } => {
                write!(f, "token id {id} is outside the vocabulary (size {n_vocab})")
            }
            TokenizerError::Metadata(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TokenizerError {}

/// The tokenization algorithm of a vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece with byte fallback (`tokenizer.ggml.model` = "llama").
    Spm,
    /// BPE with merges (`tokenizer.ggml.model` = "gpt2", or "gemma4" whose
    /// merges run over raw UTF-8 with spaces as U+2581).
    Bpe,
    /// BERT's WordPiece (`tokenizer.ggml.model` = "bert").
    Wpm,
}

/// Everything a tokenizer is built from: the `tokenizer.ggml.*` metadata of
/// a GGUF file. Optional fields left `None` take llama.cpp's defaults.
#[derive(Clone, Debug, Default)]
pub struct VocabConfig {
    /// `tokenizer.ggml.model`: "llama", "gpt2", "gemma4" or "bert".
    pub model: String,
    /// `tokenizer.ggml.pre` (BPE only; None means "default").
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: each token's text, by id.
    pub tokens: Vec<String>,
    /// Empty: all scores 0.
    pub scores: Vec<f32>,
    /// llama.cpp token types (1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte); empty: all normal.
    pub token_types: Vec<i32>,
    /// BPE merges, "left right", highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id` (likewise the ids below).
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn (else found by its text, e.g. `<end_of_turn>`).
    pub eot: Option<u32>,
    /// End of message.
    pub eom: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Separator.
    pub sep: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece: prefix " ").
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.normalizer.lowercase` (WordPiece; default true).
    pub normalizer_lowercase: Option<bool>,
    /// `tokenizer.ggml.normalizer.strip_accents` (WordPiece; default: as
    /// lowercase).
    pub normalizer_strip_accents: Option<bool>,
}

impl VocabConfig {
    /// Reads the `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(f: &gguf::GgufFile) -> Result<VocabConfig, TokenizerError> {
        let opt_u32 = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match f.get(key) {
                Some(_) => Ok(Some(f.get_u32(key)?)),
                None => Ok(None),
            }
        };
        let opt_bool = |key: &str| -> Result<Option<bool>, TokenizerError> {
            match f.get(key) {
                Some(_) => Ok(Some(f.get_bool(key)?)),
                None => Ok(None),
            }
        };
        let scores_key = "tokenizer.ggml.scores";
        let scores = match f.get(scores_key) {
            None => Vec::new(),
            Some(gguf::Value::Array(gguf::Array::I32(v))) => v.iter().map(|&s| s as f32).collect(),
            Some(_) => f.get_f32_array(scores_key)?.to_vec(),
        };
        let types_key = "tokenizer.ggml.token_type";
        let token_types = match f.get(types_key) {
            None => Vec::new(),
            Some(_) => f.get_i32_array(types_key)?.to_vec(),
        };
        let merges_key = "tokenizer.ggml.merges";
        let merges = match f.get(merges_key) {
            None => Vec::new(),
            Some(_) => f.get_str_array(merges_key)?.to_vec(),
        };
        let pre = match f.get("tokenizer.ggml.pre") {
            None => None,
            Some(_) => Some(f.get_str("tokenizer.ggml.pre")?.to_string()),
        };
        let chat_template = match f.get("tokenizer.chat_template") {
            None => None,
            Some(_) => Some(f.get_str("tokenizer.chat_template")?.to_string()),
        };
        Ok(VocabConfig {
            model: f.get_str("tokenizer.ggml.model")?.to_string(),
            pre,
            tokens: f.get_str_array("tokenizer.ggml.tokens")?.to_vec(),
            scores,
            token_types,
            merges,
            bos: opt_u32("tokenizer.ggml.bos_token_id")?,
            eos: opt_u32("tokenizer.ggml.eos_token_id")?,
            eot: opt_u32("tokenizer.ggml.eot_token_id")?,
            eom: opt_u32("tokenizer.ggml.eom_token_id")?,
            unk: opt_u32("tokenizer.ggml.unknown_token_id")?,
            sep: opt_u32("tokenizer.ggml.seperator_token_id")?,
            pad: opt_u32("tokenizer.ggml.padding_token_id")?,
            add_bos: opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: opt_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: opt_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template,
            normalizer_lowercase: opt_bool("tokenizer.ggml.normalizer.lowercase")?,
            normalizer_strip_accents: opt_bool("tokenizer.ggml.normalizer.strip_accents")?,
        })
    }
}

/// BPE-only state: merge ranks and the pre-tokenizer.
struct BpeState {
    /// Interned merge sides: text -> id.
    sides: FxMap<Box<[u8]>, u32>,
    /// (left side id, right side id) -> rank.
    ranks: FxMap<(u32, u32), u32>,
    pre: PreTokenizer,
    ignore_merges: bool,
    /// Words go through GPT-2's byte table (else raw UTF-8, `<0xXX>`
    /// fallback).
    byte_encode: bool,
    /// Spaces become U+2581 before splitting.
    escape_whitespace: bool,
    /// A word of only newlines that is a token is taken whole (Gemma 4).
    whole_newline_words: bool,
}

/// WordPiece-only state.
struct WpmState {
    normalizer: wpm::Normalizer,
    /// The longest token text, in bytes: the longest match tried.
    max_token_len: usize,
}

/// A tokenizer for one model vocabulary. Send + Sync; cheap to share.
pub struct Tokenizer {
    kind: VocabKind,
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    token_to_id: FxMap<Box<[u8]>, u32>,
    bpe: Option<BpeState>,
    wpm: Option<WpmState>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    /// Separator (WordPiece appends it with add_special).
    sep: Option<u32>,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    /// Special tokens (control, user-defined, unknown), longest text first.
    specials: Vec<u32>,
    /// Byte trie over the special texts, for finding them in text.
    special_trie: Trie,
    /// Each token's text as output (llama.cpp's piece cache, special=true).
    pieces: Vec<Vec<u8>>,
    chat_template: Option<String>,
}

/// A byte trie mapping strings to an index.
#[derive(Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    value: Option<u32>,
}

impl Trie {
    fn insert(&mut self, key: &[u8], value: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut node = 0usize;
        for &b in key {
            let next = match self.nodes[node].children.iter().find(|c| c.0 == b) {
                Some(&(_, n)) => n as usize,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.push((b, n as u32));
                    n
                }
            };
            node = next;
        }
        self.nodes[node].value = Some(value);
    }

    /// Calls `found(value, len)` for every key that is a prefix of `text`.
    fn prefixes(&self, text: &[u8], mut found: impl FnMut(u32, usize)) {
        let mut node = 0usize;
        if self.nodes.is_empty() {
            return;
        }
        for (i, &b) in text.iter().enumerate() {
            match self.nodes[node].children.iter().find(|c| c.0 == b) {
                Some(&(_, n)) => node = n as usize,
                None => return,
            }
            if let Some(v) = self.nodes[node].value {
                found(v, i + 1);
            }
        }
    }
}

/// A piece of the input after special-token partitioning.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// End-of-generation texts that mark "</s>" as an ordinary token in the
/// same vocabulary (Gemma 4, PLaMo), unlike models whose "</s>" ends.
const NORMAL_END_S_MARKERS: &[&str] = &["<|tool_response>", "<|plamo:eos|>"];

impl Tokenizer {
    /// Builds the tokenizer of a GGUF model from its `tokenizer.ggml.*` keys.
    pub fn from_gguf(f: &gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::new(VocabConfig::from_gguf(f)?)
    }

    /// Builds a tokenizer from vocabulary data, with llama.cpp's defaults
    /// for what the data leaves out.
    pub fn new(cfg: VocabConfig) -> Result<Tokenizer, TokenizerError> {
        let n = cfg.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocabulary);
        }
        let kind = match cfg.model.as_str() {
            "llama" => VocabKind::Spm,
            "gpt2" | "gemma4" => VocabKind::Bpe,
            "bert" => VocabKind::Wpm,
            other => return Err(TokenizerError::UnknownModel(other.to_string())),
        };
        for (key, len) in [
            ("tokenizer.ggml.scores", cfg.scores.len()),
            ("tokenizer.ggml.token_type", cfg.token_types.len()),
        ] {
            if len != 0 && len < n {
                return Err(TokenizerError::ShortArray {
                    key: key.to_string(),
                    len,
                    n_tokens: n,
                });
            }
        }

        // Model-type defaults (llama.cpp's load()).
        let (mut bos, mut eos, mut unk): (Option<u32>, Option<u32>, Option<u32>);
        let (mut sep, mut pad) = (None, None);
        let (mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces);
        let mut force_bos = false;
        let mut bpe = None;
        let mut wpm = None;
        match kind {
            VocabKind::Spm => {
                (bos, eos, unk) = (Some(1), Some(2), Some(0));
                (add_bos, add_eos, add_space_prefix, clean_spaces) = (true, false, true, false);
            }
            VocabKind::Wpm => {
                (bos, eos, unk) = (Some(101), None, Some(100));
                (sep, pad) = (Some(102), Some(0));
                (add_bos, add_eos, add_space_prefix, clean_spaces) = (true, false, false, true);
                let lowercase = cfg.normalizer_lowercase.unwrap_or(true);
                wpm = Some(WpmState {
                    normalizer: wpm::Normalizer {
                        lowercase,
                        strip_accents: cfg.normalizer_strip_accents.unwrap_or(lowercase),
                    },
                    max_token_len: cfg.tokens.iter().map(String::len).max().unwrap_or(0),
                });
            }
            VocabKind::Bpe => {
                // Gemma 4's model implies its pre-tokenizer and has no
                // default special tokens.
                let gemma4 = cfg.model == "gemma4";
                (bos, eos, unk) = if gemma4 {
                    (None, None, None)
                } else {
                    (Some(11), Some(11), None)
                };
                let pre_name = if gemma4 {
                    "gemma4"
                } else {
                    cfg.pre.as_deref().unwrap_or("default")
                };
                let pre = pretok::config_for(pre_name)
                    .ok_or_else(|| TokenizerError::UnknownPreTokenizer(pre_name.to_string()))?;
                if cfg.merges.is_empty() {
                    return Err(TokenizerError::MissingMerges);
                }
                (add_bos, add_eos, add_space_prefix, clean_spaces) =
                    (pre.add_bos, false, false, pre.clean_spaces);
                force_bos = pre.force_bos;
                let mut sides: FxMap<Box<[u8]>, u32> = FxMap::default();
                let mut ranks: FxMap<(u32, u32), u32> = FxMap::default();
                ranks.reserve(cfg.merges.len());
                for (rank, merge) in cfg.merges.iter().enumerate() {
                    // Split at the first space after the first byte; a
                    // merge without one pairs two empty strings (llama.cpp).
                    let space = merge.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
                    let (left, right) = match space {
                        Some(p) => (&merge[..p], &merge[p + 1..]),
                        None => ("", ""),
                    };
                    let mut intern = |s: &str| {
                        let next = sides.len() as u32;
                        *sides.entry(s.as_bytes().into()).or_insert(next)
                    };
                    let key = (intern(left), intern(right));
                    ranks.entry(key).or_insert(rank as u32);
                }
                bpe = Some(BpeState {
                    sides,
                    ranks,
                    pre: PreTokenizer::new(&pre.exprs)?,
                    ignore_merges: pre.ignore_merges,
                    byte_encode: pre.byte_encode,
                    escape_whitespace: pre.escape_whitespace,
                    whole_newline_words: pre_name == "gemma4",
                });
            }
        }
        if let Some(v) = cfg.add_space_prefix {
            add_space_prefix = v;
        }

        // Tokens, scores, attributes.
        let mut token_to_id: FxMap<Box<[u8]>, u32> = FxMap::default();
        token_to_id.reserve(n);
        let mut tokens = Vec::with_capacity(n);
        let mut attrs = Vec::with_capacity(n);
        for (i, text) in cfg.tokens.into_iter().enumerate() {
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text
            };
            if let Some(&first) = token_to_id.get(text.as_bytes()) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: i as u32,
                });
            }
            token_to_id.insert(text.as_bytes().into(), i as u32);
            tokens.push(text);
            let a = match cfg.token_types.get(i) {
                None => attr::NORMAL,
                Some(1) => attr::NORMAL,
                Some(2) => attr::UNKNOWN,
                Some(3) => attr::CONTROL,
                Some(4) => attr::USER_DEFINED,
                Some(5) => attr::UNUSED,
                Some(6) => attr::BYTE,
                Some(_) => attr::UNDEFINED,
            };
            attrs.push(a);
        }
        let scores = if cfg.scores.is_empty() {
            vec![0.0; n]
        } else {
            cfg.scores[..n].to_vec()
        };

        // Special ids: a default beyond the vocabulary is dropped; a bad id
        // in the file keeps the default (llama.cpp warns and does the same).
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let pick = |default: Option<u32>, from_file: Option<u32>| match in_range(from_file) {
            Some(id) => Some(id),
            None => in_range(default),
        };
        bos = pick(bos, cfg.bos);
        eos = pick(eos, cfg.eos);
        unk = pick(unk, cfg.unk);
        let mut eot = in_range(cfg.eot);
        let eom = in_range(cfg.eom);
        pad = pick(pad, cfg.pad);
        sep = pick(sep, cfg.sep);
        if let Some(v) = cfg.add_bos {
            add_bos = v;
        }
        add_bos |= force_bos;
        if let Some(v) = cfg.add_eos {
            add_eos = v;
        }
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                flag: "tokenizer.ggml.add_bos_token",
                token: "BOS",
            });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                flag: "tokenizer.ggml.add_eos_token",
                token: "EOS",
            });
        }

        // Auto-detection by text, in id order (llama.cpp walks a hash map;
        // only models with several EOT-like tokens could differ).
        if eot.is_none() {
            eot = tokens
                .iter()
                .position(|t| EOT_TEXTS.contains(&t.as_str()))
                .map(|i| i as u32);
        }
        if let Some(id) = eot {
            attrs[id as usize] |= attr::CONTROL;
        }
        for (text, a) in tokens.iter().zip(attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && text.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
        let mut eog = BTreeSet::new();
        for (i, text) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&text.as_str()) {
                eog.insert(i as u32);
                attrs[i] |= attr::CONTROL;
            }
        }
        eog.extend(eos);
        eog.extend(eot);
        eog.extend(eom);
        let eog_text = |wanted: &dyn Fn(&str) -> bool| {
            eog.iter()
                .copied()
                .find(|&id| wanted(tokens[id as usize].as_str()))
        };
        if eog_text(&|t| NORMAL_END_S_MARKERS.contains(&t)).is_some() {
            if let Some(s_id) = eog_text(&|t| t == "</s>") {
                eog.remove(&s_id);
                attrs[s_id as usize] = attr::NORMAL;
            }
        }

        // Special-token cache: longest first, ties by id (a stable order).
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        let mut special_trie = Trie::default();
        for (prio, &id) in specials.iter().enumerate() {
            special_trie.insert(tokens[id as usize].as_bytes(), prio as u32);
        }

        let mut tok = Tokenizer {
            kind,
            tokens,
            scores,
            attrs,
            token_to_id,
            bpe,
            wpm,
            bos,
            eos,
            eot,
            unk,
            pad,
            sep,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            specials,
            special_trie,
            pieces: Vec::new(),
            chat_template: cfg.chat_template,
        };
        tok.pieces = (0..n as u32).map(|id| tok.render_piece(id, true)).collect();
        Ok(tok)
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the model's
    /// add_bos/add_eos flags say; `parse_special` also turns control-token
    /// strings in the text (e.g. "<|im_start|>") into those tokens.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode_inner(text, add_special, parse_special)
    }

    fn encode_inner(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        // WordPiece starts with BOS (CLS) whatever add_bos says.
        if add_special && (self.add_bos || self.kind == VocabKind::Wpm) {
            out.extend(self.bos);
        }
        match self.kind {
            VocabKind::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                self.partition(text, parse_special, |frag| {
                    match frag {
                        Fragment::Text(t) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(t);
                            let escaped = buf.replace(' ', "\u{2581}");
                            spm::tokenize(self, &escaped, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                    Ok(())
                })?;
            }
            VocabKind::Bpe => {
                self.partition(text, parse_special, |frag| {
                    match frag {
                        Fragment::Text(t) => bpe::tokenize(self, t, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                    Ok(())
                })?;
            }
            VocabKind::Wpm => {
                if let Some(w) = &self.wpm {
                    self.partition(text, parse_special, |frag| {
                        match frag {
                            Fragment::Text(t) => {
                                wpm::tokenize(self, w.normalizer, w.max_token_len, t, &mut out)
                            }
                            Fragment::Token(id) => out.push(id),
                        }
                        Ok(())
                    })?;
                }
                // WordPiece ends with the separator, whatever add_eos says.
                if add_special {
                    out.extend(self.sep);
                }
                return Ok(out);
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// Cuts `text` at special-token strings, longest token first, each
    /// token's occurrences taken left to right where no earlier cut
    /// overlaps them (llama.cpp's `tokenizer_st_partition`), and hands the
    /// pieces to `each` in text order.
    ///
    /// That is every match (priority, start) handled in sorted order. The
    /// matches are not all collected first: a run of spaces matches up to
    /// 31 whitespace tokens at every byte in Gemma's vocabulary. A start's
    /// matches come in priority order anyway (longer is earlier), so a heap
    /// holds only the next match of each start, and a start that a cut
    /// covers drops out (its remaining matches all overlap that cut).
    fn partition<'t>(
        &self,
        text: &'t str,
        parse_special: bool,
        mut each: impl FnMut(Fragment<'t>) -> Result<(), TokenizerError>,
    ) -> Result<(), TokenizerError> {
        use std::cmp::Reverse;
        let bytes = text.as_bytes();
        let first: Vec<Reverse<(u32, usize)>> = (0..bytes.len())
            .filter_map(|start| {
                self.longest_special_at(bytes, start, usize::MAX, parse_special)
                    .map(|prio| Reverse((prio, start)))
            })
            .collect();
        if first.is_empty() {
            if !text.is_empty() {
                each(Fragment::Text(text))?;
            }
            return Ok(());
        }
        let mut heap = std::collections::BinaryHeap::from(first);
        // Per byte: FREE, COVERED by a cut, or the token id of a cut there.
        const FREE: u32 = u32::MAX;
        const COVERED: u32 = u32::MAX - 1;
        let mut owner = vec![FREE; bytes.len()];
        while let Some(Reverse((prio, start))) = heap.pop() {
            if owner[start] != FREE {
                continue;
            }
            let id = self.specials[prio as usize];
            let len = self.tokens[id as usize].len();
            if owner[start..start + len].iter().any(|&o| o != FREE) {
                if let Some(next) = self.longest_special_at(bytes, start, len, parse_special) {
                    heap.push(Reverse((next, start)));
                }
                continue;
            }
            owner[start..start + len].fill(COVERED);
            owner[start] = id;
        }
        drop(heap);
        let (mut pos, mut i) = (0, 0);
        while i < bytes.len() {
            match owner[i] {
                FREE | COVERED => i += 1,
                id => {
                    if i > pos {
                        each(Fragment::Text(&text[pos..i]))?;
                    }
                    each(Fragment::Token(id))?;
                    i += self.tokens[id as usize].len();
                    pos = i;
                }
            }
        }
        if pos < text.len() {
            each(Fragment::Text(&text[pos..]))?;
        }
        Ok(())
    }

    /// The priority of the longest special token shorter than `below`
    /// bytes that `bytes[start..]` begins with and that may be matched
    /// (control and unknown tokens only with `parse_special`).
    fn longest_special_at(
        &self,
        bytes: &[u8],
        start: usize,
        below: usize,
        parse_special: bool,
    ) -> Option<u32> {
        let mut best = None;
        let end = bytes
            .len()
            .min(start.saturating_add(below.saturating_sub(1)));
        self.special_trie.prefixes(&bytes[start..end], |prio, _| {
            let a = self.attrs[self.specials[prio as usize] as usize];
            if parse_special || a & (attr::CONTROL | attr::UNKNOWN) == 0 {
                best = Some(prio);
            }
        });
        best
    }

    /// The id of a token text, if the vocabulary has it.
    pub fn token_id(&self, text: &[u8]) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The bytes a token stands for; special tokens render as their text
    /// (llama.cpp's `token_to_piece` with special = true). Empty for an id
    /// outside the vocabulary.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.pieces
            .get(id as usize)
            .map_or(&[][..], |p| p.as_slice())
    }

    /// Like [`Tokenizer::token_to_piece`], but with `special` false control
    /// and unknown tokens render as nothing.
    pub fn token_to_piece_special(&self, id: u32, special: bool) -> &[u8] {
        let a = self
            .attrs
            .get(id as usize)
            .copied()
            .unwrap_or(attr::UNDEFINED);
        if !special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        self.token_to_piece(id)
    }

    fn render_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let i = id as usize;
        let a = self.attrs[i];
        let text = &self.tokens[i];
        if !special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return Vec::new();
        }
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            let byte_encoded = self.bpe.as_ref().is_some_and(|b| b.byte_encode);
            return if byte_encoded {
                bpe::decode_text(text)
            } else {
                text.replace('\u{2581}', " ").into_bytes()
            };
        }
        if a & attr::BYTE != 0 {
            // "<0xXX>"
            return text
                .get(3..5)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map_or_else(Vec::new, |b| vec![b]);
        }
        Vec::new()
    }

    /// All pieces concatenated, special tokens as text, invalid UTF-8
    /// replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_to_piece(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// llama.cpp's `llama_detokenize`: optionally drops BOS/EOS added by
    /// the flags (`remove_special`) and renders control tokens only with
    /// `unparse_special`; removes the SentencePiece space prefix and, for
    /// models that ask for it, spaces before punctuation.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && ids.first().is_some_and(|&t| Some(t) == self.bos) {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().is_some_and(|&t| Some(t) == self.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut piece = self.token_to_piece_special(id, unparse_special);
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            text = clean_up_spaces(&text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The algorithm: SentencePiece or BPE.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }
    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn token (e.g. `<end_of_turn>`, `<|im_end|>`), if any.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether generation stops at this token (EOS, EOT and the tokens
    /// llama.cpp recognises by their text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// The end-of-generation tokens.
    pub fn eog_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Whether SentencePiece text gets a leading space.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
    /// The token's SentencePiece score.
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }
    /// The token's [`attr`] bits.
    pub fn token_attr(&self, id: u32) -> Option<u16> {
        self.attrs.get(id as usize).copied()
    }
    /// Whether the token is a control token (BOS, `<start_of_turn>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id).is_some_and(|a| a & attr::CONTROL != 0)
    }
    /// `tokenizer.chat_template`, if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    /// Checks that every id is inside the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<(), TokenizerError> {
        match ids.iter().find(|&&id| id as usize >= self.tokens.len()) {
            Some(&id) => Err(TokenizerError::InvalidToken {
                id,
                n_vocab: self.tokens.len(),
            }),
            None => Ok(()),
        }
    }
}

/// llama.cpp's `clean_up_tokenization_spaces` passes over detokenized text.
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    // " ?", " !", " .", " ,": drop the space.
    let mut a: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            a.pop();
        }
        a.push(x);
    }
    // " ' ": a lone apostrophe between spaces loses both spaces. llama.cpp
    // zeroes the dropped space in place, so the next character's
    // predecessor reads as NUL.
    let mut b: Vec<u8> = Vec::with_capacity(a.len());
    let mut i = 0;
    let mut prev_zeroed = false;
    while i < a.len() {
        let x = a[i];
        let prev = if prev_zeroed {
            0
        } else if i > 0 {
            a[i - 1]
        } else {
            0
        };
        prev_zeroed = false;
        if i > 0 && x == b'\'' && i + 1 < a.len() && prev == b' ' && a[i + 1] == b' ' {
            b.pop();
            b.push(x);
            i += 2;
            prev_zeroed = true;
            continue;
        }
        b.push(x);
        i += 1;
    }
    // " 's", " 'm", " 're", " 've": drop the space.
    let mut c: Vec<u8> = Vec::with_capacity(b.len());
    for (i, &x) in b.iter().enumerate() {
        if i > 0 && b[i - 1] == b' ' && x == b'\'' && i + 1 < b.len() {
            let x1 = b[i + 1];
            let x2 = b.get(i + 2).copied();
            if matches!(x1, b's' | b'm') || (matches!(x1, b'r' | b'v') && x2 == Some(b'e')) {
                c.pop();
            }
        }
        c.push(x);
    }
    c
}

/// Turns a stream of tokens into text, yielding only complete UTF-8: bytes
/// of a character split across tokens are held back until it is complete.
/// Bytes that can never form a character come out as U+FFFD.
#[derive(Default, Debug, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Adds a token's piece (special tokens as text); returns the text that
    /// is now complete.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.push_bytes(tokenizer.token_to_piece(id))
    }

    /// Adds raw bytes; returns the text that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: held-back bytes come out as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests;
