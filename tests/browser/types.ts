// Uses every declaration of www/flint.d.ts the way a TypeScript user would: `tsc --noEmit`
// (scripts/test-browser.sh, against www/, and run.mjs's `package` test, against the packed
// package) fails when a declaration is missing, misnamed or of the wrong type. Never run.

import { clearCache, DownloadError, Flint, FlintModel } from "flint";
import type {
  AdapterInfo, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionStream, ChatMessage,
  FinishReason, GenerateOptions, GenerateResult, GenerationStream, LoadOptions, LoadProgress, ModelInfo,
  ProfileEntry, Usage,
} from "flint";

export async function everything(files: FileList, picked: File[]): Promise<void> {
  const controller = new AbortController();
  const progress: LoadProgress[] = [];
  const options: LoadOptions = {
    onProgress: (p: LoadProgress) => progress.push(p),
    cache: false,
    worker: true,
    signal: controller.signal,
    ctx: 512,
    kvCache: "f32",
  };
  const phase: "download" | "upload" = progress[0].phase;
  const file: string | undefined = progress[0].file;
  const fraction: number = progress[0].loaded / progress[0].total;

  // Every kind of source.
  const model: FlintModel = await Flint.load("/models/model.gguf", options);
  await Flint.load(new URL("https://example.com/folder/"));
  await Flint.load(files, { worker: true });
  await Flint.load(picked);

  const info: ModelInfo = model.info;
  const sizes: number[] = [info.layers, info.hiddenSize, info.vocabSize, info.parameters, info.activeParameters,
    info.contextLength, info.weightBytes, info.kvCacheBytes, info.load.downloadMs, info.load.uploadMs, info.load.loadMs];
  const moe: (number | null)[] = [info.experts, info.topK];
  const names: string[] = [info.family, info.format];
  const flags: boolean[] = [info.hasTokenizer, info.hasChatTemplate];

  const adapter: AdapterInfo = model.adapter;
  const adapterText: string[] = [adapter.name, adapter.backend, adapter.deviceType, adapter.driver, adapter.features];
  const limit: number = adapter.limits.maxBufferSize;

  // generate: text or token ids, every option.
  const generateOptions: GenerateOptions = {
    maxTokens: 16, temperature: 0.7, topP: 0.9, topK: 40, seed: 1, stop: ["\n"], signal: controller.signal,
  };
  const stream: GenerationStream = model.generate("Once upon a time", generateOptions);
  let text = "";
  for await (const piece of stream) text += piece;
  const reader: ReadableStreamDefaultReader<string> = model.generate([1, 2, 3]).getReader();
  const first: ReadableStreamReadResult<string> = await reader.read();
  const result: GenerateResult = await stream.result;
  const reason: FinishReason = result.finishReason;
  const counts: number[] = [result.promptTokens, result.completionTokens, result.prefillMs, result.decodeMs,
    result.prefillTokensPerSecond, result.decodeTokensPerSecond, ...result.tokens];
  const resultText: string = result.text;
  const last: GenerateResult | null = model.lastStats;

  const logits: Float32Array = await model.logits([1, 2, 3]);
  await model.logits(new Uint32Array([1, 2, 3]));
  const profile: ProfileEntry[] = await model.profile();
  const kernelTimes: [string, number, number][] = profile.map((e) => [e.kernel, e.ms, e.dispatches]);
  const messages: ChatMessage[] = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }];
  const prompt: string = await model.applyChatTemplate(messages);
  const ids: number[] = await model.encode(prompt);
  const decoded: string = await model.decode(ids);
  await model.decode(new Uint32Array(ids));

  // The chat API: every request field; the stream's type follows `stream`.
  const request: ChatCompletionRequest = {
    messages, max_tokens: 8, max_completion_tokens: 8, temperature: 0, top_p: 1, seed: 3, stop: ["\n"], n: 1,
    signal: controller.signal,
  };
  const completion: ChatCompletion = await model.chat.completions.create({ ...request, stream: false });
  const reply: string = completion.choices[0].message.content;
  const finish: FinishReason = completion.choices[0].finish_reason;
  const usage: Usage = completion.usage;
  const usageNumbers: number[] = [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
    usage.extra.prefill_tokens_per_s, usage.extra.decode_tokens_per_s, usage.extra.prefill_ms, usage.extra.decode_ms];
  const header: [string, "chat.completion", number, string] = [completion.id, completion.object, completion.created, completion.model];
  const chunks: ChatCompletionStream = await model.chat.completions.create({ messages, stream: true, stop: "\n" });
  chunks.controller.abort();
  for await (const chunk of chunks) {
    const c: ChatCompletionChunk = chunk;
    const delta: string | undefined = c.choices[0].delta.content;
    const role: "assistant" | undefined = c.choices[0].delta.role;
    const done: FinishReason | null = c.choices[0].finish_reason;
    const tail: Usage | undefined = c.usage;
    const kind: "chat.completion.chunk" = c.object;
    void [delta, role, done, tail, kind];
  }
  await model.dispose();

  await clearCache();
  const error: Error = new DownloadError("x");
  if (error instanceof DownloadError) {
    const name: "DownloadError" = error.name;
    void name;
  }

  // What the declarations must reject.
  // @ts-expect-error: a number is not a source
  await Flint.load(42);
  // @ts-expect-error: options are camelCase
  model.generate("x", { max_tokens: 8 });
  // @ts-expect-error: a chat request needs messages
  await model.chat.completions.create({ stream: true });
  // @ts-expect-error: FlintModel is made by Flint.load only
  new FlintModel();
  // @ts-expect-error: profile() is a promise of entries
  const sync: ProfileEntry[] = model.profile();

  void [phase, file, fraction, sizes, moe, names, flags, adapterText, limit, text, first, counts, resultText, last,
    logits, kernelTimes, decoded, reply, finish, usageNumbers, header, sync];
}
