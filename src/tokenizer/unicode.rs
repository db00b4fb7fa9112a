//! Codepoint classification and UTF-8 helpers with llama.cpp's semantics
//! (unicode.cpp): invalid UTF-8 decodes to U+FFFD one byte at a time, and
//! the character classes are the general categories of `unicode_data.rs`
//! plus the White_Space property.

use std::sync::OnceLock;

use super::unicode_data::{CATEGORY_RUNS, NFD_FIRST_RUNS};

/// Category and helper flags of one codepoint; bit values as llama.cpp's
/// `unicode_cpt_flags` (also SEPARATOR 0x08, unnamed here) so
/// that "no flag at all" (outside the text) is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpFlags(pub u16);

impl CpFlags {
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const CONTROL: u16 = 0x0080;
    pub const CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;

    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    pub fn is_accent_mark(self) -> bool {
        self.0 & Self::ACCENT_MARK != 0
    }
    pub fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    pub fn is_symbol(self) -> bool {
        self.0 & Self::SYMBOL != 0
    }
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }
    /// Any flag set: false only for a position outside the text.
    pub fn any(self) -> bool {
        self.0 != 0
    }
    pub fn category(self) -> u16 {
        self.0 & Self::CATEGORIES
    }
}

/// The White_Space property (PropList.txt), as llama.cpp's table.
fn is_white_space(cp: u32) -> bool {
    matches!(cp, 0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000)
}

fn category_by_search(cp: u32) -> u16 {
    let idx = CATEGORY_RUNS.partition_point(|&(start, _)| start <= cp);
    // idx >= 1 because the first run starts at 0.
    u16::from(CATEGORY_RUNS[idx.saturating_sub(1)].1)
}

/// Flags of the Basic Multilingual Plane, built once (128 KiB).
fn bmp_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![0u16; 0x10000];
        for (i, run) in CATEGORY_RUNS.iter().enumerate() {
            let start = run.0 as usize;
            if start >= 0x10000 {
                break;
            }
            let end = CATEGORY_RUNS
                .get(i + 1)
                .map_or(0x10000, |next| (next.0 as usize).min(0x10000));
            for slot in &mut table[start..end] {
                *slot = u16::from(run.1);
            }
        }
        for (cp, slot) in table.iter_mut().enumerate() {
            if is_white_space(cp as u32) {
                *slot |= CpFlags::WHITESPACE;
            }
        }
        table
    })
}

/// Flags of a codepoint; beyond U+10FFFF it is UNDEFINED like llama.cpp.
pub fn flags(cp: u32) -> CpFlags {
    if cp < 0x10000 {
        CpFlags(bmp_table()[cp as usize])
    } else if cp < 0x110000 {
        CpFlags(category_by_search(cp))
    } else {
        CpFlags(CpFlags::UNDEFINED)
    }
}

/// The first codepoint of a codepoint's canonical decomposition (NFD),
/// which is all llama.cpp's `unicode_cpts_normalize_nfd` keeps: "é" becomes
/// "e", its accent is dropped rather than split off.
pub fn nfd_first(cp: u32) -> u32 {
    let idx = NFD_FIRST_RUNS.partition_point(|&(first, _, _)| first <= cp);
    match idx.checked_sub(1).map(|i| NFD_FIRST_RUNS[i]) {
        Some((_, last, nfd)) if cp <= last => nfd,
        _ => cp,
    }
}

/// Simple (one-codepoint) lowercase, as llama.cpp's `unicode_tolower`:
/// codepoints whose lowercase is several codepoints stay as they are,
/// except U+0130 whose simple mapping is "i".
pub fn to_lower(cp: u32) -> u32 {
    if cp == 0x130 {
        return u32::from(b'i');
    }
    let Some(c) = char::from_u32(cp) else {
        return cp;
    };
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => u32::from(l),
        _ => cp,
    }
}

/// Length of the UTF-8 sequence a lead byte announces (llama.cpp's
/// `unicode_len_utf8`: continuation bytes count as 1).
pub fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[usize::from(lead >> 4)]
}

/// Decodes UTF-8 to codepoints as llama.cpp does: a malformed sequence
/// yields U+FFFD and skips one byte. Returns each codepoint with its byte
/// offset and length in `bytes`.
pub fn decode_cpts(bytes: &[u8]) -> Vec<(u32, usize, usize)> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut off = 0;
    while off < bytes.len() {
        match decode_one(&bytes[off..]) {
            Some((cp, len)) => {
                out.push((cp, off, len));
                off += len;
            }
            None => {
                out.push((0xFFFD, off, 1));
                off += 1;
            }
        }
    }
    out
}

fn decode_one(b: &[u8]) -> Option<(u32, usize)> {
    let cont = |i: usize| {
        b.get(i)
            .filter(|&&c| c & 0xC0 == 0x80)
            .map(|&c| u32::from(c & 0x3F))
    };
    let b0 = *b.first()?;
    if b0 & 0x80 == 0 {
        return Some((u32::from(b0), 1));
    }
    if b0 & 0x40 == 0 {
        return None;
    }
    if b0 & 0x20 == 0 {
        return Some(((u32::from(b0 & 0x1F) << 6) | cont(1)?, 2));
    }
    if b0 & 0x10 == 0 {
        return Some(((u32::from(b0 & 0x0F) << 12) | (cont(1)? << 6) | cont(2)?, 3));
    }
    if b0 & 0x08 == 0 {
        return Some((
            (u32::from(b0 & 0x07) << 18) | (cont(1)? << 12) | (cont(2)? << 6) | cont(3)?,
            4,
        ));
    }
    None
}

/// GPT-2's byte-to-unicode table: printable Latin-1 bytes map to
/// themselves, the others to U+0100.. in byte order.
pub fn byte_to_unicode() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = ['\0'; 256];
        let mut next = 256u32;
        for (b, slot) in table.iter_mut().enumerate() {
            let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
            let cp = if printable {
                b as u32
            } else {
                next += 1;
                next - 1
            };
            *slot = char::from_u32(cp).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// Inverse of [`byte_to_unicode`].
pub fn unicode_to_byte(c: char) -> Option<u8> {
    static TABLE: OnceLock<[Option<u8>; 0x144]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [None; 0x144];
        for (b, &c) in byte_to_unicode().iter().enumerate() {
            table[c as usize] = Some(b as u8);
        }
        table
    });
    table.get(c as usize).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(flags('a' as u32).is_letter());
        assert!(flags('é' as u32).is_letter());
        assert!(flags('你' as u32).is_letter());
        assert!(flags('7' as u32).is_number());
        assert!(flags('½' as u32).is_number());
        assert!(flags(' ' as u32).is_whitespace());
        assert!(flags(0x3000).is_whitespace());
        assert_eq!(flags('!' as u32).category(), CpFlags::PUNCTUATION);
        assert_eq!(flags('$' as u32).category(), CpFlags::SYMBOL);
        assert_eq!(flags(0x301).category(), CpFlags::ACCENT_MARK);
        assert_eq!(flags(0x1F642).category(), CpFlags::SYMBOL);
        assert_eq!(flags(0x10FFFF).category(), CpFlags::UNDEFINED);
        assert_eq!(flags(0x0378).category(), CpFlags::UNDEFINED);
        assert!(flags(0x200B).is_control());
    }

    #[test]
    fn normalization_keeps_the_base_letter() {
        assert_eq!(nfd_first('é' as u32), 'e' as u32);
        assert_eq!(nfd_first('Å' as u32), 'A' as u32);
        assert_eq!(nfd_first('a' as u32), 'a' as u32);
        assert_eq!(nfd_first(0xAC00), 0x1100);
        assert_eq!(to_lower('Ä' as u32), 'ä' as u32);
        assert_eq!(to_lower(0x130), 'i' as u32);
        assert_eq!(to_lower(0x110000), 0x110000);
    }

    #[test]
    fn byte_table_round_trips() {
        let table = byte_to_unicode();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(unicode_to_byte(table[b as usize]), Some(b));
        }
    }

    #[test]
    fn decoding_replaces_invalid_bytes() {
        let cps: Vec<u32> = decode_cpts(b"a\xC3\xA9\xFFb\xE4\xBD")
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(cps, vec![0x61, 0xE9, 0xFFFD, 0x62, 0xFFFD, 0xFFFD]);
    }
}
