import type { NbdmuxClient } from '../../src/client.js';
import { errorMessages } from './errors.js';

/** The add-export form: sends exports.create and shows the API's own messages beside the fields. */
export function bindAddForm(form: HTMLFormElement, api: NbdmuxClient): void {
  onSubmit(form, async (data) => {
    await api.exports.create.mutate({
      name: textField(data, 'name'),
      file: textField(data, 'file'),
      readonly: data.get('readonly') === 'on',
      cow: data.get('cow') === 'on',
      allow: textField(data, 'allow')
        .split(/[\s,]+/)
        .filter((range) => range !== ''),
    });
  });
}

/**
 * The import form: a name not in use becomes a new export (exports.create), an existing one gets
 * the image as its next version (exports.update), which serves once the import is ready.
 */
export function bindImportForm(form: HTMLFormElement, api: NbdmuxClient, exists: (name: string) => boolean): void {
  onSubmit(form, async (data) => {
    const name = textField(data, 'name');
    const sha256 = textField(data, 'sha256').trim();
    const source = { url: textField(data, 'url'), ...(sha256 !== '' && { sha256 }) };
    if (exists(name)) await api.exports.update.mutate({ name, ...source });
    else await api.exports.create.mutate({ name, ...source });
  });
}

/** What a text field holds, '' when absent: FormData may also hold files, which no form here has. */
export function textField(data: FormData, name: string): string {
  const value = data.get(name);
  return typeof value === 'string' ? value : '';
}

/**
 * On submit, `send` gets the form's data: done, the form is cleared (unless `keep`: a form that
 * acts on what it names, again and again); refused, the API's messages show beside the fields.
 */
export function onSubmit(form: HTMLFormElement, send: (data: FormData) => Promise<void>, { keep = false } = {}): void {
  const general = form.querySelector<HTMLElement>('.form-error')!;
  // A refusal is shown beside the fields (the catch below): the listener has nothing left to reject.
  form.addEventListener('submit', (event) => void submitted(event));
  async function submitted(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const data = new FormData(form);
    clearErrors(form, general);
    const submit = form.querySelector<HTMLButtonElement>('button[type=submit]')!;
    submit.disabled = true;
    try {
      await send(data);
      if (!keep) form.reset();
    } catch (error) {
      showErrors(form, general, error);
    } finally {
      submit.disabled = false;
    }
  }
}

function showErrors(form: HTMLFormElement, general: HTMLElement, error: unknown): void {
  const { fields, general: message } = errorMessages(error);
  for (const [field, text] of fields) {
    // `allow.2` is the third range: its message belongs beside the allow field.
    const slot = form.querySelector<HTMLElement>(`[data-error-for="${field.split('.')[0]}"]`);
    if (slot) slot.textContent = text;
    else general.textContent = `${field}: ${text}`;
  }
  if (message) general.textContent = message;
}

export function clearErrors(form: HTMLFormElement, general: HTMLElement): void {
  general.textContent = '';
  for (const slot of form.querySelectorAll<HTMLElement>('[data-error-for]')) slot.textContent = '';
}
