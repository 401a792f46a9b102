import { readJsonBody } from './body.js';
import type { RestRoute } from './rest-route.js';
import { decodeName, withPathField } from './rest-paths.js';

/** Profiles and adopting machines into them: routes over the profiles.* procedures. */
export const profileRoutes: readonly RestRoute[] = [
  {
    path: '/profiles',
    trailingSlash: true,
    docs: {
      GET: [{ returns: '200, array: each profile with its machines, without the cloud-init documents (GET /profiles/{name} shows them)' }],
      POST: [
        {
          body: '`{name, export?, cmdline?, persistent?, stateSize?, userData?, networkConfig?, vendorData?}` (a field left out: unset, its machines get the default)',
          returns: '201 (409 for a taken name, 400 for an unknown export or a malformed field)',
        },
      ],
    },
    async handle(method, { req, procedures }) {
      if (method === 'POST') {
        const created = await procedures().profiles.create((await readJsonBody(req)) as never);
        return { status: 201, json: created, headers: { location: `/profiles/${encodeURIComponent(created.name)}` } };
      }
      return { status: 200, json: await procedures().profiles.list() };
    },
  },
  {
    path: '/profiles/{name}',
    docs: {
      GET: [{ returns: '200 (404 unknown)' }],
      PATCH: [
        {
          body: "any field but `name` (null: unset), `allMachines` (also clear its machines' own values of the fields given), `keepState`",
          returns: '200: its machines get it at their next boot',
        },
      ],
      DELETE: [{ returns: '204 (409 naming its machines while it has any)' }],
    },
    async handle(method, { req, procedures }, rawName) {
      const name = decodeName(rawName);
      if (method === 'DELETE') {
        await procedures().profiles.remove({ name });
        return { status: 204 };
      }
      if (method === 'PATCH')
        return { status: 200, json: await procedures().profiles.update(withPathField(await readJsonBody(req), 'name', name, 'profile')) };
      return { status: 200, json: await procedures().profiles.get({ name }) };
    },
  },
  {
    path: '/profiles/{name}/adopt',
    docs: {
      POST: [
        {
          body: '`{names, macs?}`: `names` a pattern like `rack3-node{01..40}`, `macs` the discovered MACs (default: all)',
          returns: '200, `{profile, adopted}`: each named in its order of discovery; all or none (400 too few names, 409 a name taken)',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawName) {
      return {
        status: 200,
        json: await procedures().profiles.adopt(withPathField(await readJsonBody(req), 'name', decodeName(rawName), 'profile')),
      };
    },
  },
];

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
