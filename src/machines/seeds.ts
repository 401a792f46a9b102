import { eq } from 'drizzle-orm';
import type { Db } from '../db/open.js';
import { machinesTable } from '../db/schema.js';
import type { BootableExports } from '../exports/bootable.js';
import { seedOf, type SeedFile } from '../boot/seed.js';
import { effectiveFields } from '../profiles/fields.js';
import { profileById } from '../profiles/values.js';
import { admits } from '../rules/allow-list.js';

/**
 * The cloud-init seeds of the machines, each for its current boot alone: the address that
 * fetched its script, while its export (its own or its profile's) serves and admits that
 * address, as its state export is (machines/served.ts). Anything else is undefined, which the
 * route answers as it answers an unknown MAC: a seed cannot probe for machines, and a seed's
 * secrets reach no other address.
 */
export class MachineSeeds {
  constructor(
    private readonly db: Pick<Db, 'select'>,
    private readonly exports: Pick<BootableExports, 'find'>,
  ) {}

  forBoot(mac: string, client: string): Record<SeedFile, string | null> | undefined {
    const machine = this.db.select().from(machinesTable).where(eq(machinesTable.mac, mac)).get();
    if (machine === undefined || machine.address !== client) return undefined;
    const profile = profileById(this.db, machine.profileId);
    const { exportId } = effectiveFields(machine, profile);
    const exp = exportId === null ? undefined : this.exports.find({ id: exportId });
    if (exp === undefined || !admits(exp, client)) return undefined;
    return seedOf({ name: machine.name, machine, profile }) ?? undefined;
  }
}
