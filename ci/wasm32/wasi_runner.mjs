// Cargo's runner for wasm32-wasip1 test binaries in `cargo xtask test` (the filters' unit tests on a
// 32-bit target): `node wasi_runner.mjs <test.wasm> [libtest arguments]` runs the binary under node's
// WASI preview1 and exits with its exit code. A filter crate compiled for wasm32 keeps the proxy-wasm
// SDK's `env.proxy_*` imports; each import outside WASI is a stub that throws, so a test that reached
// the host fails loudly instead of passing. WASI has no threads and wasm32-wasip1 aborts on panic: a
// failing test ends its binary (reported as a failure), and a test that spawns threads cannot run.
import { readFile } from "node:fs/promises";
import { argv, env, exit } from "node:process";
import { WASI } from "node:wasi";

const [, , wasmPath, ...args] = argv;
const wasi = new WASI({
  version: "preview1",
  args: [wasmPath, ...args],
  env,
  preopens: { "/": "/" },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
  if (from === "wasi_snapshot_preview1" || kind !== "function") continue;
  imports[from] ??= {};
  imports[from][name] = () => {
    throw new Error(`host import ${from}.${name} is not available in wasm32 unit tests`);
  };
}
const { exports } = await WebAssembly.instantiate(module, imports);
// A filter crate also exports the SDK's reactor entry `_initialize`, which node's WASI refuses beside
// `_start`; the test binary is a command, so only `_start` (libtest's main) runs.
exit(wasi.start({ exports: { _start: exports._start, memory: exports.memory } }));
