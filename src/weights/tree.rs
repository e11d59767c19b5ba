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
pub struct Moe<M> {
    /// `[E, H]`: one router logit per expert.
    pub router: M,
    /// The E routed experts, stacked.
    pub experts: Mlp<M>,
    pub shared: Option<Mlp<M>>,
    /// `[1, H]`: the shared expert's sigmoid gate.
    pub shared_gate: Option<M>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ffn<M> {
    Dense(Mlp<M>),
    Moe(Box<Moe<M>>),
}

/// One decoder layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer<M, V> {
    pub attn_norm: V,
    pub q: Linear<M, V>,
    pub k: Linear<M, V>,
    pub v: Linear<M, V>,
    pub o: Linear<M, V>,
    /// The q and k norms' weights, where the family has them (`config.qk_norm`).
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
    pub ffn_norm: V,
    pub ffn: Ffn<M>,
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
        let mut all = vec![&self.q.weight, &self.k.weight, &self.v.weight, &self.o.weight];
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
                experts: e.experts.try_map(experts, &mut m)?,
                shared: e.shared.as_ref().map(|s| s.try_map(1, &mut m)).transpose()?,
                shared_gate: e.shared_gate.as_ref().map(|g| m(g, 1)).transpose()?,
            })),
        };
        Ok(Layer {
            attn_norm: v(&self.attn_norm)?,
            q: self.q.try_map(&mut m, &mut v)?,
            k: self.k.try_map(&mut m, &mut v)?,
            v: self.v.try_map(&mut m, &mut v)?,
            o: self.o.try_map(&mut m, &mut v)?,
            q_norm: self.q_norm.as_ref().map(&mut v).transpose()?,
            k_norm: self.k_norm.as_ref().map(&mut v).transpose()?,
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
