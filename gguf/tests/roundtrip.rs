//! Property tests: anything GgufWriter writes, GgufFile reads back equal;
//! streamed, borrowed and owned tensor data give identical files.

mod common;

use common::value_eq;
use gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use proptest::collection::vec;
use proptest::prelude::*;

fn string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-z_.]{0,20}", Just(String::new())]
}

fn leaf_array() -> impl Strategy<Value = Array> {
    let n = 0..6usize;
    prop_oneof![
        vec(any::<u8>(), n.clone()).prop_map(Array::U8),
        vec(any::<i8>(), n.clone()).prop_map(Array::I8),
        vec(any::<u16>(), n.clone()).prop_map(Array::U16),
        vec(any::<i16>(), n.clone()).prop_map(Array::I16),
        vec(any::<u32>(), n.clone()).prop_map(Array::U32),
        vec(any::<i32>(), n.clone()).prop_map(Array::I32),
        vec(any::<u64>(), n.clone()).prop_map(Array::U64),
        vec(any::<i64>(), n.clone()).prop_map(Array::I64),
        vec(any::<u32>().prop_map(f32::from_bits), n.clone()).prop_map(Array::F32),
        vec(any::<u64>().prop_map(f64::from_bits), n.clone()).prop_map(Array::F64),
        vec(any::<bool>(), n.clone()).prop_map(Array::Bool),
        vec(string(), n).prop_map(Array::String),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    // Nested arrays up to 4 levels (GGUF allows arrays of arrays).
    leaf_array().prop_recursive(3, 24, 4, |inner| vec(inner, 0..4).prop_map(Array::Array))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
        any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
        any::<bool>().prop_map(Value::Bool),
        string().prop_map(Value::String),
        array().prop_map(Value::Array),
    ]
}

#[derive(Debug, Clone)]
struct TensorSpec {
    ty: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
    /// 0: owned, 1: borrowed, 2: streamed in chunks of `chunk` bytes.
    mode: u8,
    chunk: usize,
}

fn tensor() -> impl Strategy<Value = TensorSpec> {
    (
        prop::sample::select(GgmlType::ALL.to_vec()),
        0..3u64,
        vec(1..4u64, 0..4),
        0..3u8,
        1..64usize,
        any::<u64>(),
    )
        .prop_map(|(ty, blocks, rest, mode, chunk, seed)| {
            let mut dims = vec![blocks * ty.block_size() as u64];
            dims.extend(rest);
            let n: u64 = dims.iter().product();
            let size = ty.row_bytes(n).unwrap() as usize;
            // Cheap deterministic filler; the bytes only need to round-trip.
            let mut x = seed | 1;
            let data = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            TensorSpec {
                ty,
                dims,
                data,
                mode,
                chunk,
            }
        })
}

const ALIGNMENTS: [u32; 5] = [8, 16, 32, 64, 256];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn written_files_read_back_equal(
        kvs in vec((string(), value()), 0..12),
        tensors in vec(tensor(), 0..6),
        alignment in prop::option::of(prop::sample::select(ALIGNMENTS.to_vec())),
    ) {
        // Unique, non-empty keys: prefix with the index.
        let kvs: Vec<(String, Value)> =
            kvs.into_iter().enumerate().map(|(i, (k, v))| (format!("k{i}.{k}"), v)).collect();
        let mut w = GgufWriter::new();
        let mut expected_meta = Vec::new();
        if let Some(a) = alignment {
            w.add_kv("general.alignment", a).unwrap();
            expected_meta.push(("general.alignment".to_string(), Value::U32(a)));
        }
        for (k, v) in &kvs {
            w.add_kv(k.clone(), v.clone()).unwrap();
            expected_meta.push((k.clone(), v.clone()));
        }
        for (i, t) in tensors.iter().enumerate() {
            w.add_tensor(format!("tensor.{i}"), &t.dims, t.ty, t.data.clone()).unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        prop_assert_eq!(f.version(), 3);
        prop_assert_eq!(f.alignment(), u64::from(alignment.unwrap_or(32)));
        prop_assert_eq!(f.metadata().len(), expected_meta.len());
        for ((ka, va), (kb, vb)) in f.metadata().iter().zip(&expected_meta) {
            prop_assert_eq!(ka, kb);
            prop_assert!(value_eq(va, vb), "{}: {:?} != {:?}", ka, va, vb);
            prop_assert!(value_eq(f.get(ka).unwrap(), vb));
        }
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for (i, (info, t)) in f.tensors().iter().zip(&tensors).enumerate() {
            prop_assert_eq!(&info.name, &format!("tensor.{i}"));
            prop_assert_eq!(&info.dims, &t.dims);
            prop_assert_eq!(info.ggml_type, t.ty);
            prop_assert_eq!(info.size as usize, t.data.len());
            prop_assert_eq!(info.offset % f.alignment(), 0);
            prop_assert!(f.tensor_data(info) == &t.data[..]);
        }
    }

    #[test]
    fn streamed_borrowed_and_owned_data_write_the_same_bytes(
        tensors in vec(tensor(), 1..6),
        alignment in prop::sample::select(ALIGNMENTS.to_vec()),
    ) {
        let mut owned = GgufWriter::new();
        let mut mixed = GgufWriter::new();
        for w in [&mut owned, &mut mixed] {
            w.add_kv("general.alignment", alignment).unwrap();
            w.add_kv("general.name", "stream test").unwrap();
        }
        for (i, t) in tensors.iter().enumerate() {
            let name = format!("t{i}");
            owned.add_tensor(name.clone(), &t.dims, t.ty, t.data.clone()).unwrap();
            match t.mode {
                0 => mixed.add_tensor(name, &t.dims, t.ty, t.data.clone()).unwrap(),
                1 => mixed.add_tensor(name, &t.dims, t.ty, &t.data[..]).unwrap(),
                _ => {
                    let size = mixed.add_tensor_info(name, &t.dims, t.ty).unwrap();
                    prop_assert_eq!(size as usize, t.data.len());
                }
            }
        }
        let expected = owned.to_bytes().unwrap();
        let mut s = mixed.stream_to(Vec::new()).unwrap();
        for t in tensors.iter().filter(|t| t.mode >= 2) {
            for chunk in t.data.chunks(t.chunk) {
                s.write_tensor_data(chunk).unwrap();
            }
            if t.data.is_empty() {
                s.write_tensor_data(&[]).unwrap();
            }
        }
        let got = s.finish().unwrap();
        prop_assert!(got == expected);
    }
}

#[test]
fn stream_errors_on_wrong_amounts() {
    let mut w = GgufWriter::new();
    w.add_tensor_info("a", &[8], GgmlType::F32).unwrap();
    let mut s = w.stream_to(Vec::new()).unwrap();
    assert_eq!(s.next_tensor().unwrap().name, "a");
    s.write_tensor_data(&[0; 16]).unwrap();
    assert!(
        s.write_tensor_data(&[0; 17]).is_err(),
        "more than the tensor's size"
    );
    let e = s.finish().unwrap_err();
    assert!(e.to_string().contains("only 16 of 32"), "{e}");

    let mut w = GgufWriter::new();
    w.add_tensor("a", &[8], GgmlType::F32, vec![0u8; 32])
        .unwrap();
    let mut s = w.stream_to(Vec::new()).unwrap();
    assert!(s.next_tensor().is_none());
    assert!(
        s.write_tensor_data(&[1]).is_err(),
        "no tensor is waiting for data"
    );
    let bytes = s.finish().unwrap();
    assert!(GgufFile::from_bytes(bytes).is_ok());

    let mut w = GgufWriter::new();
    w.add_tensor_info("a", &[8], GgmlType::F32).unwrap();
    assert!(w.write_to(Vec::new()).is_err(), "deferred data never given");
}

#[test]
fn write_to_path_then_open() {
    let path = std::env::temp_dir().join(format!("gguf-roundtrip-{}.gguf", std::process::id()));
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "test").unwrap();
    w.add_kv("test.block_count", 3u64).unwrap();
    w.add_tensor("w", &[32, 2], GgmlType::Q8_0, vec![7u8; 68])
        .unwrap();
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.arch_u32("block_count").unwrap(), 3);
    assert_eq!(f.tensor_data_by_name("w").unwrap(), &[7u8; 68][..]);
    drop(f);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn set_kv_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "llama").unwrap();
    w.add_kv("general.file_type", 3u32).unwrap();
    w.add_kv("general.name", "x").unwrap();
    w.set_kv("general.file_type", 2u32).unwrap();
    w.set_kv("general.quantized_by", "rkinfer").unwrap();
    assert!(w.set_kv("general.alignment", 3u32).is_err());
    w.set_kv("general.alignment", 64u32).unwrap();
    assert!(w.set_kv("general.alignment", 6u32).is_err());
    assert_eq!(w.alignment(), 64);
    let keys: Vec<&str> = w.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.file_type",
            "general.name",
            "general.quantized_by",
            "general.alignment"
        ]
    );
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.get_u32("general.file_type").unwrap(), 2);
    assert_eq!(f.alignment(), 64);
}
