import { createExportInput, deleteExportInput, exportByNameInput, rollbackInput, updateExportInput } from '../exports/inputs.js';
import { authedProcedure, router } from './trpc.js';

export const exportsRouter = router({
  list: authedProcedure.query(({ ctx }) => ctx.registry.list()),
  get: authedProcedure.input(exportByNameInput).query(({ ctx, input }) => ctx.registry.get(input.name)),
  create: authedProcedure.input(createExportInput).mutation(({ ctx, input }) => ctx.registry.create(input, ctx.actor)),
  update: authedProcedure.input(updateExportInput).mutation(({ ctx, input }) => ctx.registry.update(input, ctx.actor)),
  versions: authedProcedure.input(exportByNameInput).query(({ ctx, input }) => ctx.registry.versions(input.name)),
  rollback: authedProcedure.input(rollbackInput).mutation(({ ctx, input }) => ctx.registry.rollback(input, ctx.actor)),
  delete: authedProcedure.input(deleteExportInput).mutation(({ ctx, input }) => ctx.registry.delete(input, ctx.actor)),
});
