import type { NbdmuxClient, NbdmuxInputs, NbdmuxOutputs, NbdmuxProfile } from '../../src/client.js';
import { el } from './format.js';
import { onSubmit, textField } from './forms.js';
import { sizeText } from './machine-forms.js';

type SharedInput = Omit<NbdmuxInputs['profiles']['create'], 'name'>;
/** One profile in full: a list leaves out its cloud-init documents, which may hold secrets. */
type FullProfile = NbdmuxOutputs['profiles']['get'];

/**
 * A field the profile form shows, and how its text becomes the value the API takes (null: unset,
 * its machines get the default). `name` is the API's field name, which is also the form's and the
 * name of the slot its refusals show in.
 */
interface ProfileField {
  name: keyof SharedInput & keyof FullProfile;
  label: string;
  /** export: a choice of the exports; text and lines: free text; yes-no: unset, yes or no; size: 4G, 512M or bytes. */
  kind: 'export' | 'text' | 'lines' | 'yes-no' | 'size';
  placeholder?: string;
}

/**
 * The profile's shared fields in the order the form shows them: the one list the form is built
 * from, read from and filled from. A new shared field (cloud-init's user-data, say) is one line here.
 */
const profileFields: readonly ProfileField[] = [
  { name: 'export', label: 'Export', kind: 'export' },
  { name: 'cmdline', label: 'Kernel args', kind: 'text', placeholder: 'quiet' },
  { name: 'persistent', label: 'Persistent', kind: 'yes-no' },
  { name: 'stateSize', label: 'State size', kind: 'size', placeholder: '4G' },
  { name: 'userData', label: 'User-data (cloud-config)', kind: 'lines', placeholder: '#cloud-config' },
  { name: 'networkConfig', label: 'Network-config', kind: 'lines' },
  { name: 'vendorData', label: 'Vendor-data', kind: 'lines', placeholder: '#cloud-config' },
];

function control(field: ProfileField): HTMLElement {
  const attrs = { name: field.name, autocomplete: 'off', ...(field.placeholder !== undefined && { placeholder: field.placeholder }) };
  switch (field.kind) {
    case 'export':
      return el('select', { attrs: { name: field.name } });
    case 'yes-no':
      return el('select', { attrs: { name: field.name } }, [
        el('option', { text: 'unset', attrs: { value: '' } }),
        el('option', { text: 'yes', attrs: { value: 'yes' } }),
        el('option', { text: 'no', attrs: { value: 'no' } }),
      ]);
    case 'lines':
      return el('textarea', { attrs: { ...attrs, rows: '6', spellcheck: 'false' } });
    default:
      return el('input', { attrs });
  }
}

/** The field's value as the API takes it; null when left empty (unset). */
function valueOf(field: ProfileField, text: string): string | boolean | null {
  if (text === '') return null;
  return field.kind === 'yes-no' ? text === 'yes' : text;
}

/** The profile's value as the form shows it. */
function textOf(field: ProfileField, value: string | number | boolean | null | undefined): string {
  if (value === null || value === undefined) return '';
  if (field.kind === 'yes-no') return value ? 'yes' : 'no';
  if (field.kind === 'size' && typeof value === 'number') return sizeText(value);
  return String(value);
}

/**
 * Adds a profile, or changes the one named: its shared fields and the BMC user and password its
 * machines share. A change sends only what differs from the profile as last shown.
 */
export class ProfileForm {
  /** The profile last filled in by Edit, in full: what a change is compared with. */
  private shown: FullProfile | null = null;

  constructor(
    private readonly form: HTMLFormElement,
    private readonly api: NbdmuxClient,
    private readonly profiles: () => readonly NbdmuxProfile[],
  ) {
    const slot = form.querySelector('[data-profile-fields]')!;
    for (const field of profileFields) {
      slot.append(
        el('label', { className: field.kind === 'lines' ? 'wide' : '' }, [
          `${field.label} `,
          control(field),
          el('small', { attrs: { 'data-error-for': field.name } }),
        ]),
      );
    }
    onSubmit(form, async (data) => {
      const name = textField(data, 'name').trim();
      const existing = this.profiles().find((p) => p.name === name);
      // A profile not filled in by Edit shows no documents: a document left empty is then left as it is.
      const before: Partial<FullProfile> | undefined = this.shown?.name === name ? this.shown : existing;
      const given: Record<string, unknown> = {};
      for (const field of profileFields) {
        const text = textField(data, field.name).trim();
        const value = valueOf(field, text);
        if (existing ? text !== textOf(field, before?.[field.name]) : value !== null) given[field.name] = value;
      }
      const allMachines = data.get('allMachines') === 'on';
      if (!existing) await api.profiles.create.mutate({ name, ...(given as SharedInput) });
      else if (Object.keys(given).length > 0) await api.profiles.update.mutate({ name, ...(given as SharedInput), allMachines });
      const user = textField(data, 'user').trim();
      const password = textField(data, 'password');
      if (user !== '' || password !== '')
        await api.profiles.setBmc.mutate({ name, user: user || (existing?.bmc?.user ?? ''), ...(password !== '' && { password }) });
    });
  }

  /** Fills the form with a profile, to change it: read in full, with its cloud-init documents. */
  async edit(listed: NbdmuxProfile): Promise<void> {
    const said = this.form.querySelector<HTMLElement>('[data-error-for="name"]');
    let p: FullProfile;
    try {
      p = await this.api.profiles.get.query({ name: listed.name });
    } catch (err) {
      if (said) said.textContent = `cannot read profile ${listed.name}: ${(err as Error).message}`;
      return;
    }
    if (said) said.textContent = '';
    this.shown = p;
    const field = (name: string) => this.form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement;
    field('name').value = p.name;
    for (const f of profileFields) field(f.name).value = textOf(f, p[f.name]);
    field('user').value = p.bmc?.user ?? '';
    field('password').value = '';
    (field('password') as HTMLInputElement).placeholder = p.bmc?.password === 'set' ? 'set: leave empty to keep it' : '';
    this.form.scrollIntoView({ block: 'nearest' });
    field('name').focus();
  }
}

/** Adopts discovered machines (all of them) into the chosen profile, named from the pattern in their order of discovery. */
export function bindAdoptForm(form: HTMLFormElement, api: NbdmuxClient): void {
  const result = form.querySelector<HTMLElement>('.form-result')!;
  onSubmit(form, async (data) => {
    result.textContent = '';
    const { adopted } = await api.profiles.adopt.mutate({ name: textField(data, 'name'), names: textField(data, 'names').trim() });
    result.textContent = `Adopted ${adopted.map((m) => `${m.name} (${m.mac})`).join(', ')}.`;
  });
}

/** A select of the profiles; the choice made survives each refresh. */
export function fillProfileChoices(select: HTMLSelectElement, names: readonly string[]): void {
  if ([...select.options].map((option) => option.value).join('\n') === names.join('\n')) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => el('option', { text: name, attrs: { value: name } })));
  if (names.includes(chosen)) select.value = chosen;
}
