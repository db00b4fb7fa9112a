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

/// One expression of a pre-tokenizer, ready to run.
enum Splitter {
    Gpt2,
    Llama3,
    /// A regex over the collapsed text (the expression used `\p{..}`).
    Collapsed(Regex),
    /// A regex over the codepoints themselves (non-ASCII whitespace as \x0B).
    Plain(Regex),
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
}

/// llama.cpp's settings for a pre-tokenizer name, or None if this crate does
/// not know the name.
pub fn config_for(pre: &str) -> Option<PreConfig> {
    let cfg = |exprs: Vec<&'static str>, ignore_merges, add_bos, clean_spaces| PreConfig {
        exprs,
        ignore_merges,
        add_bos,
        clean_spaces,
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
            let splitter = if expr == GPT2 {
                Splitter::Gpt2
            } else if expr == LLAMA3 || expr == LLAMA3_ORIGINAL {
                Splitter::Llama3
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
                Splitter::Llama3 => split_llama3(&cpts, &flags, &pieces),
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

/// Splits pieces with the Llama-3 expression, by hand as llama.cpp does.
fn split_llama3(cpts: &[(u32, usize, usize)], flags: &[CpFlags], pieces: &[usize]) -> Vec<usize> {
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
            if !(is_rn(c) || f.is_number()) && (f.is_letter() || flag(pos + 1).is_letter()) {
                pos += 1;
                while flag(pos).is_letter() {
                    pos += 1;
                }
                add(pos, &mut out);
                continue;
            }
            // \p{N}{1,3}
            if f.is_number() {
                let mut group = pos;
                while flag(pos).is_number() {
                    pos += 1;
                    if pos - group >= 3 {
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
            let other =
                |f: CpFlags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any();
            if !(f2.is_whitespace() || f2.is_letter() || f2.is_number()) && f.any() {
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
    fn default_pre_tokenizer_compiles() {
        let exprs = config_for("default").map(|c| c.exprs).unwrap_or_default();
        assert_eq!(
            words(&exprs, "a+b=1234"),
            vec!["a", "+", "b", "=", "123", "4"]
        );
        for pre in ["falcon", "deepseek-coder", "llama-bpe", "qwen2", "gpt-2"] {
            let exprs = config_for(pre).map(|c| c.exprs).unwrap_or_default();
            assert!(PreTokenizer::new(&exprs).is_ok(), "{pre}");
        }
    }
}
