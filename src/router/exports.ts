import { createExportInput, deleteExportInput, exportByNameInput } from '../exports/inputs.js';
import { publicProcedure, router } from './trpc.js';

export const exportsRouter = router({
  list: publicProcedure.query(({ ctx }) => ctx.registry.list()),
  get: publicProcedure.input(exportByNameInput).query(({ ctx, input }) => ctx.registry.get(input.name)),
  create: publicProcedure.input(createExportInput).mutation(({ ctx, input }) => ctx.registry.create(input)),
  delete: publicProcedure.input(deleteExportInput).mutation(({ ctx, input }) => ctx.registry.delete(input)),
});
