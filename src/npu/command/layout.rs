//! Native NPU layouts as the simulator reads and writes them
//! (rk3588-npu.md section 4), written independently of the packer in
//! `quant::npu` so that each checks the other.
//!
//! - A (M x K): `[K/C2][M][C2]` with C2 elements per 16-byte atom.
//! - B (N x K): `[N/G][K/32][G][32]`, G = 16 fp16, 32 int8, 64 int4.
//! - C (M x N): `[N/C2][M][C2]`, C2 = 4 for 32-bit outputs, 8 for 16-bit.
//!
//! int4 elements are nibbles, the even element of a byte in the low nibble.
//! Multi-byte elements are little-endian.

/// Element index of A[m][k] in the native input layout.
pub fn a_index(m: usize, k: usize, rows: usize, atom: usize) -> usize {
    ((k / atom) * rows + m) * atom + k % atom
}

/// Element index of B[n][k] in the native weight layout.
pub fn b_index(n: usize, k: usize, depth: usize, group: usize) -> usize {
    (((n / group) * (depth / 32) + k / 32) * group + n % group) * 32 + k % 32
}

/// Element index of C[m][n] in the native output layout.
pub fn c_index(m: usize, n: usize, rows: usize, atom: usize) -> usize {
    ((n / atom) * rows + m) * atom + n % atom
}

/// Reads element `i` of `bits` (4, 8, 16 or 32) from a little-endian byte
/// buffer, as an unsigned bit pattern.
pub fn get_bits(buf: &[u8], i: usize, bits: u32) -> u32 {
    match bits {
        4 => {
            let b = buf[i / 2];
            u32::from(if i.is_multiple_of(2) { b & 0xF } else { b >> 4 })
        }
        8 => u32::from(buf[i]),
        16 => u32::from(u16::from_le_bytes([buf[2 * i], buf[2 * i + 1]])),
        _ => u32::from_le_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]),
    }
}

/// Writes element `i` of `bits` (4, 8, 16 or 32) into a byte buffer.
pub fn set_bits(buf: &mut [u8], i: usize, bits: u32, v: u32) {
    match bits {
        4 => {
            let b = &mut buf[i / 2];
            let v = (v & 0xF) as u8;
            *b = if i.is_multiple_of(2) {
                (*b & 0xF0) | v
            } else {
                (*b & 0x0F) | (v << 4)
            };
        }
        8 => buf[i] = v as u8,
        16 => buf[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_le_bytes()),
        _ => buf[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes()),
    }
}

/// Sign-extends a nibble.
pub fn nibble_to_i8(v: u32) -> i8 {
    (((v & 0xF) as u8) << 4) as i8 >> 4
}

/// Bytes of an A operand of `rows` x `depth` elements of `bits`.
pub fn a_bytes(rows: usize, depth: usize, bits: u32) -> usize {
    rows * depth * bits as usize / 8
}

/// Packs row-major A (`rows` x `depth`, element bit patterns) into the
/// native input layout.
pub fn pack_a(vals: &[u32], rows: usize, depth: usize, bits: u32) -> Vec<u8> {
    let atom = 128 / bits as usize;
    let mut out = vec![0u8; a_bytes(rows, depth, bits)];
    for m in 0..rows {
        for k in 0..depth {
            set_bits(
                &mut out,
                a_index(m, k, rows, atom),
                bits,
                vals[m * depth + k],
            );
        }
    }
    out
}

/// Packs row-major B (`cols` x `depth`) into the native weight layout.
pub fn pack_b(vals: &[u32], cols: usize, depth: usize, bits: u32, group: usize) -> Vec<u8> {
    let mut out = vec![0u8; a_bytes(cols, depth, bits)];
    for n in 0..cols {
        for k in 0..depth {
            set_bits(
                &mut out,
                b_index(n, k, depth, group),
                bits,
                vals[n * depth + k],
            );
        }
    }
    out
}

/// Unpacks the native output layout to row-major bit patterns.
pub fn unpack_c(buf: &[u8], rows: usize, cols: usize, out_bytes: u32) -> Vec<u32> {
    let atom = 16 / out_bytes as usize;
    let bits = out_bytes * 8;
    let mut out = vec![0u32; rows * cols];
    for m in 0..rows {
        for n in 0..cols {
            out[m * cols + n] = get_bits(buf, c_index(m, n, rows, atom), bits);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_nibble_order_low_is_even() {
        let vals: Vec<u32> = (0..64).map(|k| (k % 16) as u32).collect();
        let packed = pack_a(&vals, 1, 64, 4);
        assert_eq!(packed[0], 0x10);
        assert_eq!(nibble_to_i8(0xF), -1);
        assert_eq!(nibble_to_i8(0x7), 7);
    }

    #[test]
    fn fp16_a_layout_atoms_of_eight() {
        // A[1][9] of a 4 x 16 fp16 matrix: second atom column, row 1.
        assert_eq!(a_index(1, 9, 4, 8), (4 + 1) * 8 + 1);
    }
}
