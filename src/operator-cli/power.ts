import { powerActions, type PowerAction } from '../model/event-map.js';
import { UsageError } from './args.js';
import { exitCodes } from './failure.js';
import { printJson, type Command } from './output.js';

/** `nbdmux power`, `nbdmux reimage` and `nbdmux machines bmc`: a machine's BMC, as machines.* procedures drive it. */
export const powerCommands = {
  async 'machines bmc'(client, { args: [mac], address, port, user, json }, out) {
    if (address === undefined || user === undefined) throw new UsageError('give the BMC with --address HOST and --user USER');
    // From the environment: a password on the command line is in every user's `ps`.
    const password = process.env.NBDMUX_BMC_PASSWORD;
    const bmc = await client.machines.setBmc.mutate({
      mac: mac!,
      address,
      user,
      ...(port !== undefined && { port }),
      ...(password !== undefined && { password }),
    });
    if (json) printJson(out, bmc);
    else out.write(`BMC of ${mac}: ${bmc.user}@${bmc.address}:${bmc.port}, password ${bmc.password}\n`);
    return exitCodes.ok;
  },

  async power(client, { args: [mac, action], json }, out) {
    if (!(powerActions as readonly string[]).includes(action!))
      throw new UsageError(`ACTION must be one of ${powerActions.join(', ')}, got ${JSON.stringify(action)}`);
    const result = await client.machines.power.mutate({ mac: mac!, action: action as PowerAction });
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
