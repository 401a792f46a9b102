import { cleanText } from '../untrusted-text.js';

export interface Column<Row> {
  header: string;
  value(row: Row): string;
  /** Numbers read best aligned on their last digit. */
  alignRight?: boolean;
}

/**
 * Columns padded to their widest cell, two spaces apart; the last column is not padded, so long
 * paths never add trailing blanks. A cell is one line, its control characters written out before
 * it is measured: a newline or an escape sequence in a cell would break the columns.
 */
export function renderTable<Row>(columns: readonly Column<Row>[], rows: readonly Row[]): string {
  const cells = rows.map((row) => columns.map((column) => cleanText(column.value(row))));
  const widths = columns.map((column, i) => Math.max(column.header.length, ...cells.map((line) => line[i]!.length)));
  const renderLine = (line: readonly string[]) =>
    line
      .map((cell, i) => {
        if (i === line.length - 1 && !columns[i]!.alignRight) return cell;
        return columns[i]!.alignRight ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!);
      })
      .join('  ');
  return [renderLine(columns.map((column) => column.header)), ...cells.map(renderLine)].join('\n') + '\n';
}

/** `key  value` lines with the keys padded to one width, for a single record; a value's further lines stay in the value column. */
export function renderFields(fields: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...fields.map(([key]) => key.length));
  const indent = `\n${' '.repeat(width + 2)}`;
  return fields.map(([key, value]) => `${key.padEnd(width)}  ${value.replaceAll('\n', indent)}`).join('\n') + '\n';
}
