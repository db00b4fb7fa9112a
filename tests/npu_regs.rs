//! The register command builder reproduces the known-good streams of
//! /work/shared/reference/npu-regs-expected.json word for word (copied to
//! tests/fixtures), both through the library and through `npu regs --json`.

use rkinfer::npu::command::regs::RegWrite;
use rkinfer::npu::command::task::{self, MatmulType, TaskDesc};

const EXPECTED: &str = include_str!("fixtures/npu-regs-expected.json");

struct Case {
    ty: MatmulType,
    m: u32,
    k: u32,
    n: u32,
    words: Vec<u64>,
    decoded: Vec<(u16, u16, u32)>,
}

fn cases() -> (Vec<Case>, [u32; 3]) {
    let v: serde_json::Value = serde_json::from_str(EXPECTED).expect("fixture parses");
    let addrs = [
        v["a_addr"].as_u64().unwrap() as u32,
        v["b_addr"].as_u64().unwrap() as u32,
        v["c_addr"].as_u64().unwrap() as u32,
    ];
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let entries = c["entries"].as_array().unwrap();
            Case {
                ty: MatmulType::from_name(c["type"].as_str().unwrap()).unwrap(),
                m: c["m"].as_u64().unwrap() as u32,
                k: c["k"].as_u64().unwrap() as u32,
                n: c["n"].as_u64().unwrap() as u32,
                words: entries.iter().map(|e| e["u64"].as_u64().unwrap()).collect(),
                decoded: entries
                    .iter()
                    .map(|e| {
                        (
                            e["target"].as_u64().unwrap() as u16,
                            e["reg"].as_u64().unwrap() as u16,
                            e["value"].as_u64().unwrap() as u32,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    (cases, addrs)
}

#[test]
fn builder_reproduces_known_good_streams_word_for_word() {
    let (cases, [a, b, c]) = cases();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let desc = TaskDesc {
            ty: case.ty,
            m: case.m,
            k: case.k,
            n: case.n,
            a_addr: a,
            b_addr: b,
            c_addr: c,
        };
        let words = task::task_words(&desc, None).unwrap();
        assert_eq!(words.len(), case.words.len(), "{:?}", case.ty);
        for (i, (got, want)) in words.iter().zip(&case.words).enumerate() {
            let g = RegWrite::decode(*got);
            assert_eq!(
                got,
                want,
                "{} entry {i}: {} {} ({:#06x}) got {:#x}",
                case.ty.name(),
                g.block_name(),
                g.register_name(),
                g.offset,
                g.value
            );
            let (t, o, v) = case.decoded[i];
            assert_eq!((g.target, g.offset, g.value), (t, o, v));
        }
    }
}

#[test]
fn regs_json_reproduces_known_good_streams() {
    let (cases, [a, b, c]) = cases();
    for case in cases {
        let args = rkinfer::cli::npu::RegsArgs {
            m: case.m as usize,
            k: case.k as usize,
            n: case.n as usize,
            ty: case.ty.name().into(),
            json: true,
            a_addr: a,
            b_addr: b,
            c_addr: c,
            regcmd_addr: 0x4000_0000,
            cores: vec![0],
            chain: "pc".into(),
        };
        let v = rkinfer::cli::npu::regs_json(&args).unwrap();
        let tasks = v["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1);
        let words: Vec<u64> = tasks[0]["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        assert_eq!(words, case.words, "{}", case.ty.name());
        let names: Vec<&str> = tasks[0]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["register"].as_str().unwrap())
            .collect();
        assert_eq!(names[0], "S_POINTER");
        assert_eq!(names[1], "CONV_CON1");
    }
}

#[test]
fn other_single_task_shapes_follow_the_formulas() {
    // M=8 K=128 N=64 int8: every shape-dependent field moves as documented.
    let desc = TaskDesc {
        ty: MatmulType::Int8,
        m: 8,
        k: 128,
        n: 64,
        a_addr: 0x1000_0000,
        b_addr: 0x2000_0000,
        c_addr: 0x3000_0000,
    };
    let words = task::task_words(&desc, None).unwrap();
    let get = |target: u16, off: u16| {
        words
            .iter()
            .map(|w| RegWrite::decode(*w))
            .find(|r| r.target == target && r.offset == off)
            .unwrap()
            .value
    };
    use rkinfer::npu::command::regs::{TARGET_CNA as CNA, TARGET_CORE as CORE, TARGET_DPU as DPU};
    assert_eq!(get(CNA, 0x1010), 9 << 4);
    assert_eq!(get(CNA, 0x1020), (1 << 16) | 8);
    assert_eq!(get(CNA, 0x1024), (127 << 16) | 128);
    assert_eq!(get(CNA, 0x1030), 64 * 128);
    assert_eq!(get(CNA, 0x1038), (1 << 24) | (1 << 16) | 64);
    assert_eq!(get(CNA, 0x1044), 2);
    assert_eq!(get(CNA, 0x1080), 4);
    assert_eq!(get(CORE, 0x3014), 7 << 16);
    assert_eq!(get(DPU, 0x403C), (63 << 16) | 63);
    assert_eq!(get(DPU, 0x40C0), (8 * 8) << 4);
}

#[test]
fn chained_tasks_use_the_amount_formula_and_16_byte_alignment() {
    let args = rkinfer::cli::npu::RegsArgs {
        m: 200,
        k: 1024,
        n: 32,
        ty: "fp16".into(),
        json: true,
        a_addr: 0x1000_0000,
        b_addr: 0x2000_0000,
        c_addr: 0x3000_0000,
        regcmd_addr: 0x4000_0000,
        cores: vec![0],
        chain: "pc".into(),
    };
    let v = rkinfer::cli::npu::regs_json(&args).unwrap();
    let tasks = v["tasks"].as_array().unwrap();
    assert!(tasks.len() >= 2, "M=200 K=1024 fp16 needs chained tasks");
    for (i, t) in tasks.iter().enumerate() {
        let words: Vec<u64> = t["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        assert_eq!(t["regcmd_addr"].as_u64().unwrap() % 16, 0);
        let next = RegWrite::decode(words[task::BODY_ENTRIES]);
        let amount = RegWrite::decode(words[task::BODY_ENTRIES + 1]);
        if i + 1 < tasks.len() {
            assert_eq!(
                next.value as u64,
                tasks[i + 1]["regcmd_addr"].as_u64().unwrap()
            );
            assert_eq!(
                amount.value,
                ((task::BODY_ENTRIES + 4) as u32).div_ceil(2) - 1
            );
        } else {
            assert_eq!(words[task::BODY_ENTRIES], 0);
            assert_eq!(amount.value, 0);
        }
        assert_eq!(words[task::BODY_ENTRIES + 2], 0x0041_0000_0000_0000);
        assert_eq!(words[task::BODY_ENTRIES + 3], 0x0081_0000_000D_0008);
    }
}

#[test]
fn tiling_keeps_to_the_tested_envelope_unless_widened() {
    use rkinfer::npu::ops::matmul::{plan, Envelope, MatmulOptions};
    let tested = MatmulOptions::default();
    for (ty, m_max) in [(MatmulType::Int8, 544), (MatmulType::Fp16, 384)] {
        let p = plan(ty, 2000, 16384, 8192, &tested).unwrap();
        assert!(p.n_tiles.iter().all(|(s, _)| s.len <= 4096), "{ty:?}");
        assert!(p.m_tiles.iter().all(|s| s.len <= m_max), "{ty:?}");
        assert!(p.k_segs.iter().all(|s| s.len <= 8192), "{ty:?}");
    }
    let wide = MatmulOptions {
        envelope: Envelope::FieldLimits,
        k_segment: 1 << 20,
        ..Default::default()
    };
    let p = plan(MatmulType::Int8, 8, 16384, 8192, &wide).unwrap();
    assert_eq!(p.n_tiles.len(), 1);
    assert_eq!(p.k_segs.len(), 1);
    let p = plan(MatmulType::Int8, 1000, 64, 32, &wide).unwrap();
    assert!(p.m_tiles.iter().any(|s| s.len > 544));
    // K - 1 must fit DATA_SIZE1's 14-bit field, even where a CBUF bank
    // would hold the row (int8 K = 16416 is 16 KB).
    let desc = |k| TaskDesc {
        ty: MatmulType::Int8,
        m: 4,
        k,
        n: 32,
        a_addr: 0x1000_0000,
        b_addr: 0x2000_0000,
        c_addr: 0x3000_0000,
    };
    assert!(desc(16384).validate().is_ok());
    let err = desc(16416).validate().unwrap_err().to_string();
    assert!(err.contains("DATA_SIZE1"), "{err}");
    // Absurd shapes are refused by arithmetic, not by running out of memory.
    let err = plan(MatmulType::Int8, usize::MAX, 64, 32, &tested).unwrap_err();
    assert!(err.to_string().contains("split the matmul"), "{err}");
}
