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
  return { adapter: model.adapter.name, text, loadMs, load: model.info.load, warmupMs,
    prefillTokS: r.prefillTokensPerSecond, decodeTokS: r.decodeTokensPerSecond, prefillMs: r.prefillMs,
    decodeMs: r.decodeMs, profile: profile.sort((a, b) => b.ms - a.ms) };
}, { tokens: Number(tokens) });
console.log(JSON.stringify(result));
await context.close();
