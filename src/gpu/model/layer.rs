//! A decoder layer as the kernels run it: the checkpoint's weight tree (`gpu::feed`) with q, k
//! and v stacked into one matrix ([`GpuMatrix::stack`]: one matmul), and each SwiGLU FFN's gate
//! and up paired into one ([`GpuMatrix::pair`]: one matmul that applies SwiGLU in its epilogue);
//! plus the layer's KV cache. Matrices of different formats stay apart.

use crate::gpu::feed::{GpuFfn, GpuLayerWeights, GpuLinear, GpuMlp, GpuMoe};
use crate::gpu::matrix::GpuMatrix;
use crate::gpu::Gpu;
use crate::weights::tree::Attention;
use crate::Result;

pub(super) struct GpuLayer {
    pub attn_norm: wgpu::Buffer,
    pub attn: Attn,
    pub o: GpuLinear,
    pub ffn_norm: wgpu::Buffer,
    pub ffn: Ffn,
    pub k_cache: wgpu::Buffer,
    pub v_cache: wgpu::Buffer,
}

pub(super) enum Attn {
    Gqa {
        qkv: Qkv,
        q_norm: Option<wgpu::Buffer>,
        k_norm: Option<wgpu::Buffer>,
    },
    /// Multi-head latent attention: the checkpoint's tree as the kernels read it (`weights::tree::Mla`).
    Mla(Box<GpuMla>),
}

pub(super) type GpuMla = crate::weights::tree::Mla<GpuMatrix, wgpu::Buffer>;

pub(super) enum Qkv {
    /// One `[q_dim + 2 kv_dim, H]` projection (and bias), each token's output row `q | k | v`.
    Fused(GpuLinear),
    /// q, k and v of different formats.
    Split(Box<[GpuLinear; 3]>),
}

pub(super) enum Ffn {
    Dense(Box<SwiGlu>),
    Moe(Box<Moe>),
}

pub(super) struct Moe {
    /// `[E, H]`, or `[E + 1, H]` with the shared expert's gate as its last row.
    pub router: GpuMatrix,
    /// `[E]`: the selection bias (DeepSeek-V3).
    pub router_bias: Option<wgpu::Buffer>,
    /// The routed experts, stacked (gate/up paired per expert).
    pub experts: SwiGlu,
    pub shared: Option<SwiGlu>,
    pub shared_gate: SharedGate,
}

/// Where the shared expert's sigmoid gate (`[1, H]`) is.
pub(super) enum SharedGate {
    None,
    /// Row E of the router: its logit is one more column of the router's output.
    InRouter,
    /// Its own matrix (a format other than the router's).
    Own(GpuMatrix),
}

/// A SwiGLU FFN (or a stack of them): `down(silu(gate x) * up x)`.
pub(super) struct SwiGlu {
    pub gates: Gates,
    pub down: GpuMatrix,
}

pub(super) enum Gates {
    /// One matrix, per FFN its gate rows then its up rows: one matmul with the SwiGLU epilogue.
    Paired(GpuMatrix),
    /// Gate and up of different formats: two matmuls and the `swiglu` kernel.
    Split { gate: GpuMatrix, up: GpuMatrix },
}

impl GpuLayer {
    /// The layer of checked weights `w` (matrices stacked into one are freed once copied).
    pub fn new(gpu: &Gpu, w: GpuLayerWeights, k_cache: wgpu::Buffer, v_cache: wgpu::Buffer) -> Result<GpuLayer> {
        let ffn = match w.ffn {
            GpuFfn::Dense(m) => Ffn::Dense(Box::new(SwiGlu::new(gpu, m, 1)?)),
            GpuFfn::Moe(m) => {
                let GpuMoe { router, router_bias, experts, shared, shared_gate } = *m;
                let units = router.rows;
                let (router, shared_gate) = match shared_gate {
                    None => (router, SharedGate::None),
                    Some(gate) => match GpuMatrix::stack(gpu, &[&router, &gate], 1)? {
                        Some(stacked) => {
                            router.free(gpu);
                            gate.free(gpu);
                            (stacked, SharedGate::InRouter)
                        }
                        None => (router, SharedGate::Own(gate)),
                    },
                };
                Ffn::Moe(Box::new(Moe {
                    router,
                    router_bias,
                    experts: SwiGlu::new(gpu, experts, units)?,
                    shared: shared.map(|s| SwiGlu::new(gpu, s, 1)).transpose()?,
                    shared_gate,
                }))
            }
        };
        let attn = match w.attn {
            Attention::Gqa(a) => Attn::Gqa { qkv: Qkv::new(gpu, a.q, a.k, a.v)?, q_norm: a.q_norm, k_norm: a.k_norm },
            Attention::Mla(a) => Attn::Mla(a),
        };
        Ok(GpuLayer { attn_norm: w.attn_norm, attn, o: w.o, ffn_norm: w.ffn_norm, ffn, k_cache, v_cache })
    }
}

impl Qkv {
    fn new(gpu: &Gpu, q: GpuLinear, k: GpuLinear, v: GpuLinear) -> Result<Qkv> {
        let parts = [&q, &k, &v];
        // Biases on all three (Qwen2) or none: a fused bias is the three concatenated.
        let biases: Option<Vec<&wgpu::Buffer>> = parts.iter().map(|l| l.bias.as_ref()).collect();
        if biases.is_none() && parts.iter().any(|l| l.bias.is_some()) {
            return Ok(Qkv::Split(Box::new([q, k, v])));
        }
        let Some(weight) = GpuMatrix::stack(gpu, &parts.map(|l| &l.weight), 1)? else {
            return Ok(Qkv::Split(Box::new([q, k, v])));
        };
        let bias = biases.map(|b| concat(gpu, &b));
        for l in [q, k, v] {
            l.weight.free(gpu);
            if let Some(b) = l.bias {
                gpu.free(b);
            }
        }
        Ok(Qkv::Fused(GpuLinear { weight, bias }))
    }
}

/// The buffers' contents one after another, in a new buffer (copied on the GPU).
fn concat(gpu: &Gpu, parts: &[&wgpu::Buffer]) -> wgpu::Buffer {
    let out = gpu.storage_zeroed("concatenated", parts.iter().map(|b| b.size()).sum());
    let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("concat") });
    let mut at = 0;
    for b in parts {
        encoder.copy_buffer_to_buffer(b, 0, &out, at, b.size());
        at += b.size();
    }
    gpu.queue.submit([encoder.finish()]);
    out
}

impl SwiGlu {
    /// `units` FFNs stacked in `m`.
    fn new(gpu: &Gpu, m: GpuMlp, units: usize) -> Result<SwiGlu> {
        let gates = match GpuMatrix::pair(gpu, &m.gate, &m.up, units)? {
            Some(paired) => {
                m.gate.free(gpu);
                m.up.free(gpu);
                Gates::Paired(paired)
            }
            None => Gates::Split { gate: m.gate, up: m.up },
        };
        Ok(SwiGlu { gates, down: m.down })
    }

    /// One FFN's intermediate width: the columns of down.
    pub fn width(&self) -> u32 {
        self.down.cols as u32
    }
}
