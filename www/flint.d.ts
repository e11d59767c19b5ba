// Types of the flint browser package (flint.js).

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

export interface GenerateResult {
  text: string;
  finishReason: "stop" | "length" | "abort";
  promptTokens: number;
  completionTokens: number;
  tokens: number[];
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

/** Text pieces as they form: a ReadableStream that is also an async iterator. */
export interface GenerationStream extends ReadableStream<string>, AsyncIterable<string> {
  /** The finished request: text, finish reason, usage and timing. */
  result: Promise<GenerateResult>;
}

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
  choices: { index: 0; message: { role: "assistant"; content: string }; finish_reason: string; logprobs: null }[];
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: { index: 0; delta: { role?: "assistant"; content?: string }; finish_reason: string | null; logprobs: null }[];
  /** On the last chunk. */
  usage?: Usage;
}

export interface ChatCompletionStream extends AsyncIterable<ChatCompletionChunk> {
  controller: AbortController;
}

export declare class FlintModel {
  readonly info: ModelInfo;
  readonly adapter: AdapterInfo;
  lastStats: GenerateResult | null;
  chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }): Promise<ChatCompletionStream>;
      create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
    };
  };
  generate(prompt: string | number[], options?: GenerateOptions): GenerationStream;
  logits(tokens: ArrayLike<number>): Promise<Float32Array>;
  applyChatTemplate(messages: ChatMessage[]): Promise<string>;
  encode(text: string): Promise<number[]>;
  decode(ids: ArrayLike<number>): Promise<string>;
  dispose(): Promise<void>;
}

export declare class Flint {
  static load(source: string | URL | File[] | FileList, options?: LoadOptions): Promise<FlintModel>;
}

export declare class DownloadError extends Error {}
export declare function clearCache(): Promise<void>;
