import { createMachineInput, machineByMacInput, updateMachineInput } from '../machines/inputs.js';
import { powerActionInput, reimageInput, setBmcInput } from '../power/inputs.js';
import { withoutCloudInit } from '../profiles/fields.js';
import { authedProcedure, router } from './trpc.js';

export const machinesRouter = router({
  /** Without cloud-init documents, which may hold secrets: `get` shows them. */
  list: authedProcedure.query(({ ctx }) => ctx.power.withPower(ctx.machines.list()).map(withoutCloudInit)),
  /** Unknown MACs that asked for a boot script: candidates to add. */
  discovered: authedProcedure.query(({ ctx }) => ctx.machines.discovered()),
  get: authedProcedure.input(machineByMacInput).query(({ ctx, input }) => ctx.power.withPower([ctx.machines.get(input.mac)])[0]!),
  create: authedProcedure
    .input(createMachineInput)
    .mutation(async ({ ctx, input }) => ctx.power.withPower([await ctx.machines.create(input, ctx.actor)])[0]!),
  update: authedProcedure
    .input(updateMachineInput)
    .mutation(async ({ ctx, input }) => ctx.power.withPower([await ctx.machines.update(input, ctx.actor)])[0]!),
  delete: authedProcedure.input(machineByMacInput).mutation(({ ctx, input }) => ctx.machines.delete(input.mac, ctx.actor)),
  reset: authedProcedure.input(machineByMacInput).mutation(({ ctx, input }) => ctx.machines.reset(input.mac, ctx.actor)),
  /** How nbdmux reaches its BMC; the password is write-only. */
  setBmc: authedProcedure.input(setBmcInput).mutation(({ ctx, input }) => ctx.power.bmcs.set(input, ctx.actor)),
  removeBmc: authedProcedure.input(machineByMacInput).mutation(({ ctx, input }) => ctx.power.bmcs.remove(input.mac, ctx.actor)),
  power: authedProcedure.input(powerActionInput).mutation(({ ctx, input }) => ctx.power.control.act(input.mac, input.action, ctx.actor)),
  /** Export, then a network boot next, then a power cycle: each step's result. */
  reimage: authedProcedure.input(reimageInput).mutation(({ ctx, input }) => ctx.power.control.reimage(input.mac, input.export, ctx.actor)),
});
