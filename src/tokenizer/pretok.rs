//! BPE pre-tokenization: splitting text into words before merging, as
//! llama.cpp's `unicode_regex_split`. Each pre-tokenizer is a list of
//! expressions applied in turn; every expression splits each current piece
//! into its matches and the text between them (both kept). The GPT-2 and
//! Llama-3 expressions have hand-written splitters (llama.cpp uses such
//! splitters for exactly those two strings); the others run as regexes over
//! llama.cpp's "collapsed" text, where every non-ASCII codepoint stands for
//! its category, so `\p{L}` etc. mean what they mean in llama.cpp.

use fancy_regex::Regex;

use super::unicode::{self, CpFlags};
use super::TokenizerError;

/// The GPT-2 expression, recognised by llama.cpp and split by hand.
pub const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// The Llama-3 expression (llama.cpp's case-insensitive adaptation).
pub const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_ORIGINAL: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 (also DeepSeek-R1-Distill-Qwen): Llama-3 with single digits.
pub const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5: Qwen2 whose letter runs also take combining marks (\p{M}).
pub const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Runs of newlines and runs of anything else (Gemma 4's SentencePiece-like
/// BPE merges across spaces, only newlines cut the text).
pub const NEWLINE_RUNS: &str = "[^\n]+|[\n]+";

/// One expression of a pre-tokenizer, ready to run.
enum Splitter {
    Gpt2,
    /// Llama-3, Qwen2 and Qwen3.5: llama.cpp splits each by hand.
    Llama3(Llama3Style),
    NewlineRuns,
    /// A regex over the collapsed text (the expression used `\p{..}`).
    Collapsed(Regex),
    /// A regex over the codepoints themselves (non-ASCII whitespace as \x0B).
    Plain(Regex),
}

/// What distinguishes the Llama-3-shaped expressions.
#[derive(Clone, Copy)]
struct Llama3Style {
    /// `\p{N}{1,3}` (Llama 3) or `\p{N}` (Qwen).
    max_digits: usize,
    /// Combining marks count as letters (Qwen3.5's `[\p{L}\p{M}]`).
    marks_are_letters: bool,
}

/// A compiled pre-tokenizer: its expressions in order.
pub struct PreTokenizer {
    splitters: Vec<Splitter>,
}

/// What a `tokenizer.ggml.pre` value means to llama.cpp: the expressions
/// and the flags it sets (before the GGUF's own add_bos etc. override them).
pub struct PreConfig {
    /// The split expressions, applied in order.
    pub exprs: Vec<&'static str>,
    /// A word that is itself a token is not merged (Llama-3 style).
    pub ignore_merges: bool,
    pub add_bos: bool,
    /// Detokenization removes spaces before punctuation.
    pub clean_spaces: bool,
    /// Words are mapped to GPT-2's byte characters before merging (false:
    /// merged as raw UTF-8, with `<0xXX>` byte fallback).
    pub byte_encode: bool,
    /// Spaces become U+2581 before splitting (SentencePiece-style BPE).
    pub escape_whitespace: bool,
    /// BOS is added whatever the file says (llama.cpp's Gemma 4 override).
    pub force_bos: bool,
}

/// llama.cpp's settings for a pre-tokenizer name, or None if this crate does
/// not know the name.
pub fn config_for(pre: &str) -> Option<PreConfig> {
    let cfg = |exprs: Vec<&'static str>, ignore_merges, add_bos, clean_spaces| PreConfig {
        exprs,
        ignore_merges,
        add_bos,
        clean_spaces,
        byte_encode: true,
        escape_whitespace: false,
        force_bos: false,
    };
    let gpt2_digits = vec![r"\p{N}", GPT2];
    Some(match pre {
        "default" | "" => cfg(
            vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            false,
            false,
            true,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => cfg(vec![LLAMA3], true, true, true),
        "dbrx" | "smaug-bpe" => cfg(vec![LLAMA3], false, false, true),
        "qwen2" | "deepseek-r1-qwen" | "hunyuan" => cfg(vec![QWEN2], false, false, false),
        "qwen35" => cfg(vec![QWEN35], false, false, false),
        "stablelm2" | "megrez" => cfg(vec![QWEN2], false, false, true),
        "smollm" | "command-r" => cfg(gpt2_digits, false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
            cfg(gpt2_digits, false, false, true)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "mpt" | "olmo" | "jais" | "exaone4" => cfg(vec![GPT2], false, false, true),
        "trillion" | "granite-docling" => cfg(vec![GPT2], false, false, false),
        "falcon" => cfg(
            vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            false,
            false,
            true,
        ),
        "deepseek-coder" => cfg(
            vec![
                "[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                "[一-龥ࠀ-一가-퟿]+",
                r"\p{N}",
            ],
            false,
            false,
            false,
        ),
        "deepseek-llm" => cfg(
            // llama.cpp's expressions; the letter class written with
            // escapes, as some of its characters change under NFC.
            vec![
                "[\r\n]",
                concat!(
                    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}",
                    "\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-",
                    "\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-",
                    "\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}",
                    "\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}",
                    "\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}",
                    "\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}",
                    "\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-",
                    "\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}",
                    "\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}",
                    "\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}",
                    "\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-",
                    "\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}",
                    "\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}",
                    "\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}",
                    "\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}",
                    "\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-",
                    "\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}",
                    "\u{1E900}-\u{1E943}]+",
                ),
                "\\s?[!-/:-~！-／：-～‘-‟\u{3000}-。]+",
                "\\s+$",
                "[一-龥ࠀ-一가-퟿]+",
                r"\p{N}+",
            ],
            false,
            false,
            false,
        ),
        "gemma4" | "granite-embed-multi-311m" => PreConfig {
            byte_encode: false,
            escape_whitespace: true,
            force_bos: true,
            ..cfg(vec![NEWLINE_RUNS], false, false, true)
        },
        _ => return None,
    })
}

/// llama.cpp's collapsed stand-in for a codepoint (one char each).
fn collapse(cp: u32, flags: CpFlags) -> char {
    if cp < 128 {
        return char::from(cp as u8);
    }
    if flags.is_whitespace() {
        return '\x0B';
    }
    match flags.category() {
        CpFlags::NUMBER => '\u{D1}',
        CpFlags::LETTER => '\u{D2}',
        CpFlags::PUNCTUATION => '\u{D3}',
        CpFlags::ACCENT_MARK => '\u{D4}',
        CpFlags::SYMBOL => '\u{D5}',
        _ => '\u{D0}',
    }
}

/// The regex class body standing for a `\p{..}` name in collapsed text.
fn collapsed_class(name: &str) -> Option<&'static str> {
    Some(match name {
        "N" => r"\x{D1}0-9",
        "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => r"\x{D2}A-Za-z",
        "P" => r"\x{D3}!-#%-*,-/:-;?-@\[-\]_\{\}",
        "M" => r"\x{D4}",
        "S" => r"\x{D5}\$\+<->\^`\|",
        _ => return None,
    })
}

/// Rewrites an expression for the collapsed text, as llama.cpp does.
fn collapse_regex(expr: &str) -> Result<Option<String>, TokenizerError> {
    if !expr.contains(r"\p{") {
        return Ok(None);
    }
    if !expr.is_ascii() {
        return Err(TokenizerError::BadPreTokenizer {
            expr: expr.to_string(),
            reason: "unicode categories together with non-ASCII characters".to_string(),
        });
    }
    let bytes = expr.as_bytes();
    let mut out = String::new();
    let mut inside = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let escaped = i > 0 && bytes[i - 1] == b'\\';
        if c == b'[' && !escaped {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && c == b']' && !escaped {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if expr[i..].starts_with(r"\p{") {
            if let Some(close) = expr[i + 3..].find('}') {
                if let Some(class) = collapsed_class(&expr[i + 3..i + 3 + close]) {
                    if inside {
                        out.push_str(class);
                    } else {
                        out.push('[');
                        out.push_str(class);
                        out.push(']');
                    }
                    i += 3 + close + 1;
                    continue;
                }
            }
        }
        out.push(char::from(c));
        i += 1;
    }
    Ok(Some(out))
}

impl PreTokenizer {
    /// Compiles a list of expressions as llama.cpp would run them.
    pub fn new(exprs: &[&str]) -> Result<PreTokenizer, TokenizerError> {
        let mut splitters = Vec::with_capacity(exprs.len());
        for &expr in exprs {
            let compile = |pattern: &str| {
                Regex::new(pattern).map_err(|e| TokenizerError::BadPreTokenizer {
                    expr: expr.to_string(),
                    reason: e.to_string(),
                })
            };
            let llama3 = |max_digits, marks_are_letters| {
                Splitter::Llama3(Llama3Style {
                    max_digits,
                    marks_are_letters,
                })
            };
            let splitter = if expr == GPT2 {
                Splitter::Gpt2
            } else if expr == LLAMA3 || expr == LLAMA3_ORIGINAL {
                llama3(3, false)
            } else if expr == QWEN2 {
                llama3(1, false)
            } else if expr == QWEN35 {
                llama3(1, true)
            } else if expr == NEWLINE_RUNS {
                Splitter::NewlineRuns
            } else if let Some(collapsed) = collapse_regex(expr)? {
                Splitter::Collapsed(compile(&collapsed)?)
            } else {
                Splitter::Plain(compile(expr)?)
            };
            splitters.push(splitter);
        }
        Ok(PreTokenizer { splitters })
    }

    /// Splits `text` into words, each returned as a byte range of `text`.
    pub fn split(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let cpts: Vec<(u32, usize, usize)> = unicode::decode_cpts(text.as_bytes());
        let flags: Vec<CpFlags> = cpts.iter().map(|c| unicode::flags(c.0)).collect();
        // Piece lengths in codepoints, as llama.cpp's offsets.
        let mut pieces = vec![cpts.len()];
        for splitter in &self.splitters {
            pieces = match splitter {
                Splitter::Gpt2 => split_gpt2(&cpts, &flags, &pieces),
                Splitter::Llama3(style) => split_llama3(&cpts, &flags, &pieces, *style),
                Splitter::NewlineRuns => split_newline_runs(&cpts, &pieces),
                Splitter::Collapsed(re) => {
                    let s: Vec<char> = cpts
                        .iter()
                        .zip(&flags)
                        .map(|(c, &f)| collapse(c.0, f))
                        .collect();
                    split_regex(re, &s, &pieces)
                }
                Splitter::Plain(re) => {
                    let s: Vec<char> = cpts
                        .iter()
                        .zip(&flags)
                        .map(|(c, f)| {
                            if c.0 > 0x7F && f.is_whitespace() {
                                '\x0B'
                            } else {
                                char::from_u32(c.0).unwrap_or('\u{FFFD}')
                            }
                        })
                        .collect();
                    split_regex(re, &s, &pieces)
                }
            };
        }
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0;
        for len in pieces {
            if len == 0 {
                continue;
            }
            let first = cpts[start];
            let last = cpts[start + len - 1];
            out.push(first.1..last.1 + last.2);
            start += len;
        }
        out
    }
}

/// Runs `re` over each piece of `chars`; matches and the gaps between them
/// become pieces (llama.cpp's `unicode_regex_split_stl`).
fn split_regex(re: &Regex, chars: &[char], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0;
    let mut buf = String::new();
    let mut cp_at_byte = Vec::new();
    for &len in pieces {
        let piece = &chars[start..start + len];
        buf.clear();
        cp_at_byte.clear();
        for (i, &c) in piece.iter().enumerate() {
            for _ in 0..c.len_utf8() {
                cp_at_byte.push(i);
            }
            buf.push(c);
        }
        cp_at_byte.push(piece.len());
        let mut prev = 0;
        let mut pos = 0;
        while pos <= buf.len() {
            let m = match re.find_from_pos(&buf, pos) {
                Ok(Some(m)) => m,
                // No further match (a regex runtime error, e.g. a backtrack
                // limit, ends the matching like no match would).
                _ => break,
            };
            let (ms, me) = (cp_at_byte[m.start()], cp_at_byte[m.end()]);
            if me == ms {
                // Empty match: step over one character, as std::regex_iterator.
                pos = m.end() + buf[m.end()..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            if ms > prev {
                out.push(ms - prev);
            }
            out.push(me - ms);
            prev = me;
            pos = m.end();
        }
        if prev < len {
            out.push(len - prev);
        }
        start += len;
    }
    out
}

/// Splits pieces with GPT-2's expression, by hand as llama.cpp does.
fn split_gpt2(cpts: &[(u32, usize, usize)], flags: &[CpFlags], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0;
    for &len in pieces {
        let (ini, end) = (start, start + len);
        start = end;
        let cpt = |p: usize| {
            if p >= ini && p < end {
                cpts[p].0
            } else {
                u32::MAX
            }
        };
        let flag = |p: usize| {
            if p >= ini && p < end {
                flags[p]
            } else {
                CpFlags(0)
            }
        };
        let mut prev_end = ini;
        let mut add = |e: usize, out: &mut Vec<usize>| {
            let n = e - prev_end;
            if n > 0 {
                out.push(n);
            }
            prev_end = e;
            n
        };
        let mut pos = ini;
        while pos < end {
            let c = cpt(pos);
            let f = flag(pos);
            if c == u32::from(b'\'') && pos + 1 < end {
                let next = cpt(pos + 1);
                if [b's', b't', b'm', b'd']
                    .iter()
                    .any(|&x| next == u32::from(x))
                {
                    pos += add(pos + 2, &mut out);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = cpt(pos + 2);
                    let pair = |a: u8, b: u8| next == u32::from(a) && next2 == u32::from(b);
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += add(pos + 3, &mut out);
                        continue;
                    }
                }
            }
            let space = c == u32::from(b' ');
            let mut f2 = if space { flag(pos + 1) } else { f };
            if f2.is_letter() {
                pos += usize::from(space);
                while f2.is_letter() {
                    pos += 1;
                    f2 = flag(pos);
                }
                add(pos, &mut out);
                continue;
            }
            if f2.is_number() {
                pos += usize::from(space);
                while f2.is_number() {
                    pos += 1;
                    f2 = flag(pos);
                }
                add(pos, &mut out);
                continue;
            }
            let other =
                |f: CpFlags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any();
            if other(f2) {
                pos += usize::from(space);
                while other(f2) {
                    pos += 1;
                    f2 = flag(pos);
                }
                add(pos, &mut out);
                continue;
            }
            let mut n_ws = 0;
            while flag(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            if n_ws > 1 && cpt(pos + n_ws) != u32::MAX {
                pos += n_ws - 1;
                add(pos, &mut out);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                add(pos, &mut out);
                continue;
            }
            pos += 1;
            add(pos, &mut out);
        }
    }
    out
}

fn ascii_lower(cp: u32) -> u32 {
    match char::from_u32(cp) {
        Some(c) => {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l as u32,
                _ => cp,
            }
        }
        None => cp,
    }
}

/// Splits each piece into runs of newlines and runs of other codepoints.
fn split_newline_runs(cpts: &[(u32, usize, usize)], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0;
    for &len in pieces {
        let piece = &cpts[start..start + len];
        start += len;
        let mut run = 0;
        for (i, c) in piece.iter().enumerate() {
            if i > 0 && (c.0 == 0x0A) != (piece[i - 1].0 == 0x0A) {
                out.push(i - run);
                run = i;
            }
        }
        if run < piece.len() {
            out.push(piece.len() - run);
        }
    }
    out
}

/// Splits pieces with the Llama-3 expression or its Qwen variants, by hand
/// as llama.cpp does.
fn split_llama3(
    cpts: &[(u32, usize, usize)],
    flags: &[CpFlags],
    pieces: &[usize],
    style: Llama3Style,
) -> Vec<usize> {
    // Qwen3.5 reads "letter" as letter or mark, "other" as none of
    // whitespace, letter, mark, number.
    let letter = |f: CpFlags| f.is_letter() || (style.marks_are_letters && f.is_accent_mark());
    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0;
    for &len in pieces {
        let (ini, end) = (start, start + len);
        start = end;
        let cpt = |p: usize| {
            if p >= ini && p < end {
                cpts[p].0
            } else {
                u32::MAX
            }
        };
        let flag = |p: usize| {
            if p >= ini && p < end {
                flags[p]
            } else {
                CpFlags(0)
            }
        };
        let mut prev_end = ini;
        let mut add = |e: usize, out: &mut Vec<usize>| {
            let n = e - prev_end;
            if n > 0 {
                out.push(n);
            }
            prev_end = e;
            n
        };
        let is_rn = |c: u32| c == u32::from(b'\r') || c == u32::from(b'\n');
        let mut pos = ini;
        while pos < end {
            let c = cpt(pos);
            let f = flag(pos);
            if c == u32::from(b'\'') && pos + 1 < end {
                let next = ascii_lower(cpt(pos + 1));
                if [b's', b't', b'm', b'd']
                    .iter()
                    .any(|&x| next == u32::from(x))
                {
                    pos += add(pos + 2, &mut out);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = ascii_lower(cpt(pos + 2));
                    let pair = |a: u8, b: u8| next == u32::from(a) && next2 == u32::from(b);
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += add(pos + 3, &mut out);
                        continue;
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_rn(c) || f.is_number()) && (letter(f) || letter(flag(pos + 1))) {
                pos += 1;
                while letter(flag(pos)) {
                    pos += 1;
                }
                add(pos, &mut out);
                continue;
            }
            // \p{N}{1,3} or \p{N}
            if f.is_number() {
                let mut group = pos;
                while flag(pos).is_number() {
                    pos += 1;
                    if pos - group >= style.max_digits {
                        add(pos, &mut out);
                        group = pos;
                    }
                }
                add(pos, &mut out);
                continue;
            }
            // " ?[^\s\p{L}\p{N}]+[\r\n]*"
            let space = c == u32::from(b' ');
            let mut f2 = if space { flag(pos + 1) } else { f };
            let not_other = |f: CpFlags| f.is_whitespace() || letter(f) || f.is_number();
            let other = |f: CpFlags| !not_other(f) && f.any();
            if !not_other(f2) && f.any() {
                pos += usize::from(space);
                while other(f2) {
                    pos += 1;
                    f2 = flag(pos);
                }
                while is_rn(cpt(pos)) {
                    pos += 1;
                }
                add(pos, &mut out);
                continue;
            }
            let mut n_ws = 0;
            let mut last_rn_end = 0;
            while flag(pos + n_ws).is_whitespace() {
                if is_rn(cpt(pos + n_ws)) {
                    last_rn_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            if last_rn_end > 0 {
                pos = last_rn_end;
                add(pos, &mut out);
                continue;
            }
            if n_ws > 1 && cpt(pos + n_ws) != u32::MAX {
                pos += n_ws - 1;
                add(pos, &mut out);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                add(pos, &mut out);
                continue;
            }
            pos += 1;
            add(pos, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(exprs: &[&str], text: &str) -> Vec<String> {
        let pre = PreTokenizer::new(exprs).expect("pre-tokenizer compiles");
        pre.split(text)
            .into_iter()
            .map(|r| text[r].to_string())
            .collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words(&[GPT2], "Hello  world's 42!! \n"),
            vec!["Hello", " ", " world", "'s", " 42", "!!", " \n"]
        );
    }

    #[test]
    fn smollm_splits_digits() {
        let smollm = config_for("smollm").map(|c| c.exprs).unwrap_or_default();
        assert_eq!(
            words(&smollm, "year 2024 x"),
            vec!["year", " ", "2", "0", "2", "4", " x"]
        );
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words(&[LLAMA3], "I'M 12345 ok!?\n\n  x"),
            vec!["I", "'M", " ", "123", "45", " ok", "!?\n\n", " ", " x"]
        );
    }

    #[test]
    fn qwen2_regex_matches_expectations() {
        assert_eq!(
            words(&[QWEN2], "abc 123 ,.\n\n x"),
            vec!["abc", " ", "1", "2", "3", " ,.\n\n", " x"]
        );
        assert_eq!(
            words(&[QWEN2], "naïve  café\t"),
            vec!["naïve", " ", " café", "\t"]
        );
    }

    #[test]
    fn qwen35_keeps_combining_marks_with_letters() {
        let text = "cafe\u{301} 12 \u{301}x";
        assert_eq!(
            words(&[QWEN2], text),
            vec!["cafe", "\u{301}", " ", "1", "2", " \u{301}", "x"]
        );
        assert_eq!(
            words(&[QWEN35], text),
            vec!["cafe\u{301}", " ", "1", "2", " \u{301}x"]
        );
    }

    #[test]
    fn newline_runs() {
        assert_eq!(
            words(&[NEWLINE_RUNS], "a b\n\nc\n"),
            vec!["a b", "\n\n", "c", "\n"]
        );
    }

    #[test]
    fn default_pre_tokenizer_compiles() {
        let exprs = config_for("default").map(|c| c.exprs).unwrap_or_default();
        assert_eq!(
            words(&exprs, "a+b=1234"),
            vec!["a", "+", "b", "=", "123", "4"]
        );
        for pre in [
            "falcon",
            "deepseek-coder",
            "deepseek-llm",
            "llama-bpe",
            "qwen2",
            "qwen35",
            "gpt-2",
            "gemma4",
        ] {
            let exprs = config_for(pre).map(|c| c.exprs).unwrap_or_default();
            assert!(PreTokenizer::new(&exprs).is_ok(), "{pre}");
        }
    }
}
