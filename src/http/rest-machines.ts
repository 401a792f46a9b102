import { readJsonBody } from './body.js';
import type { RestRoute } from './rest-route.js';
import { decodePathPart, withPathField } from './rest-paths.js';

/** Machines by MAC, their state, BMC and power: routes over the machines.* procedures. */
export const machineRoutes: readonly RestRoute[] = [
  {
    path: '/machines',
    trailingSlash: true,
    docs: {
      GET: [{ returns: '200, array, without the cloud-init documents (GET /machines/{mac} shows them)' }],
      POST: [
        {
          body: "`{mac, name, profile?, export?, cmdline?, persistent?, stateSize?, userData?, networkConfig?, vendorData?}` (a field left out or null: its profile's, else the default)",
          returns: '201 (409 for a taken MAC or name, 400 for an unknown export or profile, or a malformed field)',
        },
      ],
    },
    async handle(method, { req, procedures }) {
      if (method === 'POST') {
        const created = await procedures().machines.create((await readJsonBody(req)) as never);
        return { status: 201, json: created, headers: { location: `/machines/${created.mac}` } };
      }
      return { status: 200, json: await procedures().machines.list() };
    },
  },
  {
    // Before /machines/{mac}, which would take `discovered` for a MAC.
    path: '/machines/discovered',
    docs: { GET: [{ returns: '200: unknown MACs that asked to boot, newest first' }] },
    async handle(_method, { procedures }) {
      return { status: 200, json: await procedures().machines.discovered() };
    },
  },
  {
    path: '/machines/{mac}',
    docs: {
      GET: [
        {
          returns:
            '200: each field as its next boot gets it, and `sources`: where each came from (machine, profile, default) (404 unknown)',
        },
      ],
      PATCH: [
        {
          body: 'any field but `mac`, and `keepState`; `"profile": null` takes it out of its profile, a shared field null clears its own value',
          returns: '200',
        },
      ],
      DELETE: [{ returns: '204; its state is deleted too (409 while attached)' }],
    },
    async handle(method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      if (method === 'DELETE') {
        await procedures().machines.delete({ mac });
        return { status: 204 };
      }
      if (method === 'PATCH')
        return { status: 200, json: await procedures().machines.update(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
      return { status: 200, json: await procedures().machines.get({ mac }) };
    },
  },
  {
    path: '/machines/{mac}/reset',
    docs: { POST: [{ returns: '204: its state is discarded and made anew, empty (409 while attached, or when not persistent)' }] },
    async handle(_method, { procedures }, rawMac) {
      await procedures().machines.reset({ mac: decodePathPart('mac', rawMac) });
      return { status: 204 };
    },
  },
  {
    path: '/machines/{mac}/bmc',
    docs: {
      PUT: [
        {
          body: "`{address, port?, user?, password?, cipherSuite?}` (`user` left out or null, `password` null: its profile's)",
          returns:
            '200: how nbdmux reaches its BMC over IPMI, the user and password it uses and `sources`: where each came from (machine, profile, none); the password shown only as "set" or "not set" (a first setting of a machine in no profile must give one)',
        },
      ],
      DELETE: [{ returns: '204: nbdmux forgets its BMC' }],
    },
    async handle(method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      if (method === 'DELETE') {
        await procedures().machines.removeBmc({ mac });
        return { status: 204 };
      }
      return { status: 200, json: await procedures().machines.setBmc(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
    },
  },
  {
    path: '/machines/{mac}/power',
    docs: {
      POST: [
        {
          body: '`{action}`: status, on, off, cycle, reset or pxe',
          returns:
            '200 with what the BMC answered; 504 when it did not answer, 502 when it refused the credentials or the command (the message quotes it), 412 without a BMC',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      return { status: 200, json: await procedures().machines.power(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
    },
  },
  {
    path: '/machines/{mac}/reimage',
    docs: {
      POST: [
        {
          body: '`{export}`',
          returns:
            '200 `{ok, steps}`: power status, export set, network boot next, cycle (or on); it stops at the first step that fails, before changing anything when the BMC cannot be reached',
        },
      ],
    },
    async handle(_method, { req, procedures }, rawMac) {
      const mac = decodePathPart('mac', rawMac);
      return { status: 200, json: await procedures().machines.reimage(withPathField(await readJsonBody(req), 'mac', mac, 'machine')) };
    },
  },
];
