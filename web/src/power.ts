import type { NbdmuxClient, NbdmuxMachine, NbdmuxOutputs } from '../../src/client.js';
import { powerActions, type PowerAction } from '../../src/model/event-map.js';
import { errorMessages } from './errors.js';
import { el, formatTime } from './format.js';
import { clearErrors, onSubmit, textField } from './forms.js';
import { machineLink } from './routes.js';
import { DataTable, td } from './table.js';

type PowerResult = NbdmuxOutputs['machines']['power'] | NbdmuxOutputs['profiles']['power']['results'][number];
type ReimageResult = NbdmuxOutputs['machines']['reimage'];

/** One machine's line of a profile's action. */
interface ResultRow {
  name: string;
  mac: string;
  ok: boolean;
  text: string;
}

/** What each action's button says; `pxe` is a boot device, not a power change. */
const actionLabels: Record<PowerAction, string> = {
  status: 'Status',
  on: 'On',
  off: 'Off',
  cycle: 'Cycle',
  reset: 'Reset',
  pxe: 'Network boot next',
};
/** The buttons shown: reset is left to the CLI and REST, a harder cut than cycle that few want from a click. */
const shownActions = powerActions.filter((action) => action !== 'reset');

function powerText(r: PowerResult): string {
  return r.ok ? `${r.action}: ${r.state ?? r.answer}` : `${r.action}: ${r.reason}`;
}

/** A reimage's steps in one line: each step done, and the words of the last one (the failure's, when one failed). */
function reimageText(r: ReimageResult): string {
  const last = r.steps.at(-1);
  return `${r.steps.map((s) => `${s.step} ${s.ok ? 'ok' : 'failed'}`).join(' → ')}${last ? `: ${last.detail}` : ''}`;
}

function actionButtons(onAction: (action: PowerAction) => void): HTMLButtonElement[] {
  return shownActions.map((action) => {
    const button = el('button', { text: actionLabels[action], className: 'small', attrs: { type: 'button', 'data-action': action } });
    button.addEventListener('click', () => onAction(action));
    return button;
  });
}

/** The profile's power panel: an action or a reimage on all its machines, one row per machine with what became of it. */
export function bindProfilePower(form: HTMLFormElement, api: NbdmuxClient): void {
  const general = form.querySelector<HTMLElement>('.form-error')!;
  const results = new DataTable<ResultRow>({
    id: 'profile-power-results',
    noun: 'results',
    empty: 'No action yet: each machine of the profile gets a row here.',
    searchText: (r) => `${r.name} ${r.mac} ${r.text}`,
    columns: [
      { label: 'Machine', sortBy: (r) => r.name, cell: (r) => el('td', { className: 'name' }, [machineLink(r)]) },
      { label: 'Result', sortBy: (r) => (r.ok ? 1 : 0), cell: (r) => td(r.ok ? 'ok' : 'failed', `state ${r.ok ? 'up' : 'failed'}`) },
      { label: 'What happened', cell: (r) => td(r.text, 'detail') },
    ],
    row: (r, cells) => el('tr', { attrs: { 'data-result': r.mac, 'data-ok': String(r.ok) } }, cells),
  });
  form.querySelector('[data-results]')!.append(results.element);
  const name = () => (form.elements.namedItem('name') as HTMLSelectElement).value;
  const run = async (work: () => Promise<ResultRow[]>) => {
    clearErrors(form, general);
    for (const button of form.querySelectorAll('button')) button.disabled = true;
    try {
      results.render(await work());
    } catch (error) {
      const { fields, general: message } = errorMessages(error);
      general.textContent = message || [...fields].map(([field, text]) => `${field}: ${text}`).join('; ');
    } finally {
      for (const button of form.querySelectorAll('button')) button.disabled = false;
    }
  };
  form
    .querySelector('[data-actions]')!
    .append(
      ...actionButtons(
        (action) =>
          void run(async () =>
            (await api.profiles.power.mutate({ name: name(), action })).results.map((r) => ({ ...r, text: powerText(r) })),
          ),
      ),
    );
  onSubmit(
    form,
    () =>
      run(async () =>
        (await api.profiles.reimage.mutate({ name: name(), export: textField(new FormData(form), 'export') })).results.map((r) => ({
          ...r,
          text: reimageText(r),
        })),
      ),
    { keep: true },
  );
}

/** A machine's power on its page: its BMC and polled state, the actions and a reimage with each result shown, and its BMC form. */
export class MachinePower {
  private machine: NbdmuxMachine | null = null;
  private readonly result: HTMLElement;
  private readonly notice: HTMLElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly api: NbdmuxClient,
  ) {
    this.result = root.querySelector('#machine-power-result')!;
    this.notice = root.querySelector('#machine-power-notice')!;
    root.querySelector('#machine-power-actions')!.append(...actionButtons((action) => void this.act(action)));
    const reimage = root.querySelector<HTMLFormElement>('#machine-reimage')!;
    onSubmit(
      reimage,
      async (data) => {
        const r = await this.api.machines.reimage.mutate({ mac: this.machine!.mac, export: textField(data, 'export') });
        this.show(r.steps.map((s) => ({ ok: s.ok, text: `${s.step}: ${s.detail}` })));
      },
      { keep: true },
    );
    const bmc = root.querySelector<HTMLFormElement>('#machine-bmc')!;
    onSubmit(
      bmc,
      async (data) => {
        const port = textField(data, 'port').trim();
        const user = textField(data, 'user').trim();
        const password = textField(data, 'password');
        await this.api.machines.setBmc.mutate({
          mac: this.machine!.mac,
          address: textField(data, 'address').trim(),
          user: user === '' ? null : user,
          ...(port !== '' && { port: Number(port) }),
          ...(password !== '' && { password }),
        });
      },
      { keep: true },
    );
  }

  /** Draws the machine's BMC and state; the form is filled only for another machine, so typing is not lost to a snapshot. */
  render(m: NbdmuxMachine | undefined): void {
    const other = m?.mac !== this.machine?.mac;
    this.machine = m ?? null;
    if (!m) return;
    const bmc = m.bmc;
    const from = (source: string) => (source === 'profile' ? " (its profile's)" : '');
    this.root.querySelector('#machine-power-facts')!.replaceChildren(
      el('p', {
        attrs: { 'data-bmc': bmc === null ? 'none' : 'set' },
        text:
          bmc === null
            ? 'No BMC set: give its address below (and a user and password, unless its profile gives them).'
            : `BMC ${bmc.address}:${bmc.port}, user ${bmc.user ?? '(none)'}${from(bmc.sources.user)}, password ${bmc.password}${from(bmc.sources.password)}.`,
      }),
      el('p', {
        attrs: { 'data-power': m.power?.state ?? 'unknown' },
        text:
          m.power === null
            ? 'Power state: not polled yet.'
            : m.power.state !== null
              ? `Power state: ${m.power.state} (polled ${formatTime(m.power.at)}).`
              : `Power state unknown: ${m.power.error ?? ''}`,
      }),
    );
    if (!other) return;
    this.result.replaceChildren();
    this.notice.textContent = '';
    const form = this.root.querySelector<HTMLFormElement>('#machine-bmc')!;
    const field = (name: string) => form.elements.namedItem(name) as HTMLInputElement;
    field('address').value = bmc?.address ?? '';
    field('port').value = String(bmc?.port ?? 623);
    field('user').value = bmc?.sources.user === 'machine' ? (bmc.user ?? '') : '';
    field('user').placeholder = bmc?.sources.user === 'profile' ? `its profile's: ${bmc.user}` : 'admin';
    field('password').value = '';
    field('password').placeholder = bmc?.password === 'set' ? 'set: leave empty to keep it' : '';
    const reimage = this.root.querySelector<HTMLSelectElement>('#machine-reimage select[name=export]')!;
    if (m.export !== null) reimage.value = m.export;
  }

  private async act(action: PowerAction): Promise<void> {
    if (!this.machine) return;
    this.notice.textContent = '';
    try {
      const r = await this.api.machines.power.mutate({ mac: this.machine.mac, action });
      this.show([{ ok: true, text: powerText(r) }]);
    } catch (error) {
      this.show([{ ok: false, text: `${action}: ${errorMessages(error).general}` }]);
    }
  }

  private show(lines: Array<{ ok: boolean; text: string }>): void {
    this.result.replaceChildren(
      ...lines.map((line) =>
        el('li', { attrs: { 'data-ok': String(line.ok) } }, [
          el('span', { text: line.ok ? 'ok' : 'failed', className: `state ${line.ok ? 'up' : 'failed'}` }),
          ` ${line.text}`,
        ]),
      ),
    );
  }
}
