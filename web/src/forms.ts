import type { NbdmuxClient } from '../../src/client.js';
import { errorMessages } from './errors.js';

/** The add-export form: sends exports.create and shows the API's own messages beside the fields. */
export function bindAddForm(form: HTMLFormElement, api: NbdmuxClient): void {
  const general = form.querySelector<HTMLElement>('.form-error')!;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    clearErrors(form, general);
    const submit = form.querySelector<HTMLButtonElement>('button[type=submit]')!;
    submit.disabled = true;
    try {
      await api.exports.create.mutate({
        name: String(data.get('name') ?? ''),
        file: String(data.get('file') ?? ''),
        readonly: data.get('readonly') === 'on',
        cow: data.get('cow') === 'on',
        allow: String(data.get('allow') ?? '')
          .split(/[\s,]+/)
          .filter((range) => range !== ''),
      });
      form.reset();
    } catch (error) {
      const { fields, general: message } = errorMessages(error);
      for (const [field, text] of fields) {
        // `allow.2` is the third range: its message belongs beside the allow field.
        const slot = form.querySelector<HTMLElement>(`[data-error-for="${field.split('.')[0]}"]`);
        if (slot) slot.textContent = text;
        else general.textContent = `${field}: ${text}`;
      }
      if (message) general.textContent = message;
    } finally {
      submit.disabled = false;
    }
  });
}

function clearErrors(form: HTMLFormElement, general: HTMLElement): void {
  general.textContent = '';
  for (const slot of form.querySelectorAll<HTMLElement>('[data-error-for]')) slot.textContent = '';
}
