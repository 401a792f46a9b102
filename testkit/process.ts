import { spawn, type ChildProcess } from 'node:child_process';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Past this the command is SIGKILLed, and shows as signal SIGKILL. */
  timeoutMs?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export type TextResult = Omit<RunResult, 'stdout'> & { stdout: string };

/** nbdsh runs `python3 -m nbd`: Debian's python3, not whichever python3 comes first on PATH. */
export const debianPythonEnv: NodeJS.ProcessEnv = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

/** Runs a command to its end (or its timeout) and returns its exit, its stdout as bytes and its stderr. */
export function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 60_000,
      killSignal: 'SIGKILL',
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(stdout), stderr }));
  });
}

/** `run`, with stdout as text. */
export async function runText(command: string, args: string[], options: RunOptions = {}): Promise<TextResult> {
  const result = await run(command, args, options);
  return { ...result, stdout: result.stdout.toString('utf8') };
}

/** `run` for a command that must succeed: its stdout as text, or an error carrying its stderr. */
export async function runOrThrow(command: string, args: string[], options: RunOptions = {}): Promise<string> {
  const result = await runText(command, args, options);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.code ?? result.signal}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** A long-running process whose output the caller reads as it comes. */
export interface StartedProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code once the process has exited and its output is all read. */
  exited: Promise<number | null>;
}

export function startProcess(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; stdin?: 'ignore' | 'pipe' } = {},
): StartedProcess {
  const child = spawn(command, args, { env: options.env ?? process.env, stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}
