import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser } from './helpers/browser.js';
import { killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';
import { runText } from '../testkit/process.js';
import { skipWithout } from './helpers/tools.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const tsc = path.join(repo, 'node_modules/typescript/bin/tsc');
const password = 'a long admin password';

/** A correct program: every call, input and output as the router defines them. It must compile and run. */
const program = `
import { createNbdmuxClient, isNbdmuxError, type NbdmuxStreamEvent, type NbdmuxExport } from 'nbdmux/client';

const [url, name, file] = process.argv.slice(2) as [string, string, string];
const nbdmux = createNbdmuxClient({ url, password: process.env.NBDMUX_ADMIN_PASSWORD });

try {
  const before: NbdmuxExport[] = await nbdmux.exports.list.query();
  const seen: NbdmuxStreamEvent[] = [];
  let started!: () => void;
  const subscribed = new Promise<void>((resolve) => (started = resolve));
  const subscription = nbdmux.events.stream.subscribe({}, { onStarted: () => started(), onData: ({ data }) => seen.push(data) });
  await subscribed;

  const created: NbdmuxExport = await nbdmux.exports.create.mutate({ name, file });
  const names: string[] = (await nbdmux.exports.list.query()).map((e) => e.name);
  let refusal: { code: string | undefined; message: string; fields: string[] | undefined } | undefined;
  try {
    await nbdmux.exports.create.mutate({ name, file: 'relative.img' });
  } catch (error) {
    if (!isNbdmuxError(error)) throw error;
    refusal = { code: error.data?.code, message: error.message, fields: error.data?.issues?.map((issue) => issue.field) };
  }
  for (let i = 0; i < 100 && !seen.some((e) => e.type === 'export.created' && e.exportName === name); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  subscription.unsubscribe();
  const removed = await nbdmux.exports.delete.mutate({ name });
  const healthy: boolean = (await nbdmux.system.health.query()).ok;
  console.log(JSON.stringify({ before: before.length, created, names, refusal, streamed: seen.map((e) => \`\${e.type} \${e.exportName}\`), removed, healthy }));
} catch (error) {
  if (!isNbdmuxError(error)) throw error;
  console.log(JSON.stringify({ failed: { code: error.data?.code, httpStatus: error.data?.httpStatus, message: error.message } }));
}
// No process.exit: the program ends by itself, so the client left nothing open.
`;

/** Each line marked \`// misuse\` must be a compile error, and no other line may be. */
const misuse = `
import { createNbdmuxClient, type NbdmuxExport } from 'nbdmux/client';

const nbdmux = createNbdmuxClient({ url: 'http://localhost:4040' });
await nbdmux.exports.create.mutate({ name: 'x', fil: '/srv/x.img' }); // misuse
await nbdmux.exports.create.mutate({ name: 'x', file: '/srv/x.img', readonly: 'yes' }); // misuse
await nbdmux.exports.get.query({}); // misuse
await nbdmux.exports.remove.mutate({ name: 'x' }); // misuse
await nbdmux.exports.list.mutate(); // misuse
const size: string = (await nbdmux.exports.get.query({ name: 'x' })).size; // misuse
const exported: NbdmuxExport = await nbdmux.exports.delete.mutate({ name: 'x' }); // misuse
nbdmux.events.stream.subscribe({ lastEventId: 7 }, {}); // misuse
createNbdmuxClient({ url: 'http://localhost:4040', pasword: 'x' }); // misuse
createNbdmuxClient({}); // misuse
console.log(size, exported);
`;

/** What a web page bundles: the same entry, resolved for browsers. */
const browserEntry = `
import { createNbdmuxClient, isNbdmuxError } from 'nbdmux/client';

window.runNbdmux = async (name, file) => {
  const nbdmux = createNbdmuxClient({ url: location.origin });
  try {
    await nbdmux.exports.list.query();
    const streamed = [];
    let started;
    const subscribed = new Promise((resolve) => (started = resolve));
    const subscription = nbdmux.events.stream.subscribe({}, { onStarted: () => started(), onData: ({ data }) => streamed.push(data.type + ' ' + data.exportName) });
    await subscribed;
    const created = await nbdmux.exports.create.mutate({ name, file });
    for (let i = 0; i < 100 && !streamed.includes('export.created ' + name); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    subscription.unsubscribe();
    return { created: created.name, streamed };
  } catch (error) {
    if (!isNbdmuxError(error)) throw error;
    return { failed: { code: error.data?.code, message: error.message } };
  }
};
`;

describe('the packed client package in a separate TypeScript project', () => {
  let scratch: string;
  let typeCheck: { code: number | null; stdout: string };
  let daemon: RunningDaemon;
  let image: string;
  beforeAll(async () => {
    const [started, packed] = await Promise.all([startDaemon({ env: { NBDMUX_ADMIN_PASSWORD: password } }), packAndInstall()]);
    daemon = started;
    scratch = packed;
    image = makeImage(tempDir('nbdmux-images-'), 'packaged.img', 1024 * 1024);
    // Type-checks both programs and emits the correct one's JavaScript (tsc emits despite errors elsewhere).
    typeCheck = await runText(process.execPath, [tsc, '-p', '.'], { cwd: scratch, timeoutMs: 60_000 });
  }, 90_000);
  afterAll(() => {
    killEverything(daemon ? [daemon.dataDir] : []);
    if (scratch) fs.rmSync(path.dirname(scratch), { recursive: true, force: true });
  });

  /** npm pack, then install the tarball as a user would; the registry is only asked for what the npm cache lacks. */
  async function packAndInstall(): Promise<string> {
    const dir = tempDir('nbdmux-client-package-');
    const pack = await runText('npm', ['pack', '--json', '--pack-destination', dir], { cwd: repo });
    expect(pack.code, pack.stderr).toBe(0);
    const tarball = path.join(dir, (JSON.parse(pack.stdout) as Array<{ filename: string }>)[0]!.filename);
    const project = path.join(dir, 'project');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'uses-nbdmux', private: true, type: 'module' }));
    // --ignore-scripts: the client never loads better-sqlite3, so its minute-long native build is skipped.
    const install = await runText('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], {
      cwd: project,
      timeoutMs: 80_000,
    });
    expect(install.code, install.stderr).toBe(0);
    // The compiler and Node's types are tools here, not dependencies: the repository's own serve.
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: true,
          outDir: 'out',
          typeRoots: [path.join(repo, 'node_modules/@types')],
          types: ['node'],
        },
        include: ['src/*.ts'],
      }),
    );
    fs.mkdirSync(path.join(project, 'src'));
    fs.writeFileSync(path.join(project, 'src/program.ts'), program);
    fs.writeFileSync(path.join(project, 'src/misuse.ts'), misuse);
    fs.writeFileSync(path.join(project, 'browser-entry.js'), browserEntry);
    return project;
  }

  it('ships type declarations: the correct program compiles, each misuse is a compile error', () => {
    const result = typeCheck;
    const errors = [...result.stdout.matchAll(/^src\/(\w+)\.ts\((\d+),\d+\): error (TS\d+)/gm)].map(([, file, line, code]) => ({
      file,
      line: Number(line),
      code,
    }));
    expect(result.code).not.toBe(0);
    expect(
      errors.filter((e) => e.file !== 'misuse'),
      result.stdout,
    ).toEqual([]);
    const marked = misuse.split('\n').flatMap((line, i) => (line.endsWith('// misuse') ? [i + 1] : []));
    expect([...new Set(errors.map((e) => e.line))], result.stdout).toEqual(marked);
    // A misspelt field is named as such, and outputs are typed, not any.
    expect(result.stdout).toMatch(
      /'fil' does not exist in type '\{ name: string; readonly\?: boolean \| undefined; .*file\?: string \| undefined; url\?: string/,
    );
    expect(result.stdout).toMatch(/Type 'number' is not assignable to type 'string'/);
    expect(result.stdout).toMatch(/Property 'remove' does not exist/);
  });

  it('runs against a live daemon in Node: HTTP calls, a WebSocket subscription, typed errors, the password', async () => {
    const compiled = path.join(scratch, 'out/program.js');

    const withPassword = await runText(process.execPath, [compiled, daemon.url, 'from-package', image], {
      cwd: scratch,
      env: { ...process.env, NBDMUX_ADMIN_PASSWORD: password },
      timeoutMs: 20_000,
    });
    expect(withPassword.code, withPassword.stderr).toBe(0);
    const output = JSON.parse(withPassword.stdout);
    expect(output.created).toMatchObject({
      name: 'from-package',
      file: fs.realpathSync(image),
      readonly: true,
      size: 1024 * 1024,
      state: 'serving',
    });
    expect(output.names).toEqual(['from-package']);
    expect(output.refusal).toEqual({ code: 'BAD_REQUEST', message: 'file: must be an absolute path (starting with /)', fields: ['file'] });
    expect(output.streamed).toContain('export.created from-package');
    expect(output.removed).toEqual({ name: 'from-package', killed: 0, draining: 0 });
    expect(output.healthy).toBe(true);

    const { NBDMUX_ADMIN_PASSWORD: _unset, ...noPassword } = process.env;
    const without = await runText(process.execPath, [compiled, daemon.url, 'refused', image], {
      cwd: scratch,
      env: noPassword,
      timeoutMs: 20_000,
    });
    expect(without.code, without.stderr).toBe(0);
    expect(JSON.parse(without.stdout)).toEqual({
      failed: {
        code: 'UNAUTHORIZED',
        httpStatus: 401,
        message: 'authentication required: send "Authorization: Bearer <admin password>", or log in at /',
      },
    });
  });

  it.skipIf(skipWithout('/usr/bin/chromium'))('runs in a browser from a bundle, authenticated by the session cookie', async () => {
    const bundle = await build({
      entryPoints: [path.join(scratch, 'browser-entry.js')],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      logLevel: 'silent',
    });
    const code = bundle.outputFiles[0]!.text;
    expect(code).not.toMatch(/from ['"]ws['"]|require\(['"]ws['"]\)/);

    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      await page.goto(daemon.url);
      await page.addScriptTag({ content: code, type: 'module' });
      await page.waitForFunction(() => 'runNbdmux' in globalThis);
      type Result = { created?: string; streamed?: string[]; failed?: { code: string; message: string } };
      const run = (name: string) =>
        page.evaluate(([n, f]) => (globalThis as unknown as { runNbdmux(n: string, f: string): Promise<Result> }).runNbdmux(n, f), [
          name,
          image,
        ] as const);

      expect(await run('before-login')).toMatchObject({ failed: { code: 'UNAUTHORIZED' } });
      // Log in as the dashboard's form does; the cookie then rides every request and the WebSocket upgrade.
      const login = await page.request.post(`${daemon.url}/login`, {
        form: { password },
        headers: { origin: daemon.url },
        maxRedirects: 0,
      });
      expect(login.status()).toBe(303);
      const result = await run('from-browser');
      expect(result).toMatchObject({ created: 'from-browser' });
      expect(result.streamed).toContain('export.created from-browser');
    } finally {
      await browser.close();
    }
  });
});
