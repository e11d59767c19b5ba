//! Weight matrix times activations (`shaders/matmul_{f32,int8,int4,int4_sg}.wgsl`), dense and per
//! expert; CPU twin: `quant::packed::PackedMatrix::matmul`.
//!
//! One kernel per weight format serves decode (1 token: a matvec that streams the weights),
//! prefill (T tokens in tiles of [`Shape::tile`]: each weight is read once per tile), the routed
//! experts of decode (one matvec per (token, slot), the expert id read on the GPU) and those of
//! prefill, grouped ([`grouped_expert_ops`]: per tile of up to [`Shape::tile`] pairs routed to one
//! expert, as `moe_group` cut them, so an expert's weights are read once per tile of its tokens
//! rather than once per token). A matrix split into several bindings ([`GpuMatrix`]) gets one op
//! per chunk.
//!
//! Two kernel designs, chosen by [`Shape`] ([`Shape::for_device`] has the measurements):
//! - portable (`matmul_{f32,int8,int4}.wgsl`, no optional feature): `threads_per_row` threads
//!   share a row, reading neighbouring 16-byte units (`vec4<u32>`), four per loop trip; each
//!   thread computes `rows_per_thread` rows, so each activation vec4 it loads serves that many
//!   rows; partial sums meet in workgroup memory.
//! - subgroup (`matmul_int4_sg.wgsl`, Int4, needs subgroups of 8 or more): one invocation per 4
//!   rows over all columns; each lane loads one vec4 of a 32-column unit of x and takes the other
//!   seven from its neighbours with `subgroupBroadcast`. On lavapipe every per-lane load is a
//!   scalar gather, so this removes most of the loads; on an H100 it also streams fastest.

use super::moe_group;
use crate::gpu::matrix::GpuMatrix;
use crate::gpu::{Gpu, Op};
use crate::quant::blocks::{IQ4_LEVELS, MXFP4_LEVELS};
use crate::quant::packed::{bit_planes, BitScales, Code, Format};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE_F32: &str = include_str!("../../../shaders/matmul_f32.wgsl");
const SOURCE_INT8: &str = include_str!("../../../shaders/matmul_int8.wgsl");
const SOURCE_INT4: &str = include_str!("../../../shaders/matmul_int4.wgsl");
const SOURCE_INT4_SG: &str = include_str!("../../../shaders/matmul_int4_sg.wgsl");
const SOURCE_BITS: &str = include_str!("../../../shaders/matmul_bits.wgsl");
const SOURCE_BITS_SG: &str = include_str!("../../../shaders/matmul_bits_sg.wgsl");

/// The override constants of `bits_format.wgsl` for a Bits `format` (empty for the others).
pub fn bits_constants(format: Format) -> Vec<(&'static str, f64)> {
    let Format::Bits { bits, code, scales } = format else {
        return vec![];
    };
    let (low, high) = bit_planes(bits);
    let (code, offset, levels) = match code {
        Code::Linear { offset } => (0, offset, [0; 16]),
        Code::Iq4 => (1, 0, IQ4_LEVELS),
        Code::Mxfp4 => (2, 0, MXFP4_LEVELS),
    };
    // The codebook's signed bytes, four per word, little-endian.
    let word = |k: usize| u32::from_le_bytes(std::array::from_fn(|j| levels[4 * k + j] as u8)) as f64;
    let (scales, sub, mins) = match scales {
        BitScales::Pair => (0, 32, false),
        BitScales::E8m0 => (1, 32, false),
        BitScales::Super { sub, mins } => (2, sub, mins),
    };
    vec![
        ("BITS", bits as f64),
        ("LOW", low as f64),
        ("HIGH", high as f64),
        ("CODE", code as f64),
        ("OFFSET", offset as f64),
        ("SCALES", scales as f64),
        ("SUB", sub as f64),
        ("MINS", if mins { 1.0 } else { 0.0 }),
        ("CB0", word(0)),
        ("CB1", word(1)),
        ("CB2", word(2)),
        ("CB3", word(3)),
    ]
}

/// Largest token tile (the kernels keep accumulators for 4 rows x 8 tokens per thread).
pub const MAX_TILE: u32 = 8;
/// Most rows per thread.
pub const MAX_ROWS_PER_THREAD: u32 = 4;

/// The kernels' `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_vec4s: u32,
    scale_stride: u32,
    row0: u32,
    out_stride: u32,
    blocks_x: u32,
    has_bias: u32,
    k: u32,
    rows_per_expert: u32,
    expert0: u32,
    experts: u32,
    x_per_slot: u32,
    grouped: u32,
    pair_rows: u32,
    add: u32,
    add_scale: f32,
    x_stride4: u32,
    _pad: [u32; 2],
}

/// Where a matmul's result `y` goes.
#[derive(Clone, Copy)]
pub enum Out<'a> {
    /// `out = y`.
    Set(&'a wgpu::Buffer),
    /// `out += scale * y`: a residual add in the kernel's epilogue.
    Add(&'a wgpu::Buffer, f32),
    /// SwiGLU of row pairs: the matrix holds gate and up rows as [`GpuMatrix::pair`] stacked them
    /// (per expert: its `I` gate rows, then its `I` up rows), and `out[., r] = silu(y_gate[r]) *
    /// y_up[r]` for `r < I`. The shape needs an even `rows_per_thread`; no bias.
    SwiGlu(&'a wgpu::Buffer),
}

impl<'a> Out<'a> {
    fn buffer(self) -> &'a wgpu::Buffer {
        match self {
            Out::Set(b) | Out::Add(b, _) | Out::SwiGlu(b) => b,
        }
    }
}

/// The workgroup shape of a matmul op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Rows per workgroup (a multiple of `rows_per_thread`).
    pub rows: u32,
    /// Threads per row (a power of two).
    pub threads_per_row: u32,
    /// Rows each thread computes (1..=4): every activation it loads serves that many rows.
    pub rows_per_thread: u32,
    /// Tokens per tile (1..=8): each weight is read once per tile.
    pub tile: u32,
    /// Int4 only: the subgroup kernel (`matmul_int4_sg.wgsl`, needs `Features::SUBGROUP` and
    /// subgroups of at least 8; `threads_per_row` must be 1).
    pub subgroup: bool,
}

impl Shape {
    /// The shape ops for `format` and `max_tokens` get on `gpu`. Measured with `throughput`
    /// below (INT4 g32 matvec of [5632, 2048] and [1536, 576], weights streamed from memory;
    /// figures in BENCHMARKS.md):
    /// - Int4 where subgroups of 8 or more exist: the subgroup kernel, 4 rows per invocation,
    ///   workgroups of max(16, subgroup size) invocations: on lavapipe 2-4x the best portable
    ///   shape, on an H100 1.5x-4x.
    /// - otherwise on a CPU (lavapipe without subgroups, SwiftShader): one thread per row, 4 rows
    ///   per thread, 64 rows per workgroup (each lane streams its own rows; 3-5x 8 threads per row
    ///   on lavapipe).
    /// - otherwise (GPUs without subgroups, as WebGPU in browsers): 32 threads per row, 2 rows per
    ///   thread, 8 rows per workgroup of 128 (coalesced row reads; the best portable decode shape
    ///   on the H100).
    pub fn for_device(gpu: &Gpu, format: Format, max_tokens: u32) -> Shape {
        let tile = tile_for(max_tokens);
        if matches!(format, Format::Int4 { .. } | Format::Bits { .. }) && Self::subgroups(gpu) {
            let wg = gpu.info.subgroup_max_size.max(16);
            return Shape { rows: 4 * wg, threads_per_row: 1, rows_per_thread: 4, tile, subgroup: true };
        }
        match gpu.info.device_type {
            wgpu::DeviceType::Cpu => Shape { rows: 64, threads_per_row: 1, rows_per_thread: 4, tile, subgroup: false },
            _ => Shape { rows: 8, threads_per_row: 32, rows_per_thread: 2, tile, subgroup: false },
        }
    }

    /// Whether `gpu` can run the subgroup kernel.
    pub fn subgroups(gpu: &Gpu) -> bool {
        gpu.features.contains(wgpu::Features::SUBGROUP) && gpu.info.subgroup_min_size >= 8
    }

    fn workgroup_size(self) -> u32 {
        self.rows / self.rows_per_thread.max(1) * self.threads_per_row
    }
}

/// The token tile of ops built for chunks of up to `max_tokens` (every format's).
pub fn tile_for(max_tokens: u32) -> u32 {
    max_tokens.clamp(1, MAX_TILE)
}

/// The routing inputs of [`expert_ops`] and [`grouped_expert_ops`].
#[derive(Clone, Copy)]
pub struct Experts<'a> {
    /// Rows of each expert in the stacked matrix.
    pub rows_per_expert: u32,
    /// `u32 [T, k]`: the expert of each (token, slot), written on the GPU by the router.
    pub ids: &'a wgpu::Buffer,
    /// Slots per token.
    pub k: u32,
    /// `x` holds one row per slot (`[T * k, cols]`) rather than one per token (`[T, cols]`).
    pub x_per_slot: bool,
    /// Grouped: `ids` is `moe_group`'s tile list (cut with the shape's tile) and this its grouped
    /// rows; `None`: `ids` is `u32 [T, k]` (one matvec per slot).
    pub group_rows: Option<&'a wgpu::Buffer>,
    /// Floats per row of `x` and of `out` where they are wider than the matrix reads and
    /// writes (MLA's per-head matmuls over `[kv_lora | rope]` rows); `None`: `cols` and the
    /// expert's rows.
    pub strides: Option<(u32, u32)>,
}

/// Ops computing `y[t, r] = sum_c W[r, c] * x[t, c] (+ bias[r])` for `t < n_tokens` (read from
/// `step`) into `out` ([`Out`]): `x` is `f32 [T, cols]`, `out` is `f32 [T, rows]` (SwiGLU:
/// `[T, rows / 2]`); one op per chunk of `m`.
pub fn ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    m: &GpuMatrix,
    x: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    out: Out,
    max_tokens: u32,
) -> Result<Vec<Op>> {
    build(gpu, step, m, x, bias, out, max_tokens, None, Shape::for_device(gpu, m.format, max_tokens))
}

/// Ops running the routed experts of a stacked matrix `m` (`[E * rows_per_expert, cols]`, uploaded
/// with [`GpuMatrix::upload_experts`]): for each token `t < n_tokens` and slot `s < k`, with
/// `e = expert_ids[t * k + s]`,
/// `out[t * k + s, r] = sum_c W[e * rows_per_expert + r, c] * x_in[c]` for `r < rows_per_expert`,
/// where `x_in` is `x[t]` (gate/up, `x_per_slot = false`) or `x[t * k + s]` (down). `out` is
/// `f32 [T * k, rows_per_expert]`. The ids are read on the GPU; each chunk's op computes the
/// slots whose expert it holds.
#[allow(clippy::too_many_arguments)]
pub fn expert_ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    m: &GpuMatrix,
    rows_per_expert: u32,
    expert_ids: &wgpu::Buffer,
    k: u32,
    x: &wgpu::Buffer,
    out: Out,
    max_tokens: u32,
    x_per_slot: bool,
) -> Result<Vec<Op>> {
    let experts = Experts { rows_per_expert, ids: expert_ids, k, x_per_slot, group_rows: None, strides: None };
    build(gpu, step, m, x, None, out, max_tokens, Some(experts), Shape::for_device(gpu, m.format, 1))
}

/// Per-head matmuls (MLA's `W_UK` and `W_UV`): `m` stacks `heads` matrices of `rows_per_head`
/// rows, `head_ids` is `u32 [max_tokens * heads]` with slot `s` holding `s % heads`, and for each
/// token `t` and head `h`, `out[(t*heads + h) * out_stride + r] = sum_c W_h[r, c] * x[(t*heads +
/// h) * x_stride + c]`: each row of `x` and of `out` may be wider than the matrix reads or writes.
#[allow(clippy::too_many_arguments)]
pub fn head_ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    m: &GpuMatrix,
    rows_per_head: u32,
    head_ids: &wgpu::Buffer,
    heads: u32,
    x: (&wgpu::Buffer, u32),
    out: (&wgpu::Buffer, u32),
    max_tokens: u32,
) -> Result<Vec<Op>> {
    let experts = Experts {
        rows_per_expert: rows_per_head,
        ids: head_ids,
        k: heads,
        x_per_slot: true,
        group_rows: None,
        strides: Some((x.1, out.1)),
    };
    build(gpu, step, m, x.0, None, Out::Set(out.0), max_tokens, Some(experts), Shape::for_device(gpu, m.format, 1))
}

/// [`expert_ops`]' outputs for prefill, grouped by expert: `tiles` and `rows` are what
/// `moe_group` wrote for this step with tiles of [`tile_for`]`(max_tokens)` pairs. Each op
/// dispatches the most tiles any routing can make ([`moe_group::max_tiles`]); the ids stay on
/// the GPU.
#[allow(clippy::too_many_arguments)]
pub fn grouped_expert_ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    m: &GpuMatrix,
    rows_per_expert: u32,
    tiles: &wgpu::Buffer,
    rows: &wgpu::Buffer,
    k: u32,
    x: &wgpu::Buffer,
    out: Out,
    max_tokens: u32,
    x_per_slot: bool,
) -> Result<Vec<Op>> {
    let experts = Experts { rows_per_expert, ids: tiles, k, x_per_slot, group_rows: Some(rows), strides: None };
    build(gpu, step, m, x, None, out, max_tokens, Some(experts), Shape::for_device(gpu, m.format, max_tokens))
}

/// Expected `ceil(c / tile)` for the count `c ~ Binomial(tokens, p)` of tokens one expert gets
/// when each of `tokens` picks it with probability `p` (uniform routing): the tiles, and so the
/// reads of its weights, that one grouped op makes per expert.
fn expected_tiles(tokens: u32, p: f64, tile: u32) -> f64 {
    if p >= 1.0 {
        return f64::from(tokens.div_ceil(tile));
    }
    let (n, p) = (f64::from(tokens), p.max(0.0));
    // P(c = 0) = (1-p)^n, then P(c) = P(c-1) * (n-c+1)/c * p/(1-p).
    let mut prob = (1.0 - p).powf(n);
    let mut sum = 0.0;
    for c in 1..=tokens {
        prob *= (n - f64::from(c) + 1.0) / f64::from(c) * p / (1.0 - p);
        sum += prob * f64::from(c.div_ceil(tile));
    }
    sum
}

/// The general constructor behind [`ops`], [`expert_ops`] and [`grouped_expert_ops`], with an explicit
/// workgroup `shape` (expert ops use tile 1: each slot has its own expert).
#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    m: &GpuMatrix,
    x: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    out: Out,
    max_tokens: u32,
    experts: Option<Experts>,
    shape: Shape,
) -> Result<Vec<Op>> {
    let bad = |p: String| Error::Gpu(format!("matmul of a {:?} [{}, {}] matrix: {p}", m.format, m.rows, m.cols));
    let wg = shape.workgroup_size();
    let max_wg = gpu.limits.max_compute_invocations_per_workgroup.min(256);
    if shape.rows == 0
        || !shape.threads_per_row.is_power_of_two()
        || !(1..=MAX_ROWS_PER_THREAD).contains(&shape.rows_per_thread)
        || !shape.rows.is_multiple_of(shape.rows_per_thread)
        || wg > max_wg
        || wg * shape.rows_per_thread * shape.tile > 4096
    {
        return Err(bad(format!("workgroup shape {shape:?} (at most {max_wg} threads)")));
    }
    let grouped = experts.is_some_and(|e| e.group_rows.is_some());
    let tile = if experts.is_some() && !grouped { 1 } else { shape.tile };
    // Rows of one expert (or of the whole matrix), and the offset from a gate row to its up row.
    let unit_rows = experts.map_or(m.rows, |e| e.rows_per_expert as usize);
    let pair_rows = match out {
        Out::SwiGlu(_) => {
            if !unit_rows.is_multiple_of(2) || bias.is_some() || !shape.rows_per_thread.is_multiple_of(2) {
                return Err(bad(format!(
                    "SwiGLU pairs need an even number of rows ({unit_rows}) and of rows per thread ({}), and no bias",
                    shape.rows_per_thread
                )));
            }
            if experts.is_none() && m.chunks.len() != 1 {
                return Err(bad("SwiGLU pairs of a dense matrix need it in one binding".into()));
            }
            unit_rows / 2
        }
        _ => 0,
    };
    if !(1..=MAX_TILE).contains(&tile) {
        return Err(bad(format!("token tile {tile} (1 to {MAX_TILE})")));
    }
    let (label, source, mut constants): (&'static str, &str, Vec<(&str, f64)>) =
        match m.format {
            Format::F32 if m.cols.is_multiple_of(4) => ("matmul_f32", SOURCE_F32, vec![]),
            Format::Int8 { group } if group.is_multiple_of(16) => {
                ("matmul_int8", SOURCE_INT8, vec![("GROUP", group as f64)])
            }
            Format::Int4 { group, wide_scales } if group == 16 || group.is_multiple_of(32) => {
                let (label, source) =
                    if shape.subgroup { ("matmul_int4_sg", SOURCE_INT4_SG) } else { ("matmul_int4", SOURCE_INT4) };
                (label, source, vec![("GROUP", group as f64), ("WIDE", if wide_scales { 1.0 } else { 0.0 })])
            }
            Format::Bits { .. } => {
                let (label, source) =
                    if shape.subgroup { ("matmul_bits_sg", SOURCE_BITS_SG) } else { ("matmul_bits", SOURCE_BITS) };
                (label, source, bits_constants(m.format))
            }
            _ => return Err(bad(
                "the kernels need F32 rows of a multiple of 4, groups of a multiple of 16 (Int8) or of 16, 32*n (Int4)"
                    .into(),
            )),
        };
    // Grouped tiles are often part-filled (an expert's last tile): skip their missing tokens.
    let skip = if grouped { 1.0 } else { 0.0 };
    let pair = if pair_rows > 0 { 1.0 } else { 0.0 };
    constants.extend([
        ("ROWS", shape.rows as f64),
        ("WG", wg as f64),
        ("TT", tile as f64),
        ("SKIP", skip),
        ("PAIR", pair),
    ]);
    if shape.subgroup {
        // Every subgroup must be full: lanes broadcast their x to the others.
        if shape.threads_per_row != 1 || !Shape::subgroups(gpu) || !wg.is_multiple_of(gpu.info.subgroup_max_size) {
            return Err(bad(format!(
                "the subgroup kernel needs subgroups of 8 or more, 1 thread per row and workgroups of whole \
                 subgroups ({}): {shape:?}",
                gpu.info.subgroup_max_size
            )));
        }
        constants.push(("RPT", shape.rows_per_thread as f64));
    } else {
        constants.extend([
            ("TPR", shape.threads_per_row as f64),
            ("RPT", shape.rows_per_thread as f64),
            ("PARTIAL", (wg * shape.rows_per_thread * tile) as f64),
        ]);
    }
    let kernel = gpu.kernel(label, source, &constants)?;

    let (items, rows_per_block_space, out_stride) = match experts {
        None => (max_tokens.div_ceil(tile), None, (m.rows - pair_rows) as u32),
        Some(e) => {
            let r = e.rows_per_expert as usize;
            if r == 0 || e.k == 0 || !m.rows_per_unit.is_multiple_of(r) {
                return Err(bad(format!(
                    "experts of {r} rows, k = {}, in a matrix uploaded in units of {} rows",
                    e.k, m.rows_per_unit
                )));
            }
            let items = match grouped {
                true => moe_group::max_tiles(max_tokens * e.k, (m.rows / r) as u32, tile),
                false => max_tokens * e.k,
            };
            let out_stride = e.strides.map_or((r - pair_rows) as u32, |(_, o)| o);
            (items, Some(r), out_stride)
        }
    };
    let x_stride = experts.and_then(|e| e.strides).map_or(m.cols as u32, |(x, _)| x);
    if !x_stride.is_multiple_of(4) || (x_stride as usize) < m.cols || (out_stride as usize) < unit_rows - pair_rows {
        return Err(bad(format!("rows of x ({x_stride} floats) or of out ({out_stride}) narrower than the matrix, or x's not of whole vec4s")));
    }
    let max_dim = gpu.limits.max_compute_workgroups_per_dimension;
    if items > max_dim {
        return Err(bad(format!("{items} token tiles or slots exceed {max_dim} workgroups")));
    }
    let unused = gpu.storage_zeroed("matmul unused", 4);
    let mut ops = Vec::with_capacity(m.chunks.len());
    for chunk in &m.chunks {
        if chunk.rows == 0 {
            continue;
        }
        // Blocks of output rows: of one expert, or of the chunk (SwiGLU: half its rows).
        let block_rows = rows_per_block_space.unwrap_or(chunk.rows) - pair_rows;
        let blocks = (block_rows as u32).div_ceil(if pair_rows > 0 { shape.rows / 2 } else { shape.rows });
        let blocks_x = blocks.min(max_dim);
        let blocks_z = blocks.div_ceil(blocks_x);
        let e = experts.map(|e| (e.k, e.rows_per_expert, e.x_per_slot as u32)).unwrap_or((0, 1, 0));
        let params = Params {
            rows: chunk.rows as u32,
            cols: m.cols as u32,
            row_vec4s: m.row_vec4s as u32,
            scale_stride: m.scale_stride as u32,
            row0: chunk.row0 as u32,
            out_stride,
            blocks_x,
            has_bias: bias.is_some() as u32,
            k: e.0,
            rows_per_expert: e.1,
            expert0: (chunk.row0 / e.1 as usize) as u32,
            experts: (chunk.rows / e.1 as usize) as u32,
            x_per_slot: e.2,
            grouped: grouped as u32,
            pair_rows: pair_rows as u32,
            add: matches!(out, Out::Add(..)) as u32,
            add_scale: if let Out::Add(_, scale) = out { scale } else { 0.0 },
            x_stride4: x_stride / 4,
            _pad: [0; 2],
        };
        let params = gpu.uniform(label, &params);
        let ids = experts.map(|e| e.ids).unwrap_or(&unused);
        let bias = bias.unwrap_or(&unused);
        let mut buffers = vec![&params, step, x, ids, bias, out.buffer(), &chunk.qs];
        if m.format != Format::F32 {
            buffers.push(&chunk.scales);
        }
        buffers.push(experts.and_then(|e| e.group_rows).unwrap_or(&unused));
        let mut op = gpu.op(label, &kernel, &buffers, [blocks_x, items, blocks_z]);
        // Bytes read by a full chunk of max_tokens tokens. A pass reads each row of the chunk once
        // per token tile (values with their padding, and scales); routed experts per slot: each of
        // a token's k experts is read once, and under uniform routing this chunk holds the share
        // `chunk.rows / m.rows` of them; grouped: each expert once per tile of its tokens, the
        // expected number of tiles under uniform routing (at most ceil(tokens / tile)).
        let chunk_bytes = (4 * chunk.rows * (4 * m.row_vec4s + m.scale_stride)) as u64;
        op.weight_bytes = match experts {
            None => chunk_bytes * u64::from(max_tokens.div_ceil(tile)),
            Some(e) if grouped => {
                let p = f64::from(e.k) * f64::from(e.rows_per_expert) / m.rows as f64;
                (chunk_bytes as f64 * expected_tiles(max_tokens, p, tile)).round() as u64
            }
            Some(e) => {
                chunk_bytes * u64::from(e.k) * u64::from(max_tokens) * u64::from(e.rows_per_expert) / m.rows as u64
            }
        };
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{bits_dtype, gpu, random, random_ggml, BITS_TYPES};
    use crate::gpu::step::Step;
    use crate::quant::packed::{pack_f16_pair, unpack_f16_pair, PackedMatrix};
    use crate::quant::repack::bits_format;
    use crate::tensor::ggml::block_info;
    use crate::tensor::DType;
    use half::f16;

    /// The Bits format `dtype` repacks to.
    fn bits(dtype: DType) -> Format {
        bits_format(dtype).unwrap()
    }

    /// A random matrix of `format`: random values/nibbles/bytes and random scales (f16-exact for
    /// narrow Int4, arbitrary f32 otherwise).
    fn random_matrix(format: Format, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
        let words = |n: usize| -> Vec<u32> {
            (0..n as u64)
                .map(|i| {
                    (crate::sampler::uniform(seed, i) * 16_777_216.0) as u32 ^ (i as u32).wrapping_mul(0x9E37_79B9)
                })
                .collect()
        };
        let vals =
            |n: usize, s: u64, scale: f32| -> Vec<f32> { random(n, seed * 7 + s).iter().map(|v| v * scale).collect() };
        let (qs, scales) = match format {
            Format::F32 => (vals(rows * cols, 1, 1.0).iter().map(|v| v.to_bits()).collect(), vec![]),
            Format::Int8 { group } => {
                (words(rows * cols / 4), vals(rows * cols / group, 2, 0.02).iter().map(|v| v.to_bits()).collect())
            }
            Format::Int4 { group, wide_scales: false } => {
                let d = vals(rows * cols / group, 3, 0.1);
                let m = vals(rows * cols / group, 4, 0.5);
                (
                    words(rows * cols / 8),
                    d.iter().zip(&m).map(|(&d, &m)| pack_f16_pair(f16::from_f32(d), f16::from_f32(m))).collect(),
                )
            }
            Format::Int4 { group, wide_scales: true } => {
                let d = vals(rows * cols / group, 3, 0.1);
                let m = vals(rows * cols / group, 4, 0.5);
                (words(rows * cols / 8), d.iter().zip(&m).flat_map(|(&d, &m)| [d.to_bits(), m.to_bits()]).collect())
            }
            Format::Bits { .. } => return random_ggml(bits_dtype(format), rows, cols, seed),
        };
        PackedMatrix::new(rows, cols, format, qs, scales).unwrap()
    }

    /// A bound on the size of each weight's terms as the kernels may compute them, `[rows, cols]`:
    /// `|w|`, and for Int4 `|d| q + |m|` (the subgroup kernel sums `d * sum(q x) + m * sum(x)`);
    /// Bits likewise, with its offset folded into `m`.
    fn term_sizes(m: &PackedMatrix) -> Vec<f32> {
        if let Format::Bits { .. } = m.format {
            let mut out = vec![0.0; m.rows * m.cols];
            for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
                m.bits_term_sizes(r, row);
            }
            return out;
        }
        let Format::Int4 { group, wide_scales } = m.format else {
            return m.dequantize().iter().map(|v| v.abs()).collect();
        };
        let mut out = vec![0.0; m.rows * m.cols];
        for (i, o) in out.iter_mut().enumerate() {
            let (r, c) = (i / m.cols, i % m.cols);
            let g = r * (m.cols / group) + c / group;
            let (d, mm) = match wide_scales {
                false => unpack_f16_pair(m.scales[g]),
                true => (f32::from_bits(m.scales[2 * g]), f32::from_bits(m.scales[2 * g + 1])),
            };
            let q = (m.qs[i / 8] >> (4 * (i % 8))) & 15;
            *o = d.abs() * q as f32 + mm.abs();
        }
        out
    }

    /// `sum_c size_rc |x_tc|` for each output `(t, r)` (`[tokens, rows]`), the scale of its rounding
    /// error (`sizes` from [`term_sizes`]).
    fn magnitudes(sizes: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let tokens = x.len() / cols;
        let mut mags = vec![0.0; tokens * rows];
        for t in 0..tokens {
            for r in 0..rows {
                let (wr, xt) = (&sizes[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                mags[t * rows + r] = wr.iter().zip(xt).map(|(a, b)| a * b.abs()).sum();
            }
        }
        mags
    }

    /// Checks `got` against `want` (the CPU twin, `[tokens, rows]`). Each output is a sum of `cols`
    /// f32 products, summed in increasing c on the CPU and in per-thread partial sums on the GPU
    /// (the subgroup kernel as `d * sum(q x) + m * sum(x)` per group), so the two differ by
    /// rounding only: each rounding is at most 2^-24 of a partial sum, itself at most the
    /// magnitude `mag = sum_c size_rc |x_tc|` ([`magnitudes`]); with random signs the roundings
    /// add up like a random walk, ~sqrt(cols) * 2^-24 * mag, under 3e-6 * mag for cols <= 1152
    /// (and far less in practice, as partial sums are much smaller than mag). A fused
    /// multiply-add in the dequantization moves a weight by at most half an ulp. The tolerance,
    /// 1e-5 of mag, is well above that noise and about 100 times below the smallest error a wrong
    /// index or scale makes (one term of `cols` wrong, of order mag / cols >= 8e-4 mag).
    fn check(what: &str, got: &[f32], want: &[f32], mags: &[f32], rows: usize) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, ((g, e), mag)) in got.iter().zip(want).zip(mags).enumerate() {
            let (t, r) = (i / rows, i % rows);
            assert!((g - e).abs() <= 1e-5 * mag + 1e-30, "{what}: token {t} row {r}: got {g}, want {e} (terms {mag})");
        }
    }

    fn run_dense(
        m: &PackedMatrix,
        gpu_m: &GpuMatrix,
        tokens: usize,
        max_tokens: usize,
        bias: Option<&[f32]>,
        shape: Shape,
    ) -> Vec<f32> {
        let gpu = gpu();
        let x = random(max_tokens * m.cols, 11);
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, 0);
        let xb = gpu.storage("x", &x);
        // Poisoned output: rows past `tokens` must stay untouched.
        let out = gpu.storage("out", &vec![f32::NAN; max_tokens * m.rows]);
        let bias = bias.map(|b| gpu.storage("bias", b));
        let ops = build(gpu, &step.buffer, gpu_m, &xb, bias.as_ref(), Out::Set(&out), max_tokens as u32, None, shape)
            .unwrap();
        crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
        let got: Vec<f32> = gpu.read(&out).unwrap();
        assert!(got[tokens * m.rows..].iter().all(|v| v.is_nan()), "rows past n_tokens were written");
        got[..tokens * m.rows].to_vec()
    }

    /// The device's default shape for `format`, and the portable defaults for CPUs (one thread per
    /// row, 4 rows each) and GPUs (32 threads per row, 2 rows each), with the token tile ops for
    /// `max_tokens` get.
    fn main_shapes(format: Format, max_tokens: usize) -> Vec<Shape> {
        let tile = (max_tokens as u32).min(MAX_TILE);
        let mut v = vec![Shape::for_device(gpu(), format, max_tokens as u32)];
        for s in [
            Shape { rows: 64, threads_per_row: 1, rows_per_thread: 4, tile, subgroup: false },
            Shape { rows: 8, threads_per_row: 32, rows_per_thread: 2, tile, subgroup: false },
        ] {
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    }

    /// Every shape the tests try: the main ones and odd ones (8 x 8, 128 threads per row, 3 rows
    /// per thread, a tile of 3 tokens), and the subgroup kernel's.
    fn shapes(format: Format, max_tokens: usize) -> Vec<Shape> {
        let tile = (max_tokens as u32).min(MAX_TILE);
        let mut v = main_shapes(format, max_tokens);
        for (rows, threads_per_row, rows_per_thread) in [(8, 8, 1), (2, 128, 1), (9, 1, 3)] {
            v.push(Shape { rows, threads_per_row, rows_per_thread, tile, subgroup: false });
        }
        v.push(Shape { rows: 16, threads_per_row: 4, rows_per_thread: 2, tile: tile.min(3), subgroup: false });
        if matches!(format, Format::Int4 { .. } | Format::Bits { .. }) && Shape::subgroups(gpu()) {
            // Workgroups of 1 and 2 subgroups.
            let sg = gpu().info.subgroup_max_size;
            for (rows, rows_per_thread) in [(2 * sg, 2), (8 * sg, 4)] {
                v.push(Shape { rows, threads_per_row: 1, rows_per_thread, tile, subgroup: true });
            }
        }
        v
    }

    fn formats() -> Vec<(Format, Vec<usize>)> {
        let int4 = |group, wide_scales| Format::Int4 { group, wide_scales };
        let mut v = vec![
            (Format::F32, vec![4, 32, 96, 576, 1056]),
            (Format::Int8 { group: 32 }, vec![32, 96, 576, 1056]),
            (Format::Int8 { group: 16 }, vec![16, 48, 96, 1056]),
            (int4(32, false), vec![32, 96, 576, 1056]),
            (int4(64, false), vec![64, 576, 1088]),
            (int4(128, false), vec![128, 640, 1152]),
            (int4(32, true), vec![32, 96, 576, 1056]),
            // Group 16 with rows of 16 (mod 32) columns: the last vec4 unit is half padding.
            (int4(16, false), vec![16, 48, 208, 1040]),
            (int4(16, true), vec![48, 1040]),
        ];
        // Bits: 32-wide blocks in rows of 1, 3 (a padded row of 15 words at 5 bits), 19 and 33
        // units; super-blocks in rows of 1, 3 and 5.
        for dtype in BITS_TYPES {
            let format = bits(dtype);
            let cols = match block_info(dtype).unwrap().0 {
                32 => vec![32, 96, 608, 1056],
                _ => vec![256, 768, 1280],
            };
            v.push((format, cols));
        }
        v
    }

    #[test]
    fn every_format_matches_cpu_twin_on_awkward_shapes() {
        let gpu = gpu();
        for (format, cols_list) in formats() {
            for &rows in &[1, 7, 33, 300] {
                for &cols in &cols_list {
                    let m = random_matrix(format, rows, cols, (rows * 10_000 + cols) as u64);
                    let gm = GpuMatrix::upload(gpu, &m).unwrap();
                    let w = term_sizes(&m);
                    // Ops for 1 token (tile 1) and for 20 (tile 8) running 3 and 17.
                    for (tokens, max_tokens) in [(1, 1), (3, 20), (17, 20)] {
                        let x = &random(max_tokens * cols, 11)[..tokens * cols];
                        let (want, mags) = (m.matmul(x), magnitudes(&w, x, rows, cols));
                        for shape in main_shapes(format, max_tokens) {
                            let got = run_dense(&m, &gm, tokens, max_tokens, None, shape);
                            check(
                                &format!("{format:?} [{rows}, {cols}] T={tokens} {shape:?}"),
                                &got,
                                &want,
                                &mags,
                                rows,
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_workgroup_shape_matches_cpu_twin() {
        let gpu = gpu();
        let int4 = |group, wide_scales| Format::Int4 { group, wide_scales };
        for (format, cols) in
            [(Format::F32, 96), (Format::Int8 { group: 16 }, 48), (int4(32, false), 96), (int4(16, true), 48)]
        {
            let rows = 37;
            let m = random_matrix(format, rows, cols, 77);
            let gm = GpuMatrix::upload(gpu, &m).unwrap();
            let w = term_sizes(&m);
            for (tokens, max_tokens) in [(1, 1), (17, 17)] {
                let x = &random(max_tokens * cols, 11)[..tokens * cols];
                let (want, mags) = (m.matmul(x), magnitudes(&w, x, rows, cols));
                for shape in shapes(format, max_tokens) {
                    let got = run_dense(&m, &gm, tokens, max_tokens, None, shape);
                    check(&format!("{format:?} [{rows}, {cols}] T={tokens} {shape:?}"), &got, &want, &mags, rows);
                }
            }
        }
    }

    #[test]
    fn one_token_with_prefill_ops_and_bias() {
        // Ops built for 64 tokens (tile 8) run 1 and 9 tokens; the bias is added to every row.
        let gpu = gpu();
        for format in [Format::F32, Format::Int8 { group: 32 }, Format::Int4 { group: 32, wide_scales: false }] {
            let (rows, cols) = (45, 96);
            let m = random_matrix(format, rows, cols, 5);
            let gm = GpuMatrix::upload(gpu, &m).unwrap();
            let (w, bias) = (term_sizes(&m), random(rows, 6));
            for tokens in [1, 9] {
                let x = &random(64 * cols, 11)[..tokens * cols];
                let want: Vec<f32> = m.matmul(x).iter().enumerate().map(|(i, v)| v + bias[i % rows]).collect();
                // The bias is one more term of the sum.
                let mags: Vec<f32> =
                    magnitudes(&w, x, rows, cols).iter().enumerate().map(|(i, v)| v + bias[i % rows].abs()).collect();
                for shape in main_shapes(format, 64) {
                    let got = run_dense(&m, &gm, tokens, 64, Some(&bias), shape);
                    check(&format!("{format:?} bias T={tokens} {shape:?}"), &got, &want, &mags, rows);
                }
            }
        }
    }

    #[test]
    fn residual_add_epilogue() {
        // out = y0 + scale * (W x + b), with y0 what the buffer held, for decode and prefill ops.
        let gpu = gpu();
        let (rows, scale) = (37, 0.75f32);
        for (format, cols) in
            [(Format::F32, 96), (Format::Int8 { group: 32 }, 96), (Format::Int4 { group: 32, wide_scales: false }, 96)]
        {
            let m = random_matrix(format, rows, cols, 5);
            let gm = GpuMatrix::upload(gpu, &m).unwrap();
            let w = term_sizes(&m);
            let bias = random(rows, 6);
            for (tokens, max_tokens) in [(1, 1), (9, 17)] {
                let x = random(max_tokens * cols, 7);
                let y0 = random(max_tokens * rows, 8);
                let wx = m.matmul(&x[..tokens * cols]);
                let mags = magnitudes(&w, &x[..tokens * cols], rows, cols);
                let step = Step::new(gpu);
                step.set(gpu, tokens as u32, 0);
                let (xb, bb) = (gpu.storage("x", &x), gpu.storage("bias", &bias));
                for shape in main_shapes(format, max_tokens) {
                    let out = gpu.storage("out", &y0);
                    let ops = build(
                        gpu,
                        &step.buffer,
                        &gm,
                        &xb,
                        Some(&bb),
                        Out::Add(&out, scale),
                        max_tokens as u32,
                        None,
                        shape,
                    )
                    .unwrap();
                    crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
                    let got: Vec<f32> = gpu.read(&out).unwrap();
                    assert_eq!(got[tokens * rows..], y0[tokens * rows..], "rows past n_tokens were written");
                    for i in 0..tokens * rows {
                        let want = y0[i] + scale * (wx[i] + bias[i % rows]);
                        let tol = 1e-5 * scale * (mags[i] + bias[i % rows].abs()) + 1e-6 * y0[i].abs();
                        assert!(
                            (got[i] - want).abs() <= tol,
                            "{format:?} {shape:?} T={tokens} [{i}]: {} vs {want}",
                            got[i]
                        );
                    }
                }
            }
        }
    }

    /// `silu(g) * u` of twin outputs `g`, `u` and its rounding scale from their magnitudes: an error
    /// of e_g in g moves the product by at most 1.1 |u| e_g (|silu'| < 1.1), one of e_u by |silu(g)| e_u.
    fn swiglu_twin(g: &[f32], u: &[f32], mag_g: &[f32], mag_u: &[f32]) -> (Vec<f32>, Vec<f32>) {
        use crate::ops::{silu, silu_mul};
        let want = silu_mul(g, u);
        let mags = (0..g.len()).map(|i| 1.1 * u[i].abs() * mag_g[i] + silu(g[i]).abs() * mag_u[i]).collect();
        (want, mags)
    }

    #[test]
    fn swiglu_pairs_match_cpu_twin() {
        // Dense: [I, cols] gate and up paired; out[t, r] = silu(gate x) * (up x), decode and prefill.
        let gpu = gpu();
        for (format, inner, cols) in [
            (Format::F32, 37, 96),
            (Format::Int8 { group: 32 }, 37, 96),
            (Format::Int4 { group: 32, wide_scales: false }, 37, 96),
            (Format::Int4 { group: 16, wide_scales: true }, 300, 208),
            (bits(DType::Q2_K), 37, 256),
        ] {
            let (gate, up) = (random_matrix(format, inner, cols, 41), random_matrix(format, inner, cols, 42));
            let (gg, gu) = (GpuMatrix::upload(gpu, &gate).unwrap(), GpuMatrix::upload(gpu, &up).unwrap());
            let paired = GpuMatrix::pair(gpu, &gg, &gu, 1).unwrap().expect("same formats pair");
            assert_eq!((paired.rows, paired.chunks.len()), (2 * inner, 1));
            for (tokens, max_tokens) in [(1, 1), (9, 17)] {
                let x = random(max_tokens * cols, 43);
                let xt = &x[..tokens * cols];
                let (mg, mu) =
                    (magnitudes(&term_sizes(&gate), xt, inner, cols), magnitudes(&term_sizes(&up), xt, inner, cols));
                let (want, mags) = swiglu_twin(&gate.matmul(xt), &up.matmul(xt), &mg, &mu);
                let step = Step::new(gpu);
                step.set(gpu, tokens as u32, 0);
                let xb = gpu.storage("x", &x);
                let mut shapes = main_shapes(format, max_tokens);
                shapes.retain(|s| s.rows_per_thread % 2 == 0);
                for shape in shapes {
                    let out = gpu.storage("out", &vec![f32::NAN; max_tokens * inner]);
                    let ops =
                        build(gpu, &step.buffer, &paired, &xb, None, Out::SwiGlu(&out), max_tokens as u32, None, shape)
                            .unwrap();
                    crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
                    let got: Vec<f32> = gpu.read(&out).unwrap();
                    assert!(got[tokens * inner..].iter().all(|v| v.is_nan()), "rows past n_tokens were written");
                    check(
                        &format!("{format:?} pairs T={tokens} {shape:?}"),
                        &got[..tokens * inner],
                        &want,
                        &mags,
                        inner,
                    );
                }
                // An odd number of rows per thread cannot hold pairs: an error, not a wrong result.
                let odd = Shape { rows: 9, threads_per_row: 1, rows_per_thread: 3, tile: 1, subgroup: false };
                let out = gpu.storage("out", &[0.0f32; 4]);
                assert!(build(gpu, &step.buffer, &paired, &xb, None, Out::SwiGlu(&out), 1, None, odd).is_err());
            }
        }
        // Different formats do not pair.
        let a = GpuMatrix::upload(gpu, &random_matrix(Format::F32, 8, 32, 1)).unwrap();
        let b = GpuMatrix::upload(gpu, &random_matrix(Format::Int8 { group: 32 }, 8, 32, 2)).unwrap();
        assert!(GpuMatrix::pair(gpu, &a, &b, 1).unwrap().is_none());
    }

    #[test]
    fn swiglu_pairs_of_experts_match_cpu_twin() {
        // E stacked experts paired per expert, split across chunks; per-slot (decode) and grouped ops.
        use crate::gpu::kernels::moe_group::{self, GroupBuffers};
        let gpu = gpu();
        let (n_experts, inner, k, cols) = (7usize, 33usize, 3usize, 96usize);
        for format in [Format::F32, Format::Int4 { group: 32, wide_scales: false }, bits(DType::Q5_0)] {
            let (gate, up) = (
                random_matrix(format, n_experts * inner, cols, 51),
                random_matrix(format, n_experts * inner, cols, 52),
            );
            let row_bytes = |m: &GpuMatrix| (16 * m.row_vec4s).max(4 * m.scale_stride) as u64;
            let gg = GpuMatrix::upload_experts(gpu, &gate, inner).unwrap();
            // Gate split in 3 chunks; up whole: pairing reads across chunks.
            let gg = GpuMatrix::upload_with_limit(gpu, &gate, inner, 3 * inner as u64 * row_bytes(&gg)).unwrap();
            let gu = GpuMatrix::upload_experts(gpu, &up, inner).unwrap();
            assert!(gg.chunks.len() > 1);
            let paired = GpuMatrix::pair(gpu, &gg, &gu, n_experts).unwrap().expect("same formats pair");
            let (tw_g, tw_u) = (term_sizes(&gate), term_sizes(&up));
            for (tokens, max_tokens, grouped) in [(1, 1, false), (13, 16, true)] {
                let (what, ids) = routings(tokens, max_tokens, n_experts, k).remove(0);
                let x = random(max_tokens * cols, 53);
                let step = Step::new(gpu);
                step.set(gpu, tokens as u32, 0);
                let (xb, idb) = (gpu.storage("x", &x), gpu.storage("ids", &ids));
                let shape = Shape::for_device(gpu, format, max_tokens as u32);
                let out = gpu.storage("out", &vec![f32::NAN; max_tokens * k * inner]);
                let (mt, kk, rows) = (max_tokens as u32, k as u32, 2 * inner as u32);
                let mut ops = vec![];
                let groups = GroupBuffers::new(gpu, mt, n_experts as u32, kk, shape.tile);
                let e = match grouped {
                    false => Experts {
                        rows_per_expert: rows,
                        ids: &idb,
                        k: kk,
                        x_per_slot: false,
                        group_rows: None,
                        strides: None,
                    },
                    true => {
                        ops.push(
                            moe_group::op(gpu, &step.buffer, &idb, &groups, n_experts as u32, kk, shape.tile).unwrap(),
                        );
                        Experts {
                            rows_per_expert: rows,
                            ids: &groups.tiles,
                            k: kk,
                            x_per_slot: false,
                            group_rows: Some(&groups.rows),
                            strides: None,
                        }
                    }
                };
                ops.extend(
                    build(gpu, &step.buffer, &paired, &xb, None, Out::SwiGlu(&out), mt, Some(e), shape).unwrap(),
                );
                crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
                let got: Vec<f32> = gpu.read(&out).unwrap();
                assert!(got[tokens * k * inner..].iter().all(|v| v.is_nan()), "slots past n_tokens were written");
                for slot in 0..tokens * k {
                    let ex = ids[slot] as usize;
                    let xin = &x[slot / k * cols..(slot / k + 1) * cols];
                    let rows_of = |m: &PackedMatrix| expert(m, ex, inner).matvec(xin);
                    let span = ex * inner * cols..(ex + 1) * inner * cols;
                    let (mg, mu) =
                        (magnitudes(&tw_g[span.clone()], xin, inner, cols), magnitudes(&tw_u[span], xin, inner, cols));
                    let (want, mags) = swiglu_twin(&rows_of(&gate), &rows_of(&up), &mg, &mu);
                    let got = &got[slot * inner..(slot + 1) * inner];
                    check(
                        &format!("{format:?} {what} grouped {grouped} slot {slot} expert {ex}"),
                        got,
                        &want,
                        &mags,
                        inner,
                    );
                }
            }
        }
    }

    #[test]
    fn split_matrix_equals_unsplit() {
        let gpu = gpu();
        for format in [
            Format::F32,
            Format::Int8 { group: 16 },
            Format::Int4 { group: 32, wide_scales: false },
            Format::Int4 { group: 16, wide_scales: true },
        ] {
            // Group 16: rows of 16 (mod 32) columns, so padded rows are split too.
            let (rows, cols) = (301, if matches!(format, Format::Int4 { group: 16, .. }) { 208 } else { 224 });
            let m = random_matrix(format, rows, cols, 9);
            let whole = GpuMatrix::upload(gpu, &m).unwrap();
            assert_eq!(whole.chunks.len(), 1);
            // At most 37 rows per chunk of values: 9 chunks (301 = 8 * 34 + 29 after balancing).
            let row_bytes = (16 * whole.row_vec4s).max(4 * whole.scale_stride) as u64;
            let split = GpuMatrix::upload_with_limit(gpu, &m, 1, 37 * row_bytes).unwrap();
            assert!(split.chunks.len() >= 3, "{format:?}: {} chunks", split.chunks.len());
            assert_eq!(split.chunks.iter().map(|c| c.rows).sum::<usize>(), rows);
            for tokens in [1, 5] {
                for shape in main_shapes(format, tokens) {
                    let a = run_dense(&m, &whole, tokens, tokens, None, shape);
                    let b = run_dense(&m, &split, tokens, tokens, None, shape);
                    // The same kernel computes each row the same way whatever chunk holds it.
                    assert_eq!(a, b, "{format:?} T={tokens} {shape:?}");
                }
            }
        }
        // A unit larger than the limit is an error, not a silent overflow.
        let m = random_matrix(Format::F32, 4, 64, 1);
        assert!(GpuMatrix::upload_with_limit(gpu, &m, 2, 100).is_err());
        assert!(GpuMatrix::upload_with_limit(gpu, &m, 3, 1 << 20).is_err());
    }

    #[test]
    fn experts_match_cpu_loop_across_chunks() {
        let gpu = gpu();
        let (n_experts, r, k) = (7usize, 33usize, 3usize);
        for format in [
            Format::F32,
            Format::Int8 { group: 32 },
            Format::Int4 { group: 32, wide_scales: false },
            Format::Int4 { group: 64, wide_scales: true },
            bits(DType::Q5_1),
            bits(DType::Q6_K),
        ] {
            let cols = match format {
                Format::Int4 { group: 64, .. } => 192,
                Format::Bits { scales: BitScales::Super { .. }, .. } => 256,
                _ => 96,
            };
            let m = random_matrix(format, n_experts * r, cols, 21);
            let w = term_sizes(&m);
            let whole = GpuMatrix::upload_experts(gpu, &m, r).unwrap();
            assert_eq!(whole.chunks.len(), 1);
            // Room for two and a half experts per chunk: 4 chunks of 2, 2, 2, 1 experts.
            let row_bytes = (16 * whole.row_vec4s).max(4 * whole.scale_stride) as u64;
            let split = GpuMatrix::upload_with_limit(gpu, &m, r, 5 * r as u64 * row_bytes / 2).unwrap();
            assert_eq!(split.chunks.len(), 4, "{format:?}");
            assert!(split.chunks.iter().all(|c| c.row0 % r == 0 && c.rows % r == 0));
            for (tokens, max_tokens, x_per_slot) in [(1, 1, false), (5, 8, false), (5, 6, true)] {
                // Every expert is used, slots of one token go to different chunks.
                let ids: Vec<u32> = (0..max_tokens * k).map(|i| ((i * 5 + i / k) % n_experts) as u32).collect();
                let x_rows = if x_per_slot { max_tokens * k } else { max_tokens };
                let x = random(x_rows * cols, 31);
                let step = Step::new(gpu);
                step.set(gpu, tokens as u32, 0);
                let (xb, idb) = (gpu.storage("x", &x), gpu.storage("ids", &ids));
                let run = |gm: &GpuMatrix, shape: Option<Shape>| -> Vec<f32> {
                    let out = gpu.storage("out", &vec![f32::NAN; max_tokens * k * r]);
                    let (step, mt) = (&step.buffer, max_tokens as u32);
                    let ops = match shape {
                        None => {
                            expert_ops(gpu, step, gm, r as u32, &idb, k as u32, &xb, Out::Set(&out), mt, x_per_slot)
                        }
                        Some(shape) => {
                            let e = Experts {
                                rows_per_expert: r as u32,
                                ids: &idb,
                                k: k as u32,
                                x_per_slot,
                                group_rows: None,
                                strides: None,
                            };
                            build(gpu, step, gm, &xb, None, Out::Set(&out), mt, Some(e), shape)
                        }
                    }
                    .unwrap();
                    crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
                    let got: Vec<f32> = gpu.read(&out).unwrap();
                    assert!(got[tokens * k * r..].iter().all(|v| v.is_nan()), "slots past n_tokens were written");
                    got[..tokens * k * r].to_vec()
                };
                let mut outs = vec![("default".to_string(), run(&split, None))];
                assert_eq!(outs[0].1, run(&whole, None), "{format:?}: split and whole differ");
                for shape in shapes(format, 1) {
                    outs.push((format!("{shape:?}"), run(&split, Some(shape))));
                }
                for slot in 0..tokens * k {
                    let e = ids[slot] as usize;
                    let xi = if x_per_slot { slot } else { slot / k };
                    let xin = &x[xi * cols..(xi + 1) * cols];
                    let want = expert(&m, e, r).matvec(xin);
                    for (shape, got) in &outs {
                        let mags = magnitudes(&w[e * r * cols..(e + 1) * r * cols], xin, r, cols);
                        let what = format!("{format:?} slot {slot} expert {e} x_per_slot {x_per_slot} {shape}");
                        check(&what, &got[slot * r..(slot + 1) * r], &want, &mags, r);
                    }
                }
            }
        }
    }

    #[test]
    fn per_head_matmuls_read_and_write_wider_rows() {
        // MLA's W_UK / W_UV: head h of each token reads its row of x (stride wider than cols)
        // and writes its row of out (stride wider than the head's rows); the columns past
        // cols of x are never read (set to NaN), those past the head's rows never written.
        let gpu = gpu();
        let (heads, r) = (5usize, 12usize);
        for format in [Format::F32, Format::Int4 { group: 32, wide_scales: false }, bits(DType::Q5_0)] {
            let cols = 64;
            let (x_stride, out_stride) = (cols + 12, r + 4);
            let m = random_matrix(format, heads * r, cols, 7);
            let w = term_sizes(&m);
            let gm = GpuMatrix::upload_experts(gpu, &m, r).unwrap();
            for (tokens, max_tokens) in [(1usize, 1usize), (3, 4)] {
                let mut x = random(max_tokens * heads * x_stride, 3);
                for row in x.chunks_exact_mut(x_stride) {
                    row[cols..].fill(f32::NAN);
                }
                let ids: Vec<u32> = (0..max_tokens * heads).map(|s| (s % heads) as u32).collect();
                let step = Step::new(gpu);
                step.set(gpu, tokens as u32, 0);
                let (xb, idb) = (gpu.storage("x", &x), gpu.storage("ids", &ids));
                let out = gpu.storage("out", &vec![-3.0f32; max_tokens * heads * out_stride]);
                let (hs, mt) = (heads as u32, max_tokens as u32);
                let x_arg = (&xb, x_stride as u32);
                let ops = head_ops(gpu, &step.buffer, &gm, r as u32, &idb, hs, x_arg, (&out, out_stride as u32), mt);
                crate::gpu::submit(gpu, &ops.unwrap().iter().collect::<Vec<_>>());
                let got: Vec<f32> = gpu.read(&out).unwrap();
                for slot in 0..max_tokens * heads {
                    let row = &got[slot * out_stride..(slot + 1) * out_stride];
                    if slot >= tokens * heads {
                        assert!(row.iter().all(|&v| v == -3.0), "{format:?}: slot {slot} past the tokens written");
                        continue;
                    }
                    assert!(row[r..].iter().all(|&v| v == -3.0), "{format:?}: columns past the head's rows written");
                    let h = slot % heads;
                    let xin = &x[slot * x_stride..slot * x_stride + cols];
                    let want = expert(&m, h, r).matvec(xin);
                    let mags = magnitudes(&w[h * r * cols..(h + 1) * r * cols], xin, r, cols);
                    check(&format!("{format:?} slot {slot}"), &row[..r], &want, &mags, r);
                }
            }
        }
    }

    /// Rows `e * r .. (e + 1) * r` of `m`: expert `e` of a stack of experts of `r` rows.
    fn expert(m: &PackedMatrix, e: usize, r: usize) -> PackedMatrix {
        let (w, s) = (m.row_words(), m.scales.len() / m.rows);
        let (qs, scales) = (m.qs[e * r * w..(e + 1) * r * w].to_vec(), m.scales[e * r * s..(e + 1) * r * s].to_vec());
        PackedMatrix { rows: r, cols: m.cols, format: m.format, qs, scales }
    }

    /// Routings for the grouped tests, `[max_tokens * k]` (entries past `tokens * k` unused): each
    /// token's k experts distinct, as moe_route makes them.
    fn routings(tokens: usize, max_tokens: usize, n_experts: usize, k: usize) -> Vec<(&'static str, Vec<u32>)> {
        let pad = |mut v: Vec<u32>| {
            v.resize(max_tokens * k, 0);
            v
        };
        // Only experts 0, 2, 3, 5 and 6 of 7 (1 and 4 get no token), skewed (t^2 mod 5 is 0, 1 or 4);
        // offsets 0, 2, 4 (mod 5) keep a token's experts distinct.
        let used = [0u32, 2, 3, 5, 6];
        let skewed: Vec<u32> = (0..tokens).flat_map(|t| (0..k).map(move |s| used[(t * t + 2 * s) % 5])).collect();
        let distinct = |v: &[u32]| v.chunks(k).all(|c| (1..c.len()).all(|i| !c[..i].contains(&c[i])));
        assert!(k <= 3 && distinct(&skewed));
        // Every token's first slot on expert 4 (more tokens than a tile), the others spread.
        let one: Vec<u32> =
            (0..tokens).flat_map(|t| (0..k).map(move |s| if s == 0 { 4 } else { ((t + s) % 4) as u32 })).collect();
        assert!(distinct(&one) && n_experts > 4);
        vec![("skewed, two experts unused", pad(skewed)), ("every token on expert 4", pad(one))]
    }

    #[test]
    fn grouped_experts_match_cpu_twin_on_awkward_sizes() {
        use crate::gpu::kernels::moe_group::{self, GroupBuffers};
        let gpu = gpu();
        let (n_experts, r) = (7usize, 33usize);
        let int4 = |group, wide_scales| Format::Int4 { group, wide_scales };
        for (format, cols) in [
            (Format::F32, 96),
            (Format::Int8 { group: 32 }, 96),
            (int4(32, false), 96),
            (int4(64, true), 192),
            (int4(16, false), 208),
            (bits(DType::Q3_K), 256),
            (bits(DType::IQ4_NL), 96),
            (bits(DType::MXFP4), 96),
        ] {
            let m = random_matrix(format, n_experts * r, cols, 23);
            let w = term_sizes(&m);
            let whole = GpuMatrix::upload_experts(gpu, &m, r).unwrap();
            let row_bytes = (16 * whole.row_vec4s).max(4 * whole.scale_stride) as u64;
            let split = GpuMatrix::upload_with_limit(gpu, &m, r, 5 * r as u64 * row_bytes / 2).unwrap();
            assert!(split.chunks.len() > 1);
            // Tokens not a multiple of the tile; one token; k of 1 (all on one expert) and 3.
            for (tokens, max_tokens, k, x_per_slot) in
                [(13, 16, 3, false), (13, 13, 3, true), (1, 8, 3, false), (19, 20, 1, true), (9, 9, 1, false)]
            {
                for (what, ids) in routings(tokens, max_tokens, n_experts, k) {
                    let x_rows = if x_per_slot { max_tokens * k } else { max_tokens };
                    let x = random(x_rows * cols, 37);
                    let step = Step::new(gpu);
                    step.set(gpu, tokens as u32, 0);
                    let (xb, idb) = (gpu.storage("x", &x), gpu.storage("ids", &ids));
                    let (mt, kk) = (max_tokens as u32, k as u32);
                    let mut outs = vec![];
                    let mut shapes = main_shapes(format, max_tokens);
                    shapes.push(Shape { rows: 16, threads_per_row: 4, rows_per_thread: 2, tile: 3, subgroup: false });
                    for (gm, matrix) in [(&split, "split"), (&whole, "whole")] {
                        for &shape in &shapes {
                            let groups = GroupBuffers::new(gpu, mt, n_experts as u32, kk, shape.tile);
                            let out = gpu.storage("out", &vec![f32::NAN; max_tokens * k * r]);
                            let group =
                                moe_group::op(gpu, &step.buffer, &idb, &groups, n_experts as u32, kk, shape.tile);
                            let e = Experts {
                                rows_per_expert: r as u32,
                                ids: &groups.tiles,
                                k: kk,
                                x_per_slot,
                                group_rows: Some(&groups.rows),
                                strides: None,
                            };
                            let mut ops = vec![group.unwrap()];
                            ops.extend(
                                build(gpu, &step.buffer, gm, &xb, None, Out::Set(&out), mt, Some(e), shape).unwrap(),
                            );
                            crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
                            let got: Vec<f32> = gpu.read(&out).unwrap();
                            assert!(
                                got[tokens * k * r..].iter().all(|v| v.is_nan()),
                                "slots past n_tokens were written"
                            );
                            outs.push((format!("{matrix} {shape:?}"), got[..tokens * k * r].to_vec()));
                        }
                    }
                    for slot in 0..tokens * k {
                        let e = ids[slot] as usize;
                        let xi = if x_per_slot { slot } else { slot / k };
                        let xin = &x[xi * cols..(xi + 1) * cols];
                        let want = expert(&m, e, r).matvec(xin);
                        let mags = magnitudes(&w[e * r * cols..(e + 1) * r * cols], xin, r, cols);
                        for (shape, got) in &outs {
                            let what = format!("{format:?} {what} T={tokens} k={k} slot {slot} expert {e} {shape}");
                            check(&what, &got[slot * r..(slot + 1) * r], &want, &mags, r);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn expected_tiles_counts_reads_per_expert() {
        // One token per expert at most: a tile whenever it is picked.
        assert!((expected_tiles(1, 0.25, 8) - 0.25).abs() < 1e-12);
        // Always picked: ceil(T / tile).
        assert_eq!(expected_tiles(13, 1.0, 8), 2.0);
        // Tiles of 1: the expected count, T p.
        assert!((expected_tiles(64, 4.0 / 64.0, 1) - 4.0).abs() < 1e-9);
        // Between P(picked) and that plus T p / tile.
        let (t, p) = (64u32, 4.0f64 / 64.0);
        let picked = 1.0 - (1.0 - p).powi(t as i32);
        let e = expected_tiles(t, p, 8);
        assert!(e >= picked && e <= picked + f64::from(t) * p / 8.0, "{e}");
    }

    /// Seconds per run of `f` (which submits work), best of `reps` after a warm-up, timed to
    /// the end of the GPU work with a blocking poll.
    fn time_best(gpu: &Gpu, reps: usize, mut f: impl FnMut()) -> f64 {
        let mut best = f64::INFINITY;
        for i in 0..=reps {
            let t = std::time::Instant::now();
            f();
            gpu.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            if i > 0 {
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        best
    }

    /// Weight-read throughput of the INT4 matvec (decode) and matmul (prefill) against the
    /// device's buffer-copy bandwidth. Prints, asserts nothing:
    /// `XDG_RUNTIME_DIR=/tmp cargo test --release --lib matmul::tests::throughput -- --ignored --nocapture`
    /// (`FLINT_BENCH_MB`: weight bytes streamed per pass, default 512, more than the 480 MiB L3 of
    /// the CI machines, so that weights come from DRAM as in a real model; `FLINT_BENCH_SHAPES`,
    /// `FLINT_BENCH_PREFILL=0`: see below).
    ///
    /// Figures by device and shape: BENCHMARKS.md, "INT4 matmul shapes".
    #[test]
    #[ignore]
    fn throughput() {
        let gpu = gpu();
        eprintln!("device: {}", gpu.describe());
        let mib = 1 << 20;
        let copy_bytes = 256 * mib as u64;
        let (a, b) = (gpu.storage_zeroed("copy src", copy_bytes), gpu.storage_zeroed("copy dst", copy_bytes));
        // Four copies per submission, so that submission latency (large on real GPUs) counts little.
        let t = time_best(gpu, 3, || {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            for _ in 0..4 {
                enc.copy_buffer_to_buffer(&a, 0, &b, 0, copy_bytes);
            }
            gpu.queue.submit([enc.finish()]);
        }) / 4.0;
        let copy_gbs = copy_bytes as f64 / t / 1e9;
        eprintln!("copy_buffer_to_buffer 256 MiB: {:.2} ms, {copy_gbs:.1} GB/s copied", t * 1e3);
        drop((a, b));

        let total: usize = std::env::var("FLINT_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(512) * mib;
        // FLINT_BENCH_SHAPES: ROWSxTPRxRPTxSG,... (rows per workgroup, threads per row, rows per thread,
        // 1 for the subgroup kernel).
        let candidates: Vec<(u32, u32, u32, u32)> = match std::env::var("FLINT_BENCH_SHAPES") {
            Ok(v) => v
                .split(',')
                .map(|p| {
                    let n: Vec<u32> = p.split('x').map(|v| v.parse().unwrap()).collect();
                    (n[0], n[1], n[2], n.get(3).copied().unwrap_or(0))
                })
                .collect(),
            Err(_) => {
                let d = Shape::for_device(gpu, Format::Int4 { group: 32, wide_scales: false }, 1);
                let mut v = vec![(d.rows, d.threads_per_row, d.rows_per_thread, d.subgroup as u32)];
                v.extend([(64, 1, 4, 0), (8, 8, 1, 0), (8, 32, 2, 0), (4, 32, 1, 0)]);
                v
            }
        };
        let prefill = std::env::var("FLINT_BENCH_PREFILL").map(|v| v != "0").unwrap_or(true);
        for (rows, cols) in [(5632, 2048), (1536, 576)] {
            let m = random_matrix(Format::Int4 { group: 32, wide_scales: false }, rows, cols, 3);
            let one = GpuMatrix::upload(gpu, &m).unwrap();
            let copies = total.div_ceil(one.bytes() as usize).max(1);
            let mats: Vec<GpuMatrix> =
                std::iter::once(one).chain((1..copies).map(|_| GpuMatrix::upload(gpu, &m).unwrap())).collect();
            let bytes = mats.iter().map(|g| g.bytes()).sum::<u64>() as f64;
            let step = Step::new(gpu);
            let x = gpu.storage("x", &random(64 * cols, 1));
            // One output per matrix: ops that share no written buffer need no barrier between them.
            let outs: Vec<wgpu::Buffer> =
                (0..copies).map(|_| gpu.storage_zeroed("out", (64 * rows * 4) as u64)).collect();
            eprintln!("INT4 g32 [{rows}, {cols}] x {copies} matrices ({:.0} MB per pass):", bytes / 1e6);
            for &(r, tpr, rpt, sg) in &candidates {
                for (tokens, tile) in [(1, 1), (64, 8)] {
                    if tokens > 1 && !prefill {
                        continue;
                    }
                    let shape = Shape { rows: r, threads_per_row: tpr, rows_per_thread: rpt, tile, subgroup: sg == 1 };
                    step.set(gpu, tokens, 0);
                    // Prefill is compute-bound on lavapipe: a few matrices suffice.
                    let n = if tokens == 1 { copies } else { copies.min(4) };
                    let bytes = bytes * n as f64 / copies as f64;
                    let ops: Vec<Op> = mats[..n]
                        .iter()
                        .zip(&outs)
                        .flat_map(|(g, out)| {
                            build(gpu, &step.buffer, g, &x, None, Out::Set(out), tokens, None, shape).unwrap()
                        })
                        .collect();
                    let refs: Vec<&Op> = ops.iter().collect();
                    let reps = if tokens == 1 { 5 } else { 1 };
                    let t = time_best(gpu, reps, || {
                        crate::gpu::submit(gpu, &refs);
                    });
                    let gbs = bytes / t / 1e9;
                    let per = t * 1e3 / n as f64;
                    if tokens == 1 {
                        eprintln!(
                            "  {r:>3} rows x {tpr:>2} threads x {rpt} rows/thread sg {sg}, T=1: {per:.3} ms per matrix, {gbs:.1} GB/s ({:.0}% of copy)",
                            100.0 * gbs / copy_gbs
                        );
                    } else {
                        let gflops = 2.0 * (rows * cols * n) as f64 * tokens as f64 / t / 1e9;
                        eprintln!(
                            "  {r:>3} rows x {tpr:>2} threads x {rpt} rows/thread sg {sg}, T=64 tile 8: {per:.2} ms per matrix, \
                             {gflops:.1} GFLOP/s"
                        );
                    }
                }
            }
        }
    }
}
