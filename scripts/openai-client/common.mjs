// Shared by the door tests (openai-doors.mjs, anthropic.mjs, ollama.mjs):
// flag parsing and checks.
export function flags(argv, extra = {}) {
  const out = { apiKey: "unused", expectEcho: false, ...extra };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case "--base-url": out.baseURL = next(); break;
      case "--model": out.model = next(); break;
      case "--alias": out.alias = next(); break;
      case "--api-key": out.apiKey = next(); break;
      case "--embeddings-model": out.embeddingsModel = next(); break;
      case "--expect-echo": out.expectEcho = true; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!out.baseURL || !out.model) throw new Error("--base-url and --model are required");
  return out;
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

export function run(name, main) {
  main().then(
    (n) => console.log(`${name}: all ${n} checks passed`),
    (err) => {
      console.error(`${name}: ${err.stack || err}`);
      process.exit(1);
    },
  );
}
