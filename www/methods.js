// The requests a loaded model answers, named once: core.js implements them, worker.js serves
// them by name and flint.js forwards them to the worker by name. Each takes an array of
// structured-cloneable arguments and a context `{ onText, signal }` that stays on its side.
export const METHODS = ["generate", "logits", "profile", "applyChatTemplate", "encode", "decode"];
