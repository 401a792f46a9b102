import { createNbdmuxClient, type NbdmuxExport } from '../../src/client.js';
import { errorMessages } from './errors.js';
import { bindAddForm, bindImportForm } from './forms.js';
import { addDiscovered, bindAddMachineForm, fillExportChoices, machineActions, MachineEditor } from './machine-forms.js';
import { renderDiscovered, renderMachines, tickDurations } from './machines.js';
import { renderVersions } from './versions.js';
import { prependEvents, renderConnections, renderExports, renderHealth, renderProblems } from './views.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const link = $('link');
const notice = $('notice');

function showLink(up: boolean): void {
  link.className = `badge ${up ? 'ok' : 'down'}`;
  link.textContent = up ? 'live' : 'reconnecting…';
  document.body.dataset.link = up ? 'up' : 'down';
  $('outage').hidden = up;
  if (!up) void returnToLoginIfSessionEnded();
}

/** A socket closed by a logout (here or in another tab) or an expired session: show the login page. */
async function returnToLoginIfSessionEnded(): Promise<void> {
  const response = await fetch('/trpc/system.info').catch(() => null);
  if (response?.status === 401) location.assign('/');
}

// The page's own origin: the daemon served it, and the session cookie authenticates every call.
const api = createNbdmuxClient({ url: location.origin, onLinkChange: showLink });

async function remove(exp: NbdmuxExport, force: boolean): Promise<void> {
  const question = force
    ? `Cut the ${exp.connections} live connection(s) of "${exp.name}" now? Machines booted from it lose their disk.`
    : `Remove "${exp.name}"? New clients are refused at once; ${exp.connections} live connection(s) keep running until they end.`;
  if (!confirm(question)) return;
  try {
    await api.exports.delete.mutate({ name: exp.name, force });
    notice.textContent = '';
  } catch (error) {
    notice.textContent = errorMessages(error).general || 'the removal was refused';
  }
}

/** The export whose versions are shown, and the names in use (an import of one becomes its next version). */
let versionsOf: string | null = null;
let currentNames = new Set<string>();

function showVersions(exp: NbdmuxExport): void {
  versionsOf = exp.name;
  void refreshVersions();
}

async function refreshVersions(): Promise<void> {
  const name = versionsOf;
  $('versions-section').hidden = name === null;
  if (name === null) return;
  $('versions-name').textContent = name;
  try {
    // rollback shows a refusal in `notice` itself: the click has nothing left to handle.
    renderVersions(
      $('versions'),
      name,
      await api.exports.versions.query({ name }),
      (exportName, version) => void rollback(exportName, version),
    );
  } catch (error) {
    // Removed meanwhile: nothing left to show.
    versionsOf = null;
    $('versions-section').hidden = true;
    notice.textContent = errorMessages(error).general;
  }
}

async function rollback(name: string, version: number): Promise<void> {
  if (!confirm(`Serve version ${version} of "${name}" to new clients? Machines attached now keep the version they booted.`)) return;
  try {
    await api.exports.rollback.mutate({ name, version });
    notice.textContent = '';
  } catch (error) {
    notice.textContent = errorMessages(error).general || 'the rollback was refused';
  }
}

async function copy(text: string, button: HTMLButtonElement): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    // Clipboard access needs https or localhost: select the text for a manual copy instead.
    const code = button.previousElementSibling;
    if (code) getSelection()?.selectAllChildren(code);
    button.textContent = 'Selected';
  }
  setTimeout(() => (button.textContent = 'Copy'), 1500);
}

const addMachine = $<HTMLFormElement>('add-machine');
const machineEditor = new MachineEditor($<HTMLFormElement>('edit-machine'), api);
const onMachine = machineActions(api, $('machine-notice'), machineEditor);

api.status.stream.subscribe(undefined, {
  onData(status) {
    renderHealth($('health'), status.health);
    renderProblems($('problems'), status.health);
    // remove and copy each show what became of them (notice, the button's text): a click has nothing left to handle.
    renderExports($('exports'), status.exports, status.health.nbdPort, {
      remove: (exp, force) => void remove(exp, force),
      copy: (text, button) => void copy(text, button),
      showVersions,
    });
    currentNames = new Set(status.exports.filter((e) => e.state !== 'draining').map((e) => e.name));
    // Each snapshot may follow a switch, a rollback or a connection that ended: the counts move.
    void refreshVersions();
    renderConnections($('connections'), status.connections);
    $('connection-count').textContent = String(status.connections.length);
    renderMachines($('machines'), status.machines, onMachine);
    machineEditor.refresh(status.machines);
    $('machine-count').textContent = String(status.machines.length);
    renderDiscovered($('discovered'), status.discoveredMachines, (mac) => addDiscovered(addMachine, mac));
    for (const select of document.querySelectorAll<HTMLSelectElement>('select[name=export]')) fillExportChoices(select, [...currentNames]);
  },
});
// Snapshots come when something changes; a machine stuck at a stage changes nothing, yet its time there grows.
setInterval(() => tickDurations($('machines')), 1000);

const info = await api.system.info.query();
$('open-banner').hidden = info.authRequired;
$('logout').hidden = !info.authRequired;

// History first, then the stream resumes right after the newest event shown, so none is missed.
const history = await api.events.list.query({ limit: 100 });
prependEvents($('events'), history);
api.events.stream.subscribe(
  { lastEventId: String(history[0]?.id ?? 0) },
  {
    onData: ({ data }) => {
      if (data.type !== 'replay.skipped') return prependEvents($('events'), [data]);
      // The rest of what was missed is replayed next.
      if (data.details.reason === 'pruned') {
        notice.textContent = `${String(data.details.skipped)} events that happened while this page was disconnected are gone: older than --retain-days, they were pruned`;
        return;
      }
      // Away too long to replay what was missed: show the newest, as at page load.
      notice.textContent = `${String(data.details.skipped)} events happened while this page was disconnected; the newest are shown, the rest are in events.list`;
      void api.events.list.query({ limit: 100 }).then((events) => prependEvents($('events'), events));
    },
  },
);

bindAddForm($<HTMLFormElement>('add-export'), api);
bindImportForm($<HTMLFormElement>('import-image'), api, (name) => currentNames.has(name));
bindAddMachineForm(addMachine, api);
$('versions-close').addEventListener('click', () => {
  versionsOf = null;
  void refreshVersions();
});
