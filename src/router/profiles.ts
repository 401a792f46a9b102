import { powerProfile, reimageProfile } from '../power/fleet.js';
import { profilePowerInput, profileReimageInput, setProfileBmcInput } from '../power/inputs.js';
import { adoptInput, createProfileInput, profileByNameInput, updateProfileInput } from '../profiles/inputs.js';
import { authedProcedure, router } from './trpc.js';

export const profilesRouter = router({
  list: authedProcedure.query(({ ctx }) => ctx.power.withProfileBmc(ctx.profiles.list())),
  get: authedProcedure.input(profileByNameInput).query(({ ctx, input }) => ctx.power.withProfileBmc([ctx.profiles.get(input.name)])[0]!),
  create: authedProcedure
    .input(createProfileInput)
    .mutation(async ({ ctx, input }) => ctx.power.withProfileBmc([await ctx.profiles.create(input, ctx.actor)])[0]!),
  /** Changes what its machines get at their next boot; `allMachines` also clears their own values of the fields given. */
  update: authedProcedure
    .input(updateProfileInput)
    .mutation(async ({ ctx, input }) => ctx.power.withProfileBmc([await ctx.profiles.update(input, ctx.actor)])[0]!),
  remove: authedProcedure.input(profileByNameInput).mutation(({ ctx, input }) => ctx.profiles.remove(input.name, ctx.actor)),
  /** Discovered MACs become its machines in one step, named from a pattern in their order of discovery. */
  adopt: authedProcedure.input(adoptInput).mutation(({ ctx, input }) => ctx.profiles.adopt(input, ctx.actor)),
  /** The BMC user and password its machines share (each gives its own address); the password is write-only. */
  setBmc: authedProcedure.input(setProfileBmcInput).mutation(({ ctx, input }) => ctx.power.bmcs.setProfile(input, ctx.actor)),
  removeBmc: authedProcedure.input(profileByNameInput).mutation(({ ctx, input }) => ctx.power.bmcs.removeProfile(input.name, ctx.actor)),
  /** The action on every machine of it, a bounded number at once: one result per machine. */
  power: authedProcedure
    .input(profilePowerInput)
    .mutation(({ ctx, input }) =>
      powerProfile({ control: ctx.power.control, profiles: ctx.profiles }, input.name, input.action, ctx.actor),
    ),
  /** Its export for all its machines, then each booted from the network now: one result per machine. */
  reimage: authedProcedure
    .input(profileReimageInput)
    .mutation(({ ctx, input }) =>
      reimageProfile({ control: ctx.power.control, profiles: ctx.profiles }, input.name, input.export, ctx.actor),
    ),
});
