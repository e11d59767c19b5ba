// The wasm build in headless Chromium (WebGPU on SwiftShader here; on a machine with a GPU,
// Chromium uses it): load time, then prefill and decode tokens/s of SmolLM2 after a warm-up.
//
//   node benches/browser/chromium.mjs http://127.0.0.1:8090 [tokens]
// (with www/serve.mjs serving www/, the model as /models/smollm/ and tests/browser as /models/test/).
import { chromium } from "../../www/node_modules/playwright-core/index.mjs";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, tokens = "16"] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "flint-bench-")), {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-gpu-sandbox", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const page = await context.newPage();
await page.goto(`${base}/models/test/page.html`);
// The device's bounds, in the same page before the model loads: buffer copy, and the best of
// two workgroup sizes of a WGSL kernel that only reads (vec4<u32> loads, grid-stride).
const bounds = await page.evaluate(async () => {
  const adapter = await navigator.gpu.requestAdapter();
  const device = await adapter.requestDevice();
  const bytes = 64 << 20;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const src = device.createBuffer({ size: bytes, usage });
  const dst = device.createBuffer({ size: bytes, usage });
  const sums = device.createBuffer({ size: 4 * 65536, usage: GPUBufferUsage.STORAGE });
  const timed = async (record) => {
    const encoder = device.createCommandEncoder();
    record(encoder);
    const t0 = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  const best = async (record, reps) => {
    await timed(record);
    let ms = Infinity;
    for (let i = 0; i < 3; i++) ms = Math.min(ms, await timed(record));
    return (reps * bytes) / ms / 1e6;
  };
  const copy = await best((e) => { for (let i = 0; i < 4; i++) e.copyBufferToBuffer(src, 0, dst, 0, bytes); }, 4);
  let read = 0;
  for (const wg of [64, 256]) {
    const code = `@group(0) @binding(0) var<storage, read> data: array<vec4<u32>>;
      @group(0) @binding(1) var<storage, read_write> sums: array<u32>;
      @compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
        var acc = vec4<u32>(0u);
        for (var i = id.x; i < arrayLength(&data); i += n.x * ${wg}u) { acc += data[i]; }
        sums[id.x % 65536u] = acc.x + acc.y + acc.z + acc.w;
      }`;
    const pipeline = device.createComputePipeline({ layout: "auto", compute: { module: device.createShaderModule({ code }), entryPoint: "main" } });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: sums } }] });
    read = Math.max(read, await best((e) => {
      const pass = e.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      for (let i = 0; i < 4; i++) pass.dispatchWorkgroups(256);
      pass.end();
    }, 4));
  }
  device.destroy();
  return { copyGBps: copy, readGBps: read };
});

const result = await page.evaluate(async ({ tokens }) => {
  const { Flint } = await import("/flint.js");
  const t0 = performance.now();
  const model = await Flint.load("/models/smollm/SmolLM2-135M-Instruct.Q4_1.gguf", { cache: false });
  const loadMs = performance.now() - t0;
  // The first request runs every pipeline once: timed apart, as warm-up.
  const w0 = performance.now();
  for await (const _ of model.generate("Hello", { maxTokens: 2, temperature: 0 }));
  const warmupMs = performance.now() - w0;
  const stream = model.generate("The capital of France is", { maxTokens: tokens, temperature: 0 });
  let text = "";
  for await (const piece of stream) text += piece;
  const r = await stream.result;
  const profile = await model.profile();
  return { adapter: model.adapter.name, text, loadMs, load: model.info.load, warmupMs, weightBytes: model.info.weightBytes,
    prefillTokS: r.prefillTokensPerSecond, decodeTokS: r.decodeTokensPerSecond, prefillMs: r.prefillMs,
    decodeMs: r.decodeMs, profile: profile.sort((a, b) => b.ms - a.ms) };
}, { tokens: Number(tokens) });
// SmolLM2's decode step reads its weights once: bytes per token over the bound.
const weightBytes = result.weightBytes;
console.log(JSON.stringify({ ...result, ...bounds,
  rooflineFractionCopy: (result.decodeTokS * weightBytes) / (bounds.copyGBps * 1e9),
  rooflineFractionRead: (result.decodeTokS * weightBytes) / (bounds.readGBps * 1e9) }));
await context.close();
