import path from 'node:path';
import type { CommandName } from './command-table.js';
import { UsageError } from './usage-error.js';
import { completion } from './completion.js';
import { exitCodes } from './failure.js';
import { importCommand } from './import.js';
import { machineCommands } from './machines.js';
import { profileCommands } from './profiles.js';
import { printJson, type Command } from './output.js';
import { powerCommands } from './power.js';
import { renderConnections, renderExport, renderExports, renderHealth, renderVersions } from './views.js';
import { watch } from './watch.js';

export const commands: Record<CommandName, Command> = {
  async ls(client, { json }, out) {
    const exports = await client.exports.list.query();
    if (json) printJson(out, exports);
    else out.write(renderExports(exports));
    return exitCodes.ok;
  },

  async add(client, { args: [name, file], rw, cow, allow, json }, out) {
    const created = await client.exports.create.mutate({
      name: name!,
      file: path.resolve(file!),
      readonly: !rw,
      cow,
      allow,
    });
    if (json) printJson(out, created);
    else out.write(`added ${created.name}\n${renderExport(created)}`);
    return exitCodes.ok;
  },

  async rm(client, { args: [name], force, json }, out) {
    const removed = await client.exports.delete.mutate({ name: name!, force });
    if (json) printJson(out, removed);
    else if (removed.killed > 0) out.write(`removed ${removed.name}; cut ${removed.killed} live connection(s)\n`);
    else if (removed.draining > 0)
      out.write(
        `removed ${removed.name}; ${removed.draining} live connection(s) draining ("nbdmux rm --force ${removed.name}" cuts them)\n`,
      );
    else out.write(`removed ${removed.name}\n`);
    return exitCodes.ok;
  },

  async show(client, { args: [name], json }, out) {
    // The list holds draining generations too: a name can be serving a new image while old clients drain the previous one.
    const [exports, live] = await Promise.all([client.exports.list.query(), client.connections.list.query({ live: true, limit: 1000 })]);
    const matching = exports.filter((e) => e.name === name);
    // None listed: ask the daemon for it, so a refusal is its own (code and message).
    if (matching.length === 0) matching.push(await client.exports.get.query({ name: name! }));
    const connections = live.filter((c) => c.exportName === name);
    if (json) {
      printJson(out, { exports: matching, connections });
      return exitCodes.ok;
    }
    out.write(matching.map(renderExport).join('\n'));
    out.write(`\n${renderConnections(connections, true)}`);
    return exitCodes.ok;
  },

  import: importCommand,

  async versions(client, { args: [name], json }, out) {
    const versions = await client.exports.versions.query({ name: name! });
    if (json) printJson(out, versions);
    else out.write(renderVersions(versions));
    return exitCodes.ok;
  },

  async rollback(client, { args: [name, version], json }, out) {
    if (version !== undefined && !/^[1-9]\d*$/.test(version))
      throw new UsageError(`VERSION must be a version number (1, 2, ...), got ${JSON.stringify(version)}`);
    const rolledBack = await client.exports.rollback.mutate({ name: name!, ...(version !== undefined && { version: Number(version) }) });
    if (json) printJson(out, rolledBack);
    else out.write(`${rolledBack.name} serves version ${rolledBack.version} to new clients; live ones keep the version they attached\n`);
    return exitCodes.ok;
  },

  async connections(client, { live, limit, json }, out) {
    const connections = await client.connections.list.query({ live, ...(limit !== undefined && { limit }) });
    if (json) printJson(out, connections);
    else out.write(renderConnections(connections, live));
    return exitCodes.ok;
  },

  async health(client, { json }, out) {
    const health = await client.system.health.query();
    if (json) printJson(out, health);
    else out.write(renderHealth(health));
    return health.ok ? exitCodes.ok : exitCodes.failed;
  },

  watch,
  completion,
  ...machineCommands,
  ...profileCommands,
  ...powerCommands,
};
