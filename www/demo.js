// The chat demo: load a model (URL or local files), chat with streamed answers, stop, stats.
import { Flint } from "./flint.js";

const $ = (id) => document.getElementById(id);
let model = null;
let history = [];
let controller = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function describeAdapter() {
  if (!navigator.gpu) {
    showError("This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome or Edge, or enable WebGPU in your browser's settings.");
    $("adapter").textContent = "no WebGPU";
    $("load").disabled = true;
    return;
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    showError("WebGPU is present but no adapter was found (the GPU may be blocklisted or disabled).");
    return;
  }
  const info = adapter.info ?? {};
  const l = adapter.limits;
  const mib = (n) => `${Math.round(n / 2 ** 20)} MiB`;
  $("adapter").textContent = `GPU: ${[info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "WebGPU adapter"}` +
    `${adapter.isFallbackAdapter || info.isFallbackAdapter ? " (software fallback)" : ""} · max binding ${mib(l.maxStorageBufferBindingSize)}` +
    ` · max buffer ${mib(l.maxBufferSize)} · ${l.maxComputeInvocationsPerWorkgroup} invocations · f16 ${adapter.features.has("shader-f16") ? "yes" : "no"}`;
  if (l.maxStorageBufferBindingSize < 128 * 2 ** 20) {
    showError(`This GPU allows storage bindings of only ${mib(l.maxStorageBufferBindingSize)}; flint splits large weights, but needs at least 128 MiB.`);
  }
}

function addMessage(role, text = "") {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  div.innerHTML = `<span class="role">${role}</span><span class="text"></span>`;
  div.querySelector(".text").textContent = text;
  $("messages").append(div);
  return div.querySelector(".text");
}

async function load(source) {
  showError("");
  $("load").disabled = true;
  $("progress").hidden = false;
  try {
    model?.dispose();
    model = await Flint.load(source, {
      worker: $("use-worker").checked,
      cache: $("use-cache").checked,
      onProgress: ({ phase, loaded, total }) => {
        $("progress").value = total ? loaded / total : 0;
        $("progress-text").textContent = phase === "download"
          ? `downloading ${(loaded / 2 ** 20).toFixed(1)}${total ? ` / ${(total / 2 ** 20).toFixed(1)}` : ""} MiB`
          : `uploading to the GPU ${Math.round((100 * loaded) / (total || 1))}%`;
      },
    });
    const i = model.info;
    $("progress-text").textContent = `${i.family}, ${(i.parameters / 1e6).toFixed(0)}M parameters` +
      `${i.experts ? `, ${i.experts} experts (top ${i.topK})` : ""}, ${i.format}; loaded in ${(i.load.loadMs / 1000).toFixed(1)} s`;
    $("prompt").disabled = $("send").disabled = false;
    $("prompt").placeholder = "Ask something…";
    history = [];
  } catch (e) {
    showError(`Could not load the model: ${e.message}`);
  } finally {
    $("load").disabled = false;
    $("progress").hidden = true;
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant");
  $("send").disabled = true;
  $("stop").disabled = false;
  controller = new AbortController();
  try {
    const stream = await model.chat.completions.create({ messages: history, stream: true, max_tokens: 128, temperature: 0.7, signal: controller.signal });
    let answer = "";
    for await (const chunk of stream) {
      answer += chunk.choices[0].delta.content ?? "";
      out.textContent = answer;
      if (chunk.usage) {
        const x = chunk.usage.extra;
        $("stats").textContent = `${chunk.usage.completion_tokens} tokens · prefill ${x.prefill_tokens_per_s.toFixed(1)} tok/s · decode ${x.decode_tokens_per_s.toFixed(1)} tok/s`;
      }
    }
    history.push({ role: "assistant", content: answer });
  } catch (e) {
    showError(`Generation failed: ${e.message}`);
  } finally {
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("load").onclick = () => load($("model-url").value.trim());
$("model-files").onchange = (e) => e.target.files.length && load([...e.target.files]);
$("stop").onclick = () => controller?.abort();
$("composer").onsubmit = (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || !model) return;
  $("prompt").value = "";
  send(text);
};
$("prompt").onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey) $("composer").requestSubmit();
};
describeAdapter();
