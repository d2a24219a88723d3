// Alerts: what is firing now, since when, and what Alertmanager made of it.
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { ALERTMANAGER_NAME, baseDashboard, labelVariable, POOL_LABEL, PROMETHEUS_NAME, row, tablePanel, timeseriesPanel } from './lib.js';

// Alerts are aggregated per service and pool, so they carry no `instance` label: this dashboard has no
// instance variable (see the .lint exclusions). Alerts about a whole service (HTTP, telemetry, collector)
// have no pool label either, so the pool filter also keeps alerts without one (`|` = or empty). The
// connection-budget alerts are about a database server, with no job: "All" jobs is `.*` here, which keeps them
// (they were missing from "Every alert Prometheus is firing now", one of them critical; found by review).
const FILTER = `job=~"$job", ${POOL_LABEL}=~"$pool|"`;
const FIRING = `ALERTS{alertstate="firing", ${FILTER}}`;

export function alertsDashboard(): dashboard.Dashboard {
  const d = baseDashboard(
    'poolscope-alerts',
    'Poolscope / Alerts',
    'Poolscope alerts: the alerts Prometheus is firing (ALERTS), its rules\' state, and Alertmanager\'s notification groups.',
  );
  d.withVariable(labelVariable('job', 'Job', 'label_values(ALERTS, job)', '.*'))
    .withVariable(labelVariable('pool', 'Pool', `label_values(ALERTS{job=~"$job"}, ${POOL_LABEL})`));

  d.withRow(row('Firing now'))
    .withPanel(tablePanel({
      title: 'Firing alerts',
      description: 'Every alert Prometheus is firing now (the ALERTS series with alertstate="firing"), one row per alert ' +
        'and label set. Severity critical pages; warning goes to chat.',
      unit: 'none',
      queries: [{ expr: FIRING, legend: '__auto', table: true }],
      hide: ['Time', 'Value', '__name__', 'alertstate', 'alert_family'],
      rename: { alertname: 'Alert', severity: 'Severity', job: 'Service', [POOL_LABEL]: 'Pool' },
      sortBy: 'Severity',
      height: 9,
    }))
    .withPanel(timeseriesPanel({
      title: 'Firing alerts over time',
      description: 'Number of firing alert instances per alert and severity (count of ALERTS with alertstate="firing").',
      unit: 'short',
      min: 0,
      stack: true,
      queries: [{ expr: `count by (alertname, severity) (${FIRING})`, legend: '{{alertname}} ({{severity}})' }],
      width: 24,
    }));

  d.withRow(row('Rules and notifications'))
    .withPanel(
      new dashboard.PanelBuilder()
        .type('alertlist')
        .title('Alert rules: firing and pending')
        .description(`Prometheus alert rules (read through the ${PROMETHEUS_NAME} data source) that are firing or pending, ` +
          'most important first, with their instances.')
        .unit('none')
        .span(12)
        .height(12)
        .options({
          viewMode: 'list',
          groupMode: 'default',
          groupBy: [],
          maxItems: 50,
          sortOrder: 3, // importance
          dashboardAlerts: false,
          alertName: '',
          alertInstanceLabelFilter: '{job=~"${job:regex}"}',
          datasource: PROMETHEUS_NAME,
          showInstances: true,
          stateFilter: { firing: true, pending: true, recovering: true, noData: false, normal: false, error: true },
        }),
    )
    .withPanel(
      new dashboard.PanelBuilder()
        .type('alertGroups')
        .title('Alertmanager notification groups')
        .description(`Alert groups as the clustered Alertmanager holds them (read through the ${ALERTMANAGER_NAME} data ` +
          'source): after grouping by alert, service and pool, inhibition of warnings by their critical twins, and silences.')
        .unit('none')
        .span(12)
        .height(12)
        .options({ alertmanager: ALERTMANAGER_NAME, expandAll: true, labels: '' }),
    );

  return d.build();
}
