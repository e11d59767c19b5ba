//! The one shape of a model's weights, generic over how a matrix and a vector are held:
//! - on the host, packed as the checkpoint stores them (`PackedMatrix`, `Vec<f32>`:
//!   `weights::model`);
//! - on the GPU (`GpuMatrix`, `wgpu::Buffer`: `gpu::feed`);
//! - dequantized for the CPU reference (`ops::Matrix`, `Vec<f32>`: `reference::weights`).
//!
//! Every engine therefore walks the same fields, and a conversion is one [`Layer::try_map`].
//! Routed experts are stacked by rows in one matrix each (`gate`/`up`: `E * I` rows, expert `e`
//! owning rows `e*I..(e+1)*I`; `down`: `E * H` rows), whatever layout the checkpoint used.

use std::convert::Infallible;

/// A linear layer `y = W x + b`, `W` `[out, in]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<M, V> {
    pub weight: M,
    pub bias: Option<V>,
}

/// A SwiGLU FFN `down(silu(gate x) * up x)`, or `E` of them stacked by rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<M> {
    pub gate: M,
    pub up: M,
    pub down: M,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Moe<M, V> {
    /// `[E, H]`: one router logit per expert.
    pub router: M,
    /// `[E]`: added to the router's scores to choose experts, not to weigh them (DeepSeek-V3's
    /// `e_score_correction_bias`).
    pub router_bias: Option<V>,
    /// The E routed experts, stacked.
    pub experts: Mlp<M>,
    pub shared: Option<Mlp<M>>,
    /// `[1, H]`: the shared expert's sigmoid gate.
    pub shared_gate: Option<M>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ffn<M, V> {
    Dense(Mlp<M>),
    Moe(Box<Moe<M, V>>),
}

/// Grouped-query attention's projections.
#[derive(Debug, Clone, PartialEq)]
pub struct Gqa<M, V> {
    pub q: Linear<M, V>,
    pub k: Linear<M, V>,
    pub v: Linear<M, V>,
    /// The q and k norms' weights, where the family has them (`config.qk_norm`).
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
}

/// Multi-head latent attention's projections (DeepSeek-V2/V3), with `n` heads, latent width
/// `r` (kv_lora_rank), and per head `nope` + `rope` query/key dims and `v` value dims. Every
/// loader brings them to this one layout: q's rows split into its non-rotary and rotary parts,
/// and `kv_b` into per-head `W_UK` (transposed) and `W_UV`, the form absorbed attention reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Mla<M, V> {
    pub heads: usize,
    /// q's low-rank path, `[q_lora, H]` and its RMSNorm; `None`: q reads the normed x.
    pub q_a: Option<(M, V)>,
    /// `[n * nope, q_in]`: each head's non-rotary query rows.
    pub q_nope: M,
    /// `[n * rope, q_in]`: each head's rotary query rows.
    pub q_rope: M,
    /// `[r + rope, H]`: the latent (normed by `kv_norm`), then the one rotary key all heads share.
    pub kv_a: M,
    pub kv_norm: V,
    /// `[n * r, nope]`: head h's rows `h*r..(h+1)*r` are `W_UK_h` transposed (`k_nope = W_UK_h c`).
    pub k_b: M,
    /// `[n * v, r]`: head h's `W_UV_h` (`v = W_UV_h c`).
    pub v_b: M,
}

/// The attention block's projections (its output projection is the layer's `o`).
#[derive(Debug, Clone, PartialEq)]
pub enum Attention<M, V> {
    Gqa(Gqa<M, V>),
    Mla(Box<Mla<M, V>>),
}

/// One decoder layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer<M, V> {
    pub attn_norm: V,
    pub attn: Attention<M, V>,
    pub o: Linear<M, V>,
    pub ffn_norm: V,
    pub ffn: Ffn<M, V>,
}

/// A whole model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model<M, V> {
    /// `[vocab, H]`.
    pub embed: M,
    pub layers: Vec<Layer<M, V>>,
    pub final_norm: V,
    /// `[vocab, H]`; `None` when the embeddings are tied.
    pub lm_head: Option<M>,
}

impl<M> Mlp<M> {
    pub fn matrices(&self) -> [&M; 3] {
        [&self.gate, &self.up, &self.down]
    }

    /// The same FFN with each matrix converted; `units` is how many equal blocks of rows each
    /// holds (the expert count when stacked), which a conversion must not split.
    pub fn try_map<N, E>(&self, units: usize, mut m: impl FnMut(&M, usize) -> Result<N, E>) -> Result<Mlp<N>, E> {
        Ok(Mlp { gate: m(&self.gate, units)?, up: m(&self.up, units)?, down: m(&self.down, units)? })
    }
}

impl<M, V> Linear<M, V> {
    pub fn try_map<N, W, E>(
        &self,
        m: impl FnOnce(&M, usize) -> Result<N, E>,
        v: impl FnOnce(&V) -> Result<W, E>,
    ) -> Result<Linear<N, W>, E> {
        Ok(Linear { weight: m(&self.weight, 1)?, bias: self.bias.as_ref().map(v).transpose()? })
    }
}

impl<M, V> Layer<M, V> {
    /// Every weight matrix of the layer.
    pub fn matrices(&self) -> Vec<&M> {
        let mut all = match &self.attn {
            Attention::Gqa(a) => vec![&a.q.weight, &a.k.weight, &a.v.weight],
            Attention::Mla(a) => {
                let mut m: Vec<&M> = a.q_a.iter().map(|(m, _)| m).collect();
                m.extend([&a.q_nope, &a.q_rope, &a.kv_a, &a.k_b, &a.v_b]);
                m
            }
        };
        all.push(&self.o.weight);
        match &self.ffn {
            Ffn::Dense(m) => all.extend(m.matrices()),
            Ffn::Moe(m) => {
                all.push(&m.router);
                all.extend(m.experts.matrices());
                all.extend(m.shared.iter().flat_map(|s| s.matrices()));
                all.extend(m.shared_gate.iter());
            }
        }
        all
    }

    /// The same layer with every matrix converted by `m` (given the matrix and its number of
    /// unsplittable row blocks: `experts` for the stacked routed experts, 1 otherwise) and
    /// every vector by `v`.
    pub fn try_map<N, W, E>(
        &self,
        experts: usize,
        mut m: impl FnMut(&M, usize) -> Result<N, E>,
        mut v: impl FnMut(&V) -> Result<W, E>,
    ) -> Result<Layer<N, W>, E> {
        let ffn = match &self.ffn {
            Ffn::Dense(d) => Ffn::Dense(d.try_map(1, &mut m)?),
            Ffn::Moe(e) => Ffn::Moe(Box::new(Moe {
                router: m(&e.router, 1)?,
                router_bias: e.router_bias.as_ref().map(&mut v).transpose()?,
                experts: e.experts.try_map(experts, &mut m)?,
                shared: e.shared.as_ref().map(|s| s.try_map(1, &mut m)).transpose()?,
                shared_gate: e.shared_gate.as_ref().map(|g| m(g, 1)).transpose()?,
            })),
        };
        let attn = match &self.attn {
            Attention::Gqa(a) => Attention::Gqa(Gqa {
                q: a.q.try_map(&mut m, &mut v)?,
                k: a.k.try_map(&mut m, &mut v)?,
                v: a.v.try_map(&mut m, &mut v)?,
                q_norm: a.q_norm.as_ref().map(&mut v).transpose()?,
                k_norm: a.k_norm.as_ref().map(&mut v).transpose()?,
            }),
            // k_b and v_b are read per head, like experts: a conversion keeps heads whole.
            Attention::Mla(a) => Attention::Mla(Box::new(Mla {
                heads: a.heads,
                q_a: match &a.q_a {
                    Some((w, n)) => Some((m(w, 1)?, v(n)?)),
                    None => None,
                },
                q_nope: m(&a.q_nope, 1)?,
                q_rope: m(&a.q_rope, 1)?,
                kv_a: m(&a.kv_a, 1)?,
                kv_norm: v(&a.kv_norm)?,
                k_b: m(&a.k_b, a.heads)?,
                v_b: m(&a.v_b, a.heads)?,
            })),
        };
        Ok(Layer {
            attn_norm: v(&self.attn_norm)?,
            attn,
            o: self.o.try_map(&mut m, &mut v)?,
            ffn_norm: v(&self.ffn_norm)?,
            ffn,
        })
    }
}

impl<M, V> Layer<M, V> {
    /// [`Layer::try_map`] with conversions that cannot fail.
    pub fn map<N, W>(&self, experts: usize, mut m: impl FnMut(&M) -> N, mut v: impl FnMut(&V) -> W) -> Layer<N, W> {
        let Ok(layer) = self.try_map::<N, W, Infallible>(experts, |x, _| Ok(m(x)), |x| Ok(v(x)));
        layer
    }
}

impl<M, V> Model<M, V> {
    /// The output projection: `lm_head`, or the embeddings when tied.
    pub fn output(&self) -> &M {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}
