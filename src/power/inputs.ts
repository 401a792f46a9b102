import net from 'node:net';
import { z } from 'zod';
import { exportName } from '../exports/inputs.js';
import { macAddress, profileName } from '../machines/inputs.js';
import { powerActions } from '../model/event-map.js';

// Every control-plane input about power, defined once: the router validates with these and
// clients infer their types through it. Each value reaches ipmitool as one argv word, never a shell.

/** RFC 1123 host name: dot-separated labels of a-z 0-9 and "-"; a last label of digits only would be a malformed IPv4 address. */
const hostName = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export const bmcAddress = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
  .transform((text, ctx) => {
    const address = text.toLowerCase();
    const lastLabel = address.split('.').at(-1)!;
    // Node takes a zone (fe80::1%eth0) as IPv6: a BMC is reached by a routable address, and "%" is no part of one.
    if (net.isIPv4(address) || (net.isIPv6(address) && !address.includes('%')) || (hostName.test(address) && !/^\d+$/.test(lastLabel)))
      return address;
    ctx.addIssue({
      code: 'custom',
      message:
        "must be the BMC's host name (e.g. bmc-rack3-01.lab), IPv4 address (e.g. 10.0.3.21) or IPv6 address without brackets or zone (e.g. fd00::21)",
    });
    return z.NEVER;
  });

/** IPMI v2 user names are at most 16 bytes; printable ASCII, so the BMC and ipmitool read the same name. */
const bmcUser = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
  .regex(/^[\x21-\x7e]{1,16}$/, 'must be 1 to 16 printable ASCII characters without spaces (an IPMI user name)');

/** IPMI v2 passwords are at most 20 bytes. */
const bmcPassword = z
  .string({ error: 'must be a string' })
  .regex(/^[\x20-\x7e]{0,20}$/, 'must be at most 20 printable ASCII characters (an IPMI v2 password; "" for none)');

export const setBmcInput = z.strictObject({
  mac: macAddress,
  address: bmcAddress,
  port: z.int({ error: 'must be a whole number' }).min(1, 'must be 1 to 65535').max(65535, 'must be 1 to 65535').default(623),
  /** Left out or null: its profile's. */
  user: bmcUser.nullable().default(null),
  /** Write-only. Left out: the one already set stays; null: its profile's. */
  password: bmcPassword.nullable().optional(),
  /** RMCP+ cipher suite (ipmitool -C): 3 (SHA1, AES) is the one nearly every BMC offers; 17 (SHA256) where it is required. */
  cipherSuite: z.int({ error: 'must be a whole number' }).min(0, 'must be 0 to 17').max(17, 'must be 0 to 17').default(3),
});

export const powerActionInput = z.strictObject({
  mac: macAddress,
  action: z.enum(powerActions, { error: `must be one of ${powerActions.join(', ')}` }),
});

export const reimageInput = z.strictObject({ mac: macAddress, export: exportName });

/** The credentials a profile's machines share; each machine gives its own BMC address. */
export const setProfileBmcInput = z.strictObject({
  name: profileName,
  user: bmcUser,
  /** Write-only. Left out: the one already set stays (a first setting must give one). */
  password: bmcPassword.optional(),
});

export const profilePowerInput = z.strictObject({
  name: profileName,
  action: z.enum(powerActions, { error: `must be one of ${powerActions.join(', ')}` }),
});

export const profileReimageInput = z.strictObject({ name: profileName, export: exportName });

export type SetBmcInput = z.infer<typeof setBmcInput>;
export type SetProfileBmcInput = z.infer<typeof setProfileBmcInput>;
