// The Poolscope dashboards, rendered to the JSON Grafana's file provider loads (grafana/dashboards/).
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { alertsDashboard } from './alerts.js';
import { httpDashboard } from './http.js';
import { poolsDashboard } from './pools.js';
import { queriesDashboard } from './queries.js';

export const builders: Array<() => dashboard.Dashboard> = [poolsDashboard, queriesDashboard, httpDashboard, alertsDashboard];

export interface RenderedDashboard {
  /** `<uid>.json` */
  file: string;
  uid: string;
  json: string;
}

/** Renders every dashboard: stable key order (the builders'), two-space indent, trailing newline. */
export function renderDashboards(): RenderedDashboard[] {
  return builders.map((build) => {
    const d = build();
    if (!d.uid) throw new Error(`dashboard "${d.title}" has no uid`);
    // Stable panel ids (the builders leave them unset; Grafana would number them on every load), so
    // links to one panel (?viewPanel=N) keep working across regenerations.
    (d.panels ?? []).forEach((panel, i) => {
      panel.id = i + 1;
    });
    // Show links and annotation toggles next to the variables, not folded into the controls menu (the
    // SDK's default placement).
    for (const link of d.links ?? []) delete link.placement;
    for (const annotation of d.annotations?.list ?? []) delete annotation.placement;
    return { file: `${d.uid}.json`, uid: d.uid, json: `${JSON.stringify(d, null, 2)}\n` };
  });
}
