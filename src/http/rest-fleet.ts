import { readJsonBody } from './body.js';
import type { RestRoute } from './rest.js';
import { decodeName, withPathField } from './rest-paths.js';

/** A profile's BMC credentials and the power actions on all its machines: routes over the profiles.* procedures. */
export const profilePowerRoutes: readonly RestRoute[] = [
  {
    path: '/profiles/{name}/bmc',
    docs: {
      PUT: [
        {
          body: '`{user, password?}`: the BMC credentials its machines share (each gives its own address, and its own user or password wins)',
          returns: '200, the password shown only as "set" or "not set" (a first setting must give one)',
        },
      ],
      DELETE: [{ returns: '204: its machines keep only their own credentials' }],
    },
    async handle(method, { req, procedures }, rawName) {
      const name = decodeName(rawName);
      if (method === 'DELETE') {
        await procedures().profiles.removeBmc({ name });
        return { status: 204 };
      }
      return { status: 200, json: await procedures().profiles.setBmc(withPathField(await readJsonBody(req), 'name', name, 'profile')) };
    },
  },
  {
    path: '/profiles/{name}/power',
    docs: {
      POST: [
        {
          body: '`{action}`: status, on, off, cycle, reset or pxe',
          returns:
            '200 `{profile, results}`: one result per machine, a bounded number at once; each `ok`, or its `failure` (no-bmc, no-credentials, unreachable, credentials, refused) and `reason`',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawName) {
      return {
        status: 200,
        json: await procedures().profiles.power(withPathField(await readJsonBody(req), 'name', decodeName(rawName), 'profile')),
      };
    },
  },
  {
    path: '/profiles/{name}/reimage',
    docs: {
      POST: [
        {
          body: '`{export}`',
          returns:
            "200 `{profile, export, results}`: the profile's export set for all its machines, then each: power status, network boot next, cycle (or on); one result per machine with its steps, a machine without a BMC listed as such",
        },
      ],
    },
    async handle(_method, { req, procedures }, rawName) {
      return {
        status: 200,
        json: await procedures().profiles.reimage(withPathField(await readJsonBody(req), 'name', decodeName(rawName), 'profile')),
      };
    },
  },
];
