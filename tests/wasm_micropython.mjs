// Run a MicroPython script on the WebAssembly MicroPython from npm
// (@micropython/micropython-webassembly-pyscript: no viper, millisecond ticks), the way
// tests/beds/micropython.py runs the unix port: a heap limit, device/ on the import path.
//
//   node tests/wasm_micropython.mjs [--heapsize 96k] [--copy HOSTDIR:/dir]... \
//        [--path /dir]... SCRIPT [ARGS...]
//
// --copy copies a host directory (recursively) or file into the port's in-memory file
// system; --path puts a directory first on sys.path. The script sees sys.argv =
// [SCRIPT, ARGS...] and runs with / as its working directory. Exit status: 0, or 1 with
// the Python traceback on stderr when the script raised (SystemExit(n) exits n).
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const require = createRequire(import.meta.url);
const pkg = "@micropython/micropython-webassembly-pyscript";
let mjs;
try {
  mjs = require.resolve(`${pkg}/micropython.mjs`, { paths: [process.cwd(), path.dirname(new URL(import.meta.url).pathname)] });
} catch (e) {
  console.error(`${pkg} is not installed: run \`npm ci\` at the repository root`);
  process.exit(3);
}
const { loadMicroPython } = await import(mjs);

let heap = 96 * 1024;
const copies = [];
const paths = [];
const argv = process.argv.slice(2);
while (argv.length && argv[0].startsWith("--")) {
  const opt = argv.shift();
  const val = argv.shift();
  if (opt === "--heapsize") {
    const m = /^(\d+)([kKmM]?)$/.exec(val);
    if (!m) throw new Error(`bad heap size ${val}`);
    heap = parseInt(m[1]) * ({ "": 1, k: 1024, m: 1048576 }[m[2].toLowerCase()]);
  } else if (opt === "--copy") {
    const i = val.lastIndexOf(":");
    copies.push([val.slice(0, i), val.slice(i + 1)]);
  } else if (opt === "--path") {
    paths.push(val);
  } else {
    throw new Error(`unknown option ${opt}`);
  }
}
if (!argv.length) throw new Error("no script given");
const [script, ...args] = argv;

const mp = await loadMicroPython({
  heapsize: heap,
  linebuffer: false,
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
});

function mkdirs(dir) {
  let cur = "";
  for (const part of dir.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}
function copy(src, dst) {
  const st = fs.statSync(src);
  if (st.isDirectory()) {
    mkdirs(dst);
    for (const name of fs.readdirSync(src)) {
      if (name === "__pycache__") continue;
      copy(path.join(src, name), dst + "/" + name);
    }
  } else {
    mkdirs(path.posix.dirname(dst));
    mp.FS.writeFile(dst, fs.readFileSync(src));
  }
}
for (const [src, dst] of copies) copy(src, dst);
mkdirs("/__run");
mp.FS.writeFile("/__run/main.py", fs.readFileSync(script));

const prelude = [
  "import sys",
  ...paths.slice().reverse().map((p) => `sys.path.insert(0, ${JSON.stringify(p)})`),
  "sys.argv.clear()",
  `sys.argv.extend(${JSON.stringify([script, ...args])})`,
  "del sys",
].join("\n");
let code = 0;
try {
  mp.runPython(prelude);
  mp.runPython(fs.readFileSync(script, "utf8"));
} catch (error) {
  if (error.name !== "PythonError") throw error;
  if (error.type === "SystemExit") {
    const m = /SystemExit:?\s*(\d+)?/.exec(error.message);
    code = m && m[1] ? parseInt(m[1]) : 0;
  } else {
    process.stderr.write(error.message);
    code = 1;
  }
}
process.exitCode = code;
