// The same wasm build and flint.js under Deno, whose WebGPU is wgpu on the machine's Vulkan
// (lavapipe here): separates the cost of the browser's WebGPU (SwiftShader) from the wasm build.
//
//   deno run -A benches/browser/deno.js http://127.0.0.1:8090 [tokens]
// (with www/serve.mjs serving www/ and the model as /models/smollm/).
const [base, tokens = "16"] = Deno.args;
const { Flint } = await import(`${base}/flint.js`);
const t0 = performance.now();
const model = await Flint.load(`${base}/models/smollm/SmolLM2-135M-Instruct.Q4_1.gguf`, { cache: false });
const loadMs = performance.now() - t0;
// The first request compiles every pipeline (the driver's JIT): timed apart, as warm-up.
const w0 = performance.now();
for await (const _ of model.generate("Hello", { maxTokens: 2, temperature: 0 }));
const warmupMs = performance.now() - w0;
const stream = model.generate("The capital of France is", { maxTokens: Number(tokens), temperature: 0 });
let text = "";
for await (const piece of stream) text += piece;
const r = await stream.result;
console.log(JSON.stringify({ adapter: model.adapter.name, text, loadMs, warmupMs, prefillTokS: r.prefillTokensPerSecond, decodeTokS: r.decodeTokensPerSecond, prefillMs: r.prefillMs, decodeMs: r.decodeMs }));
