//! ggml's type numbering and block sizes: what a GGUF tensor's `type` field means and how many
//! bytes its elements take. Dequantization lives in `quant::ggml`.

use super::DType;

/// Elements in one Q4_0 / Q4_1 / Q8_0 block.
pub const QK: usize = 32;
/// Elements in one k-quant (and IQ4_XS) super-block.
pub const QK_K: usize = 256;

/// The ggml type number of a [`DType`] (the `type` field of a GGUF tensor info); `None` for
/// flint's `Int4`, which is not a ggml format.
pub fn ggml_type_id(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q5_0 => 6,
        DType::Q5_1 => 7,
        DType::Q8_0 => 8,
        DType::Q2_K => 10,
        DType::Q3_K => 11,
        DType::Q4_K => 12,
        DType::Q5_K => 13,
        DType::Q6_K => 14,
        DType::IQ4_NL => 20,
        DType::IQ4_XS => 23,
        DType::BF16 => 30,
        DType::MXFP4 => 39,
        DType::Int4 => return None,
    })
}

/// The [`DType`] for a ggml type number, when flint can read it.
pub fn dtype_from_ggml(type_id: u32) -> Option<DType> {
    Some(match type_id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        6 => DType::Q5_0,
        7 => DType::Q5_1,
        8 => DType::Q8_0,
        10 => DType::Q2_K,
        11 => DType::Q3_K,
        12 => DType::Q4_K,
        13 => DType::Q5_K,
        14 => DType::Q6_K,
        20 => DType::IQ4_NL,
        23 => DType::IQ4_XS,
        30 => DType::BF16,
        39 => DType::MXFP4,
        _ => return None,
    })
}

/// ggml's name for a type number, for error messages; `None` for numbers ggml never assigned
/// (4 and 5 were removed formats and count as unassigned here).
pub fn ggml_type_name(type_id: u32) -> Option<&'static str> {
    const NAMES: [&str; 42] = [
        "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
        "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32",
        "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0", "TQ2_0", "", "", "", "MXFP4", "", "",
    ];
    NAMES.get(type_id as usize).copied().filter(|n| !n.is_empty())
}

/// `(elements per block, bytes per block)` of a ggml format; plain float types are blocks of one
/// element. `None` for `DType::Int4`, whose groups are not a fixed ggml block.
pub fn block_info(dtype: DType) -> Option<(usize, usize)> {
    Some(match dtype {
        DType::F32 => (1, 4),
        DType::F16 | DType::BF16 => (1, 2),
        DType::Q8_0 => (QK, 2 + QK),
        DType::Q4_0 => (QK, 2 + QK / 2),
        DType::Q4_1 => (QK, 4 + QK / 2),
        DType::Q5_0 => (QK, 2 + 4 + QK / 2),
        DType::Q5_1 => (QK, 4 + 4 + QK / 2),
        DType::IQ4_NL => (QK, 2 + QK / 2),
        DType::MXFP4 => (QK, 1 + QK / 2),
        DType::Q2_K => (QK_K, QK_K / 16 + QK_K / 4 + 2 + 2),
        DType::Q3_K => (QK_K, QK_K / 8 + QK_K / 4 + 12 + 2),
        DType::Q4_K => (QK_K, 2 + 2 + 12 + QK_K / 2),
        DType::Q5_K => (QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2),
        DType::Q6_K => (QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2),
        DType::IQ4_XS => (QK_K, 2 + 2 + QK_K / 64 + QK_K / 2),
        DType::Int4 => return None,
    })
}

/// The nearest of llama.cpp's standard mixtures that flint reads, for a ggml type it does not
/// (the 1-, 2- and 3-bit i-quants and the ternary types): the mixture of about the same size.
pub fn nearest_mixture(type_id: u32) -> &'static str {
    match ggml_type_name(type_id).unwrap_or("") {
        "IQ1_S" | "IQ1_M" | "TQ1_0" | "TQ2_0" | "IQ2_XXS" | "IQ2_XS" | "IQ2_S" => "Q2_K",
        "IQ3_XXS" | "IQ3_S" => "Q3_K_M",
        _ => "Q4_K_M",
    }
}

/// Bytes that `n_elements` of `dtype` take, or `None` when `n_elements` is not a whole number
/// of blocks or the size overflows.
pub fn byte_size(dtype: DType, n_elements: u64) -> Option<u64> {
    let (per_block, block_bytes) = block_info(dtype)?;
    if !n_elements.is_multiple_of(per_block as u64) {
        return None;
    }
    (n_elements / per_block as u64).checked_mul(block_bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_ggml() {
        assert_eq!(block_info(DType::Q8_0), Some((32, 34)));
        assert_eq!(block_info(DType::Q4_0), Some((32, 18)));
        assert_eq!(block_info(DType::Q4_1), Some((32, 20)));
        assert_eq!(block_info(DType::Q4_K), Some((256, 144)));
        assert_eq!(block_info(DType::Q6_K), Some((256, 210)));
        // The rest against ggml's static asserts (ggml-common.h).
        let sizes = [
            (DType::Q5_0, 22),
            (DType::Q5_1, 24),
            (DType::IQ4_NL, 18),
            (DType::MXFP4, 17),
            (DType::Q2_K, 84),
            (DType::Q3_K, 110),
            (DType::Q5_K, 176),
            (DType::IQ4_XS, 136),
        ];
        for (dt, bytes) in sizes {
            assert_eq!(block_info(dt).map(|b| b.1), Some(bytes), "{dt:?}");
        }
        assert_eq!(block_info(DType::F16), Some((1, 2)));
        assert_eq!(block_info(DType::Int4), None);
        assert_eq!(byte_size(DType::Q4_0, 64), Some(36));
        assert_eq!(byte_size(DType::Q4_0, 48), None);
        for id in 0..64 {
            if let Some(dt) = dtype_from_ggml(id) {
                assert_eq!(ggml_type_id(dt), Some(id));
                assert_eq!(ggml_type_name(id), Some(format!("{dt:?}").as_str()));
            }
        }
        assert_eq!(ggml_type_name(6), Some("Q5_0"));
        assert_eq!(ggml_type_name(4), None);
        assert_eq!(ggml_type_name(1000), None);
    }
}
