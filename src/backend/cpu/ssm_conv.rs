//! The causal depthwise convolution of recurrent layers (ggml_ssm_conv)
//! with its rolling window of previous inputs.

/// Convolves the batch's rows `x` (`channels` each) with per-channel taps
/// `w` (`channels` rows of `k` taps, oldest input first) over the window
/// `state` (the `k - 1` inputs before the batch, `channels` each, oldest
/// first) followed by the batch; then slides the window to the batch's last
/// `k - 1` inputs. Each output is a chain of fused multiply-adds over the
/// taps in order, as GCC compiles ggml_compute_forward_ssm_conv_f32.
pub fn ssm_conv(
    x: &[f32],
    channels: usize,
    w: &[f32],
    state: &mut [f32],
    out: &mut [f32],
) -> Result<(), String> {
    let k = w.len().checked_div(channels).unwrap_or(0);
    let n = x.len().checked_div(channels).unwrap_or(0);
    if k < 2
        || w.len() != k * channels
        || x.len() != n * channels
        || out.len() != x.len()
        || state.len() != (k - 1) * channels
    {
        return Err(format!(
            "convolution of {} inputs of {channels} channels with {} taps over a window of {}: shapes differ",
            x.len(),
            w.len(),
            state.len()
        ));
    }
    // The window followed by the batch: input i of the sequence.
    let at = |i: usize, c: usize| -> f32 {
        if i < k - 1 {
            state[i * channels + c]
        } else {
            x[(i - (k - 1)) * channels + c]
        }
    };
    for (t, ot) in out.chunks_exact_mut(channels).enumerate() {
        for (c, o) in ot.iter_mut().enumerate() {
            let taps = &w[c * k..(c + 1) * k];
            *o = taps
                .iter()
                .enumerate()
                .fold(0f32, |acc, (i, &wi)| at(t + i, c).mul_add(wi, acc));
        }
    }
    // The new window: the last k - 1 inputs of the sequence.
    let total = k - 1 + n;
    let next: Vec<f32> = (total - (k - 1)..total)
        .flat_map(|i| (0..channels).map(move |c| (i, c)))
        .map(|(i, c)| at(i, c))
        .collect();
    state.copy_from_slice(&next);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convolves_across_the_window_and_slides_it() {
        // 2 channels, 3 taps.
        let w = [1.0f32, 2.0, 3.0, 0.5, 0.25, 0.125];
        let mut state = [10.0f32, 20.0, 30.0, 40.0]; // inputs -2 and -1
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0f32; 4];
        ssm_conv(&x, 2, &w, &mut state, &mut out).unwrap();
        // Token 0, channel 0: 10*1 + 30*2 + 1*3.
        assert_eq!(
            out,
            [
                73.0,
                20.0 * 0.5 + 40.0 * 0.25 + 2.0 * 0.125,
                30.0 + 2.0 + 9.0,
                40.0 * 0.5 + 0.5 + 0.5
            ]
        );
        assert_eq!(state, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn one_token_at_a_time_equals_one_batch() {
        let (ch, k, n) = (5usize, 4usize, 7usize);
        let w: Vec<f32> = (0..ch * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let x: Vec<f32> = (0..ch * n).map(|i| (i as f32 * 0.7).cos()).collect();
        let mut s1 = vec![0f32; (k - 1) * ch];
        let mut o1 = vec![0f32; ch * n];
        ssm_conv(&x, ch, &w, &mut s1, &mut o1).unwrap();
        let mut s2 = vec![0f32; (k - 1) * ch];
        let mut o2 = vec![0f32; ch * n];
        for t in 0..n {
            let r = t * ch..(t + 1) * ch;
            ssm_conv(&x[r.clone()], ch, &w, &mut s2, &mut o2[r]).unwrap();
        }
        assert_eq!(o1, o2);
        assert_eq!(s1, s2);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let mut s = [0f32; 2];
        let mut o = [0f32; 2];
        assert!(ssm_conv(&[1.0, 2.0], 2, &[1.0; 6], &mut s, &mut o).is_err());
        assert!(ssm_conv(&[1.0, 2.0], 2, &[1.0; 2], &mut s, &mut o).is_err());
    }
}
