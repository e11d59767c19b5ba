// flint in the browser: load a model onto WebGPU and stream its text.
//
//   import { Flint } from "flint";
//   const model = await Flint.load(url, { onProgress, cache: true, worker: true });
//   for await (const piece of model.generate("Once upon a time", { maxTokens: 64 })) ...
//   const stream = await model.chat.completions.create({ messages, stream: true });
//   for await (const chunk of stream) chunk.choices[0].delta.content;
//
// With `worker: true` the engine runs in an ES-module Web Worker (worker.js) behind the same
// API, so a page's or a WebXR session's frame loop never waits on inference.

import { METHODS } from "./methods.js";

export { clearCache, DownloadError } from "./fetch.js";

export class Flint {
  /**
   * Loads a model: `source` is a `.gguf` URL, the base URL of a Hugging Face-style folder, or
   * an array of user-picked Files. Options: `onProgress({phase, loaded, total})`, `cache`
   * (default true: OPFS), `worker` (default false), `signal` (AbortSignal), `ctx` (KV cache
   * positions; default min(4096, the model's)), `kvCache` ("f16", the default, or "f32").
   */
  static async load(source, { onProgress = () => {}, cache = true, worker = false, signal, ctx = 0, kvCache = "f16" } = {}) {
    const core = worker
      ? await workerCore(source, { onProgress, cache, signal, ctx, kvCache })
      : await pageCore(source, { onProgress, cache, signal, ctx, kvCache });
    return new FlintModel(core);
  }
}

async function pageCore(source, options) {
  const { loadModel, coreOf } = await import("./core.js");
  return coreOf(await loadModel(source, options));
}

/** The engine in a worker: every call is a message; text pieces come back as messages. */
async function workerCore(source, { onProgress, cache, signal, ctx, kvCache }) {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  let nextId = 1;
  const pending = new Map(); // id -> { resolve, reject, onText }
  worker.onmessage = ({ data }) => {
    const call = pending.get(data.id);
    if (!call) return;
    if (data.progress) return onProgress(data.progress);
    if (data.piece !== undefined) return call.onText?.(data.piece);
    pending.delete(data.id);
    if (data.error) call.reject(Object.assign(new Error(data.error.message), { name: data.error.name }));
    else call.resolve(data.result);
  };
  worker.onerror = (e) => {
    for (const call of pending.values()) call.reject(new Error(`flint worker failed: ${e.message}`));
    pending.clear();
  };
  const call = (method, args, { onText, signal: callSignal } = {}) => {
    const id = nextId++;
    const done = new Promise((resolve, reject) => pending.set(id, { resolve, reject, onText }));
    worker.postMessage({ id, method, args });
    callSignal?.addEventListener("abort", () => worker.postMessage({ id, method: "abort" }), { once: true });
    return done;
  };
  try {
    const loaded = await call("load", [cloneableSource(source), { cache, ctx, kvCache }], { signal });
    const requests = Object.fromEntries(METHODS.map((name) => [name, (args, context) => call(name, args, context)]));
    return { ...requests, info: loaded.info, adapter: loaded.adapter, dispose: () => worker.terminate() };
  } catch (e) {
    worker.terminate();
    throw e;
  }
}

/**
 * `source` as it can cross to the worker: Files (and a FileList's) are structured-cloneable and
 * stay Files; a URL object is not, so it goes as its text. Anything else goes as given, for
 * core.js to accept or reject with the message the page would get.
 */
function cloneableSource(source) {
  if (Array.isArray(source) || (globalThis.FileList && source instanceof FileList)) return [...source];
  return source instanceof URL ? source.href : source;
}

/** A loaded model. Requests run one at a time, in the order they were made. */
export class FlintModel {
  #core;
  #queue = Promise.resolve();

  constructor(core) {
    this.#core = core;
    /** Family, sizes, memory and load timing. */
    this.info = core.info;
    /** The WebGPU adapter's name, features and limits. */
    this.adapter = core.adapter;
    /** Statistics of the last finished request. */
    this.lastStats = null;
    /** The OpenAI-shaped chat API. */
    this.chat = { completions: { create: (request) => this.#createChatCompletion(request) } };
  }

  /** Runs `fn` after every earlier request has finished. */
  #enqueue(fn) {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Generates from `prompt` (text, or token ids). Returns a ReadableStream of text pieces that
   * is also an async iterator; `.result` resolves to the finished request's text, finish
   * reason, token usage and timing. Options: maxTokens, temperature, topP, topK, seed, stop,
   * signal.
   */
  generate(prompt, { signal, ...options } = {}) {
    let resolveResult, rejectResult;
    const result = new Promise((res, rej) => { resolveResult = res; rejectResult = rej; });
    result.catch(() => {}); // a caller reading only the stream sees the error there
    const stream = new ReadableStream({
      start: (controller) => {
        this.#enqueue(async () => {
          if (signal?.aborted) throw signal.reason ?? new DOMException("aborted", "AbortError");
          return this.#core.generate([prompt, options], { onText: (piece) => controller.enqueue(piece), signal });
        }).then(
          (r) => { this.lastStats = r; resolveResult(r); controller.close(); },
          (e) => { rejectResult(e); controller.error(e); },
        );
      },
    });
    stream.result = result;
    if (!stream[Symbol.asyncIterator]) {
      stream[Symbol.asyncIterator] = async function* () {
        const reader = stream.getReader();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) return;
            yield value;
          }
        } finally {
          reader.releaseLock();
        }
      };
    }
    return stream;
  }

  /** The logits of every position of `tokens` (Float32Array, `[tokens.length * vocab]`). */
  logits(tokens) {
    return this.#enqueue(() => this.#core.logits([Array.from(tokens)]));
  }

  /** Milliseconds per kernel of one decode step, `[{kernel, ms, dispatches}]` (each dispatch run
   * alone and waited for, so the sum exceeds a real step): where the time goes on this device. */
  profile() {
    return this.#enqueue(() => this.#core.profile([]));
  }

  applyChatTemplate(messages) {
    return this.#enqueue(() => this.#core.applyChatTemplate([messages]));
  }

  encode(text) {
    return this.#enqueue(() => this.#core.encode([text]));
  }

  decode(ids) {
    return this.#enqueue(() => this.#core.decode([Array.from(ids)]));
  }

  /** Frees the GPU memory (and ends the worker). */
  dispose() {
    return this.#enqueue(() => this.#core.dispose());
  }

  async #createChatCompletion(request) {
    const { messages, stream = false, signal } = request ?? {};
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new TypeError("chat.completions.create: `messages` must be a non-empty array of {role, content}");
    }
    if ((request.n ?? 1) !== 1) throw new TypeError("chat.completions.create: only n = 1 is supported");
    const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) {
      throw new TypeError(`chat.completions.create: max_tokens must be a non-negative integer, got ${maxTokens}`);
    }
    const options = {
      maxTokens,
      temperature: request.temperature ?? 1.0,
      topP: request.top_p ?? 1.0,
      seed: request.seed ?? Math.floor(Math.random() * 2 ** 32),
      stop: request.stop == null ? [] : [].concat(request.stop),
    };
    const prompt = await this.applyChatTemplate(messages.map(({ role, content }) => ({ role, content: String(content ?? "") })));
    const id = `chatcmpl-${crypto.randomUUID?.() ?? Date.now()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.info.name ?? this.info.family;
    const controller = new AbortController();
    signal?.addEventListener("abort", () => controller.abort(signal.reason), { once: true });
    const pieces = this.generate(prompt, { ...options, signal: controller.signal });
    const usageOf = (r) => ({
      prompt_tokens: r.promptTokens,
      completion_tokens: r.completionTokens,
      total_tokens: r.promptTokens + r.completionTokens,
      extra: { prefill_tokens_per_s: r.prefillTokensPerSecond, decode_tokens_per_s: r.decodeTokensPerSecond, prefill_ms: r.prefillMs, decode_ms: r.decodeMs },
    });
    const finishOf = (r) => (r.finishReason === "abort" ? "abort" : r.finishReason);
    if (!stream) {
      let text = "";
      for await (const piece of pieces) text += piece;
      const r = await pieces.result;
      return {
        id, object: "chat.completion", created, model,
        choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: finishOf(r), logprobs: null }],
        usage: usageOf(r),
      };
    }
    const chunk = (delta, finish_reason = null, usage) => ({
      id, object: "chat.completion.chunk", created, model,
      choices: [{ index: 0, delta, finish_reason, logprobs: null }],
      ...(usage ? { usage } : {}),
    });
    async function* chunks() {
      yield chunk({ role: "assistant", content: "" });
      for await (const piece of pieces) yield chunk({ content: piece });
      const r = await pieces.result;
      // The last chunk carries the finish reason and the usage (as WebLLM does).
      yield chunk({}, finishOf(r), usageOf(r));
    }
    const iterable = chunks();
    iterable.controller = controller; // as the OpenAI client's Stream: stream.controller.abort()
    return iterable;
  }
}
