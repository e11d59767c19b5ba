// Types of the flint browser package (flint.js). tests/browser/types.ts uses every declaration
// (compiled by scripts/test-browser.sh) and tests/browser/run.mjs holds the objects the package
// returns to these interfaces, so this file cannot drift from the JS unnoticed.

export interface LoadProgress {
  /** "download" while files arrive (or come from the cache), "upload" while weights go to the GPU. */
  phase: "download" | "upload";
  file?: string;
  loaded: number;
  total: number;
}

export interface LoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Keep downloads in the origin private file system; default true. */
  cache?: boolean;
  /** Run the engine in an ES-module Web Worker; default false. */
  worker?: boolean;
  signal?: AbortSignal;
  /** KV cache positions; default min(4096, the model's context). */
  ctx?: number;
  /** What the KV cache stores: "f16" (default; half the memory) or "f32" (exact arithmetic). */
  kvCache?: "f16" | "f32";
}

export interface ModelInfo {
  family: string;
  format: string;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  experts: number | null;
  topK: number | null;
  parameters: number;
  activeParameters: number;
  contextLength: number;
  weightBytes: number;
  kvCacheBytes: number;
  hasTokenizer: boolean;
  hasChatTemplate: boolean;
  load: { downloadMs: number; uploadMs: number; loadMs: number };
}

export interface AdapterInfo {
  name: string;
  backend: string;
  deviceType: string;
  driver: string;
  /** wgpu's feature set, as text. */
  features: string;
  limits: Record<string, number>;
}

export interface GenerateOptions {
  maxTokens?: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop?: string[];
  signal?: AbortSignal;
}

/** An end token or stop string, `maxTokens` (or a full context), or the signal. */
export type FinishReason = "stop" | "length" | "abort";

export interface GenerateResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** The generated token ids. */
  tokens: number[];
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

/**
 * Text pieces as they form: a ReadableStream that is also an async iterator. An intersection,
 * not an interface: with TypeScript's DOM.AsyncIterable lib, ReadableStream declares its own
 * iterator, which an interface could not extend together with AsyncIterable's.
 */
export type GenerationStream = ReadableStream<string> & AsyncIterable<string> & {
  /** The finished request: text, finish reason, usage and timing. */
  result: Promise<GenerateResult>;
};

export interface ChatMessage {
  role: "system" | "user" | "assistant" | string;
  content: string;
}

export interface ChatCompletionRequest {
  messages: ChatMessage[];
  stream?: boolean;
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
  n?: 1;
  signal?: AbortSignal;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  extra: { prefill_tokens_per_s: number; decode_tokens_per_s: number; prefill_ms: number; decode_ms: number };
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: { index: 0; message: { role: "assistant"; content: string }; finish_reason: FinishReason; logprobs: null }[];
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: { index: 0; delta: { role?: "assistant"; content?: string }; finish_reason: FinishReason | null; logprobs: null }[];
  /** On the last chunk. */
  usage?: Usage;
}

export interface ChatCompletionStream extends AsyncIterable<ChatCompletionChunk> {
  /** As the OpenAI client's Stream: `stream.controller.abort()` stops the generation. */
  controller: AbortController;
}

/** One kernel's share of a decode step. */
export interface ProfileEntry {
  kernel: string;
  /** Summed over the step's dispatches of this kernel, each run alone and waited for. */
  ms: number;
  dispatches: number;
}

/** A loaded model (made by `Flint.load`). Requests run one at a time, in the order they were made. */
export declare class FlintModel {
  private constructor();
  readonly info: ModelInfo;
  readonly adapter: AdapterInfo;
  /** Statistics of the last finished `generate`. */
  lastStats: GenerateResult | null;
  chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }): Promise<ChatCompletionStream>;
      create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
    };
  };
  generate(prompt: string | number[], options?: GenerateOptions): GenerationStream;
  /** The logits of every position of `tokens`, flattened `[tokens.length * vocabSize]`. */
  logits(tokens: ArrayLike<number>): Promise<Float32Array>;
  /** Milliseconds per kernel of one decode step: where the time goes on this device. */
  profile(): Promise<ProfileEntry[]>;
  applyChatTemplate(messages: ChatMessage[]): Promise<string>;
  encode(text: string): Promise<number[]>;
  decode(ids: ArrayLike<number>): Promise<string>;
  /** Frees the GPU memory (and ends the worker). */
  dispose(): Promise<void>;
}

export declare class Flint {
  /** `source`: a `.gguf` URL, the base URL of a Hugging Face-style folder, or user-picked Files. */
  static load(source: string | URL | File[] | FileList, options?: LoadOptions): Promise<FlintModel>;
}

/** A model file that cannot be downloaded (HTTP error, no storage left, retries spent). */
export declare class DownloadError extends Error {
  name: "DownloadError";
}
/** Empties the download cache (the origin private file system's flint folder). */
export declare function clearCache(): Promise<void>;
