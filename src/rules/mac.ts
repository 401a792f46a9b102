/** A machine is known by its boot NIC's MAC, in one spelling everywhere: the registry, the boot routes, the reports. */

/** `aa:bb:cc:dd:ee:ff` from colon- or hyphen-separated hex in either case; null for anything else. */
export function normaliseMac(text: string): string | null {
  if (!/^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/.test(text)) return null;
  return text.toLowerCase().replaceAll('-', ':');
}
