// Serves www/ and model folders on localhost for the demo and the browser tests.
//
//   node www/serve.mjs [--port 8090] [--model NAME=PATH]...
//
// /models/NAME/... maps to PATH (a folder, or a single file served as /models/NAME). Byte
// ranges (HTTP 206) are honoured so downloads can resume. For the tests: GET /__log lists the
// requests served since the last POST /__log/reset; POST /__fail-once?path=P makes the next
// request for P stop half-way through the body (a dropped connection).

import { createServer } from "node:http";
import { createReadStream, statSync } from "node:fs";
import { extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(fileURLToPath(new URL(".", import.meta.url)));
const args = process.argv.slice(2);
let port = 8090;
const models = new Map();
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--port") port = Number(args[++i]);
  else if (args[i] === "--model") {
    const [name, path] = args[++i].split("=");
    models.set(name, resolve(path));
  } else {
    console.error(`serve.mjs: unknown argument ${args[i]}`);
    process.exit(2);
  }
}

const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
  ".css": "text/css", ".json": "application/json", ".wasm": "application/wasm",
  ".ts": "text/plain", ".png": "image/png", ".svg": "image/svg+xml",
};
const log = [];
const failOnce = new Set();

/** The file behind a URL path, never outside the served folders. */
function fileFor(path) {
  const inside = (base, rest) => {
    const full = normalize(join(base, rest));
    return full === base || full.startsWith(base + sep) ? full : null;
  };
  const m = path.match(/^\/models\/([^/]+)(\/.*)?$/);
  if (m) {
    const base = models.get(decodeURIComponent(m[1]));
    if (!base) return null;
    return m[2] ? inside(base, decodeURIComponent(m[2])) : base;
  }
  return inside(root, decodeURIComponent(path === "/" ? "/index.html" : path));
}

createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/__log") {
    res.writeHead(200, { "Content-Type": "application/json" });
    return res.end(JSON.stringify(log));
  }
  if (url.pathname === "/__log/reset") {
    log.length = 0;
    return res.end("ok");
  }
  if (url.pathname === "/__fail-once") {
    failOnce.add(url.searchParams.get("path"));
    return res.end("ok");
  }
  log.push({ method: req.method, path: url.pathname, range: req.headers.range ?? null });
  const file = fileFor(url.pathname);
  let stat;
  try {
    stat = file && statSync(file);
  } catch {}
  if (!stat || !stat.isFile()) {
    res.writeHead(404, { "Content-Type": "text/plain" });
    return res.end(`not found: ${url.pathname}`);
  }
  const headers = {
    "Content-Type": TYPES[extname(file)] ?? "application/octet-stream",
    "Accept-Ranges": "bytes",
    "Cache-Control": "no-store",
  };
  let start = 0, end = stat.size - 1, status = 200;
  const range = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
  if (range) {
    start = Number(range[1]);
    end = range[2] ? Math.min(Number(range[2]), end) : end;
    if (start > end) {
      res.writeHead(416, { "Content-Range": `bytes */${stat.size}` });
      return res.end();
    }
    status = 206;
    headers["Content-Range"] = `bytes ${start}-${end}/${stat.size}`;
  }
  headers["Content-Length"] = end - start + 1;
  res.writeHead(status, headers);
  if (req.method === "HEAD") return res.end();
  if (failOnce.delete(url.pathname)) {
    // Send half of the body, then drop the connection.
    const half = start + Math.floor((end - start + 1) / 2);
    const partial = createReadStream(file, { start, end: half - 1 });
    partial.on("data", (chunk) => res.write(chunk));
    partial.on("end", () => setTimeout(() => res.destroy(), 50));
    return;
  }
  createReadStream(file, { start, end }).pipe(res);
}).listen(port, "127.0.0.1", () => console.log(`flint: serving http://127.0.0.1:${port}/`));
