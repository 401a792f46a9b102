import { powerActions, type PowerAction } from '../model/event-map.js';
import { UsageError } from './usage-error.js';
import { exitCodes } from './failure.js';
import { describeBmc } from './machine-views.js';
import { printJson, type Command } from './output.js';

/** `nbdmux power`, `nbdmux reimage`, `nbdmux machines bmc` and the same per profile: BMCs, as the power procedures drive them. */
export const powerCommands = {
  async 'machines bmc'(client, { args: [mac], address, port, user, json }, out) {
    if (address === undefined) throw new UsageError('give the BMC with --address HOST (and --user USER, unless its profile gives one)');
    // From the environment: a password on the command line is in every user's `ps`.
    const password = process.env.NBDMUX_BMC_PASSWORD;
    const bmc = await client.machines.setBmc.mutate({
      mac: mac!,
      address,
      ...(user !== undefined && { user }),
      ...(port !== undefined && { port }),
      ...(password !== undefined && { password }),
    });
    if (json) printJson(out, bmc);
    else out.write(`BMC of ${mac}: ${describeBmc(bmc)}\n`);
    return exitCodes.ok;
  },

  async 'profiles bmc'(client, { args: [name], user, json }, out) {
    if (user === undefined) throw new UsageError('give the user its machines log in with: --user USER');
    const password = process.env.NBDMUX_BMC_PASSWORD;
    const bmc = await client.profiles.setBmc.mutate({ name: name!, user, ...(password !== undefined && { password }) });
    if (json) printJson(out, bmc);
    else out.write(`BMC credentials of profile ${name}: user ${bmc.user}, password ${bmc.password}\n`);
    return exitCodes.ok;
  },

  async 'profiles power'(client, { args: [name, action], json }, out) {
    const { results } = await client.profiles.power.mutate({ name: name!, action: checkedAction(action) });
    if (json) printJson(out, results);
    else
      for (const r of results)
        out.write(`${r.ok ? 'ok    ' : 'FAILED'} ${r.name} (${r.mac}) ${r.action}: ${r.ok ? (r.state ?? r.answer) : r.reason}\n`);
    return results.every((r) => r.ok) ? exitCodes.ok : exitCodes.failed;
  },

  async 'profiles reimage'(client, { args: [name], export: exportName, json }, out) {
    if (exportName === undefined) throw new UsageError('give the export to boot with --export EXPORT');
    const { results } = await client.profiles.reimage.mutate({ name: name!, export: exportName });
    if (json) printJson(out, results);
    else {
      for (const r of results) {
        const last = r.steps.at(-1)!;
        out.write(`${r.ok ? 'ok    ' : 'FAILED'} ${r.name} (${r.mac}) ${last.step}: ${last.detail}\n`);
      }
      const rebooted = results.filter((r) => r.ok).length;
      const others = rebooted < results.length ? ', the others at their next boot' : '';
      out.write(
        `profile ${name} boots ${exportName}: ${rebooted} of ${results.length} machine(s) rebooting now${others}; "nbdmux machines" shows their stages\n`,
      );
    }
    return results.every((r) => r.ok) ? exitCodes.ok : exitCodes.failed;
  },

  async power(client, { args: [mac, action], json }, out) {
    const result = await client.machines.power.mutate({ mac: mac!, action: checkedAction(action) });
    if (json) printJson(out, result);
    else out.write(`${result.mac} ${result.action}: ${result.state ?? result.answer}\n`);
    return exitCodes.ok;
  },

  async reimage(client, { args: [mac], export: exportName, json }, out) {
    if (exportName === undefined) throw new UsageError('give the export to boot with --export EXPORT');
    const result = await client.machines.reimage.mutate({ mac: mac!, export: exportName });
    if (json) printJson(out, result);
    else {
      for (const step of result.steps) out.write(`${step.ok ? 'ok    ' : 'FAILED'} ${step.step.padEnd(6)} ${step.detail}\n`);
      out.write(
        result.ok
          ? `${mac} is rebooting into ${exportName}: "nbdmux machines show ${mac}" shows its stages\n`
          : `${mac} was not reimaged\n`,
      );
    }
    return result.ok ? exitCodes.ok : exitCodes.failed;
  },
} satisfies Record<string, Command>;

function checkedAction(action: string | undefined): PowerAction {
  if (!(powerActions as readonly string[]).includes(action!))
    throw new UsageError(`ACTION must be one of ${powerActions.join(', ')}, got ${JSON.stringify(action)}`);
  return action as PowerAction;
}
