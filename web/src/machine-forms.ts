import type { NbdmuxClient, NbdmuxMachine } from '../../src/client.js';
import { errorMessages } from './errors.js';
import { el } from './format.js';
import { clearErrors, onSubmit, textField } from './forms.js';

export interface MachineActions {
  edit(machine: NbdmuxMachine): void;
  remove(machine: NbdmuxMachine): void;
  reset(machine: NbdmuxMachine): void;
}

const gib = 1024 ** 3;
const mib = 1024 ** 2;

/** A state size as the form shows it and the API reads it: `4G`, `512M`, else bytes. */
export function sizeText(bytes: number): string {
  if (bytes % gib === 0) return `${bytes / gib}G`;
  if (bytes % mib === 0) return `${bytes / mib}M`;
  return String(bytes);
}

const text = (data: FormData, name: string) => textField(data, name).trim();
/** The select's empty choice is "none": the machine boots no export. */
const exportChoice = (data: FormData) => text(data, 'export') || null;

/** A machine form's export choices: none, or an export not draining; the choice made survives each refresh. */
export function fillExportChoices(select: HTMLSelectElement, names: readonly string[]): void {
  // Rebuilt only when the exports change: rebuilding closes a list the operator has open.
  if ([...select.options].map((option) => option.value).join('\n') === ['', ...names].join('\n')) return;
  const chosen = select.value;
  select.replaceChildren(
    el('option', { text: 'none', attrs: { value: '' } }),
    ...names.map((name) => el('option', { text: name, attrs: { value: name } })),
  );
  select.value = names.includes(chosen) ? chosen : '';
}

/** The add-machine form: sends machines.create; an empty state size leaves the daemon's default (4G). */
export function bindAddMachineForm(form: HTMLFormElement, api: NbdmuxClient): void {
  onSubmit(form, async (data) => {
    const stateSize = text(data, 'stateSize');
    await api.machines.create.mutate({
      mac: text(data, 'mac'),
      name: text(data, 'name'),
      export: exportChoice(data),
      cmdline: text(data, 'cmdline'),
      persistent: data.get('persistent') === 'on',
      ...(stateSize !== '' && { stateSize }),
    });
  });
}

/** Opens the add form with a discovered MAC filled in: the operator names it and picks its export. */
export function addDiscovered(form: HTMLFormElement, mac: string): void {
  (form.elements.namedItem('mac') as HTMLInputElement).value = mac;
  form.scrollIntoView({ block: 'nearest' });
  (form.elements.namedItem('name') as HTMLInputElement).focus();
}

/** The edit form, for one machine at a time: it sends only what the operator changed (the MAC is the machine). */
export class MachineEditor {
  private editing: NbdmuxMachine | null = null;

  constructor(
    private readonly form: HTMLFormElement,
    api: NbdmuxClient,
  ) {
    onSubmit(form, async (data) => {
      const m = this.editing!;
      const exportChanged = exportChoice(data) !== m.export;
      await api.machines.update.mutate({
        mac: m.mac,
        ...(text(data, 'name') !== m.name && { name: text(data, 'name') }),
        ...(exportChanged && { export: exportChoice(data) }),
        ...(text(data, 'cmdline') !== m.cmdline && { cmdline: text(data, 'cmdline') }),
        ...((data.get('persistent') === 'on') !== m.persistent && { persistent: data.get('persistent') === 'on' }),
        ...(text(data, 'stateSize') !== sizeText(m.stateSize) && { stateSize: text(data, 'stateSize') }),
        ...(exportChanged && data.get('keepState') === 'on' && { keepState: true }),
      });
      this.close();
    });
    this.field('export').addEventListener('change', () => this.showKeepState());
    form.querySelector('[data-close]')!.addEventListener('click', () => this.close());
  }

  open(m: NbdmuxMachine): void {
    this.editing = m;
    clearErrors(this.form, this.form.querySelector('.form-error')!);
    this.form.querySelector('.editing')!.textContent = `${m.name} (${m.mac})`;
    this.field('name').value = m.name;
    this.field('export').value = m.export ?? '';
    this.field('cmdline').value = m.cmdline;
    this.field<HTMLInputElement>('persistent').checked = m.persistent;
    this.field('stateSize').value = sizeText(m.stateSize);
    this.field<HTMLInputElement>('keepState').checked = false;
    this.showKeepState();
    this.form.hidden = false;
    this.form.scrollIntoView({ block: 'nearest' });
  }

  close(): void {
    this.editing = null;
    this.form.hidden = true;
  }

  /** A snapshot came: a machine removed meanwhile leaves nothing to edit. */
  refresh(machines: readonly NbdmuxMachine[]): void {
    if (this.editing && !machines.some((m) => m.mac === this.editing!.mac)) this.close();
  }

  /** Keeping state means something only for a persistent machine given another export: its upper layer belongs to the old one. */
  private showKeepState(): void {
    const m = this.editing;
    this.form.querySelector<HTMLElement>('[data-keep-state]')!.hidden = !(
      m?.persistent && (this.field('export').value || null) !== m.export
    );
  }

  private field<T extends HTMLInputElement | HTMLSelectElement = HTMLInputElement | HTMLSelectElement>(name: string): T {
    return this.form.elements.namedItem(name) as T;
  }
}

/** Remove and reset, each after asking; a refusal (say, the machine is attached) shows in `notice`; `removed` follows a removal. */
export function machineActions(
  api: NbdmuxClient,
  notice: HTMLElement,
  editor: MachineEditor,
  removed: (m: NbdmuxMachine) => void,
): MachineActions {
  const confirmed = async (question: string, change: () => Promise<unknown>, refused: string) => {
    if (!confirm(question)) return;
    try {
      await change();
      notice.textContent = '';
    } catch (error) {
      notice.textContent = errorMessages(error).general || refused;
    }
  };
  // `confirmed` shows a refusal in `notice` itself: what it returns has nothing left to reject.
  return {
    edit: (m) => editor.open(m),
    remove: (m) =>
      void confirmed(
        `Remove machine "${m.name}" (${m.mac})?${m.persistent ? ' What it wrote is deleted with it.' : ''} Its next boot gets the boot menu, as an unknown machine.`,
        async () => {
          await api.machines.delete.mutate({ mac: m.mac });
          removed(m);
        },
        'the removal was refused',
      ),
    reset: (m) =>
      void confirmed(
        `Discard what "${m.name}" wrote? Its next boot starts from the image as it is.`,
        () => api.machines.reset.mutate({ mac: m.mac }),
        'the reset was refused',
      ),
  };
}
