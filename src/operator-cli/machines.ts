import type { Invocation } from './args.js';
import { UsageError } from './usage-error.js';
import { cloudInitChanges } from './cloud-init-flags.js';
import { exitCodes } from './failure.js';
import { printJson, type Command } from './output.js';
import { renderDiscovered, renderMachine, renderMachines } from './machine-views.js';

/** `nbdmux machines ...`: the lab's machines by MAC, as machines.* procedures see them. */
export const machineCommands = {
  async 'machines list'(client, { json }, out) {
    const machines = await client.machines.list.query();
    if (json) printJson(out, machines);
    else out.write(renderMachines(machines));
    return exitCodes.ok;
  },

  async 'machines add'(
    client,
    { args: [mac, name], profile, export: exportName, cmdline, persistent, 'state-size': stateSize, json },
    out,
  ) {
    const created = await client.machines.create.mutate({
      mac: mac!,
      name: name!,
      ...(profile !== undefined && { profile }),
      ...(exportName !== undefined && { export: exportName }),
      ...(cmdline !== undefined && { cmdline }),
      ...(persistent !== undefined && { persistent }),
      ...(stateSize !== undefined && { stateSize }),
    });
    if (json) printJson(out, created);
    else out.write(`added ${created.name}\n${renderMachine(created)}`);
    return exitCodes.ok;
  },

  async 'machines set'(client, invocation, out) {
    const {
      args: [mac],
      name,
      profile,
      'no-profile': noProfile,
      export: exportName,
      'no-export': noExport,
      cmdline,
      persistent,
      'no-persistent': noPersistent,
      'state-size': stateSize,
      'keep-state': keepState,
      unset,
      json,
    } = invocation;
    if (profile !== undefined && noProfile) throw new UsageError('give --profile PROFILE or --no-profile, not both');
    if (exportName !== undefined && noExport) throw new UsageError('give --export EXPORT or --no-export, not both');
    if (persistent && noPersistent) throw new UsageError('give --persistent or --no-persistent, not both');
    const changes = withUnset(unset, {
      ...(name !== undefined && { name }),
      ...(profile !== undefined && { profile }),
      ...(noProfile && { profile: null }),
      ...(exportName !== undefined && { export: exportName }),
      ...(noExport && { export: null }),
      ...(cmdline !== undefined && { cmdline }),
      ...(persistent && { persistent: true }),
      ...(noPersistent && { persistent: false }),
      ...(stateSize !== undefined && { stateSize }),
      ...cloudInitChanges(invocation),
    });
    if (Object.keys(changes).length === 0)
      throw new UsageError(
        'give what to change: --name, --export, --no-export, --cmdline, --persistent, --no-persistent, --state-size, --user-data, --network-config, --vendor-data, --profile, --no-profile or --unset',
      );
    const updated = await client.machines.update.mutate({ mac: mac!, ...changes, ...(keepState && { keepState }) });
    if (json) printJson(out, updated);
    else out.write(`updated ${updated.name}\n${renderMachine(updated)}`);
    return exitCodes.ok;
  },

  async 'machines show'(client, { args: [mac], json }, out) {
    const machine = await client.machines.get.query({ mac: mac! });
    if (json) printJson(out, machine);
    else out.write(renderMachine(machine));
    return exitCodes.ok;
  },

  async 'machines rm'(client, { args: [mac], json }, out) {
    // Read first, to say which machine went and whether state went with it.
    const machine = await client.machines.get.query({ mac: mac! });
    await client.machines.delete.mutate({ mac: machine.mac });
    if (json) printJson(out, machine);
    else out.write(`removed ${machine.name} (${machine.mac})${machine.persistent ? ', and its state' : ''}\n`);
    return exitCodes.ok;
  },

  async 'machines reset'(client, { args: [mac], json }, out) {
    await client.machines.reset.mutate({ mac: mac! });
    const machine = await client.machines.get.query({ mac: mac! });
    if (json) printJson(out, machine);
    else out.write(`discarded the state of ${machine.name} (${machine.mac}): its next boot starts from the image as it is\n`);
    return exitCodes.ok;
  },

  async 'machines discovered'(client, { json }, out) {
    const discovered = await client.machines.discovered.query();
    if (json) printJson(out, discovered);
    else out.write(renderDiscovered(discovered));
    return exitCodes.ok;
  },
} satisfies Record<`machines ${string}`, Command>;

/** The changes with each `--unset` field null (its value cleared); refused alongside a value for the same field. */
export function withUnset<T extends object>(
  unset: Invocation['unset'],
  changes: T,
): T & Partial<Record<Invocation['unset'][number], null>> {
  for (const field of unset) {
    if (field in changes) throw new UsageError(`give a value for ${field} or --unset it, not both`);
  }
  return { ...changes, ...Object.fromEntries(unset.map((field) => [field, null])) };
}
