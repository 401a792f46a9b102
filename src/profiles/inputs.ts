import { z } from 'zod';
import { macAddress, profileName, sharedChanges, sharedUnsetByDefault } from '../machines/inputs.js';

// Every control-plane input about profiles, defined once; the shared fields are the machines' own
// (machines/inputs.ts), so a machine and its profile take the same values by the same rules.

export const createProfileInput = z.strictObject({ name: profileName, ...sharedUnsetByDefault });

export const updateProfileInput = z.strictObject({
  name: profileName,
  ...sharedChanges,
  /** The fields given also clear its machines' own values of them: every machine of it then takes the profile's. */
  allMachines: z.boolean({ error: 'must be true or false' }).default(false),
  /** With a new export: machines keep the state written over the old one. */
  keepState: z.boolean({ error: 'must be true or false' }).default(false),
});

export const profileByNameInput = z.strictObject({ name: profileName });

export const adoptInput = z.strictObject({
  name: profileName,
  /** Host names for the machines, in their order of discovery: one `{FIRST..LAST}` range, e.g. rack3-node{01..40}. */
  names: z
    .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
    .max(200, 'must be at most 200 characters'),
  /** Which discovered MACs; none given: every discovered MAC. */
  macs: z.array(macAddress, { error: 'must be an array of MAC addresses' }).max(10_000).default([]),
});

export type CreateProfileInput = z.infer<typeof createProfileInput>;
export type UpdateProfileInput = z.infer<typeof updateProfileInput>;
export type AdoptInput = z.infer<typeof adoptInput>;
