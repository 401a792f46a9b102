import { createMachineInput, machineByMacInput, updateMachineInput } from '../machines/inputs.js';
import { authedProcedure, router } from './trpc.js';

export const machinesRouter = router({
  list: authedProcedure.query(({ ctx }) => ctx.machines.list()),
  /** Unknown MACs that asked for a boot script: candidates to add. */
  discovered: authedProcedure.query(({ ctx }) => ctx.machines.discovered()),
  get: authedProcedure.input(machineByMacInput).query(({ ctx, input }) => ctx.machines.get(input.mac)),
  create: authedProcedure.input(createMachineInput).mutation(({ ctx, input }) => ctx.machines.create(input, ctx.actor)),
  update: authedProcedure.input(updateMachineInput).mutation(({ ctx, input }) => ctx.machines.update(input, ctx.actor)),
  delete: authedProcedure.input(machineByMacInput).mutation(({ ctx, input }) => ctx.machines.delete(input.mac, ctx.actor)),
  reset: authedProcedure.input(machineByMacInput).mutation(({ ctx, input }) => ctx.machines.reset(input.mac, ctx.actor)),
});
