import { UsageError } from './usage-error.js';
import { cloudInitChanges } from './cloud-init-flags.js';
import { exitCodes } from './failure.js';
import { withUnset } from './machines.js';
import { printJson, type Command } from './output.js';
import { renderProfile, renderProfiles } from './profile-views.js';

/** `nbdmux profiles ...`: what groups of machines share, as profiles.* procedures see them. */
export const profileCommands = {
  async 'profiles list'(client, { json }, out) {
    const profiles = await client.profiles.list.query();
    if (json) printJson(out, profiles);
    else out.write(renderProfiles(profiles));
    return exitCodes.ok;
  },

  async 'profiles add'(client, invocation, out) {
    const {
      args: [name],
      export: exportName,
      cmdline,
      persistent,
      'state-size': stateSize,
      json,
    } = invocation;
    const created = await client.profiles.create.mutate({
      name: name!,
      ...(exportName !== undefined && { export: exportName }),
      ...(cmdline !== undefined && { cmdline }),
      ...(persistent !== undefined && { persistent }),
      ...(stateSize !== undefined && { stateSize }),
      ...cloudInitChanges(invocation),
    });
    if (json) printJson(out, created);
    else out.write(`added profile ${created.name}\n${renderProfile(created)}`);
    return exitCodes.ok;
  },

  async 'profiles set'(client, invocation, out) {
    const {
      args: [name],
      export: exportName,
      cmdline,
      persistent,
      'no-persistent': noPersistent,
      'state-size': stateSize,
      unset,
      'all-machines': allMachines,
      'keep-state': keepState,
      json,
    } = invocation;
    if (persistent && noPersistent) throw new UsageError('give --persistent or --no-persistent, not both');
    const changes = withUnset(unset, {
      ...(exportName !== undefined && { export: exportName }),
      ...(cmdline !== undefined && { cmdline }),
      ...(persistent && { persistent: true }),
      ...(noPersistent && { persistent: false }),
      ...(stateSize !== undefined && { stateSize }),
      ...cloudInitChanges(invocation),
    });
    if (Object.keys(changes).length === 0)
      throw new UsageError(
        'give what to change: --export, --cmdline, --persistent, --no-persistent, --state-size, --user-data, --network-config, --vendor-data or --unset',
      );
    const updated = await client.profiles.update.mutate({ name: name!, ...changes, allMachines, keepState });
    if (json) printJson(out, updated);
    else out.write(`updated profile ${updated.name}: its machines get it at their next boot\n${renderProfile(updated)}`);
    return exitCodes.ok;
  },

  async 'profiles show'(client, { args: [name], json }, out) {
    const profile = await client.profiles.get.query({ name: name! });
    if (json) printJson(out, profile);
    else out.write(renderProfile(profile));
    return exitCodes.ok;
  },

  async 'profiles rm'(client, { args: [name], json }, out) {
    await client.profiles.remove.mutate({ name: name! });
    if (json) printJson(out, { name });
    else out.write(`removed profile ${name}\n`);
    return exitCodes.ok;
  },

  async 'profiles adopt'(client, { args: [name, ...macs], names, json }, out) {
    if (names === undefined) throw new UsageError("profiles adopt needs --names PATTERN, e.g. --names 'rack3-node{01..40}'");
    const { adopted } = await client.profiles.adopt.mutate({ name: name!, names, macs });
    if (json) printJson(out, adopted);
    else out.write(adopted.map((m) => `adopted ${m.mac} as ${m.name}\n`).join(''));
    return exitCodes.ok;
  },
} satisfies Record<`profiles ${string}`, Command>;
