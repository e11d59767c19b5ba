// Downloading model files: progress, resumption with HTTP Range, and a persistent cache in the
// origin private file system (OPFS), so a reload reads from disk instead of the network.
//
// Every file ends up as a Blob (an OPFS file, a user-picked File, or an in-memory Blob when
// caching is off). Blobs are read in slices, so the loader streams a model into GPU buffers
// part by part and never holds a whole multi-GB file in memory.

const CACHE_DIR = "flint-cache-v1";
const RETRIES = 5;

/** A clear error for a download that cannot be served. */
export class DownloadError extends Error {
  constructor(message) {
    super(message);
    this.name = "DownloadError";
  }
}

async function cacheDir() {
  if (!globalThis.navigator?.storage?.getDirectory) return null;
  try {
    const root = await navigator.storage.getDirectory();
    return await root.getDirectoryHandle(CACHE_DIR, { create: true });
  } catch {
    return null; // OPFS unavailable (private mode, some embedders): download uncached
  }
}

async function keyOf(url) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(url));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 40);
}

async function readMeta(dir, key) {
  try {
    const file = await (await dir.getFileHandle(`${key}.json`)).getFile();
    return JSON.parse(await file.text());
  } catch {
    return null;
  }
}

async function writeMeta(dir, key, meta) {
  const writable = await (await dir.getFileHandle(`${key}.json`, { create: true })).createWritable();
  await writable.write(JSON.stringify(meta));
  await writable.close();
}

function isQuotaError(e) {
  return e?.name === "QuotaExceededError" || /quota/i.test(String(e?.message));
}

function quotaMessage(url, size) {
  const mb = (n) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  return `not enough browser storage to cache ${url} (${size ? mb(size) : "unknown size"}); ` +
    `free some site data, or load with { cache: false } to download without caching`;
}

/**
 * Fetches `url` as a Blob. With `cache`, the bytes go to OPFS as they arrive: an interrupted
 * download resumes from what is on disk (this session or a later one), a finished one is
 * served from disk with no network request at all.
 *
 * `onBytes(received, total)` reports progress.
 */
export async function fetchBlob(url, { cache = true, signal, onBytes = () => {}, fetchImpl = fetch } = {}) {
  const options = { signal, onBytes, fetchImpl };
  const dir = cache ? await cacheDir() : null;
  if (!dir) {
    const sink = memorySink();
    await download(url, sink, options);
    return new Blob(sink.chunks);
  }
  const key = await keyOf(url);
  const meta = await readMeta(dir, key);
  const handle = await dir.getFileHandle(key, { create: true });
  if (meta?.complete) {
    const file = await handle.getFile();
    if (file.size === meta.size) {
      onBytes(file.size, file.size);
      return file;
    }
  }
  if (globalThis.navigator?.storage?.estimate && meta?.size) {
    const { quota, usage } = await navigator.storage.estimate();
    if (quota - usage < meta.size - (await handle.getFile()).size) throw new DownloadError(quotaMessage(url, meta.size));
  }
  try {
    const size = await download(url, await fileSink(url, handle, dir, key), options);
    await writeMeta(dir, key, { url, size, complete: true });
  } catch (e) {
    if (isQuotaError(e)) throw new DownloadError(quotaMessage(url, meta?.size));
    throw e;
  }
  return handle.getFile();
}

/** Bytes kept in memory (no cache); they last for this call only. */
function memorySink() {
  const chunks = [];
  return {
    chunks,
    received: 0,
    start(resumed) {
      if (!resumed) chunks.length = 0;
      return { write: (chunk) => chunks.push(chunk), close: async () => {} };
    },
  };
}

/** Bytes appended to an OPFS file, which keeps what arrived across attempts and sessions. */
async function fileSink(url, handle, dir, key) {
  return {
    received: (await handle.getFile()).size,
    async start(resumed, total, received) {
      if (total) await writeMeta(dir, key, { url, size: total, complete: false });
      const writable = await handle.createWritable({ keepExistingData: resumed });
      if (resumed) await writable.seek(received);
      return writable;
    },
  };
}

/**
 * Downloads the bytes of `url` that `sink` lacks (it holds `sink.received` already), resuming
 * with a Range request after a failure, up to RETRIES times; returns the file's size.
 * `sink.start(resumed, total, received)` opens a writer for one response: appending when the
 * server resumed, from scratch when it sent the whole file.
 */
async function download(url, sink, { signal, onBytes, fetchImpl }) {
  let received = sink.received;
  let total = null;
  let lastError;
  for (let attempt = 0; attempt <= RETRIES; attempt++) {
    signal?.throwIfAborted();
    const headers = received > 0 ? { Range: `bytes=${received}-` } : {};
    let response;
    try {
      response = await fetchImpl(url, { headers, signal });
    } catch (e) {
      if (signal?.aborted) throw e;
      lastError = e;
      continue;
    }
    if (response.status === 416 && total === null) {
      // What the sink holds is already whole (a crash between the last write and the meta).
      total = received;
      break;
    }
    if (!response.ok) throw new DownloadError(`${url}: HTTP ${response.status} ${response.statusText}`);
    const resumed = response.status === 206;
    if (!resumed) received = 0; // the server ignored Range: start over
    total = resumed ? Number(response.headers.get("Content-Range")?.split("/")[1]) : Number(response.headers.get("Content-Length"));
    if (!Number.isFinite(total) || total <= 0) total = null;
    const writer = await sink.start(resumed, total, received);
    try {
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await writer.write(value);
        received += value.byteLength;
        onBytes(received, total);
      }
      await writer.close();
    } catch (e) {
      // Keep what arrived: close (not abort) so the bytes stay for the next attempt.
      await writer.close().catch(() => {});
      if (signal?.aborted || isQuotaError(e)) throw e;
      lastError = e;
      continue;
    }
    if (total !== null && received < total) {
      lastError = new Error(`connection closed at ${received} of ${total} bytes`);
      continue;
    }
    total ??= received;
    break;
  }
  if (total === null || received !== total) {
    throw new DownloadError(`${url}: download failed after ${RETRIES + 1} attempts (${lastError?.message ?? "unknown error"})`);
  }
  return total;
}

/** A small JSON value kept beside the cached files (a folder's file list), or null. */
export async function cachedJson(name) {
  const dir = await cacheDir();
  return dir ? readMeta(dir, `manifest-${await keyOf(name)}`) : null;
}

export async function storeJson(name, value) {
  const dir = await cacheDir();
  if (dir) await writeMeta(dir, `manifest-${await keyOf(name)}`, value);
}

/** Removes every cached file (for a "clear cache" button and tests). */
export async function clearCache() {
  const root = await navigator.storage?.getDirectory?.();
  await root?.removeEntry(CACHE_DIR, { recursive: true }).catch(() => {});
}

/** Whether `url` answers (HEAD-less probe: a 1-byte range), for optional files of a folder. */
export async function exists(url, { signal, fetchImpl = fetch } = {}) {
  try {
    const r = await fetchImpl(url, { headers: { Range: "bytes=0-0" }, signal });
    if (r.body) await r.body.cancel();
    return r.ok;
  } catch (e) {
    if (signal?.aborted) throw e;
    return false;
  }
}
