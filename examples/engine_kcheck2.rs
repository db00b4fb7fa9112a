use kernels::*;
fn main() {
    for &k in &[32usize, 64, 96, 192, 256, 576, 640, 1536] {
        let x: Vec<f32> = (0..k)
            .map(|i| (((i as u64 * 2654435761 + k as u64) % 100000) as f32 / 50000.0 - 1.0) * 3.0)
            .collect();
        let mut a = vec![0u16; k];
        let mut b = vec![0u16; k];
        f32_to_f16_row(&x, &mut a);
        scalar::f32_to_f16_row(&x, &mut b);
        let d1 = a.iter().zip(&b).filter(|(p, q)| p != q).count();
        let mut fa = vec![0f32; k];
        let mut fb = vec![0f32; k];
        f16_to_f32_row(&a, &mut fa);
        scalar::f16_to_f32_row(&a, &mut fb);
        let d2 = fa.iter().zip(&fb).filter(|(p, q)| p != q).count();
        let y: Vec<u16> = b.iter().rev().cloned().collect();
        let va = vec_dot_f16(&a, &y);
        let vb = scalar::vec_dot_f16(&a, &y);
        let exact: f64 = a
            .iter()
            .zip(&y)
            .map(|(p, q)| f16_to_f32(*p) as f64 * f16_to_f32(*q) as f64)
            .sum();
        let mut q0 = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; k / 32];
        let mut q1 = q0.clone();
        quantize_row_q8_0(&x, &mut q0);
        scalar::quantize_row_q8_0(&x, &mut q1);
        let d3 = q0.iter().zip(&q1).filter(|(p, q)| p != q).count();
        let g0 = vec_dot_q8_0_q8_0(&q0, &q1);
        let g1 = scalar::vec_dot_q8_0_q8_0(&q0, &q1);
        println!("k={k} f16 {d1} {d2} dotf16 {va} {vb} exact {exact} q8_0 {d3} dotq8 {g0} {g1}");
    }
}
