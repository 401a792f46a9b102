import type { RestRoute } from '../src/http/rest-route.js';

export function replaceGenerated(page: string, name: string, content: string): string;
export function renderCliReference(usage: string): string;
export function renderRestReference(routes: readonly Pick<RestRoute, 'path' | 'docs'>[]): string;
export function renderEventsReference(source: string): string;
