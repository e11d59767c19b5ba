// The flint engine in an ES-module Web Worker. flint.js posts {id, method, args}; the worker
// answers {id, result} or {id, error}, streams {id, piece} while generating and
// {id, progress} while loading, and aborts request `id` on {id, method: "abort"}. Between two
// tokens the generation loop awaits the GPU, so abort messages are handled promptly.

import { coreOf, loadModel } from "./core.js";

let core = null;
const aborts = new Map(); // request id -> AbortController

const methods = {
  async load(id, [source, options]) {
    const loaded = await loadModel(source, {
      ...options,
      signal: aborts.get(id).signal,
      onProgress: (progress) => postMessage({ id, progress }),
    });
    core = coreOf(loaded);
    return { info: core.info, adapter: core.adapter };
  },
  generate: (id, [prompt, options]) =>
    core.generate(prompt, options, (piece) => postMessage({ id, piece }), aborts.get(id).signal),
  logits: (id, [tokens]) => core.logits(tokens),
  profile: () => core.profile(),
  applyChatTemplate: (id, [messages]) => core.applyChatTemplate(messages),
  encode: (id, [text]) => core.encode(text),
  decode: (id, [ids]) => core.decode(ids),
};

onmessage = async ({ data: { id, method, args } }) => {
  if (method === "abort") return aborts.get(id)?.abort();
  aborts.set(id, new AbortController());
  try {
    if (!methods[method]) throw new Error(`unknown method ${method}`);
    if (method !== "load" && !core) throw new Error("no model is loaded in this worker");
    postMessage({ id, result: await methods[method](id, args) });
  } catch (e) {
    postMessage({ id, error: { name: e?.name ?? "Error", message: e?.message ?? String(e) } });
  } finally {
    aborts.delete(id);
  }
};
