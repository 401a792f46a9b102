import { createNbdmuxClient, type NbdmuxExport, type NbdmuxStatus } from '../../src/client.js';
import { Throughput } from './chart.js';
import { errorMessages } from './errors.js';
import { prependEvents } from './events.js';
import type { BootEndpoint } from '../../src/boot/ipxe.js';
import { ExportPage } from './export-page.js';
import { bindAddForm, bindImportForm } from './forms.js';
import { addDiscovered, bindAddMachineForm, fillExportChoices, machineActions, MachineEditor } from './machine-forms.js';
import { MachinePage } from './machine-page.js';
import { discoveredTable, machinesTable, renderFleet, tickDurations } from './machines.js';
import { bindProfilePower, MachinePower } from './power.js';
import { bindAdoptForm, fillProfileChoices, ProfileForm } from './profile-forms.js';
import { profilesTable } from './profiles.js';
import { routeOf, type Route } from './routes.js';
import { connectionsTable, exportsTable, machineOf, renderHealth, renderProblems } from './views.js';

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

/** The newest snapshot: every page draws from it, and a route change redraws at once. */
let status: NbdmuxStatus | null = null;
let route: Route = routeOf(location.hash);
let endpoint: BootEndpoint | null = null;
const throughput = new Throughput();

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

// remove, rollback and copy each show what became of them (notice, the button's text): a click has nothing left to handle.
const exportActions = { remove: (exp: NbdmuxExport, force: boolean) => void remove(exp, force) };
const addMachine = $<HTMLFormElement>('add-machine');
const machineEditor = new MachineEditor($<HTMLFormElement>('edit-machine'), api);
const onMachine = machineActions(api, $('machine-notice'), machineEditor, () => location.assign('#/'));
const machines = () => status?.machines ?? [];
let servingNames: ReadonlySet<string> = new Set();
/** The names in use: an import of one becomes its next version. */
let currentNames: ReadonlySet<string> = new Set();

const profileForm = new ProfileForm($<HTMLFormElement>('profile-form'), api, () => status?.profiles ?? []);
const machinePower = new MachinePower($('page-machine'), api);

const tables = {
  machines: machinesTable(),
  discovered: discoveredTable((mac) => addDiscovered(addMachine, mac)),
  profiles: profilesTable((p) => void profileForm.edit(p)),
  exports: exportsTable(() => servingNames, exportActions),
  connections: connectionsTable('connections', machines),
};
$('machines-table').append(tables.machines.element);
$('discovered-table').append(tables.discovered.element);
$('profiles-table').append(tables.profiles.element);
$('exports-table').append(tables.exports.element);
$('connections-table').append(tables.connections.element);
const machinePage = new MachinePage($('page-machine'), connectionsTable('machine-connections', machines), onMachine);
const exportPage = new ExportPage(
  $('page-export'),
  connectionsTable('export-connections', machines),
  { ...exportActions, rollback: (name, version) => void rollback(name, version), copy: (text, button) => void copy(text, button) },
  () => endpoint,
);

/** Each snapshot's rates, summed by export and by machine, for the charts. */
function recordThroughput(snapshot: NbdmuxStatus): void {
  const rates = new Map<string, number>();
  const add = (key: string, rate: number) => rates.set(key, (rates.get(key) ?? 0) + rate);
  for (const conn of snapshot.connections) {
    if (conn.exportName !== null) add(`export:${conn.exportName}`, conn.bytesPerSecond);
    const m = machineOf(conn, snapshot.machines);
    if (m) add(`machine:${m.mac}`, conn.bytesPerSecond);
  }
  throughput.record(rates);
}

function drawOverview(s: NbdmuxStatus): void {
  renderFleet($('fleet'), s.machines);
  tables.machines.render(s.machines);
  tables.discovered.render(s.discoveredMachines);
  tables.profiles.render(s.profiles);
  $('profile-count').textContent = String(s.profiles.length);
  tables.exports.render(s.exports);
  tables.connections.render(s.connections);
  $('machine-count').textContent = String(s.machines.length);
  $('export-count').textContent = String(s.exports.length);
  $('connection-count').textContent = String(s.connections.length);
}

/** The page of the route, from the newest snapshot; the overview stays drawn underneath, so a return to it is instant. */
function drawPage(): void {
  if (status === null) return;
  if (route.page === 'machine') {
    const mac = route.mac;
    const machine = status.machines.find((m) => m.mac === mac);
    machinePage.render(machine, mac, status.connections, throughput);
    machinePower.render(machine);
  } else if (route.page === 'export') {
    const name = route.name;
    // A draining export keeps its name until its connections end: the page shows the one that serves.
    const exp = status.exports.find((e) => e.name === name && e.state !== 'draining') ?? status.exports.find((e) => e.name === name);
    exportPage.render(exp, name, status.exports, status.connections, throughput);
  }
}

async function refreshVersions(): Promise<void> {
  if (route.page !== 'export') return;
  const name = route.name;
  try {
    exportPage.showVersions(await api.exports.versions.query({ name }));
  } catch {
    // Removed meanwhile: the page says so from the snapshot.
    exportPage.showVersions([]);
  }
}

/** The machine whose past boots and ended connections are shown: asked for on its page's first draw and on each event that changes them. */
let historyOf = '';
async function refreshHistory(changed = false): Promise<void> {
  // The first snapshot comes first: the history is shown for the machine as it is.
  if (status === null || route.page !== 'machine' || (route.mac === historyOf && !changed)) return;
  const mac = route.mac;
  historyOf = mac;
  try {
    const [events, connections] = await Promise.all([api.events.list.query({ limit: 1000 }), api.connections.list.query({ limit: 200 })]);
    machinePage.showHistory(
      status?.machines.find((m) => m.mac === mac),
      events,
      connections,
    );
  } catch (error) {
    // Asked again at the next snapshot.
    historyOf = '';
    notice.textContent = errorMessages(error).general;
  }
}

function showRoute(): void {
  const previous = route;
  route = routeOf(location.hash);
  for (const page of document.querySelectorAll<HTMLElement>('[data-page]')) page.hidden = page.dataset.page !== route.page;
  if (route.page !== 'machine') historyOf = '';
  if (route.page === 'overview') document.title = 'nbdmux';
  else machineEditor.close();
  drawPage();
  void refreshVersions();
  void refreshHistory();
  // A new page: its heading takes the focus, so a keyboard or screen reader starts there.
  if (JSON.stringify(previous) !== JSON.stringify(route)) {
    const heading = route.page === 'machine' ? $('machine-title') : route.page === 'export' ? $('export-title') : null;
    heading?.focus();
    if (heading === null) scrollTo(0, 0);
  }
}
addEventListener('hashchange', showRoute);
showRoute();

api.status.stream.subscribe(undefined, {
  onData(snapshot) {
    status = snapshot;
    renderHealth($('health'), snapshot.health);
    renderProblems($('problems'), snapshot.health);
    servingNames = new Set(snapshot.exports.filter((e) => e.state === 'serving').map((e) => e.name));
    recordThroughput(snapshot);
    drawOverview(snapshot);
    drawPage();
    machineEditor.refresh(snapshot.machines);
    // Each snapshot may follow a switch, a rollback or a connection that ended: the version counts move.
    void refreshVersions();
    void refreshHistory();
    const names = snapshot.exports.filter((e) => e.state !== 'draining').map((e) => e.name);
    currentNames = new Set(names);
    for (const select of document.querySelectorAll<HTMLSelectElement>('select[name=export]')) fillExportChoices(select, names);
    const profileNames = snapshot.profiles.map((p) => p.name);
    for (const select of document.querySelectorAll<HTMLSelectElement>('select[name=name]')) fillProfileChoices(select, profileNames);
  },
});
// Snapshots come when something changes; a machine stuck at a stage changes nothing, yet its time there grows.
setInterval(() => tickDurations(document.body), 1000);

const info = await api.system.info.query();
$('open-banner').hidden = info.authRequired;
$('logout').hidden = !info.authRequired;
endpoint = info.boot;
drawPage();

// History first, then the stream resumes right after the newest event shown, so none is missed.
const history = await api.events.list.query({ limit: 100 });
prependEvents($('events'), history);
api.events.stream.subscribe(
  { lastEventId: String(history[0]?.id ?? 0) },
  {
    onData: ({ data }) => {
      if (data.type === 'machine.stage' || data.type === 'connection.closed') void refreshHistory(true);
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
bindAdoptForm($<HTMLFormElement>('adopt-machines'), api);
bindProfilePower($<HTMLFormElement>('profile-power'), api);
