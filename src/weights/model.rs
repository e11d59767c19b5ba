//! All weights of a model, by role, in the packed format the GPU reads
//! ([`PackedMatrix`]: f32, or 8-/4-bit groups kept exactly as the checkpoint stores them).
//!
//! One loader serves both engines: the GPU uploads these matrices, the CPU reference
//! dequantizes them. Every shape is checked against the config as it is read. Experts are
//! stacked: `gate`/`up` of an MoE layer hold `E * I` rows (expert `e` owns rows
//! `e*I..(e+1)*I`), `down` holds `E * H` rows, whatever layout the checkpoint used.

use super::names::{ExpertLayout, LayerNames, Names};
use super::tree::{Attention, Ffn, Gqa, Layer, Linear, Mla, Mlp, Model, Moe};
use super::TensorSource;
use crate::config::{FfnKind, MlaConfig, ModelConfig};
use crate::quant::packed::PackedMatrix;
use crate::{Error, Result};

/// The weight tree on the host (see [`super::tree`]).
pub type LinearWeights = Linear<PackedMatrix, Vec<f32>>;
pub type MlpWeights = Mlp<PackedMatrix>;
pub type MoeWeights = Moe<PackedMatrix, Vec<f32>>;
pub type FfnWeights = Ffn<PackedMatrix, Vec<f32>>;
pub type LayerWeights = Layer<PackedMatrix, Vec<f32>>;
pub type MlaWeights = Mla<PackedMatrix, Vec<f32>>;
pub type ModelWeights = Model<PackedMatrix, Vec<f32>>;

impl ModelWeights {
    /// Loads every weight named by `names`, checking each shape against `config`.
    pub fn load(config: &ModelConfig, src: &dyn TensorSource, names: &Names) -> Result<ModelWeights> {
        let embed = Self::load_embed(config, src, names)?;
        let layers =
            (0..config.num_layers).map(|l| LayerWeights::load(config, src, names, l)).collect::<Result<_>>()?;
        let (final_norm, lm_head) = Self::load_head(config, src, names)?;
        Ok(ModelWeights { embed, layers, final_norm, lm_head })
    }

    /// The token embeddings `[vocab, H]` alone.
    pub fn load_embed(config: &ModelConfig, src: &dyn TensorSource, names: &Names) -> Result<PackedMatrix> {
        Loader { src }.matrix(names.embed(), config.vocab_size, config.hidden_size)
    }

    /// The final norm's weight and the output projection (`None` when tied to the embeddings).
    pub fn load_head(
        config: &ModelConfig,
        src: &dyn TensorSource,
        names: &Names,
    ) -> Result<(Vec<f32>, Option<PackedMatrix>)> {
        let ld = Loader { src };
        let lm_head = match config.tie_word_embeddings {
            true => None,
            false => Some(ld.matrix(names.lm_head(), config.vocab_size, config.hidden_size)?),
        };
        Ok((ld.vector(names.final_norm(), config.hidden_size)?, lm_head))
    }
}

impl LayerWeights {
    /// Loads layer `l` alone, checking each shape against `config` (so a caller can hold one
    /// layer at a time on the host).
    pub fn load(config: &ModelConfig, src: &dyn TensorSource, names: &Names, l: usize) -> Result<LayerWeights> {
        let kind = config
            .layer_ffn
            .get(l)
            .ok_or_else(|| Error::Request(format!("layer {l} does not exist (the model has {})", config.num_layers)))?;
        let ld = Loader { src };
        let h = config.hidden_size;
        let n = names.layer(l);
        let (q_dim, kv_dim) = (config.q_dim(), config.kv_dim());
        let attn = match &config.mla {
            Some(m) => Attention::Mla(Box::new(ld.mla(config, m, &n)?)),
            None => {
                let (q_norm, k_norm) = match config.qk_norm_dims() {
                    None => (None, None),
                    Some((qn, kn)) => (Some(ld.vector(&n.q_norm, qn)?), Some(ld.vector(&n.k_norm, kn)?)),
                };
                Attention::Gqa(Gqa {
                    q: ld.linear(&n.q, q_dim, h, config.qkv_bias)?,
                    k: ld.linear(&n.k, kv_dim, h, config.qkv_bias)?,
                    v: ld.linear(&n.v, kv_dim, h, config.qkv_bias)?,
                    q_norm,
                    k_norm,
                })
            }
        };
        let o_bias = src.contains(&format!("{}.bias", n.o));
        let ffn = match (kind, &config.moe) {
            (FfnKind::Moe, Some(m)) => {
                let (shared, shared_gate) = match m.shared_expert_intermediate_size {
                    Some(s) => (
                        Some(ld.mlp(&n.shared_gate, &n.shared_up, &n.shared_down, h, s)?),
                        match m.shared_expert_gate {
                            true => Some(ld.shared_expert_gate(&n.shared_expert_gate, h)?),
                            false => None,
                        },
                    ),
                    None => (None, None),
                };
                FfnWeights::Moe(Box::new(MoeWeights {
                    router: ld.matrix(&n.router, m.num_experts, h)?,
                    router_bias: match m.routing.selection_bias {
                        true => Some(ld.bias_vector(&n.router_bias, m.num_experts)?),
                        false => None,
                    },
                    experts: ld.experts(
                        &names.expert_layouts(l, m.num_experts),
                        m.num_experts,
                        h,
                        m.expert_intermediate_size,
                    )?,
                    shared,
                    shared_gate,
                }))
            }
            _ => FfnWeights::Dense(ld.mlp(&n.gate, &n.up, &n.down, h, config.intermediate_size)?),
        };
        Ok(LayerWeights {
            attn_norm: ld.vector(&n.attn_norm, h)?,
            attn,
            o: ld.linear(&n.o, h, config.attn_out_dim(), o_bias)?,
            ffn_norm: ld.vector(&n.ffn_norm, h)?,
            ffn,
        })
    }
}

/// Reads tensors by name and checks their shapes against the config.
struct Loader<'a> {
    src: &'a dyn TensorSource,
}

impl Loader<'_> {
    /// `base.weight`, or `base` itself (transformers 5 stores fused experts as bare parameters).
    fn find(&self, base: &str) -> Option<String> {
        [format!("{base}.weight"), base.to_string()].into_iter().find(|n| self.src.contains(n))
    }

    fn found(&self, base: &str) -> Result<String> {
        self.find(base).ok_or_else(|| Error::MissingTensor(format!("{base}.weight")))
    }

    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let found = self.src.shape(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        if found != shape {
            return Err(Error::tensor(name, format!("shape {found:?}, expected {shape:?} from the config")));
        }
        Ok(())
    }

    /// A tensor of `shape` as a matrix of `shape[..-1].product()` rows.
    fn packed(&self, base: &str, shape: &[usize]) -> Result<PackedMatrix> {
        let name = self.found(base)?;
        self.check_shape(&name, shape)?;
        self.src.load_packed(&name)
    }

    fn matrix(&self, base: &str, rows: usize, cols: usize) -> Result<PackedMatrix> {
        self.packed(base, &[rows, cols])
    }

    fn vector(&self, base: &str, len: usize) -> Result<Vec<f32>> {
        let name = self.found(base)?;
        self.check_shape(&name, &[len])?;
        Ok(self.src.load_f32(&name)?.data)
    }

    /// A vector stored as `base.bias`, `base.weight` or `base` (GGUF's `exp_probs_b.bias`).
    fn bias_vector(&self, base: &str, len: usize) -> Result<Vec<f32>> {
        let name = self
            .find(&format!("{base}.bias"))
            .or_else(|| self.find(base))
            .ok_or_else(|| Error::MissingTensor(base.into()))?;
        self.check_shape(&name, &[len])?;
        Ok(self.src.load_f32(&name)?.data)
    }

    /// MLA's projections in the one layout of [`Mla`]: q split into its non-rotary and rotary
    /// rows per head; the latent's up-projection as per-head `W_UK` transposed and `W_UV`, from
    /// GGUF's split `attn_k_b`/`attn_v_b` or from a fused `kv_b` (Hugging Face, older GGUF
    /// files). Row selections keep the packed format; transposing `W_UK` takes it to f32.
    fn mla(&self, c: &ModelConfig, m: &MlaConfig, n: &LayerNames) -> Result<MlaWeights> {
        let (h, heads, r) = (c.hidden_size, c.num_heads, m.kv_lora_rank);
        let (nope, rope, v) = (m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim);
        let (q, q_a) = match m.q_lora_rank {
            Some(ql) => {
                let a = (self.matrix(&n.q_a, ql, h)?, self.vector(&n.q_a_norm, ql)?);
                (self.matrix(&n.q_b, heads * (nope + rope), ql)?, Some(a))
            }
            None => (self.matrix(&n.q, heads * (nope + rope), h)?, None),
        };
        let per_head = |m: &PackedMatrix, stride: usize, start: usize, len: usize| {
            let parts: Vec<_> =
                (0..heads).map(|hd| row_range(m, hd * stride + start, hd * stride + start + len)).collect();
            concat_rows(&parts)
        };
        let (k_b, v_b) = match self.find(&n.k_b).is_some() {
            true => (self.packed(&n.k_b, &[heads, r, nope])?, self.packed(&n.v_b, &[heads, v, r])?),
            false => {
                let kv_b = self.matrix(&n.kv_b, heads * (nope + v), r)?;
                let k = per_head(&kv_b, nope + v, 0, nope)?.dequantize();
                // [heads, nope, r] -> [heads, r, nope].
                let mut t = vec![0.0; k.len()];
                for hd in 0..heads {
                    for i in 0..nope {
                        for j in 0..r {
                            t[(hd * r + j) * nope + i] = k[(hd * nope + i) * r + j];
                        }
                    }
                }
                (PackedMatrix::from_f32(heads * r, nope, &t), per_head(&kv_b, nope + v, nope, v)?)
            }
        };
        Ok(MlaWeights {
            heads,
            q_a,
            q_nope: per_head(&q, nope + rope, 0, nope)?,
            q_rope: per_head(&q, nope + rope, nope, rope)?,
            kv_a: self.matrix(&n.kv_a, r + rope, h)?,
            kv_norm: self.vector(&n.kv_a_norm, r)?,
            k_b,
            v_b,
        })
    }

    /// A linear layer; its bias is loaded when the family has one, and must exist then.
    fn linear(&self, base: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<LinearWeights> {
        let bias = match bias {
            true => {
                let name = format!("{base}.bias");
                self.check_shape(&name, &[out_dim])?;
                Some(self.src.load_f32(&name)?.data)
            }
            false => None,
        };
        Ok(LinearWeights { weight: self.matrix(base, out_dim, in_dim)?, bias })
    }

    /// The shared expert's gate: `[1, hidden]`, or `[hidden]` as older GGUF files store it.
    fn shared_expert_gate(&self, base: &str, hidden: usize) -> Result<PackedMatrix> {
        let name = self.found(base)?;
        match self.src.shape(&name).as_deref() {
            Some([n]) if *n == hidden => Ok(PackedMatrix::from_f32(1, hidden, &self.vector(base, hidden)?)),
            _ => self.matrix(base, 1, hidden),
        }
    }

    fn mlp(&self, gate: &str, up: &str, down: &str, hidden: usize, inter: usize) -> Result<MlpWeights> {
        Ok(MlpWeights {
            gate: self.matrix(gate, inter, hidden)?,
            up: self.matrix(up, inter, hidden)?,
            down: self.matrix(down, hidden, inter)?,
        })
    }

    /// The experts of one layer, stacked, from whichever layout the checkpoint uses.
    fn experts(&self, layouts: &[ExpertLayout], n: usize, hidden: usize, inter: usize) -> Result<MlpWeights> {
        let present = |l: &&ExpertLayout| match l {
            ExpertLayout::PerExpert { gate, .. } => self.find(&gate[0]).is_some(),
            ExpertLayout::Stacked { gate, .. } => self.find(gate).is_some(),
            ExpertLayout::FusedGateUp { gate_up, .. } => self.find(gate_up).is_some(),
        };
        let layout = layouts.iter().find(present).unwrap_or(&layouts[0]);
        match layout {
            ExpertLayout::PerExpert { gate, up, down } => {
                let each = |names: &[String], rows, cols| -> Result<PackedMatrix> {
                    let parts = names.iter().map(|b| self.matrix(b, rows, cols)).collect::<Result<Vec<_>>>()?;
                    concat_rows(&parts)
                };
                Ok(MlpWeights {
                    gate: each(gate, inter, hidden)?,
                    up: each(up, inter, hidden)?,
                    down: each(down, hidden, inter)?,
                })
            }
            ExpertLayout::Stacked { gate, up, down } => Ok(MlpWeights {
                gate: self.packed(gate, &[n, inter, hidden])?,
                up: self.packed(up, &[n, inter, hidden])?,
                down: self.packed(down, &[n, hidden, inter])?,
            }),
            ExpertLayout::FusedGateUp { gate_up, down } => {
                // Each expert's block holds its gate rows, then its up rows.
                let fused = self.packed(gate_up, &[n, 2 * inter, hidden])?;
                let block =
                    |e: usize, half: usize| row_range(&fused, (2 * e + half) * inter, (2 * e + half + 1) * inter);
                Ok(MlpWeights {
                    gate: concat_rows(&(0..n).map(|e| block(e, 0)).collect::<Vec<_>>())?,
                    up: concat_rows(&(0..n).map(|e| block(e, 1)).collect::<Vec<_>>())?,
                    down: self.packed(down, &[n, hidden, inter])?,
                })
            }
        }
    }
}

/// Rows `start..end` of `m`, in the same format (rows are packed independently).
pub fn row_range(m: &PackedMatrix, start: usize, end: usize) -> PackedMatrix {
    let (rw, sw) = (m.row_words(), m.scale_words());
    PackedMatrix {
        rows: end - start,
        cols: m.cols,
        format: m.format,
        qs: m.qs[start * rw..end * rw].to_vec(),
        scales: m.scales[start * sw..end * sw].to_vec(),
    }
}

/// The rows of `parts` one after another. Parts in different formats are all brought to f32
/// (a checkpoint that quantized its experts differently loses nothing, only compactness).
pub fn concat_rows(parts: &[PackedMatrix]) -> Result<PackedMatrix> {
    let first = parts.first().ok_or_else(|| Error::tensor("experts", "no expert tensors"))?;
    let same = parts.iter().all(|p| p.format == first.format && p.cols == first.cols);
    let dequantized;
    let parts = match same {
        true => parts,
        false => {
            dequantized =
                parts.iter().map(|p| PackedMatrix::from_f32(p.rows, p.cols, &p.dequantize())).collect::<Vec<_>>();
            &dequantized[..]
        }
    };
    Ok(PackedMatrix {
        rows: parts.iter().map(|p| p.rows).sum(),
        cols: first.cols,
        format: parts[0].format,
        qs: parts.iter().flat_map(|p| p.qs.iter().copied()).collect(),
        scales: parts.iter().flat_map(|p| p.scales.iter().copied()).collect(),
    })
}

impl ModelWeights {
    /// Quantizes every f32 weight of the decoder's linear layers (attention, dense and expert
    /// FFNs, shared experts) to flint's INT4 with groups of `group`; tensors already quantized,
    /// the embeddings, the output projection, routers and gates stay as they are. A matrix
    /// whose rows are not a whole number of groups stays f32.
    pub fn quantize_int4(&mut self, group: usize) -> Result<()> {
        self.for_each_decoder_linear(true, |m| {
            if m.format == crate::quant::packed::Format::F32 && m.cols.is_multiple_of(group) && m.cols.is_multiple_of(8)
            {
                *m = PackedMatrix::quantize_int4(m.rows, m.cols, &m.dequantize(), group)?;
            }
            Ok(())
        })
    }

    /// Quantizes the decoder's linears (attention, dense and expert FFNs, shared experts) on
    /// the GPTQ grid with groups of `group`, exactly as `flint quantize` writes them: loading
    /// the written checkpoint gives these very matrices. Embeddings, output, routers and gates
    /// stay as they are. Every such matrix must be f32 with rows of whole groups.
    pub fn quantize_gptq(&mut self, group: usize) -> Result<()> {
        use crate::quant::gptq_grid::GptqMatrix;
        // A GPTQ checkpoint is written in the file's layout, which MLA's tree does not keep.
        self.for_each_decoder_linear(false, |m| {
            if m.format != crate::quant::packed::Format::F32 {
                return Err(Error::tensor(format!("{:?} matrix", m.format), "is already quantized"));
            }
            *m = GptqMatrix::quantize(m.rows, m.cols, &m.dequantize(), group)?.to_packed()?;
            Ok(())
        })
    }

    /// Calls `f` on the weight of every decoder linear a quantizer rewrites: attention q/k/v/o,
    /// dense FFNs, routed experts (stacked) and shared experts; not embeddings, output, routers
    /// or gates.
    /// MLA layers' projections are visited where `mla` allows, and are an error otherwise.
    fn for_each_decoder_linear(&mut self, mla: bool, mut f: impl FnMut(&mut PackedMatrix) -> Result<()>) -> Result<()> {
        for layer in &mut self.layers {
            match &mut layer.attn {
                Attention::Gqa(a) => {
                    for l in [&mut a.q, &mut a.k, &mut a.v] {
                        f(&mut l.weight)?;
                    }
                }
                Attention::Mla(a) if mla => {
                    let Mla { q_a, q_nope, q_rope, kv_a, k_b, v_b, .. } = &mut **a;
                    for m in q_a.iter_mut().map(|(m, _)| m).chain([q_nope, q_rope, kv_a, k_b, v_b]) {
                        f(m)?;
                    }
                }
                Attention::Mla(_) => {
                    return Err(Error::Request(
                        "writing a quantized checkpoint of multi-head latent attention (DeepSeek) is not supported yet"
                            .into(),
                    ))
                }
            }
            f(&mut layer.o.weight)?;
            let mlps = match &mut layer.ffn {
                FfnWeights::Dense(m) => vec![m],
                FfnWeights::Moe(moe) => std::iter::once(&mut moe.experts).chain(moe.shared.as_mut()).collect(),
            };
            for m in mlps {
                for w in [&mut m.gate, &mut m.up, &mut m.down] {
                    f(w)?;
                }
            }
        }
        Ok(())
    }
}
