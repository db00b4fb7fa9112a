//! Each kind of malformed file gives its own error, naming the byte offset.

mod common;

use common::Raw;
use gguf::{GgufError, GgufFile, GgufWriter, Value};

fn parse(r: &Raw) -> GgufError {
    GgufFile::from_bytes(r.bytes.clone()).expect_err("must be rejected")
}

/// A valid single-tensor file: one F32 tensor of 8 elements.
fn valid() -> Raw {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 32);
    r.tensor("t", &[8], 0, 0).pad(32).zeros(32);
    r
}

#[test]
fn valid_raw_file_parses() {
    let f = GgufFile::from_bytes(valid().bytes).unwrap();
    assert_eq!(f.tensors()[0].size, 32);
    assert_eq!(f.tensor_data(&f.tensors()[0]).len(), 32);
    let mut v2 = valid();
    v2.bytes[4] = 2;
    assert_eq!(GgufFile::from_bytes(v2.bytes).unwrap().version(), 2);
}

#[test]
fn empty_and_bad_magic() {
    assert!(matches!(parse(&Raw::default()), GgufError::Empty));
    let e = parse(&Raw {
        bytes: b"PK\x03\x04 this is a zip".to_vec(),
    });
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e:?}");
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
    assert_eq!(e.offset(), Some(0));
    // A prefix of the magic is a truncated GGUF file, anything else is not GGUF.
    let e = parse(&Raw {
        bytes: b"GG".to_vec(),
    });
    assert!(matches!(e, GgufError::Truncated { .. }), "{e:?}");
    let e = parse(&Raw {
        bytes: b"X".to_vec(),
    });
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e:?}");
}

#[test]
fn versions() {
    for (v, needle) in [
        (1u32, "version 1"),
        (4, "version 4"),
        (0, "version 0"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut r = valid();
        r.bytes[4..8].copy_from_slice(&v.to_le_bytes());
        let e = parse(&r);
        assert!(matches!(e, GgufError::UnsupportedVersion { .. }), "{e:?}");
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().contains("offset 4"), "{e}");
    }
}

#[test]
fn truncation_names_the_field_and_offset() {
    let r = valid();
    let e = GgufFile::from_bytes(r.bytes[..10].to_vec()).unwrap_err();
    match &e {
        GgufError::Truncated { what, offset, .. } => {
            assert_eq!(what, "tensor count");
            assert_eq!(*offset, 8);
        }
        other => panic!("{other:?}"),
    }
    // Cut inside the data: the tensor is out of bounds.
    let e = GgufFile::from_bytes(r.bytes[..r.bytes.len() - 1].to_vec()).unwrap_err();
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e:?}");
    assert!(e.to_string().contains("\"t\""), "{e}");
}

#[test]
fn impossible_counts_are_rejected_before_allocating() {
    let r = Raw::header(3, u64::MAX, 0);
    assert!(matches!(
        parse(&r),
        GgufError::TooManyEntries { what: "tensor", .. }
    ));
    let r = Raw::header(3, 0, 1 << 60);
    let e = parse(&r);
    assert!(
        matches!(
            e,
            GgufError::TooManyEntries {
                what: "metadata entry",
                offset: 16,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn string_and_array_limits() {
    // A key claiming an absurd length.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(16);
    let e = parse(&r);
    assert!(
        matches!(e, GgufError::StringTooLong { offset: 24, .. }),
        "{e:?}"
    );
    // A plausible length past the end of the file.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1000).zeros(16);
    assert!(matches!(parse(&r), GgufError::Truncated { .. }));
    // Invalid UTF-8.
    let mut r = Raw::header(3, 0, 1);
    r.u64(2).u8(0xff).u8(0xfe).u32(4).u32(0);
    assert!(matches!(
        parse(&r),
        GgufError::InvalidUtf8 { offset: 24, .. }
    ));
    // An array claiming more elements than the file could hold.
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(4).u64(1 << 40).zeros(64);
    let e = parse(&r);
    assert!(matches!(e, GgufError::ArrayTooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("\"a\""), "{e}");
    // Unknown value type, also inside an array.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(
        parse(&r),
        GgufError::UnknownValueType {
            id: 13,
            offset: 33,
            ..
        }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(99).u64(0);
    assert!(matches!(
        parse(&r),
        GgufError::UnknownValueType { id: 99, .. }
    ));
    // Arrays nested too deep.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..20 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    assert!(matches!(parse(&r), GgufError::ArrayTooDeep { .. }));
}

#[test]
fn duplicate_and_empty_keys() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a.b", 1).kv_u32("a.b", 2);
    let e = parse(&r);
    assert!(
        matches!(e, GgufError::DuplicateKey { offset: 43, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("a.b"), "{e}");
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("", 1);
    assert!(matches!(parse(&r), GgufError::EmptyKey { offset: 24 }));
}

#[test]
fn alignment_must_be_u32_power_of_two() {
    for bad in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", bad);
        assert!(matches!(parse(&r), GgufError::BadAlignment { .. }), "{bad}");
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(10).u64(32);
    assert!(matches!(parse(&r), GgufError::BadAlignment { .. }));
    // Alignment 64 is honoured: an offset of 32 is then misaligned.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64);
    r.tensor("t", &[8], 0, 32).pad(64).zeros(128);
    assert!(matches!(
        parse(&r),
        GgufError::MisalignedTensor { alignment: 64, .. }
    ));
}

#[test]
fn tensor_info_checks() {
    let tensor_file = |name: &str, dims: &[u64], ty: u32, offset: u64| {
        let mut r = Raw::header(3, 1, 0);
        r.tensor(name, dims, ty, offset).pad(32).zeros(4096);
        r
    };
    let e = parse(&tensor_file("t", &[1, 1, 1, 1, 1], 0, 0));
    assert!(
        matches!(
            e,
            GgufError::BadDimCount {
                n_dims: 5,
                offset: 33,
                ..
            }
        ),
        "{e:?}"
    );
    let e = parse(&tensor_file("t", &[8, u64::MAX], 0, 0));
    assert!(matches!(e, GgufError::BadDim { dim: 1, .. }), "{e:?}");
    let e = parse(&tensor_file("t", &[1 << 40, 1 << 40], 0, 0));
    assert!(matches!(e, GgufError::TensorTooLarge { .. }), "{e:?}");
    for id in [4u32, 5, 31, 36, 38, 43, 1 << 31] {
        let e = parse(&tensor_file("t", &[32], id, 0));
        assert!(
            matches!(e, GgufError::UnknownTensorType { .. }),
            "{id}: {e:?}"
        );
        assert!(e.to_string().contains(&format!("type id {id}")), "{e}");
    }
    let e = parse(&tensor_file("t", &[100], 12, 0));
    assert!(
        matches!(
            e,
            GgufError::BadRowLength {
                block_size: 256,
                ..
            }
        ),
        "{e:?}"
    );
    let e = parse(&tensor_file("t", &[8], 0, 8));
    assert!(matches!(e, GgufError::MisalignedTensor { .. }), "{e:?}");
    let e = parse(&tensor_file("t", &[8], 0, 1 << 20));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e:?}");
    let e = parse(&tensor_file("t", &[8], 0, u64::MAX - 31));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e:?}");
    let e = parse(&tensor_file("", &[8], 0, 0));
    assert!(matches!(e, GgufError::BadTensorName { .. }), "{e:?}");
    let e = parse(&tensor_file(&"x".repeat(64), &[8], 0, 0));
    assert!(matches!(e, GgufError::BadTensorName { .. }), "{e:?}");
    // 63 bytes is the longest accepted name; zero dimensions is a scalar.
    assert!(GgufFile::from_bytes(tensor_file(&"x".repeat(63), &[8], 0, 0).bytes).is_ok());
    let f = GgufFile::from_bytes(tensor_file("s", &[], 0, 0).bytes).unwrap();
    assert_eq!(f.tensors()[0].n_elements(), 1);
}

#[test]
fn duplicate_and_overlapping_tensors() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .pad(32)
        .zeros(64);
    let e = parse(&r);
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e:?}");
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .pad(32)
        .zeros(96);
    let e = parse(&r);
    match &e {
        GgufError::TensorOverlap { first, second, .. } => {
            assert_eq!((first.as_str(), second.as_str()), ("a", "b"));
        }
        other => panic!("{other:?}"),
    }
    // Touching is fine, and so are empty tensors at the same offset.
    let mut r = Raw::header(3, 3, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 64)
        .tensor("c", &[0], 0, 64)
        .pad(32)
        .zeros(96);
    GgufFile::from_bytes(r.bytes).unwrap();
}

#[test]
fn open_reports_path_level_errors() {
    let dir = std::env::temp_dir().join(format!("gguf-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = GgufFile::open(dir.join("missing.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.gguf"), "{e}");
    let e = GgufFile::open(&dir).unwrap_err();
    assert!(matches!(e, GgufError::IsDirectory { .. }), "{e:?}");
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err();
    assert!(matches!(e.root(), GgufError::Empty), "{e:?}");
    assert!(e.to_string().contains("empty.gguf"), "{e}");
    let bad = dir.join("bad.gguf");
    let mut r = valid();
    r.bytes.truncate(40);
    std::fs::write(&bad, &r.bytes).unwrap();
    let e = GgufFile::open(&bad).unwrap_err();
    assert!(matches!(e.root(), GgufError::Truncated { .. }), "{e:?}");
    assert_eq!(e.offset(), Some(32));
    assert!(e.to_string().contains("truncated or corrupted"), "{e}");
    assert!(e.to_string().contains("key of metadata entry 0"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_what_the_reader_would() {
    let mut w = GgufWriter::new();
    w.add_kv("a", 1u32).unwrap();
    assert!(matches!(
        w.add_kv("a", 2u32),
        Err(GgufError::DuplicateKey { .. })
    ));
    assert!(matches!(
        w.add_kv("", 2u32),
        Err(GgufError::EmptyKey { .. })
    ));
    assert!(w.add_kv("general.alignment", 48u32).is_err());
    assert!(w.add_kv("general.alignment", Value::U64(64)).is_err());
    w.add_kv("general.alignment", 64u32).unwrap();
    assert_eq!(w.alignment(), 64);
    let t = gguf::GgmlType::Q4_0;
    assert!(matches!(
        w.add_tensor("x", &[33], t, vec![0u8; 18]),
        Err(GgufError::BadRowLength { .. })
    ));
    assert!(matches!(
        w.add_tensor("x", &[32], t, vec![0u8; 17]),
        Err(GgufError::TensorSizeMismatch {
            expected: 18,
            got: 17,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("x", &[32, 1, 1, 1, 1], t, vec![0u8; 18]),
        Err(GgufError::BadDimCount { .. })
    ));
    w.add_tensor("x", &[32], t, vec![0u8; 18]).unwrap();
    assert!(matches!(
        w.add_tensor("x", &[32], t, vec![0u8; 18]),
        Err(GgufError::DuplicateTensor { .. })
    ));
    let mut deep = gguf::Array::U8(vec![1]);
    for _ in 0..gguf::MAX_ARRAY_DEPTH {
        deep = gguf::Array::Array(vec![deep]);
    }
    assert!(matches!(
        w.add_kv("deep", deep),
        Err(GgufError::Unencodable { .. })
    ));
}

/// The GGUF format requires a multiple of 8 (llama.cpp a power of two):
/// alignment 1, 2 or 4 used to be accepted, and the misaligned tensor data
/// was later reported as a type without a kernel.
#[test]
fn alignment_must_be_a_multiple_of_8() {
    for bad in [1u32, 2, 4] {
        let mut r = Raw::header(3, 1, 1);
        r.kv_u32("general.alignment", bad);
        r.tensor("t", &[8], 0, 0).pad(32).zeros(32);
        let e = parse(&r);
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("multiple of 8"), "{e}");
        assert_eq!(e.offset(), Some(24 + 8 + 17 + 4), "{bad}");
        let mut w = GgufWriter::new();
        assert!(w.add_kv("general.alignment", bad).is_err(), "writer {bad}");
    }
    for good in [8u32, 16, 4096] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", good);
        let f = GgufFile::from_bytes(r.bytes).unwrap();
        assert_eq!(f.alignment(), u64::from(good));
    }
}

/// A corrupted length field can make a key, a tensor name or a value
/// megabytes long: messages quote at most a short prefix and say the size.
#[test]
fn messages_cap_long_quoted_values() {
    let long = "k".repeat(3_500_000);
    let short_enough = |e: &GgufError| {
        let msg = e.to_string();
        let start: String = msg.chars().take(400).collect();
        assert!(msg.len() < 400, "{} bytes: {start}", msg.len());
        assert!(msg.contains("3500000 bytes"), "{msg}");
    };
    // Unknown value type after a 3.5 MB key.
    let mut r = Raw::header(3, 0, 1);
    r.str(&long).u32(99);
    let e = parse(&r);
    assert!(matches!(e, GgufError::UnknownValueType { .. }), "{e:?}");
    short_enough(&e);
    // The value of that key is not UTF-8 (the key is in "what").
    let mut r = Raw::header(3, 0, 1);
    r.str(&long).u32(8).u64(2).u8(0xff).u8(0xff);
    let e = parse(&r);
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e:?}");
    short_enough(&e);
    // The same key twice.
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32(&long, 1).kv_u32(&long, 2);
    let e = parse(&r);
    assert!(matches!(e, GgufError::DuplicateKey { .. }), "{e:?}");
    short_enough(&e);
    // A tensor name of 3.5 MB.
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&long, &[8], 0, 0);
    let e = parse(&r);
    assert!(matches!(e, GgufError::BadTensorName { .. }), "{e:?}");
    short_enough(&e);
    // general.alignment holding a 3.5 MB string.
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str(&long);
    let e = parse(&r);
    assert!(matches!(e, GgufError::BadAlignment { .. }), "{e:?}");
    short_enough(&e);
    // Short values are quoted whole; a cut never splits a character.
    assert_eq!(gguf::quote("general.name"), "\"general.name\"");
    let wide = "é".repeat(1000);
    assert!(gguf::quote(&wide).ends_with("... (2000 bytes)"));
}
