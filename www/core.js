// The engine side of flint.js: opens WebGPU through the wasm module, resolves a model source
// to files, downloads (or reads) them and streams them to the GPU. Runs on the page or inside
// the worker (worker.js); flint.js talks to it through the same small interface either way:
//   info, adapter, generate(prompt, options, onText, signal), logits(tokens),
//   applyChatTemplate(messages), encode(text), decode(ids)

import init, { Engine, GgufLoader, Model } from "./pkg/flint.js";
import { cachedJson, exists, fetchBlob, storeJson } from "./fetch.js";

let engine = null;

/** Opens WebGPU once per page or worker; a clear error when the browser has none. */
export async function openEngine() {
  if (engine) return engine;
  if (!globalThis.navigator?.gpu) {
    throw new Error("WebGPU is not available in this browser (navigator.gpu is missing): use a recent Chrome, Edge or another browser with WebGPU enabled");
  }
  await init({ module_or_path: new URL("./pkg/flint_bg.wasm", import.meta.url) });
  engine = await Engine.open();
  return engine;
}

const GGUF_PREFIX = 4 << 20;

/**
 * Resolves `source` to named Blobs: a `.gguf` URL, a base URL of a Hugging Face-style folder
 * (config.json, model.safetensors or its shards, tokenizer.json, tokenizer_config.json), or
 * an array of user-picked Files.
 */
async function resolve(source, { cache, signal, progress }) {
  if (Array.isArray(source) || (globalThis.FileList && source instanceof FileList)) {
    const files = [...source];
    if (!files.every((f) => f instanceof Blob && typeof f.name === "string")) {
      throw new TypeError("Flint.load: a list of sources must be File objects");
    }
    return files.map((f) => ({ name: f.name, blob: f }));
  }
  if (typeof source !== "string" && !(source instanceof URL)) {
    throw new TypeError("Flint.load: source must be a URL (a .gguf file or a model folder) or a list of Files");
  }
  const url = new URL(source, globalThis.location?.href);
  const get = (u, name) => fetchBlob(u, { cache, signal, onBytes: (r, t) => progress(name, r, t) }).then((blob) => ({ name, blob }));
  if (url.pathname.toLowerCase().endsWith(".gguf")) {
    return [await get(url.href, url.pathname.split("/").pop())];
  }
  const base = url.href.endsWith("/") ? url.href : `${url.href}/`;
  const manifest = await folderManifest(base, { cache, signal });
  const files = [];
  for (const name of manifest) files.push(await get(new URL(name, base).href, name));
  return files;
}

/** The files of a model folder, remembered so a cached reload makes no request at all. */
async function folderManifest(base, { cache, signal }) {
  const remembered = cache ? await cachedJson(base) : null;
  if (remembered) return remembered;
  const names = ["config.json"];
  const index = await fetch(new URL("model.safetensors.index.json", base), { signal });
  if (index.ok) {
    const map = (await index.json()).weight_map ?? {};
    names.push(...new Set(Object.values(map)));
  } else {
    names.push("model.safetensors");
  }
  for (const optional of ["tokenizer.json", "tokenizer_config.json"]) {
    if (await exists(new URL(optional, base).href, { signal })) names.push(optional);
  }
  if (cache) await storeJson(base, names);
  return names;
}

/**
 * Loads a model. A GGUF is streamed to the GPU layer by layer from its Blob (the whole file is
 * never in memory); a safetensors folder is handed over file by file.
 */
export async function loadModel(source, { cache = true, signal, ctx = 0, onProgress = () => {} } = {}) {
  const gpuEngine = await openEngine();
  const sizes = new Map();
  const progress = (name, loaded, total) => {
    sizes.set(name, [loaded, total ?? 0]);
    let a = 0, b = 0;
    for (const [l, t] of sizes.values()) { a += l; b += t; }
    onProgress({ phase: "download", file: name, loaded: a, total: b });
  };
  const started = performance.now();
  const files = await resolve(source, { cache, signal, progress });
  const downloaded = performance.now();
  const gguf = files.find((f) => f.name.toLowerCase().endsWith(".gguf"));
  let model;
  if (gguf) {
    model = await streamGguf(gpuEngine, gguf.blob, { ctx, signal, onProgress });
  } else {
    onProgress({ phase: "upload", loaded: 0, total: 1 });
    const bytes = await Promise.all(files.map(async (f) => new Uint8Array(await f.blob.arrayBuffer())));
    model = Model.load(gpuEngine, files.map((f) => f.name), bytes, ctx);
    onProgress({ phase: "upload", loaded: 1, total: 1 });
  }
  await model.ready();
  const ready = performance.now();
  return { model, timing: { downloadMs: downloaded - started, uploadMs: ready - downloaded, loadMs: ready - started } };
}

async function streamGguf(gpuEngine, blob, { ctx, signal, onProgress }) {
  let length = Math.min(GGUF_PREFIX, blob.size);
  let loader;
  for (;;) {
    const prefix = new Uint8Array(await blob.slice(0, length).arrayBuffer());
    try {
      loader = GgufLoader.open(gpuEngine, prefix, blob.size, ctx);
      break;
    } catch (e) {
      // The header (vocabulary included) did not fit the prefix: read more, up to the file.
      if (length >= blob.size) throw e;
      length = Math.min(length * 4, blob.size);
    }
  }
  const parts = loader.parts();
  let done = 0;
  const total = parts.reduce((n, [a, b]) => n + (b - a), 0);
  for (let i = 0; i < parts.length; i++) {
    signal?.throwIfAborted();
    const [start, end] = parts[i];
    loader.addPart(i, new Uint8Array(await blob.slice(start, end).arrayBuffer()));
    done += end - start;
    onProgress({ phase: "upload", loaded: done, total });
  }
  return loader.finish();
}

/** Wraps a loaded wasm Model in the interface flint.js uses. */
export function coreOf(loaded) {
  const { model, timing } = loaded;
  return {
    info: { ...model.info(), load: timing },
    adapter: engine.adapter,
    generate: (prompt, options, onText, signal) => model.generate(prompt, options, onText, signal),
    logits: (tokens) => model.logits(Uint32Array.from(tokens)),
    applyChatTemplate: (messages) => model.applyChatTemplate(messages, true),
    encode: (text) => Array.from(model.encode(text, true)),
    decode: (ids) => model.decode(Uint32Array.from(ids)),
    dispose: () => model.free(),
  };
}
