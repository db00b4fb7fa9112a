//! Unit tests on small vocabularies built in code.

use super::*;

fn spm_vocab(extra: &[(&str, f32, i32)]) -> VocabConfig {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut scores = vec![0.0, 0.0, 0.0];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for &(t, s, ty) in extra {
        tokens.push(t.to_string());
        scores.push(s);
        types.push(ty);
    }
    VocabConfig {
        model: "llama".into(),
        tokens,
        scores,
        token_types: types,
        ..Default::default()
    }
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.token_id(text.as_bytes())
        .unwrap_or_else(|| panic!("no token {text:?}"))
}

#[test]
fn spm_merges_by_score_and_prefixes_space() {
    let tok = Tokenizer::new(spm_vocab(&[
        ("▁", -1.0, 1),
        ("a", -1.0, 1),
        ("b", -1.0, 1),
        ("c", -1.0, 1),
        ("ab", -3.0, 1),
        ("bc", -2.0, 1),
        ("▁a", -5.0, 1),
        ("▁ab", -4.0, 1),
    ]))
    .expect("vocab builds");
    assert!(tok.add_bos() && tok.add_space_prefix());
    // "▁abc": "bc" (-2) beats "ab" (-3) and "▁a" (-5); then nothing joins
    // "▁a"+"bc", so: ▁a? No: after bc, pairs are ▁+a (-5) then ▁a+bc (none).
    let ids = tok.encode("abc", true, false).expect("encodes");
    assert_eq!(ids, vec![1, id(&tok, "▁a"), id(&tok, "bc")]);
    let ids = tok.encode("ab", false, false).expect("encodes");
    assert_eq!(ids, vec![id(&tok, "▁ab")]);
}

#[test]
fn spm_score_ties_merge_leftmost_first() {
    let tok = Tokenizer::new(spm_vocab(&[("a", -1.0, 1), ("aa", -1.0, 1)])).expect("vocab builds");
    let mut cfg_no_prefix = spm_vocab(&[("a", -1.0, 1), ("aa", -1.0, 1)]);
    cfg_no_prefix.add_space_prefix = Some(false);
    let tok2 = Tokenizer::new(cfg_no_prefix).expect("vocab builds");
    assert_eq!(
        tok2.encode("aaa", false, false).expect("encodes"),
        vec![id(&tok, "aa"), id(&tok, "a")]
    );
}

#[test]
fn spm_byte_fallback_for_unknown_characters() {
    let mut cfg = spm_vocab(&[("h", -1.0, 1), ("i", -1.0, 1)]);
    cfg.add_space_prefix = Some(false);
    let tok = Tokenizer::new(cfg).expect("vocab builds");
    let ids = tok.encode("hé", false, false).expect("encodes");
    assert_eq!(
        ids,
        vec![id(&tok, "h"), id(&tok, "<0xC3>"), id(&tok, "<0xA9>")]
    );
    assert_eq!(tok.decode(&ids), "hé");
    // A vocabulary without byte tokens cannot encode it.
    let bare = VocabConfig {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "<s>".into(), "</s>".into(), "h".into()],
        add_space_prefix: Some(false),
        ..Default::default()
    };
    let tok = Tokenizer::new(bare).expect("vocab builds");
    assert!(tok.encode("é", false, false).is_err());
}

#[test]
fn user_defined_tokens_split_before_merging_longest_first() {
    let mut cfg = spm_vocab(&[
        ("x", -1.0, 1),
        ("\n", 0.0, 4),
        ("\n\n", 0.0, 4),
        ("<b>", 0.0, 4),
        ("<start>", 0.0, 3),
    ]);
    cfg.add_space_prefix = Some(false);
    let tok = Tokenizer::new(cfg).expect("vocab builds");
    let ids = tok.encode("x\n\n\nx<b>", false, false).expect("encodes");
    assert_eq!(
        ids,
        vec![
            id(&tok, "x"),
            id(&tok, "\n\n"),
            id(&tok, "\n"),
            id(&tok, "x"),
            id(&tok, "<b>")
        ]
    );
    // Control tokens only with parse_special.
    let plain = tok.encode("<start>", false, false).expect("encodes");
    assert!(!plain.contains(&id(&tok, "<start>")));
    assert_eq!(
        tok.encode("<start>x", false, true).expect("encodes"),
        vec![id(&tok, "<start>"), id(&tok, "x")]
    );
}

fn bpe_vocab(pre: &str, merges: &[&str], extra: &[&str]) -> VocabConfig {
    let table = unicode::byte_to_unicode();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
    tokens.extend(table.iter().map(|c| c.to_string()));
    tokens.extend(extra.iter().map(|s| s.to_string()));
    let mut types = vec![1; tokens.len()];
    types[0] = 3;
    VocabConfig {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        token_types: types,
        merges: merges.iter().map(|s| s.to_string()).collect(),
        bos: Some(0),
        eos: Some(0),
        ..Default::default()
    }
}

#[test]
fn bpe_merges_by_rank_within_words() {
    let tok = Tokenizer::new(bpe_vocab(
        "gpt-2",
        &["l o", "Ġ lo", "lo w", "Ġlo w"],
        &["lo", "low", "Ġlo", "Ġlow"],
    ))
    .expect("vocab builds");
    let ids = tok.encode("low low", false, false).expect("encodes");
    assert_eq!(ids, vec![id(&tok, "low"), id(&tok, "Ġlow")]);
    assert_eq!(tok.decode(&ids), "low low");
    // Non-ASCII goes byte by byte through the GPT-2 table.
    let ids = tok.encode("é", false, false).expect("encodes");
    assert_eq!(ids, vec![id(&tok, "Ã"), id(&tok, "©")]);
    assert_eq!(tok.decode(&ids), "é");
}

#[test]
fn bpe_unknown_pre_tokenizer_is_an_error() {
    assert!(matches!(
        Tokenizer::new(bpe_vocab("no-such-pre", &["a b"], &[])),
        Err(TokenizerError::UnknownPreTokenizer(_))
    ));
    assert!(matches!(
        Tokenizer::new(bpe_vocab("gpt-2", &[], &[])),
        Err(TokenizerError::MissingMerges)
    ));
}

#[test]
fn llama3_pre_adds_bos_and_ignores_merges() {
    let mut cfg = bpe_vocab("llama-bpe", &["a b"], &["abab"]);
    cfg.bos = Some(1);
    let tok = Tokenizer::new(cfg).expect("vocab builds");
    assert!(tok.add_bos());
    // "abab" is a token by itself: taken whole although no merge makes it.
    assert_eq!(
        tok.encode("abab", true, false).expect("encodes"),
        vec![1, id(&tok, "abab")]
    );
}

#[test]
fn eog_and_flags_follow_the_vocabulary() {
    let mut cfg = bpe_vocab("smollm", &["a b"], &["<|im_end|>"]);
    cfg.add_bos = Some(false);
    let tok = Tokenizer::new(cfg).expect("vocab builds");
    let im_end = id(&tok, "<|im_end|>");
    assert!(tok.is_eog(im_end) && tok.is_eog(0));
    assert!(tok.is_control(im_end));
    // Several EOT-like texts: the lowest id wins.
    assert_eq!(tok.eot(), Some(0));
    assert!(!tok.add_bos());
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let mut d = StreamDecoder::new();
    let snowman = "☃".as_bytes();
    assert_eq!(d.push_bytes(b"a"), "a");
    assert_eq!(d.push_bytes(&snowman[..1]), "");
    assert_eq!(d.push_bytes(&snowman[1..2]), "");
    assert_eq!(d.push_bytes(&snowman[2..]), "☃");
    assert_eq!(d.push_bytes(b"\xFFb"), "\u{FFFD}b");
    assert_eq!(d.push_bytes(&snowman[..2]), "");
    assert_eq!(d.pending().len(), 2);
    assert_eq!(d.finish(), "\u{FFFD}");
    assert!(d.pending().is_empty());
}

#[test]
fn clean_up_spaces_as_llama_cpp() {
    assert_eq!(
        clean_up_spaces(b"a , b . c ' d it 's I 'm we 're x 'll"),
        b"a, b. c'd it's I'm we're x 'll".to_vec()
    );
}

/// The straightforward special-token partition: every match collected,
/// sorted by (priority, start), taken where no earlier cut overlaps; the
/// cuts as (start, len, id).
fn partition_by_sorting(tok: &Tokenizer, text: &str, parse_special: bool) -> Vec<(usize, u32)> {
    let bytes = text.as_bytes();
    let mut hits: Vec<(u32, usize, usize)> = Vec::new();
    for start in 0..bytes.len() {
        tok.special_trie.prefixes(&bytes[start..], |prio, len| {
            let a = tok.attrs[tok.specials[prio as usize] as usize];
            if parse_special || a & (attr::CONTROL | attr::UNKNOWN) == 0 {
                hits.push((prio, start, len));
            }
        });
    }
    hits.sort_unstable();
    let mut taken = vec![false; bytes.len()];
    let mut cuts = Vec::new();
    for (prio, start, len) in hits {
        if !taken[start..start + len].iter().any(|&t| t) {
            taken[start..start + len].iter_mut().for_each(|t| *t = true);
            cuts.push((start, tok.specials[prio as usize]));
        }
    }
    cuts.sort_unstable();
    cuts
}

fn cuts_of(tok: &Tokenizer, text: &str, parse_special: bool) -> Vec<(usize, u32)> {
    let mut pos = 0;
    let mut cuts = Vec::new();
    tok.partition(text, parse_special, |frag| {
        match frag {
            Fragment::Text(t) => pos += t.len(),
            Fragment::Token(id) => {
                cuts.push((pos, id));
                pos += tok.tokens[id as usize].len();
            }
        }
        Ok(())
    })
    .expect("partition");
    assert_eq!(pos, text.len());
    cuts
}

proptest::proptest! {
    /// Overlapping special tokens of several lengths (user-defined runs of
    /// spaces and newlines as Gemma's, control tokens sharing prefixes):
    /// the heap partition cuts exactly where sorting all matches does, and
    /// "abxyz" cuts "ab" after "abx" loses to "xyz".
    #[test]
    fn partition_matches_sorting_every_match(
        pieces in proptest::collection::vec(
            proptest::sample::select(vec![
                " ", "  ", "\n", "\n\n", "a", "ab", "<c>", "<", "b<c", "x", "xy", "z",
            ]),
            0..40,
        ),
        parse_special in proptest::bool::ANY,
    ) {
        let mut extra = vec![("a", -1.0, 1), ("b", -1.0, 1), ("x", -1.0, 1)];
        let runs: Vec<String> = (1..=5)
            .flat_map(|n| [" ".repeat(n), "\n".repeat(n)])
            .collect();
        extra.extend(runs.iter().map(|r| (r.as_str(), 0.0, 4)));
        // "xyz" outranks "abx" (same length, lower id): in "abxyz" the cut
        // at "xyz" blocks "abx", and "ab" is taken at the same start.
        extra.extend([("xyz", 0.0, 4), ("abx", 0.0, 4)]);
        extra.extend([("ab", 0.0, 4), ("b<c", 0.0, 4), ("<c>", 0.0, 3), ("<c", 0.0, 3)]);
        let tok = Tokenizer::new(spm_vocab(&extra)).expect("vocab builds");
        let text: String = pieces.concat();
        proptest::prop_assert_eq!(
            cuts_of(&tok, &text, parse_special),
            partition_by_sorting(&tok, &text, parse_special)
        );
    }
}

#[test]
fn a_blocked_special_gives_way_to_a_shorter_one_at_the_same_start() {
    let tok = Tokenizer::new(spm_vocab(&[
        ("xyz", 0.0, 4),
        ("abx", 0.0, 4),
        ("ab", 0.0, 4),
    ]))
    .expect("vocab builds");
    let (ab, xyz) = (id(&tok, "ab"), id(&tok, "xyz"));
    assert_eq!(cuts_of(&tok, "abxyz", false), vec![(0, ab), (2, xyz)]);
    assert_eq!(
        partition_by_sorting(&tok, "abxyz", false),
        vec![(0, ab), (2, xyz)]
    );
}
