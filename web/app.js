// A plain view of GET /exports and GET /healthz, refreshed every few seconds.
const exportsBody = document.getElementById('exports');
const health = document.getElementById('health');

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function formatBytes(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

async function refresh() {
  try {
    const [exportsResponse, healthResponse] = await Promise.all([fetch('/exports'), fetch('/healthz')]);
    const exports = await exportsResponse.json();
    exportsBody.replaceChildren(
      ...(exports.length === 0
        ? [Object.assign(document.createElement('tr'), { innerHTML: '<td colspan="7">No exports yet: POST /exports to add one.</td>' })]
        : exports.map((exp) => {
            const row = document.createElement('tr');
            row.append(
              cell(exp.name),
              cell(exp.file, 'file'),
              cell(formatBytes(exp.size)),
              cell(exp.readonly ? 'read-only' : 'read-write'),
              cell(exp.state),
              cell(String(exp.connections)),
              cell(new Date(exp.createdAt).toLocaleString()),
            );
            return row;
          })),
    );
    health.textContent = healthResponse.ok ? 'NBD serving' : `NBD down: ${(await healthResponse.text()).trim()}`;
    health.className = `badge ${healthResponse.ok ? 'ok' : 'down'}`;
  } catch {
    health.textContent = 'daemon unreachable';
    health.className = 'badge down';
  }
}

refresh();
setInterval(refresh, 3000);
