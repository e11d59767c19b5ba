import { chromium } from "../../www/node_modules/playwright-core/index.mjs";
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox","--enable-unsafe-webgpu","--disable-gpu-sandbox","--disable-background-networking","--disable-component-update","--disable-sync","--no-first-run","--disable-quic"] });
const page = await browser.newPage();
page.on("console", (m) => console.log("console:", m.text()));
await page.goto("http://127.0.0.1:8090/models/test/page.html");
const r = await page.evaluate(async () => {
  const { Flint } = await import("/flint.js");
  const t0 = performance.now();
  const m = await Flint.load("/models/fixtures/" + "llama/", { cache: false });
  const ref = await (await fetch("/models/fixtures/llama/reference.json")).json();
  const logits = await m.logits(ref.tokens);
  const vocab = ref.logits[0].length;
  let maxd = 0, maxr = 0;
  ref.logits.forEach((row, t) => row.forEach((v, i) => { maxd = Math.max(maxd, Math.abs(v - logits[t * vocab + i])); maxr = Math.max(maxr, Math.abs(v)); }));
  return { err: maxd / maxr, ms: performance.now() - t0, adapter: m.adapter };
});
console.log(JSON.stringify(r));
await browser.close();
