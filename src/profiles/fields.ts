import { defaultStateSize } from '../machines/inputs.js';
import type { MachineRow, ProfileRow } from '../db/schema.js';

/**
 * The fields a machine may set itself or take from its profile, with what a machine gets when
 * neither sets one. The one table of them: a new shared field is an entry here, a column in
 * db/schema.ts's sharedColumns and an input in profiles/inputs.ts's sharedInputs.
 */
export const fieldDefaults = {
  exportId: null as number | null,
  cmdline: '',
  persistent: false,
  stateSize: defaultStateSize,
  /** cloud-init's documents: none unless set (src/cloud-init/seed.ts merges the two user-datas instead of choosing). */
  userData: null as string | null,
  networkConfig: null as string | null,
  vendorData: null as string | null,
};

/** The fields that hold cloud-init documents: they may carry secrets, so list views leave them out. */
export const cloudInitFields = ['userData', 'networkConfig', 'vendorData'] as const;
export type CloudInitField = (typeof cloudInitFields)[number];

/** A view without its cloud-init documents: what a list returns. */
export function withoutCloudInit<T extends Record<CloudInitField, unknown>>(view: T): Omit<T, CloudInitField> {
  const { userData: _userData, networkConfig: _networkConfig, vendorData: _vendorData, ...rest } = view;
  return rest;
}

export type SharedField = keyof typeof fieldDefaults;
export const sharedFields = Object.keys(fieldDefaults) as SharedField[];

/** Where a machine's value of a field comes from: itself, its profile, or nbdmux's default. */
export type FieldSource = 'machine' | 'profile' | 'default';

/** What a machine boots with: each field's value and where it came from. */
export type Effective = { [F in SharedField]: (typeof fieldDefaults)[F] } & { sources: Record<SharedField, FieldSource> };

type SharedValues = { [F in SharedField]: (typeof fieldDefaults)[F] | null };

/**
 * A machine's effective fields: its own where set, else its profile's, else the default. The one
 * place that decides it: the boot script, the state export and every view read this.
 */
export function effectiveFields(machine: Pick<MachineRow, SharedField>, profile: Pick<ProfileRow, SharedField> | undefined): Effective {
  const values: Record<string, unknown> = {};
  const sources = {} as Record<SharedField, FieldSource>;
  for (const field of sharedFields) {
    const own = (machine as SharedValues)[field];
    const shared = profile === undefined ? null : (profile as SharedValues)[field];
    values[field] = own ?? shared ?? fieldDefaults[field];
    sources[field] = own !== null ? 'machine' : shared !== null ? 'profile' : 'default';
  }
  return { ...(values as { [F in SharedField]: (typeof fieldDefaults)[F] }), sources };
}

/** A field as views and inputs name it: by export name, not id. */
export type ViewField = 'export' | Exclude<SharedField, 'exportId'>;

export function viewField(field: SharedField): ViewField {
  return field === 'exportId' ? 'export' : field;
}

/** The sources keyed as views name the fields. */
export function viewSources(sources: Effective['sources']): Record<ViewField, FieldSource> {
  return Object.fromEntries(sharedFields.map((field) => [viewField(field), sources[field]])) as Record<ViewField, FieldSource>;
}
