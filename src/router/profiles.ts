import { adoptInput, createProfileInput, profileByNameInput, updateProfileInput } from '../profiles/inputs.js';
import { authedProcedure, router } from './trpc.js';

export const profilesRouter = router({
  list: authedProcedure.query(({ ctx }) => ctx.profiles.list()),
  get: authedProcedure.input(profileByNameInput).query(({ ctx, input }) => ctx.profiles.get(input.name)),
  create: authedProcedure.input(createProfileInput).mutation(({ ctx, input }) => ctx.profiles.create(input, ctx.actor)),
  /** Changes what its machines get at their next boot; `allMachines` also clears their own values of the fields given. */
  update: authedProcedure.input(updateProfileInput).mutation(({ ctx, input }) => ctx.profiles.update(input, ctx.actor)),
  remove: authedProcedure.input(profileByNameInput).mutation(({ ctx, input }) => ctx.profiles.remove(input.name, ctx.actor)),
  /** Discovered MACs become its machines in one step, named from a pattern in their order of discovery. */
  adopt: authedProcedure.input(adoptInput).mutation(({ ctx, input }) => ctx.profiles.adopt(input, ctx.actor)),
});
