import { el } from './format.js';

export interface Column<T> {
  label: string;
  /** The cell: its class names what it holds (`num`, `code`), which decides how it wraps. */
  cell: (row: T) => HTMLTableCellElement;
  /** What the column sorts by; a column without one has no sort button. */
  sortBy?: (row: T) => string | number;
  /** Dropped on mid-sized screens, where the row still says enough without it. */
  low?: boolean;
}

export interface TableOptions<T> {
  /** The id of the body: tests and styles find rows under it. */
  id: string;
  /** What the rows are, for the search box's label: "machines". */
  noun: string;
  columns: Column<T>[];
  row: (item: T, cells: HTMLTableCellElement[]) => HTMLTableRowElement;
  /** The text the search box matches, in any case. */
  searchText: (item: T) => string;
  empty: string;
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

/**
 * A table with a search box and sortable columns, rendered again on every snapshot without losing
 * either: the rows are the snapshot's, the search and sort the reader's. Under a width its rows
 * become cards (style.css), each cell labelled by its column.
 */
export class DataTable<T> {
  readonly element: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly headers: HTMLTableCellElement[];
  private readonly search: HTMLInputElement;
  private readonly shown: HTMLElement;
  private sort: { column: number; descending: boolean } | null = null;
  private items: readonly T[] = [];

  constructor(private readonly options: TableOptions<T>) {
    this.body = el('tbody', { attrs: { id: options.id } });
    this.search = el('input', {
      attrs: { type: 'search', placeholder: `Search ${options.noun}`, 'aria-label': `Search ${options.noun}`, autocomplete: 'off' },
    });
    this.search.addEventListener('input', () => this.draw());
    this.shown = el('small', { className: 'shown', attrs: { 'aria-live': 'polite' } });
    this.headers = options.columns.map((column, index) => {
      const th = el('th', { className: column.low ? 'low' : '', attrs: { scope: 'col' } });
      if (!column.sortBy) {
        th.textContent = column.label;
        return th;
      }
      const button = el('button', { text: column.label, className: 'sort', attrs: { type: 'button' } });
      button.addEventListener('click', () => this.sortBy(index));
      th.append(button);
      return th;
    });
    this.element = el('div', { className: 'data-table' }, [
      el('div', { className: 'table-tools' }, [this.search, this.shown]),
      el('table', { className: 'data' }, [el('thead', {}, [el('tr', {}, this.headers)]), this.body]),
    ]);
  }

  render(items: readonly T[]): void {
    this.items = items;
    this.draw();
  }

  private sortBy(index: number): void {
    this.sort = this.sort?.column === index ? { column: index, descending: !this.sort.descending } : { column: index, descending: false };
    this.headers.forEach((th, i) => {
      if (i === this.sort!.column) th.setAttribute('aria-sort', this.sort!.descending ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    });
    this.draw();
  }

  private draw(): void {
    const { columns, searchText, row, empty } = this.options;
    const query = this.search.value.trim().toLowerCase();
    let items = query === '' ? [...this.items] : this.items.filter((item) => searchText(item).toLowerCase().includes(query));
    if (this.sort) {
      const key = columns[this.sort.column]!.sortBy!;
      const direction = this.sort.descending ? -1 : 1;
      items = items.sort((a, b) => {
        const [x, y] = [key(a), key(b)];
        return direction * (typeof x === 'number' && typeof y === 'number' ? x - y : collator.compare(String(x), String(y)));
      });
    }
    this.shown.textContent = query === '' ? '' : `${items.length} of ${this.items.length}`;
    if (items.length === 0) {
      const text = this.items.length === 0 ? empty : `Nothing matches "${this.search.value.trim()}".`;
      this.body.replaceChildren(el('tr', {}, [el('td', { text, className: 'empty', attrs: { colspan: String(columns.length) } })]));
      return;
    }
    this.body.replaceChildren(
      ...items.map((item) =>
        row(
          item,
          columns.map((column) => {
            const td = column.cell(item);
            td.dataset.label = column.label;
            if (column.low) td.classList.add('low');
            return td;
          }),
        ),
      ),
    );
  }
}

/** A cell of text, with class names saying how it wraps. */
export function td(text: string, className = '', title = ''): HTMLTableCellElement {
  return el('td', { text, className, title });
}
