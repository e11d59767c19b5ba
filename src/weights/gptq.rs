//! GPTQ 4-bit checkpoints (safetensors with `quantization_config.quant_method = "gptq"`).
//!
//! Each quantized linear `X` is stored as `X.qweight` (i32 `[in/8, out]`, eight 4-bit values
//! per word along the input dimension, lowest nibble first), `X.qzeros` (i32
//! `[groups, out/8]`, packed the same way along the output dimension), `X.scales`
//! (f16 `[groups, out]`) and `X.g_idx` (i32 `[in]`, the group of each input). The weight is
//! `w[o][i] = scale[g][o] * (q[i][o] - zero[g][o])`, where the original ("v1") format
//! stores `zero - 1`. This source presents each `X.weight` as an ordinary tensor.

use super::safetensors::SafetensorsCheckpoint;
use super::{DType, Tensor, TensorSource};
use crate::quant::gptq_grid::int4_from_zero_points;
use crate::quant::packed::{self, PackedMatrix};
use crate::{Error, Result};
use safetensors::Dtype;

/// The parts of `quantization_config` flint honours.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqConfig {
    pub bits: usize,
    pub group_size: Option<usize>,
    /// The "v1" format stores zero points minus one.
    pub zero_minus_one: bool,
}

impl GptqConfig {
    /// Reads a config.json's `quantization_config`; `Ok(None)` when the model is not quantized.
    pub fn from_config_json(config: &serde_json::Value) -> Result<Option<GptqConfig>> {
        let Some(q) = config.get("quantization_config").filter(|v| !v.is_null()) else { return Ok(None) };
        let field = |k: &str| q.get(k).filter(|v| !v.is_null());
        let method = field("quant_method").and_then(|v| v.as_str()).unwrap_or("");
        if method != "gptq" {
            return Err(Error::field(
                "quantization_config.quant_method",
                format!("`{method}` is not supported (gptq is)"),
            ));
        }
        let bits = field("bits").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        if bits != 4 {
            return Err(Error::field("quantization_config.bits", format!("{bits}-bit GPTQ is not supported (4 is)")));
        }
        if field("desc_act").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::field(
                "quantization_config.desc_act",
                "act-order GPTQ (desc_act true) is not supported",
            ));
        }
        let group_size = match field("group_size").and_then(|v| v.as_i64()) {
            Some(-1) => None,
            Some(g) if g > 0 => Some(g as usize),
            other => return Err(Error::field("quantization_config.group_size", format!("invalid value {other:?}"))),
        };
        let format = field("checkpoint_format").and_then(|v| v.as_str()).unwrap_or("gptq");
        let zero_minus_one = match format {
            "gptq" => true,
            "gptq_v2" => false,
            other => {
                return Err(Error::field(
                    "quantization_config.checkpoint_format",
                    format!("`{other}` is not supported"),
                ))
            }
        };
        Ok(Some(GptqConfig { bits, group_size, zero_minus_one }))
    }
}

/// A GPTQ checkpoint: quantized linears appear as `X.weight`, everything else passes through.
pub struct GptqCheckpoint {
    inner: SafetensorsCheckpoint,
    config: GptqConfig,
}

/// A quantized linear's parts, checked against each other.
struct Packed<'a> {
    out_dim: usize,
    in_dim: usize,
    groups: usize,
    qweight: &'a [u8],
    qzeros: &'a [u8],
    scales: &'a [u8],
    g_idx: Option<&'a [u8]>,
}

fn word(bytes: &[u8], index: usize) -> u32 {
    u32::from_le_bytes(bytes[4 * index..4 * index + 4].try_into().expect("4 bytes"))
}

impl GptqCheckpoint {
    pub fn new(inner: SafetensorsCheckpoint, config: GptqConfig) -> Self {
        GptqCheckpoint { inner, config }
    }

    fn base(name: &str) -> Option<&str> {
        name.strip_suffix(".weight")
    }

    fn is_quantized(&self, name: &str) -> bool {
        Self::base(name).is_some_and(|b| self.inner.raw(&format!("{b}.qweight")).is_some())
    }

    fn packed(&self, base: &str) -> Result<Packed<'_>> {
        let part = |suffix: &str, dtype: Dtype| -> Result<(&[usize], &[u8])> {
            let name = format!("{base}.{suffix}");
            let (found, shape, bytes) = self.inner.raw(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            match (found == dtype, shape.len()) {
                (true, 2) | (true, 1) => Ok((shape, bytes)),
                _ => {
                    Err(Error::tensor(name, format!("expected a {dtype:?} matrix, found {found:?} of shape {shape:?}")))
                }
            }
        };
        let (qw_shape, qweight) = part("qweight", Dtype::I32)?;
        let (qz_shape, qzeros) = part("qzeros", Dtype::I32)?;
        let (sc_shape, scales) = part("scales", Dtype::F16)?;
        let mismatch = |p: String| Error::tensor(format!("{base}.qweight"), p);
        if qw_shape.len() != 2 || qz_shape.len() != 2 || sc_shape.len() != 2 {
            return Err(mismatch("qweight, qzeros and scales must be matrices".into()));
        }
        let (in_dim, out_dim) = (qw_shape[0] * 8, qw_shape[1]);
        let groups = sc_shape[0];
        let expected_groups = match self.config.group_size {
            Some(g) => in_dim.div_ceil(g),
            None => 1,
        };
        if sc_shape[1] != out_dim || groups != expected_groups || qz_shape != [groups, out_dim.div_ceil(8)] {
            return Err(mismatch(format!(
                "inconsistent GPTQ shapes: qweight {qw_shape:?}, qzeros {qz_shape:?}, scales {sc_shape:?} (group size {:?})",
                self.config.group_size
            )));
        }
        let g_idx = match self.inner.raw(&format!("{base}.g_idx")) {
            None => None,
            Some((Dtype::I32, shape, bytes)) if shape == [in_dim] => Some(bytes),
            Some((dtype, shape, _)) => {
                return Err(Error::tensor(
                    format!("{base}.g_idx"),
                    format!("expected I32 [{in_dim}], found {dtype:?} {shape:?}"),
                ))
            }
        };
        Ok(Packed { out_dim, in_dim, groups, qweight, qzeros, scales, g_idx })
    }

    fn dequantize(&self, base: &str) -> Result<Tensor> {
        let p = self.packed(base)?;
        let group_of = |i: usize| -> Result<usize> {
            let g = match (p.g_idx, self.config.group_size) {
                (Some(bytes), _) => word(bytes, i) as usize,
                (None, Some(gs)) => i / gs,
                (None, None) => 0,
            };
            if g >= p.groups {
                return Err(Error::tensor(format!("{base}.g_idx"), format!("group {g} of input {i} is out of range")));
            }
            Ok(g)
        };
        let zero_offset = if self.config.zero_minus_one { 1.0 } else { 0.0 };
        let zero_words = p.out_dim.div_ceil(8);
        let mut w = vec![0.0f32; p.out_dim * p.in_dim];
        for i in 0..p.in_dim {
            let g = group_of(i)?;
            for o in 0..p.out_dim {
                let q = (word(p.qweight, (i / 8) * p.out_dim + o) >> (4 * (i % 8))) & 15;
                let zero = (word(p.qzeros, g * zero_words + o / 8) >> (4 * (o % 8))) & 15;
                let scale = half::f16::from_le_bytes([
                    p.scales[2 * (g * p.out_dim + o)],
                    p.scales[2 * (g * p.out_dim + o) + 1],
                ]);
                w[o * p.in_dim + i] = scale.to_f32() * (q as f32 - (zero as f32 + zero_offset));
            }
        }
        Ok(Tensor::new(vec![p.out_dim, p.in_dim], w))
    }

    /// Repacks a quantized linear without loss: `Int4 { group_size }` (the whole row when the
    /// config has no group size), `qweight`'s column-packed words `[in/8, out]` transposed to
    /// row-packed `[out, in/8]` (the nibble order within a word is the same). Scales are f16
    /// pairs `(d, -8d)` when every zero point is 8 (v1 `qzeros` nibble 7: symmetric), else wide
    /// `(d, -(d * zero))` in f32; either way `d * q + m` equals [`GptqCheckpoint::load_f32`]'s
    /// `d * (q - zero)` exactly (every product involved is exact in f32). A `g_idx` other than
    /// `i / group_size` (act-order) cannot be packed and is an error naming it.
    fn pack(&self, base: &str) -> Result<PackedMatrix> {
        let p = self.packed(base)?;
        let group = self.config.group_size.unwrap_or(p.in_dim);
        let qweight_name = format!("{base}.qweight");
        if group == 0 || !p.in_dim.is_multiple_of(group) || p.groups != p.in_dim / group {
            return Err(Error::tensor(
                qweight_name,
                format!("{} inputs are not whole groups of {group}: cannot pack", p.in_dim),
            ));
        }
        if let Some(bytes) = p.g_idx {
            if let Some(i) = (0..p.in_dim).find(|&i| word(bytes, i) as usize != i / group) {
                return Err(Error::tensor(
                    format!("{base}.g_idx"),
                    format!(
                        "g_idx[{i}] = {} is not the trivial {i} / {group} = {}: act-order (reordered) groups \
                         cannot be packed",
                        word(bytes, i) as i32,
                        i / group
                    ),
                ));
            }
        }
        let in_words = p.in_dim / 8;
        let zero_words = p.out_dim.div_ceil(8);
        let zero_offset = u32::from(self.config.zero_minus_one);
        let mut qs = Vec::with_capacity(p.out_dim * in_words);
        for o in 0..p.out_dim {
            qs.extend((0..in_words).map(|w| word(p.qweight, w * p.out_dim + o)));
        }
        // (d, zero) per (row o, group g), in the packed order o * groups + g.
        let mut params = Vec::with_capacity(p.out_dim * p.groups);
        for o in 0..p.out_dim {
            for g in 0..p.groups {
                let zero = ((word(p.qzeros, g * zero_words + o / 8) >> (4 * (o % 8))) & 15) + zero_offset;
                let at = 2 * (g * p.out_dim + o);
                let d = half::f16::from_le_bytes([p.scales[at], p.scales[at + 1]]);
                params.push((d, zero));
            }
        }
        int4_from_zero_points(p.out_dim, p.in_dim, group, qs, params.into_iter())
            .map_err(|e| packed::rename(e, &qweight_name))
    }
}

impl TensorSource for GptqCheckpoint {
    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for name in self.inner.names() {
            if let Some(base) = name.strip_suffix(".qweight") {
                names.push(format!("{base}.weight"));
            } else if !(name.ends_with(".qzeros") || name.ends_with(".scales") || name.ends_with(".g_idx")) {
                names.push(name);
            }
        }
        names
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self.is_quantized(name) {
            true => {
                let (_, shape, _) = self.inner.raw(&format!("{}.qweight", Self::base(name)?))?;
                Some(vec![*shape.get(1)?, shape.first()? * 8])
            }
            false => self.inner.shape(name),
        }
    }

    fn dtype(&self, name: &str) -> Option<DType> {
        match self.is_quantized(name) {
            true => Some(DType::Int4),
            false => self.inner.dtype(name),
        }
    }

    fn load_f32(&self, name: &str) -> Result<Tensor> {
        match self.is_quantized(name) {
            true => self.dequantize(Self::base(name).expect("quantized names end in .weight")),
            false => self.inner.load_f32(name),
        }
    }

    /// Quantized linears repack without loss (see [`GptqCheckpoint::load_f32`] for the values);
    /// other tensors come as F32.
    fn load_packed(&self, name: &str) -> Result<PackedMatrix> {
        match self.is_quantized(name) {
            true => self.pack(Self::base(name).expect("quantized names end in .weight")),
            false => self.inner.load_packed(name),
        }
    }

    fn size_in_bytes(&self) -> u64 {
        self.inner.size_in_bytes()
    }
}
