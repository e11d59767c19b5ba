// The flint engine in an ES-module Web Worker. flint.js posts {id, method, args}; the worker
// answers {id, result} or {id, error}, streams {id, piece} while generating and
// {id, progress} while loading, and aborts request `id` on {id, method: "abort"}. Between two
// tokens the generation loop awaits the GPU, so abort messages are handled promptly.

import { coreOf, loadModel } from "./core.js";
import { METHODS } from "./methods.js";

let core = null;
const aborts = new Map(); // request id -> AbortController

async function load(id, [source, options]) {
  const loaded = await loadModel(source, {
    ...options,
    signal: aborts.get(id).signal,
    onProgress: (progress) => postMessage({ id, progress }),
  });
  core = coreOf(loaded);
  return { info: core.info, adapter: core.adapter };
}

function request(id, method, args) {
  if (!METHODS.includes(method)) throw new Error(`unknown method ${method}`);
  if (!core) throw new Error("no model is loaded in this worker");
  return core[method](args, { onText: (piece) => postMessage({ id, piece }), signal: aborts.get(id).signal });
}

onmessage = async ({ data: { id, method, args } }) => {
  if (method === "abort") return aborts.get(id)?.abort();
  aborts.set(id, new AbortController());
  try {
    postMessage({ id, result: await (method === "load" ? load(id, args) : request(id, method, args)) });
  } catch (e) {
    postMessage({ id, error: { name: e?.name ?? "Error", message: e?.message ?? String(e) } });
  } finally {
    aborts.delete(id);
  }
};
