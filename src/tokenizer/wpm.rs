//! WordPiece (BERT; llama.cpp's `llm_tokenizer_wpm`): the text is
//! normalized, cut into words at whitespace and around punctuation and CJK
//! ideographs, and each word, prefixed with U+2581, is covered from the left
//! by the longest vocabulary tokens. A word that cannot be covered becomes
//! the unknown token.

use super::unicode::{self, CpFlags};
use super::Tokenizer;

/// BERT's normalizer settings (`tokenizer.ggml.normalizer.*`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Normalizer {
    pub lowercase: bool,
    /// Decompose (keeping the base letter only) and drop combining marks.
    pub strip_accents: bool,
}

/// The CJK ideograph blocks BERT isolates (with the upstream range
/// 0x2B920..0x2CEAF that should start at 0x2B820).
fn is_cjk_ideograph(cp: u32) -> bool {
    matches!(
        cp,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Calls `word` with each normalized word of `text`, in order.
fn for_each_word(text: &str, norm: Normalizer, mut word: impl FnMut(&str)) {
    let mut current = String::new();
    for c in text.chars() {
        let mut cp = u32::from(c);
        if norm.strip_accents {
            cp = unicode::nfd_first(cp);
        }
        let flags = unicode::flags(cp);
        if flags.is_whitespace() {
            if !current.is_empty() {
                word(&current);
                current.clear();
            }
            continue;
        }
        if cp == 0 || cp == 0xFFFD || flags.is_control() {
            continue;
        }
        if norm.strip_accents && flags.is_accent_mark() {
            continue;
        }
        let out_cp = if norm.lowercase {
            unicode::to_lower(cp)
        } else {
            cp
        };
        let Some(out) = char::from_u32(out_cp) else {
            continue;
        };
        if isolated(cp, flags) {
            if !current.is_empty() {
                word(&current);
                current.clear();
            }
            let mut buf = [0u8; 4];
            word(out.encode_utf8(&mut buf));
        } else {
            current.push(out);
        }
    }
    if !current.is_empty() {
        word(&current);
    }
}

/// Characters that are words on their own: punctuation, ASCII symbols, CJK.
fn isolated(cp: u32, flags: CpFlags) -> bool {
    flags.is_punctuation() || (cp < 0x7F && flags.is_symbol()) || is_cjk_ideograph(cp)
}

/// Tokenizes one raw text fragment, appending to `out`.
pub(super) fn tokenize(
    tok: &Tokenizer,
    norm: Normalizer,
    max_token_len: usize,
    text: &str,
    out: &mut Vec<u32>,
) {
    let mut prefixed: Vec<u8> = Vec::new();
    for_each_word(text, norm, |word| {
        prefixed.clear();
        prefixed.extend_from_slice("\u{2581}".as_bytes());
        prefixed.extend_from_slice(word.as_bytes());
        let n = prefixed.len();
        let before = out.len();
        let mut i = 0;
        while i < n {
            // The longest token starting at byte i (the slices are bytes,
            // as llama.cpp's; a slice inside a character matches nothing).
            let longest = (i + 1..=n.min(i + max_token_len + 1))
                .rev()
                .find_map(|j| tok.token_id(&prefixed[i..j]).map(|id| (id, j)));
            match longest {
                Some((id, j)) => {
                    out.push(id);
                    i = j;
                }
                None => {
                    out.truncate(before);
                    break;
                }
            }
        }
        if out.len() == before {
            out.extend(tok.unk);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, lowercase: bool, strip_accents: bool) -> Vec<String> {
        let mut out = Vec::new();
        let norm = Normalizer {
            lowercase,
            strip_accents,
        };
        for_each_word(text, norm, |w| out.push(w.to_string()));
        out
    }

    #[test]
    fn normalizes_and_splits_like_bert() {
        assert_eq!(
            words(" Héllo,WORLD! 你好\u{200B}x\t", true, true),
            vec!["hello", ",", "world", "!", "你", "好", "x"]
        );
        assert_eq!(words("Héllo $5", false, false), vec!["Héllo", "$", "5"]);
        assert!(words(" \n\t", true, true).is_empty());
    }
}
