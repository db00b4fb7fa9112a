use gguf::{GgmlType, GgufFile};
use kernels::*;
fn main() {
    let f = GgufFile::open(std::env::args().nth(1).unwrap()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for t in f.tensors() {
        if t.dims.len() < 2 || !seen.insert(t.ggml_type) {
            continue;
        }
        let k = t.dims[0] as usize;
        let rb = t.ggml_type.row_bytes(k as u64).unwrap() as usize;
        let data = f.tensor_data(t);
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let mut worst = 0f64;
        for r in 0..16 {
            let row = &data[r * rb..(r + 1) * rb];
            let mut wf = vec![0f32; k];
            rkinfer::backend::cpu::dequantize_row(t.ggml_type, row, &mut wf).unwrap();
            let (got, xq): (f32, Vec<f32>) = match t.ggml_type {
                GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0 => {
                    let mut q = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; k / 32];
                    quantize_row_q8_0(&x, &mut q);
                    let mut xq = vec![0f32; k];
                    dequantize_row_q8_0(&q, &mut xq);
                    let g = match t.ggml_type {
                        GgmlType::Q8_0 => vec_dot_q8_0_q8_0(as_blocks(row).unwrap(), &q),
                        GgmlType::Q5_0 => vec_dot_q5_0_q8_0(as_blocks(row).unwrap(), &q),
                        _ => vec_dot_q4_0_q8_0(as_blocks(row).unwrap(), &q),
                    };
                    (g, xq)
                }
                GgmlType::Q4_1 => {
                    let mut q = vec![
                        BlockQ8_1 {
                            d: 0,
                            s: 0,
                            qs: [0; 32]
                        };
                        k / 32
                    ];
                    quantize_row_q8_1(&x, &mut q);
                    let xq: Vec<f32> = q
                        .iter()
                        .flat_map(|b| {
                            let d = f16_to_f32(b.d);
                            b.qs.iter().map(move |&v| v as f32 * d)
                        })
                        .collect();
                    (vec_dot_q4_1_q8_1(as_blocks(row).unwrap(), &q), xq)
                }
                GgmlType::Q4_K | GgmlType::Q6_K => {
                    let mut q = vec![
                        BlockQ8K {
                            d: 0.0,
                            qs: [0; 256],
                            bsums: [0; 16]
                        };
                        k / 256
                    ];
                    quantize_row_q8_k(&x, &mut q);
                    let xq: Vec<f32> = q
                        .iter()
                        .flat_map(|b| b.qs.iter().map(move |&v| v as f32 * b.d))
                        .collect();
                    let g = if t.ggml_type == GgmlType::Q4_K {
                        vec_dot_q4_k_q8_k(as_blocks(row).unwrap(), &q)
                    } else {
                        vec_dot_q6_k_q8_k(as_blocks(row).unwrap(), &q)
                    };
                    (g, xq)
                }
                _ => continue,
            };
            let want: f64 = wf.iter().zip(&xq).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm: f64 = wf
                .iter()
                .zip(&xq)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            worst = worst.max((got as f64 - want).abs() / norm);
        }
        println!(
            "{} {:?} k={} isa={} worst rel err {:.2e}",
            t.name,
            t.ggml_type,
            k,
            isa(),
            worst
        );
    }
}
