import { spawn } from 'node:child_process';
import type { PowerAction, PowerFailure, PowerState } from '../model/event-map.js';

/** How ipmitool reaches one BMC. */
export interface IpmiTarget {
  address: string;
  port: number;
  user: string;
  password: string;
  cipherSuite: number;
}

/** ipmitool's own retries (-N seconds per try, -R tries), and the kill that ends it whatever it is doing. */
export interface IpmiBounds {
  perTrySeconds: number;
  tries: number;
  killAfterMs: number;
}

/** A silent BMC: ipmitool gives up after about 6 s with these (1 s, 2 tries; 3 tries took 12 s), killed at 10 s if it has not. */
export const defaultIpmiBounds: IpmiBounds = { perTrySeconds: 1, tries: 2, killAfterMs: 10_000 };

export type IpmiAnswer = { ok: true; state: PowerState | null; answer: string } | { ok: false; failure: PowerFailure; answer: string };

const commands: Record<PowerAction, string[]> = {
  status: ['chassis', 'power', 'status'],
  on: ['chassis', 'power', 'on'],
  off: ['chassis', 'power', 'off'],
  cycle: ['chassis', 'power', 'cycle'],
  reset: ['chassis', 'power', 'reset'],
  pxe: ['chassis', 'bootdev', 'pxe'],
};

/** The argv of one action: no password in it (`-E` reads IPMI_PASSWORD), since `ps` shows every process's argv to every user. */
export function ipmitoolArgs(target: Omit<IpmiTarget, 'password'>, action: PowerAction, bounds: IpmiBounds): string[] {
  // -v: without it ipmitool says only "Unable to establish IPMI v2 / RMCP+ session" for a wrong
  // password and a silent BMC alike; its verbose lines tell them apart.
  return [
    ...['-I', 'lanplus', '-v', '-H', target.address, '-p', String(target.port), '-U', target.user, '-E'],
    ...['-C', String(target.cipherSuite), '-N', String(bounds.perTrySeconds), '-R', String(bounds.tries)],
    ...commands[action],
  ];
}

/** Runs one action against one BMC, bounded in time. Never rejects: whatever went wrong is the answer. */
export function runIpmitool(target: IpmiTarget, action: PowerAction, bounds: IpmiBounds = defaultIpmiBounds): Promise<IpmiAnswer> {
  return new Promise((resolve) => {
    // Its own process group, so the kill reaches all of it; an environment of its own, so nothing of the daemon's leaks to it.
    const child = spawn('ipmitool', ipmitoolArgs(target, action, bounds), {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', IPMI_PASSWORD: target.password },
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    let spawnError: string | null = null;
    const timer = setTimeout(() => {
      killed = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }, bounds.killAfterMs);
    child.stdout.on('data', (chunk: Buffer) => (stdout = (stdout + chunk.toString()).slice(-4096)));
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4096)));
    child.on('error', (err) => (spawnError = err.message));
    child.on('close', (code) => {
      clearTimeout(timer);
      if (spawnError !== null) resolve({ ok: false, failure: 'no-ipmitool', answer: `cannot run ipmitool (${spawnError})` });
      else if (killed) resolve({ ok: false, failure: 'unreachable', answer: `no answer within ${bounds.killAfterMs / 1000} s` });
      else resolve(classify(code, stdout, stderr));
    });
  });
}

/** ipmitool's verbose lines that say nothing about the BMC's answer. */
const noise =
  /^(Loading IANA PEN Registry|Running Get VSO Capabilities|Discovered IPMB address|Invalid completion code received: Invalid command)/;

const credentialLines = /RAKP 2 HMAC is invalid|RAKP \d message indicates an error : unauthorized name|unauthorized name/i;
const unreachableLines =
  /Get Auth Capabilities error|No response from remote controller|Address lookup for .* failed|Could not open socket|Insufficient resources for session/i;

/**
 * What the BMC answered, from ipmitool's exit code and words (measured against ipmi_sim and
 * ipmitool 1.8.19): `bootdev` exits 0 even when the BMC refused it, so a "failed" line is a refusal too.
 */
export function classify(code: number | null, stdout: string, stderr: string): IpmiAnswer {
  const lines = `${stdout}\n${stderr}`
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !noise.test(line));
  const answer = lines.join('; ').slice(0, 500);
  if (credentialLines.test(answer)) return { ok: false, failure: 'credentials', answer };
  if (unreachableLines.test(answer)) return { ok: false, failure: 'unreachable', answer };
  if (code !== 0 || lines.some((line) => /failed|error/i.test(line))) return { ok: false, failure: 'refused', answer };
  const state = /Chassis Power is (on|off)/.exec(stdout)?.[1] as PowerState | undefined;
  return { ok: true, state: state ?? null, answer };
}
