// HTTP: what the service's users see — request rate, server errors and latency by route.
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import {
  baseDashboard, labelVariable, quantile, row, SERVICE as JOB_INSTANCE, SLO_BURN_PAGE, SLO_BURN_TICKET, sumRate, timeseriesPanel,
} from './lib.js';

const METRIC = 'http_server_request_duration_seconds';
const ROUTE_LEGEND = '{{job}} {{http_request_method}} {{http_route}}';
const BY_ROUTE = ['job', 'http_request_method', 'http_route'];
/** Alert links preset the route (var-route); requests without a route (404s) have no http_route label. */
const SERVICE = `${JOB_INSTANCE}, http_route=~"$route|"`;
const SERVER_ERRORS = `${SERVICE}, http_response_status_code=~"5.."`;

/**
 * SLO burn rate over a window: the recorded error ratio (prometheus/rules/slo.yml) divided by the error budget
 * (1 − objective). SLO series are per service (`job`) only: no instance or route label to filter on (the
 * .lint exclusions name these panels).
 */
const SLO_WINDOWS = ['5m', '1h', '6h', '1d', '3d'];
const SLO_PANELS = { availability: 'Availability error budget burn rate', latency: 'Latency error budget burn rate' } as const;
const burn = (sli: '5xx' | 'slow', slo: keyof typeof SLO_PANELS, window: string) =>
  `job:http_server_request_${sli}_per_requests:ratio_rate${window}{job=~"$job"} ` +
  `/ on (job) (1 - job:poolscope_slo_${slo}_objective:ratio{job=~"$job"})`;

export function httpDashboard(): dashboard.Dashboard {
  const d = baseDashboard(
    'poolscope-http',
    'Poolscope / HTTP',
    'HTTP server requests of services instrumented by Poolscope: rate, 5xx ratio and duration by route.',
  );
  // Services are listed from the HTTP metric itself: an HTTP service need not own a pool.
  d.withVariable(labelVariable('job', 'Job', `label_values(${METRIC}_count, job)`))
    .withVariable(labelVariable('instance', 'Instance', `label_values(${METRIC}_count{job=~"$job"}, instance)`))
    .withVariable(labelVariable('route', 'Route', `label_values(${METRIC}_count{job=~"$job"}, http_route)`));

  d.withRow(row('Traffic and errors'))
    .withPanel(timeseriesPanel({
      title: 'Request rate by route',
      description: `HTTP requests per second (${METRIC}_count) by method and route.`,
      unit: 'reqps',
      min: 0,
      queries: [{ expr: sumRate(`${METRIC}_count`, SERVICE, BY_ROUTE), legend: ROUTE_LEGEND }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Request rate by status code',
      description: 'HTTP requests per second by response status code.',
      unit: 'reqps',
      min: 0,
      stack: true,
      queries: [{
        expr: sumRate(`${METRIC}_count`, SERVICE, ['job', 'http_response_status_code']),
        legend: '{{job}} {{http_response_status_code}}',
      }],
    }))
    .withPanel(timeseriesPanel({
      title: '5xx ratio',
      description: 'Share of requests answered with a 5xx status, per service. ' +
        'Shaded at the HttpErrorRatio alert thresholds (5 % warning, 10 % critical).',
      unit: 'percentunit',
      min: 0,
      thresholds: [0.05, 0.1],
      queries: [{
        expr: `${sumRate(`${METRIC}_count`, SERVER_ERRORS, ['job'])} / ${sumRate(`${METRIC}_count`, SERVICE, ['job'])}`,
        legend: '{{job}}',
      }],
    }))
    .withPanel(timeseriesPanel({
      title: '5xx ratio by route',
      description: 'Share of requests answered with a 5xx status, per method and route.',
      unit: 'percentunit',
      min: 0,
      thresholds: [0.05, 0.1],
      queries: [{
        expr: `${sumRate(`${METRIC}_count`, SERVER_ERRORS, BY_ROUTE)} / ${sumRate(`${METRIC}_count`, SERVICE, BY_ROUTE)}`,
        legend: ROUTE_LEGEND,
      }],
    }));

  d.withRow(row('Latency'))
    .withPanel(timeseriesPanel({
      title: 'Request duration p95 by route',
      description: `95th percentile of HTTP request duration (${METRIC}) by method and route. ` +
        'Shaded at the HttpLatencyHigh alert thresholds (1 s warning, 2 s critical).',
      unit: 's',
      min: 0,
      thresholds: [1, 2],
      queries: [{ expr: quantile(0.95, METRIC, SERVICE, BY_ROUTE), legend: ROUTE_LEGEND }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Request duration p50 and p99',
      description: `Median and 99th percentile of HTTP request duration (${METRIC}) per service.`,
      unit: 's',
      min: 0,
      queries: [
        { expr: quantile(0.5, METRIC, SERVICE, ['job']), legend: '{{job}} p50' },
        { expr: quantile(0.99, METRIC, SERVICE, ['job']), legend: '{{job}} p99' },
      ],
    }));

  d.withRow(row('SLO error budget'))
    .withPanel(timeseriesPanel({
      title: SLO_PANELS.availability,
      description: 'How many times faster than the objective allows each service spends its availability error budget ' +
        '(5xx share over the window ÷ (1 − objective), prometheus/slo.yaml). 1× spends exactly the 30-day budget in 30 days. ' +
        `HttpAvailabilityBudgetBurn files a ticket from ${SLO_BURN_TICKET}× (3d window) and 3× (1d), and pages from ` +
        `${SLO_BURN_PAGE}× (6h) and 14.4× (1h), each with its short window still burning. Per service: the instance and route selections do not apply.`,
      unit: 'none',
      min: 0,
      thresholds: [SLO_BURN_TICKET, SLO_BURN_PAGE],
      queries: SLO_WINDOWS.map((w) => ({ expr: burn('5xx', 'availability', w), legend: `{{job}} ${w}` })),
    }))
    .withPanel(timeseriesPanel({
      title: SLO_PANELS.latency,
      description: 'How many times faster than the objective allows each service spends its latency error budget ' +
        '(share of responses slower than its threshold over the window ÷ (1 − objective), prometheus/slo.yaml). ' +
        `HttpLatencyBudgetBurn files a ticket from ${SLO_BURN_TICKET}× (3d) and 3× (1d), and pages from ${SLO_BURN_PAGE}× (6h) ` +
        'and 14.4× (1h). Per service: the instance and route selections do not apply.',
      unit: 'none',
      min: 0,
      thresholds: [SLO_BURN_TICKET, SLO_BURN_PAGE],
      queries: SLO_WINDOWS.map((w) => ({ expr: burn('slow', 'latency', w), legend: `{{job}} ${w}` })),
    }));

  return d.build();
}
