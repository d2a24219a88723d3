// The route labels every route-labelled histogram shares (request duration, hold time by route).
import { describe, expect, it } from 'vitest';
import { HTTP_ROUTE_OVERFLOW, MAX_HTTP_ROUTES, RouteCap } from '../src/http/route.js';

describe('a route label', () => {
  it('is the template, cut at 200 characters and without control characters, so templates alike past that share one', () => {
    const cap = new RouteCap(() => undefined);
    expect(cap.admit('/orders/:id')).toBe('/orders/:id');
    expect(cap.admit('/a\nb\x7f')).toBe('/a?b?');
    const long = `/${'x'.repeat(250)}`;
    expect(cap.admit(`${long}/1`)).toBe(`${long.slice(0, 200)}…`);
    expect(cap.admit(`${long}/2`)).toBe(`${long.slice(0, 200)}…`);
  });

  it(`is ${HTTP_ROUTE_OVERFLOW} past ${MAX_HTTP_ROUTES} routes, and each route turned away is said`, () => {
    let said = 0;
    const cap = new RouteCap(() => { said++; });
    for (let i = 0; i < MAX_HTTP_ROUTES; i++) expect(cap.admit(`/r${i}`)).toBe(`/r${i}`);
    expect(cap.admit('/r0')).toBe('/r0');
    expect(cap.admit('/late')).toBe(HTTP_ROUTE_OVERFLOW);
    expect(said).toBe(1);
  });
});
