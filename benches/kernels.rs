//! Per-kernel benchmarks at the real shapes of the `muse-spark-15b` preset, each reported as
//! GB/s (bytes the kernel must read) or GFLOP/s and as a ratio to bounds measured in the same
//! run: the buffer-copy bandwidth and the best streaming read of a plain WGSL kernel.
//!
//! `cargo bench --bench kernels` (text) or `cargo bench --bench kernels -- --json` (one JSON
//! object on stdout). Weights are generated on the device (seeded INT4, groups of 64).
//! Decode-shaped kernels stream at least 256 MB per pass (copies of the matrix, one op each),
//! more than the CPU caches under lavapipe, so that weights come from memory as in a model.

use flint::config::presets;
use flint::gpu::kernels::matmul::Out;
use flint::gpu::kernels::{attention, generate_int4, matmul, moe_route};
use flint::gpu::kernels::{Columns, KvFormat};
use flint::gpu::matrix::{GpuMatrix, MatrixLayout};
use flint::gpu::measure::{copy_gbps, read_gbps, time_best};
use flint::gpu::step::Step;
use flint::gpu::{Backend, Gpu, Op};
use flint::quant::blocks::random_blocks;
use flint::quant::packed::{Format, PackedMatrix};
use flint::tensor::ggml::block_info;
use flint::tensor::DType;
use serde_json::json;

const GROUP: usize = presets::PRESET_GROUP;
const STREAM_BYTES: u64 = 256 << 20;

fn generated(gpu: &Gpu, rows: usize, cols: usize, unit: usize, id: u32) -> GpuMatrix {
    let format = Format::Int4 { group: GROUP, wide_scales: false };
    let m = GpuMatrix::zeroed(gpu, &MatrixLayout::new(rows, cols, format, unit, gpu.max_binding_bytes()).unwrap());
    flint::gpu::submit(gpu, &generate_int4::ops(gpu, &m, 7, id).unwrap().iter().collect::<Vec<_>>());
    m
}

/// Seconds per run of `ops` in one pass, the best of `reps`.
/// The decode matvec of `m` uploaded as enough copies to stream STREAM_BYTES / 4 from memory:
/// (seconds, bytes read, copies).
fn streamed_matvec(gpu: &Gpu, step: &Step, x: &wgpu::Buffer, m: &PackedMatrix) -> (f64, f64, usize) {
    let one = GpuMatrix::upload(gpu, m).unwrap();
    let copies = (STREAM_BYTES / 4 / one.bytes()).max(1) as usize;
    let mats: Vec<GpuMatrix> =
        std::iter::once(one).chain((1..copies).map(|_| GpuMatrix::upload(gpu, m).unwrap())).collect();
    let out = gpu.storage_zeroed("out", (m.rows * 4) as u64);
    let ops: Vec<Op> =
        mats.iter().flat_map(|g| matmul::ops(gpu, &step.buffer, g, x, None, Out::Set(&out), 1).unwrap()).collect();
    let bytes: u64 = mats.iter().map(|g| g.bytes()).sum();
    (run(gpu, &ops, 5), bytes as f64, copies)
}

fn run(gpu: &Gpu, ops: &[Op], reps: usize) -> f64 {
    let refs: Vec<&Op> = ops.iter().collect();
    time_best(gpu, reps, || {
        flint::gpu::submit(gpu, &refs);
    })
}

struct Report {
    copy: f64,
    read: f64,
    rows: Vec<serde_json::Value>,
    json: bool,
}

impl Report {
    fn bandwidth(&mut self, kernel: &str, shape: &str, bytes: f64, seconds: f64) {
        let gbps = bytes / seconds / 1e9;
        if !self.json {
            println!(
                "{kernel:<22} {shape:<34} {:>9.3} ms {gbps:>7.2} GB/s  {:>4.0}% of copy  {:>4.0}% of read",
                seconds * 1e3,
                100.0 * gbps / self.copy,
                100.0 * gbps / self.read
            );
        }
        self.rows.push(json!({"kernel": kernel, "shape": shape, "ms": seconds * 1e3, "gbps": gbps,
            "copy_fraction": gbps / self.copy, "read_fraction": gbps / self.read}));
    }

    fn compute(&mut self, kernel: &str, shape: &str, flops: f64, bytes: f64, seconds: f64) {
        let (gflops, gbps) = (flops / seconds / 1e9, bytes / seconds / 1e9);
        if !self.json {
            println!(
                "{kernel:<22} {shape:<34} {:>9.3} ms {gflops:>7.2} GFLOP/s ({gbps:.2} GB/s of weights, {:.0}% of copy)",
                seconds * 1e3,
                100.0 * gbps / self.copy
            );
        }
        self.rows.push(json!({"kernel": kernel, "shape": shape, "ms": seconds * 1e3, "gflops": gflops,
            "gbps": gbps, "copy_fraction": gbps / self.copy}));
    }
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let gpu = Gpu::new_blocking(Backend::Auto).expect("a GPU adapter");
    let c = presets::find("muse-spark-15b").unwrap().config;
    let moe = c.moe.clone().unwrap();
    let (h, ie, se) = (c.hidden_size, moe.expert_intermediate_size, moe.shared_expert_intermediate_size.unwrap());
    let copy = copy_gbps(&gpu, 256 << 20);
    let read = read_gbps(&gpu, 512 << 20).unwrap();
    if !json {
        println!("device: {}", gpu.describe());
        println!(
            "bounds: buffer copy {copy:.2} GB/s; streaming read {:.2} GB/s (read_bandwidth.wgsl, {} x {} vec4)",
            read.gbps, read.workgroup, read.vec4s_per_workgroup
        );
    }
    let mut report = Report { copy, read: read.gbps, rows: vec![], json };
    let step = Step::new(&gpu);
    let x = gpu.storage_zeroed("x", (64 * se.max(h) * 4) as u64);

    // INT4 matvec (decode) and matmul (prefill, 64 tokens) at the dense shapes of a layer and the head.
    for (name, rows, cols) in [
        ("q/o [2048, 2048]", 2048, h),
        ("shared gate/up [5632, 2048]", se, h),
        ("shared down [2048, 5632]", h, se),
        ("output [151936, 2048]", c.vocab_size, h),
    ] {
        let one = generated(&gpu, rows, cols, 1, 100);
        let copies = (STREAM_BYTES / one.bytes()).max(1) as usize;
        let mats: Vec<GpuMatrix> =
            std::iter::once(one).chain((1..copies).map(|i| generated(&gpu, rows, cols, 1, 100 + i as u32))).collect();
        let bytes: u64 = mats.iter().map(|m| m.bytes()).sum();
        let outs: Vec<wgpu::Buffer> = mats.iter().map(|_| gpu.storage_zeroed("out", (64 * rows * 4) as u64)).collect();
        step.set(&gpu, 1, 0);
        let ops: Vec<Op> = mats
            .iter()
            .zip(&outs)
            .flat_map(|(m, o)| matmul::ops(&gpu, &step.buffer, m, &x, None, Out::Set(o), 1).unwrap())
            .collect();
        let t = run(&gpu, &ops, 5);
        report.bandwidth("int4 matvec", &format!("{name} x{copies}"), bytes as f64, t);
        // Prefill is compute-bound on lavapipe: one matrix.
        step.set(&gpu, 64, 0);
        let ops = matmul::ops(&gpu, &step.buffer, &mats[0], &x, None, Out::Set(&outs[0]), 64).unwrap();
        let t = run(&gpu, &ops, 1);
        let flops = 2.0 * (rows * cols) as f64 * 64.0;
        report.compute("int4 matmul T=64", name, flops, mats[0].bytes() as f64, t);
    }

    // Decode matvec per ggml type at [2048, 2048], weights as the loader packs them (INT4, INT8
    // or Bits): GB/s of packed bytes, to compare per byte with INT4. One random matrix uploaded
    // as copies that together exceed the caches.
    step.set(&gpu, 1, 0);
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q3_K,
        DType::Q2_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
        DType::MXFP4,
    ] {
        let (n, per_block) = (2048, block_info(dtype).unwrap().0);
        let packed = PackedMatrix::from_ggml(dtype, n, n, &random_blocks(dtype, n * n / per_block, 7)).unwrap();
        if dtype == DType::Q6_K {
            // Before Bits, Q6_K took INT8 in groups of 16 (10 bits per weight): measured alongside.
            let scales = packed.dequantize().chunks_exact(16).map(|g| (g[0].abs() + 1e-3).to_bits()).collect();
            let qs = (0..n * n / 4).map(|i| (i as u32).wrapping_mul(0x9E37_79B9)).collect();
            let before = PackedMatrix::new(n, n, Format::Int8 { group: 16 }, qs, scales).unwrap();
            let (t, bytes, copies) = streamed_matvec(&gpu, &step, &x, &before);
            report.bandwidth("Q6_K as Int8 (before)", &format!("[2048, 2048] x{copies}, 10.00 bits/weight"), bytes, t);
        }
        let (t, bytes, copies) = streamed_matvec(&gpu, &step, &x, &packed);
        let bpw = 8.0 * 4.0 * (packed.qs.len() + packed.scales.len()) as f64 / (n * n) as f64;
        report.bandwidth(
            &format!("{dtype:?} matvec"),
            &format!("[2048, 2048] x{copies}, {:?}, {bpw:.2} bits/weight", packed.format),
            bytes,
            t,
        );
    }

    // Router matvec + top-k for one token.
    step.set(&gpu, 1, 0);
    let router = generated(&gpu, moe.num_experts, h, 1, 200);
    let logits = gpu.storage_zeroed("router logits", (64 * moe.num_experts * 4) as u64);
    let ids = gpu.storage_zeroed("expert ids", (64 * moe.top_k * 4) as u64);
    let weights = gpu.storage_zeroed("expert weights", (64 * moe.top_k * 4) as u64);
    let mut ops = matmul::ops(&gpu, &step.buffer, &router, &x, None, Out::Set(&logits), 1).unwrap();
    let (e, k) = (moe.num_experts as u32, moe.top_k as u32);
    ops.push(
        moe_route::op(
            &gpu,
            &step.buffer,
            Columns { buffer: &logits, offset: 0, stride: e },
            None,
            &ids,
            &weights,
            1,
            e,
            k,
            &moe.routing,
        )
        .unwrap(),
    );
    let t = run(&gpu, &ops, 5);
    report.bandwidth(
        "router + top-k",
        &format!("[{}, {h}], top-{}", moe.num_experts, moe.top_k),
        router.bytes() as f64,
        t,
    );

    // Routed expert FFN of one token: gate and up of its k experts, then down (the swiglu
    // between is elementwise and left out). Experts 0..k are chosen (ids are zero-filled, then
    // written): the bytes read are those of k experts whichever they are.
    gpu.queue.write_buffer(&ids, 0, bytemuck::cast_slice(&(0..k).collect::<Vec<u32>>()));
    let gate = generated(&gpu, moe.num_experts * ie, h, ie, 201);
    let up = generated(&gpu, moe.num_experts * ie, h, ie, 202);
    let down = generated(&gpu, moe.num_experts * h, ie, h, 203);
    let act = gpu.storage_zeroed("act", (64 * k as usize * ie.max(h) * 4) as u64);
    let out = gpu.storage_zeroed("expert out", (64 * k as usize * h * 4) as u64);
    let mut ops = Vec::new();
    for (m, rows, input, output, per_slot) in
        [(&gate, ie, &x, &act, false), (&up, ie, &x, &act, false), (&down, h, &act, &out, true)]
    {
        ops.extend(
            matmul::expert_ops(&gpu, &step.buffer, m, rows as u32, &ids, k, input, Out::Set(output), 1, per_slot)
                .unwrap(),
        );
    }
    let t = run(&gpu, &ops, 5);
    let bytes = (gate.bytes() + up.bytes() + down.bytes()) as f64 * f64::from(k) / moe.num_experts as f64;
    report.bandwidth(
        "expert FFN (k experts)",
        &format!("{} of {} experts of [{ie}, {h}]", k, moe.num_experts),
        bytes,
        t,
    );

    // Attention of one token over 512 and 4096 cached positions (16 heads, 4 KV heads of 128),
    // with an f32 and an f16 cache; bytes are the cache's rows read.
    let (heads, kv_heads, hd) = (c.num_heads as u32, c.num_kv_heads as u32, c.head_dim as u32);
    for ctx in [512u32, 4096] {
        for kv in [KvFormat::F32, KvFormat::F16] {
            let cache_bytes = u64::from(ctx) * c.kv_dim() as u64 * kv.bytes_per_value();
            let (kc, vc) = (gpu.storage_zeroed("k cache", cache_bytes), gpu.storage_zeroed("v cache", cache_bytes));
            let q = gpu.storage_zeroed("q", (c.q_dim() * 4) as u64);
            let o = gpu.storage_zeroed("attention out", (c.q_dim() * 4) as u64);
            step.set(&gpu, 1, ctx - 1);
            let scale = c.attention_scale;
            // Split across workgroups as decode does on this device.
            let splits = attention::splits_for(&gpu, attention::workgroups_per_token(heads, kv_heads, hd), ctx);
            let partials = gpu.storage_zeroed("partials", attention::partials_bytes(1, splits, heads, hd));
            let ops = attention::ops(
                &gpu,
                &step.buffer,
                &q,
                &kc,
                &vc,
                &o,
                1,
                heads,
                kv_heads,
                hd,
                scale,
                kv,
                splits,
                &partials,
            );
            let t = run(&gpu, &ops.unwrap(), 5);
            let shape = format!("ctx {ctx}, {heads}/{kv_heads} heads of {hd}, {kv:?} cache, {splits} splits");
            report.bandwidth("attention", &shape, 2.0 * cache_bytes as f64, t);
        }
    }

    if json {
        let out = json!({"device": gpu.describe(), "copy_gbps": copy, "read_gbps": read.gbps, "read_kernel": read,
            "preset": "muse-spark-15b", "kernels": report.rows});
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
    }
}
