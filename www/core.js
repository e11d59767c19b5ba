// The engine side of flint.js: opens WebGPU through the wasm module, resolves a model source
// to files, downloads (or reads) them and streams them to the GPU. Runs on the page or inside
// the worker (worker.js); flint.js talks to it through the same small interface either way:
// info, adapter, dispose() and the requests of methods.js, each called as `(args, { onText, signal })`.

import init, { Engine, ModelLoader } from "./pkg/flint.js";
import { cachedJson, exists, fetchBlob, storeJson } from "./fetch.js";
import { METHODS } from "./methods.js";

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
 * Loads a model, streaming it to the GPU part by part from its Blobs (a layer at a time): no
 * file is ever whole in memory.
 */
export async function loadModel(source, { cache = true, signal, ctx = 0, kvCache = "f16", onProgress = () => {} } = {}) {
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
  // Downloads may overlap; uploads take turns (each runs inside its own GPU error scopes).
  const turn = uploads.then(() => upload(gpuEngine, files, { ctx, kvCache, signal, onProgress }));
  uploads = turn.catch(() => {});
  const model = await turn;
  const ready = performance.now();
  return { model, timing: { downloadMs: downloaded - started, uploadMs: ready - downloaded, loadMs: ready - started } };
}

let uploads = Promise.resolve();

async function upload(gpuEngine, files, { ctx, kvCache, signal, onProgress }) {
  const loader = await openLoader(gpuEngine, files, ctx, kvCache);
  const parts = loader.parts();
  const blobs = loader.blobs;
  const total = parts.flat().reduce((n, [, a, b]) => n + (b - a), 0);
  let done = 0;
  try {
    for (let i = 0; i < parts.length; i++) {
      signal?.throwIfAborted();
      const buffers = [];
      for (const [file, start, end] of parts[i]) {
        buffers.push(new Uint8Array(await blobs[file].slice(start, end).arrayBuffer()));
        done += end - start;
      }
      loader.addPart(i, buffers);
      onProgress({ phase: "upload", loaded: done, total });
    }
  } catch (e) {
    loader.free(); // now, not at garbage collection: its GPU error scopes close before the next load's
    throw e;
  }
  const model = loader.finish();
  await model.ready();
  return model;
}

/** Reads the headers (GGUF, or every safetensors file of a folder) and opens the loader. */
async function openLoader(gpuEngine, files, ctx, kvCache) {
  const bytes = async (blob, a = 0, b = blob.size) => new Uint8Array(await blob.slice(a, b).arrayBuffer());
  const gguf = files.find((f) => f.name.toLowerCase().endsWith(".gguf"));
  if (gguf) {
    // The header (vocabulary included) must fit the prefix: read more until it does.
    for (let length = Math.min(GGUF_PREFIX, gguf.blob.size); ; length = Math.min(length * 4, gguf.blob.size)) {
      try {
        return Object.assign(ModelLoader.gguf(gpuEngine, await bytes(gguf.blob, 0, length), gguf.blob.size, ctx, kvCache), { blobs: [gguf.blob] });
      } catch (e) {
        if (length >= gguf.blob.size || !/truncated read/.test(e.message)) throw e;
      }
    }
  }
  const byName = new Map(files.map((f) => [f.name, f.blob]));
  if (!byName.has("config.json")) throw new Error("a model folder needs config.json (or give a .gguf file)");
  const shards = files.filter((f) => f.name.endsWith(".safetensors"));
  if (!shards.length) throw new Error("the model folder has no .safetensors file");
  const prefixes = [];
  for (const { blob } of shards) {
    const n = new DataView((await bytes(blob, 0, 8)).buffer).getBigUint64(0, true);
    prefixes.push(await bytes(blob, 0, Math.min(blob.size, 8 + Number(n))));
  }
  const text = async (name) => (byName.has(name) ? byName.get(name).text() : undefined);
  const tokenizer = byName.has("tokenizer.json") ? await bytes(byName.get("tokenizer.json")) : undefined;
  const loader = ModelLoader.safetensors(gpuEngine, await text("config.json"), tokenizer, await text("tokenizer_config.json"),
    shards.map((f) => f.name), prefixes, shards.map((f) => f.blob.size), ctx, kvCache);
  return Object.assign(loader, { blobs: shards.map((f) => f.blob) });
}

/** Wraps a loaded wasm Model in the interface flint.js uses. */
export function coreOf(loaded) {
  const { model, timing } = loaded;
  const requests = {
    generate: ([prompt, options], { onText, signal }) => model.generate(prompt, options, onText, signal),
    logits: ([tokens]) => model.logits(Uint32Array.from(tokens)),
    profile: () => model.profile(),
    applyChatTemplate: ([messages]) => model.applyChatTemplate(messages, true),
    encode: ([text]) => Array.from(model.encode(text, true)),
    decode: ([ids]) => model.decode(Uint32Array.from(ids)),
  };
  // Exactly the requests methods.js names: a gap would otherwise surface only when called.
  if (Object.keys(requests).join() !== METHODS.join()) throw new Error("core.js: the requests differ from methods.js");
  return {
    ...requests,
    info: { ...model.info(), load: timing },
    adapter: engine.adapter,
    dispose: () => model.free(),
  };
}
