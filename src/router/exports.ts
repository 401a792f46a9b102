import { createExportInput, deleteExportInput, exportByNameInput } from '../exports/inputs.js';
import { authedProcedure, router } from './trpc.js';

export const exportsRouter = router({
  list: authedProcedure.query(({ ctx }) => ctx.registry.list()),
  get: authedProcedure.input(exportByNameInput).query(({ ctx, input }) => ctx.registry.get(input.name)),
  create: authedProcedure.input(createExportInput).mutation(({ ctx, input }) => ctx.registry.create(input, ctx.actor)),
  delete: authedProcedure.input(deleteExportInput).mutation(({ ctx, input }) => ctx.registry.delete(input, ctx.actor)),
});
